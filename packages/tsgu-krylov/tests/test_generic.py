"""sparse_generic_solve and sparse_generic_lstsq: values and sparse gradients against dense autograd."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tsgu_krylov import (
    BICGSTABSettings,
    LinearCGSettings,
    MINRESSettings,
    SparseGenericLstsq,
    SparseGenericSolve,
    bicgstab,
    gmres,
    linear_cg,
    minres,
    sparse_generic_lstsq,
    sparse_generic_solve,
)
from tsgu_ops.testing import (
    assert_sparse_grad_matches,
    assert_unchanged,
    build_case,
    clone_input,
    grid_operator,
    stored_entries,
)

F64 = torch.float64


def _dense_solve_grads(D: torch.Tensor, B: torch.Tensor, weight: torch.Tensor):
    Dd = D.clone().requires_grad_()
    Bd = B.clone().requires_grad_()
    X = torch.linalg.solve(Dd, Bd)
    (X * weight).sum().backward()
    return X.detach(), Dd.grad, Bd.grad


def _check_solve(case, B, **kw):
    A = case.sparse.detach().clone().requires_grad_()
    Bs = B.clone().requires_grad_()
    before = clone_input(case.sparse)
    X = sparse_generic_solve(A, Bs, **kw)
    assert X.shape == B.shape
    weight = torch.linspace(-1, 1, X.numel(), dtype=F64).reshape(X.shape)
    (X * weight).sum().backward()
    vector = B.dim() < case.dense.dim()
    block = (lambda T: T.unsqueeze(-1)) if vector else (lambda T: T)
    Xd, dA, dB = _dense_solve_grads(case.dense, block(B), block(weight))
    torch.testing.assert_close(block(X.detach()), Xd, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(block(Bs.grad), dB, rtol=1e-7, atol=1e-8)
    assert_sparse_grad_matches(A, A.grad, dA, rtol=1e-6, atol=1e-8)
    assert_unchanged(before, case.sparse)


@pytest.mark.parametrize("structure", ["spd", "symmetric", "dominant"])
@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_default_solver_gives_correct_gradients_for_every_structure(structure, layout):
    case = build_case(11, (10, 10), 0.3, layout, torch.int64, F64, structure)
    _check_solve(case, torch.randn(10, 2, dtype=F64))
    _check_solve(case, torch.randn(10, dtype=F64))


@pytest.mark.parametrize(
    "solve",
    [
        "gmres",
        "bicgstab",
        gmres,
        bicgstab,
        lambda A, B, **kw: torch.linalg.solve(A.to_dense(), B),  # a lone user solve gets Aᵀ for backward
    ],
)
def test_every_solver_choice_is_right_for_non_symmetric_A(solve):
    case = build_case(12, (9, 9), 0.4, torch.sparse_csr, torch.int32, F64, "dominant")
    kw = {} if not isinstance(solve, str) and solve not in (gmres, bicgstab) else {"rtol": 1e-12}
    if solve is bicgstab or solve == "bicgstab":
        kw = {"settings": BICGSTABSettings(reltol=1e-12, abstol=0.0)}
    _check_solve(case, torch.randn(9, 3, dtype=F64), solve=solve, **kw)


def test_user_solve_and_transpose_solve_follow_the_convention():
    case = build_case(13, (8, 8), 0.4, torch.sparse_coo, torch.int64, F64, "dominant")
    calls = []

    def solve(A, B):
        calls.append("solve")
        return torch.linalg.solve(A.to_dense(), B)

    def tsolve(A, G):  # receives A itself
        calls.append("transpose")
        return torch.linalg.solve(A.to_dense().T, G)

    _check_solve(case, torch.randn(8, 2, dtype=F64), solve=solve, transpose_solve=tsolve)
    assert calls == ["solve", "transpose"]


@settings(deadline=None, max_examples=25)
@given(
    seed=st.integers(0, 2**20),
    n=st.integers(1, 8),
    k=st.integers(1, 3),
    layout=st.sampled_from([torch.sparse_coo, torch.sparse_csr]),
    index_dtype=st.sampled_from([torch.int32, torch.int64]),
    structure=st.sampled_from(["spd", "symmetric", "dominant"]),
    batch=st.sampled_from([None, 2]),
    duplicates=st.integers(0, 2),
)
def test_property_gradients_equal_dense_autograd(
    seed, n, k, layout, index_dtype, structure, batch, duplicates
):
    shape = (n, n) if batch is None else (batch, n, n)
    dup = duplicates if (layout == torch.sparse_coo and batch is None) else 0
    case = build_case(seed, shape, 0.4, layout, index_dtype, F64, structure, duplicates=dup)
    B = torch.randn(*shape[:-1], k, dtype=F64, generator=torch.Generator().manual_seed(seed))
    _check_solve(case, B)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_second_derivatives_match_dense_hessian_vector_products(layout):
    """Values from a differentiable graph, through tsgu-ops' sparse-preserving constructor.

    (PyTorch's own ``sparse_coo_tensor``/``sparse_csr_tensor`` backward is not differentiable
    again as of torch 2.13, so it cannot carry a second derivative to its values.)
    """
    from tsgu_ops import sparse_with_values

    case = build_case(14, (7, 7), 0.4, layout, torch.int64, F64, "dominant")
    vals = case.sparse.values() if layout == torch.sparse_csr else case.sparse._values()
    theta = vals.clone().requires_grad_()
    B = torch.randn(7, 2, dtype=F64)
    v = torch.randn_like(theta)
    coords = stored_entries(case.sparse)

    def loss_sparse(t):
        return (sparse_generic_solve(sparse_with_values(case.sparse, torch.sin(t)), B) ** 2).sum()

    def loss_dense(t):
        A = torch.zeros(7, 7, dtype=F64).index_put((coords[0], coords[1]), torch.sin(t), accumulate=True)
        return (torch.linalg.solve(A, B) ** 2).sum()

    g = torch.autograd.grad(loss_sparse(theta), theta, create_graph=True)[0]
    hv = torch.autograd.grad((g * v).sum(), theta)[0]
    gd = torch.autograd.grad(loss_dense(theta), theta, create_graph=True)[0]
    hvd = torch.autograd.grad((gd * v).sum(), theta)[0]
    torch.testing.assert_close(g, gd, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(hv, hvd, rtol=1e-5, atol=1e-8)


def test_gradcheck_through_the_generic_solve():
    from tsgu_ops import sparse_with_values

    case = build_case(15, (5, 5), 0.5, torch.sparse_csr, torch.int64, F64, "dominant")

    def f(values, B):
        return sparse_generic_solve(sparse_with_values(case.sparse, values), B, rtol=1e-13)

    values = case.sparse.values().clone().requires_grad_()
    B = torch.randn(5, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (values, B))
    assert torch.autograd.gradgradcheck(f, (values, B))


def test_0_2_7_keywords_and_settings_are_accepted():
    A = grid_operator((6, 6)).to_sparse_csr().requires_grad_()
    b = torch.ones(36, dtype=F64)
    ref = torch.linalg.solve(A.detach().to_dense(), b)
    for solve, kw in [
        (linear_cg, {"settings": LinearCGSettings(cg_tolerance=1e-12)}),
        (minres, {"settings": MINRESSettings(minres_tolerance=1e-12)}),
        (bicgstab, {"settings": BICGSTABSettings(reltol=1e-12, abstol=0.0)}),
        (linear_cg, {"tol": 1e-12}),  # the README examples pass tol= (a TypeError in 0.2.7)
        (minres, {"tol": 1e-12, "maxiter": 500}),
        ("cg", {"rtol": 1e-12, "preconditioner": "ic0"}),
        ("gmres", {"rtol": 1e-12, "preconditioner": "ilu0"}),
        (None, {"structure": "spd", "preconditioner": "jacobi"}),
    ]:
        x = sparse_generic_solve(A, b, solve, **kw)
        torch.testing.assert_close(x.detach(), ref, rtol=1e-8, atol=1e-10)
        x.sum().backward()


def test_batched_A_with_vector_and_block_rhs():
    case = build_case(16, (3, 6, 6), 0.4, torch.sparse_csr, torch.int32, F64, "dominant")
    _check_solve(case, torch.randn(3, 6, 2, dtype=F64))
    case = build_case(17, (2, 6, 6), 0.4, torch.sparse_coo, torch.int64, F64, "spd")
    _check_solve(case, torch.randn(2, 6, 4, dtype=F64), solve="cg", rtol=1e-12)


def test_autograd_class_apply_signature():
    case = build_case(18, (5, 5), 0.5, torch.sparse_coo, torch.int64, F64, "dominant")
    A = case.sparse.requires_grad_()
    B = torch.randn(5, 2, dtype=F64)
    X = SparseGenericSolve.apply(A, B, "gmres", None, {"rtol": 1e-12})
    torch.testing.assert_close(X, torch.linalg.solve(case.dense, B))
    X.sum().backward()
    assert A.grad.layout == torch.sparse_coo


def test_validation_messages_of_0_2_7():
    A = grid_operator((3,)).to_sparse_csr()
    b = torch.ones(3, dtype=F64)
    with pytest.raises(ValueError, match=r"Both A and B should be instances of torch\.Tensor"):
        sparse_generic_solve(A, [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match=r"Unsupported sparse layout: torch\.strided"):
        sparse_generic_solve(A.to_dense(), b)
    with pytest.raises(ValueError, match="A must be a 2D tensor"):
        sparse_generic_solve(torch.ones(2, 2, 2, 2).to_sparse(), b)
    with pytest.raises(ValueError, match="A must be square"):
        sparse_generic_solve(torch.ones(3, 2, dtype=F64).to_sparse(), b)
    with pytest.raises(ValueError, match="B must be a 1D or 2D tensor"):
        sparse_generic_solve(A, torch.ones(3, 1, 1, dtype=F64))
    with pytest.raises(ValueError, match="Incompatible dimensions"):
        sparse_generic_solve(A, torch.ones(4, dtype=F64))
    with pytest.raises(TypeError, match="B must be a dense"):
        sparse_generic_solve(A, b.to_sparse())
    with pytest.warns(UserWarning, match="different dtypes"):
        x = sparse_generic_solve(A, torch.ones(3, dtype=torch.float32))
    assert x.dtype == F64
    with pytest.raises(ValueError, match="solve must be a callable or one of"):
        sparse_generic_solve(A, b, "lu")


# ------------------------------------------------------------------------------------------------
def _dense_lstsq_grads(D, B, weight):
    Dd = D.clone().requires_grad_()
    Bd = B.clone().requires_grad_()
    X = torch.linalg.lstsq(Dd, Bd).solution
    (X * weight).sum().backward()
    return X.detach(), Dd.grad, Bd.grad


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("k", [None, 1, 3])
def test_lstsq_values_and_gradients_match_dense(layout, k):
    g = torch.Generator().manual_seed(3)
    D = torch.randn(14, 5, dtype=F64, generator=g) * (torch.rand(14, 5, generator=g) < 0.5)
    D += torch.eye(14, 5, dtype=F64) * 2
    A = (D.to_sparse() if layout == torch.sparse_coo else D.to_sparse_csr()).requires_grad_()
    B = torch.randn(14, dtype=F64, generator=g) if k is None else torch.randn(14, k, dtype=F64, generator=g)
    Bs = B.clone().requires_grad_()
    X = sparse_generic_lstsq(A, Bs)
    weight = torch.linspace(-1, 1, X.numel(), dtype=F64).reshape(X.shape)
    (X * weight).sum().backward()
    Bm = B if k is not None else B.unsqueeze(-1)
    Xd, dD, dB = _dense_lstsq_grads(D, Bm, weight.reshape(5, -1))
    torch.testing.assert_close(X.detach().reshape(Xd.shape), Xd, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(Bs.grad.reshape(dB.shape), dB, rtol=1e-6, atol=1e-9)
    assert_sparse_grad_matches(A, A.grad, dD, rtol=1e-6, atol=1e-8)


def test_lstsq_uncoalesced_coo_and_custom_solvers():
    D = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0], [1.0, 0.0]], dtype=F64)
    i = torch.tensor([[0, 1, 1, 2, 3, 0], [0, 0, 1, 1, 0, 0]])
    v = torch.tensor([1.0, 1.0, 1.0, 3.0, 1.0, 1.0], dtype=F64)
    A = torch.sparse_coo_tensor(i, v, (4, 2)).requires_grad_()
    B = torch.ones(4, dtype=F64)
    X = sparse_generic_lstsq(
        A,
        B,
        lstsq=lambda A, B: torch.linalg.lstsq(A.to_dense(), B.unsqueeze(-1)).solution.squeeze(-1),
        transpose_lstsq=lambda A, G: torch.linalg.pinv(A.to_dense().T) @ G,
    )
    X.sum().backward()
    Xd, dD, _ = _dense_lstsq_grads(D, B.unsqueeze(-1), torch.ones(2, 1, dtype=F64))
    torch.testing.assert_close(X.detach(), Xd.squeeze(-1))
    assert_sparse_grad_matches(A, A.grad, dD)  # each duplicate gets the gradient of its coordinate
    assert SparseGenericLstsq.apply(A.detach(), B, None, None).shape == (2,)


def test_lstsq_validates_in_forward():
    with pytest.raises(ValueError, match=r"A should be a tall full-rank matrix\. Got A\.shape="):
        sparse_generic_lstsq(torch.ones(2, 3, dtype=F64).to_sparse(), torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match="Both A and B"):
        sparse_generic_lstsq([[1.0]], torch.ones(3))
    with pytest.raises(TypeError, match="Unsupported sparse layout"):
        sparse_generic_lstsq(torch.ones(3, 2), torch.ones(3))
    with pytest.raises(ValueError, match="Incompatible dimensions"):
        sparse_generic_lstsq(torch.ones(3, 2, dtype=F64).to_sparse(), torch.ones(4, dtype=F64))
    with pytest.raises(TypeError, match="same dtype"):
        sparse_generic_lstsq(torch.ones(3, 2, dtype=F64).to_sparse(), torch.ones(3))


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_lone_user_solve_gets_the_transpose_of_a_batched_matrix(layout):
    """The backward hands a lone user solve Aᵀ with A's layout, batch and index dtype."""
    case = build_case(19, (3, 5, 5), 0.5, layout, torch.int32, F64, "dominant")
    seen = []

    def solve(A, B):
        seen.append((A.layout, A.shape))
        return torch.linalg.solve(A.to_dense(), B)

    _check_solve(case, torch.randn(3, 5, 2, dtype=F64), solve=solve)
    assert seen == [(layout, (3, 5, 5))] * 2
