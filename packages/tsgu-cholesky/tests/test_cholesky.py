"""sparse_cholesky / sparse_logdet / solve / selected inverse against dense references."""

from __future__ import annotations

import pytest
import torch
import tsgu_cholesky as tc
from hypothesis import given, settings
from hypothesis import strategies as st

from tsgu_ops import sparse_values, sparse_with_values
from tsgu_ops.testing import (
    assert_sparse_grad_matches,
    assert_unchanged,
    build_case,
    clone_input,
    grid_operator,
    sparse_matrices,
    stored_entries,
)

spd_matrices = sparse_matrices(structures=("spd",), square=True, allow_empty=True, max_size=7)


def tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}


def dense_sym(D: torch.Tensor) -> torch.Tensor:
    return 0.5 * (D + D.transpose(-1, -2))


def mask_of(A: torch.Tensor) -> torch.Tensor:
    """Dense 0/1 mask of A's stored coordinates (small test sizes only)."""
    m = torch.zeros(A.shape, dtype=torch.float64)
    m[tuple(stored_entries(A))] = 1.0
    return m


def leaf(A: torch.Tensor) -> torch.Tensor:
    return A.detach().clone().requires_grad_()


# ------------------------------------------------------------------------------------------------
# forward values


@settings(max_examples=30)
@given(spd_matrices)
def test_logdet_matches_dense_slogdet(case):
    A = case.sparse
    before = clone_input(A)
    ld = tc.sparse_logdet(A)
    sign, ref = torch.linalg.slogdet(case.dense.double())
    assert ld.dtype == A.dtype and ld.shape == ref.shape
    assert bool((sign > 0).all())
    torch.testing.assert_close(ld.double(), ref, **tol(A.dtype))
    assert_unchanged(before, A)


@settings(max_examples=30)
@given(spd_matrices)
def test_grad_of_logdet_is_inverse_on_the_pattern(case):
    A = leaf(case.sparse)
    tc.sparse_logdet(A).sum().backward()
    D = case.dense.double().requires_grad_()
    torch.linalg.slogdet(D)[1].sum().backward()
    t = tol(A.dtype)
    assert_sparse_grad_matches(A, A.grad, D.grad, rtol=t["rtol"], atol=t["atol"])


@settings(max_examples=30)
@given(spd_matrices)
def test_grad_dense_meaning_is_dense_autograd(case):
    """DESIGN rule 6: read as a sum (to_dense), the gradient is dL/dA at the stored coordinates."""
    A = leaf(case.sparse)
    tc.sparse_logdet(A).sum().backward()
    D = case.dense.double().requires_grad_()
    torch.linalg.slogdet(D)[1].sum().backward()
    expected = D.grad * mask_of(A)
    torch.testing.assert_close(A.grad.to_dense().double(), expected, **tol(A.dtype))


@settings(max_examples=20)
@given(spd_matrices)
def test_grad_reaches_coo_constructor_values(case):
    """The gradient reaching ``w`` of ``torch.sparse_coo_tensor(idx, w)`` equals dense autograd."""
    S = case.sparse
    idx = stored_entries(S)
    vals = S._values() if S.layout == torch.sparse_coo else S.values().reshape(-1)
    w = vals.detach().clone().requires_grad_()
    A = torch.sparse_coo_tensor(idx, w, tuple(S.shape))
    tc.sparse_logdet(A).sum().backward()
    D = case.dense.double().requires_grad_()
    torch.linalg.slogdet(D)[1].sum().backward()
    torch.testing.assert_close(w.grad.double(), D.grad[tuple(idx)], **tol(S.dtype))


@settings(max_examples=30)
@given(spd_matrices)
def test_selected_inverse_matches_dense_inverse(case):
    A = case.sparse
    Z = tc.sparse_selected_inverse(A)
    assert Z.layout == A.layout and Z.shape == A.shape and Z.dtype == A.dtype
    inv = torch.linalg.inv(case.dense.double())
    if A.layout == torch.sparse_csr:
        assert torch.equal(Z.crow_indices(), A.crow_indices())
        assert torch.equal(Z.col_indices(), A.col_indices())
        assert Z.crow_indices().dtype == A.crow_indices().dtype
    elif A.is_coalesced():
        assert torch.equal(Z._indices(), A._indices())
    torch.testing.assert_close(Z.to_dense().double(), inv * mask_of(A), **tol(A.dtype))
    diag = tc.sparse_inverse_diagonal(A)
    torch.testing.assert_close(diag.double(), torch.diagonal(inv, dim1=-2, dim2=-1), **tol(A.dtype))


@settings(max_examples=30)
@given(spd_matrices, st.integers(0, 2**31 - 1), st.booleans())
def test_solve_matches_dense_solve_and_its_gradients(case, seed, vector):
    A = leaf(case.sparse)
    g = torch.Generator().manual_seed(seed)
    n = A.shape[-1]
    shape = (*A.shape[:-2], n) if vector else (*A.shape[:-2], n, 2)
    B = torch.randn(shape, generator=g, dtype=torch.float64).to(A.dtype).requires_grad_()
    X = tc.sparse_cholesky_solve(A, B)
    W = torch.randn(X.shape, generator=g, dtype=torch.float64).to(A.dtype)
    (X * W).sum().backward()
    D = case.dense.double().requires_grad_()
    Bd = B.detach().double().requires_grad_()
    rhs = Bd.unsqueeze(-1) if vector else Bd
    Xd = torch.linalg.solve(dense_sym(D), rhs)
    Xd = Xd.squeeze(-1) if vector else Xd
    (Xd * W.double()).sum().backward()
    t = tol(A.dtype)
    torch.testing.assert_close(X.double(), Xd.detach(), **t)
    torch.testing.assert_close(B.grad.double(), Bd.grad, **t)
    assert_sparse_grad_matches(A, A.grad, D.grad, rtol=t["rtol"], atol=t["atol"])


@settings(max_examples=25)
@given(spd_matrices, st.integers(0, 2**31 - 1))
def test_grad_of_selected_inverse_matches_dense_autograd(case, seed):
    A = leaf(case.sparse)
    g = torch.Generator().manual_seed(seed)
    Z = tc.sparse_selected_inverse(A)
    Wd = torch.randn(A.shape, generator=g, dtype=torch.float64) * mask_of(A)
    (sparse_values(Z).double() * Wd[tuple(stored_entries(Z))]).sum().backward()
    D = case.dense.double().requires_grad_()
    (torch.linalg.inv(dense_sym(D)) * Wd).sum().backward()
    t = tol(A.dtype)
    torch.testing.assert_close(A.grad.to_dense().double(), D.grad * mask_of(A), **t)


@settings(max_examples=20)
@given(spd_matrices, st.integers(0, 2**31 - 1))
def test_grad_of_inverse_diagonal_matches_dense_autograd(case, seed):
    A = leaf(case.sparse)
    g = torch.Generator().manual_seed(seed)
    d = tc.sparse_inverse_diagonal(A)
    w = torch.randn(d.shape, generator=g, dtype=torch.float64)
    (d.double() * w).sum().backward()
    D = case.dense.double().requires_grad_()
    (torch.diagonal(torch.linalg.inv(D), dim1=-2, dim2=-1) * w).sum().backward()
    t = tol(A.dtype)
    assert_sparse_grad_matches(A, A.grad, D.grad, rtol=t["rtol"], atol=t["atol"])


# ------------------------------------------------------------------------------------------------
# both kernels, gradcheck, second order


def _spd(n=9, layout=torch.sparse_coo, index_dtype=torch.int64, seed=3, batch=None, density=0.4):
    shape = (batch, n, n) if batch else (n, n)
    return build_case(seed, shape, density, layout, index_dtype, torch.float64, "spd")


def test_both_kernels_match_dense_inverse(kernel):
    case = _spd(n=40, density=0.15)
    Z = tc.sparse_selected_inverse(case.sparse)
    inv = torch.linalg.inv(case.dense)
    torch.testing.assert_close(Z.to_dense(), inv * mask_of(case.sparse), rtol=1e-12, atol=1e-14)
    assert tc.kernel_name() == kernel


def test_logdet_gradcheck_and_gradgradcheck():
    case = _spd(n=6, density=0.5)
    like = case.sparse
    w = case.sparse._values().detach().clone().requires_grad_()

    def f(w):
        return tc.sparse_logdet(sparse_with_values(like, w))

    assert torch.autograd.gradcheck(f, (w,), eps=1e-7)
    assert torch.autograd.gradgradcheck(f, (w,), eps=1e-7)


def test_solve_gradcheck_and_gradgradcheck():
    case = _spd(n=5, density=0.6)
    like = case.sparse
    w = case.sparse._values().detach().clone().requires_grad_()
    B = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)

    def f(w, B):
        return tc.sparse_cholesky_solve(sparse_with_values(like, w), B)

    assert torch.autograd.gradcheck(f, (w, B), eps=1e-7)
    assert torch.autograd.gradgradcheck(f, (w, B), eps=1e-7)


def test_selected_inverse_gradcheck_and_no_create_graph():
    case = _spd(n=6, density=0.5)
    like = case.sparse
    w = case.sparse._values().detach().clone().requires_grad_()

    def f(w):
        return sparse_values(tc.sparse_selected_inverse(sparse_with_values(like, w)))

    assert torch.autograd.gradcheck(f, (w,), eps=1e-7)
    z = f(w).sum()
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(z, w, create_graph=True)


def test_batched_logdet_gradcheck():
    case = _spd(n=5, batch=3, density=0.5)
    like = case.sparse
    w = case.sparse._values().detach().clone().requires_grad_()

    def f(w):
        return tc.sparse_logdet(sparse_with_values(like, w))

    assert torch.autograd.gradcheck(f, (w,), eps=1e-7)


# ------------------------------------------------------------------------------------------------
# accumulation: two uses in one graph, two backward() calls, per layout × batch


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("batch", [None, 3])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_gradient_accumulates_on_the_pattern(layout, batch, index_dtype):
    case = _spd(n=6, layout=layout, index_dtype=index_dtype, batch=batch, density=0.5)
    A = leaf(case.sparse)
    n = 6
    b = torch.ones(*((batch,) if batch else ()), n, dtype=torch.float64)
    for _ in range(2):
        loss = tc.sparse_logdet(A).sum() + tc.sparse_cholesky_solve(A, b).sum()
        loss.backward()
    D = case.dense.double().requires_grad_()
    for _ in range(2):
        x = torch.linalg.solve(dense_sym(D), b.unsqueeze(-1)).squeeze(-1)
        (torch.linalg.slogdet(D)[1].sum() + x.sum()).backward()
    assert_sparse_grad_matches(A, A.grad, D.grad, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# the factor itself


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_factor_reconstructs_the_permuted_matrix(layout, index_dtype):
    A = grid_operator((5, 4)).to(torch.float64)
    A = A if layout == torch.sparse_coo else A.to_sparse_csr()
    if layout == torch.sparse_csr:
        A = torch.sparse_csr_tensor(
            A.crow_indices().to(index_dtype), A.col_indices().to(index_dtype), A.values(), A.shape
        )
    F = tc.sparse_cholesky(A)
    L, p = F.L, F.perm
    assert L.layout == torch.sparse_csr
    if layout == torch.sparse_csr:
        assert L.crow_indices().dtype == index_dtype
    Ld = L.to_dense()
    assert torch.equal(Ld, torch.tril(Ld))
    D = A.to_dense()
    torch.testing.assert_close(Ld @ Ld.T, D[p][:, p], rtol=1e-12, atol=1e-12)
    assert sorted(p.tolist()) == list(range(A.shape[0]))
    assert L._nnz() < A.shape[0] ** 2  # sparse, not a dense factor


def test_batched_factor():
    case = _spd(n=7, batch=3, density=0.4)
    F = tc.sparse_cholesky(case.sparse)
    L, p = F.L.to_dense(), F.perm
    assert p.shape == (3, 7)
    for i in range(3):
        torch.testing.assert_close(L[i] @ L[i].T, case.dense[i][p[i]][:, p[i]], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(F.logdet(), torch.linalg.slogdet(case.dense)[1], rtol=1e-12, atol=0)


def test_symbolic_analysis_is_cached_per_pattern_content():
    tc.clear_cache()
    A = grid_operator((6, 6))
    a1 = tc.analyze(A)
    # a new tensor with the same pattern (new index storage) and new values reuses the analysis
    A2 = torch.sparse_coo_tensor(A._indices().clone(), A._values() * 2 + 1, A.shape).coalesce()
    assert tc.analyze(A2) is a1
    torch.testing.assert_close(tc.sparse_logdet(A2), torch.logdet(A2.to_dense()), rtol=1e-12, atol=0)
    # same size and nnz but another pattern: a new analysis
    perm = torch.randperm(36, generator=torch.Generator().manual_seed(0))
    idx = perm[A._indices()]
    A3 = torch.sparse_coo_tensor(idx, A._values(), A.shape).coalesce()
    a3 = tc.analyze(A3)
    assert a3 is not a1
    torch.testing.assert_close(tc.sparse_logdet(A3), torch.logdet(A3.to_dense()), rtol=1e-12, atol=0)


def test_one_factorisation_serves_several_results():
    A = leaf(grid_operator((4, 4)))
    F = tc.sparse_cholesky(A)
    b = torch.ones(16, dtype=torch.float64)
    loss = F.logdet() + F.solve(b).sum() + F.inverse_diagonal().sum()
    loss.backward()
    D = A.detach().to_dense().requires_grad_()
    inv = torch.linalg.inv(dense_sym(D))
    (torch.logdet(D) + (inv @ b).sum() + torch.diagonal(inv).sum()).backward()
    assert_sparse_grad_matches(A, A.grad, D.grad, rtol=1e-10, atol=1e-12)


def test_float32_results_are_float32():
    A = grid_operator((4, 5), dtype=torch.float32).to_sparse_csr()
    ld = tc.sparse_logdet(A)
    assert ld.dtype == torch.float32
    torch.testing.assert_close(ld, torch.logdet(A.to_dense().double()).float(), rtol=1e-6, atol=0)


def test_empty_matrix_and_empty_batch():
    A = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.int64), torch.zeros(0), (0, 0)).double()
    assert float(tc.sparse_logdet(A)) == 0.0
    E = torch.sparse_coo_tensor(torch.zeros(3, 0, dtype=torch.int64), torch.zeros(0), (0, 3, 3)).double()
    assert tc.sparse_logdet(E).shape == (0,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_round_trip():  # pragma: no cover - run where a GPU is present
    A = leaf(grid_operator((5, 5)).cuda())
    ld = tc.sparse_logdet(A)
    assert ld.device == A.device
    ld.backward()
    D = A.detach().cpu().to_dense().requires_grad_()
    torch.logdet(D).backward()
    assert A.grad.device == A.device
    assert_sparse_grad_matches(A.detach().cpu(), A.grad.cpu(), D.grad, rtol=1e-10, atol=1e-12)
