"""``torchsparsegradutils.cholesky``: re-exports tsgu-cholesky (new in 0.3; no 0.2.7 counterpart)."""

from tsgu_cholesky import *  # noqa: F403
from tsgu_cholesky import __all__ as _all

__all__ = [name for name in _all if name != "__version__"]
