"""0.2.7 path ``torchsparsegradutils.utils.utils`` (re-exports tsgu-ops formats)."""

from tsgu_ops.formats import *  # noqa: F403
from tsgu_ops.formats import __all__ as __all__
from tsgu_ops.formats import _compress_row_indices, _demcompress_crow_indices, _sort_coo_indices

_PRIVATE = (_compress_row_indices, _demcompress_crow_indices, _sort_coo_indices)
