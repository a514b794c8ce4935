"""0.2.7 path ``torchsparsegradutils.encoders.pairwise_voxel_encoder`` (re-exports; no warning on import).

Every name of :mod:`torchsparsegradutils.encoders.pairwise_encoder`, plus ``PairwiseVoxelEncoder``.
"""

from tsgu_encoders._compat import PairwiseVoxelEncoder

from . import pairwise_encoder as _pairwise_encoder
from .pairwise_encoder import *  # noqa: F403

__all__ = ["PairwiseVoxelEncoder"]
__all__ += _pairwise_encoder.__all__
