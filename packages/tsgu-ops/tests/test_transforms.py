"""torch.func and torch.compile on the public operations, against dense references.

* ``vmap``, ``grad``, ``jacrev``, ``jacfwd`` and ``vjp`` over the dense operands of ``sparse_mm``,
  ``sparse_triangular_solve``, ``implicit_solve`` and ``sampled_product`` with a fixed sparse ``A``
  equal the same transforms of the dense computation;
* what PyTorch cannot do (a sparse tensor made from functorch-wrapped values, a sparse ``A`` that
  requires grad inside a transform) raises an error naming the supported route;
* ``torch.compile`` (``fullgraph=False``) of whole training steps, ``loss.backward()`` and
  ``optimizer.step()`` inside the compiled function, equals eager step by step; a
  :class:`~tsgu_ops.nn.SparseParameter` step compiles with ``fullgraph=True``.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, jacfwd, jacrev, vjp, vmap

from tsgu_ops import implicit_solve, sampled_product, sparse_mm, sparse_triangular_solve, sparse_with_values
from tsgu_ops.nn import SparseParameter
from tsgu_ops.testing import build_case

F64 = torch.float64

CASES = [
    (torch.sparse_csr, torch.int32, (6, 6)),
    (torch.sparse_coo, torch.int64, (6, 6)),
    (torch.sparse_csr, torch.int64, (2, 6, 6)),
]
IDS = ["csr-int32", "coo", "batched-csr"]


def _case(layout, index_dtype, shape, structure="general", seed=0):  # type: ignore[no-untyped-def]
    return build_case(seed, shape, 0.5, layout, index_dtype, F64, structure)


def _dense_solve(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(A.to_dense(), B)


def _dense_tsolve(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(A.to_dense().mT, B)


def _ops(case):  # type: ignore[no-untyped-def]
    """(name, f(B) with the sparse A, the same with the dense A)."""
    A, D = case.sparse, case.dense
    return [
        ("mm", lambda B: sparse_mm(A, B), lambda B: D @ B),
        (
            "triangular",
            lambda B: sparse_triangular_solve(A, B, upper=False),
            lambda B: torch.linalg.solve_triangular(D, B, upper=False),
        ),
        (
            "triangular-transpose-unit",
            lambda B: sparse_triangular_solve(
                A_strict(case), B, upper=False, unitriangular=True, transpose=True
            ),
            lambda B: torch.linalg.solve_triangular(D_strict(case).mT, B, upper=True, unitriangular=True),
        ),
        (
            "implicit",
            lambda B: implicit_solve(A, B, _dense_solve, _dense_tsolve),
            lambda B: torch.linalg.solve(D, B),
        ),
    ]


def A_strict(case):  # type: ignore[no-untyped-def]
    if "strict" not in case.__dict__:
        D = torch.tril(case.dense, -1)
        S = D.to_sparse_csr() if case.sparse.layout == torch.sparse_csr else D.to_sparse()
        if case.sparse.layout == torch.sparse_csr and case.sparse.crow_indices().dtype == torch.int32:
            S = torch.sparse_csr_tensor(
                S.crow_indices().int(), S.col_indices().int(), S.values(), S.shape, dtype=F64
            )
        case.__dict__["strict"] = (S, D)
    return case.__dict__["strict"][0]


def D_strict(case):  # type: ignore[no-untyped-def]
    A_strict(case)
    return case.__dict__["strict"][1]


@pytest.mark.parametrize(("layout", "index_dtype", "shape"), CASES, ids=IDS)
def test_transforms_over_dense_operands_equal_dense(layout, index_dtype, shape):
    case = _case(layout, index_dtype, shape, "lower")
    g = torch.Generator().manual_seed(1)
    B = torch.randn(*shape[:-1], 2, dtype=F64, generator=g)
    Bs = torch.randn(3, *B.shape, dtype=F64, generator=g)
    for name, f, ref in _ops(case):
        torch.testing.assert_close(vmap(f)(Bs), vmap(ref)(Bs), msg=f"vmap {name}")
        torch.testing.assert_close(
            grad(lambda B, f=f: (f(B) ** 2).sum())(B),
            grad(lambda B, ref=ref: (ref(B) ** 2).sum())(B),
            msg=f"grad {name}",
        )
        torch.testing.assert_close(jacrev(f)(B), jacrev(ref)(B), msg=f"jacrev {name}")
        torch.testing.assert_close(jacfwd(f)(B), jacrev(ref)(B), msg=f"jacfwd {name}")
        out, pull = vjp(f, B)
        out_r, pull_r = vjp(ref, B)
        G = torch.randn(out.shape, dtype=F64, generator=g)
        torch.testing.assert_close(out, out_r, msg=f"vjp {name}")
        torch.testing.assert_close(pull(G)[0], pull_r(G)[0], msg=f"vjp pullback {name}")


def test_vmap_of_per_sample_gradients_through_sparse_mm_equals_dense():
    case = _case(torch.sparse_csr, torch.int64, (5, 4))
    W = torch.randn(4, 3, dtype=F64)
    xs = torch.randn(6, 3, 1, dtype=F64)

    def loss(W, x):  # type: ignore[no-untyped-def]
        return (torch.tanh(sparse_mm(case.sparse, W @ x)) ** 2).sum()

    def loss_ref(W, x):  # type: ignore[no-untyped-def]
        return (torch.tanh(case.dense @ (W @ x)) ** 2).sum()

    per = vmap(grad(loss), in_dims=(None, 0))(W, xs)
    ref = vmap(grad(loss_ref), in_dims=(None, 0))(W, xs)
    torch.testing.assert_close(per, ref)


def test_sampled_product_under_a_transform_raises_clearly():
    """Its result is a sparse tensor, which cannot hold transformed values: a clear error."""
    case = _case(torch.sparse_coo, torch.int64, (5, 4))
    U, V = torch.randn(5, 3, dtype=F64), torch.randn(4, 3, dtype=F64)
    with pytest.raises(NotImplementedError, match="sampled_product cannot build a sparse tensor"):
        grad(lambda U: sampled_product(case.sparse, U, V).to_dense().sum())(U)


def test_a_sparse_tensor_from_transformed_values_names_the_supported_route():
    case = _case(torch.sparse_csr, torch.int64, (4, 4))
    A = case.sparse
    B = torch.randn(4, 2, dtype=F64)
    v = A.values().clone()
    with pytest.raises(NotImplementedError, match="SparseParameter"):
        jacrev(lambda v: sparse_mm(sparse_with_values(A, v), B))(v)
    with pytest.raises(NotImplementedError, match="SparseParameter"):
        vmap(lambda v: sparse_with_values(A, v).to_dense())(torch.stack([v, 2 * v]))
    P = SparseParameter(A)
    with pytest.raises(NotImplementedError, match="values="):
        vmap(lambda v: P(v).to_dense())(torch.stack([v, 2 * v]))
    # the supported route: the same derivative through values=
    coords = tuple(A.to_sparse_coo().indices())  # CSR storage order is row-major: the same order

    def ref(v: torch.Tensor) -> torch.Tensor:
        return torch.zeros(4, 4, dtype=F64).index_put(coords, v) @ B

    torch.testing.assert_close(jacrev(lambda v: P.mm(B, values=v))(v), jacrev(ref)(v))


def test_a_sparse_input_that_requires_grad_inside_a_transform_raises_clearly():
    A = _case(torch.sparse_coo, torch.int64, (4, 4)).sparse.requires_grad_()
    Bs = torch.randn(2, 4, 1, dtype=F64)
    for fn in (
        lambda B: sparse_mm(A, B),
        lambda B: sparse_triangular_solve(A, B),
        lambda B: implicit_solve(A, B, _dense_solve, _dense_tsolve),
    ):
        with pytest.raises(NotImplementedError, match=r"A\.detach\(\)"):
            vmap(fn)(Bs)
    # outside a transform the same A works and gets its sparse gradient
    sparse_mm(A, Bs[0]).sum().backward()
    assert A.grad is not None and A.grad.layout == torch.sparse_coo


# ------------------------------------------------------------------------------------------------
# torch.compile: whole training steps, backward and optimizer step inside the compiled function
STEP_OPS = ["mm", "triangular", "implicit", "sampled"]


@pytest.mark.slow
@pytest.mark.parametrize("layout", [torch.sparse_csr, torch.sparse_coo], ids=["csr", "coo"])
@pytest.mark.parametrize("op", STEP_OPS)
def test_compiled_training_step_with_backward_and_optimizer_inside_equals_eager(op, layout):
    case = _case(layout, torch.int64, (5, 5), "lower", seed=3)
    eager, compiled = _run_steps(case, op, compiled=False), _run_steps(case, op, compiled=True)
    for e, c in zip(eager, compiled):
        for a, b in zip(e, c):
            torch.testing.assert_close(b, a)


def _run_steps(case, op: str, compiled: bool):  # type: ignore[no-untyped-def]
    """Losses, trained parameter and A's gradients over three SGD steps."""
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.randn(5, 2, dtype=F64))
    A = case.sparse.detach().clone().requires_grad_()
    opt = torch.optim.SGD([W], lr=0.05)
    grads: list[torch.Tensor] = []

    def step() -> torch.Tensor:
        opt.zero_grad()
        A.grad = None
        if op == "mm":
            Y = sparse_mm(A, torch.tanh(W))
        elif op == "triangular":
            Y = sparse_triangular_solve(A, torch.tanh(W), upper=False)
        elif op == "implicit":
            Y = implicit_solve(A, torch.tanh(W), _dense_solve, _dense_tsolve)
        else:
            Y = sampled_product(A, torch.tanh(W), W).to_dense()
        loss = (Y**2).sum()
        loss.backward()
        opt.step()
        if op != "sampled":  # the sampled product reads A's indices only: no gradient for A
            grads.append(A.grad.to_dense().detach().clone())
        return loss.detach()

    if compiled:
        torch._dynamo.reset()
    fn = torch.compile(step, backend="aot_eager") if compiled else step
    losses = [fn() for _ in range(3)]
    return losses, [W.detach().clone()], grads


@pytest.mark.slow
def test_sparse_parameter_step_with_unit_triangular_solve_compiles_fullgraph():
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    strict = build_case(4, (6, 6), 0.5, torch.sparse_csr, torch.int32, F64, "strict_lower")
    W = SparseParameter(build_case(5, (6, 6), 0.5, torch.sparse_coo, torch.int64, F64).sparse)
    L = SparseParameter(strict.sparse)
    x = torch.randn(6, 2, dtype=F64)

    def f(W: SparseParameter, L: SparseParameter, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(W.mm(x))
        return (L.triangular_solve(h, upper=False, unitriangular=True, transpose=True) ** 2).sum()

    graphs: list[torch.fx.GraphModule] = []

    def record(gm, example_inputs):  # type: ignore[no-untyped-def]
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    compiled = torch.compile(f, backend=aot_autograd(fw_compiler=record, bw_compiler=record), fullgraph=True)
    loss = compiled(W, L, x)
    loss.backward()
    assert len(graphs) == 2
    gw, gl = W.values.grad.clone(), L.values.grad.clone()
    # dense reference
    Wd = W().detach().to_dense().requires_grad_()
    Ld = L().detach().to_dense().requires_grad_()
    eye = torch.eye(6, dtype=F64)
    ref = (torch.linalg.solve_triangular((Ld + eye).mT, torch.tanh(Wd @ x), upper=True) ** 2).sum()
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(gw, Wd.grad[W().detach().to_dense() != 0])
    mask = L().detach().to_dense() != 0
    torch.testing.assert_close(gl, Ld.grad[mask])


def test_forward_mode_dual_tensors_outside_torch_func_equal_dense():
    """torch.autograd.forward_ad (no torch.func, no requires_grad): the tangent is not dropped."""
    import torch.autograd.forward_ad as fwad

    case = _case(torch.sparse_csr, torch.int32, (5, 5), "lower")
    B, T = torch.randn(5, 2, dtype=F64), torch.randn(5, 2, dtype=F64)
    with fwad.dual_level():
        for f, ref in (
            (lambda X: sparse_mm(case.sparse, X), lambda X: case.dense @ X),
            (
                lambda X: sparse_triangular_solve(case.sparse, X, upper=False),
                lambda X: torch.linalg.solve_triangular(case.dense, X, upper=False),
            ),
        ):
            out = fwad.unpack_dual(f(fwad.make_dual(B, T)))
            exp = fwad.unpack_dual(ref(fwad.make_dual(B, T)))
            torch.testing.assert_close(out.primal, exp.primal)
            torch.testing.assert_close(out.tangent, exp.tangent)


# fullgraph=True with a plain sparse tensor: PyTorch cannot (dynamo refuses to wrap sparse tensors),
# so the graph break says why and names the route that compiles with fullgraph=True
FULLGRAPH_OPS = {
    "mm": lambda A, B: sparse_mm(A, B),
    "triangular": lambda A, B: sparse_triangular_solve(A, B, upper=False),
    "sampled": lambda A, B: sampled_product(A, B, B).values(),
    "implicit": lambda A, B: implicit_solve(A, B, _dense_solve, _dense_tsolve),
}


@pytest.mark.slow
@pytest.mark.parametrize("op", list(FULLGRAPH_OPS))
def test_fullgraph_with_a_closed_over_sparse_tensor_names_the_supported_route(op):
    from torch._dynamo.exc import Unsupported

    case = _case(torch.sparse_csr, torch.int32, (5, 5), "lower", seed=2)
    A, B = case.sparse, torch.randn(5, 2, dtype=F64)
    fn = FULLGRAPH_OPS[op]
    expected = fn(A, B)  # an eager call first: the graph break's message is the disabled call's
    torch._dynamo.reset()
    with pytest.raises(Unsupported, match=r"fullgraph=True.*SparseParameter"):
        torch.compile(lambda B: fn(A, B), backend="aot_eager", fullgraph=True)(B)
    torch._dynamo.reset()  # without fullgraph the same call is a graph break that runs eagerly
    torch.testing.assert_close(torch.compile(lambda B: fn(A, B), backend="aot_eager")(B), expected)


@pytest.mark.slow
def test_the_named_route_compiles_with_fullgraph_and_equals_dense():
    case = _case(torch.sparse_coo, torch.int64, (5, 5), "lower", seed=2)
    W = SparseParameter(case.sparse, requires_grad=False)
    B = torch.randn(5, 3, dtype=F64, requires_grad=True)
    torch._dynamo.reset()
    out = torch.compile(
        lambda B: W.mm(B) + W.triangular_solve(B, upper=False), backend="aot_eager", fullgraph=True
    )(B)
    D = case.dense
    torch.testing.assert_close(out, D @ B + torch.linalg.solve_triangular(D, B, upper=False))


_FIRST_CALL_TRACED = """
import torch, warnings
warnings.simplefilter("ignore")
from torch._dynamo.exc import Unsupported
from tsgu_ops import sparse_mm
A = torch.tensor([[2.0, 0.0], [1.0, 3.0]]).to_sparse_csr()
B = torch.randn(2, 2)
try:
    torch.compile(lambda B: sparse_mm(A, B), backend="aot_eager", fullgraph=True)(B)
except Unsupported as exc:
    print("RAISED", "SparseParameter" in str(exc) and "fullgraph=True" in str(exc))
torch._dynamo.reset()
out = torch.compile(lambda B: sparse_mm(A, B), backend="aot_eager")(B)
print("EQUAL", torch.allclose(out, A.to_dense() @ B))
"""


@pytest.mark.slow
def test_the_message_holds_when_the_first_call_ever_is_the_traced_one():
    """In a fresh process the disabled wrapper does not exist yet when dynamo traces the call."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", _FIRST_CALL_TRACED], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert "RAISED True" in run.stdout and "EQUAL True" in run.stdout, run.stdout + run.stderr
