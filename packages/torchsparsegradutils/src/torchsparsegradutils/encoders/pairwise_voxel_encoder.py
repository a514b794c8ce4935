"""0.2.7 path ``torchsparsegradutils.encoders.pairwise_voxel_encoder`` (re-exports; no warning on import)."""

from tsgu_encoders._compat import PairwiseVoxelEncoder

from .pairwise_encoder import (
    PairwiseEncoder,
    _gen_coords,
    _gen_coords_nd,
    _gen_offsets,
    _gen_offsets_nd,
    _trim_nd,
    calc_pairwise_coo_indices,
    calc_pairwise_coo_indices_nd,
    calc_pariwise_coo_indices,
)

__all__ = [
    "PairwiseEncoder",
    "PairwiseVoxelEncoder",
    "_gen_coords",
    "_gen_coords_nd",
    "_gen_offsets",
    "_gen_offsets_nd",
    "_trim_nd",
    "calc_pairwise_coo_indices",
    "calc_pairwise_coo_indices_nd",
    "calc_pariwise_coo_indices",
]
