"""Device loops (``loop="device"``) against the host loops, and their pinned kernel/sync budgets.

The device loops keep every scalar on the device and look at the host every ``check_every``
iterations; they must return what the host loops return (iterate, iteration and matvec counts,
convergence flags, reason, residuals), which in turn are checked against SciPy and dense solves in
test_solvers.py.  The budgets are counted on the CPU with :func:`tsgu_ops.testing.count_kernels`
(DESIGN.md rule 8): a regression in the number of kernel launches or host synchronisations per
iteration fails here.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

from tsgu_krylov import IC0, ILU0, BICGSTABSettings, Jacobi, bicgstab, gmres, linear_cg, lsmr, minres
from tsgu_krylov._device_bicgstab import BICGSTAB_CHECK_EVERY
from tsgu_krylov._device_gmres import GMRES_CHECK_EVERY
from tsgu_krylov._device_loop import DEVICE_CHECK_EVERY
from tsgu_krylov._device_minres import MINRES_CHECK_EVERY
from tsgu_ops.testing import count_kernels, grid_operator

F64 = torch.float64


def _rhs(n: int, k: int | None, seed: int = 0, batch: tuple[int, ...] = ()) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, n) if k is None else (*batch, n, k)
    return torch.randn(shape, dtype=F64, generator=g)


def _poisson(shape: tuple[int, ...] = (6, 7)) -> torch.Tensor:
    return grid_operator(shape).to_sparse_csr()


def _batched_spd(b: int = 3, n: int = 30) -> torch.Tensor:
    """``(b, n, n)`` COO: a differently scaled and shifted 1-D Laplacian per item."""
    L = grid_operator((n,)).to_dense()
    mats = [(1.0 + i) * L + 0.1 * i * torch.eye(n, dtype=F64) for i in range(b)]
    return torch.stack(mats).to_sparse()


def _info_fields(info: Any) -> dict[str, Any]:
    return {f.name: getattr(info, f.name) for f in dataclasses.fields(info)}


def assert_same_solve(
    solver: Callable[..., Any], *args: Any, x_rtol: float = 1e-12, count_slack: int = 0, **kwargs: Any
) -> Any:
    """Run ``solver`` with ``loop="device"`` and ``loop="host"``; every output must agree.

    The host loop runs with its CPU default ``check_every=1`` (the device loop reports the
    iteration count of that loop whatever its own ``check_every``).  The iterate to ``x_rtol`` (1e-12) relative to its largest entry,
    integers, strings and flags exactly, float report fields (relative residuals, already
    dimensionless) to 1e-6 relative or 1e-12 absolute: a residual near 1e-12 is the rounding of
    the iterate, which the two loops do in different orders.  ``count_slack``: iteration and
    product counts may differ by this much where the stopping test sits at the rounding level
    (a tolerance of 1e-15, an ill-conditioned least-squares problem; one iteration more or
    less, and a restart's products): there the two rounding
    orders decide on different sides of the test, depending on the CPU's vector width.  Returns the
    device run's output.
    """
    host_kwargs = {k: v for k, v in kwargs.items() if k != "check_every"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dev = solver(*args, loop="device", **kwargs)
        host = solver(*args, loop="host", **host_kwargs)
    x_d, x_h = (dev[0], host[0]) if isinstance(dev, tuple) else (dev, host)
    assert x_d.shape == x_h.shape
    nan_d, nan_h = torch.isnan(x_d), torch.isnan(x_h)
    assert torch.equal(nan_d, nan_h)
    scale = x_h.nan_to_num().abs().amax().clamp_min(1e-300)
    diff = (x_d - x_h).nan_to_num().abs().amax()
    assert diff <= x_rtol * scale, f"iterates differ by {float(diff / scale):.2e} (relative)"
    if isinstance(dev, tuple):
        for a, b in zip(dev[1:], host[1:]):
            if dataclasses.is_dataclass(a):
                fa, fb = _info_fields(a), _info_fields(b)
                for name in fa:
                    va, vb = fa[name], fb[name]
                    if isinstance(va, torch.Tensor) and va.is_floating_point():
                        assert torch.allclose(va, vb, rtol=1e-6, atol=max(1e-12, x_rtol), equal_nan=True), (
                            name,
                            va,
                            vb,
                        )
                    elif isinstance(va, torch.Tensor):
                        if count_slack and not va.dtype == torch.bool:
                            assert (va - vb).abs().max() <= count_slack, (name, va, vb)
                        else:
                            assert torch.equal(va, vb), (name, va, vb)
                    elif count_slack and isinstance(va, int) and not isinstance(va, bool):
                        assert abs(va - vb) <= count_slack, (name, va, vb)
                    else:
                        assert va == vb, (name, va, vb)
            elif count_slack and isinstance(a, int) and not isinstance(a, bool):
                assert abs(a - b) <= count_slack, (a, b)
            else:
                assert a == b
    return dev


# --------------------------------------------------------------------------------------- CG


def _cg(*args: Any, **kwargs: Any) -> Any:
    return linear_cg(*args, return_info=True, **kwargs)


@pytest.mark.parametrize("k", [None, 1, 5])
@pytest.mark.parametrize("check_every", [1, 5, 8])
def test_cg_device_loop_matches_host_loop(k, check_every):
    A = _poisson()
    assert_same_solve(_cg, A, _rhs(A.shape[0], k), rtol=1e-10, check_every=check_every)


def test_cg_device_loop_default_check_every_is_at_least_five():
    assert DEVICE_CHECK_EVERY >= 5
    A = _poisson()
    B = _rhs(A.shape[0], 4)
    x, info = assert_same_solve(_cg, A, B, rtol=1e-10)
    assert info.reason == "converged" and bool(info.converged.all())
    torch.testing.assert_close(x, torch.linalg.solve(A.to_dense(), B), rtol=1e-8, atol=1e-8)


def test_cg_device_loop_batched_operator():
    A = _batched_spd()
    assert_same_solve(_cg, A, _rhs(30, 3, batch=(3,)), rtol=1e-10, check_every=5)
    assert_same_solve(_cg, A, _rhs(30, None, batch=(3,)), rtol=1e-10, check_every=5)


@pytest.mark.parametrize("kind", ["jacobi", "ic0", "callable"])
@pytest.mark.parametrize("k", [1, 4])
def test_cg_device_loop_with_preconditioner(kind, k):
    A = _poisson()
    if kind == "jacobi":
        M: Any = Jacobi(A)
    elif kind == "ic0":
        M = IC0(A)
    else:
        d = 1.0 / A.to_dense().diagonal().unsqueeze(-1)
        M = lambda R: 0.5 * d * R  # noqa: E731  (a scaled Jacobi: SPD)
    assert_same_solve(_cg, A, _rhs(A.shape[0], k), rtol=1e-10, preconditioner=M, check_every=5)


def test_cg_device_loop_min_iter_and_x0():
    A = _poisson()
    B = _rhs(A.shape[0], 3)
    x_exact = torch.linalg.solve(A.to_dense(), B)
    x0 = x_exact + 1e-3 * _rhs(A.shape[0], 3, seed=1)
    x, info = assert_same_solve(_cg, A, B, rtol=1e-10, x0=x0, check_every=5)
    assert info.iterations > 0
    torch.testing.assert_close(x, x_exact, rtol=1e-7, atol=1e-7)
    _, info = assert_same_solve(_cg, A, B, rtol=1e-3, min_iter=13, check_every=5)
    assert info.iterations >= 13
    # a warm start at the solution: no iteration, whatever min_iter says about stopping
    assert_same_solve(_cg, A, B, rtol=1e-6, x0=x_exact, check_every=5)


def test_cg_device_loop_stop_updating_after_differs_from_tolerance():
    A = _poisson()
    B = _rhs(A.shape[0], 3)
    # columns keep updating after meeting the loop's tolerance, and freeze earlier than it
    assert_same_solve(_cg, A, B, rtol=1e-6, stop_updating_after=1e-9, check_every=5)
    assert_same_solve(_cg, A, B, rtol=1e-9, stop_updating_after=1e-6, check_every=5)


def test_cg_device_loop_zero_and_non_finite_columns():
    A = _poisson()
    B = _rhs(A.shape[0], 4)
    B[:, 1] = 0.0
    x, info = assert_same_solve(_cg, A, B, rtol=1e-10, check_every=5)
    assert bool((x[:, 1] == 0).all())
    B[3, 2] = float("nan")
    B[5, 3] = float("inf")
    x, info = assert_same_solve(_cg, A, B, rtol=1e-10, check_every=5, on_failure="ignore")
    assert info.reason == "non_finite"
    assert info.non_finite.tolist() == [False, False, True, True]
    assert bool(torch.isnan(x[:, 2:]).all()) and bool(torch.isfinite(x[:, :2]).all())


def test_cg_device_loop_breakdown_on_indefinite_matrix_raises():
    n = 12
    d = torch.linspace(-1.0, 2.0, n, dtype=F64)
    A = torch.diag(d).to_sparse_csr()
    B = torch.ones(n, 2, dtype=F64)
    for loop in ("device", "host"):
        with pytest.raises(RuntimeError, match="CG breakdown"):
            linear_cg(A, B, rtol=1e-10, loop=loop, check_every=5, max_iter=50)


def test_cg_loop_keyword_is_checked():
    A = _poisson()
    with pytest.raises(ValueError, match="loop must be"):
        linear_cg(A, _rhs(A.shape[0], 2), loop="gpu")


# ------------------------------------------------------------------------------ budgets


def _poisson3d() -> tuple[torch.Tensor, torch.Tensor]:
    A = grid_operator((12, 12, 12)).to_sparse_csr()
    return A, _rhs(A.shape[0], 8)


def marginal_kernels(solve: Callable[[int], Any], T: int) -> tuple[float, Any]:
    """Kernel calls per iteration: (count at 2T − count at T) / T, the tolerance unreachable."""
    _, c1 = count_kernels(solve, T)
    _, c2 = count_kernels(solve, 2 * T)
    return (c2.kernels - c1.kernels) / T, c2


def test_cg_device_loop_kernel_budget():
    A, B = _poisson3d()

    def solve(T: int) -> Any:
        return linear_cg(A, B, rtol=1e-30, max_iter=T, on_failure="ignore", loop="device")

    per_iter, count = marginal_kernels(solve, 2 * DEVICE_CHECK_EVERY)
    assert per_iter <= 12, f"CG device loop: {per_iter} kernel calls per iteration ({count})"


@pytest.mark.parametrize("check_every", [None, 5])
def test_cg_device_loop_sync_budget(check_every):
    A, B = _poisson3d()
    (_, info), count = count_kernels(
        linear_cg, A, B, rtol=1e-10, loop="device", return_info=True, check_every=check_every
    )
    assert info.reason == "converged"
    every = DEVICE_CHECK_EVERY if check_every is None else check_every
    assert count.syncs <= info.iterations / every + 5, f"{count.syncs} syncs, {info.iterations} iterations"


# --------------------------------------------------------------------------------- BiCGSTAB


def _bicgstab(*args: Any, **kwargs: Any) -> Any:
    return bicgstab(*args, return_info=True, **kwargs)


def _convection(shape: tuple[int, ...] = (6, 7)) -> torch.Tensor:
    return grid_operator(shape, convection=0.5).to_sparse_csr()


@pytest.mark.parametrize("k", [None, 1, 5])
@pytest.mark.parametrize("check_every", [1, 5, 8])
def test_bicgstab_device_loop_matches_host_loop(k, check_every):
    A = _convection()
    B = _rhs(A.shape[0], k)
    x, info = assert_same_solve(_bicgstab, A, B, rtol=1e-10, atol=0.0, check_every=check_every)
    assert info.reason == "converged"
    torch.testing.assert_close(x, torch.linalg.solve(A.to_dense(), B), rtol=1e-7, atol=1e-7)


def test_bicgstab_device_loop_batched_operator_x0_and_limits():
    A = _batched_spd()
    assert_same_solve(_bicgstab, A, _rhs(30, 3, batch=(3,)), rtol=1e-10, atol=0.0, check_every=5)
    A = _convection()
    B = _rhs(A.shape[0], 3)
    x0 = torch.linalg.solve(A.to_dense(), B) + 1e-4 * _rhs(A.shape[0], 3, seed=2)
    assert_same_solve(_bicgstab, A, B, rtol=1e-10, atol=0.0, x0=x0, check_every=5)
    # max_iter and the operator budget (matvec_max) stop the loop mid-way, also mid-iteration
    assert_same_solve(_bicgstab, A, B, rtol=1e-12, atol=0.0, max_iter=7, check_every=5, on_failure="ignore")
    for budget in (9, 10, 2, 3):
        settings = BICGSTABSettings(matvec_max=budget)
        assert_same_solve(
            _bicgstab, A, B, rtol=1e-12, atol=0.0, settings=settings, check_every=5, on_failure="ignore"
        )


@pytest.mark.parametrize("kind", ["jacobi", "ilu0", "callable"])
def test_bicgstab_device_loop_with_preconditioner(kind):
    A = _convection()
    if kind == "jacobi":
        M: Any = Jacobi(A)
    elif kind == "ilu0":
        M = ILU0(A)
    else:
        d = 1.0 / A.to_dense().diagonal().unsqueeze(-1)
        M = lambda R: d * R  # noqa: E731
    for k in (1, 4):
        assert_same_solve(
            _bicgstab, A, _rhs(A.shape[0], k), rtol=1e-10, atol=0.0, preconditioner=M, check_every=5
        )


def test_bicgstab_device_loop_zero_non_finite_and_breakdown_columns():
    A = _convection()
    B = _rhs(A.shape[0], 4)
    B[:, 1] = 0.0
    B[3, 2] = float("nan")
    x, info = assert_same_solve(_bicgstab, A, B, rtol=1e-10, atol=0.0, check_every=5, on_failure="ignore")
    assert info.non_finite.tolist() == [False, False, True, False]
    assert bool((x[:, 1] == 0).all()) and bool(torch.isnan(x[:, 2]).all())
    # r̂ᵀAp = 0 at the first step: a breakdown, reported, the column kept at its iterate
    P = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
    x, info = assert_same_solve(_bicgstab, P, torch.tensor([1.0, 0.0], dtype=F64), on_failure="ignore")
    assert info.reason == "breakdown" and bool(info.breakdown.all())
    # a breakdown in one column of a block, the others converge: the replay keeps them exact
    D = torch.block_diag(P, torch.diag(torch.tensor([2.0, 3.0], dtype=F64)))
    Bb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], dtype=F64)
    # (x[1] of the converged column is 0 to within the rounding of its last step: compared to the
    # solve's tolerance)
    x, info = assert_same_solve(_bicgstab, D, Bb, rtol=1e-10, atol=0.0, on_failure="ignore", x_rtol=1e-10)
    assert info.breakdown.tolist() == [True, False]


def test_bicgstab_device_loop_kernel_budget():
    A = grid_operator((12, 12, 12), convection=0.3).to_sparse_csr()
    B = _rhs(A.shape[0], 8)

    def solve(T: int) -> Any:
        return bicgstab(A, B, rtol=1e-30, atol=0.0, max_iter=T, on_failure="ignore", loop="device")

    per_iter, count = marginal_kernels(solve, 2 * BICGSTAB_CHECK_EVERY)
    assert per_iter <= 20, f"BiCGSTAB device loop: {per_iter} kernel calls per iteration ({count})"
    (_, info), count = count_kernels(bicgstab, A, B, rtol=1e-10, atol=0.0, loop="device", return_info=True)
    assert info.reason == "converged"
    assert BICGSTAB_CHECK_EVERY >= 5
    assert count.syncs <= info.iterations / BICGSTAB_CHECK_EVERY + 5, f"{count.syncs} syncs"


# ----------------------------------------------------------------------------------- MINRES


def _minres(*args: Any, **kwargs: Any) -> Any:
    return minres(*args, return_info=True, **kwargs)


def _indefinite(n: int = 40) -> torch.Tensor:
    """A symmetric indefinite CSR matrix: a 1-D Laplacian shifted into the middle of its spectrum."""
    return (grid_operator((n,)).to_dense() - 2.0 * torch.eye(n, dtype=F64)).to_sparse_csr()


@pytest.mark.parametrize("k", [None, 1, 5])
@pytest.mark.parametrize("check_every", [1, 5, 8])
def test_minres_device_loop_matches_host_loop(k, check_every):
    A = _indefinite()
    B = _rhs(A.shape[0], k)
    x, info = assert_same_solve(_minres, A, B, rtol=1e-10, check_every=check_every)
    assert info.reason == "converged"
    torch.testing.assert_close(x, torch.linalg.solve(A.to_dense(), B), rtol=1e-7, atol=1e-7)


def test_minres_device_loop_batched_operator_shifts_value_and_x0():
    A = _batched_spd()
    assert_same_solve(_minres, A, _rhs(30, 3, batch=(3,)), rtol=1e-10, check_every=5)
    assert_same_solve(_minres, A, _rhs(30, None, batch=(3,)), rtol=1e-10, check_every=5)
    A = _poisson()
    n = A.shape[0]
    B = _rhs(n, 3)
    shifts = torch.tensor([0.0, -0.5, 1.5], dtype=F64)
    x, _ = assert_same_solve(_minres, A, B, rtol=1e-10, shifts=shifts, value=2.0, check_every=5)
    dense = 2.0 * A.to_dense()
    for i, sigma in enumerate(shifts):
        ref = torch.linalg.solve(dense + sigma * torch.eye(n, dtype=F64), B)
        torch.testing.assert_close(x[i], ref, rtol=1e-7, atol=1e-7)
    assert_same_solve(_minres, A, B, rtol=1e-10, shifts=torch.tensor(0.3, dtype=F64), check_every=5)
    x0 = torch.linalg.solve(A.to_dense(), B) + 1e-4 * _rhs(n, 3, seed=3)
    assert_same_solve(_minres, A, B, rtol=1e-10, x0=x0, check_every=5)
    # an iteration cap mid-way, and a restart from the true residual at a tight tolerance
    assert_same_solve(_minres, A, B, rtol=1e-12, max_iter=7, check_every=5, on_failure="ignore")
    assert_same_solve(_minres, A, B, rtol=1e-15, check_every=5, on_failure="ignore", count_slack=4)


@pytest.mark.parametrize("kind", ["jacobi", "ic0", "callable"])
def test_minres_device_loop_with_preconditioner(kind):
    A = _poisson()
    if kind == "jacobi":
        M: Any = Jacobi(A)
    elif kind == "ic0":
        M = IC0(A)
    else:
        d = 1.0 / A.to_dense().diagonal().unsqueeze(-1)
        M = lambda R: 0.5 * d * R  # noqa: E731  (a scaled Jacobi: SPD)
    for k in (1, 4):
        assert_same_solve(_minres, A, _rhs(A.shape[0], k), rtol=1e-10, preconditioner=M, check_every=5)


def test_minres_device_loop_zero_non_finite_and_exhausted_columns():
    A = _indefinite()
    B = _rhs(A.shape[0], 4)
    B[:, 1] = 0.0
    B[3, 2] = float("nan")
    x, info = assert_same_solve(_minres, A, B, rtol=1e-10, check_every=5, on_failure="ignore")
    assert info.non_finite.tolist() == [False, False, True, False]
    assert bool((x[:, 1] == 0).all()) and bool(torch.isnan(x[:, 2]).all())
    # a right-hand side in a 3-dimensional invariant subspace: the Lanczos basis runs out (β = 0)
    # after 3 steps, while another column goes on
    D = torch.diag(torch.linspace(-2.0, 3.0, 20, dtype=F64)).to_sparse_csr()
    Bd = torch.zeros(20, 2, dtype=F64)
    Bd[[0, 7, 15], 0] = 1.0
    Bd[:, 1] = 1.0
    # (the full column takes n = 20 steps, the whole space, with the basis' loss of orthogonality:
    # each loop is within 2e-12 of the exact solution, so they are compared to 1e-10)
    x, info = assert_same_solve(_minres, D, Bd, rtol=1e-10, check_every=5, x_rtol=1e-10)
    assert info.reason == "converged"
    torch.testing.assert_close(x, torch.linalg.solve(D.to_dense(), Bd), rtol=1e-9, atol=1e-9)
    # an operator whose products overflow inside the loop (finite b): non-finite, as the host loop
    _, info = assert_same_solve(_minres, _huge(), _rhs(20, 2), rtol=1e-10, check_every=5, on_failure="ignore")
    assert info.reason == "non_finite" and bool(info.non_finite.all()) and info.iterations >= 1


def _huge() -> torch.Tensor:
    """A diagonal CSR matrix with entries near 1e160: finite, but its inner products overflow."""
    return torch.diag(torch.linspace(1.0, 2.0, 20, dtype=F64) * 1e160).to_sparse_csr()


def test_minres_loop_keyword_is_checked():
    A = _poisson()
    with pytest.raises(ValueError, match="loop must be"):
        minres(A, _rhs(A.shape[0], 2), loop="gpu")


def test_minres_device_loop_kernel_budget():
    A, B = _poisson3d()

    def solve(T: int) -> Any:
        return minres(A, B, rtol=1e-30, max_iter=T, on_failure="ignore", loop="device")

    per_iter, count = marginal_kernels(solve, 2 * MINRES_CHECK_EVERY)
    assert per_iter <= 16, f"MINRES device loop: {per_iter} kernel calls per iteration ({count})"


@pytest.mark.parametrize("check_every", [None, 5])
def test_minres_device_loop_sync_budget(check_every):
    A, B = _poisson3d()
    (_, info), count = count_kernels(
        minres, A, B, rtol=1e-10, loop="device", return_info=True, check_every=check_every
    )
    assert info.reason == "converged"
    every = MINRES_CHECK_EVERY if check_every is None else check_every
    assert MINRES_CHECK_EVERY >= 5
    assert count.syncs <= info.iterations / every + 5, f"{count.syncs} syncs, {info.iterations} iterations"


# ------------------------------------------------------------------------------------ GMRES


def _gmres(*args: Any, **kwargs: Any) -> Any:
    return gmres(*args, return_info=True, **kwargs)


@pytest.mark.parametrize("k", [None, 1, 5])
@pytest.mark.parametrize("check_every", [1, 5, 8])
@pytest.mark.parametrize("restart", [30, 7])
def test_gmres_device_loop_matches_host_loop(k, check_every, restart):
    A = _convection()
    B = _rhs(A.shape[0], k)
    x, info = assert_same_solve(_gmres, A, B, rtol=1e-10, restart=restart, check_every=check_every)
    assert info.reason == "converged"
    torch.testing.assert_close(x, torch.linalg.solve(A.to_dense(), B), rtol=1e-7, atol=1e-7)


def test_gmres_device_loop_batched_operator_x0_and_limits():
    A = _batched_spd()
    assert_same_solve(_gmres, A, _rhs(30, 3, batch=(3,)), rtol=1e-10, restart=8, check_every=5)
    assert_same_solve(_gmres, A, _rhs(30, None, batch=(3,)), rtol=1e-10, check_every=5)
    A = _convection()
    B = _rhs(A.shape[0], 3)
    x0 = torch.linalg.solve(A.to_dense(), B) + 1e-4 * _rhs(A.shape[0], 3, seed=2)
    assert_same_solve(_gmres, A, B, rtol=1e-10, x0=x0, check_every=5)
    # a cap on Arnoldi steps mid-cycle and on a cycle boundary; a warm start at the solution
    for cap in (7, 10, 20):
        assert_same_solve(
            _gmres, A, B, rtol=1e-12, restart=10, max_iter=cap, check_every=5, on_failure="ignore"
        )
    assert_same_solve(_gmres, A, B, rtol=1e-6, x0=torch.linalg.solve(A.to_dense(), B), check_every=5)


@pytest.mark.parametrize("kind", ["jacobi", "ilu0", "callable"])
def test_gmres_device_loop_with_preconditioner(kind):
    A = _convection()
    if kind == "jacobi":
        M: Any = Jacobi(A)
    elif kind == "ilu0":
        M = ILU0(A)
    else:
        d = 1.0 / A.to_dense().diagonal().unsqueeze(-1)
        M = lambda R: d * R  # noqa: E731
    for k in (1, 4):
        assert_same_solve(
            _gmres, A, _rhs(A.shape[0], k), rtol=1e-10, preconditioner=M, restart=9, check_every=5
        )


def test_gmres_device_loop_zero_non_finite_breakdown_and_lucky_columns():
    A = _convection()
    B = _rhs(A.shape[0], 4)
    B[:, 1] = 0.0
    B[3, 2] = float("nan")
    x, info = assert_same_solve(_gmres, A, B, rtol=1e-10, check_every=5, on_failure="ignore")
    assert info.non_finite.tolist() == [False, False, True, False]
    assert bool((x[:, 1] == 0).all()) and bool(torch.isnan(x[:, 2]).all())
    # a right-hand side in a 3-dimensional invariant subspace: the Arnoldi process ends exactly
    # (‖w‖ = 0) after 3 steps, while the other column goes on
    D = torch.diag(torch.linspace(0.5, 3.0, 20, dtype=F64)).to_sparse_csr()
    Bd = torch.zeros(20, 2, dtype=F64)
    Bd[[0, 7, 15], 0] = 1.0
    Bd[:, 1] = 1.0
    x, info = assert_same_solve(_gmres, D, Bd, rtol=1e-10, check_every=5)
    assert info.reason == "converged"
    torch.testing.assert_close(x, torch.linalg.solve(D.to_dense(), Bd), rtol=1e-9, atol=1e-9)
    # a singular operator whose Krylov space does not hold the solution: r = 0, a breakdown
    S = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=F64)
    Bs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=F64)
    x, info = assert_same_solve(_gmres, S, Bs, rtol=1e-10, check_every=5, on_failure="ignore")
    assert info.reason == "breakdown" and bool(info.breakdown.all())
    # a breakdown in one column of a block while the other converges
    Sd = torch.block_diag(S, torch.diag(torch.tensor([2.0, 3.0], dtype=F64)))
    Bb = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=F64)
    x, info = assert_same_solve(_gmres, Sd, Bb, rtol=1e-10, check_every=5, on_failure="ignore")
    assert info.breakdown.tolist() == [True, False] and info.converged.tolist() == [False, True]
    # an operator whose products overflow inside the loop (finite b)
    _, info = assert_same_solve(_gmres, _huge(), _rhs(20, 2), rtol=1e-10, check_every=5, on_failure="ignore")
    assert info.reason == "non_finite" and bool(info.non_finite.all()) and info.iterations >= 1


def test_gmres_loop_keyword_is_checked():
    A = _convection()
    with pytest.raises(ValueError, match="loop must be"):
        gmres(A, _rhs(A.shape[0], 2), loop="gpu")


def test_gmres_device_loop_kernel_budget():
    A = grid_operator((12, 12, 12), convection=0.3).to_sparse_csr()
    B = _rhs(A.shape[0], 8)
    T = 2 * GMRES_CHECK_EVERY

    def solve(t: int) -> Any:
        return gmres(A, B, rtol=1e-30, max_iter=t, restart=4 * T, on_failure="ignore", loop="device")

    per_step, count = marginal_kernels(solve, T)
    assert per_step <= 16, f"GMRES device loop: {per_step} kernel calls per Arnoldi step ({count})"


@pytest.mark.parametrize("check_every", [None, 5])
def test_gmres_device_loop_sync_budget(check_every):
    A = grid_operator((12, 12, 12), convection=0.3).to_sparse_csr()
    B = _rhs(A.shape[0], 8)
    (_, info), count = count_kernels(
        gmres, A, B, rtol=1e-10, restart=20, loop="device", return_info=True, check_every=check_every
    )
    assert info.reason == "converged"
    every = GMRES_CHECK_EVERY if check_every is None else check_every
    assert GMRES_CHECK_EVERY >= 5
    assert count.syncs <= info.iterations / every + 5, f"{count.syncs} syncs, {info.iterations} steps"


# ------------------------------------------------------------------------------------- LSMR
# The LSMR device loop groups the scalar work of the block loop; same recurrence and tests.


def _lstsq_problem(
    k: int | None, seed: int = 0, conditioned: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """A sparse ``(50, 30)`` least-squares problem: ``[I; R]`` with a sparse random ``R``
    (condition number a few units), or a sparse random matrix alone (ill-conditioned)."""
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(50 if not conditioned else 20, 30, dtype=F64, generator=g)
    R = R * (torch.rand(R.shape, generator=g) < 0.3)
    A = torch.cat([torch.eye(30, dtype=F64), 0.5 * R]) if conditioned else R
    return A.to_sparse_csr(), _rhs(A.shape[0], k, seed=seed + 1)


@pytest.mark.parametrize("k", [None, 1, 5])
def test_lsmr_device_loop_matches_host_loop(k):
    A, B = _lstsq_problem(k)
    x, itn = assert_same_solve(lsmr, A, B, atol=1e-12, btol=1e-12, maxiter=300)
    ref = torch.linalg.lstsq(A.to_dense(), B if k is not None else B.unsqueeze(-1)).solution
    # ((m, 1) is read as a vector, as in 0.2.7)
    torch.testing.assert_close(x.reshape(ref.shape), ref, rtol=1e-9, atol=1e-9)
    assert 0 < itn
    # an iteration cap, damping
    assert_same_solve(lsmr, A, B, atol=1e-12, btol=1e-12, maxiter=5)
    x, _ = assert_same_solve(lsmr, A, B, damp=0.5, atol=1e-12, btol=1e-12, maxiter=300)
    Ad = A.to_dense()
    Bk = B if k is not None else B.unsqueeze(-1)
    ref = torch.linalg.solve(Ad.T @ Ad + 0.25 * torch.eye(30, dtype=F64), Ad.T @ Bk)
    torch.testing.assert_close(x.reshape(ref.shape), ref, rtol=1e-9, atol=1e-9)


def test_lsmr_device_loop_ill_conditioned_and_exact_columns():
    # ill-conditioned: the loops round differently, and each is as close to the least-squares
    # solution as the other (about 2e-11): compared to that accuracy
    A, B = _lstsq_problem(3, conditioned=False)
    B[:, 2] = A.to_dense() @ torch.ones(30, dtype=F64)  # a consistent column, which stops early
    x, _ = assert_same_solve(lsmr, A, B, atol=1e-10, btol=1e-10, maxiter=300, x_rtol=1e-9, count_slack=1)
    ref = torch.linalg.lstsq(A.to_dense(), B).solution
    torch.testing.assert_close(x, ref, rtol=1e-8, atol=1e-8)


def test_lsmr_device_loop_non_finite_column():
    A, B = _lstsq_problem(3)
    B[4, 1] = float("nan")
    x, _ = assert_same_solve(lsmr, A, B, atol=1e-10, btol=1e-10, on_failure="ignore")
    assert bool(torch.isnan(x[:, 1]).all()) and bool(torch.isfinite(x[:, [0, 2]]).all())


def test_lsmr_loop_keyword_is_checked():
    A, B = _lstsq_problem(2)
    with pytest.raises(ValueError, match="loop must be"):
        lsmr(A, B, loop="gpu")


def test_lsmr_device_loop_budgets():
    A = grid_operator((12, 12, 12), convection=0.3).to_sparse_csr()
    B = _rhs(A.shape[0], 8)

    def solve(t: int) -> Any:
        return lsmr(A, B, atol=0.0, btol=0.0, conlim=0.0, maxiter=t, loop="device")

    per_iter, count = marginal_kernels(solve, 16)
    # measured 87.1 (the block loop: 204), pinned against regressions
    assert per_iter <= 88, f"LSMR: {per_iter} kernel calls per iteration ({count})"
    (_, itn), count = count_kernels(lsmr, A, B, atol=1e-10, btol=1e-10, loop="device")
    assert count.syncs <= itn / 8 + 5, f"{count.syncs} syncs, {itn} iterations"
