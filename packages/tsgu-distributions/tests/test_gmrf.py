"""SparseMultivariateNormal(loc, precision_matrix=Q) (a GMRF) and the variance of the precision_tril
forms, against torch.distributions.MultivariateNormal on the dense matrix and dense autograd."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tsgu_cholesky import NotPositiveDefiniteError, sparse_cholesky

from tsgu_distributions import SparseMultivariateNormal
from tsgu_distributions import sparse_multivariate_normal as smn
from tsgu_ops.testing import (
    assert_sparse_grad_matches,
    assert_unchanged,
    build_case,
    clone_input,
    dense_like,
    grid_operator,
    sparse_matrices,
)

F64 = torch.float64
spd_matrices = sparse_matrices(structures=("spd",), square=True, max_size=6)


def tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-10, "atol": 1e-12} if dtype == F64 else {"rtol": 2e-4, "atol": 1e-5}


def leaf(A: torch.Tensor) -> torch.Tensor:
    return A.detach().clone().requires_grad_()


def batch_of(case) -> tuple[int, ...]:
    return tuple(case.sparse.shape[:-2])


# ------------------------------------------------------------------------------------------------
# log_prob, entropy, variance and their gradients against dense MultivariateNormal


@settings(max_examples=20)
@given(spd_matrices, st.data())
def test_log_prob_entropy_variance_and_gradients_match_dense_multivariate_normal(case, data):
    Q = leaf(case.sparse)
    n = Q.shape[-1]
    dt = Q.dtype
    loc0 = data.draw(dense_like((*batch_of(case), n)))
    x = data.draw(dense_like((2, *batch_of(case), n))) * 2
    w = data.draw(dense_like((2, *batch_of(case))))
    wv = data.draw(dense_like((*batch_of(case), n)))
    before = clone_input(case.sparse)

    loc = loc0.detach().clone().to(dt).requires_grad_()
    d = SparseMultivariateNormal(loc, precision_matrix=Q)
    lp, ent, var = d.log_prob(x.to(dt)), d.entropy(), d.variance
    (lp * w.to(dt)).sum().backward(retain_graph=True)
    (0.5 * ent.sum() + (var * wv.to(dt)).sum()).backward()

    Qd = case.dense.double().requires_grad_()
    locd = loc0.detach().clone().requires_grad_()
    ref = torch.distributions.MultivariateNormal(locd, precision_matrix=Qd)
    rlp, rent, rvar = ref.log_prob(x), ref.entropy(), ref.variance
    ((rlp * w).sum() + 0.5 * rent.sum() + (rvar * wv).sum()).backward()

    assert lp.shape == rlp.shape and ent.shape == rent.shape and var.shape == rvar.shape
    assert d.batch_shape == ref.batch_shape and d.event_shape == ref.event_shape
    torch.testing.assert_close(lp.double(), rlp.detach(), **tol(dt))
    torch.testing.assert_close(ent.double(), rent.detach(), **tol(dt))
    torch.testing.assert_close(var.double(), rvar.detach(), **tol(dt))
    torch.testing.assert_close(loc.grad.double(), locd.grad, **tol(dt))
    assert_sparse_grad_matches(Q, Q.grad, Qd.grad.to(dt), **tol(dt))
    assert_unchanged(before, Q)
    assert d.precision_matrix is Q and d.precision_tril is None and d.scale_tril is None
    torch.testing.assert_close(d.mean, loc.expand(d.batch_shape + d.event_shape))
    torch.testing.assert_close(d.mode, d.mean)


def test_loc_and_value_broadcast_over_a_batched_precision():
    case = build_case(5, (3, 4, 4), 0.5, torch.sparse_csr, torch.int32, F64, "spd")
    loc = torch.randn(2, 3, 4, dtype=F64)
    d = SparseMultivariateNormal(loc, precision_matrix=case.sparse)
    ref = torch.distributions.MultivariateNormal(loc, precision_matrix=case.dense)
    x = torch.randn(5, 1, 3, 4, dtype=F64)
    assert d.batch_shape == (2, 3)
    torch.testing.assert_close(d.log_prob(x), ref.log_prob(x), rtol=1e-12, atol=0)
    torch.testing.assert_close(d.variance, ref.variance, rtol=1e-12, atol=0)
    big = SparseMultivariateNormal(loc[0], precision_matrix=case.sparse).expand((2, 3))
    assert big.batch_shape == (2, 3) and big.rsample((4,)).shape == (4, 2, 3, 4)
    ref0 = torch.distributions.MultivariateNormal(loc[0], precision_matrix=case.dense).expand((2, 3))
    torch.testing.assert_close(big.log_prob(x), ref0.log_prob(x), rtol=1e-12, atol=0)
    torch.testing.assert_close(big.entropy(), ref.entropy())
    with pytest.warns(UserWarning, match="dense"):
        torch.testing.assert_close(d.covariance_matrix, ref.covariance_matrix, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------------
# sampling: x = loc + Pᵀ L⁻ᵀ ε has covariance Q⁻¹


def _arrow(n: int) -> torch.Tensor:
    """An arrow matrix (dense first row and column): any fill-reducing order moves unknown 0 last."""
    Qd = torch.eye(n, dtype=F64) * n
    Qd[0, 1:] = Qd[1:, 0] = -0.7
    Qd[2, 3] = Qd[3, 2] = 0.4
    return Qd


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_the_sampling_map_has_covariance_inverse_q_exactly(layout):
    Qd = _arrow(6)
    Q = Qd.to_sparse_csr() if layout == torch.sparse_csr else Qd.to_sparse_coo()
    assert not torch.equal(sparse_cholesky(Q).perm, torch.arange(6)), "the test needs a real permutation"
    d = SparseMultivariateNormal(torch.zeros(6, dtype=F64), precision_matrix=Q)
    T = d._transform(torch.eye(6, dtype=F64)).T  # column k: the sample of ε = e_k
    torch.testing.assert_close(T @ T.T, torch.linalg.inv(Qd), rtol=1e-12, atol=1e-14)


def test_batched_sampling_map_has_covariance_inverse_q_exactly():
    case = build_case(2, (3, 5, 5), 0.6, torch.sparse_coo, torch.int64, F64, "spd")
    d = SparseMultivariateNormal(torch.zeros(3, 5, dtype=F64), precision_matrix=case.sparse)
    eps = torch.eye(5, dtype=F64)[:, None, :].expand(5, 3, 5)
    X = d._transform(eps)  # (k, b, i)
    cov = torch.einsum("kbi,kbj->bij", X, X)
    torch.testing.assert_close(cov, torch.linalg.inv(case.dense), rtol=1e-12, atol=1e-14)


def test_sample_covariance_and_mean_approach_the_distribution():
    torch.manual_seed(0)
    Qd = _arrow(5)
    loc = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=F64)
    d = SparseMultivariateNormal(loc, precision_matrix=Qd.to_sparse_csr())
    x = d.sample((200_000,))
    assert x.shape == (200_000, 5) and not x.requires_grad
    cov = torch.linalg.inv(Qd)
    scale = float(cov.diagonal().max())
    torch.testing.assert_close(x.mean(0), loc, rtol=0, atol=0.02 * scale**0.5)
    torch.testing.assert_close(torch.cov(x.T), cov, rtol=0, atol=0.02 * scale)


def _dense_rsample(
    Qd: torch.Tensor, loc: torch.Tensor, perm: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """``loc + Pᵀ C⁻ᵀ ε`` with ``C = cholesky(sym(Qd)[perm][:, perm])``: dense autograd, same ``ε``.

    ``eps`` is ``(*sample, n)`` (``(*sample, B, n)`` for a batched ``Qd`` ``(B, n, n)``).
    """
    S = 0.5 * (Qd + Qd.transpose(-1, -2))
    if Qd.dim() == 2:
        C = torch.linalg.cholesky(S[perm][:, perm])
        W = torch.linalg.solve_triangular(C.T, eps.reshape(-1, eps.shape[-1]).T, upper=True)
        X = torch.zeros_like(W).index_add(0, perm, W).T.reshape(eps.shape)
        return loc + X
    items = [_dense_rsample(Qd[i], loc[..., i, :], perm[i], eps[..., i, :]) for i in range(Qd.shape[0])]
    return torch.stack(items, dim=-2)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_rsample_gradient_wrt_q_and_loc_matches_dense_autograd(layout, batched, index_dtype):
    shape = (3, 6, 6) if batched else (6, 6)
    case = build_case(21, shape, 0.5, layout, index_dtype, F64, "spd")
    Q = leaf(case.sparse)
    loc = torch.randn(shape[:-1], dtype=F64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    d = SparseMultivariateNormal(loc, precision_matrix=Q)
    torch.manual_seed(123)
    x = d.rsample((4, 2))
    torch.manual_seed(123)
    eps = torch.randn(x.shape, dtype=F64)  # the ε that rsample drew
    w = torch.randn(x.shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    (x * w).sum().backward()
    Qd = case.dense.clone().requires_grad_()
    locd = loc.detach().clone().requires_grad_()
    xd = _dense_rsample(Qd, locd, sparse_cholesky(Q.detach()).perm, eps)
    (xd * w).sum().backward()
    torch.testing.assert_close(x, xd.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loc.grad, locd.grad, rtol=1e-10, atol=1e-12)
    assert_sparse_grad_matches(Q, Q.grad, Qd.grad, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_reparameterised_log_prob_of_a_laplacian_gmrf_matches_dense(dtype):
    """``log_prob(rsample())`` on a 2-D Laplacian + shift: Q enters through the sample and the density."""
    k = 5
    base = grid_operator((k, k)).to(dtype)
    n = k * k
    idx = base.indices()
    Q = torch.sparse_coo_tensor(idx, base.values() + 0.1 * (idx[0] == idx[1]), (n, n)).to_sparse_csr()
    Q = leaf(Q)
    loc = torch.zeros(n, dtype=dtype, requires_grad=True)
    d = SparseMultivariateNormal(loc, precision_matrix=Q)
    torch.manual_seed(5)
    x = d.rsample((3,))
    torch.manual_seed(5)
    eps = torch.randn(x.shape, dtype=dtype).double()
    lp = d.log_prob(x)
    (lp.sum() + x.pow(2).sum()).backward()
    Qd = Q.detach().to_dense().double().requires_grad_()
    locd = loc.detach().double().requires_grad_()
    xd = _dense_rsample(Qd, locd, sparse_cholesky(Q.detach()).perm, eps)
    ref = torch.distributions.MultivariateNormal(locd, precision_matrix=0.5 * (Qd + Qd.T))
    lpd = ref.log_prob(xd)
    (lpd.sum() + xd.pow(2).sum()).backward()
    t = tol(dtype)
    torch.testing.assert_close(lp.double(), lpd.detach(), **t)
    assert Q.grad.layout == torch.sparse_csr
    assert_sparse_grad_matches(Q, Q.grad, Qd.grad, rtol=t["rtol"], atol=t["atol"])


def test_rsample_gradient_reaches_loc_and_detached_q_gets_none():
    Qd = _arrow(4)
    Q = Qd.to_sparse_coo().requires_grad_()
    loc = torch.zeros(4, dtype=F64, requires_grad=True)
    d = SparseMultivariateNormal(loc, precision_matrix=Q)
    with torch.no_grad():
        assert d.rsample((3,)).shape == (3, 4)
    d.rsample((3,)).sum().backward(inputs=[loc])  # only loc asked for
    torch.testing.assert_close(loc.grad, torch.full((4,), 3.0, dtype=F64))
    d.rsample((3,)).pow(2).sum().backward()  # reaches Q too
    assert Q.grad is not None and Q.grad.layout == Q.layout
    dd = SparseMultivariateNormal(loc, precision_matrix=Q.detach())
    Q.grad = None
    dd.rsample((2,)).sum().backward()  # a detached Q: the gradient reaches loc only
    assert Q.grad is None


def test_rsample_create_graph_raises_a_clear_error():
    Q = _arrow(4).to_sparse_csr().requires_grad_()
    loc = torch.zeros(4, dtype=F64, requires_grad=True)
    x = SparseMultivariateNormal(loc, precision_matrix=Q).rsample((2,))
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(x.pow(2).sum(), [loc, Q], create_graph=True)


# ------------------------------------------------------------------------------------------------
# gradient accumulation, duplicates, float64 gradcheck


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("batched", [False, True])
def test_gradient_accumulates_over_two_uses_and_two_backward_calls(layout, batched):
    shape = (2, 5, 5) if batched else (5, 5)
    case = build_case(7, shape, 0.5, layout, torch.int32, F64, "spd")
    Q = leaf(case.sparse)
    Qd = case.dense.clone().requires_grad_()
    x = torch.randn(3, *shape[:-1], dtype=F64)
    loc = torch.zeros(shape[:-1], dtype=F64)
    for _ in range(2):
        d = SparseMultivariateNormal(loc, precision_matrix=Q)
        (d.log_prob(x).sum() + d.log_prob(2 * x).sum() + d.variance.sum()).backward()
        r = torch.distributions.MultivariateNormal(loc, precision_matrix=Qd)
        (r.log_prob(x).sum() + r.log_prob(2 * x).sum() + r.variance.sum()).backward()
    assert_sparse_grad_matches(Q, Q.grad, Qd.grad, rtol=1e-10, atol=1e-12)


def test_uncoalesced_coo_is_the_sum_of_its_duplicates_gradient_too():
    Qd = _arrow(5)
    C = Qd.to_sparse_coo()
    idx, vals = C.indices(), C.values()
    pick = torch.tensor([0, 3, 3, 7])  # split entries into two parts each (one twice over)
    part = torch.tensor([0.25, -1.5, 0.5, 0.125], dtype=F64)
    vals = vals.index_add(0, pick, -part)
    Q = torch.sparse_coo_tensor(torch.cat([idx, idx[:, pick]], 1), torch.cat([vals, part]), (5, 5))
    assert not Q.is_coalesced()
    Q.requires_grad_()
    x = torch.randn(4, 5, dtype=F64)
    d = SparseMultivariateNormal(torch.zeros(5, dtype=F64), precision_matrix=Q)
    (d.log_prob(x).sum() + d.entropy()).backward()
    R = Qd.clone().requires_grad_()
    ref = torch.distributions.MultivariateNormal(torch.zeros(5, dtype=F64), precision_matrix=R)
    (ref.log_prob(x).sum() + ref.entropy()).backward()
    torch.testing.assert_close(d.log_prob(x), ref.log_prob(x), rtol=1e-12, atol=0)
    assert torch.equal(Q.grad._indices(), Q._indices())  # Q's own index list
    assert_sparse_grad_matches(Q, Q.grad, R.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(Q.grad.to_dense(), R.grad * (Qd != 0), rtol=1e-10, atol=1e-12)


def test_float64_gradcheck_through_a_symmetric_parametrisation():
    base = grid_operator((3, 2))  # 6 unknowns, coalesced COO
    idx = base.indices()
    n = 6
    x = torch.randn(2, n, dtype=F64)

    def f(theta: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        v = base.values() * torch.where(idx[0] == idx[1], theta[0], theta[1]) + (idx[0] == idx[1]) * 0.3
        Q = torch.sparse_coo_tensor(idx, v, (n, n), is_coalesced=True)
        d = SparseMultivariateNormal(loc, precision_matrix=Q)
        return torch.stack([d.log_prob(x).sum(), d.entropy(), d.variance.sum()])

    theta = torch.tensor([1.2, 0.8], dtype=F64, requires_grad=True)
    loc = torch.randn(n, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (theta, loc))


# ------------------------------------------------------------------------------------------------
# bad input


def test_bad_precision_matrix_raises_clear_errors():
    loc = torch.zeros(4, dtype=F64)
    Qd = _arrow(4)
    indefinite = torch.tensor(
        [[1.0, 2.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=F64
    )
    with pytest.raises(NotPositiveDefiniteError, match=r"precision_matrix .*not positive definite.*pivot"):
        SparseMultivariateNormal(loc, precision_matrix=indefinite.to_sparse_csr())
    skew = Qd.clone()
    skew[0, 1] += 0.5
    with pytest.raises(ValueError, match=r"precision_matrix .*must be symmetric"):
        SparseMultivariateNormal(loc, precision_matrix=skew.to_sparse())
    lower = torch.tril(Qd)
    with pytest.raises(ValueError, match="symmetric sparsity pattern"):
        SparseMultivariateNormal(loc, precision_matrix=lower.to_sparse())
    with pytest.raises(ValueError, match=r"precision_matrix must be \(4, 4\) to match loc"):
        SparseMultivariateNormal(loc, precision_matrix=_arrow(5).to_sparse())
    with pytest.raises(ValueError, match="precision_matrix must be square"):
        SparseMultivariateNormal(loc, precision_matrix=torch.ones(4, 3, dtype=F64).to_sparse())
    with pytest.raises(ValueError, match="precision_matrix must be sparse COO or CSR"):
        SparseMultivariateNormal(loc, precision_matrix=Qd)
    with pytest.raises(TypeError, match="same dtype"):
        SparseMultivariateNormal(loc.float(), precision_matrix=Qd.to_sparse())
    with pytest.raises(ValueError, match="Exactly one of scale_tril, precision_tril or precision_matrix"):
        SparseMultivariateNormal(
            loc, scale_tril=torch.eye(4, dtype=F64).to_sparse(), precision_matrix=Qd.to_sparse()
        )
    with pytest.raises(ValueError, match="diagonal only with"):
        SparseMultivariateNormal(loc, torch.ones(4, dtype=F64), precision_matrix=Qd.to_sparse())
    batched = torch.stack([Qd, Qd]).to_sparse()
    with pytest.raises(ValueError, match="batch shapes do not broadcast"):
        SparseMultivariateNormal(torch.zeros(3, 4, dtype=F64), precision_matrix=batched)
    nan = Qd.clone()
    nan[1, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        SparseMultivariateNormal(loc, precision_matrix=nan.to_sparse())
    d = SparseMultivariateNormal(loc, precision_matrix=Qd.to_sparse())
    with pytest.raises(ValueError, match=r"value must have shape \(\.\.\., 4\)"):
        d.log_prob(torch.zeros(3, dtype=F64))


# ------------------------------------------------------------------------------------------------
# variance of the precision_tril forms (selected inversion on the given factor)


@settings(max_examples=20)
@given(sparse_matrices(structures=("lower",), max_size=6), st.data())
def test_precision_tril_llt_variance_and_gradient_match_dense(case, data):
    L = leaf(case.sparse)
    n = L.shape[-1]
    before = clone_input(case.sparse)
    d = SparseMultivariateNormal(torch.zeros(n, dtype=L.dtype), precision_tril=L, validate_args=False)
    w = data.draw(dense_like((*batch_of(case), n)))
    (d.variance * w.to(L.dtype)).sum().backward()
    Ld = case.dense.double().requires_grad_()
    ref = torch.linalg.inv(Ld @ Ld.mT).diagonal(dim1=-2, dim2=-1)
    (ref * w).sum().backward()
    assert d.variance.shape == ref.shape
    torch.testing.assert_close(d.variance.double(), ref.detach(), **tol(L.dtype))
    torch.testing.assert_close(d.stddev.double(), ref.detach().sqrt(), **tol(L.dtype))
    assert_sparse_grad_matches(L, L.grad, Ld.grad.to(L.dtype), **tol(L.dtype))
    assert_unchanged(before, L)


@settings(max_examples=20)
@given(sparse_matrices(structures=("strict_lower",), max_size=6), st.data())
def test_precision_tril_ldlt_variance_and_gradients_match_dense(case, data):
    S = leaf(case.sparse)
    n = S.shape[-1]
    shape = (2, *batch_of(case), n)
    D = (data.draw(dense_like(shape)) * 0.4 + 1.0).to(S.dtype).requires_grad_()
    d = SparseMultivariateNormal(torch.zeros(n, dtype=S.dtype), D, precision_tril=S)
    w = data.draw(dense_like(shape))
    (d.variance * w.to(S.dtype)).sum().backward()
    Sd = case.dense.double().requires_grad_()
    Dr = D.detach().double().requires_grad_()
    M = torch.eye(n, dtype=F64) + Sd
    ref = torch.linalg.inv((M * Dr.unsqueeze(-2)) @ M.mT).diagonal(dim1=-2, dim2=-1)
    (ref * w).sum().backward()
    assert d.variance.shape == ref.shape
    torch.testing.assert_close(d.variance.double(), ref.detach(), **tol(S.dtype))
    assert_sparse_grad_matches(S, S.grad, Sd.grad.to(S.dtype), **tol(S.dtype))
    torch.testing.assert_close(D.grad.double(), Dr.grad, **tol(S.dtype))


def test_precision_tril_with_a_stored_diagonal_in_the_ldlt_form_ignores_it_as_sampling_does(monkeypatch):
    monkeypatch.setattr(smn, "_WARNED_STORED_DIAGONAL", set())  # the warning is shown once per session
    n = 4
    Ld = torch.tril(torch.full((n, n), 0.3, dtype=F64))  # stores a diagonal of 0.3
    D = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=F64)
    with pytest.warns(UserWarning, match="ignored"):
        d = SparseMultivariateNormal(torch.zeros(n, dtype=F64), D, precision_tril=Ld.to_sparse())
    M = torch.eye(n, dtype=F64) + torch.tril(Ld, -1)
    ref = torch.linalg.inv(M @ torch.diag(D) @ M.T).diagonal()
    torch.testing.assert_close(d.variance, ref, rtol=1e-12, atol=0)
    T = d._transform(torch.eye(n, dtype=F64)).T  # the samples' covariance: the same matrix
    torch.testing.assert_close(T @ T.T, torch.linalg.inv(M @ torch.diag(D) @ M.T), rtol=1e-12, atol=1e-14)
