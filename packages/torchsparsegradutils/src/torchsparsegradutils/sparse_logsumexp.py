"""0.2.7 path ``torchsparsegradutils.sparse_logsumexp`` (re-exports tsgu-ops)."""

from tsgu_ops.logsumexp import (
    _bidir_2d,
    _bidir_batched,
    _logsumexp_2d,
    _logsumexp_batched,
    _row_col_val,
    _scatter_logsumexp,
    sparse_bidir_logsumexp,
    sparse_logsumexp,
)

__all__ = ["sparse_bidir_logsumexp", "sparse_logsumexp"]
_PRIVATE = (_bidir_2d, _bidir_batched, _logsumexp_2d, _logsumexp_batched, _row_col_val, _scatter_logsumexp)
