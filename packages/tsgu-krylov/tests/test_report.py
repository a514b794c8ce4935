"""One report for every solver: SolveInfo (CGInfo is one), reason a str enum with a message."""

from __future__ import annotations

import pytest
import torch

from tsgu_krylov import CGInfo, SolveInfo, SolveReason, bicgstab, gmres, linear_cg, lsmr, minres
from tsgu_ops.testing import grid_operator

F64 = torch.float64


def _system(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    A = grid_operator((n, n)).to_sparse_csr()
    B = torch.randn(n * n, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    return A, B


@pytest.mark.parametrize(
    "call",
    [
        lambda A, B: linear_cg(A, B, rtol=1e-10, return_info=True),
        lambda A, B: minres(A, B, rtol=1e-10, return_info=True),
        lambda A, B: bicgstab(A, B, rtol=1e-10, atol=0.0, return_info=True),
        lambda A, B: gmres(A, B, rtol=1e-10, return_info=True),
        lambda A, B: lsmr(A, B, atol=1e-12, btol=1e-12, return_info=True),
    ],
    ids=["cg", "minres", "bicgstab", "gmres", "lsmr"],
)
def test_every_solver_reports_a_solve_info_whose_residual_is_the_true_one(call) -> None:
    A, B = _system()
    out = call(A, B)
    X, info = out[0], out[-1]
    assert isinstance(info, SolveInfo)
    assert isinstance(info.reason, SolveReason) and info.reason == "converged"
    assert info.reason.message and str(info.reason) == "converged"
    true = torch.linalg.vector_norm(B - A.to_dense() @ X, dim=0) / torch.linalg.vector_norm(B, dim=0)
    torch.testing.assert_close(info.relative_residual, true, rtol=1e-3, atol=1e-12)
    assert bool(info.converged.all()) and not bool(info.breakdown.any())
    assert info.iterations > 0 and info.matvecs >= info.iterations


def test_cg_info_keeps_its_fields_and_is_a_solve_info() -> None:
    A, B = _system()
    _, info = linear_cg(A, B, rtol=1e-10, return_info=True)
    assert isinstance(info, CGInfo) and isinstance(info, SolveInfo)
    assert info.true_relative_residual is info.relative_residual
    assert info.recursive_relative_residual is not None and info.recursive_relative_residual.shape == (2,)
    assert info.breakdown.dtype == torch.bool and not bool(info.breakdown.any())


def test_lsmr_reports_max_iter_and_the_stopping_estimate() -> None:
    A, B = _system(8)
    X, itn, info = lsmr(A, B, maxiter=2, return_info=True)
    assert itn == 2 and info.iterations == 2 and info.matvecs == 1 + 2 * 2
    assert info.reason == SolveReason.MAX_ITER and not bool(info.converged.any())
    true = torch.linalg.vector_norm(B - A.to_dense() @ X, dim=0) / torch.linalg.vector_norm(B, dim=0)
    torch.testing.assert_close(info.relative_residual, true, rtol=1e-6, atol=1e-12)


def test_lsmr_without_return_info_keeps_its_0_2_7_pair() -> None:
    A, B = _system()
    out = lsmr(A, B[:, 0])
    assert isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], int)


def test_lsmr_zero_right_hand_side_is_solved_at_once() -> None:
    A, _ = _system()
    X, itn, info = lsmr(A, torch.zeros(36, dtype=F64), return_info=True)
    assert itn == 0 and info.reason == "converged" and bool((X == 0).all())


def test_lsmr_non_finite_column_is_reported() -> None:
    A, B = _system()
    B = B.clone()
    B[0, 1] = float("nan")
    X, _, info = lsmr(A, B, on_failure="ignore", return_info=True)
    assert info.reason == SolveReason.NON_FINITE
    assert info.non_finite.tolist() == [False, True] and bool(torch.isnan(X[:, 1]).all())


def test_reason_members_are_ordered_and_all_explained() -> None:
    assert [r.value for r in SolveReason][:2] == ["converged", "converged_atol"]
    assert all(r.message for r in SolveReason)
    assert SolveReason("max_iter") is SolveReason.MAX_ITER
