"""0.2.7 path ``torchsparsegradutils.cupy.cupy_sparse_solve`` (re-exports tsgu-bridges)."""

from tsgu_bridges.cupy_sparse_solve import SparseSolveC4T, sparse_solve_c4t

__all__ = ["SparseSolveC4T", "sparse_solve_c4t"]
