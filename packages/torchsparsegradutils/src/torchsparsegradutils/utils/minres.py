"""0.2.7 path ``torchsparsegradutils.utils.minres`` (re-exports tsgu-krylov)."""

from tsgu_krylov.minres import MINRESSettings, minres

__all__ = ["MINRESSettings", "minres"]
