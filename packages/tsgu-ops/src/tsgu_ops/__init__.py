"""tsgu-ops: sparse-gradient core operations for PyTorch.

Public names: the operations (:func:`sparse_mm`, :func:`sparse_triangular_solve`,
:func:`sparse_logsumexp`, :func:`sparse_bidir_logsumexp`), the shared mechanisms
(:func:`sampled_product`, :func:`implicit_solve`, :func:`sparse_values`,
:func:`sparse_with_values`, :class:`SparsePattern`), format utilities and random generators.
Hypothesis strategies live in :mod:`tsgu_ops.testing` (extra ``tsgu-ops[testing]``).
"""

from ._checks import DtypeMismatchError
from ._version import __version__
from .formats import (
    convert_coo_to_csr,
    convert_coo_to_csr_indices_values,
    sparse_block_diag,
    sparse_block_diag_split,
    sparse_eye,
    stack_csr,
)
from .implicit import ImplicitSolve, implicit_solve
from .logsumexp import sparse_bidir_logsumexp, sparse_logsumexp
from .matmul import SparseMatMul, sparse_mm
from .pattern import SparsePattern
from .random_sparse import (
    generate_random_sparse_coo_matrix,
    generate_random_sparse_csr_matrix,
    generate_random_sparse_strictly_triangular_coo_matrix,
    generate_random_sparse_strictly_triangular_csr_matrix,
    generate_random_sparse_triangular_coo_matrix,
    generate_random_sparse_triangular_csr_matrix,
    make_spd_sparse,
    rand_sparse,
    rand_sparse_tri,
)
from .sampled import sampled_product, sparse_values, sparse_with_values
from .triangular import SparseTriangularSolve, sparse_triangular_solve

__all__ = [
    "DtypeMismatchError",
    "ImplicitSolve",
    "SparseMatMul",
    "SparsePattern",
    "SparseTriangularSolve",
    "__version__",
    "convert_coo_to_csr",
    "convert_coo_to_csr_indices_values",
    "generate_random_sparse_coo_matrix",
    "generate_random_sparse_csr_matrix",
    "generate_random_sparse_strictly_triangular_coo_matrix",
    "generate_random_sparse_strictly_triangular_csr_matrix",
    "generate_random_sparse_triangular_coo_matrix",
    "generate_random_sparse_triangular_csr_matrix",
    "implicit_solve",
    "make_spd_sparse",
    "rand_sparse",
    "rand_sparse_tri",
    "sampled_product",
    "sparse_bidir_logsumexp",
    "sparse_block_diag",
    "sparse_block_diag_split",
    "sparse_eye",
    "sparse_logsumexp",
    "sparse_mm",
    "sparse_triangular_solve",
    "sparse_values",
    "sparse_with_values",
    "stack_csr",
]
