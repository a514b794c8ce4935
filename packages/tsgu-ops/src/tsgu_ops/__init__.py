"""tsgu-ops: sparse-gradient core operations for PyTorch.

Public names: the operations (:func:`sparse_mm`, :func:`sparse_triangular_solve`,
:func:`sparse_logsumexp`, :func:`sparse_bidir_logsumexp`), the shared mechanisms
(:func:`sampled_product`, :func:`implicit_solve`, :func:`sparse_values`,
:func:`sparse_with_values`, :class:`SparsePattern`), format utilities and random generators.
Hypothesis strategies live in :mod:`tsgu_ops.testing` (extra ``tsgu-ops[testing]``).
"""

from . import formats, random_sparse
from ._checks import DtypeMismatchError
from ._version import __version__
from .formats import *  # noqa: F403
from .implicit import ImplicitSolve, implicit_solve
from .logsumexp import sparse_bidir_logsumexp, sparse_logsumexp
from .matmul import SparseMatMul, sparse_mm
from .pattern import SparsePattern
from .random_sparse import *  # noqa: F403
from .sampled import sampled_product, sparse_values, sparse_with_values
from .triangular import SparseTriangularSolve, sparse_triangular_solve

__all__ = [
    "DtypeMismatchError",
    "ImplicitSolve",
    "SparseMatMul",
    "SparsePattern",
    "SparseTriangularSolve",
    "__version__",
    "implicit_solve",
    "sampled_product",
    "sparse_bidir_logsumexp",
    "sparse_logsumexp",
    "sparse_mm",
    "sparse_triangular_solve",
    "sparse_values",
    "sparse_with_values",
]
# the format utilities and the random generators, as their modules list them
__all__ += formats.__all__
__all__ += random_sparse.__all__
