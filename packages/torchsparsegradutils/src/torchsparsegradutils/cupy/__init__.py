"""0.2.7 path ``torchsparsegradutils.cupy`` (re-exports tsgu-bridges; always importable).

Without CuPy it warns once at import, sets ``have_cupy = False`` and the bindings use NumPy/SciPy.
"""

import warnings

# Imported through the 0.2.7 submodules, so that ``cupy_bindings`` and ``cupy_sparse_solve`` are
# attributes of this package after ``import torchsparsegradutils.cupy`` (as in 0.2.7).
from . import cupy_bindings as cupy_bindings
from . import cupy_sparse_solve as cupy_sparse_solve
from .cupy_bindings import (
    _backend_to_torch,
    _get_array_modules,
    _torch_to_backend,
    c2t_coo,
    c2t_csr,
    have_cupy,
    t2c_coo,
    t2c_csr,
)
from .cupy_sparse_solve import sparse_solve_c4t

if not have_cupy:
    warnings.warn(
        "torchsparsegradutils.cupy depends on cupy but cupy couldn't be imported -> falling back to numpy.",
        UserWarning,
        stacklevel=2,
    )

__all__ = [
    "c2t_coo",
    "t2c_coo",
    "c2t_csr",
    "t2c_csr",
    "_get_array_modules",
    "_torch_to_backend",
    "_backend_to_torch",
    "sparse_solve_c4t",
]
