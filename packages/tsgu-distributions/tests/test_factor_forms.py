"""SparseMultivariateNormal with the factors 0.2.7 users pass: stored diagonals in LDLᵀ forms, a
batch of one, uncoalesced COO, batched CSR/COO used several times, and real SPD matrices.

Every reference is torch's dense ``MultivariateNormal`` (or a dense matrix product/solve) on the
same covariance or precision, with dense autograd for the gradients.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import tsgu_distributions.sparse_multivariate_normal as smvn_module
from tsgu_distributions import SparseMultivariateNormal
from tsgu_ops import rand_sparse_tri
from tsgu_ops.testing import assert_sparse_grad_matches

F64 = torch.float64
LAYOUTS = [torch.sparse_coo, torch.sparse_csr]


def _mvn(loc, mat, precision):
    kw = {"precision_matrix" if precision else "covariance_matrix": mat}
    return torch.distributions.MultivariateNormal(loc, **kw)


def _reset_warning(monkeypatch):
    monkeypatch.setattr(smvn_module, "_WARNED_STORED_DIAGONAL", set())


# ---------------------------------------------------------------------------------------------
# The 0.2.7 quickstart: an LDLᵀ factor that stores its diagonal (rand_sparse_tri(strict=False))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", [None, 2])
def test_scale_tril_with_stored_diagonal_samples_like_0_2_7(layout, batch, monkeypatch):
    _reset_warning(monkeypatch)
    n = 12
    g = torch.Generator().manual_seed(0)
    size = (n, n) if batch is None else (batch, n, n)
    L = rand_sparse_tri(size, 30, layout, upper=False, strict=False, values_dtype=F64, generator=g)
    loc = torch.randn(size[:-1], dtype=F64, generator=g)
    d = torch.rand(size[:-1], dtype=F64, generator=g) + 0.5
    with pytest.warns(UserWarning, match=r"add to the implicit unit diagonal"):
        dist = SparseMultivariateNormal(loc, diagonal=d, scale_tril=L)
    torch.manual_seed(1)
    x = dist.rsample((5,))
    torch.manual_seed(1)
    eps = torch.randn(5, *size[:-1], dtype=F64)
    M = L.to_dense() + torch.eye(n, dtype=F64)  # 0.2.7: x = loc + L η + η with η = √D ε
    expected = loc + ((M @ (d.sqrt() * eps).unsqueeze(-1)).squeeze(-1))
    torch.testing.assert_close(x, expected)
    # log_prob and entropy describe the distribution the samples come from
    ref = _mvn(loc, M @ torch.diag_embed(d) @ M.mT, precision=False)
    torch.testing.assert_close(dist.log_prob(x), ref.log_prob(x))
    torch.testing.assert_close(dist.entropy(), ref.entropy())
    torch.testing.assert_close(dist.variance, ref.variance)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", [None, 2])
def test_precision_tril_with_stored_diagonal_samples_like_0_2_7(layout, batch, monkeypatch):
    _reset_warning(monkeypatch)
    n = 12
    g = torch.Generator().manual_seed(2)
    size = (n, n) if batch is None else (batch, n, n)
    L = rand_sparse_tri(size, 30, layout, upper=False, strict=False, values_dtype=F64, generator=g)
    loc = torch.randn(size[:-1], dtype=F64, generator=g)
    d = torch.rand(size[:-1], dtype=F64, generator=g) + 0.5
    with pytest.warns(UserWarning, match=r"they are ignored"):
        dist = SparseMultivariateNormal(loc, d, precision_tril=L)
    torch.manual_seed(3)
    x = dist.rsample((4,))
    torch.manual_seed(3)
    eps = torch.randn(4, *size[:-1], dtype=F64)
    # 0.2.7's kernel: torch.triangular_solve on the CSR factor with unitriangular=True, transpose=True
    rhs = (eps / d.sqrt()).movedim(0, -1)  # (*batch, n, 4)
    Lc = L.to_dense()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if batch is None:
            sol = torch.triangular_solve(
                rhs, Lc.to_sparse_csr(), upper=False, transpose=True, unitriangular=True
            )
            native = sol.solution
        else:
            native = torch.stack(
                [
                    torch.triangular_solve(
                        rhs[i], Lc[i].to_sparse_csr(), upper=False, transpose=True, unitriangular=True
                    ).solution
                    for i in range(batch)
                ]
            )
    torch.testing.assert_close(x, loc + native.movedim(-1, 0))
    M = torch.tril(Lc, -1) + torch.eye(n, dtype=F64)  # the stored diagonal is ignored
    ref = _mvn(loc, M @ torch.diag_embed(d) @ M.mT, precision=True)
    torch.testing.assert_close(dist.log_prob(x), ref.log_prob(x))
    torch.testing.assert_close(dist.entropy(), ref.entropy())


@pytest.mark.parametrize("form", ["scale_tril", "precision_tril"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_stored_diagonal_gradients_equal_dense_autograd_and_warn_once(form, layout, monkeypatch):
    _reset_warning(monkeypatch)
    n = 7
    g = torch.Generator().manual_seed(4)
    Ld = torch.tril(torch.randn(n, n, dtype=F64, generator=g) * 0.3) * (torch.rand(n, n, generator=g) < 0.5)
    Ld = Ld + torch.diag(torch.rand(n, dtype=F64, generator=g))  # a stored diagonal
    S = (Ld.to_sparse() if layout == torch.sparse_coo else Ld.to_sparse_csr()).requires_grad_()
    d = (torch.rand(n, dtype=F64, generator=g) + 0.5).requires_grad_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = SparseMultivariateNormal(torch.zeros(n, dtype=F64), d, **{form: S})
        SparseMultivariateNormal(torch.zeros(n, dtype=F64), d, **{form: S})
    assert len([w for w in caught if "stores diagonal entries" in str(w.message)]) == 1
    x = torch.randn(3, n, dtype=F64, generator=g)
    (dist.log_prob(x).sum() + dist.entropy()).backward()
    L2 = Ld.clone().requires_grad_()
    d2 = d.detach().clone().requires_grad_()
    eye = torch.eye(n, dtype=F64)
    M = L2 + eye if form == "scale_tril" else torch.tril(L2, -1) + eye
    ref = _mvn(torch.zeros(n, dtype=F64), M @ torch.diag(d2) @ M.T, precision=form == "precision_tril")
    (ref.log_prob(x).sum() + ref.entropy()).backward()
    torch.testing.assert_close(d.grad, d2.grad)
    assert_sparse_grad_matches(S, S.grad, L2.grad, rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# A batch of one and an uncoalesced COO factor
def _lower(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, n, generator=g) < 0.4
    L = torch.tril(torch.randn(n, n, dtype=F64, generator=g) * 0.3 * mask, -1)
    return L + torch.diag(torch.rand(n, dtype=F64, generator=g) + 0.5)


@pytest.mark.parametrize("form", ["scale_tril", "precision_tril"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_factor_with_a_batch_of_one_broadcasts_and_differentiates(form, layout):
    n = 6
    Ld = _lower(n, 5)
    S1 = (Ld[None].to_sparse() if layout == torch.sparse_coo else Ld[None].to_sparse_csr()).requires_grad_()
    loc = torch.randn(3, n, dtype=F64)
    dist = SparseMultivariateNormal(loc, **{form: S1})
    assert dist.batch_shape == (3,)
    x = torch.randn(2, 3, n, dtype=F64)
    torch.manual_seed(0)
    y = dist.rsample((2,))
    (dist.log_prob(x).sum() + dist.entropy().sum() + y.pow(2).sum()).backward()
    L2 = Ld.clone().requires_grad_()
    mat = L2 @ L2.T
    ref = _mvn(loc, mat, precision=form == "precision_tril")
    torch.manual_seed(0)
    y2 = ref.rsample((2,)) if form == "scale_tril" else None
    if y2 is not None:  # same ε: torch's rsample is loc + L ε as well
        torch.testing.assert_close(y, y2)
    eps = None
    if form == "precision_tril":  # reproduce ε and the dense transform
        torch.manual_seed(0)
        eps = torch.randn(2, 3, n, dtype=F64)
        y2 = loc + torch.linalg.solve_triangular(L2.T, eps.unsqueeze(-1), upper=True).squeeze(-1)
        torch.testing.assert_close(y, y2)
    (ref.log_prob(x).sum() + ref.entropy().sum() + y2.pow(2).sum()).backward()
    assert_sparse_grad_matches(S1, S1.grad, L2.grad[None], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("form", ["scale_tril", "precision_tril"])
@pytest.mark.parametrize("ldlt", [False, True])
def test_uncoalesced_coo_factor_gets_a_gradient_on_its_own_index_list(form, ldlt):
    n = 8
    Ld = _lower(n, 6)
    if ldlt:
        Ld = torch.tril(Ld, -1)
    C = Ld.to_sparse()
    idx, val = C._indices(), C._values()
    # split every other entry into two duplicates and shuffle the order
    dup = torch.arange(0, idx.shape[1], 2)
    idx2 = torch.cat([idx, idx[:, dup]], 1)
    val2 = torch.cat([val, torch.zeros(dup.numel(), dtype=F64)])
    val2[dup] = 0.25 * val[dup]
    val2[idx.shape[1] :] = 0.75 * val[dup]
    order = torch.randperm(idx2.shape[1], generator=torch.Generator().manual_seed(0))
    S = torch.sparse_coo_tensor(idx2[:, order], val2[order], (n, n)).requires_grad_()
    assert not S.is_coalesced() and S._nnz() > C._nnz()
    D = (torch.rand(n, dtype=F64) + 0.5) if ldlt else None
    dist = SparseMultivariateNormal(torch.zeros(n, dtype=F64), D, **{form: S})
    x = torch.randn(4, n, dtype=F64)
    (dist.log_prob(x).sum() + dist.entropy()).backward()
    L2 = Ld.clone().requires_grad_()
    M = L2 + torch.eye(n, dtype=F64) if ldlt else L2
    mat = M @ torch.diag(D) @ M.T if ldlt else M @ M.T
    ref = _mvn(torch.zeros(n, dtype=F64), mat, precision=form == "precision_tril")
    torch.testing.assert_close(dist.log_prob(x), ref.log_prob(x))
    (ref.log_prob(x).sum() + ref.entropy()).backward()
    assert S.grad._nnz() == S._nnz()
    assert_sparse_grad_matches(S, S.grad, L2.grad, rtol=1e-7, atol=1e-9)
    if not ldlt and form == "scale_tril":
        torch.testing.assert_close(dist.variance, ref.variance)


# ---------------------------------------------------------------------------------------------
# Batched factors: gradients that PyTorch must accumulate (several uses, several backward calls)
def _batched_lower(B: int, n: int, seed: int, ldlt: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, n, generator=g) < 0.5) & (torch.arange(n)[:, None] > torch.arange(n)[None, :])
    L = torch.where(mask, torch.randn(B, n, n, dtype=F64, generator=g) * 0.3, 0.0)
    if not ldlt:
        L = L + torch.diag_embed(torch.rand(B, n, dtype=F64, generator=g) + 0.5)
    return L


def _batched_sparse(L: torch.Tensor, layout, index_dtype=torch.int64) -> torch.Tensor:
    if layout == torch.sparse_coo:
        return L.to_sparse()
    C = L.to_sparse(layout=torch.sparse_csr, dense_dim=0)
    return torch.sparse_csr_tensor(
        C.crow_indices().to(index_dtype), C.col_indices().to(index_dtype), C.values(), C.shape
    )


@pytest.mark.parametrize("form", ["scale_tril", "precision_tril"])
@pytest.mark.parametrize("ldlt", [False, True])
@pytest.mark.parametrize(
    ("layout", "index_dtype"),
    [(torch.sparse_coo, torch.int64), (torch.sparse_csr, torch.int64), (torch.sparse_csr, torch.int32)],
)
def test_batched_factor_gradients_accumulate_like_dense_autograd(form, ldlt, layout, index_dtype):
    """One graph that uses the factor several times (log_prob, entropy, rsample, a second
    distribution), differentiated twice: ``S.grad`` must equal twice the dense gradient."""
    B, n = 3, 6
    Ld = _batched_lower(B, n, 7, ldlt)
    S = _batched_sparse(Ld, layout, index_dtype).requires_grad_()
    D = torch.rand(B, n, dtype=F64, generator=torch.Generator().manual_seed(8)) + 0.5 if ldlt else None
    loc = torch.randn(B, n, dtype=F64)
    x = torch.randn(4, B, n, dtype=F64)

    def objective(factor, make):
        d1 = make(loc, D, factor)
        d2 = make(loc * 0.5, D, factor)
        torch.manual_seed(11)
        y = d1.rsample((2,))
        return d1.log_prob(x).sum() + d1.entropy().sum() + 0.1 * y.pow(2).sum() + d2.log_prob(x).sum()

    def sparse_dist(mu, diag, factor):
        return SparseMultivariateNormal(mu, diag, **{form: factor})

    for _ in range(2):  # two backward() calls accumulate into S.grad
        objective(S, sparse_dist).backward()

    L2 = Ld.clone().requires_grad_()

    def dense_dist(mu, diag, factor):
        eye = torch.eye(n, dtype=F64)
        M = factor + eye if ldlt else factor
        mat = M @ torch.diag_embed(diag) @ M.mT if ldlt else M @ M.mT
        return _DenseWithSamePaths(mu, mat, form, M, diag)

    for _ in range(2):
        objective(L2, dense_dist).backward()
    assert_sparse_grad_matches(S, S.grad, L2.grad, rtol=1e-7, atol=1e-9)


class _DenseWithSamePaths:
    """Dense reference: torch's MultivariateNormal for log_prob/entropy and the same sampling
    transform as the sparse distribution (``loc + M √D ε`` or ``loc + M⁻ᵀ ε / √D``)."""

    def __init__(self, loc, mat, form, M, diag):
        self.ref = _mvn(loc, mat, precision=form == "precision_tril")
        self.loc, self.form, self.M, self.diag = loc, form, M, diag

    def log_prob(self, x):
        return self.ref.log_prob(x)

    def entropy(self):
        return self.ref.entropy()

    def rsample(self, shape):
        eps = torch.randn(*shape, *self.loc.shape, dtype=F64)
        if self.diag is not None:
            eps = eps * self.diag.sqrt() if self.form == "scale_tril" else eps / self.diag.sqrt()
        if self.form == "scale_tril":
            y = (self.M @ eps.unsqueeze(-1)).squeeze(-1)
        else:
            y = torch.linalg.solve_triangular(self.M.mT, eps.unsqueeze(-1), upper=True).squeeze(-1)
        return self.loc + y


def test_uncoalesced_coo_scale_tril_rsample_equals_dense_multivariate_normal():
    n = 7
    Ld = _lower(n, 9)
    C = Ld.to_sparse()
    idx, val = C._indices(), C._values()
    # every entry stored twice (halves), in reversed order
    S = torch.sparse_coo_tensor(torch.cat([idx, idx], 1).flip(1), torch.cat([val, val]).flip(0) / 2, (n, n))
    S.requires_grad_()
    loc = torch.randn(2, n, dtype=F64)
    torch.manual_seed(5)
    y = SparseMultivariateNormal(loc, scale_tril=S).rsample((3,))
    L2 = Ld.clone().requires_grad_()
    torch.manual_seed(5)
    y2 = torch.distributions.MultivariateNormal(loc, scale_tril=L2).rsample((3,))
    torch.testing.assert_close(y, y2)
    w = torch.randn(3, 2, n, dtype=F64)
    (y * w).sum().backward()
    (y2 * w).sum().backward()
    assert S.grad._nnz() == 2 * C._nnz()
    assert_sparse_grad_matches(S, S.grad, L2.grad, rtol=1e-7, atol=1e-9)
