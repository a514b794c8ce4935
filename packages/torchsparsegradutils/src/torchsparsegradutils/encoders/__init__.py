"""0.2.7 path ``torchsparsegradutils.encoders`` (re-exports tsgu-encoders).

The deprecated names ``PairwiseVoxelEncoder``, ``calc_pairwise_coo_indices`` and
``calc_pariwise_coo_indices`` are served lazily by the module ``__getattr__``, with 0.2.7's warnings.
"""

from tsgu_encoders._compat import deprecated_getattr

# through the 0.2.7 submodule, which thereby is an attribute of this package (as in 0.2.7)
from . import pairwise_encoder as pairwise_encoder
from .pairwise_encoder import PairwiseEncoder, calc_pairwise_coo_indices_nd

__all__ = ["PairwiseEncoder", "calc_pairwise_coo_indices_nd"]

__getattr__ = deprecated_getattr(__name__)
