"""torch.func over the values of a SparseParameter: grad, vjp, jacrev, jacfwd, hessian, vmap.

Every result is compared with the same function of a dense matrix built from the values by a
differentiable scatter (plain PyTorch), never with our own code.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, vjp, vmap

from tsgu_ops._compat import TORCH_VERSION
from tsgu_ops.nn import SparseParameter
from tsgu_ops.testing import build_case, stored_entries

F64 = torch.float64


def _param(layout: torch.layout, shape: tuple[int, ...], structure: str = "general", seed: int = 0):
    case = build_case(seed, shape, 0.5, layout, torch.int32, F64, structure)
    return SparseParameter(case.sparse)


def _dense(P: SparseParameter, v: torch.Tensor) -> torch.Tensor:
    """Dense matrix holding ``v``: a one-hot matrix product, so that vmap/jvp apply to it too."""
    if "_one_hot" not in P.__dict__:  # built once per parameter, outside any transform
        coords = stored_entries(P().detach())
        flat = torch.zeros(P.nnz, *P.shape, dtype=F64)
        flat[(torch.arange(P.nnz), *coords)] = 1.0
        P.__dict__["_one_hot"] = flat
    return torch.tensordot(v, P.__dict__["_one_hot"], dims=1)


CASES = [
    (torch.sparse_csr, (5, 4)),
    (torch.sparse_coo, (5, 4)),
    (torch.sparse_csr, (2, 4, 3)),
]


def _check_hessian(run, ref, **tol):  # type: ignore[no-untyped-def]
    """Forward-over-reverse equals the dense reference; on torch < 2.9 it may instead be the
    documented ``NotImplementedError`` (torch 2.5's functorch asserts inside a custom operator's
    vmap rule; seen in the torch 2.5.1 cell of the matrix)."""
    try:
        out = run()
    except NotImplementedError as exc:  # only where the matrix saw the functorch bug
        assert TORCH_VERSION < (2, 9) and "needs torch >= 2.9" in str(exc)
        return
    torch.testing.assert_close(out, ref(), **tol)


@pytest.mark.parametrize(("layout", "shape"), CASES, ids=["csr", "coo", "batched-csr"])
def test_derivatives_of_mm_with_respect_to_values_equal_dense(layout, shape):
    P = _param(layout, shape)
    _dense(P, P.values.detach())
    B = torch.randn(*shape[:-2], shape[-1], 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    v = P.values.detach().clone()

    def f(v: torch.Tensor) -> torch.Tensor:
        return (torch.sin(P.mm(B, values=v)) ** 2).sum()

    def f_ref(v: torch.Tensor) -> torch.Tensor:
        return (torch.sin(_dense(P, v) @ B) ** 2).sum()

    torch.testing.assert_close(grad(f)(v), grad(f_ref)(v))
    torch.testing.assert_close(jacrev(lambda v: P.mm(B, values=v))(v), jacrev(lambda v: _dense(P, v) @ B)(v))
    torch.testing.assert_close(jacfwd(lambda v: P.mm(B, values=v))(v), jacrev(lambda v: _dense(P, v) @ B)(v))
    _check_hessian(lambda: hessian(f)(v), lambda: hessian(f_ref)(v))
    out, pull = vjp(lambda v, B: P.mm(B, values=v, transpose=False), v, B)
    G = torch.randn_like(out)
    out_r, pull_r = vjp(lambda v, B: _dense(P, v) @ B, v, B)
    torch.testing.assert_close(out, out_r)
    for a, b in zip(pull(G), pull_r(G)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("layout", "shape"), CASES, ids=["csr", "coo", "batched-csr"])
def test_vmap_over_value_vectors_and_per_sample_gradients(layout, shape):
    P = _param(layout, shape)
    _dense(P, P.values.detach())
    g = torch.Generator().manual_seed(2)
    V = P.values.detach() + torch.randn(3, P.nnz, dtype=F64, generator=g)
    B = torch.randn(*shape[:-2], shape[-2], 2, dtype=F64, generator=g)
    Bs = torch.randn(3, *B.shape, dtype=F64, generator=g)
    # one pattern, three value vectors (and shared or per-item right-hand sides)
    expected = torch.stack([_dense(P, V[i]).mT @ B for i in range(3)])
    torch.testing.assert_close(vmap(lambda v: P.mm(B, values=v, transpose=True))(V), expected)
    expected = torch.stack([_dense(P, V[i]).mT @ Bs[i] for i in range(3)])
    torch.testing.assert_close(vmap(lambda v, b: P.mm(b, values=v, transpose=True))(V, Bs), expected)

    def loss(v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (P.mm(b, values=v, transpose=True) ** 3).sum()

    def loss_ref(v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((_dense(P, v).mT @ b) ** 3).sum()

    per_sample = vmap(grad(loss))(V, Bs)
    torch.testing.assert_close(per_sample, torch.stack([grad(loss_ref)(V[i], Bs[i]) for i in range(3)]))


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize(("structure", "upper"), [("lower", False), ("upper", True), ("strict_lower", False)])
def test_triangular_solve_under_func_transforms_equals_dense(structure, upper, transpose):
    P = _param(torch.sparse_csr, (5, 5), structure, seed=3)
    _dense(P, P.values.detach())
    unit = structure.startswith("strict")
    g = torch.Generator().manual_seed(4)
    B = torch.randn(5, 2, dtype=F64, generator=g)
    v = P.values.detach().clone()

    def solve(v: torch.Tensor, B: torch.Tensor = B) -> torch.Tensor:
        return P.triangular_solve(B, upper=upper, unitriangular=unit, transpose=transpose, values=v)

    def solve_ref(v: torch.Tensor, B: torch.Tensor = B) -> torch.Tensor:
        D = _dense(P, v)
        return torch.linalg.solve_triangular(
            D.mT if transpose else D, B, upper=upper != transpose, unitriangular=unit
        )

    torch.testing.assert_close(jacrev(solve)(v), jacrev(solve_ref)(v))
    torch.testing.assert_close(jacfwd(solve)(v), jacrev(solve_ref)(v))
    _check_hessian(
        lambda: hessian(lambda v: solve(v).pow(2).sum())(v),
        lambda: hessian(lambda v: solve_ref(v).pow(2).sum())(v),
    )
    V = v + 0.1 * torch.randn(3, P.nnz, dtype=F64, generator=g)
    torch.testing.assert_close(vmap(solve)(V), torch.stack([solve_ref(V[i]) for i in range(3)]))


def test_gradcheck_and_gradgradcheck_through_the_operators():
    P = _param(torch.sparse_coo, (4, 4), "lower", seed=5)
    v = P.values.detach().clone().requires_grad_()
    B = torch.randn(4, 2, dtype=F64, requires_grad=True)
    for fn in (
        lambda v, B: P.mm(B, values=v),
        lambda v, B: P.mm(B, values=v, transpose=True),
        lambda v, B: P.triangular_solve(B, upper=False, values=v),
    ):
        assert torch.autograd.gradcheck(fn, (v, B))
        assert torch.autograd.gradgradcheck(fn, (v, B))


def test_functional_call_vmaps_an_ensemble_of_sparse_models():
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = _param(torch.sparse_csr, (3, 4), seed=6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.w.mm(x))

    net = Net()
    _dense(net.w, net.w.values.detach())
    x = torch.randn(4, 2, dtype=F64)
    V = torch.randn(5, net.w.nnz, dtype=F64)
    out = vmap(lambda v: functional_call(net, {"w.values": v}, (x,)))(V)
    torch.testing.assert_close(out, torch.stack([torch.tanh(_dense(net.w, V[i]) @ x) for i in range(5)]))


def _dense_solver(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(A.to_dense(), B)


@pytest.mark.parametrize("solver", [_dense_solver])
def test_black_box_solve_under_func_transforms_equals_dense(solver):
    case = build_case(7, (6, 6), 0.4, torch.sparse_csr, torch.int32, F64, "spd")
    P = SparseParameter(case.sparse)
    _dense(P, P.values.detach())
    g = torch.Generator().manual_seed(8)
    B = torch.randn(6, 2, dtype=F64, generator=g)
    v = P.values.detach().clone()

    def solve(v: torch.Tensor) -> torch.Tensor:
        return P.solve(B, solver, values=v)

    def solve_ref(v: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(_dense(P, v), B)

    tol = {"rtol": 1e-7, "atol": 1e-9}
    torch.testing.assert_close(jacrev(solve)(v), jacrev(solve_ref)(v), **tol)
    torch.testing.assert_close(jacfwd(solve)(v), jacrev(solve_ref)(v), **tol)
    _check_hessian(
        lambda: hessian(lambda v: solve(v).pow(2).sum())(v),
        lambda: hessian(lambda v: solve_ref(v).pow(2).sum())(v),
        **tol,
    )
    V = v + 0.05 * torch.randn(3, P.nnz, dtype=F64, generator=g)  # still SPD: diagonally dominant
    torch.testing.assert_close(vmap(solve)(V), torch.stack([solve_ref(V[i]) for i in range(3)]), **tol)
