"""0.2.7 path ``torchsparsegradutils.jax.jax_sparse_solve`` (re-exports tsgu-bridges; needs jax)."""

from tsgu_bridges.jax_sparse_solve import SparseSolveJ4T, sparse_solve_j4t

__all__ = ["SparseSolveJ4T", "sparse_solve_j4t"]
