"""0.2.7 path ``torchsparsegradutils.indexed_matmul`` (re-exports tsgu-indexed)."""

from tsgu_indexed.indexed_matmul import dgl_installed, gather_mm, segment_mm

__all__ = ["dgl_installed", "gather_mm", "segment_mm"]
