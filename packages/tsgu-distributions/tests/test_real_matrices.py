"""SparseMultivariateNormal on real SPD matrices (pyamg / scikit-fem corpus) against torch's dense
MultivariateNormal: the matrix is the precision (or the covariance), its exact Cholesky factor —
computed densely after a reverse Cuthill–McKee ordering, stored sparsely — the sparse factor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsgu_distributions import SparseMultivariateNormal
from tsgu_ops.testing import assert_sparse_grad_matches

F64 = torch.float64
MAX_N = 450  # the dense references cost O(n³)


def _ordered_matrix_and_factor(rm):
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    perm = reverse_cuthill_mckee(rm.matrix.tocsr(), symmetric_mode=True)
    A = rm.matrix[perm][:, perm].toarray()
    A = 0.5 * (A + A.T)  # symmetric to rounding in the corpus; exactly symmetric here
    L = np.linalg.cholesky(A)
    L[np.abs(L) < 1e-300] = 0.0  # outside the envelope the factor is exactly zero
    return torch.from_numpy(A), torch.from_numpy(L)


def _spd_matrices(corpus):
    return [rm for rm in corpus if rm.spd and rm.n <= MAX_N]


def test_log_prob_and_entropy_on_real_spd_matrices(real_corpus):
    cases = _spd_matrices(real_corpus)
    assert len(cases) >= 5
    g = torch.Generator().manual_seed(0)
    for i, rm in enumerate(cases):
        A, L = _ordered_matrix_and_factor(rm)
        n = rm.n
        Ls = L.to_sparse_csr()
        assert Ls.values().numel() < n * n  # the factor is really sparse
        d = L.diagonal()
        unit = (L / d).tril(-1).to_sparse()  # L = (I + U) diag(d): A = (I + U) d² (I + U)ᵀ
        loc = torch.randn(n, dtype=F64, generator=g)
        x = loc + 0.1 * torch.randn(3, n, dtype=F64, generator=g)
        for precision in (i % 2 == 0, i % 2 == 1)[: 1 if i > 1 else 2]:  # both forms on the first two
            kw = "precision_matrix" if precision else "covariance_matrix"
            ref = torch.distributions.MultivariateNormal(loc, **{kw: A})
            name = "precision_tril" if precision else "scale_tril"
            for dist in (
                SparseMultivariateNormal(loc, **{name: Ls}),
                SparseMultivariateNormal(loc, d * d, **{name: unit}),
            ):
                torch.testing.assert_close(
                    dist.log_prob(x),
                    ref.log_prob(x),
                    rtol=1e-9,
                    atol=1e-8,
                    msg=lambda m, rm=rm: f"{rm.name}: {m}",
                )
                torch.testing.assert_close(dist.entropy(), ref.entropy(), rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_log_prob_gradient_on_a_real_precision_factor_equals_dense_autograd(real_corpus, layout):
    rm = min(_spd_matrices(real_corpus), key=lambda r: r.n)
    _, L = _ordered_matrix_and_factor(rm)
    n = rm.n
    S = (L.to_sparse() if layout == torch.sparse_coo else L.to_sparse_csr()).requires_grad_()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, n, dtype=F64, generator=g)
    dist = SparseMultivariateNormal(torch.zeros(n, dtype=F64), precision_tril=S)
    dist.log_prob(x).sum().backward()
    L2 = L.clone().requires_grad_()
    ref = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=F64), precision_matrix=L2 @ L2.T)
    ref.log_prob(x).sum().backward()
    assert_sparse_grad_matches(S, S.grad, L2.grad, rtol=1e-6, atol=1e-8)
