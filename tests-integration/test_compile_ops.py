"""Every public operation inside a compiled training step (fullgraph=False) gives the eager result.

Sparse tensors cannot enter a compiled graph; these operations take them anyway, so dynamo must
break the graph around them and run them eagerly.  Backend ``aot_eager`` (dynamo + AOTAutograd,
the stages that reject sparse tensors; no C++ compiler needed).  The operations of tsgu-ops itself
and ``SparseParameter`` (fullgraph=True) are tested in ``packages/tsgu-ops/tests/test_compile.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from tsgu_ops.testing import build_case, grid_operator

F64 = torch.float64
pytestmark = pytest.mark.slow


def _compare(step: Callable[..., torch.Tensor], make_inputs: Callable[[], tuple[torch.Tensor, ...]]) -> None:
    """Loss and every input gradient of the compiled step equal those of the eager step."""
    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=False)
    results = []
    for fn in (compiled, step):
        inputs = make_inputs()
        loss = fn(*inputs)
        loss.backward()
        grads = []
        for x in inputs:
            g = x.grad
            grads.append(g.to_dense() if g is not None and g.layout != torch.strided else g)
        results.append((loss.detach(), grads))
    (loss_c, grads_c), (loss_e, grads_e) = results
    torch.testing.assert_close(loss_c, loss_e)
    for gc, ge in zip(grads_c, grads_e):
        assert (gc is None) == (ge is None)
        if gc is not None:
            torch.testing.assert_close(gc, ge)


@pytest.mark.parametrize("solver", ["cg", "minres", "bicgstab", "gmres"])
def test_generic_solve_with_each_builtin_solver(solver):
    from torchsparsegradutils import sparse_generic_solve

    A = grid_operator((3, 3)).to_sparse_csr()
    B = torch.randn(9, 2, dtype=F64, generator=torch.Generator().manual_seed(0))

    def step(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(sparse_generic_solve(A, B, solver, rtol=1e-10)) ** 2).sum()

    _compare(step, lambda: (A.detach().clone().requires_grad_(), B.clone().requires_grad_()))


def test_sparse_multivariate_normal_rsample_and_log_prob():
    from torchsparsegradutils.distributions import SparseMultivariateNormal

    L = build_case(1, (6, 6), 0.5, torch.sparse_coo, torch.int64, F64, "strict_lower").sparse

    def step(loc: torch.Tensor, diag: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        d = SparseMultivariateNormal(loc, diag, scale_tril=L)
        x = d.rsample((3,))
        return d.log_prob(x).sum() + (x**2).sum()

    def inputs() -> tuple[torch.Tensor, ...]:
        torch.manual_seed(0)  # the same draws in both runs
        return (
            torch.zeros(6, dtype=F64, requires_grad=True),
            torch.ones(6, dtype=F64, requires_grad=True),
            L.detach().clone().requires_grad_(),
        )

    _compare(step, inputs)


def test_pairwise_encoder_and_sparse_mm():
    from torchsparsegradutils import sparse_mm
    from torchsparsegradutils.encoders import PairwiseEncoder

    enc = PairwiseEncoder(1, (1, 4, 4), upper=False, layout=torch.sparse_csr)
    v = torch.randn(len(enc.offsets), 1, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(0))

    def step(v: torch.Tensor) -> torch.Tensor:
        return (sparse_mm(enc(v), torch.ones(16, 1, dtype=F64)) ** 2).sum()

    _compare(step, lambda: (v.clone().requires_grad_(),))


def test_segment_mm_and_gather_mm():
    from torchsparsegradutils import gather_mm, segment_mm

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(10, 4, dtype=F64, generator=g), torch.randn(3, 4, 5, dtype=F64, generator=g)
    seglen = torch.tensor([3, 3, 4])
    idx = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])

    def step(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (segment_mm(a, b, seglen) ** 2).sum() + gather_mm(a, b, idx).sin().sum()

    _compare(step, lambda: (a.clone().requires_grad_(), b.clone().requires_grad_()))


def test_meta_package_reexports_sparse_parameter():
    import torchsparsegradutils.nn
    import tsgu_ops.nn

    assert torchsparsegradutils.nn.SparseParameter is tsgu_ops.nn.SparseParameter
