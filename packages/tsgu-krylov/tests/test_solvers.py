"""Every Krylov solver against a dense solve and against scipy.sparse.linalg."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg as sla
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tsgu_krylov import (
    ConvergenceError,
    ConvergenceWarning,
    bicgstab,
    gmres,
    linear_cg,
    lsmr,
    minres,
)
from tsgu_ops.testing import build_case
from tsgu_ops.testing import grid_operator as _grid


def grid_operator(k: int, convection: float = 0.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return _grid((k, k), convection, dtype)


def as_layout(A: torch.Tensor, layout: str) -> object:
    if layout == "coo":
        return A
    if layout == "csr":
        return A.to_sparse_csr()
    D = A.to_dense()
    return D if layout == "dense" else (lambda X: D @ X)


SOLVERS = {
    "cg": lambda A, B, **kw: linear_cg(A, B, rtol=1e-10, max_iter=500, **kw),
    "minres": lambda A, B, **kw: minres(A, B, rtol=1e-10, max_iter=500, **kw),
    "bicgstab": lambda A, B, **kw: bicgstab(A, B, rtol=1e-10, atol=0.0, **kw),
    "gmres": lambda A, B, **kw: gmres(A, B, rtol=1e-10, restart=20, **kw),
}
APPLIES = {  # which structures each solver is for
    "cg": ("spd",),
    "minres": ("spd", "symmetric"),
    "bicgstab": ("spd", "dominant"),
    "gmres": ("spd", "symmetric", "dominant"),
}


def _scipy(A: torch.Tensor) -> scipy.sparse.csr_matrix:
    return scipy.sparse.csr_matrix(A.to_dense().numpy())


@pytest.mark.parametrize("layout", ["coo", "csr", "dense", "callable"])
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_solution_matches_dense_solve_for_every_operator_kind(name, layout):
    structure = "spd" if name == "cg" else ("symmetric" if name == "minres" else "dominant")
    A = build_case(3, (12, 12), 0.3, torch.sparse_coo, torch.int64, torch.float64, structure).dense
    B = torch.randn(12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    X = SOLVERS[name](as_layout(A.to_sparse(), layout), B)
    torch.testing.assert_close(X, torch.linalg.solve(A, B), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_vector_rhs_gives_vector_and_matches_scipy(name):
    convection = 0.0 if name in ("cg", "minres") else 0.5
    A = grid_operator(8, convection)
    b = torch.linspace(-1, 1, A.shape[0], dtype=torch.float64)
    x = SOLVERS[name](A.to_sparse_csr(), b)
    assert x.shape == b.shape
    ref_solver = {"cg": sla.cg, "minres": sla.minres, "bicgstab": sla.bicgstab, "gmres": sla.gmres}[name]
    kw = {"rtol": 1e-12} if "rtol" in ref_solver.__code__.co_varnames else {"tol": 1e-12}
    ref, info = ref_solver(_scipy(A), b.numpy(), **kw)
    assert info == 0
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_batched_operator_and_block_rhs(name):
    structure = {"cg": "spd", "minres": "symmetric"}.get(name, "dominant")
    case = build_case(5, (3, 10, 10), 0.3, torch.sparse_csr, torch.int32, torch.float64, structure)
    B = torch.randn(3, 10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    X = SOLVERS[name](case.sparse, B)
    torch.testing.assert_close(X, torch.linalg.solve(case.dense, B), rtol=1e-7, atol=1e-8)


def test_shared_matrix_with_batched_rhs():
    A = grid_operator(5)
    B = torch.randn(4, 25, 3, dtype=torch.float64)
    X = linear_cg(A, B, rtol=1e-12)
    torch.testing.assert_close(X, torch.linalg.solve(A.to_dense(), B))


@settings(deadline=None)
@given(
    seed=st.integers(0, 2**20),
    n=st.integers(1, 9),
    k=st.integers(1, 3),
    name=st.sampled_from(sorted(SOLVERS)),
    layout=st.sampled_from([torch.sparse_coo, torch.sparse_csr]),
    index_dtype=st.sampled_from([torch.int32, torch.int64]),
    density=st.floats(0.0, 0.6, allow_subnormal=False),
)
def test_property_every_solver_solves_its_structure(seed, n, k, name, layout, index_dtype, density):
    structure = APPLIES[name][seed % len(APPLIES[name])]
    case = build_case(seed, (n, n), density, layout, index_dtype, torch.float64, structure)
    B = torch.randn(n, k, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    X = SOLVERS[name](case.sparse, B)
    torch.testing.assert_close(case.dense @ X, B, rtol=1e-7, atol=1e-8)


def test_columns_converge_independently_and_zero_columns_stay_zero():
    A = grid_operator(6)
    B = torch.zeros(36, 3, dtype=torch.float64)
    B[:, 0] = 1.0
    B[0, 2] = 1e-3
    for solve in SOLVERS.values():
        X = solve(A, B)
        assert torch.equal(X[:, 1], torch.zeros(36, dtype=torch.float64))
        torch.testing.assert_close(A.to_dense() @ X, B, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64(dtype):
    A = grid_operator(6, dtype=dtype)
    b = torch.ones(36, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for solve in (linear_cg, minres, gmres):
        x = solve(A, b, rtol=tol)
        assert x.dtype == dtype
        torch.testing.assert_close(A.to_dense() @ x, b, rtol=1e-4, atol=1e-4)


def test_inputs_are_not_modified():
    A = grid_operator(5, 0.3).to_sparse_csr()
    b = torch.ones(25, dtype=torch.float64)
    x0 = torch.full((25,), 0.5, dtype=torch.float64)
    vals, b0, x00 = A.values().clone(), b.clone(), x0.clone()
    for solve in (bicgstab, gmres):
        solve(A, b, x0=x0)
    linear_cg(grid_operator(5), b, initial_guess=x0)
    assert torch.equal(A.values(), vals) and torch.equal(b, b0) and torch.equal(x0, x00)


def test_warm_start_at_the_solution_needs_no_iteration():
    A = grid_operator(5)
    b = torch.ones(25, dtype=torch.float64)
    x = torch.linalg.solve(A.to_dense(), b)
    _, info = linear_cg(A, b, initial_guess=x, return_info=True, tolerance=1e-8)
    assert info.iterations == 0 and info.reason in ("converged", "stopped_updating")
    _, info = bicgstab(A, b, x0=x, return_info=True)
    assert info.iterations == 0 and info.matvecs == 1  # 0.2.7: an exact warm start costs 1


@pytest.mark.parametrize("name", ["cg", "minres", "bicgstab", "gmres"])
def test_non_convergence_warns_or_raises(name):
    A = grid_operator(10, 0.0 if name in ("cg", "minres") else 1.0)
    b = torch.ones(100, dtype=torch.float64)
    fn = {"cg": linear_cg, "minres": minres, "bicgstab": bicgstab, "gmres": gmres}[name]
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        _x, info = fn(A, b, rtol=1e-12, max_iter=2, return_info=True)
    assert not bool(info.converged.all())
    assert info.relative_residual.shape == (1,) if name != "cg" else info.true_relative_residual.shape == (1,)
    with pytest.raises(ConvergenceError, match="tolerance"):
        fn(A, b, rtol=1e-12, max_iter=2, on_failure="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(A, b, rtol=1e-12, max_iter=2, on_failure="ignore")


def test_info_reports_iterations_residuals_and_converged_flags():
    A = grid_operator(8, 0.5)
    B = torch.randn(64, 2, dtype=torch.float64)
    X, info = gmres(A, B, rtol=1e-9, return_info=True)
    assert info.reason == "converged" and info.converged.shape == (2,) and bool(info.converged.all())
    true = torch.linalg.vector_norm(B - A.to_dense() @ X, dim=0) / torch.linalg.vector_norm(B, dim=0)
    torch.testing.assert_close(info.relative_residual, true)
    assert info.iterations > 0 and info.matvecs >= info.iterations


def test_breakdown_is_detected_not_silent():
    # r̂ᵀ A p = 0 at the first step: BiCGSTAB cannot proceed and says so
    A = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match="broke down"):
        _, info = bicgstab(A, torch.tensor([1.0, 0.0], dtype=torch.float64), return_info=True)
    assert info.reason == "breakdown" and bool(info.breakdown.all())
    # CG on an indefinite matrix: pᵀAp ≤ 0 is a breakdown error (0.2.7 message)
    with pytest.raises(RuntimeError, match="CG breakdown"):
        linear_cg(
            torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)),
            torch.tensor([0.0, 1.0], dtype=torch.float64),
        )


def test_minres_shifts_solve_each_shifted_system():
    A = grid_operator(4)
    b = torch.ones(16, dtype=torch.float64)
    shifts = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    X = minres(A, b, shifts=shifts, value=2.0, rtol=1e-12)
    assert X.shape == (3, 16)
    for s, x in zip(shifts, X):
        torch.testing.assert_close(
            x, torch.linalg.solve(2 * A.to_dense() + s * torch.eye(16, dtype=torch.float64), b)
        )
    x0 = minres(A, b, shifts=torch.tensor(1.0, dtype=torch.float64), rtol=1e-12)
    assert x0.shape == (16,)


def test_minres_solves_symmetric_indefinite_where_cg_cannot():
    A = build_case(2, (20, 20), 0.2, torch.sparse_csr, torch.int64, torch.float64, "symmetric")
    b = torch.ones(20, dtype=torch.float64)
    x = minres(A.sparse, b, rtol=1e-12)
    ref, _info = sla.minres(_scipy(A.dense), b.numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-6, atol=1e-8)


def test_lsmr_matches_scipy_block_and_vector():
    g = torch.Generator().manual_seed(0)
    D = torch.randn(30, 8, dtype=torch.float64, generator=g) * (torch.rand(30, 8, generator=g) < 0.4)
    D += torch.eye(30, 8, dtype=torch.float64)
    A = D.to_sparse_csr()
    B = torch.randn(30, 3, dtype=torch.float64, generator=g)
    X, itn = lsmr(A, B, atol=1e-12, btol=1e-12, maxiter=200)
    assert X.shape == (8, 3) and isinstance(itn, int) and itn > 0
    ref = torch.linalg.lstsq(D, B).solution
    torch.testing.assert_close(X, ref, rtol=1e-8, atol=1e-9)
    x, _ = lsmr(A, B[:, 0], atol=1e-12, btol=1e-12, maxiter=200)
    sp = sla.lsmr(scipy.sparse.csr_matrix(D.numpy()), B[:, 0].numpy(), atol=1e-12, btol=1e-12, maxiter=200)[0]
    np.testing.assert_allclose(x.numpy(), sp, rtol=1e-8, atol=1e-10)
    # damped problem: (AᵀA + λ²I) x = Aᵀ b
    xd, _ = lsmr(A, B[:, 0], damp=0.7, atol=1e-12, btol=1e-12, maxiter=200)
    ref = torch.linalg.solve(D.T @ D + 0.49 * torch.eye(8, dtype=torch.float64), D.T @ B[:, 0])
    torch.testing.assert_close(xd, ref, rtol=1e-8, atol=1e-9)


def test_lsmr_maxiter_zero_callable_and_underdetermined():
    D = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    x, itn = lsmr(D, torch.ones(2, dtype=torch.float64), maxiter=0)
    assert itn == 0 and torch.equal(x, torch.zeros(3, dtype=torch.float64))
    x, _ = lsmr(
        lambda v: D @ v,
        torch.ones(2, dtype=torch.float64),
        Armat=lambda v: D.T @ v,
        n=3,
        atol=1e-12,
        btol=1e-12,
    )
    torch.testing.assert_close(x, torch.linalg.pinv(D) @ torch.ones(2, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="n needs to be provided"):
        lsmr(lambda v: D @ v, torch.ones(2), Armat=lambda v: D.T @ v)
    with pytest.raises(RuntimeError, match="matmul_closure must be a tensor"):
        lsmr(3, torch.ones(2))


def test_gmres_restart_and_preconditioned_converge():
    from tsgu_krylov import ILU0, Jacobi

    A = grid_operator(12, 0.5).to_sparse_csr()
    b = torch.ones(144, dtype=torch.float64)
    x, plain = gmres(A, b, rtol=1e-10, restart=20, return_info=True)
    _, ilu = gmres(A, b, rtol=1e-10, restart=20, preconditioner=ILU0(A), return_info=True)
    _, jac = gmres(A, b, rtol=1e-10, restart=20, preconditioner=Jacobi(A), return_info=True)
    assert plain.reason == ilu.reason == jac.reason == "converged"
    assert ilu.iterations < plain.iterations
    ref, _info = sla.gmres(_scipy(A), b.numpy(), rtol=1e-12, restart=20, maxiter=1000)
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-8)


def test_gmres_one_cycle_matches_scipy_one_cycle():
    """Stagnation of GMRES(m) on a strongly convective operator is SciPy's too, to the digit."""
    A = grid_operator(12, 2.0)
    b = torch.ones(144, dtype=torch.float64)
    for m in (5, 30):
        x = gmres(A, b, rtol=1e-10, restart=m, max_iter=m, on_failure="ignore")
        ref, _ = sla.gmres(_scipy(A), b.numpy(), rtol=1e-10, restart=m, maxiter=1)
        np.testing.assert_allclose(x.numpy(), ref, rtol=1e-7, atol=1e-10)
