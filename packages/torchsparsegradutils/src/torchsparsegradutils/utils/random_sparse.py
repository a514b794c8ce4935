"""0.2.7 path ``torchsparsegradutils.utils.random_sparse`` (re-exports tsgu-ops generators).

``tsgu_ops.random_sparse.__all__`` is 0.2.7's list of this module, in 0.2.7's order.
"""

from tsgu_ops.random_sparse import *  # noqa: F403
from tsgu_ops.random_sparse import __all__ as __all__
