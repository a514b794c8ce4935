"""0.2.7 path ``torchsparsegradutils.cupy.cupy_bindings`` (re-exports tsgu-bridges)."""

from tsgu_bridges.cupy_bindings import *  # noqa: F403
from tsgu_bridges.cupy_bindings import __all__ as __all__
