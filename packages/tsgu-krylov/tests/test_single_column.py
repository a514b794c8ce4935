"""One right-hand side on the CPU runs a scalar copy of the block loop (CG, BiCGSTAB).

The copy must behave exactly as the block loop: same answers (checked against dense solves), same
iteration and operator-application counts, same breakdown errors and non-finite reports.  The
block loop is reached with the same column twice (``(n, 2)``), the scalar one with ``(n,)``.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from tsgu_krylov import BICGSTABSettings, bicgstab, linear_cg
from tsgu_ops.testing import grid_operator


def _system(convection: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    A = grid_operator((6, 6, 6), convection).to_sparse_csr()
    b = torch.randn(A.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return A, b


def _both(solver, A, b, **kw):
    x1, i1 = solver(A, b, return_info=True, on_failure="ignore", **kw)
    x2, i2 = solver(A, torch.stack([b, b], 1), return_info=True, on_failure="ignore", **kw)
    return x1, i1, x2, i2


CG_SETTINGS = [
    {"rtol": 1e-10},
    {"rtol": 1e-6, "min_iter": 40},
    {"rtol": 1e-10, "max_iter": 7},
    {"rtol": 1e-8, "convergence_reduction": "mean"},
    {"rtol": 1e-8, "check_every": 4},
    {"rtol": 1e-12, "atol": 1e-3},
    {"rtol": 1e-10, "preconditioner": torch.full((216,), 1 / 6.0, dtype=torch.float64).diag().to_sparse()},
]


@pytest.mark.parametrize("kw", CG_SETTINGS)
def test_cg_single_column_matches_block_loop_and_dense_solve(kw):
    A, b = _system(0.0)
    x1, i1, x2, i2 = _both(linear_cg, A, b, **kw)
    assert (i1.iterations, i1.matvecs, i1.reason) == (i2.iterations, i2.matvecs, i2.reason)
    torch.testing.assert_close(x1, x2[:, 0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(i1.recursive_relative_residual, i2.recursive_relative_residual[:1])
    if i1.reason in ("converged", "converged_atol"):  # atol: the floor decided
        expected = torch.linalg.solve(A.to_dense(), b)
        tol = kw["rtol"] * 1e3 + (kw.get("atol", 0.0) / float(b.norm())) * 1e3
        assert float((x1 - expected).norm() / expected.norm()) < max(tol, 1e-8)


def test_cg_single_column_counts_operator_applications():
    A, b = _system(0.0)
    calls = []

    def op(X):
        calls.append(tuple(X.shape))
        return A @ X

    _x, info = linear_cg(op, b, rtol=1e-10, return_info=True)
    assert len(calls) == info.matvecs == info.iterations + 2
    assert set(calls) == {(216, 1)}


def test_cg_single_column_breakdown_error():
    A = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64).to_sparse_csr()
    b = torch.tensor([1.0, 1.0], dtype=torch.float64)
    with pytest.raises(RuntimeError, match="p\\^T A p"):
        linear_cg(A, b, rtol=1e-10)
    with pytest.raises(RuntimeError, match="p\\^T A p"):
        linear_cg(A, torch.stack([b, b], 1), rtol=1e-10)


def test_cg_single_column_non_finite_operator():
    A, b = _system(0.0)
    v = A.values().clone()
    v[5] = float("nan")
    An = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), v, A.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x1, i1, x2, i2 = _both(linear_cg, An, b, rtol=1e-10)
    assert i1.reason == i2.reason
    assert bool(torch.isnan(x1).all()) and bool(torch.isnan(x2).all())


BICG_SETTINGS = [
    {"rtol": 1e-10, "atol": 0.0},
    {"rtol": 1e-6},
    {"rtol": 1e-10, "atol": 0.0, "max_iter": 5},
    {"rtol": 1e-12, "atol": 0.0, "settings": BICGSTABSettings(matvec_max=20)},
    {"rtol": 1e-12, "atol": 0.0, "settings": BICGSTABSettings(matvec_max=21)},
    {"rtol": 1e-10, "atol": 0.0, "preconditioner": torch.full((216,), 1 / 12.0, dtype=torch.float64).diag()},
]


@pytest.mark.parametrize("kw", BICG_SETTINGS)
def test_bicgstab_single_column_matches_block_loop_and_dense_solve(kw):
    A, b = _system(1.0)
    x1, i1, x2, i2 = _both(bicgstab, A, b, **kw)
    assert (i1.iterations, i1.matvecs, i1.reason) == (i2.iterations, i2.matvecs, i2.reason)
    torch.testing.assert_close(x1, x2[:, 0], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(i1.relative_residual, i2.relative_residual[:1], rtol=1e-4, atol=1e-14)
    if i1.reason in ("converged", "converged_atol"):  # atol: the floor decided
        expected = torch.linalg.solve(A.to_dense(), b)
        assert float((x1 - expected).norm() / expected.norm()) < 1e-4
        assert float((b - A @ x1).norm() / b.norm()) <= kw["rtol"] or kw.get("atol", 1e-8) > 0


def test_bicgstab_single_column_breakdown_is_reported():
    # r̂ᵀ A p = 0 at the first step: a rotation (A r̂ ⟂ r̂)
    A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64).to_sparse_csr()
    b = torch.tensor([1.0, 0.0], dtype=torch.float64)
    _x1, i1, _x2, i2 = _both(bicgstab, A, b, rtol=1e-10, atol=0.0)
    assert i1.reason == i2.reason == "breakdown"
    assert bool(i1.breakdown.all()) and bool(i2.breakdown.all())
