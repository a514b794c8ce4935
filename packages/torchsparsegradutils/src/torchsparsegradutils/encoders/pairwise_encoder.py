"""0.2.7 path ``torchsparsegradutils.encoders.pairwise_encoder`` (re-exports tsgu-encoders)."""

from tsgu_encoders._compat import (
    _gen_coords,
    _gen_coords_nd,
    _gen_offsets,
    _gen_offsets_nd,
    _trim_nd,
    calc_pairwise_coo_indices,
    calc_pariwise_coo_indices,
)
from tsgu_encoders.offsets import calc_pairwise_coo_indices_nd
from tsgu_encoders.pairwise_encoder import PairwiseEncoder

__all__ = [
    "PairwiseEncoder",
    "_gen_coords",
    "_gen_coords_nd",
    "_gen_offsets",
    "_gen_offsets_nd",
    "_trim_nd",
    "calc_pairwise_coo_indices",
    "calc_pairwise_coo_indices_nd",
    "calc_pariwise_coo_indices",
]
