"""0.2.7 path ``torchsparsegradutils.utils``: format utilities and random generators.

As in 0.2.7, ``make_spd_sparse`` and the ``generate_*`` functions are not re-exported here (import
them from :mod:`torchsparsegradutils.utils.random_sparse`).
"""

from .random_sparse import rand_sparse, rand_sparse_tri
from .utils import (
    convert_coo_to_csr,
    convert_coo_to_csr_indices_values,
    sparse_block_diag,
    sparse_block_diag_split,
    sparse_eye,
    stack_csr,
)

__all__ = [
    "convert_coo_to_csr",
    "convert_coo_to_csr_indices_values",
    "rand_sparse",
    "rand_sparse_tri",
    "sparse_block_diag",
    "sparse_block_diag_split",
    "sparse_eye",
    "stack_csr",
]
