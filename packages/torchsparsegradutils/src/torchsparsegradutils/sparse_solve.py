"""0.2.7 path ``torchsparsegradutils.sparse_solve``: triangular and generic solves (re-exports)."""

from tsgu_krylov.generic_solve import SparseGenericSolve, sparse_generic_solve
from tsgu_ops.triangular import SparseTriangularSolve, sparse_triangular_solve

__all__ = ["SparseGenericSolve", "SparseTriangularSolve", "sparse_generic_solve", "sparse_triangular_solve"]
