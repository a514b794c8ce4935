"""SparseCholesky.sample (Pᵀ L⁻ᵀ ε) and its gradient, against dense autograd of torch.linalg.cholesky."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tsgu_cholesky as tc
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.linalg import solve_triangular
from tsgu_cholesky import _cholesky_adjoint

from tsgu_ops import sparse_values, sparse_with_values
from tsgu_ops.testing import (
    assert_sparse_grad_matches,
    assert_unchanged,
    build_case,
    clone_input,
    grid_operator,
    sparse_matrices,
)

spd_matrices = sparse_matrices(structures=("spd",), square=True, allow_empty=False, max_size=7)


def tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-9, "atol": 1e-11} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 2e-5}


def leaf(A: torch.Tensor) -> torch.Tensor:
    return A.detach().clone().requires_grad_()


def dense_samples(D: torch.Tensor, perm: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """``Pᵀ C⁻ᵀ E`` with ``C = cholesky(sym(D)[perm][:, perm])``, item by item, dense autograd.

    ``D`` ``(n, n)`` or ``(b, n, n)``, ``E`` ``(n, k)`` or ``(b, n, k)``; ``sym`` is the
    package's symmetric reading (its gradient is the symmetrised dense gradient).
    """
    S = 0.5 * (D + D.transpose(-1, -2))
    if D.dim() == 2:
        C = torch.linalg.cholesky(S[perm][:, perm])
        W = solve_triangular(C.T, E, upper=True)
        return torch.zeros_like(W).index_add(0, perm, W)  # X[perm[k]] = W[k]
    return torch.stack([dense_samples(D[i], perm[i], E[i]) for i in range(D.shape[0])])


def shifted_laplacian(k: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """2-D 5-point Laplacian on a k × k grid plus 0.1·I (coalesced COO)."""
    A = grid_operator((k, k)).to(dtype)
    n = A.shape[0]
    eye = torch.sparse_coo_tensor(torch.arange(n).repeat(2, 1), torch.full((n,), 0.1, dtype=dtype), (n, n))
    return (A + eye).coalesce()


def as_layout(A: torch.Tensor, layout: torch.layout, index_dtype: torch.dtype) -> torch.Tensor:
    if layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(A._indices().to(index_dtype), A._values(), A.shape).coalesce()
    C = A.to_sparse_csr()
    return torch.sparse_csr_tensor(
        C.crow_indices().to(index_dtype), C.col_indices().to(index_dtype), C.values(), C.shape
    )


def check_against_dense(A: torch.Tensor, dense: torch.Tensor, k: int, seed: int, t: dict[str, float]) -> None:
    """Forward, gradient of A and of eps of ``sum(W ⊙ sample(eps))`` equal dense autograd."""
    A = leaf(A)
    g = torch.Generator().manual_seed(seed)
    shape = (*A.shape[:-1], k)
    E = torch.randn(shape, generator=g, dtype=torch.float64).to(A.dtype).requires_grad_()
    Wt = torch.randn(shape, generator=g, dtype=torch.float64).to(A.dtype)
    F = tc.sparse_cholesky(A)
    X = F.sample(E)
    assert X.shape == E.shape and X.dtype == A.dtype
    (X * Wt).sum().backward()
    D = dense.double().detach().requires_grad_()
    Ed = E.detach().double().requires_grad_()
    Xd = dense_samples(D, F.perm, Ed)
    (Xd * Wt.double()).sum().backward()
    torch.testing.assert_close(X.double(), Xd.detach(), **t)
    torch.testing.assert_close(E.grad.double(), Ed.grad, **t)
    assert_sparse_grad_matches(A, A.grad, D.grad, rtol=t["rtol"], atol=t["atol"])


# ------------------------------------------------------------------------------------------------
# against dense autograd


@settings(max_examples=40, deadline=None)
@given(spd_matrices, st.integers(0, 2**31 - 1), st.integers(1, 3))
def test_sample_and_its_gradients_match_dense_autograd(case, seed, k):
    """Every layout, index dtype, value dtype, batched or not, uncoalesced COO included."""
    before = clone_input(case.sparse)
    check_against_dense(case.sparse, case.dense, k, seed, tol(case.sparse.dtype))
    assert_unchanged(before, case.sparse)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_laplacian_gmrf_sample_gradient_matches_dense(layout, index_dtype, dtype):
    A = as_layout(shifted_laplacian(7, dtype), layout, index_dtype)
    check_against_dense(A, A.to_dense(), 3, 11, tol(dtype))


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_batched_sample_gradient_matches_dense(layout, index_dtype):
    case = build_case(4, (3, 9, 9), 0.35, layout, index_dtype, torch.float64, "spd")
    check_against_dense(case.sparse, case.dense, 4, 2, tol(torch.float64))


def test_uncoalesced_coo_gradient_is_split_over_duplicates():
    case = build_case(8, (10, 10), 0.4, torch.sparse_coo, torch.int64, torch.float64, "spd", duplicates=6)
    A = case.sparse
    assert not A.is_coalesced() and A._nnz() > A.coalesce()._nnz()
    check_against_dense(A, case.dense, 2, 5, tol(torch.float64))


def test_gradient_reaches_coo_constructor_values():
    """Through ``torch.sparse_coo_tensor(idx, w)`` (duplicates included) ``w.grad`` is dense autograd's."""
    case = build_case(9, (8, 8), 0.5, torch.sparse_coo, torch.int64, torch.float64, "spd", duplicates=4)
    idx = case.sparse._indices()
    w = case.sparse._values().detach().clone().requires_grad_()
    A = torch.sparse_coo_tensor(idx, w, (8, 8))
    E = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    F = tc.sparse_cholesky(A)
    F.sample(E).pow(2).sum().backward()
    D = case.dense.clone().requires_grad_()
    dense_samples(D, F.perm, E).pow(2).sum().backward()
    torch.testing.assert_close(w.grad, D.grad[tuple(idx)], rtol=1e-9, atol=1e-11)


def test_vector_eps_and_a_symmetric_parametrisation():
    """``(n,)`` eps; and through ``A[i, j] = A[j, i] = θ`` the gradient of ``θ`` is dense autograd's."""
    base = shifted_laplacian(4)
    idx = base._indices()
    theta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    off = (idx[0] != idx[1]).double()
    A = torch.sparse_coo_tensor(idx, base._values() * (1 + (theta - 1) * off), base.shape)
    E = torch.randn(16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    F = tc.sparse_cholesky(A)
    x = F.sample(E)
    assert x.shape == (16,)
    x.pow(3).sum().backward()
    th = theta.detach().clone().requires_grad_()
    D = base.to_dense() * (1 + (th - 1) * (base.to_dense() != 0) * ~torch.eye(16, dtype=torch.bool))
    dense_samples(D, F.perm, E.unsqueeze(-1)).squeeze(-1).pow(3).sum().backward()
    torch.testing.assert_close(theta.grad, th.grad, rtol=1e-10, atol=0)


def test_gradcheck():
    case = build_case(3, (6, 6), 0.5, torch.sparse_coo, torch.int64, torch.float64, "spd")
    like = case.sparse
    w = like._values().detach().clone().requires_grad_()
    E = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def f(w):
        return tc.sparse_cholesky(sparse_with_values(like, w)).sample(E)

    assert torch.autograd.gradcheck(f, (w,), eps=1e-7, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# accumulation, second order, the kernels


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("batch", [None, 3])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_gradient_accumulates_over_two_samples_and_two_backward_calls(layout, batch, index_dtype):
    n = 7
    shape = (batch, n, n) if batch else (n, n)
    case = build_case(6, shape, 0.5, layout, index_dtype, torch.float64, "spd")
    A = leaf(case.sparse)
    g = torch.Generator().manual_seed(4)
    E1 = torch.randn(*shape[:-1], 2, generator=g, dtype=torch.float64)
    E2 = torch.randn(*shape[:-1], 3, generator=g, dtype=torch.float64)
    perm = None
    for _ in range(2):
        F = tc.sparse_cholesky(A)
        perm = F.perm
        loss = F.sample(E1).pow(2).sum() + (F.sample(E2) * F.sample(E2)).sum() + F.logdet().sum()
        loss.backward()
    D = case.dense.clone().requires_grad_()
    for _ in range(2):
        X1, X2 = dense_samples(D, perm, E1), dense_samples(D, perm, E2)
        (X1.pow(2).sum() + (X2 * X2).sum() + torch.linalg.slogdet(D)[1].sum()).backward()
    assert_sparse_grad_matches(A, A.grad, D.grad, rtol=1e-9, atol=1e-11)


def test_create_graph_raises_a_clear_error():
    A = leaf(shifted_laplacian(3))
    x = tc.sparse_cholesky(A).sample(torch.ones(9, 2, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(x.pow(2).sum(), A, create_graph=True)
    # without create_graph the same graph differentiates
    (g,) = torch.autograd.grad(x.pow(2).sum(), A)
    assert g.layout == A.layout


def test_each_kernel_matches_dense_autograd(kernel):
    """Laplacian and a random pattern (batched CSR int32), with the kernel of the fixture."""
    lap = shifted_laplacian(6)
    rnd = build_case(12, (2, 30, 30), 0.12, torch.sparse_csr, torch.int32, torch.float64, "spd")
    check_against_dense(lap, lap.to_dense(), 3, 7, tol(torch.float64))
    check_against_dense(rnd.sparse, rnd.dense, 3, 8, tol(torch.float64))
    assert tc.kernel_name() == kernel


def _adjoint_case(seed: int, n: int = 40, density: float = 0.12):
    case = build_case(seed, (n, n), density, torch.sparse_coo, torch.int64, torch.float64, "spd")
    F = tc.sparse_cholesky(case.sparse)
    a, num = F.analysis, F._fac.numeric
    M = torch.tensor(a.permuted(F._fac.S).toarray())
    st_ = _cholesky_adjoint.factor_structure(a.l_indptr, a.l_indices)
    cdata = num.l_data * np.sqrt(num.d)[st_.col]
    return a, M, st_, cdata


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adjoint_kernels_agree_with_each_other_and_with_dense_cholesky_backward(seed, monkeypatch):
    """The reverse sweep alone: Ā on the pattern of L for a random C̄, lower-triangle reading."""
    a, M, st_, cdata = _adjoint_case(seed)
    cbar = np.random.default_rng(seed).standard_normal(cdata.shape[0])
    T = torch.tril(M).clone().requires_grad_()
    C = torch.linalg.cholesky(T + torch.tril(T, -1).T)  # reads the lower triangle T
    Cb = torch.zeros(a.N, a.N, dtype=torch.float64)
    Cb[a.l_indices, st_.col] = torch.from_numpy(cbar)
    (C * Cb).sum().backward()
    want = T.grad.numpy()[a.l_indices, st_.col]
    torch.testing.assert_close(
        torch.from_numpy(C.detach().numpy()[a.l_indices, st_.col]), torch.from_numpy(cdata)
    )
    got_np = _cholesky_adjoint.cholesky_adjoint_numpy(a.l_indptr, a.l_indices, cdata, cbar, st_)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got_np, want, rtol=0, atol=1e-12 * scale)
    if "numba" in _kernels():
        monkeypatch.setenv("TSGU_CHOLESKY_KERNEL", "numba")
        cb_before = cbar.copy()
        got_nb = _cholesky_adjoint.cholesky_adjoint(a.l_indptr, a.l_indices, cdata, cbar, st_)
        np.testing.assert_allclose(got_nb, got_np, rtol=0, atol=1e-13 * scale)
        assert np.array_equal(cbar, cb_before)  # input not modified
        W = np.random.default_rng(seed + 10).standard_normal((a.N, 3))
        V = np.random.default_rng(seed + 20).standard_normal((a.N, 3))
        s_nb = _cholesky_adjoint.sampled(a.l_indptr, a.l_indices, st_.col, W, V)
        s_np = _cholesky_adjoint.sampled_numpy(a.l_indptr, a.l_indices, st_.col, W, V)
        np.testing.assert_allclose(s_nb, s_np, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(s_np, (W @ V.T)[a.l_indices, st_.col], rtol=1e-13, atol=1e-13)


def _kernels() -> list[str]:
    from tsgu_cholesky._selinv import numba_available

    return ["numpy"] + (["numba"] if numba_available() else [])


def test_the_two_kernels_give_the_same_sample_gradient(monkeypatch):
    A0 = shifted_laplacian(12)
    E = torch.randn(144, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = []
    for k in _kernels():
        monkeypatch.setenv("TSGU_CHOLESKY_KERNEL", k)
        A = leaf(A0)
        tc.sparse_cholesky(A).sample(E).pow(2).sum().backward()
        grads.append(sparse_values(A.grad))
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------------
# edges and bad input


def test_only_eps_or_only_a_requires_grad():
    A0 = shifted_laplacian(3)
    E = torch.randn(9, 2, dtype=torch.float64, requires_grad=True)
    tc.sparse_cholesky(A0).sample(E).sum().backward()  # A needs no gradient
    assert E.grad is not None and E.grad.shape == E.shape
    A = leaf(A0)
    x = tc.sparse_cholesky(A).sample(torch.randn(9, 2, dtype=torch.float64))
    x.sum().backward()
    assert A.grad is not None
    with torch.no_grad():
        assert not tc.sparse_cholesky(A).sample(torch.ones(9, dtype=torch.float64)).requires_grad


def test_empty_matrix_and_no_draws():
    A = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.int64), torch.zeros(0), (0, 0)).double()
    assert tc.sparse_cholesky(A).sample(torch.zeros(0, 3, dtype=torch.float64)).shape == (0, 3)
    B = leaf(shifted_laplacian(3))
    x = tc.sparse_cholesky(B).sample(torch.zeros(9, 0, dtype=torch.float64))
    assert x.shape == (9, 0)


@pytest.mark.parametrize(
    ("eps", "error", "match"),
    [
        (torch.ones(8, 2, dtype=torch.float64), ValueError, "eps of shape"),
        (torch.ones(9, 2, dtype=torch.float32), TypeError, "eps"),
        (torch.ones(9, 2, 2, dtype=torch.float64), ValueError, "eps must have 1 or 2 dimensions"),
        ("x", TypeError, "eps"),
    ],
)
def test_bad_eps_raises_naming_it(eps, error, match):
    F = tc.sparse_cholesky(shifted_laplacian(3))
    with pytest.raises(error, match=match):
        F.sample(eps)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_round_trip():  # pragma: no cover - run where a GPU is present
    A0 = shifted_laplacian(4)
    A = leaf(A0.cuda())
    E = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    F = tc.sparse_cholesky(A)
    x = F.sample(E.cuda())
    assert x.device == A.device
    x.pow(2).sum().backward()
    assert A.grad.device == A.device
    D = A0.to_dense().requires_grad_()
    dense_samples(D, F.perm.cpu(), E).pow(2).sum().backward()
    assert_sparse_grad_matches(A.detach().cpu(), A.grad.cpu(), D.grad, rtol=1e-9, atol=1e-11)
