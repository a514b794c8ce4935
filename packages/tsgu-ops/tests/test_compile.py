"""torch.compile: SparseParameter steps with fullgraph=True, the custom operators, public ops.

Compiling is slow on CPU, so the tests are few and small.  The training step of
:class:`~tsgu_ops.nn.SparseParameter` is compiled with the default backend (inductor, which needs
a C++ compiler: skipped with the reason when there is none); the checks of what enters the graph
and the public functions on sparse tensors use ``aot_eager`` (dynamo + AOTAutograd, the stages that
reject sparse tensors), which needs no compiler.
"""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from tsgu_ops import SparsePattern, sparse_logsumexp, sparse_mm, sparse_triangular_solve
from tsgu_ops.nn import SparseParameter
from tsgu_ops.testing import build_case

pytestmark = pytest.mark.slow


class _Net(torch.nn.Module):
    """Two sparse layers and a sparse triangular solve: the shapes of a sparse training step."""

    def __init__(self) -> None:
        super().__init__()
        c1 = build_case(0, (8, 6), 0.4, torch.sparse_csr, torch.int32, torch.float64)
        c2 = build_case(1, (2, 8, 5), 0.4, torch.sparse_coo, torch.int64, torch.float64)
        c3 = build_case(2, (5, 5), 0.5, torch.sparse_csr, torch.int64, torch.float64, "lower")
        self.w1, self.w2, self.tri = (
            SparseParameter(c1.sparse),
            SparseParameter(c2.sparse),
            SparseParameter(c3.sparse),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.w1.mm(x))  # (8, p)
        h = self.w2.mm(torch.stack([h, 2 * h]), transpose=True)  # (2, 5, p)
        return self.tri.triangular_solve(h.sum(0), upper=False)


def _step(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return (net(x) ** 2).mean()


def _grads(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in net.parameters()]


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("cc") is None, reason="inductor needs a C++ compiler"
)
def test_sparse_parameter_training_step_compiles_with_fullgraph_and_matches_eager():
    torch._dynamo.reset()
    net = _Net()
    ref = copy.deepcopy(net)
    step = torch.compile(_step, fullgraph=True)
    opt, ref_opt = torch.optim.Adam(net.parameters(), 0.01), torch.optim.Adam(ref.parameters(), 0.01)
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        opt.zero_grad()
        ref_opt.zero_grad()
        loss, ref_loss = step(net, x), _step(ref, x)
        loss.backward()
        ref_loss.backward()
        torch.testing.assert_close(loss, ref_loss)
        for g, r in zip(_grads(net), _grads(ref)):
            torch.testing.assert_close(g, r)
        opt.step()
        ref_opt.step()
    for p, r in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, r)


def test_no_sparse_tensor_enters_the_forward_or_backward_graph():
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs: list[torch.fx.GraphModule] = []

    def record(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> object:
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    net = _Net()
    step = torch.compile(_step, backend=aot_autograd(fw_compiler=record, bw_compiler=record), fullgraph=True)
    x = torch.randn(6, 3, dtype=torch.float64)
    step(net, x).backward()
    assert len(graphs) == 2  # one forward and one backward graph: nothing broke the graph
    targets = set()
    for gm in graphs:
        for node in gm.graph.nodes:
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor):
                assert val.layout == torch.strided, f"{node} is a {val.layout} tensor"
            targets.add(str(node.target))
    assert {"tsgu.csr_mm.default", "tsgu.csr_sampled.default", "tsgu.csr_trisolve.default"} <= targets


def _sample_structure() -> tuple[SparsePattern, torch.Tensor, int]:
    A = build_case(4, (5, 5), 0.5, torch.sparse_csr, torch.int32, torch.float64, "lower").sparse
    return SparsePattern(A), A.values(), 5


@pytest.mark.skipif(not hasattr(torch.library, "opcheck"), reason="torch.library.opcheck needs torch >= 2.4")
def test_custom_operators_pass_opcheck():
    s, v, n = _sample_structure()
    v = v.clone().requires_grad_()
    X = torch.randn(n, 2, dtype=torch.float64, requires_grad=True)
    U = torch.randn(n, 3, dtype=torch.float64, requires_grad=True)
    tests = ("test_schema", "test_autograd_registration", "test_faketensor")
    idx = s.kernel_indices
    for transpose in (False, True):
        torch.library.opcheck(torch.ops.tsgu.csr_mm.default, (*idx, v, X, transpose), test_utils=tests)
    torch.library.opcheck(torch.ops.tsgu.csr_sampled.default, (*idx, U, U), test_utils=tests)
    torch.library.opcheck(
        torch.ops.tsgu.csr_trisolve.default,
        (*idx, v, X, False, False, True, None, None, None),
        test_utils=tests,
    )


def test_public_operations_on_sparse_tensors_compile_with_graph_breaks():
    """sparse_mm, sparse_triangular_solve and sparse_logsumexp inside a compiled step (fullgraph=False)."""
    A = build_case(6, (6, 6), 0.5, torch.sparse_csr, torch.int64, torch.float64, "lower").sparse
    B = torch.randn(6, 2, dtype=torch.float64)

    def step(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        Y = torch.tanh(sparse_mm(A, B))
        X = sparse_triangular_solve(A, Y, upper=False)
        return (X**2).sum() + sparse_logsumexp(A.to_sparse_coo(), dim=1).to_dense().sum()

    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager")
    out = {}
    for name, fn in (("compiled", compiled), ("eager", step)):
        Ar, Br = A.detach().clone().requires_grad_(), B.clone().requires_grad_()
        loss = fn(Ar, Br)
        loss.backward()
        out[name] = (loss.detach(), Ar.grad.values(), Br.grad)
    for c, e in zip(out["compiled"], out["eager"]):
        torch.testing.assert_close(c, e)
