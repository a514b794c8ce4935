"""implicit_solve with a dense direct solver: solution, gradients, Hessian-vector products."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tsgu_ops import implicit_solve, sparse_values, sparse_with_values
from tsgu_ops.testing import assert_sparse_grad_matches, build_case, dense_like, sparse_matrices


def dense_solve(A, B):
    return torch.linalg.solve(A.to_dense(), B)


def dense_transpose_solve(A, B):
    return torch.linalg.solve(A.to_dense().mT, B)


def _well_conditioned(case):
    """Shift the diagonal so the (general, non-symmetric) matrix is safely invertible."""
    n = case.dense.shape[-1]
    return case.dense + 4 * n * torch.eye(n, dtype=case.dense.dtype)


@given(
    case=sparse_matrices(structures=["spd", "lower"], value_dtypes=[torch.float64], allow_duplicates=False),
    k=st.integers(1, 3),
    data=st.data(),
)
def test_solution_and_gradient_equal_dense_solve(case, k, data):
    A = case.sparse.requires_grad_()
    B = data.draw(dense_like((*A.shape[:-1], k))).requires_grad_()
    X = implicit_solve(A, B, dense_solve, dense_transpose_solve)
    D = case.dense.clone().requires_grad_()
    Xd = torch.linalg.solve(D, B)
    torch.testing.assert_close(X, Xd)
    G = data.draw(dense_like(tuple(X.shape)))
    gA, gB = torch.autograd.grad(X, (A, B), G)
    gD, gBd = torch.autograd.grad(Xd, (D, B), G)
    assert_sparse_grad_matches(A, gA, gD)
    torch.testing.assert_close(gB, gBd)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("batched", [False, True])
def test_nonsymmetric_gradcheck_and_gradgradcheck(layout, batched):
    shape = (2, 4, 4) if batched else (4, 4)
    case = build_case(5, shape, 0.5, layout, torch.int64, torch.float64, "lower")
    dense = _well_conditioned(case) + torch.triu(torch.ones(4, 4, dtype=torch.float64), 1)
    like = dense.to_sparse() if layout == torch.sparse_coo else dense.to_sparse_csr()
    v = sparse_values(like).detach().clone().requires_grad_()
    B = torch.randn(*shape[:-1], 2, dtype=torch.float64, requires_grad=True)

    def f(v, B):
        return implicit_solve(sparse_with_values(like, v), B, dense_solve, dense_transpose_solve)

    assert torch.autograd.gradcheck(f, (v, B))
    assert torch.autograd.gradgradcheck(f, (v, B))


def test_vector_rhs_keeps_its_rank():
    A = (3 * torch.eye(3, dtype=torch.float64)).to_sparse()
    X = implicit_solve(A, torch.ones(3, dtype=torch.float64), dense_solve, dense_transpose_solve)
    assert X.shape == (3,)


def test_solver_returning_wrong_shape_is_a_clear_error():
    A = torch.eye(3, dtype=torch.float64).to_sparse()
    with pytest.raises(ValueError, match="right-hand side's shape"):
        implicit_solve(A, torch.ones(3, 1, dtype=torch.float64), lambda A, B: B[:2], dense_transpose_solve)


@pytest.mark.parametrize(
    ("A", "B", "exc"),
    [
        (torch.eye(2), torch.ones(2), ValueError),
        (torch.ones(2, 3).to_sparse(), torch.ones(2), ValueError),
        (torch.eye(2).to_sparse(), torch.ones(3), ValueError),
        (torch.eye(2).to_sparse(), "b", TypeError),
        (torch.eye(2).to_sparse(), torch.ones(2, dtype=torch.float64), TypeError),
    ],
)
def test_bad_input(A, B, exc):
    with pytest.raises(exc):
        implicit_solve(A, B, dense_solve, dense_transpose_solve)
