"""The selected-inversion kernels and the symbolic phase, against NumPy/SciPy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl
import torch
import tsgu_cholesky as tc
from tsgu_cholesky import _engine, _selinv, _symbolic

from tsgu_ops.testing import build_case, grid_operator


def shifted_grid(shape: tuple[int, ...]) -> torch.Tensor:
    A = grid_operator(shape)
    n = A.shape[0]
    eye = torch.sparse_coo_tensor(
        torch.arange(n).repeat(2, 1), torch.full((n,), 0.1, dtype=torch.float64), (n, n)
    )
    return (A + eye).coalesce()


def random_spd(n: int, density: float, seed: int, batch: int | None = None) -> torch.Tensor:
    shape = (batch, n, n) if batch else (n, n)
    return build_case(seed, shape, density, torch.sparse_coo, torch.int64, torch.float64, "spd").sparse


MATRICES = {
    "grid2d": lambda: shifted_grid((9, 8)),
    "grid3d": lambda: shifted_grid((5, 4, 6)),
    "random": lambda: random_spd(60, 0.08, 1),
    "dense-ish": lambda: random_spd(25, 0.6, 2),
    "batch": lambda: random_spd(15, 0.2, 3, batch=3),
}


def factor(A: torch.Tensor) -> tuple[_engine.Analysis, _engine.Numeric, np.ndarray]:
    """Analysis, numeric factor and the dense permuted matrix ``P S Pᵀ`` (flattened batch)."""
    tc.clear_cache()
    F = tc.sparse_cholesky(A)
    a, num = F.analysis, F._fac.numeric
    assert a is not None
    M = a.permuted(F._fac.S).toarray()
    return a, num, M


def on_pattern(a: _engine.Analysis, M: np.ndarray) -> np.ndarray:
    col = np.repeat(np.arange(a.N), np.diff(a.l_indptr))
    return M[a.l_indices, col]


@pytest.mark.parametrize("name", list(MATRICES))
def test_kernels_match_the_dense_inverse_on_the_pattern_of_L(name, kernel, monkeypatch):
    a, num, M = factor(MATRICES[name]())
    want = on_pattern(a, np.linalg.inv(M))
    scale = np.abs(want).max()
    args = (a.l_indptr, a.l_indices, num.l_data, num.d)
    got = {
        "dispatch": _selinv.selected_inverse_on_factor(*args, a.l_keys),
        "numpy": _selinv.selinv_numpy(*args, a.l_keys),
        "columns": _selinv.selinv_columns(*args, a.l_keys),
    }
    if _selinv.numba_available():
        got["numba"] = _selinv.selinv_numba(*args)
    monkeypatch.setattr(_selinv, "NUMPY_BLOCK_FROM", 1)  # every supernode by the block step
    got["numpy-blocks"] = _selinv.selinv_numpy(*args, a.l_keys)
    for key, z in got.items():
        assert np.abs(z - want).max() <= 1e-12 * scale, key
    assert np.array_equal(a.supernodes, _selinv.supernodes_numpy(a.l_indptr, a.l_indices))


@pytest.mark.skipif(not _selinv.numba_available(), reason="needs numba")
@pytest.mark.parametrize("blas_from", [1, 50, 2**62])
def test_numba_kernel_with_and_without_blas_products(blas_from, monkeypatch):
    monkeypatch.setattr(_selinv, "BLAS_FROM", blas_from)
    for make in (
        lambda: shifted_grid((14, 13)),
        lambda: shifted_grid((6, 5, 7)),
        lambda: random_spd(40, 0.5, 4),
        lambda: random_spd(230, 0.9, 9),  # a supernode wider than two blocks of NB columns
    ):
        a, num, M = factor(make())
        want = on_pattern(a, np.linalg.inv(M))
        z = _selinv.selinv_numba(a.l_indptr, a.l_indices, num.l_data, num.d)
        assert np.abs(z - want).max() <= 1e-12 * np.abs(want).max()
    assert np.diff(a.supernodes).max() > 2 * _selinv.NB


@pytest.mark.parametrize("blas_from", [1, 2**62])
def test_complex_factor_matches_the_dense_complex_inverse(kernel, blas_from, monkeypatch):
    monkeypatch.setattr(_selinv, "BLAS_FROM", blas_from)
    a, _, M = factor(random_spd(30, 0.3, 5))
    E = np.random.default_rng(0).standard_normal(M.shape) * (M != 0)
    Mc = M + 0.3j * (E + E.T)
    lu = spl.splu(
        sp.csc_matrix(Mc), permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True}
    )
    L = lu.L
    L.sort_indices()
    data = np.zeros(a.nnz_L, dtype=complex)
    keys = _engine._l_keys(L.indptr.astype(np.int64), L.indices.astype(np.int64), a.N)
    data[np.searchsorted(a.l_keys, keys)] = L.data
    z = _selinv.selected_inverse_on_factor(a.l_indptr, a.l_indices, data, lu.U.diagonal(), a.l_keys)
    want = on_pattern(a, np.linalg.inv(Mc))
    assert np.abs(z - want).max() <= 1e-12 * np.abs(want).max()


def test_supernodes_are_the_maximal_runs_of_nested_columns():
    for make in (
        lambda: shifted_grid((12, 11)),
        lambda: random_spd(50, 0.1, 6),
        lambda: random_spd(20, 0.7, 7),
    ):
        a, _, _ = factor(make())
        ip, ix = a.l_indptr, a.l_indices
        cols = [set(ix[ip[j] : ip[j + 1]].tolist()) for j in range(a.N)]
        # brute force: j + 1 continues j's supernode iff struct(j) = {j} ∪ struct(j + 1)
        starts = [0] + [j + 1 for j in range(a.N - 1) if cols[j] != {j} | cols[j + 1]]
        want = np.array([*starts, a.N])
        assert np.array_equal(_selinv.supernodes_numpy(ip, ix), want)
        assert np.array_equal(_selinv.supernodes(ip, ix), want)


@pytest.mark.parametrize("name", list(MATRICES))
def test_symbolic_pattern_is_the_structure_of_the_dense_cholesky_factor(name):
    a, _, M = factor(MATRICES[name]())
    # generic values on the same pattern: the dense factor's nonzeros are the closed pattern
    rng = np.random.default_rng(8)
    G = np.where(M != 0, -rng.random(M.shape), 0.0)
    G = np.triu(G, 1) + np.triu(G, 1).T
    G += np.diag(np.abs(G).sum(1) + 1.0)
    want = sp.csc_matrix(np.tril(np.linalg.cholesky(G) != 0))
    want.sort_indices()
    Ap = sp.csc_matrix(M != 0)
    got = _symbolic.symbolic_pattern(Ap.indptr, Ap.indices, a.N) if _selinv.numba_available() else None
    for ip, ix in [(a.l_indptr, a.l_indices)] + ([got[:2]] if got is not None else []):
        assert np.array_equal(ip, want.indptr) and np.array_equal(ix, want.indices)


def test_a_pattern_that_is_not_closed_is_refused(kernel):
    a, num, _ = factor(shifted_grid((6, 6)))
    ip, ix = a.l_indptr, a.l_indices
    # drop one fill entry (in L, not in P A Pᵀ): some later clique needs it
    in_a = set((a.a_indices * a.N + np.repeat(np.arange(a.N), np.diff(a.a_indptr))).tolist())
    col = np.repeat(np.arange(a.N), np.diff(ip))
    fill = [k for k in range(ix.shape[0]) if ix[k] != col[k] and int(ix[k] * a.N + col[k]) not in in_a]
    k = fill[0]
    keep = np.ones(ix.shape[0], bool)
    keep[k] = False
    ip2 = ip - np.concatenate(([0], np.cumsum(~keep)[ip[1:] - 1]))
    ix2, data2 = ix[keep], num.l_data[keep]
    keys2 = _engine._l_keys(ip2, ix2, a.N)
    with pytest.raises(ValueError, match="not closed"):
        _selinv.selected_inverse_on_factor(ip2, ix2, data2, num.d, keys2)


def test_the_ordering_is_superlus_minimum_degree_order():
    A = shifted_grid((20, 17))
    idx = A.indices().numpy()
    M = sp.csc_matrix((A.values().numpy(), (idx[0], idx[1])), shape=A.shape)
    lu = spl.splu(M, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    a, _, _ = factor(A)
    assert np.array_equal(a.perm, lu.perm_c)
    L = lu.L
    L.sort_indices()
    assert a.nnz_L == L.nnz  # the grid Laplacian cancels nothing: the same factor pattern


def test_a_first_call_factors_once(kernel, monkeypatch):
    calls = []
    real = _engine._splu

    def counting(M, order):
        calls.append(order)
        return real(M, order)

    monkeypatch.setattr(_engine, "_splu", counting)
    tc.clear_cache()
    A = shifted_grid((7, 9)).requires_grad_()
    ld = tc.sparse_logdet(A)
    ld.backward()
    # the numba path finds the pattern of L from the elimination tree (one factorisation, the
    # numeric one); the NumPy path factors generic values for it too
    assert calls == (["NATURAL"] if kernel == "numba" else ["NATURAL", "NATURAL"])
    calls.clear()
    tc.sparse_logdet(A.detach() * 2)
    assert calls == ["NATURAL"]  # a second call on the pattern: numeric phase only
    want = torch.logdet(A.detach().to_dense())
    torch.testing.assert_close(ld.detach(), want, rtol=1e-12, atol=0)


@pytest.mark.skipif(not _selinv.numba_available(), reason="needs numba")
def test_blas_threads_are_restored_after_the_kernel(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(_selinv, "BLAS_FROM", 1)
    a, num, M = factor(shifted_grid((8, 9)))

    def blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    z = _selinv.selinv_numba(a.l_indptr, a.l_indices, num.l_data, num.d)
    assert blas_threads() == before
    want = on_pattern(a, np.linalg.inv(M))
    assert np.abs(z - want).max() <= 1e-12 * np.abs(want).max()
