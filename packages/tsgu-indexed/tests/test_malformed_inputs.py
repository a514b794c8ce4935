"""Property: segment_mm and gather_mm reject every malformed input with ValueError/TypeError."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tsgu_indexed import gather_mm, segment_mm

CORRUPTIONS = [
    "a not a tensor",
    "a 3-D",
    "b 2-D",
    "inner size",
    "dtype",
    "index float",
    "index 2-D",
    "lengths sum",
    "negative length",
    "index out of range",
    "relations count",
]


@settings(deadline=None, max_examples=80)
@given(
    N=st.integers(1, 12),
    R=st.integers(1, 4),
    D1=st.integers(1, 4),
    D2=st.integers(1, 4),
    op=st.sampled_from(["segment", "gather"]),
    bad=st.sampled_from(CORRUPTIONS),
    seed=st.integers(0, 2**16),
)
def test_malformed_inputs_raise_value_or_type_error(N, R, D1, D2, op, bad, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(N, D1, generator=g)
    b = torch.randn(R, D1, D2, generator=g)
    idx = torch.randint(0, R, (N,), generator=g)
    third = torch.bincount(idx, minlength=R) if op == "segment" else idx
    args: list[object] = [a, b, third]
    if bad == "a not a tensor":
        args[0] = a.tolist()
    elif bad == "a 3-D":
        args[0] = a[None]
    elif bad == "b 2-D":
        args[1] = b[0]
    elif bad == "inner size":
        args[1] = torch.randn(R, D1 + 1, D2)
    elif bad == "dtype":
        args[1] = b.double()
    elif bad == "index float":
        args[2] = third.float()
    elif bad == "index 2-D":
        args[2] = third[None]
    elif bad == "lengths sum":
        if op != "segment":
            return
        t = third.clone()
        t[0] += 1
        args[2] = t
    elif bad == "negative length":
        if op != "segment" or R < 2:
            return
        t = third.clone()
        t[0] -= N + 1
        t[1] += N + 1
        args[2] = t
    elif bad == "index out of range":
        if op != "gather":
            return
        t = third.clone()
        t[0] = R
        args[2] = t
    else:  # relations count differs from the lengths
        if op != "segment":
            return
        args[2] = torch.cat([third, torch.zeros(1, dtype=third.dtype)])
    fn = segment_mm if op == "segment" else gather_mm
    with pytest.raises((ValueError, TypeError)):
        fn(*args)


@pytest.mark.parametrize("op", ["segment", "gather"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128, torch.int64, torch.bool])
def test_complex_and_integer_operands_raise_type_error_naming_supported_dtypes(op, dtype):
    a, b = torch.ones(3, 2).to(dtype), torch.ones(2, 2, 2).to(dtype)
    third = torch.tensor([1, 2]) if op == "segment" else torch.tensor([0, 1, 1])
    with pytest.raises(TypeError, match="float16, bfloat16, float32, float64"):
        (segment_mm if op == "segment" else gather_mm)(a, b, third)


@pytest.mark.parametrize("op", ["segment", "gather"])
@pytest.mark.parametrize("where", ["operands", "index"])
def test_meta_tensors_raise_value_error(op, where):
    dev = "meta" if where == "operands" else "cpu"
    a, b = torch.ones(3, 2, device=dev), torch.ones(2, 2, 2, device=dev)
    third = torch.tensor([1, 2]) if op == "segment" else torch.tensor([0, 1, 1])
    if where == "index":
        third = third.to("meta")
    with pytest.raises(ValueError, match="meta"):
        (segment_mm if op == "segment" else gather_mm)(a, b, third)


@settings(deadline=None, max_examples=20)
@given(
    op=st.sampled_from(["segment", "gather"]),
    bad=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    in_b=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_nan_and_inf_propagate_like_the_dense_product(op, bad, in_b, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(6, 4, generator=g).to(dtype)
    b = torch.randn(3, 4, 4, generator=g).to(dtype)
    idx = torch.randint(0, 3, (6,), generator=g)
    if in_b:
        b[int(idx[0]), 1, 2] = bad
    else:
        a[0, 1] = bad
    if op == "segment":
        idx = torch.sort(idx).values
        out = segment_mm(a, b, torch.bincount(idx, minlength=3))
    else:
        out = gather_mm(a, b, idx)
    ref = torch.bmm(a[:, None], b[idx])[:, 0]
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    torch.testing.assert_close(out, ref, equal_nan=True, rtol=1e-5, atol=1e-5)
