"""0.2.7 path ``torchsparsegradutils.distributions.constraints`` (kept importable; see tsgu-distributions)."""

from tsgu_distributions.constraints import __all__ as __all__
