"""0.2.7 path ``torchsparsegradutils.utils.bicgstab`` (re-exports tsgu-krylov)."""

from tsgu_krylov.bicgstab import BICGSTABSettings, bicgstab

__all__ = ["BICGSTABSettings", "bicgstab"]
