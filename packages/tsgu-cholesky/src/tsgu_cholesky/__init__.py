"""tsgu-cholesky: exact sparse Cholesky, log-determinant and selected inverse with sparse gradients.

:func:`sparse_cholesky` factors a sparse SPD matrix (COO/CSR, batched, int32/int64, float32/float64)
into a :class:`SparseCholesky`; :func:`sparse_logdet` gives the exact ``log det A`` whose gradient,
``A⁻¹`` on ``A``'s pattern, comes from selected inversion on the forward's factor;
:func:`sparse_cholesky_solve` is a direct SPD solve whose backward reuses the factor;
:func:`sparse_selected_inverse` and :func:`sparse_inverse_diagonal` give entries of ``A⁻¹``;
:func:`factor_inverse_diagonal` gives ``diag(A⁻¹)`` from a triangular factor the user already has.
The symbolic analysis (ordering, pattern of ``L``) is done once per pattern (:func:`analyze`).
"""

from ._engine import clear_cache
from ._selinv import kernel_name
from ._version import __version__
from .cholesky import (
    NotPositiveDefiniteError,
    SparseCholesky,
    analyze,
    sparse_cholesky,
    sparse_cholesky_solve,
    sparse_inverse_diagonal,
    sparse_logdet,
    sparse_selected_inverse,
)
from .from_factor import factor_inverse_diagonal

__all__ = [
    "NotPositiveDefiniteError",
    "SparseCholesky",
    "__version__",
    "analyze",
    "clear_cache",
    "factor_inverse_diagonal",
    "kernel_name",
    "sparse_cholesky",
    "sparse_cholesky_solve",
    "sparse_inverse_diagonal",
    "sparse_logdet",
    "sparse_selected_inverse",
]
