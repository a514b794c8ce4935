"""SparseMultivariateNormal against torch's dense MultivariateNormal, samples against statistical tests."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from tsgu_distributions import (
    SparseMultivariateNormal,
    SparseMultivariateNormalNative,
    cov_nagao_test,
    mean_hotelling_t2_test,
)
from tsgu_distributions.sparse_multivariate_normal import _batch_sparse_mv
from tsgu_ops.testing import assert_sparse_grad_matches, grid_operator

F64 = torch.float64
FORMS = list(itertools.product(["covariance", "precision"], ["llt", "ldlt"]))


def _factor(n: int, seed: int, ldlt: bool, batch: int | None = None, dtype=F64):
    """A random lower factor (dense): strictly lower part sparse, diagonal in [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, n) if batch is None else (batch, n, n)
    # one pattern for every batch item (batched CSR stores the same nnz per item)
    mask = (torch.rand(n, n, generator=g) < 0.4) & (torch.arange(n)[:, None] > torch.arange(n)[None, :])
    L = torch.where(mask, torch.randn(shape, generator=g, dtype=F64) * 0.4 + 0.05, 0.0)
    if not ldlt:
        L = L + torch.diag_embed(torch.rand(shape[:-1], generator=g, dtype=F64) + 0.5)
    D = torch.rand(shape[:-1], generator=g, dtype=F64) + 0.5
    return L.to(dtype), D.to(dtype)


def _sparse(L: torch.Tensor, layout, index_dtype=torch.int64):
    if layout == torch.sparse_coo:
        return L.to_sparse()
    C = L.to_sparse_csr() if L.dim() == 2 else L.to_sparse(layout=torch.sparse_csr, dense_dim=0)
    return torch.sparse_csr_tensor(
        C.crow_indices().to(index_dtype), C.col_indices().to(index_dtype), C.values(), C.shape
    )


def _dense_matrix(L, D, ldlt):
    n = L.shape[-1]
    M = L + torch.eye(n, dtype=L.dtype) if ldlt else L
    Dm = D if ldlt else torch.ones_like(D)
    return (M * Dm.unsqueeze(-2)) @ M.mT


def _pair(form, kind, L, D, layout, loc, index_dtype=torch.int64):
    ldlt = kind == "ldlt"
    S = _sparse(L, layout, index_dtype)
    kw = {"precision_tril" if form == "precision" else "scale_tril": S}
    dist = SparseMultivariateNormal(loc, D if ldlt else None, **kw)
    mat = _dense_matrix(L, D, ldlt)
    ref = (
        torch.distributions.MultivariateNormal(loc, precision_matrix=mat)
        if form == "precision"
        else torch.distributions.MultivariateNormal(loc, covariance_matrix=mat)
    )
    return dist, ref, S


@pytest.mark.parametrize(("form", "kind"), FORMS)
@pytest.mark.parametrize(
    ("layout", "index_dtype"),
    [(torch.sparse_coo, torch.int64), (torch.sparse_csr, torch.int64), (torch.sparse_csr, torch.int32)],
)
@pytest.mark.parametrize("batch", [None, 3])
def test_log_prob_and_entropy_equal_dense_multivariate_normal(form, kind, layout, index_dtype, batch):
    L, D = _factor(7, 1, kind == "ldlt", batch)
    loc = torch.randn(7 if batch is None else (batch, 7), dtype=F64)
    dist, ref, S = _pair(form, kind, L, D, layout, loc, index_dtype)
    if layout == torch.sparse_csr:
        assert S.crow_indices().dtype == index_dtype
    x = torch.randn(4, 2, *dist.batch_shape, 7, dtype=F64)
    torch.testing.assert_close(dist.log_prob(x), ref.log_prob(x))
    torch.testing.assert_close(dist.entropy(), ref.entropy())
    assert dist.batch_shape == ref.batch_shape and dist.event_shape == ref.event_shape


@pytest.mark.parametrize(("form", "kind"), FORMS)
@pytest.mark.parametrize(
    ("layout", "index_dtype"),
    [(torch.sparse_coo, torch.int64), (torch.sparse_csr, torch.int64), (torch.sparse_csr, torch.int32)],
)
def test_log_prob_gradients_are_sparse_and_equal_dense_autograd(form, kind, layout, index_dtype):
    L, D = _factor(6, 2, kind == "ldlt")
    loc = torch.randn(6, dtype=F64, requires_grad=True)
    Dp = D.clone().requires_grad_()
    S = _sparse(L, layout, index_dtype).requires_grad_()
    kw = {"precision_tril" if form == "precision" else "scale_tril": S}
    dist = SparseMultivariateNormal(loc, Dp if kind == "ldlt" else None, **kw)
    x = torch.randn(5, 6, dtype=F64)
    (dist.log_prob(x).sum() + dist.entropy()).backward()
    Ld = L.clone().requires_grad_()
    loc2 = loc.detach().clone().requires_grad_()
    D2 = D.clone().requires_grad_()
    mat = _dense_matrix(torch.tril(Ld, -1) if kind == "ldlt" else Ld, D2, kind == "ldlt")
    ref = (
        torch.distributions.MultivariateNormal(loc2, precision_matrix=mat)
        if form == "precision"
        else torch.distributions.MultivariateNormal(loc2, covariance_matrix=mat)
    )
    (ref.log_prob(x).sum() + ref.entropy()).backward()
    torch.testing.assert_close(loc.grad, loc2.grad)
    if kind == "ldlt":
        torch.testing.assert_close(Dp.grad, D2.grad)
    assert_sparse_grad_matches(S, S.grad, Ld.grad, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("form", "kind"), FORMS)
@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("batch", [None, 2])
def test_samples_pass_hotelling_and_nagao_tests(form, kind, layout, dtype, batch):
    torch.manual_seed(3)
    L, D = _factor(5, 4, kind == "ldlt", batch, dtype)
    loc = torch.randn(5 if batch is None else (batch, 5), dtype=dtype)
    dist, _, _ = _pair(form, kind, L, D, layout, loc)
    n = 4000
    x = dist.sample((n,)).to(F64)
    assert x.shape == (n, *dist.batch_shape, 5)
    xb = x if batch is not None else x.unsqueeze(1)
    mean = xb.mean(0)
    cov = torch.stack([xb[:, i].T.cov() for i in range(xb.shape[1])])
    true_cov = _dense_matrix(L.to(F64), D.to(F64), kind == "ldlt")
    if form == "precision":
        true_cov = torch.linalg.inv(true_cov)
    true_cov = true_cov.expand(xb.shape[1], 5, 5)
    accept, _, _ = mean_hotelling_t2_test(mean, loc.to(F64).expand(xb.shape[1], 5), cov, n, 0.999)
    assert bool(accept.all())
    accept, _, _ = cov_nagao_test(cov, true_cov, n, 0.999)
    assert bool(accept.all())


def test_any_sample_shape_and_batched_loc_with_unbatched_factor():
    L, D = _factor(4, 5, True)
    loc = torch.randn(3, 4, dtype=F64)
    dist = SparseMultivariateNormal(loc, D, precision_tril=L.to_sparse())
    assert dist.rsample((2, 5)).shape == (2, 5, 3, 4)
    assert dist.rsample().shape == (3, 4)
    assert dist.log_prob(dist.rsample((2, 5))).shape == (2, 5, 3)


def test_rsample_gradients_reach_the_factor_values_sparsely():
    L, _ = _factor(5, 6, False)
    S = L.to_sparse_csr().requires_grad_()
    loc = torch.zeros(5, dtype=F64, requires_grad=True)
    dist = SparseMultivariateNormal(loc, scale_tril=S)
    dist.rsample((7, 2)).pow(2).sum().backward()
    assert S.grad.layout == torch.sparse_csr and torch.equal(S.grad.col_indices(), S.col_indices())
    assert loc.grad.shape == (5,)


def test_accessors_moments_expand_and_dense_matrices():
    L, D = _factor(4, 7, True)
    loc = torch.randn(4, dtype=F64)
    cov = SparseMultivariateNormal(loc, D, scale_tril=L.to_sparse())
    prec = SparseMultivariateNormal(loc, D, precision_tril=L.to_sparse())
    assert cov.precision_tril is None and prec.scale_tril is None
    assert cov.is_ldlt_parameterization and torch.equal(cov.mean, loc) and torch.equal(cov.mode, loc)
    mat = _dense_matrix(L, D, True)
    torch.testing.assert_close(cov.variance, mat.diagonal())
    torch.testing.assert_close(cov.stddev, mat.diagonal().sqrt())
    torch.testing.assert_close(prec.variance, torch.linalg.inv(mat).diagonal())  # selected inversion
    with pytest.warns(UserWarning, match="dense"):
        torch.testing.assert_close(cov.covariance_matrix, mat)
    with pytest.warns(UserWarning, match="dense"):
        torch.testing.assert_close(prec.precision_matrix, mat)
    with pytest.warns(UserWarning, match="dense"):
        torch.testing.assert_close(prec.covariance_matrix, torch.linalg.inv(mat))
    big = cov.expand((6,))
    assert big.batch_shape == (6,) and big.rsample((2,)).shape == (2, 6, 4)
    x = torch.randn(6, 4, dtype=F64)
    torch.testing.assert_close(big.log_prob(x), cov.log_prob(x))


def test_validation_errors():
    L, D = _factor(4, 8, False)
    S = L.to_sparse()
    loc = torch.zeros(4, dtype=F64)
    with pytest.raises(ValueError, match=r"loc must be at least one-dimensional\."):
        SparseMultivariateNormal(torch.tensor(0.0, dtype=F64), scale_tril=S)
    with pytest.raises(ValueError, match=r"Exactly one of scale_tril or precision_tril may be specified\."):
        SparseMultivariateNormal(loc, scale_tril=S, precision_tril=S)
    with pytest.raises(ValueError, match="Exactly one of scale_tril or precision_tril"):
        SparseMultivariateNormal(loc)
    with pytest.raises(ValueError, match=r"scale_tril must be sparse COO or CSR, instead of torch\.strided"):
        SparseMultivariateNormal(loc, scale_tril=L)
    with pytest.raises(ValueError, match="diagonal must be a batch of vectors with shape"):
        SparseMultivariateNormal(loc, torch.ones(3, dtype=F64), scale_tril=S)
    with pytest.raises(ValueError, match="to match loc's last dimension"):
        SparseMultivariateNormal(torch.zeros(5, dtype=F64), scale_tril=S)
    with pytest.raises(ValueError, match="lower triangular"):
        SparseMultivariateNormal(loc, scale_tril=L.T.contiguous().to_sparse(), validate_args=True)
    with pytest.raises(ValueError, match="positive diagonal"):
        SparseMultivariateNormal(loc, scale_tril=(-L).to_sparse(), validate_args=True)
    # a stored diagonal in an LDLᵀ factor is 0.2.7's documented behaviour, not invalid input
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SparseMultivariateNormal(loc, D, precision_tril=S, validate_args=True)
    with pytest.raises(ValueError):
        SparseMultivariateNormal(loc, -D, precision_tril=torch.tril(L, -1).to_sparse(), validate_args=True)


def test_native_variant_matches_and_log_prob_does_not_densify():
    L, _ = _factor(5, 9, False)
    loc = torch.randn(5, dtype=F64)
    S = L.to_sparse_csr().requires_grad_()
    nat = SparseMultivariateNormalNative(loc, S)
    ref = torch.distributions.MultivariateNormal(loc, scale_tril=L)
    x = torch.randn(3, 5, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no densifying warning any more
        lp = nat.log_prob(x)
    torch.testing.assert_close(lp, ref.log_prob(x))
    lp.sum().backward()
    assert S.grad.layout == torch.sparse_csr
    assert nat.rsample((4,)).shape == (4, 5)
    with pytest.warns(UserWarning):
        torch.testing.assert_close(nat.covariance_matrix, L @ L.T)
    with pytest.raises(ValueError, match=r"loc must be one-dimensional for SparseMultivariateNormalNative\."):
        SparseMultivariateNormalNative(torch.zeros(2, 5, dtype=F64), S)
    with pytest.raises(
        ValueError, match=r"scale_tril must be sparse CSR for SparseMultivariateNormalNative\."
    ):
        SparseMultivariateNormalNative(loc, L.to_sparse())
    with pytest.raises(ValueError, match=r"scale_tril must have the same size as loc\."):
        SparseMultivariateNormalNative(torch.zeros(4, dtype=F64), S)


def test_maximum_likelihood_recovers_a_grid_gmrf_precision_factor():
    """Fit the values of an LLᵀ precision factor on a 2-D grid to samples from a known one."""
    torch.manual_seed(0)
    Q = grid_operator((6, 6)).to_dense() + 0.5 * torch.eye(36, dtype=F64)
    Ltrue = torch.linalg.cholesky(Q)
    pattern = torch.tril(Q) != 0  # the factor is fitted on the pattern of Q's lower triangle
    idx = pattern.nonzero().T
    x = SparseMultivariateNormal(torch.zeros(36, dtype=F64), precision_tril=Ltrue.to_sparse()).sample((4000,))
    theta = torch.where(idx[0] == idx[1], 1.0, 0.0).to(F64).requires_grad_()
    opt = torch.optim.Adam([theta], lr=0.05)
    losses = []
    for _ in range(300):
        opt.zero_grad()
        L = torch.sparse_coo_tensor(idx, theta, (36, 36))
        loss = -SparseMultivariateNormal(torch.zeros(36, dtype=F64), precision_tril=L).log_prob(x).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    Lfit = torch.sparse_coo_tensor(idx, theta.detach(), (36, 36)).to_dense()
    Qfit = Lfit @ Lfit.T
    assert float((Qfit - Q).abs().max() / Q.abs().max()) < 0.15


def test_statistical_helpers_accept_batched_and_unbatched_and_reject_wrong_means():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 4, dtype=F64, generator=g)
    accept, t2, thr = mean_hotelling_t2_test(x.mean(0), torch.zeros(4, dtype=F64), x.T.cov(), 3000)
    assert bool(accept) and t2.shape == () and isinstance(thr, float)
    accept, _, _ = mean_hotelling_t2_test(x.mean(0), torch.full((4,), 0.5, dtype=F64), x.T.cov(), 3000)
    assert not bool(accept)
    acc, _, thr_lo = cov_nagao_test(x.T.cov()[None], torch.eye(4, dtype=F64)[None], 3000, 0.9)
    _, _, thr_hi = cov_nagao_test(x.T.cov()[None], torch.eye(4, dtype=F64)[None], 3000, 0.99)
    assert acc.shape == (1,) and thr_hi > thr_lo
    acc, _, _ = cov_nagao_test(x.T.cov(), 3 * torch.eye(4, dtype=F64), 3000)
    assert not bool(acc)
    with pytest.raises(ValueError, match="sample size"):
        cov_nagao_test(x.T.cov(), torch.eye(4, dtype=F64), 3)


def test_batch_sparse_mv_helper_ranks():
    M = torch.eye(3, dtype=F64)
    op = torch.matmul
    assert _batch_sparse_mv(op, M, torch.ones(3, dtype=F64)).shape == (3,)
    assert _batch_sparse_mv(op, M, torch.ones(5, 3, dtype=F64)).shape == (5, 3)
    assert _batch_sparse_mv(op, M.expand(2, 3, 3), torch.ones(2, 3, dtype=F64)).shape == (2, 3)
    assert _batch_sparse_mv(op, M.expand(2, 3, 3), torch.ones(4, 2, 3, dtype=F64)).shape == (4, 2, 3)
    with pytest.raises(ValueError, match="Invalid dimensions for bmat and bvec"):
        _batch_sparse_mv(op, M, torch.ones(1, 1, 1, 3))


def test_variance_broadcasts_loc_diagonal_and_factor_batches():
    g = torch.Generator().manual_seed(5)
    n = 4
    L = torch.tril(torch.randn(2, n, n, dtype=F64, generator=g), -1) * (torch.rand(n, n, generator=g) < 0.6)
    D = torch.rand(2, n, dtype=F64, generator=g) + 0.5
    dist = SparseMultivariateNormal(torch.zeros(3, 2, n, dtype=F64), D, scale_tril=L.to_sparse())
    M = L + torch.eye(n, dtype=F64)
    cov = M @ torch.diag_embed(D) @ M.mT
    assert dist.batch_shape == (3, 2)
    torch.testing.assert_close(dist.variance, cov.diagonal(dim1=-2, dim2=-1).expand(3, 2, n))
    shared = SparseMultivariateNormal(torch.zeros(n, dtype=F64), D, scale_tril=L[0].to_sparse())
    M0 = M[0]
    torch.testing.assert_close(shared.variance, (M0 * D[:, None, :] * M0).sum(-1))
