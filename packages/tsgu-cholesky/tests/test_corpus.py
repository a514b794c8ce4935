"""Every SPD matrix of the real-matrix corpus (n ≤ 4000): logdet, its gradient, the selected inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tsgu_cholesky as tc

from tsgu_ops.testing import real_matrices

CORPUS = [m for m in real_matrices("small") if m.spd and m.n <= 4000]


@pytest.mark.slow
@pytest.mark.parametrize("entry", CORPUS, ids=[m.name for m in CORPUS])
def test_corpus_logdet_gradient_and_selected_inverse(entry):
    A = entry.torch(torch.sparse_csr, torch.float64, torch.int32).requires_grad_()
    ld = tc.sparse_logdet(A)
    dense = torch.from_numpy(entry.matrix.toarray())
    sign, ref = torch.linalg.slogdet(dense)
    assert float(sign) > 0
    assert abs(float(ld.detach()) - float(ref)) <= 1e-12 * abs(float(ref))
    ld.backward()
    # the stored matrix may be symmetric to ~1e-12 only: the reference is the inverse of its
    # symmetric part, which is what sparse_logdet factors (and equal to dense autograd to ~1e-12)
    inv = torch.linalg.inv(0.5 * (dense + dense.T))
    coo = entry.matrix.tocoo()
    want = inv[torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))]
    scale = float(want.abs().max())
    got = A.grad.values()
    assert A.grad.layout == torch.sparse_csr and A.grad.crow_indices().dtype == torch.int32
    assert float((got - want).abs().max()) <= 1e-9 * scale
    Z = tc.sparse_selected_inverse(A.detach()).values()
    assert float((Z - want).abs().max()) <= 1e-10 * scale
