"""0.2.7 path ``torchsparsegradutils.utils``: solvers, format utilities and random generators.

As in 0.2.7, ``make_spd_sparse`` and the ``generate_*`` functions are not re-exported here (import
them from :mod:`torchsparsegradutils.utils.random_sparse`).
"""

import importlib

# Names come through their 0.2.7 submodules, so that e.g. ``utils.linear_cg`` is the function (as in
# 0.2.7) and ``torchsparsegradutils.utils.linear_cg`` the module only through ``sys.modules``.
from .bicgstab import BICGSTABSettings, bicgstab
from .linear_cg import CGInfo, LinearCGSettings, linear_cg
from .lsmr import lsmr
from .minres import MINRESSettings, minres
from .random_sparse import rand_sparse, rand_sparse_tri
from .utils import (
    convert_coo_to_csr,
    convert_coo_to_csr_indices_values,
    sparse_block_diag,
    sparse_block_diag_split,
    sparse_eye,
    stack_csr,
)

_LAZY = {"mean_hotelling_t2_test", "cov_nagao_test"}


def __getattr__(name: str) -> object:
    # The statistical helpers live in tsgu-distributions: loaded on first use, so that importing
    # torchsparsegradutils does not load the distributions (as in 0.2.7).
    # ``utils.dist_stats_helpers`` (the submodule, an attribute of utils in 0.2.7) likewise.
    if name in _LAZY or name == "dist_stats_helpers":
        # import_module, not ``from . import``: the latter would look the name up here again
        module = importlib.import_module(f"{__name__}.dist_stats_helpers")
        return module if name == "dist_stats_helpers" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BICGSTABSettings",
    "CGInfo",
    "LinearCGSettings",
    "MINRESSettings",
    "bicgstab",
    "convert_coo_to_csr",
    "convert_coo_to_csr_indices_values",
    "cov_nagao_test",
    "linear_cg",
    "lsmr",
    "mean_hotelling_t2_test",
    "minres",
    "rand_sparse",
    "rand_sparse_tri",
    "sparse_block_diag",
    "sparse_block_diag_split",
    "sparse_eye",
    "stack_csr",
]
