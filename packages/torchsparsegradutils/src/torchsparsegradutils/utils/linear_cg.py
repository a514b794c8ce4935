"""0.2.7 path ``torchsparsegradutils.utils.linear_cg`` (re-exports tsgu-krylov)."""

from tsgu_krylov.linear_cg import CGInfo, LinearCGSettings, linear_cg

__all__ = ["CGInfo", "LinearCGSettings", "linear_cg"]
