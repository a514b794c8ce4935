"""``torchsparsegradutils.cholesky``: re-exports tsgu-cholesky (new in 0.3; no 0.2.7 counterpart)."""

from tsgu_cholesky import (
    NotPositiveDefiniteError,
    SparseCholesky,
    analyze,
    factor_inverse_diagonal,
    sparse_cholesky,
    sparse_cholesky_solve,
    sparse_inverse_diagonal,
    sparse_logdet,
    sparse_selected_inverse,
)

__all__ = [
    "NotPositiveDefiniteError",
    "SparseCholesky",
    "analyze",
    "factor_inverse_diagonal",
    "sparse_cholesky",
    "sparse_cholesky_solve",
    "sparse_inverse_diagonal",
    "sparse_logdet",
    "sparse_selected_inverse",
]
