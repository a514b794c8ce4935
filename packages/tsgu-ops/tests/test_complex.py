"""Complex values: forward results and conjugate (Wirtinger) gradients against dense autograd.

PyTorch's autograd gives, for ``C = A B`` with complex tensors, ``dA = G Bᴴ`` and ``dB = Aᴴ G``;
for ``X = A⁻¹ B``, ``dB = A⁻ᴴ G`` and ``dA = −dB Xᴴ``.  Every operation that accepts complex values
must match ``torch.autograd.grad`` on the dense matrix at the stored entries, and pass complex
``gradcheck``/``gradgradcheck`` (which checks the Wirtinger derivatives numerically).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tsgu_ops import (
    SparseMatMul,
    SparseTriangularSolve,
    implicit_solve,
    sampled_product,
    sparse_mm,
    sparse_triangular_solve,
    sparse_values,
    sparse_with_values,
)
from tsgu_ops.testing import (
    COMPLEX_DTYPES,
    assert_sparse_grad_matches,
    build_case,
    sparse_matrices,
    stored_entries,
)


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.complex64 else {"rtol": 1e-10, "atol": 1e-10}


def _crandn(*shape: int, dtype: torch.dtype = torch.complex128, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


@settings(max_examples=10)
@given(case=sparse_matrices(value_dtypes=COMPLEX_DTYPES), p=st.integers(1, 3), seed=st.integers(0, 99))
def test_sparse_mm_complex_matches_dense_autograd(case, p, seed, assert_mm_matches_dense_autograd):
    A = case.sparse.requires_grad_()
    B = _crandn(*A.shape[:-2], A.shape[-1], p, dtype=A.dtype, seed=seed).requires_grad_()

    def upstream(shape):
        return _crandn(*shape, dtype=A.dtype, seed=seed + 1)

    assert_mm_matches_dense_autograd(case, B, upstream)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("batched", [False, True])
def test_sparse_mm_autograd_function_complex(layout, batched):
    shape = (2, 4, 3) if batched else (4, 3)
    case = build_case(3, shape, 0.5, layout, torch.int64, torch.complex128)
    A = case.sparse.requires_grad_()
    B = _crandn(*shape[:-2], 3, 2).requires_grad_()
    C = SparseMatMul.apply(A, B)
    D = case.dense.clone().requires_grad_()
    G = _crandn(*C.shape, seed=5)
    gA, gB = torch.autograd.grad(C, (A, B), G)
    gD, gBd = torch.autograd.grad(D @ B, (D, B), G)
    assert_sparse_grad_matches(A, gA, gD, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gB, gBd)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("batched", [False, True])
def test_complex_gradcheck_and_gradgradcheck_of_sparse_mm(layout, batched):
    shape = (2, 3, 3) if batched else (3, 3)
    like = build_case(7, shape, 0.6, layout, torch.int32, torch.complex128).sparse
    v = sparse_values(like).detach().clone().requires_grad_()
    B = _crandn(*shape[:-2], 3, 2, seed=1).requires_grad_()

    def f(v, B):
        return sparse_mm(sparse_with_values(like, v), B)

    assert torch.autograd.gradcheck(f, (v, B), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (v, B), fast_mode=True)


@settings(max_examples=10)
@given(
    case=sparse_matrices(
        value_dtypes=COMPLEX_DTYPES, structures=("lower", "upper", "strict_lower", "strict_upper")
    ),
    transpose=st.booleans(),
    seed=st.integers(0, 99),
)
def test_triangular_solve_complex_matches_dense_autograd(case, transpose, seed):
    upper = case.structure in ("upper", "strict_upper")
    unit = case.structure.startswith("strict")
    A = case.sparse.requires_grad_()
    B = _crandn(*A.shape[:-1], 2, dtype=A.dtype, seed=seed).requires_grad_()
    X = sparse_triangular_solve(A, B, upper=upper, unitriangular=unit, transpose=transpose)
    n = A.shape[-1]
    D = case.dense.clone().requires_grad_()
    M = D + torch.eye(n, dtype=D.dtype) if unit else D
    Xd = torch.linalg.solve_triangular(M.mT if transpose else M, B, upper=upper != transpose)
    torch.testing.assert_close(X, Xd, **_tol(A.dtype))
    G = _crandn(*X.shape, dtype=A.dtype, seed=seed + 1)
    gA, gB = torch.autograd.grad(X, (A, B), G)
    gD, gBd = torch.autograd.grad(Xd, (D, B), G)
    tol = {"rtol": 1e-3, "atol": 1e-3} if A.dtype == torch.complex64 else _tol(A.dtype)
    assert_sparse_grad_matches(A, gA, gD, **tol)
    torch.testing.assert_close(gB, gBd, **tol)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_triangular_solve_autograd_function_and_gradgradcheck_complex(layout, transpose):
    case = build_case(11, (4, 4), 0.6, layout, torch.int64, torch.complex128, "lower")
    A = case.sparse.requires_grad_()
    B = _crandn(4, 2, seed=2).requires_grad_()
    X = SparseTriangularSolve.apply(A, B, False, False, transpose)
    D = case.dense.clone().requires_grad_()
    Xd = torch.linalg.solve_triangular(D.mT if transpose else D, B, upper=transpose)
    G = _crandn(4, 2, seed=3)
    gA, gB = torch.autograd.grad(X, (A, B), G)
    gD, gBd = torch.autograd.grad(Xd, (D, B), G)
    assert_sparse_grad_matches(A, gA, gD, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gB, gBd)

    like = case.sparse.detach()
    v = sparse_values(like).detach().clone().requires_grad_()

    def f(v, B):
        return sparse_triangular_solve(sparse_with_values(like, v), B, upper=False, transpose=transpose)

    assert torch.autograd.gradcheck(f, (v, B), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (v, B), fast_mode=True)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("batched", [False, True])
def test_sampled_product_complex_matches_dense_autograd(layout, batched):
    shape = (2, 4, 3) if batched else (4, 3)
    case = build_case(5, shape, 0.5, layout, torch.int64, torch.complex128)
    A = case.sparse
    U = _crandn(*shape[:-1], 2, seed=1).requires_grad_()
    V = _crandn(*shape[:-2], shape[-1], 2, seed=2).requires_grad_()
    S = sampled_product(A, U, V)
    mask = (case.dense != 0).to(torch.complex128)
    Sd = (U @ V.mT) * mask
    torch.testing.assert_close(S.to_dense(), Sd)
    vals = sparse_values(S)
    g = _crandn(vals.numel(), seed=4)
    gU, gV = torch.autograd.grad(vals, (U, V), g)
    Gd = torch.zeros(shape, dtype=torch.complex128)
    Gd[tuple(stored_entries(A))] = g
    gUd, gVd = torch.autograd.grad(Sd, (U, V), Gd)
    torch.testing.assert_close(gU, gUd)
    torch.testing.assert_close(gV, gVd)


def test_sampled_product_complex_gradcheck_and_gradgradcheck():
    A = build_case(6, (3, 4), 0.5, torch.sparse_csr, torch.int32, torch.complex128).sparse
    U = _crandn(3, 2, seed=1).requires_grad_()
    V = _crandn(4, 2, seed=2).requires_grad_()

    def f(U, V):
        return sparse_values(sampled_product(A, U, V))

    assert torch.autograd.gradcheck(f, (U, V), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (U, V), fast_mode=True)


def _dense_solve(A, B):
    return torch.linalg.solve(A.to_dense(), B)


def _dense_transpose_solve(A, B):  # the project's convention: receives A, returns A⁻ᵀ B
    return torch.linalg.solve(A.to_dense().mT, B)


def test_implicit_solve_complex_matches_dense_autograd():
    case = build_case(2, (4, 4), 0.5, torch.sparse_csr, torch.int64, torch.complex128, "dominant")
    A = case.sparse.requires_grad_()
    B = _crandn(4, 2, seed=8).requires_grad_()

    X = implicit_solve(A, B, _dense_solve, _dense_transpose_solve)
    D = case.dense.clone().requires_grad_()
    Xd = torch.linalg.solve(D, B)
    torch.testing.assert_close(X, Xd)
    G = _crandn(4, 2, seed=9)
    gA, gB = torch.autograd.grad(X, (A, B), G)
    gD, gBd = torch.autograd.grad(Xd, (D, B), G)
    assert_sparse_grad_matches(A, gA, gD, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gB, gBd)


def test_sparse_values_and_with_values_complex_gradients():
    like = build_case(4, (3, 3), 0.7, torch.sparse_csr, torch.int32, torch.complex128).sparse
    A = like.clone().requires_grad_()
    w = _crandn(A._nnz(), seed=3)
    (sparse_values(A) * w).sum().abs().backward()
    v = A.values().detach().clone().requires_grad_()
    (v * w).sum().abs().backward()
    torch.testing.assert_close(A.grad.values(), v.grad)
    assert A.grad.crow_indices().dtype == torch.int32


def test_implicit_solve_autograd_function_complex():
    from tsgu_ops import ImplicitSolve

    case = build_case(12, (4, 4), 0.5, torch.sparse_coo, torch.int64, torch.complex128, "dominant")
    A = case.sparse.requires_grad_()
    B = _crandn(4, 2, seed=10).requires_grad_()

    X = ImplicitSolve.apply(A, B, _dense_solve, _dense_transpose_solve)
    D = case.dense.clone().requires_grad_()
    G = _crandn(4, 2, seed=11)
    gA, gB = torch.autograd.grad(X, (A, B), G)
    gD, gBd = torch.autograd.grad(torch.linalg.solve(D, B), (D, B), G)
    assert_sparse_grad_matches(A, gA, gD, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gB, gBd)


def test_format_utilities_keep_complex_values():
    from tsgu_ops import convert_coo_to_csr, convert_coo_to_csr_indices_values, stack_csr

    case = build_case(13, (2, 4, 5), 0.5, torch.sparse_coo, torch.int64, torch.complex128)
    csr = convert_coo_to_csr(case.sparse)
    assert csr.dtype == torch.complex128
    torch.testing.assert_close(csr.to_dense(), case.dense)
    idx = case.sparse.coalesce().indices()
    vals = case.sparse.coalesce().values()
    crow, col, v = convert_coo_to_csr_indices_values(idx, 4, vals)
    assert torch.equal(crow, csr.crow_indices()) and torch.equal(col, csr.col_indices())
    torch.testing.assert_close(v.reshape(-1), csr.values().reshape(-1))
    parts = [
        build_case(14 + i, (3, 3), 1.0, torch.sparse_csr, torch.int32, torch.complex64).sparse
        for i in range(2)
    ]
    S = stack_csr(parts)
    assert S.dtype == torch.complex64
    torch.testing.assert_close(S.to_dense(), torch.stack([p.to_dense() for p in parts]))
