"""One right-hand side on the CPU runs a scalar copy of the GMRES block loop.

The copy must behave as the block loop: same answers (also checked against dense solves), same
iteration and operator-application counts, same stopping reason, breakdown and non-finite reports.
The block loop is reached with the same column twice (``(n, 2)``), the scalar one with ``(n,)``.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from tsgu_krylov import ILU0, ConvergenceWarning, Jacobi, gmres
from tsgu_ops.testing import grid_operator


def _system(convection: float, dtype: torch.dtype = torch.float64, seed: int = 0):
    A = grid_operator((6, 6, 6), convection, dtype).to_sparse_csr()
    b = torch.randn(A.shape[0], dtype=dtype, generator=torch.Generator().manual_seed(seed))
    return A, b


def _both(A, b, **kw):
    kw2 = dict(kw)
    if kw.get("x0") is not None:
        kw2["x0"] = torch.stack([kw["x0"], kw["x0"]], 1)
    x1, i1 = gmres(A, b, return_info=True, on_failure="ignore", **kw)
    x2, i2 = gmres(A, torch.stack([b, b], 1), return_info=True, on_failure="ignore", **kw2)
    return x1, i1, x2, i2


SETTINGS = {
    "plain": {},
    "short_restart": {"restart": 7},
    "max_iter_hit": {"restart": 5, "max_iter": 23},
    "ilu0": {"preconditioner": "ilu0"},
    "jacobi_restart": {"preconditioner": "jacobi", "restart": 6},
    "x0": {"x0": "ones", "restart": 9},
    "check_every": {"restart": 10, "check_every": 4},
    "atol": {"atol": 1e-2},
}


def _kwargs(name: str, A: torch.Tensor, b: torch.Tensor) -> dict:
    kw = dict(SETTINGS[name])
    if kw.get("preconditioner") == "ilu0":
        kw["preconditioner"] = ILU0(A)
    elif kw.get("preconditioner") == "jacobi":
        kw["preconditioner"] = Jacobi(A)
    if kw.get("x0") == "ones":
        kw["x0"] = torch.ones_like(b)
    return kw


@pytest.mark.parametrize("name", list(SETTINGS))
@pytest.mark.parametrize("convection", [0.0, 1.0], ids=["spd", "nonsymmetric"])
def test_single_column_matches_block_loop_float64(name, convection):
    A, b = _system(convection)
    kw = _kwargs(name, A, b)
    x1, i1, x2, i2 = _both(A, b, rtol=1e-10, **kw)
    assert (i1.iterations, i1.matvecs, i1.reason) == (i2.iterations, i2.matvecs, i2.reason)
    assert bool(i1.breakdown.any()) == bool(i2.breakdown[0])
    torch.testing.assert_close(x1, x2[:, 0], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(x2[:, 0], x2[:, 1])
    torch.testing.assert_close(i1.relative_residual, i2.relative_residual[:1], rtol=1e-6, atol=1e-15)
    if i1.reason in ("converged", "converged_atol"):  # atol: the floor decided
        expected = torch.linalg.solve(A.to_dense(), b)
        target = max(1e-10 * float(b.norm()), kw.get("atol", 0.0))
        assert float((b - A @ x1).norm()) <= target
        assert float((x1 - expected).norm() / expected.norm()) < 1e3 * target / float(b.norm())
    else:
        assert name == "max_iter_hit" and i1.reason == "max_iter" and i1.iterations == 23


@pytest.mark.parametrize("name", ["plain", "short_restart", "ilu0", "x0"])
@pytest.mark.parametrize("convection", [0.0, 1.0], ids=["spd", "nonsymmetric"])
def test_single_column_matches_block_loop_float32(name, convection):
    A, b = _system(convection, torch.float32)
    kw = _kwargs(name, A, b)
    x1, i1, x2, i2 = _both(A, b, rtol=1e-5, **kw)
    assert i1.reason == i2.reason == "converged"
    assert (i1.iterations, i1.matvecs) == (i2.iterations, i2.matvecs)
    torch.testing.assert_close(x1, x2[:, 0], rtol=1e-4, atol=1e-5)
    expected = torch.linalg.solve(A.to_dense().double(), b.double())
    assert float((x1.double() - expected).norm() / expected.norm()) < 1e-3
    assert float((b - A @ x1).norm() / b.norm()) <= 1e-5


def test_single_column_counts_operator_applications():
    A, b = _system(1.0)
    calls = []

    def op(X):
        calls.append(tuple(X.shape))
        return A @ X

    _x, info = gmres(op, b, rtol=1e-10, restart=8, return_info=True)
    _x2, block = gmres(A, torch.stack([b, b], 1), rtol=1e-10, restart=8, return_info=True)
    assert len(calls) == info.matvecs == block.matvecs
    assert info.iterations == block.iterations
    assert set(calls) == {(216, 1)}


def test_single_column_a_dense_matrix_and_a_vector_block():
    A, b = _system(1.0)
    D = A.to_dense()
    x1 = gmres(D, b, rtol=1e-11)
    x2 = gmres(D, b.unsqueeze(1), rtol=1e-11)
    assert x2.shape == (216, 1)
    torch.testing.assert_close(x1, x2[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(x1, torch.linalg.solve(D, b), rtol=1e-8, atol=1e-9)


def test_single_column_lucky_breakdown_and_zero_rhs():
    D = torch.tensor([[3.0, 1.0, 0.0], [-1.0, 2.0, 0.0], [0.0, 0.0, 5.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)  # an invariant subspace of dimension 2
    x1, i1, x2, i2 = _both(D.to_sparse_csr(), b, rtol=1e-14)
    assert i1.reason == i2.reason == "converged"
    assert (
        (i1.iterations, i1.matvecs) == (i2.iterations, i2.matvecs) == (2, 5)
    )  # 2 steps, 2 cycle residuals, the final check
    torch.testing.assert_close(x1, torch.linalg.solve(D, b), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(x1, x2[:, 0], rtol=1e-14, atol=1e-15)
    x0, info = gmres(D, torch.zeros(3, dtype=torch.float64), return_info=True)
    assert info.iterations == 0 and info.reason == "converged" and not bool(x0.any())


def test_single_column_singular_operator_breakdown():
    D = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([0.0, 1.0], dtype=torch.float64)  # A b = 0: the first step breaks down
    x1, i1, x2, i2 = _both(D, b, rtol=1e-10)
    assert i1.reason == i2.reason == "breakdown"
    assert bool(i1.breakdown.all()) and bool(i2.breakdown.all())
    assert (i1.iterations, i1.matvecs) == (i2.iterations, i2.matvecs)
    torch.testing.assert_close(x1, x2[:, 0])


def test_single_column_nan_rhs_gives_nan_and_a_warning():
    A, b = _system(1.0)
    b = b.clone()
    b[3] = float("nan")
    with pytest.warns(ConvergenceWarning, match="non-finite"):
        x1, i1 = gmres(A, b, rtol=1e-10, return_info=True)
    with pytest.warns(ConvergenceWarning, match="non-finite"):
        x2, i2 = gmres(A, torch.stack([b, b], 1), rtol=1e-10, return_info=True)
    assert bool(torch.isnan(x1).all()) and bool(torch.isnan(x2).all())
    assert i1.reason == i2.reason == "non_finite"
    assert (i1.iterations, i1.matvecs) == (i2.iterations, i2.matvecs)
    assert bool(i1.non_finite.all())


@pytest.mark.parametrize("where", ["operator", "preconditioner"])
def test_single_column_nan_in_operator_or_preconditioner(where):
    A, b = _system(1.0)
    v = A.values().clone()
    v[40] = float("nan")
    An = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), v, A.shape)
    kw = {"preconditioner": An} if where == "preconditioner" else {}
    op = A if where == "preconditioner" else An
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x1, i1, x2, i2 = _both(op, b, rtol=1e-10, **kw)
    assert i1.reason == i2.reason == "non_finite"
    assert (i1.iterations, i1.matvecs) == (i2.iterations, i2.matvecs)
    assert bool(torch.isnan(x1).all()) and bool(torch.isnan(x2).all())


def test_a_user_callable_under_grad_mode_stays_on_the_recorded_block_loop():
    """The fast path runs without recording; a callable may hold parameters, so it is not taken.

    (The block loop records the solve, as before the fast path existed; differentiating through
    the iterations is not supported, so backward raises instead of silently losing the gradient.)
    """
    A, b = _system(1.0)
    D = A.to_dense()
    s = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    x = gmres(lambda X: s * (D @ X), b, rtol=1e-10)
    assert x.requires_grad
    with torch.no_grad():  # without grad mode the fast path gives the same solution
        y = gmres(lambda X: s * (D @ X), b, rtol=1e-10)
    torch.testing.assert_close(x.detach(), y, rtol=1e-8, atol=1e-10)
