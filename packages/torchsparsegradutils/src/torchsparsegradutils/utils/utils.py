"""0.2.7 path ``torchsparsegradutils.utils.utils`` (re-exports tsgu-ops formats)."""

from tsgu_ops.formats import (
    _compress_row_indices,
    _demcompress_crow_indices,
    _sort_coo_indices,
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
    "sparse_block_diag",
    "sparse_block_diag_split",
    "sparse_eye",
    "stack_csr",
]
_PRIVATE = (_compress_row_indices, _demcompress_crow_indices, _sort_coo_indices)
