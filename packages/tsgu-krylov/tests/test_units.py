"""Results do not depend on the units (issue 23, items 2-4; DESIGN.md rule 7).

* Scale: ``b`` and the loss multiplied by 1e-12 … 1e12 give the same relative accuracy, forward
  and gradients, for every solver of tsgu-krylov (directly and through ``sparse_generic_solve``,
  by name and as a function), against dense ``torch.linalg.solve`` references in float64.
* One tolerance story: a solver named by string solves to the generic solve's documented rtol
  (1e-10 in float64), not to its own looser default; no absolute floor unless one is given;
  BiCGSTAB's 0.2.7 floor, in a direct call, is reported when it decides.
* Tight tolerances: a solve whose recurrence met the tolerance is continued from the true
  residual, so no warning is given for a solve that meets the requested accuracy.
* Autocast: every public entry runs under CPU bfloat16 autocast with float32 inputs, as in float32.
* 0.2.7 behaviours: a user ``eps`` in ``linear_cg``, ``minres`` with a matrix of right-hand sides
  against a batched matrix, with several shifts; ``bicgstab`` with a warm start and a callable.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from tsgu_krylov import (
    BICGSTABSettings,
    ConvergenceWarning,
    bicgstab,
    gmres,
    linear_cg,
    lsmr,
    minres,
    sparse_generic_lstsq,
    sparse_generic_solve,
)
from tsgu_ops.testing import grid_operator

F64 = torch.float64
SCALES = [1e-12, 1e-6, 1.0, 1e6, 1e12]


def spd_system(n_side: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A shifted 2-D Laplacian (SPD, condition ~30), a right-hand side and a loss weight."""
    A = grid_operator((n_side, n_side), 0.0, F64).to_dense() + 0.1 * torch.eye(n_side * n_side, dtype=F64)
    g = torch.Generator().manual_seed(0)
    n = A.shape[0]
    return A, torch.randn(n, dtype=F64, generator=g), torch.randn(n, dtype=F64, generator=g)


def general_system(n_side: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A non-symmetric convection-diffusion operator with extra upper entries."""
    A, b, w = spd_system(n_side)
    g = torch.Generator().manual_seed(1)
    A = grid_operator((n_side, n_side), 0.5, F64).to_dense()
    A = A + 0.3 * torch.triu(torch.randn(A.shape, dtype=F64, generator=g), 1) * (A != 0)
    return A, b, w


def dense_reference(A: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``x = A⁻¹ b`` and the gradients of ``L = w·x``: ``dB = A⁻ᵀ w``, ``dA = −dB xᵀ`` on A's pattern."""
    x = torch.linalg.solve(A, b)
    gb = torch.linalg.solve(A.T, w)
    gA = -(gb[:, None] * x[None, :]) * (A != 0)
    return x, gb, gA


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def errors_through_generic(A, b, w, **kw) -> float:
    """Largest relative error of x, dL/dB and dL/dA through sparse_generic_solve."""
    As = A.to_sparse_csr().requires_grad_()
    bs = b.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a solve that misses: fail loudly
        x = sparse_generic_solve(As, bs, **kw)
        (x * w).sum().backward()
    xr, gbr, gAr = dense_reference(A, b, w)
    assert As.grad is not None and bs.grad is not None
    return max(rel(x.detach(), xr), rel(bs.grad, gbr), rel(As.grad.to_dense(), gAr))


# --- scale tests: sparse_generic_solve, every solver, by name and as a function -------------------

NAMED = [
    ("cg", spd_system),
    ("minres", spd_system),
    ("bicgstab", general_system),
    ("gmres", general_system),
    (None, spd_system),
    (None, general_system),
]


@pytest.mark.parametrize("what", ["b", "loss"])
@pytest.mark.parametrize("solver,system", NAMED, ids=[f"{s}-{f.__name__}" for s, f in NAMED])
def test_generic_solve_by_name_has_the_same_accuracy_at_every_scale(solver, system, what):
    A, b, w = system()
    for s in SCALES:
        bs, ws = (b * s, w) if what == "b" else (b, w * s)
        err = errors_through_generic(A, bs, ws, solve=solver)
        # the generic solve's documented rtol 1e-10 (condition ~30-100 here); 0.2.7's floors gave 1.0
        assert err < 1e-7, (solver, what, s, err)


FUNCTIONS = [(linear_cg, spd_system, 1e-3), (minres, spd_system, 1e-7), (bicgstab, general_system, 1e-4)]


@pytest.mark.parametrize("what", ["b", "loss"])
@pytest.mark.parametrize("fn,system,bound", FUNCTIONS, ids=[f.__name__ for f, _, _ in FUNCTIONS])
def test_generic_solve_with_a_0_2_7_function_has_the_same_accuracy_at_every_scale(fn, system, bound, what):
    # 0.2.7's relative defaults (linear_cg 1e-5, bicgstab 1e-6) apply, its absolute floor does not
    A, b, w = system()
    errs = []
    for s in SCALES:
        bs, ws = (b * s, w) if what == "b" else (b, w * s)
        errs.append(errors_through_generic(A, bs, ws, solve=fn))
    assert max(errs) < bound, errs
    assert max(errs) <= 10 * min(errs) + 1e-12, errs  # the same accuracy whatever the units


def test_bicgstab_gradient_with_a_tiny_loss_is_right():
    # the case: the loss ×1e-9 made the gradient 80 % wrong through the absolute floor
    A, b, w = general_system()
    assert errors_through_generic(A, b, 1e-9 * w, solve="bicgstab") < 1e-7


def test_named_solver_gets_the_generic_default_not_its_own():
    A, b, w = spd_system()
    for name in ("cg", "bicgstab", "gmres", "minres"):
        # linear_cg's own default is 1e-5 (error ~4e-6 here), bicgstab 1e-6 plus a floor, gmres 1e-5
        assert errors_through_generic(A, b, w, solve=name) < 1e-8, name
    # a tolerance given by the caller is used as given, in both directions
    As = A.to_sparse_csr()
    x = sparse_generic_solve(As, b, "cg", rtol=1e-3)
    assert 1e-12 < rel(x, torch.linalg.solve(A, b)) < 1e-1


def test_a_user_absolute_floor_is_applied():
    A, b, _ = general_system()
    b = 1e-6 * b
    x = sparse_generic_solve(A.to_sparse_csr(), b, "bicgstab", rtol=1e-12, atol=1e-3)
    # the caller's floor 1e-3 ≫ ‖b‖: the solve stops at once (x = 0), as asked
    assert float((b - A @ x).norm()) <= 1e-3


# --- direct calls ---------------------------------------------------------------------------------


DIRECT = [
    (linear_cg, spd_system, {"tolerance": 1e-11}),
    (minres, spd_system, {"rtol": 1e-11}),
    (bicgstab, general_system, {"rtol": 1e-11, "atol": 0.0}),
    (gmres, general_system, {"rtol": 1e-11}),
]


@pytest.mark.parametrize("fn,system,kw", DIRECT, ids=[f.__name__ for f, _, _ in DIRECT])
def test_direct_solver_accuracy_does_not_depend_on_the_scale_of_b(fn, system, kw):
    A, b, _ = system()
    As = A.to_sparse_csr()
    B = torch.stack([b, -b.flip(0)], 1)  # two columns, two scales apart
    for s in SCALES:
        Bs = B * torch.tensor([s, 1.0 / s], dtype=F64)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            X, info = fn(As, Bs, return_info=True, **kw)
        ref = torch.linalg.solve(A, Bs)
        for j in range(2):
            assert rel(X[:, j], ref[:, j]) < 1e-8, (s, j)
        res = (Bs - A @ X).norm(dim=0) / Bs.norm(dim=0)
        assert bool((res <= 1e-11).all()), res
        assert info.tolerance == pytest.approx(1e-11)


def test_lsmr_accuracy_does_not_depend_on_the_scale_of_b():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(40, 12, dtype=F64, generator=g) * (torch.rand(40, 12, generator=g) < 0.4)
    A = A + torch.eye(40, 12, dtype=F64)
    b = torch.randn(40, dtype=F64, generator=g)
    ref = torch.linalg.lstsq(A, b.unsqueeze(-1)).solution.squeeze(-1)
    for s in SCALES:
        x, _ = lsmr(A.to_sparse(), b * s, atol=1e-12, btol=1e-12, maxiter=500)
        assert rel(x / s, ref) < 1e-9, s


def test_lstsq_gradients_do_not_depend_on_the_scale_of_b_or_of_the_loss():
    g = torch.Generator().manual_seed(4)
    D = torch.randn(30, 8, dtype=F64, generator=g) * (torch.rand(30, 8, generator=g) < 0.5)
    D = D + torch.eye(30, 8, dtype=F64)
    b = torch.randn(30, dtype=F64, generator=g)
    w = torch.randn(8, dtype=F64, generator=g)
    for s in SCALES:
        for bs, ws in ((b * s, w), (b, w * s)):
            As = D.to_sparse().requires_grad_()
            Ad = D.clone().requires_grad_()
            x = sparse_generic_lstsq(As, bs)
            (x * ws).sum().backward()
            xr = torch.linalg.pinv(Ad) @ bs
            (xr * ws).sum().backward()
            assert rel(x.detach(), xr.detach()) < 1e-8
            assert rel(As.grad.to_dense(), Ad.grad * (D != 0)) < 1e-7


def test_bicgstab_default_absolute_floor_is_reported_when_it_decides():
    # 0.2.7's abstol=1e-8 is kept for a direct call, but it no longer passes silently
    A, b, _ = general_system()
    b = 2e-5 * b / b.norm()
    with pytest.warns(ConvergenceWarning, match="absolute tolerance atol=1e-08"):
        x, info = bicgstab(A.to_sparse_csr(), b, rtol=1e-12, return_info=True)
    true_rel = float((b - A @ x).norm() / b.norm())
    assert true_rel > 1e-12  # the floor, not rtol, ended it
    assert info.reason == "converged_atol"
    assert info.tolerance == pytest.approx(1e-8 / 2e-5)
    assert true_rel <= info.tolerance
    # with atol=0 the same call reaches rtol, and says so
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        x, info = bicgstab(A.to_sparse_csr(), b, rtol=1e-12, atol=0.0, return_info=True)
    assert float((b - A @ x).norm() / b.norm()) <= 1e-12
    assert info.reason == "converged" and info.tolerance == 1e-12
    # a floor the caller chose is applied and reported, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        _, info = bicgstab(A.to_sparse_csr(), b, rtol=1e-12, atol=1e-8, return_info=True)
    assert info.reason == "converged_atol" and info.tolerance == pytest.approx(5e-4)


# --- tight tolerances -------------------------------------------------------------------------------


def graded_laplacian() -> tuple[torch.Tensor, torch.Tensor]:
    """``D^½ L D^½`` on a 30×30 grid with ``D`` over three decades: CG's and MINRES's recursive
    residuals drift below the true one at tolerances near 1e-12."""
    g = torch.Generator().manual_seed(10)
    L = grid_operator((30, 30), 0.0, F64).to_dense()
    n = L.shape[0]
    d = torch.logspace(0, 3, n, dtype=F64)[torch.randperm(n, generator=g)].sqrt()
    return d[:, None] * L * d[None, :], torch.randn(n, dtype=F64, generator=g)


@pytest.mark.parametrize("name", ["cg", "minres"])
def test_tight_tolerance_is_met_without_a_warning(name):
    A, b = graded_laplacian()
    As = A.to_sparse_csr()
    fn = {"cg": linear_cg, "minres": minres}[name]
    for tol in (1e-12, 1e-13):
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            x, info = fn(As, b, rtol=tol, max_iter=6000, return_info=True)
        assert float((b - A @ x).norm() / b.norm()) <= tol
        assert info.reason == "converged"
    # and from inside backward(): the adjoint solve at 1e-12 meets it too
    As = A.to_sparse_csr().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        x = sparse_generic_solve(As, b, name, rtol=1e-12, max_iter=6000)
        x.sum().backward()
    _, _, gA = dense_reference(A, b, torch.ones_like(b))
    assert rel(As.grad.to_dense(), gA) < 1e-8


# --- autocast ---------------------------------------------------------------------------------------


def _autocast_pair(fn):
    """``fn()`` in float32 and under CPU bfloat16 autocast (both with float32 inputs)."""
    ref = fn()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn()
    return ref, out


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_every_solver_runs_in_float32_under_bfloat16_autocast(layout):
    A64, b64, _ = spd_system(6)
    G64, _, _ = general_system(6)
    A32 = A64.float().to_sparse(layout=layout)
    G32 = G64.float().to_sparse(layout=layout)
    b = b64.float()
    B = torch.stack([b, b.flip(0)], 1)
    calls = {
        "linear_cg": lambda: linear_cg(A32, B),
        "minres": lambda: minres(A32, B),
        "bicgstab": lambda: bicgstab(G32, B, atol=0.0),
        "gmres": lambda: gmres(G32, B),
        "lsmr": lambda: lsmr(A32, b)[0],
    }
    for name, call in calls.items():
        ref, out = _autocast_pair(call)
        assert out.dtype == torch.float32, name
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6, msg=name)
        exact = torch.linalg.solve((G64 if name in ("bicgstab", "gmres") else A64), B.double())
        exact = exact[:, 0] if name == "lsmr" else exact
        assert rel(out.double(), exact) < 1e-4, name


@pytest.mark.parametrize("solver", [None, "cg", "minres", "bicgstab", "gmres"])
def test_generic_solve_and_its_gradient_under_bfloat16_autocast(solver):
    A64, b64, w64 = general_system() if solver in ("bicgstab", "gmres", None) else spd_system()

    B64 = torch.stack([b64, b64.flip(0)], 1)  # a block: the sparse matrix-matrix products
    W = torch.stack([w64, -w64], 1).float()

    def run():
        As = A64.float().to_sparse_csr().requires_grad_()
        bs = B64.float().requires_grad_()
        x = sparse_generic_solve(As, bs, solver)
        return x, As, bs

    ref = run()
    (ref[0] * W).sum().backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run()
    assert out[0].dtype == torch.float32
    (out[0] * W).sum().backward()  # backward outside the region, as PyTorch recommends
    torch.testing.assert_close(out[0], ref[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[1].grad.to_dense(), ref[1].grad.to_dense(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out[2].grad, ref[2].grad, rtol=1e-4, atol=1e-6)
    xr = torch.linalg.solve(A64, B64)
    gbr = torch.linalg.solve(A64.T, W.double())
    assert rel(out[0].detach().double(), xr) < 1e-4 and rel(out[2].grad.double(), gbr) < 1e-4


def test_generic_solve_accepts_a_bfloat16_rhs_made_by_autocast():
    A64, b64, _ = spd_system()
    A = A64.float().to_sparse_csr()
    W = torch.eye(b64.shape[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b = W @ torch.stack([b64, b64.flip(0)], 1).float()  # an autocast op: bfloat16
        assert b.dtype == torch.bfloat16
        x = sparse_generic_solve(A, b, "cg")
    assert x.dtype == torch.float32
    assert rel(x.double(), torch.linalg.solve(A64, b.double())) < 1e-5


def test_generic_lstsq_under_bfloat16_autocast():
    g = torch.Generator().manual_seed(5)
    D = (torch.randn(20, 6, generator=g) * (torch.rand(20, 6, generator=g) < 0.5)) + torch.eye(20, 6)
    b = torch.randn(20, generator=g)

    def run():
        As = D.to_sparse().requires_grad_()
        x = sparse_generic_lstsq(As, b)
        x.sum().backward()
        return x, As.grad.to_dense()

    ref = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        As = D.to_sparse().requires_grad_()
        x = sparse_generic_lstsq(As, b)
    x.sum().backward()
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, ref[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(As.grad.to_dense(), ref[1], rtol=1e-4, atol=1e-5)


# --- 0.2.7 behaviours -----------------------------------------------------------------------------


def test_linear_cg_user_eps_raises_for_an_active_column():
    # 0.2.7: rᵀr = 1e-12 < eps = 1e-10 for a column above its tolerance is a breakdown
    rhs = torch.ones(3, dtype=F64)
    with pytest.raises(RuntimeError, match="residual inner product must be finite and at least eps"):
        linear_cg(torch.eye(3, dtype=F64), rhs, initial_guess=(1 - 1e-6) * rhs, tolerance=1e-8, eps=1e-10)
    # the default eps (the dtype's tiny) keeps freezing a column whose residual vanished
    x = linear_cg(torch.eye(3, dtype=F64), rhs, initial_guess=(1 - 1e-6) * rhs, tolerance=1e-8)
    torch.testing.assert_close(x, rhs)
    # a user eps the solve never falls below changes nothing
    A, b, _ = spd_system()
    x = linear_cg(A.to_sparse_csr(), b, tolerance=1e-10, eps=1e-30)
    assert rel(x, torch.linalg.solve(A, b)) < 1e-8


def _spd_batch(batch: tuple[int, ...], n: int, g: torch.Generator) -> torch.Tensor:
    M = torch.randn(*batch, n, n, dtype=F64, generator=g)
    M = M @ M.mT
    return M / torch.linalg.vector_norm(M) + 0.1 * torch.eye(n, dtype=F64)


@pytest.mark.parametrize("fn", [minres, linear_cg], ids=["minres", "linear_cg"])
def test_a_matrix_of_rhs_broadcasts_against_a_batched_matrix(fn):
    g = torch.Generator().manual_seed(6)
    A = _spd_batch((3,), 20, g)
    B = torch.randn(20, 5, dtype=F64, generator=g)
    kw = {"rtol": 1e-12} if fn is minres else {"tolerance": 1e-12}
    X = fn(A, B, **kw)
    assert X.shape == (3, 20, 5)
    torch.testing.assert_close(X, torch.linalg.solve(A, B.expand(3, 20, 5)), rtol=1e-9, atol=1e-10)
    x0 = torch.zeros_like(B)
    X = fn(A, B, x0=x0, **kw)
    torch.testing.assert_close(X, torch.linalg.solve(A, B.expand(3, 20, 5)), rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="does not broadcast"):
        fn(A, torch.randn(2, 20, 5, dtype=F64), **kw)


@pytest.mark.parametrize(
    "rhs_shape,batch",
    [((20, 5), ()), ((3, 20, 5), ()), ((3, 20, 5), (3,)), ((20, 5), (3,)), ((20,), (3,))],
)
def test_minres_with_several_shifts_and_a_matrix_of_rhs(rhs_shape, batch):
    g = torch.Generator().manual_seed(7)
    n = 20
    A = _spd_batch(batch, n, g)
    rhs = torch.randn(rhs_shape, dtype=F64, generator=g)
    shifts = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    X = minres(A, rhs, value=-1, shifts=shifts, rtol=1e-12)
    # (−A + σ I) x = b for every σ, broadcast as 0.2.7 did: shifts first, then the batch
    eye = torch.eye(n, dtype=F64)
    M = -A + shifts.view(3, *([1] * A.dim())) * eye
    B = rhs.unsqueeze(-1) if rhs.dim() == 1 else rhs
    while M.dim() < B.dim() + 1:
        M = M.unsqueeze(1)
    ref = torch.linalg.solve(M, B)
    ref = ref.squeeze(-1) if rhs.dim() == 1 else ref
    assert X.shape == ref.shape
    torch.testing.assert_close(X, ref, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("exact_start", [False, True])
def test_bicgstab_warm_start_with_a_callable_and_a_block(exact_start):
    # 0.2.7 solved column by column (one operator call per column for an exact start); here the
    # block is one call per step: same solutions, fewer calls (docs/differences.md)
    A = torch.tensor([[4.0, 1.0, 0.0], [0.0, 3.0, -0.5], [0.25, 0.0, 2.0]], dtype=F64)
    rhs = torch.tensor([[1.0, 3.0], [2.0, -1.0], [-1.0, 2.0]], dtype=F64)
    expected = torch.linalg.solve(A, rhs)
    guess = expected.clone() if exact_start else torch.full_like(rhs, 0.3)
    saved = guess.clone()
    calls: list[tuple[int, ...]] = []

    def op(x):
        calls.append(tuple(x.shape))
        return A @ x

    x = bicgstab(
        op, rhs, initial_guess=guess, settings=BICGSTABSettings(reltol=1e-12, abstol=1e-13, matvec_max=40)
    )
    torch.testing.assert_close(x, expected, atol=1e-11, rtol=1e-11)
    torch.testing.assert_close(guess, saved)
    assert set(calls) == {(3, 2)}
    if exact_start:
        assert len(calls) == 1
