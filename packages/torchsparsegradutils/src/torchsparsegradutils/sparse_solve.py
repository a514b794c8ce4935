"""0.2.7 path ``torchsparsegradutils.sparse_solve`` (triangular part; re-exports tsgu-ops)."""

from tsgu_ops.triangular import SparseTriangularSolve, sparse_triangular_solve

__all__ = ["SparseTriangularSolve", "sparse_triangular_solve"]
