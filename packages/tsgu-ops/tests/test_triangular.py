"""sparse_triangular_solve against torch.linalg.solve_triangular on dense matrices."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tsgu_ops import SparseTriangularSolve, sparse_triangular_solve, sparse_values, sparse_with_values
from tsgu_ops.testing import (
    assert_sparse_grad_matches,
    assert_unchanged,
    build_case,
    clone_input,
    dense_like,
    sparse_matrices,
)


def _dense_solve(D, B, upper, unit, transpose):
    M = D.mT if transpose else D
    return torch.linalg.solve_triangular(M, B, upper=upper != transpose, unitriangular=unit)


@given(
    case=sparse_matrices(structures=["lower", "upper", "strict_lower", "strict_upper"], square=True),
    transpose=st.booleans(),
    p=st.integers(1, 3),
    data=st.data(),
)
def test_solution_and_gradients_equal_dense(case, transpose, p, data):
    upper = "upper" in case.structure
    unit = case.structure.startswith("strict")
    A = case.sparse.requires_grad_()
    B = data.draw(dense_like((*A.shape[:-1], p), A.dtype)).requires_grad_()
    A0, B0 = clone_input(A), clone_input(B)
    X = sparse_triangular_solve(A, B, upper=upper, unitriangular=unit, transpose=transpose)
    D = case.dense.clone().requires_grad_()
    Xd = _dense_solve(D, B, upper, unit, transpose)
    tol = {"rtol": 1e-3, "atol": 1e-3} if A.dtype == torch.float32 else {}
    torch.testing.assert_close(X, Xd, **tol)
    G = data.draw(dense_like(tuple(X.shape), A.dtype))
    gA, gB = torch.autograd.grad(X, (A, B), G)
    gD, gBd = torch.autograd.grad(Xd, (D, B), G)
    assert_sparse_grad_matches(A, gA, gD, **tol)
    torch.testing.assert_close(gB, gBd, **tol)
    assert_unchanged(A0, A)
    assert_unchanged(B0, B)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize(
    ("structure", "upper", "unit"), [("lower", False, False), ("strict_upper", True, True)]
)
@pytest.mark.parametrize("transpose", [False, True])
def test_gradcheck_and_gradgradcheck(layout, batched, structure, upper, unit, transpose):
    shape = (2, 4, 4) if batched else (4, 4)
    like = build_case(3, shape, 0.6, layout, torch.int32, torch.float64, structure).sparse
    v = sparse_values(like).detach().clone().requires_grad_()
    B = torch.randn(*shape[:-1], 2, dtype=torch.float64, requires_grad=True)

    def f(v, B):
        return sparse_triangular_solve(sparse_with_values(like, v), B, upper, unit, transpose)

    assert torch.autograd.gradcheck(f, (v, B))
    assert torch.autograd.gradgradcheck(f, (v, B))


def test_entries_outside_the_triangle_are_ignored_and_get_zero_gradient():
    D = torch.tensor([[2.0, 5.0], [1.0, 4.0]], dtype=torch.float64)
    A = D.to_sparse_csr().requires_grad_()
    B = torch.ones(2, 1, dtype=torch.float64)
    X = sparse_triangular_solve(A, B, upper=False)
    torch.testing.assert_close(X, torch.linalg.solve_triangular(D.tril(), B, upper=False))
    X.sum().backward()
    assert A.grad.values()[1].item() == 0.0


def test_unitriangular_with_stored_diagonal_is_rejected_in_forward():
    A = torch.tensor([[1.0, 0.0], [2.0, 1.0]]).to_sparse()
    with pytest.raises(
        ValueError, match=r"First input should be strictly triangular \(i.e. unit diagonals is implicit\)"
    ):
        sparse_triangular_solve(A, torch.ones(2, 1), upper=False, unitriangular=True)


def test_no_deprecation_warning_reaches_the_caller():
    A = torch.tensor([[1.0, 0.0], [2.0, 3.0]]).to_sparse().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X = sparse_triangular_solve(A, torch.ones(2, 1), upper=False)
        X.sum().backward()


def test_autograd_function_class_is_public():
    A = torch.eye(2).to_sparse_csr()
    torch.testing.assert_close(
        SparseTriangularSolve.apply(A, torch.ones(2, 1), True, False, False), torch.ones(2, 1)
    )


@pytest.mark.parametrize(
    ("A", "B", "message"),
    [
        (1, torch.ones(2, 2), "Both A and B should be instances of torch.Tensor"),
        (torch.eye(2).to_sparse(), torch.ones(2), "Both A and B should be at least 2-dimensional tensors"),
        (torch.eye(2).to_sparse(), torch.ones(1, 2, 2), "A and B must both be 2D or both be 3D tensors"),
        (torch.eye(2).to_sparse_csc(), torch.ones(2, 2), "A should be in either COO or CSR sparse format"),
        (torch.eye(2).to_sparse(), torch.ones(2, 2).to_sparse(), "B must be a dense (strided) tensor"),
        (torch.ones(2, 3).to_sparse(), torch.ones(2, 2), "A must be square on its last two dimensions"),
        (torch.eye(2).to_sparse(), torch.ones(3, 2), "Incompatible inner dimensions: A[..., 2] vs B[..., 3]"),
        (
            torch.ones(2, 2, 2).to_sparse(),
            torch.ones(3, 2, 1),
            "If batched, A and B must have the same batch size",
        ),
    ],
)
def test_bad_input_raises_the_0_2_7_message(A, B, message):
    with pytest.raises(ValueError) as err:
        sparse_triangular_solve(A, B)
    assert str(err.value) == message


@pytest.mark.parametrize("upper", [False, True])
def test_unit_solve_ignores_the_other_triangle_on_both_kernel_paths(upper):
    """A strict pattern uses the stored-unit-diagonal fast path; entries in the other triangle the slow one."""
    g = torch.Generator().manual_seed(1)
    D = torch.randn(6, 6, dtype=torch.float64, generator=g) * (torch.rand(6, 6, generator=g) < 0.5)
    D = D - torch.diag(torch.diagonal(D))
    strict = torch.triu(D, 1) if upper else torch.tril(D, -1)
    B = torch.randn(6, 2, dtype=torch.float64, generator=g)
    for M in (strict, D):  # D also stores entries in the other triangle
        X = sparse_triangular_solve(M.to_sparse_csr(), B, upper=upper, unitriangular=True)
        torch.testing.assert_close(X, torch.linalg.solve_triangular(M, B, upper=upper, unitriangular=True))
