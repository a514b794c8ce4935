"""tsgu-ops on matrices nobody on this project wrote: the real-matrix corpus (pyamg, scikit-fem).

Every corpus matrix, COO and CSR, int32 and int64 indices, float64, one right-hand-side width:
``sparse_mm``, ``sparse_triangular_solve`` (on the lower and upper triangles), ``sampled_product``
and ``sparse_logsumexp`` against SciPy/NumPy references, forward and gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsgu_ops import sampled_product, sparse_logsumexp, sparse_mm, sparse_triangular_solve, sparse_values
from tsgu_ops.testing import stored_entries

scipy_sparse = pytest.importorskip("scipy.sparse")
scipy_linalg = pytest.importorskip("scipy.sparse.linalg")

P = 3  # one right-hand-side width keeps the module fast
COMBOS = [
    (layout, itype) for layout in (torch.sparse_coo, torch.sparse_csr) for itype in (torch.int32, torch.int64)
]


def _as_torch(S, layout: torch.layout, itype: torch.dtype) -> torch.Tensor:
    """SciPy CSR ``S`` → torch COO (coalesced) or CSR with the given index dtype, float64."""
    S = S.tocsr()
    S.sort_indices()
    if layout == torch.sparse_csr:
        return torch.sparse_csr_tensor(
            torch.from_numpy(S.indptr.astype(np.int64)).to(itype),
            torch.from_numpy(S.indices.astype(np.int64)).to(itype),
            torch.from_numpy(S.data.copy()),
            S.shape,
        )
    C = S.tocoo()
    idx = torch.from_numpy(np.vstack([C.row, C.col]).astype(np.int64)).to(itype)
    return torch.sparse_coo_tensor(idx, torch.from_numpy(C.data.copy()), S.shape).coalesce()


def _rand(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _close(a, b, scale: float = 1.0) -> None:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    np.testing.assert_allclose(a, np.asarray(b), rtol=1e-9, atol=1e-9 * max(scale, 1.0))


def test_sparse_mm_matches_scipy_on_the_corpus(real_corpus):
    for rm in real_corpus:
        S = rm.matrix
        B = _rand((S.shape[1], P), 0)
        G = _rand((S.shape[0], P), 1)
        scale = float(abs(S).sum(1).max())
        for layout, itype in COMBOS:
            A = _as_torch(S, layout, itype).requires_grad_()
            Bg = B.clone().requires_grad_()
            C = sparse_mm(A, Bg)
            _close(C, S @ B.numpy(), scale)
            gA, gB = torch.autograd.grad(C, (A, Bg), G)
            r, c = stored_entries(A)
            vals = gA._values() if layout == torch.sparse_coo else gA.values()
            _close(vals, (G.numpy()[r.numpy()] * B.numpy()[c.numpy()]).sum(1), scale)
            _close(gB, S.T @ G.numpy(), scale)
            if layout == torch.sparse_csr:
                assert gA.crow_indices().dtype == itype


@pytest.mark.parametrize("lower", [True, False])
def test_triangular_solve_matches_scipy_on_the_corpus_triangles(real_corpus, lower):
    for rm in real_corpus:
        T = (scipy_sparse.tril(rm.matrix) if lower else scipy_sparse.triu(rm.matrix)).tocsr()
        if np.any(T.diagonal() == 0):  # a singular triangle: nothing to compare
            continue
        B = _rand((T.shape[0], P), 2)
        G = _rand((T.shape[0], P), 3)
        X_ref = scipy_linalg.spsolve_triangular(T, B.numpy(), lower=lower)
        Gb_ref = scipy_linalg.spsolve_triangular(T.T.tocsr(), G.numpy(), lower=not lower)
        scale = float(np.abs(X_ref).max() * np.abs(Gb_ref).max() + np.abs(X_ref).max())
        for layout, itype in COMBOS:
            A = _as_torch(T, layout, itype).requires_grad_()
            Bg = B.clone().requires_grad_()
            X = sparse_triangular_solve(A, Bg, upper=not lower)
            _close(X, X_ref, scale)
            gA, gB = torch.autograd.grad(X, (A, Bg), G)
            _close(gB, Gb_ref, scale)
            r, c = stored_entries(A)
            vals = gA._values() if layout == torch.sparse_coo else gA.values()
            _close(vals, -(Gb_ref[r.numpy()] * X_ref[c.numpy()]).sum(1), scale)


def test_sampled_product_matches_numpy_on_the_corpus(real_corpus):
    for rm in real_corpus:
        S = rm.matrix
        U = _rand((S.shape[0], P), 4)
        V = _rand((S.shape[1], P), 5)
        for layout, itype in COMBOS:
            A = _as_torch(S, layout, itype)
            out = sampled_product(A, U, V)
            r, c = stored_entries(A)
            _close(sparse_values(out), (U.numpy()[r.numpy()] * V.numpy()[c.numpy()]).sum(1), P)
            assert out.layout == layout


def _row_logsumexp(S, include_zeros: bool) -> np.ndarray:
    """logsumexp of each row of SciPy CSR ``S`` (stored values, plus the row's zeros if asked)."""
    out = np.full(S.shape[0], -np.inf)
    for i in range(S.shape[0]):
        v = S.data[S.indptr[i] : S.indptr[i + 1]]
        zeros = S.shape[1] - v.size if include_zeros else 0
        if v.size == 0 and zeros == 0:
            continue
        m = max(v.max() if v.size else -np.inf, 0.0 if zeros else -np.inf)
        out[i] = m + np.log(np.exp(v - m).sum() + zeros * np.exp(-m))
    return out


@pytest.mark.parametrize("include_zeros", [True, False])
def test_logsumexp_matches_numpy_on_the_corpus(real_corpus, include_zeros):
    for rm in real_corpus:
        S = rm.matrix
        rows = _row_logsumexp(S, include_zeros)
        cols = _row_logsumexp(S.T.tocsr(), include_zeros)
        for layout, itype in COMBOS:
            A = _as_torch(S, layout, itype)
            _close(sparse_logsumexp(A, 1, include_zeros=include_zeros), rows, float(np.abs(rows).max()))
            _close(sparse_logsumexp(A, 0, include_zeros=include_zeros), cols, float(np.abs(cols).max()))
