"""Drop-in behaviour of torchsparsegradutils 0.2.7 that programs rely on (spec §2.2–2.4).

* ``linear_cg``: a small system that converges exactly (the residual vanishes in at most ``n``
  steps) returns its solution instead of raising a breakdown error.
* ``bicgstab``: a callable operator may answer ``(n,)`` for an ``(n, 1)`` block and ``(n, 1)`` for
  a vector; ``matvec_max`` bounds every operator application, the initial residual included; a
  warm start within tolerance costs one application and no iteration; the tolerance is per column,
  relative to that column's right-hand side (``atol`` alone for a zero column).  Counted with an
  operator that records its calls.
* ``minres(shifts=...)``: every shifted system ``(A + σ I) x = b`` is solved accurately, as 0.2.7
  does on small systems, checked against dense solves.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from tsgu_krylov import BICGSTABSettings, ConvergenceWarning, MINRESSettings, bicgstab, linear_cg, minres
from tsgu_ops.testing import build_case, grid_operator

F64 = torch.float64


def random_tridiagonal(n: int, dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    """A diagonally dominant SPD tridiagonal matrix (dense)."""
    d = 2 + torch.rand(n, dtype=dtype, generator=g)
    o = -torch.rand(n - 1, dtype=dtype, generator=g)
    return torch.diag(d) + torch.diag(o, 1) + torch.diag(o, -1)


class Counting:
    """An operator callable that records the shapes it is applied to."""

    def __init__(self, D: torch.Tensor, answer: str = "same"):
        self.D, self.answer, self.calls = D, answer, []

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(X.shape))
        Y = self.D @ X
        if self.answer == "vector":
            return Y.reshape(-1)
        if self.answer == "column":
            return Y.reshape(-1, 1)
        return Y


# --- linear_cg: exact convergence -------------------------------------------------------------------


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cg_exact_convergence_of_a_small_tridiagonal_system_is_success(dtype, batched):
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        D = random_tridiagonal(5, dtype, g)
        b = torch.randn(5, dtype=dtype, generator=g)
        if batched:
            D = torch.stack([D, random_tridiagonal(5, dtype, g), D.T.clone()])
            b = torch.stack([b, -b, 2 * b]).unsqueeze(-1)
        ref = torch.linalg.solve(D.double(), b.double()).to(dtype)
        for tolerance in (None, 0.0):  # tolerance 0 cannot stop before the residual vanishes
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # tolerance 0: roundoff is left
                x, info = linear_cg(
                    D.to_sparse(), b, tolerance=tolerance, max_iter=60, max_tridiag_iter=20, return_info=True
                )
            tol = 1e-5 if dtype == torch.float32 else 1e-12
            torch.testing.assert_close(x, ref, rtol=tol, atol=tol)
            if tolerance is None:
                assert info.reason == "converged"
            else:  # the recursive residual may keep shrinking below roundoff until max_iter
                assert info.reason in ("converged", "recursive_converged", "max_iter")


# --- bicgstab ---------------------------------------------------------------------------------------


def test_bicgstab_callable_may_answer_a_vector_for_a_column_and_vice_versa():
    A = grid_operator((4, 4), 0.5, F64).to_dense()
    b = torch.linspace(-1, 1, 16, dtype=F64)
    ref = torch.linalg.solve(A, b)
    op = Counting(A, "vector")  # (n, 1) block in, (n,) out
    x = bicgstab(op, b.unsqueeze(-1), rtol=1e-12, atol=0.0)
    assert x.shape == (16, 1) and set(op.calls) == {(16, 1)}
    torch.testing.assert_close(x.squeeze(-1), ref)
    op = Counting(A, "column")  # a vector right-hand side: the callable sees vectors, answers (n, 1)
    x = bicgstab(op, b, rtol=1e-12, atol=0.0)
    assert x.shape == (16,) and set(op.calls) == {(16,)}
    torch.testing.assert_close(x, ref)
    # a closure written for vectors only (torch.mv), as 0.2.7 allowed, with a vector preconditioner
    d = torch.diagonal(A)
    x = bicgstab(
        lambda v: torch.mv(A, v),
        b,
        settings=BICGSTABSettings(reltol=1e-12, abstol=0.0, precon=lambda v: v / d),
    )
    torch.testing.assert_close(x, ref)


@pytest.mark.parametrize("budget", range(1, 13))
def test_bicgstab_matvec_max_counts_every_operator_application(budget):
    A = grid_operator((5, 5), 1.0, F64).to_dense()
    op = Counting(A)
    B = torch.ones(25, 2, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _, info = bicgstab(
            op, B, settings=BICGSTABSettings(matvec_max=budget, reltol=1e-14), return_info=True
        )
    assert 1 <= len(op.calls) <= budget  # the initial residual counts, and nothing runs past the budget
    assert info.matvecs == len(op.calls)


def test_bicgstab_default_budget_solves_in_n_steps_and_is_counted():
    A = grid_operator((3, 3), 0.5, F64).to_dense()
    op = Counting(A)
    x, info = bicgstab(op, torch.ones(9, dtype=F64), rtol=1e-12, atol=0.0, return_info=True)
    torch.testing.assert_close(x, torch.linalg.solve(A, torch.ones(9, dtype=F64)))
    assert info.matvecs == len(op.calls) <= 2 * 9 + 2


def test_bicgstab_warm_start_within_tolerance_costs_one_application():
    A = grid_operator((5, 5), 0.5, F64).to_dense()
    B = torch.randn(25, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    X0 = torch.linalg.solve(A, B)
    op = Counting(A)
    X, info = bicgstab(op, B, initial_guess=X0, return_info=True)
    assert len(op.calls) == 1 and info.iterations == 0 and info.matvecs == 1
    assert torch.equal(X, X0) and X is not X0  # a copy of the guess, which is not modified


def test_bicgstab_tolerance_is_per_column_relative_and_absolute_for_a_zero_column():
    A = grid_operator((5, 5), 0.5, F64).to_dense()
    g = torch.Generator().manual_seed(1)
    B = torch.randn(25, 3, dtype=F64, generator=g)
    B[:, 0] *= 1e6
    B[:, 1] *= 1e-6
    B[:, 2] = 0.0
    X0 = torch.zeros(25, 3, dtype=F64)
    X0[:, 2] = 1e-12 * torch.randn(25, dtype=F64, generator=g)  # residual ~1e-11 ≤ atol
    op = Counting(A)
    X, info = bicgstab(op, B, x0=X0, rtol=1e-9, atol=1e-8, return_info=True)
    res = torch.linalg.vector_norm(B - A @ X, dim=0)
    threshold = torch.clamp(1e-9 * torch.linalg.vector_norm(B, dim=0), min=1e-8)
    assert bool((res <= threshold).all()), res
    assert bool(info.converged.all())
    torch.testing.assert_close(X[:, 2], X0[:, 2])  # within atol from the start: left as it was
    # with atol = 0, the small column is still solved to 1e-9 relative to its own norm (not to the
    # largest column's, which would accept zero)
    X = bicgstab(A, B[:, 1], rtol=1e-9, atol=0.0)
    assert float(torch.linalg.vector_norm(B[:, 1] - A @ X)) <= 1e-9 * float(torch.linalg.vector_norm(B[:, 1]))


# --- minres with shifts -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [5, 8, 20])
def test_minres_solves_every_shifted_system_accurately_by_default(n):
    g = torch.Generator().manual_seed(n)
    M = torch.randn(n, n, dtype=F64, generator=g)
    A = M @ M.T / n + 0.1 * torch.eye(n, dtype=F64)
    b = torch.randn(n, dtype=F64, generator=g)
    shifts = torch.tensor([0.0, 0.5, 1.0, 2.0, 10.0], dtype=F64)
    X, info = minres(A.to_sparse(), b, shifts=shifts, return_info=True)
    assert X.shape == (5, n) and bool(info.converged.all())
    for s, x in zip(shifts, X):
        ref = torch.linalg.solve(A + s * torch.eye(n, dtype=F64), b)
        torch.testing.assert_close(x, ref, rtol=1e-8, atol=1e-10)
    # float32: as accurate as float32 allows
    X32 = minres(A.float().to_sparse(), b.float(), shifts=shifts.float())
    for s, x in zip(shifts, X32):
        ref = torch.linalg.solve(A + s * torch.eye(n, dtype=F64), b)
        torch.testing.assert_close(x.double(), ref, rtol=2e-4, atol=1e-5)


def test_minres_shifts_with_indefinite_systems_blocks_and_settings():
    case = build_case(3, (12, 12), 0.3, torch.sparse_csr, torch.int64, F64, "symmetric")
    B = torch.randn(12, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    shifts = torch.tensor([-1.5, 0.0, 1.0, 4.0], dtype=F64)
    X = minres(case.sparse, B, shifts=shifts, value=0.5, rtol=1e-12)
    for s, x in zip(shifts, X):
        ref = torch.linalg.solve(0.5 * case.dense + s * torch.eye(12, dtype=F64), B)
        torch.testing.assert_close(x, ref, rtol=1e-8, atol=1e-9)
    # a tolerance set in the 0.2.7 settings tuple is honoured as the residual tolerance
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        X, info = minres(
            case.sparse, B, shifts=shifts, settings=MINRESSettings(minres_tolerance=1e-2), return_info=True
        )
    assert info.tolerance == 1e-2
