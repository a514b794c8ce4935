"""Property: PairwiseEncoder and calc_pairwise_coo_indices_nd reject malformed input with ValueError/TypeError."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tsgu_encoders import PairwiseEncoder, calc_pairwise_coo_indices_nd

GOOD = {"radius": 1.5, "volume_shape": (2, 3, 4), "channel_voxel_relation": "inter"}
BAD_ARGS = {
    "radius below 1": {"radius": 0.5},
    "radius a string": {"radius": "1"},
    "volume_shape rank 1": {"volume_shape": (4,)},
    "volume_shape with 0": {"volume_shape": (2, 0, 3)},
    "volume_shape negative": {"volume_shape": (2, -3, 3)},
    "volume_shape floats": {"volume_shape": (2, 3.0, 3)},
    "volume_shape a string": {"volume_shape": "2,3,4"},
    "relation unknown": {"channel_voxel_relation": "cross"},
    "relation with one channel": {"volume_shape": (1, 3, 4), "channel_voxel_relation": "intra"},
}


@settings(deadline=None, max_examples=50)
@given(bad=st.sampled_from(sorted(BAD_ARGS)), layout=st.sampled_from([torch.sparse_coo, torch.sparse_csr]))
def test_constructor_and_index_function_reject_malformed_arguments(bad, layout):
    kw = {**GOOD, **BAD_ARGS[bad]}
    with pytest.raises((ValueError, TypeError)):
        PairwiseEncoder(layout=layout, **kw)
    with pytest.raises((ValueError, TypeError)):
        calc_pairwise_coo_indices_nd(**kw)


@settings(deadline=None, max_examples=30)
@given(
    layout=st.sampled_from([torch.strided, torch.sparse_csc, "coo"]),
    index_dtype=st.sampled_from([torch.int64, torch.int16, torch.float32]),
)
def test_layout_and_index_dtype_are_checked(layout, index_dtype):
    if index_dtype == torch.int64 and layout in (torch.sparse_coo, torch.sparse_csr):
        return
    with pytest.raises(ValueError):
        PairwiseEncoder(1, (1, 3, 3), layout=layout, indices_dtype=index_dtype)


@settings(deadline=None, max_examples=60)
@given(
    bad=st.sampled_from(["rank", "spatial", "offsets", "channels", "dtype", "not a tensor", "batch rank"]),
    batch=st.booleans(),
    layout=st.sampled_from([torch.sparse_coo, torch.sparse_csr]),
)
def test_call_rejects_malformed_values(bad, batch, layout):
    enc = PairwiseEncoder(1, (2, 3, 4), channel_voxel_relation="intra", layout=layout)
    N = len(enc.offsets)
    shape = [N, 2, 3, 4]
    if bad == "rank":
        shape = shape[1:]
    elif bad == "spatial":
        shape[-1] = 5
    elif bad == "offsets":
        shape[0] = N + 1
    elif bad == "channels":
        shape[1] = 3
    elif bad == "batch rank":
        shape = [2, 2, *shape]
    values = torch.zeros(([2] if batch and bad != "batch rank" else []) + shape)
    if bad == "dtype":
        values = values.to(torch.int32)
    if bad == "not a tensor":
        values = values.tolist()
    with pytest.raises((ValueError, TypeError)):
        enc(values)
