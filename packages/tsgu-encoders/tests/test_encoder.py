"""PairwiseEncoder and calc_pairwise_coo_indices_nd against independent reference enumerations."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tsgu_encoders
from tsgu_encoders import PairwiseEncoder, calc_pairwise_coo_indices_nd
from tsgu_ops import sparse_values
from tsgu_ops.testing import stored_entries

F64 = torch.float64


def reference_offsets(radius, C, d, upper, relation, diag):
    """Spec §5.1 written out directly, with the upper=True fix (negated lower set)."""
    cube = range(-math.ceil(radius), math.ceil(radius) + 1)
    spatial = [s for s in itertools.product(cube, repeat=d) if any(s) and sum(x * x for x in s) <= radius**2]
    cand = [(0, *s) for s in spatial]
    if relation != "indep":
        cand += [(c,) + (0,) * d for c in range(1, C)]
    if relation == "inter":
        cand += [(c, *s) for c in range(1, C) for s in spatial]

    def first(o):
        return next((x for x in o if x != 0), 0)

    if upper is False:
        cand = [o for o in cand if first(o) > 0]
    elif upper is True:
        cand = [tuple(-x for x in o) for o in cand if first(o) > 0]

    def key(o):
        return (100 * o[0] ** 2 + sum(x * x for x in o[1:]), [abs(x) for x in o], [x >= 0 for x in o])

    out = sorted(cand, key=key)
    return ([(0,) * (d + 1)] if diag else []) + out


def dense_reference(values, offsets, shape):
    """values[n, p] at (lin(p), lin(p − o_n)) for every p with p − o_n inside the volume."""
    V = math.prod(shape)
    D = torch.zeros(V, V, dtype=values.dtype)
    for n, o in enumerate(offsets):
        for p in itertools.product(*(range(s) for s in shape)):
            q = tuple(a - b for a, b in zip(p, o))
            if all(0 <= x < s for x, s in zip(q, shape)):
                r = sum(a * math.prod(shape[i + 1 :]) for i, a in enumerate(p))
                c = sum(a * math.prod(shape[i + 1 :]) for i, a in enumerate(q))
                D[r, c] += values[(n, *p)]
    return D


def test_offset_order_examples_of_the_spec():
    enc = PairwiseEncoder(1, (1, 2, 2, 2))
    assert enc.offsets == [
        (0, 0, 0, -1),
        (0, 0, 0, 1),
        (0, 0, -1, 0),
        (0, 0, 1, 0),
        (0, -1, 0, 0),
        (0, 1, 0, 0),
    ]
    enc = PairwiseEncoder(1.5, (1, 3, 3))
    assert enc.offsets == [
        (0, 0, -1),
        (0, 0, 1),
        (0, -1, 0),
        (0, 1, 0),
        (0, -1, -1),
        (0, -1, 1),
        (0, 1, -1),
        (0, 1, 1),
    ]


@pytest.mark.parametrize("radius", [1, 1.5, 2])
@pytest.mark.parametrize("d", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("upper", [None, False, True])
def test_offsets_match_the_reference_enumeration(radius, d, upper):
    for C, relation in [(1, "indep"), (2, "intra"), (3, "inter")]:
        shape = (C,) + (2,) * d
        keys = list(
            calc_pairwise_coo_indices_nd(
                radius, shape, diag=True, upper=upper, channel_voxel_relation=relation
            )
        )
        assert keys == reference_offsets(radius, C, d, upper, relation, True)


@settings(deadline=None, max_examples=40)
@given(
    radius=st.sampled_from([1, 1.5, 2, 2.5]),
    spatial=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    C=st.integers(1, 3),
    relation=st.sampled_from(["indep", "intra", "inter"]),
    upper=st.sampled_from([None, False, True]),
    diag=st.booleans(),
    layout=st.sampled_from([torch.sparse_coo, torch.sparse_csr]),
    index_dtype=st.sampled_from([torch.int32, torch.int64]),
    batch=st.sampled_from([None, 2]),
    seed=st.integers(0, 2**16),
)
def test_property_encoder_equals_dense_reference_and_gradients(
    radius, spatial, C, relation, upper, diag, layout, index_dtype, batch, seed
):
    if C == 1:
        relation = "indep"
    shape = (C, *spatial)
    enc = PairwiseEncoder(radius, shape, diag, upper, relation, layout, index_dtype)
    N = len(enc.offsets)
    g = torch.Generator().manual_seed(seed)
    vshape = (N, *shape) if batch is None else (batch, N, *shape)
    values = torch.randn(vshape, dtype=F64, generator=g).requires_grad_()
    S = enc(values)
    assert S.layout == layout and S.dtype == F64
    if layout == torch.sparse_csr:
        assert S.crow_indices().dtype == index_dtype
    else:
        assert S.is_coalesced()
    items = [values] if batch is None else list(values.unbind(0))
    refs = [dense_reference(v.detach(), enc.offsets, shape) for v in items]
    ref = refs[0] if batch is None else torch.stack(refs)
    torch.testing.assert_close(S.detach().to_dense(), ref)
    # gradients: a loss through the sparse values equals the dense reference's gradient
    W = torch.randn(ref.shape, dtype=F64, generator=g)
    loss = (sparse_values(S) * _gather(W, S)).sum()
    loss.backward()
    vd = values.detach().clone().requires_grad_()
    items = [vd] if batch is None else list(vd.unbind(0))
    dense = [dense_reference_autograd(v, enc.offsets, shape) for v in items]
    dense = dense[0] if batch is None else torch.stack(dense)
    (dense * W).sum().backward()
    torch.testing.assert_close(values.grad, vd.grad)


def _gather(W, S):
    """Dense W at the stored entries of S, in S's storage order."""
    from tsgu_ops.testing import stored_entries

    return W[tuple(stored_entries(S))]


def dense_reference_autograd(values, offsets, shape):
    """Differentiable version of dense_reference (index_put with accumulate)."""
    V = math.prod(shape)
    rows, cols, src = [], [], []
    grid = torch.arange(V).reshape(shape)
    for n, o in enumerate(offsets):
        idx_r = tuple(slice(k, None) if k > 0 else slice(None, k) if k < 0 else slice(None) for k in o)
        idx_c = tuple(slice(-k, None) if k < 0 else slice(None, -k) if k > 0 else slice(None) for k in o)
        rows.append(grid[idx_r].reshape(-1))
        cols.append(grid[idx_c].reshape(-1))
        src.append(values[n][idx_r].reshape(-1))
    D = torch.zeros(V, V, dtype=values.dtype)
    return D.index_put((torch.cat(rows), torch.cat(cols)), torch.cat(src), accumulate=True)


@pytest.mark.parametrize("relation", ["indep", "intra", "inter"])
def test_pairs_are_unique_obey_upper_and_fill_constant_diagonals(relation):
    shape = (2, 3, 4, 2)
    V = math.prod(shape)
    for upper in (None, False, True):
        pairs = calc_pairwise_coo_indices_nd(
            2, shape, diag=True, upper=upper, channel_voxel_relation=relation
        )
        allp = torch.cat(list(pairs.values()), 1)
        keys = allp[0] * V + allp[1]
        assert keys.unique().numel() == keys.numel()
        for idx in pairs.values():
            if upper is True:
                assert bool((idx[0] <= idx[1]).all())
            if upper is False:
                assert bool((idx[0] >= idx[1]).all())
            diff = idx[0] - idx[1]  # one constant matrix diagonal per offset
            if diff.numel():
                assert bool((diff == diff[0]).all())


def test_upper_true_is_the_transpose_pattern_of_upper_false_with_channel_couplings():
    shape = (3, 4, 4)
    lo = PairwiseEncoder(1.5, shape, diag=True, upper=False, channel_voxel_relation="inter")
    up = PairwiseEncoder(1.5, shape, diag=True, upper=True, channel_voxel_relation="inter")
    assert len(lo.offsets) == len(up.offsets)
    ones = torch.ones(len(lo.offsets), *shape)
    Lp = lo(ones).to_dense() != 0
    Up = up(ones).to_dense() != 0
    assert torch.equal(Lp.T, Up)
    assert any(o[0] != 0 for o in up.offsets)  # 0.2.7 dropped every channel offset here


def test_coo_equals_csr_and_csr_permutation_maps_offset_order():
    shape = (2, 5, 4)
    coo = PairwiseEncoder(2, shape, diag=True, channel_voxel_relation="inter")
    csr = PairwiseEncoder(
        2,
        shape,
        diag=True,
        channel_voxel_relation="inter",
        layout=torch.sparse_csr,
        indices_dtype=torch.int32,
    )
    v = torch.randn(len(coo.offsets), *shape, dtype=F64)
    torch.testing.assert_close(coo(v).to_dense(), csr(v).to_dense())
    pairs = calc_pairwise_coo_indices_nd(2, shape, diag=True, channel_voxel_relation="inter")
    assert torch.equal(coo.indices, torch.cat(list(pairs.values()), 1))
    offset_order_values = torch.cat([v[n].reshape(-1)[idx[0]] for n, idx in enumerate(pairs.values())])
    torch.testing.assert_close(csr(v).values(), offset_order_values[csr.csr_permutation])
    assert csr.csr_permutation.dtype == torch.int64 and coo.csr_permutation is None
    assert csr.col_indices.dtype == torch.int32


def test_module_moves_its_index_tensors_and_has_no_state():
    enc = PairwiseEncoder(1, (1, 3, 3), layout=torch.sparse_csr, indices_dtype=torch.int32)
    enc.double()
    assert enc.crow_indices.dtype == torch.int32
    enc.to("cpu")
    assert enc.device == torch.device("cpu")
    assert list(enc.state_dict()) == [] and list(enc.parameters()) == []


def test_inputs_are_not_modified_and_gradient_never_densifies():
    enc = PairwiseEncoder(1, (1, 30, 30), diag=True, layout=torch.sparse_csr)
    v = torch.randn(len(enc.offsets), 1, 30, 30, requires_grad=True)
    before = v.detach().clone()
    S = enc(v)
    (S.values() ** 2).sum().backward()
    assert torch.equal(v.detach(), before)
    torch.testing.assert_close(v.grad[0], 2 * v.detach()[0])  # the diagonal is stored everywhere


def test_validation_messages():
    with pytest.raises(ValueError, match="must be a tuple of at least 2 positive integers, representing"):
        PairwiseEncoder(1, (3,))
    with pytest.raises(ValueError, match="must be a tuple of at least 2 positive integers, representing"):
        PairwiseEncoder(1, (1, 0, 3))
    with pytest.raises(ValueError, match="must be a tuple of at least 2 positive integers, representing"):
        PairwiseEncoder(1, (1, "3"))
    with pytest.raises(ValueError, match=r"`indices_dtype` must be torch\.int64 or torch\.int32"):
        PairwiseEncoder(1, (1, 3), indices_dtype=torch.int16)
    with pytest.raises(ValueError, match="radius must be >= 1"):
        PairwiseEncoder(0.5, (1, 3))
    with pytest.raises(ValueError, match="channel_voxel_relation must be 'indep', 'intra', or 'inter'"):
        PairwiseEncoder(1, (2, 3), channel_voxel_relation="cross")
    with pytest.raises(ValueError, match="must be 'indep' when number of channels is 1"):
        PairwiseEncoder(1, (1, 3), channel_voxel_relation="intra")
    with pytest.raises(ValueError, match=r"layout must be either torch\.sparse_coo or torch\.sparse_csr"):
        PairwiseEncoder(1, (1, 3), layout=torch.strided)
    with pytest.raises(ValueError, match="volume_shape must be a tuple of at least 2 positive integers"):
        calc_pairwise_coo_indices_nd(1, (3,))
    enc = PairwiseEncoder(1, (2, 3, 3))
    N = len(enc.offsets)
    with pytest.raises(ValueError, match="values must have 4 dimensions"):
        enc(torch.zeros(N, 2, 3))
    with pytest.raises(ValueError, match="Spatial dimensions do not match"):
        enc(torch.zeros(N, 2, 3, 4))
    with pytest.raises(ValueError, match="must match number of offsets"):
        enc(torch.zeros(N + 1, 2, 3, 3))
    with pytest.raises(ValueError, match="must match the number of channels"):
        enc(torch.zeros(N, 3, 3, 3))
    with pytest.raises(ValueError, match=r"values must be either torch\.float32 or torch\.float64"):
        enc(torch.zeros(N, 2, 3, 3, dtype=torch.int64))


def test_int32_indices_from_calc_and_device_none():
    pairs = calc_pairwise_coo_indices_nd(1, (1, 4), dtype=torch.int32, device=None)
    assert all(t.dtype == torch.int32 for t in pairs.values())
    assert list(pairs) == [(0, -1), (0, 1)]
    assert calc_pairwise_coo_indices_nd(1, (1, 1))[(0, 1)].shape == (2, 0)


def test_deprecated_names_warn_and_work():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls = tsgu_encoders.PairwiseVoxelEncoder  # no warning on access
    with pytest.warns(DeprecationWarning, match="PairwiseVoxelEncoder is deprecated"):
        enc = cls(1, (1, 2, 2, 2))
    assert enc.offsets == PairwiseEncoder(1, (1, 2, 2, 2)).offsets
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="must be a 4D tuple"):
        cls(1, (1, 2, 2))
    with pytest.warns(DeprecationWarning, match="Use calc_pairwise_coo_indices_nd instead"):
        f = tsgu_encoders.calc_pairwise_coo_indices
    with pytest.warns(DeprecationWarning, match="misspelt"):
        g = tsgu_encoders.calc_pariwise_coo_indices
    assert f is g
    assert list(f(1, (1, 2, 2, 2))) == list(calc_pairwise_coo_indices_nd(1, (1, 2, 2, 2)))
    with pytest.raises(AttributeError, match="module 'tsgu_encoders' has no attribute 'nope'"):
        tsgu_encoders.nope


def test_plot_encoder_draws_two_panels():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from tsgu_encoders.plot import plot_encoder

    fig = plot_encoder(PairwiseEncoder(1.5, (2, 6, 6), channel_voxel_relation="inter"))
    assert len(fig.axes) >= 2


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_gradcheck_and_gradgradcheck_through_the_encoder(layout):
    enc = PairwiseEncoder(1.5, (2, 3, 3), diag=True, channel_voxel_relation="intra", layout=layout)
    v = torch.randn(2, len(enc.offsets), 2, 3, 3, dtype=F64, requires_grad=True)

    def f(x):
        return sparse_values(enc(x)) ** 2

    assert torch.autograd.gradcheck(f, (v,))
    assert torch.autograd.gradgradcheck(f, (v,))


def _brute_force_pairs(offset, shape):
    """(rows, cols) of an offset by enumerating every position of the volume."""
    strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
    pairs = []
    for p in itertools.product(*(range(s) for s in shape)):
        q = tuple(a - b for a, b in zip(p, offset))
        if all(0 <= x < s for x, s in zip(q, shape)):
            pairs.append((sum(a * s for a, s in zip(p, strides)), sum(a * s for a, s in zip(q, strides))))
    return sorted(pairs)


@pytest.mark.parametrize("shape", [(1, 2, 2, 2), (2, 1, 1), (1, 1, 1, 1), (3, 2, 1)])
@pytest.mark.parametrize("upper", [None, False, True])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_tiny_volumes_give_empty_integer_index_tensors_for_offsets_without_pairs(shape, upper, index_dtype):
    relations = ["indep"] if shape[0] == 1 else ["indep", "intra", "inter"]
    for relation, diag in itertools.product(relations, [False, True]):
        idx = calc_pairwise_coo_indices_nd(
            2, shape, diag=diag, upper=upper, channel_voxel_relation=relation, dtype=index_dtype
        )
        assert any(v.shape[1] == 0 for v in idx.values()) or math.prod(shape[1:]) > 4
        for o, v in idx.items():
            assert v.dtype == index_dtype and v.shape[0] == 2
            assert sorted(map(tuple, v.T.tolist())) == _brute_force_pairs(o, shape)
        for layout in (torch.sparse_coo, torch.sparse_csr):
            enc = PairwiseEncoder(
                2,
                shape,
                diag=diag,
                upper=upper,
                channel_voxel_relation=relation,
                layout=layout,
                indices_dtype=index_dtype,
            )
            values = torch.randn(2, len(enc.offsets), *shape, dtype=torch.float64, requires_grad=True)
            out = enc(values)
            V, N = enc.volume_numel, len(enc.offsets)
            dense = torch.zeros(2, V, V, dtype=torch.float64)
            w = torch.randn(2, V, V, dtype=torch.float64)
            expected_grad = torch.zeros(2, N, V, dtype=torch.float64)
            for n, o in enumerate(enc.offsets):
                for r, c in _brute_force_pairs(o, shape):
                    dense[:, r, c] = values.detach().reshape(2, N, -1)[:, n, r]
                    expected_grad[:, n, r] = w[:, r, c]
            torch.testing.assert_close(out.to_dense(), dense)
            if layout == torch.sparse_csr:
                assert out.crow_indices().dtype == index_dtype
            (sparse_values(out) * w[tuple(stored_entries(out))]).sum().backward()
            torch.testing.assert_close(values.grad, expected_grad.reshape(values.shape))
            values.grad = None
