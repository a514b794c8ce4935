"""The grouped product on every torch: ``F.grouped_mm``, else ``torch._grouped_mm``, else the tiled path."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

import tsgu_indexed.indexed_matmul as im
from tsgu_indexed import gather_mm, segment_mm


def _reference(a, b, seglen):
    rows = torch.repeat_interleave(torch.arange(len(seglen)), seglen)
    return torch.einsum("nd,nde->ne", a, b[rows])


def _check_values_and_gradients(expect_native: bool):
    g = torch.Generator().manual_seed(1)
    seglen = torch.tensor([3, 0, 6, 2])
    a = torch.randn(11, 8, generator=g, requires_grad=True)
    b = torch.randn(4, 8, 4, generator=g, requires_grad=True)
    out = segment_mm(a, b, seglen)
    assert ("NativeGroupedMM" in type(out.grad_fn).__name__) is expect_native
    w = torch.randn(out.shape, generator=g)
    ga, gb = torch.autograd.grad((out * w).sum(), (a, b))
    a_ref, b_ref = a.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    ref = _reference(a_ref, b_ref, seglen)
    ra, rb = torch.autograd.grad((ref * w.double()).sum(), (a_ref, b_ref))
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ga.double(), ra, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gb.double(), rb, rtol=1e-5, atol=1e-5)
    idx = torch.tensor([2, 0, 3, 2, 1])
    x = torch.randn(5, 8, generator=g)
    torch.testing.assert_close(gather_mm(x, b.detach(), idx), torch.einsum("nd,nde->ne", x, b.detach()[idx]))


def test_the_public_grouped_product_is_preferred(monkeypatch):
    public = object()
    monkeypatch.setattr(functional, "grouped_mm", public, raising=False)
    monkeypatch.setattr(torch, "_grouped_mm", object(), raising=False)
    assert im._native_grouped_mm() is public


def test_the_private_grouped_product_is_used_where_the_public_one_is_missing(monkeypatch):
    private = object()
    monkeypatch.delattr(functional, "grouped_mm", raising=False)
    monkeypatch.setattr(torch, "_grouped_mm", private, raising=False)
    assert im._native_grouped_mm() is private


def test_a_torch_without_any_grouped_product_takes_the_tiled_path(monkeypatch):
    """torch 2.5 has neither: values and both gradients still match the dense reference."""
    monkeypatch.delattr(functional, "grouped_mm", raising=False)
    monkeypatch.delattr(torch, "_grouped_mm", raising=False)
    assert im._native_grouped_mm() is None
    assert not im._native_grouped_applies(torch.randn(4, 8), torch.randn(2, 8, 4))
    _check_values_and_gradients(expect_native=False)


def test_the_running_torch_gives_the_reference_result():
    """Whatever this torch has (public, private or no kernel), float32 with 16-byte rows is exact."""
    native = im._native_grouped_mm()
    if native is not None:
        try:  # a build whose kernel does not run on the CPU falls back (tested below)
            native(torch.randn(2, 4), torch.randn(1, 4, 4), offs=torch.tensor([2], dtype=torch.int32))
        except (RuntimeError, NotImplementedError):
            native = None
    _check_values_and_gradients(expect_native=native is not None)


@pytest.mark.parametrize("error", [RuntimeError, NotImplementedError])
def test_a_kernel_that_refuses_the_operands_falls_back(monkeypatch, error):
    def refuses(*args, **kwargs):
        raise error("no kernel for this device")

    monkeypatch.setattr(im, "_native_grouped_mm", lambda: refuses)
    _check_values_and_gradients(expect_native=False)
