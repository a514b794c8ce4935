"""IC(0)-preconditioned CG in the split (Eisenstat) form: one compiled loop, no product with A.

Where IC(0) keeps ``A``'s own off-diagonal entries (5/7-point stencils) the single-column CPU loop
runs CG on ``L⁻¹ A L⁻ᵀ``.  It must be PCG with the same preconditioner: the same iterates up to
rounding (so the same iteration count as the block loop, which applies ``M⁻¹`` by triangular
solves) and the answer of a direct solve (SciPy).  Where the form does not hold it must not be
used.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsgu_krylov import IC0, linear_cg, sparse_generic_solve
from tsgu_krylov._compiled import SplitFactor, use_compiled
from tsgu_ops.testing import diffusion_operator, grid_operator

pytestmark = pytest.mark.skipif(
    not use_compiled(torch.zeros(1, dtype=torch.float64)), reason="the split form is a compiled (numba) loop"
)

sla = pytest.importorskip("scipy.sparse.linalg")
sp = pytest.importorskip("scipy.sparse")


def _scipy(A: torch.Tensor) -> object:
    A = A.to_sparse_csr()
    return sp.csr_matrix(
        (A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=A.shape
    )


def _rhs(n: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "make",
    [lambda: grid_operator((7, 6, 5)), lambda: grid_operator((12, 9)), lambda: diffusion_operator((6, 6, 6))],
)
@pytest.mark.parametrize("scale", [1e-12, 1.0, 1e12])
def test_split_cg_is_pcg(make, scale, monkeypatch):
    runs = []
    original = SplitFactor.cg
    monkeypatch.setattr(SplitFactor, "cg", lambda self, *a: runs.append(1) or original(self, *a))
    A = make().to_sparse_csr()
    b = _rhs(A.shape[0]) * scale
    M = IC0(A)
    assert M.split_form(A) is not None  # the stencil keeps its off-diagonal entries
    x, info = linear_cg(A, b, tolerance=1e-10, max_iter=1000, preconditioner=M, return_info=True)
    # the block loop (two columns) applies M⁻¹ by triangular solves and multiplies by A
    X2, info2 = linear_cg(
        A, torch.stack([b, b], 1), tolerance=1e-10, max_iter=1000, preconditioner=M, return_info=True
    )
    assert runs == [1]  # the vector took the split loop, the block did not
    assert abs(info.iterations - info2.iterations) <= 1
    ref = sla.spsolve(_scipy(A).tocsc(), b.numpy())
    np.testing.assert_allclose(x.numpy(), ref, rtol=0, atol=1e-8 * np.abs(ref).max())
    assert float(info.true_relative_residual) <= 1e-10
    torch.testing.assert_close(x, X2[:, 0], rtol=1e-7, atol=1e-7 * float(x.abs().max()))


def test_split_cg_gradient_matches_direct_solve():
    A = grid_operator((5, 4, 3)).to_sparse_csr().requires_grad_()
    b = _rhs(A.shape[0]).requires_grad_()
    x = sparse_generic_solve(A, b, "cg", rtol=1e-12, preconditioner="ic0")
    g = _rhs(A.shape[0], seed=1)
    (x * g).sum().backward()
    S = _scipy(A.detach()).tocsc()
    gb = sla.spsolve(S, g.numpy())  # A symmetric: the adjoint solve
    np.testing.assert_allclose(b.grad.numpy(), gb, rtol=1e-8, atol=1e-10)
    xr = sla.spsolve(S, b.detach().numpy())
    crow, col = A.crow_indices(), A.col_indices()
    rows = torch.repeat_interleave(torch.arange(A.shape[0]), crow.diff())
    expected = -gb[rows.numpy()] * xr[col.numpy()]
    np.testing.assert_allclose(A.grad.values().numpy(), expected, rtol=1e-7, atol=1e-10)


def test_split_cg_float32():
    A = grid_operator((8, 8, 8)).to_sparse_csr().to(torch.float32)
    b = _rhs(A.shape[0], torch.float32)
    x, info = linear_cg(A, b, tolerance=1e-5, max_iter=500, preconditioner=IC0(A), return_info=True)
    ref = sla.spsolve(_scipy(A).astype(np.float64).tocsc(), b.double().numpy())
    np.testing.assert_allclose(x.double().numpy(), ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    assert info.reason in ("converged", "converged_atol")


def test_split_form_only_where_it_holds():
    # a 9-point-like pattern: rows share columns left of the diagonal, IC(0) changes l_ij
    A = grid_operator((6, 6)).to_dense()
    n = A.shape[0]
    for i in range(n - 7):
        A[i, i + 7] = A[i + 7, i] = -0.2
    A = A.to_sparse_csr()
    M = IC0(A)
    assert M.split_form(A) is None
    b = _rhs(n)
    x, _info = linear_cg(A, b, tolerance=1e-10, max_iter=500, preconditioner=M, return_info=True)
    np.testing.assert_allclose(x.numpy(), sla.spsolve(_scipy(A).tocsc(), b.numpy()), atol=1e-8)
    # IC(0) of another matrix with other off-diagonal entries: not the split form of A
    B = grid_operator((6, 6), 0.0).to_sparse_csr()
    assert IC0(B * 2.0).split_form(B) is None


def test_split_form_of_a_shifted_matrix():
    # IC(0) of A + σI keeps A's off-diagonal entries: valid for CG on A, and the same PCG
    A = grid_operator((6, 5, 4)).to_sparse_csr()
    n = A.shape[0]
    shifted = (A.to_sparse_coo() + 0.5 * torch.eye(n, dtype=A.dtype).to_sparse()).to_sparse_csr()
    M = IC0(shifted)
    assert M.split_form(A) is not None
    b = _rhs(n)
    x, info = linear_cg(A, b, tolerance=1e-10, max_iter=500, preconditioner=M, return_info=True)
    _, info2 = linear_cg(
        A, torch.stack([b, b], 1), tolerance=1e-10, max_iter=500, preconditioner=M, return_info=True
    )
    assert abs(info.iterations - info2.iterations) <= 1
    np.testing.assert_allclose(x.numpy(), sla.spsolve(_scipy(A).tocsc(), b.numpy()), atol=1e-8)


def test_split_cg_non_finite_and_limits():
    A = grid_operator((6, 6, 6)).to_sparse_csr()
    b = _rhs(A.shape[0])
    M = IC0(A)
    x, info = linear_cg(
        A, b, tolerance=1e-10, max_iter=3, preconditioner=M, return_info=True, on_failure="ignore"
    )
    _, info2 = linear_cg(
        A,
        torch.stack([b, b], 1),
        tolerance=1e-10,
        max_iter=3,
        preconditioner=M,
        return_info=True,
        on_failure="ignore",
    )
    assert info.iterations == 3 and info.reason == "max_iter"
    torch.testing.assert_close(
        info.true_relative_residual[0], info2.true_relative_residual[0], rtol=1e-6, atol=0
    )
    bad = b.clone()
    bad[5] = float("nan")
    x, info = linear_cg(A, bad, tolerance=1e-10, preconditioner=M, return_info=True, on_failure="ignore")
    assert info.reason == "non_finite" and bool(x.isnan().all())
    inputs = b.clone()
    linear_cg(A, b, tolerance=1e-10, preconditioner=M)
    assert torch.equal(b, inputs)


def _thinned(shape: tuple[int, ...], drop: float, seed: int) -> torch.Tensor:
    # a grid Laplacian with a random symmetric choice of couplings removed (the diagonal kept
    # dominant): rows of every length from 0 to the stencil's, near terms (i, i-1) missing at random
    A = grid_operator(shape).to_dense()
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(A.shape, generator=g) < drop
    mask = torch.triu(mask, 1)
    mask = mask | mask.T
    A = torch.where(mask, 0.0, A)
    return A.to_sparse_csr()


def _arrow(n: int) -> torch.Tensor:
    # the last row and column full: IC(0) keeps A's entries, but one row holds n - 1 of them
    A = torch.eye(n, dtype=torch.float64) * n
    A[-1, :-1] = A[:-1, -1] = -0.5
    return A.to_sparse_csr()


@pytest.mark.parametrize(
    "make, split",
    [
        (lambda: grid_operator((40,)).to_sparse_csr(), True),  # tridiagonal: only near terms
        (lambda: _thinned((9, 8), 0.3, 0), True),
        (lambda: _thinned((5, 6, 7), 0.5, 1), True),
        (lambda: _arrow(60), False),  # one long row: not worth the padded layout
    ],
)
def test_split_cg_on_irregular_rows(make, split):
    A = make()
    M = IC0(A)
    assert (M.split_form(A) is not None) == split
    b = _rhs(A.shape[0], seed=3)
    x, info = linear_cg(A, b, tolerance=1e-11, max_iter=1000, preconditioner=M, return_info=True)
    X2, info2 = linear_cg(
        A, torch.stack([b, b], 1), tolerance=1e-11, max_iter=1000, preconditioner=M, return_info=True
    )
    assert abs(info.iterations - info2.iterations) <= 1
    ref = sla.spsolve(_scipy(A).tocsc(), b.numpy())
    np.testing.assert_allclose(x.numpy(), ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    torch.testing.assert_close(x, X2[:, 0], rtol=1e-7, atol=1e-7 * float(x.abs().max()))


@pytest.mark.parametrize(
    "make",
    [
        lambda: grid_operator((6, 5, 4)).to_sparse_csr(),
        lambda: grid_operator((40,)).to_sparse_csr(),
        lambda: _thinned((9, 8), 0.3, 2),
        lambda: _arrow(30),
    ],
)
def test_vector_applications_match_dense_triangular_solves(make):
    # M⁻¹ r by the prepared factor's chain layout, and (once prepared) by the split form's
    # arrays, against dense triangular solves with the factor L
    A = make()
    M = IC0(A)
    L = M.L.to_dense()
    r = _rhs(A.shape[0], seed=4).view(-1, 1)
    y = torch.linalg.solve_triangular(L, r, upper=False)
    ref = torch.linalg.solve_triangular(L.T, y, upper=True)
    torch.testing.assert_close(M(r), ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))
    split = M.split_form(A)
    out = M(r)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))
    if split is not None:
        torch.testing.assert_close(
            split.solve(r.view(-1)).view(-1, 1), ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max())
        )
    # a block takes the CSR loops: the same answer column by column
    R2 = torch.cat([r, 2 * r], 1)
    torch.testing.assert_close(M(R2), torch.cat([ref, 2 * ref], 1), rtol=1e-12, atol=1e-11)


def _lower_with_width(n: int, width: int, seed: int) -> torch.Tensor:
    # a lower triangle: every row its diagonal, the previous row (the chain) and up to `width`
    # entries further left at offsets of a band (so that Fᵀ's rows are as short), some rows
    # fewer (the padding)
    g = np.random.default_rng(seed)
    offsets = np.array([2, 3, 5, 7, 11, 13, 17, 19, 23])[:width]
    rows, cols = [np.arange(n), np.arange(1, n)], [np.arange(n), np.arange(n - 1)]
    for i in range(2, n):
        far = i - offsets[(offsets <= i) & (g.random(width) < 0.8)]
        rows.append(np.full(far.size, i))
        cols.append(far)
    r, c = np.concatenate(rows), np.concatenate(cols)
    v = np.where(r == c, 2.0 + g.random(r.size), g.uniform(-0.5, 0.5, r.size))
    L = sp.csr_matrix((v, (r, c)), shape=(n, n))
    L.sort_indices()
    return torch.sparse_csr_tensor(
        torch.from_numpy(L.indptr.astype(np.int64)),
        torch.from_numpy(L.indices.astype(np.int64)),
        torch.from_numpy(L.data),
        (n, n),
    )


@pytest.mark.parametrize("width", [0, 1, 2, 3, 4, 5, 8])
def test_chain_solves_of_every_row_width_match_scipy(width):
    # each row width compiles its own copy of the passes (the width a constant): every one must
    # solve F x = b and Fᵀ x = b as SciPy does
    from tsgu_krylov._compiled import CompiledFactor

    F = _lower_with_width(300, width, seed=width)
    prepared = CompiledFactor(F)
    Fs = _scipy(F)
    b = _rhs(300, seed=width).view(-1, 1)
    for transpose in (False, True):
        x = prepared.solve(b, transpose)
        assert prepared.chain[transpose] is not None  # the padded layout took it
        M = Fs.T.tocsr() if transpose else Fs
        ref = sla.spsolve_triangular(M, b.numpy().ravel(), lower=not transpose)
        np.testing.assert_allclose(x.numpy().ravel(), ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_split_cg_with_different_row_widths_of_f_and_its_transpose():
    # a binary tree's Laplacian (no triangles: IC(0) keeps its entries), numbered as a heap: F
    # holds one entry per row (the parent), Fᵀ two (the children)
    g = np.random.default_rng(5)
    n = 400
    child = np.arange(1, n)
    parent = (child - 1) // 2
    w = g.uniform(0.5, 2.0, n - 1)
    W = sp.coo_matrix((w, (child, parent)), shape=(n, n))
    Lap = sp.diags(np.asarray((W + W.T).sum(1)).ravel() + 0.1) - W - W.T
    Lap = Lap.tocsr()
    Lap.sort_indices()
    A = torch.sparse_csr_tensor(
        torch.from_numpy(Lap.indptr.astype(np.int64)),
        torch.from_numpy(Lap.indices.astype(np.int64)),
        torch.from_numpy(Lap.data),
        (n, n),
    )
    M = IC0(A)
    split = M.split_form(A)
    assert split is not None and split.widths[0] != split.widths[1]
    b = _rhs(n, seed=6)
    x = linear_cg(A, b, tolerance=1e-11, max_iter=2000, preconditioner=M)
    ref = sla.spsolve(Lap.tocsc(), b.numpy())
    np.testing.assert_allclose(x.numpy(), ref, rtol=0, atol=1e-9 * np.abs(ref).max())
