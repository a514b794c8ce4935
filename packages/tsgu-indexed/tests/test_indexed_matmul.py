"""segment_mm and gather_mm against per-row / per-segment dense references."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tsgu_indexed.indexed_matmul as im
from tsgu_indexed import gather_mm, segment_mm

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _tol(dtype):
    return {
        torch.float64: {},
        torch.float32: {"rtol": 1e-4, "atol": 1e-4},
        torch.bfloat16: {"rtol": 5e-2, "atol": 5e-2},
        torch.float16: {"rtol": 1e-2, "atol": 1e-2},
    }[dtype]


@st.composite
def segment_problems(draw):
    R = draw(st.integers(1, 5))
    seglen = draw(st.lists(st.integers(0, 6), min_size=R, max_size=R))
    D1, D2 = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dtype = draw(st.sampled_from(DTYPES))
    itype = draw(st.sampled_from([torch.int32, torch.int64]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    a = torch.randn(sum(seglen), D1, generator=g, dtype=torch.float64).to(dtype)
    b = torch.randn(R, D1, D2, generator=g, dtype=torch.float64).to(dtype)
    return a, b, torch.tensor(seglen, dtype=itype)


@given(segment_problems())
def test_segment_mm_equals_per_segment_reference(problem):
    a, b, seglen = problem
    a.requires_grad_()
    b.requires_grad_()
    out = segment_mm(a, b, seglen)
    seg_of_row = torch.repeat_interleave(torch.arange(len(seglen)), seglen.long())
    a64 = a.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_()
    ref = torch.bmm(a64[:, None], b64[seg_of_row])[:, 0]
    torch.testing.assert_close(out.double(), ref, **_tol(a.dtype))
    G = torch.randn_like(ref)
    ga, gb = torch.autograd.grad(out, (a, b), G.to(a.dtype))
    ga_ref, gb_ref = torch.autograd.grad(ref, (a64, b64), G)
    torch.testing.assert_close(ga.double(), ga_ref, **_tol(a.dtype))
    torch.testing.assert_close(gb.double(), gb_ref, **_tol(a.dtype))


@given(segment_problems(), st.data())
def test_gather_mm_equals_per_row_reference(problem, data):
    a, b, _ = problem
    R = b.shape[0]
    idx = torch.tensor(
        data.draw(st.lists(st.integers(0, R - 1), min_size=a.shape[0], max_size=a.shape[0])),
        dtype=torch.int64,
    )
    a.requires_grad_()
    b.requires_grad_()
    out = gather_mm(a, b, idx)
    a64 = a.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_()
    ref = torch.stack([a64[i] @ b64[idx[i]] for i in range(a.shape[0])]) if a.shape[0] else a64 @ b64[0]
    torch.testing.assert_close(out.double(), ref, **_tol(a.dtype))
    if a.shape[0]:
        G = torch.randn_like(ref)
        ga, gb = torch.autograd.grad(out, (a, b), G.to(a.dtype))
        ga_ref, gb_ref = torch.autograd.grad(ref, (a64, b64), G)
        torch.testing.assert_close(ga.double(), ga_ref, **_tol(a.dtype))
        torch.testing.assert_close(gb.double(), gb_ref, **_tol(a.dtype))


def test_gradcheck_float64():
    a = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 3, 2, dtype=torch.float64, requires_grad=True)
    seglen = torch.tensor([2, 0, 5])
    idx = torch.tensor([2, 0, 0, 1, 2, 2, 0])
    assert torch.autograd.gradcheck(lambda a, b: segment_mm(a, b, seglen), (a, b))
    assert torch.autograd.gradcheck(lambda a, b: gather_mm(a, b, idx), (a, b))


def test_many_rows_use_several_tiles_and_one_relation():
    a = torch.randn(1000, 4, dtype=torch.float64)
    b = torch.randn(1, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(segment_mm(a, b, torch.tensor([1000])), a @ b[0])
    torch.testing.assert_close(gather_mm(a, b, torch.zeros(1000, dtype=torch.int32)), a @ b[0])


def test_inputs_are_not_modified():
    a, b = torch.randn(5, 2), torch.randn(2, 2, 2)
    idx = torch.tensor([1, 0, 1, 1, 0])
    a0, b0, i0 = a.clone(), b.clone(), idx.clone()
    gather_mm(a, b, idx)
    segment_mm(a, b, torch.tensor([3, 2]))
    assert torch.equal(a, a0) and torch.equal(b, b0) and torch.equal(idx, i0)


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (
            (torch.ones(2, 2), torch.ones(2, 2), torch.tensor([1, 1])),
            ValueError,
            "Input tensors have unexpected dimensions",
        ),
        (
            (torch.ones(2, 3), torch.ones(2, 2, 2), torch.tensor([1, 1])),
            ValueError,
            "Incompatible size for inputs",
        ),
        (
            (torch.ones(2, 2), torch.ones(2, 2, 2), torch.tensor([2])),
            ValueError,
            "Incompatible size for inputs",
        ),
        (
            (torch.ones(3, 2), torch.ones(2, 2, 2), torch.tensor([1, 1])),
            ValueError,
            "must sum to the number of rows",
        ),
        ((torch.ones(2, 2), torch.ones(2, 2, 2), torch.tensor([3, -1])), ValueError, "non-negative"),
        (
            (torch.ones(2, 2), torch.ones(2, 2, 2, dtype=torch.float64), torch.tensor([1, 1])),
            TypeError,
            "dtype",
        ),
        (
            (torch.ones(2, 2), torch.ones(2, 2, 2), torch.tensor([1.0, 1.0])),
            TypeError,
            "int32 or torch.int64",
        ),
        (
            ("a", torch.ones(2, 2, 2), torch.tensor([1, 1])),
            ValueError,
            "Inputs should be instances of torch.Tensor",
        ),
    ],
)
def test_segment_mm_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        segment_mm(*args)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("a", torch.ones(2, 2, 2), torch.tensor([1, 1])), "Inputs should be instances of torch.Tensor"),
        (
            (torch.ones(2, 2, 1), torch.ones(2, 2, 2), torch.tensor([1, 1])),
            "Input tensors have unexpected dimensions",
        ),
        ((torch.ones(3, 2), torch.ones(2, 2, 2), torch.tensor([1, 1])), "Incompatible size for inputs"),
        ((torch.ones(2, 2), torch.ones(2, 2, 2), torch.tensor([0, 2])), r"idx_b must lie in \[0, 2\)"),
        ((torch.ones(2, 2), torch.ones(2, 2, 2), torch.tensor([-1, 0])), r"idx_b must lie in \[0, 2\)"),
    ],
)
def test_gather_mm_errors(args, match):
    with pytest.raises(ValueError, match=match):
        gather_mm(*args)


def test_old_torch_is_rejected_at_call_time(monkeypatch):
    monkeypatch.setattr(im.torch, "__version__", "2.3.1")
    with pytest.raises(NotImplementedError, match="PyTorch version is too old for nested tensors"):
        segment_mm(torch.ones(1, 1), torch.ones(1, 1, 1), torch.tensor([1]))
    with pytest.raises(NotImplementedError, match="PyTorch version is too old for nested tensors"):
        gather_mm(torch.ones(1, 1), torch.ones(1, 1, 1), torch.tensor([0]))


def test_native_grouped_product_matches_the_tiled_path_values_and_gradients():
    """float32 with 16-byte rows takes torch._grouped_mm; its gradients equal the portable path's."""
    if not hasattr(torch, "_grouped_mm"):
        pytest.skip("this torch has no _grouped_mm")
    g = torch.Generator().manual_seed(0)
    seglen = torch.tensor([5, 0, 7, 3, 0])
    a = torch.randn(15, 8, generator=g, requires_grad=True)
    b = torch.randn(5, 8, 4, generator=g, requires_grad=True)
    assert im._native_grouped_applies(a, b)
    out = segment_mm(a, b, seglen)
    assert "NativeGroupedMM" in type(out.grad_fn).__name__
    w = torch.randn(out.shape, generator=g)
    ga, gb = torch.autograd.grad((out * w).sum(), (a, b), create_graph=True)
    ref = im._tiled_mm(a, b, seglen)
    ra, rb = torch.autograd.grad((ref * w).sum(), (a, b), create_graph=True)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(ga, ra)
    torch.testing.assert_close(gb, rb)
    # second order through both gradients
    h1 = torch.autograd.grad((ga**2).sum() + (gb**2).sum(), (a, b))
    h2 = torch.autograd.grad((ra**2).sum() + (rb**2).sum(), (a, b))
    for x, y in zip(h1, h2):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)


def test_native_path_is_skipped_or_falls_back_where_it_does_not_apply(monkeypatch):
    a64 = torch.randn(4, 8, dtype=torch.float64)
    b64 = torch.randn(2, 8, 4, dtype=torch.float64)
    assert not im._native_grouped_applies(a64, b64)  # float64: no native kernel
    assert not im._native_grouped_applies(torch.randn(4, 3), torch.randn(2, 3, 4))  # 12-byte rows

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this device")

    monkeypatch.setattr(im, "_native_grouped_mm", lambda: broken)
    a = torch.randn(6, 8)
    b = torch.randn(2, 8, 4)
    out = segment_mm(a, b, torch.tensor([2, 4]))
    torch.testing.assert_close(out, torch.cat([a[:2] @ b[0], a[2:] @ b[1]]))
