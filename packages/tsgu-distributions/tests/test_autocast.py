"""Under CPU bfloat16 autocast, with float32 inputs, the distributions compute as in float32 (issue 23 item 4).

The sparse triangular kernels have no bfloat16 implementation: every computing method runs with
autocast off (``tsgu_ops.internal.autocast_fp32``), and a bfloat16 ``value`` or ``loc`` handed on by
an autocast region is taken in float32.  Compared with the float32 result outside autocast and with
the dense ``torch.distributions.MultivariateNormal``.
"""

from __future__ import annotations

import pytest
import torch
from torch.distributions import MultivariateNormal

from tsgu_distributions import SparseMultivariateNormal, SparseMultivariateNormalNative


def _lower(n: int, g: torch.Generator) -> torch.Tensor:
    L = torch.tril(torch.randn(n, n, generator=g) * (torch.rand(n, n, generator=g) < 0.4), -1)
    return L + torch.diag(1.0 + torch.rand(n, generator=g))


FORMS = ["scale_tril", "precision_tril"]


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("form", FORMS)
def test_smvn_under_bfloat16_autocast_matches_float32(form, layout):
    g = torch.Generator().manual_seed(0)
    n = 6
    Ld = _lower(n, g)
    loc = torch.randn(n, generator=g)
    value = torch.randn(4, n, generator=g)

    def run():
        L = Ld.to_sparse(layout=layout).requires_grad_()
        d = SparseMultivariateNormal(loc, **{form: L})
        lp = d.log_prob(value)
        torch.manual_seed(1)
        x = d.rsample((3,))
        out = (lp.sum() + x.sum() + d.entropy()).float()
        return lp, x, d.entropy(), d.variance if form == "scale_tril" else None, out, L

    ref = run()
    ref[4].backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run()
    got[4].backward()
    for a, b in zip(got[:4], ref[:4]):
        if a is None:
            continue
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[5].grad.to_dense(), ref[5].grad.to_dense(), rtol=1e-4, atol=1e-5)
    # and the float32 numbers are the right ones
    dense = (
        MultivariateNormal(loc, scale_tril=Ld)
        if form == "scale_tril"
        else MultivariateNormal(loc, precision_matrix=Ld @ Ld.T)
    )
    torch.testing.assert_close(got[0], dense.log_prob(value), rtol=1e-4, atol=1e-4)


def test_smvn_takes_a_bfloat16_value_from_autocast_in_float32():
    g = torch.Generator().manual_seed(2)
    n = 5
    Ld = _lower(n, g)
    loc = torch.randn(n, generator=g)
    d = SparseMultivariateNormal(loc, scale_tril=Ld.to_sparse())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = torch.randn(3, n, generator=g) @ torch.eye(n)  # an autocast op: bfloat16
        assert value.dtype == torch.bfloat16
        lp = d.log_prob(value)
    assert lp.dtype == torch.float32
    ref = MultivariateNormal(loc, scale_tril=Ld).log_prob(value.float())
    torch.testing.assert_close(lp, ref, rtol=1e-4, atol=1e-4)


def test_native_smvn_under_bfloat16_autocast():
    g = torch.Generator().manual_seed(3)
    n = 6
    Ld = _lower(n, g)
    loc = torch.randn(n, generator=g)
    value = torch.randn(2, n, generator=g)
    d = SparseMultivariateNormalNative(loc, Ld.to_sparse_csr())
    ref_lp = d.log_prob(value)
    torch.manual_seed(4)
    ref_x = d.rsample((5,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp = d.log_prob(value)
        torch.manual_seed(4)
        x = d.rsample((5,))
    assert lp.dtype == x.dtype == torch.float32
    torch.testing.assert_close(lp, ref_lp)
    torch.testing.assert_close(x, ref_x)
    torch.testing.assert_close(
        lp, MultivariateNormal(loc, scale_tril=Ld).log_prob(value), rtol=1e-4, atol=1e-4
    )
