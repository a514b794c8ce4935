"""tsgu-indexed: segment and gather matrix products for PyTorch (depends on torch only)."""

from ._version import __version__
from .indexed_matmul import dgl_installed, gather_mm, segment_mm

__all__ = ["__version__", "dgl_installed", "gather_mm", "segment_mm"]
