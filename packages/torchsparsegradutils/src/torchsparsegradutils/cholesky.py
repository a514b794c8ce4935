"""``torchsparsegradutils.cholesky``: re-exports tsgu-cholesky (new in 0.3; no 0.2.7 counterpart)."""

from tsgu_cholesky.cholesky import *  # noqa: F403
from tsgu_cholesky.cholesky import __all__ as __all__
