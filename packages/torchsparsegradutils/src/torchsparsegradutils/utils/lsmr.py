"""0.2.7 path ``torchsparsegradutils.utils.lsmr`` (re-exports tsgu-krylov)."""

from tsgu_krylov.lsmr import lsmr

__all__ = ["lsmr"]
