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


@pytest.mark.parametrize("radius", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_radius_is_a_value_error(radius):
    with pytest.raises(ValueError, match="radius must be"):
        PairwiseEncoder(radius, (1, 3, 3))
    with pytest.raises(ValueError, match="radius must be"):
        calc_pairwise_coo_indices_nd(radius, (1, 3, 3))


def test_numpy_integers_are_accepted_for_radius_and_volume_shape():
    np = pytest.importorskip("numpy")
    enc = PairwiseEncoder(np.int64(2), (np.int64(2), np.int32(3), 4), channel_voxel_relation="inter")
    ref = PairwiseEncoder(2, (2, 3, 4), channel_voxel_relation="inter")
    assert enc.volume_shape == (2, 3, 4) and all(type(v) is int for v in enc.volume_shape)
    assert enc.radius == 2.0 and enc.offsets == ref.offsets
    assert torch.equal(enc.indices, ref.indices)
    idx = calc_pairwise_coo_indices_nd(np.float64(1.5), np.array([1, 3, 4]))
    ref_idx = calc_pairwise_coo_indices_nd(1.5, (1, 3, 4))
    assert idx.keys() == ref_idx.keys() and all(torch.equal(idx[k], ref_idx[k]) for k in idx)
    for bad in [(1, np.bool_(True)), (1, True), (1, np.float64(3.0))]:
        with pytest.raises(ValueError, match="volume_shape"):
            PairwiseEncoder(1, bad)
    with pytest.raises(TypeError, match="radius"):
        PairwiseEncoder(True, (1, 3))


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_sparse_meta_and_empty_batch_values_get_clear_errors(layout):
    enc = PairwiseEncoder(1, (1, 3, 3), layout=layout)
    N = len(enc.offsets)
    with pytest.raises(ValueError, match=r"values must be a dense \(strided\) tensor"):
        enc(torch.ones(N, 1, 3, 3).to_sparse())
    with pytest.raises(ValueError, match="values is on the 'meta' device"):
        enc(torch.ones(N, 1, 3, 3, device="meta"))
    with pytest.raises(ValueError, match=r"empty batch \(B = 0\)"):
        enc(torch.ones(0, N, 1, 3, 3))
    for dtype in (torch.float16, torch.bfloat16, torch.complex64, torch.int64):
        with pytest.raises(ValueError, match=r"torch\.float32 or torch\.float64"):
            enc(torch.ones(N, 1, 3, 3, dtype=dtype))
