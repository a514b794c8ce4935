"""0.2.7 path ``torchsparsegradutils.sparse_matmul`` (re-exports tsgu-ops)."""

from tsgu_ops.matmul import SparseMatMul, sparse_mm

__all__ = ["SparseMatMul", "sparse_mm"]
