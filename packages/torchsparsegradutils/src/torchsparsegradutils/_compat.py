"""0.2.7 private path ``torchsparsegradutils._compat`` (re-exports tsgu-ops)."""

from tsgu_ops.internal import linalg_solve_triangular_compat

__all__ = ["linalg_solve_triangular_compat"]
