"""The bridges' results do not depend on the units (issue 23, items 2 and 4; DESIGN.md rule 7).

``b`` and the loss multiplied by 1e-12 … 1e12 give the same relative accuracy, forward and
gradients, for the SciPy bridge (SuperLU and every named Krylov solver: SciPy's MINRES lost 0.3 %
at ‖b‖ = 1e6 and 95 % at 1e12, CGS's breakdown test is absolute) and the JAX bridge, against
dense ``torch.linalg.solve`` references in float64; and both run in float32 under CPU bfloat16
autocast.  (The CuPy path is the SciPy code with CuPy's modules; it needs a GPU.)
"""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch

from tsgu_bridges import ConvergenceWarning, sparse_solve_c4t
from tsgu_ops.testing import grid_operator

F64 = torch.float64
SCALES = [1e-12, 1e-6, 1.0, 1e6, 1e12]
HAVE_JAX = importlib.util.find_spec("jax") is not None


def system(symmetric: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A shifted 2-D Laplacian (SPD) or a convection-diffusion operator; ``b``; a loss weight."""
    n_side = 8
    if symmetric:
        A = grid_operator((n_side, n_side), 0.0, F64).to_dense() + 0.1 * torch.eye(n_side**2, dtype=F64)
    else:
        g = torch.Generator().manual_seed(1)
        A = grid_operator((n_side, n_side), 0.5, F64).to_dense()
        A = A + 0.3 * torch.triu(torch.randn(A.shape, dtype=F64, generator=g), 1) * (A != 0)
    g = torch.Generator().manual_seed(0)
    n = A.shape[0]
    return A, torch.randn(n, dtype=F64, generator=g), torch.randn(n, dtype=F64, generator=g)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def max_error(solve_fn, A, b, w, strict: bool = True) -> float:
    """Largest relative error of ``x``, ``dL/dB``, ``dL/dA`` for ``L = w·x`` against dense float64.

    ``strict``: a :class:`ConvergenceWarning` fails the test (not for SciPy's MINRES, which stops
    on ``‖r‖ ≤ rtol ‖A‖ ‖x‖``, a few times above ``rtol ‖b‖``: the bridge says so).
    """
    As = A.to_sparse_csr().requires_grad_()
    bs = b.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error" if strict else "ignore", ConvergenceWarning)
        x = solve_fn(As, bs)
        (x * w).sum().backward()
    xr = torch.linalg.solve(A, b)
    gb = torch.linalg.solve(A.T, w)
    gA = -(gb[:, None] * xr[None, :]) * (A != 0)
    assert As.grad is not None and bs.grad is not None
    return max(rel(x.detach(), xr), rel(bs.grad, gb), rel(As.grad.to_dense(), gA))


SCIPY = [
    (None, False, 1e-12),
    ("spsolve", True, 1e-12),
    ("cg", True, 1e-8),
    ("minres", True, 1e-7),
    ("gmres", False, 1e-8),
    ("cgs", False, 1e-8),
]


@pytest.mark.parametrize("what", ["b", "loss"])
@pytest.mark.parametrize("solver,symmetric,bound", SCIPY, ids=[str(s[0]) for s in SCIPY])
def test_scipy_bridge_has_the_same_accuracy_at_every_scale(solver, symmetric, bound, what):
    A, b, w = system(symmetric)
    kw = {} if solver in (None, "spsolve") else {"tol": 1e-10}
    errs = []
    for s in SCALES:
        bs, ws = (b * s, w) if what == "b" else (b, w * s)
        solve = lambda A_, b_: sparse_solve_c4t(A_, b_, solver, **kw)  # noqa: E731
        errs.append(max_error(solve, A, bs, ws, strict=solver != "minres"))
    assert max(errs) < bound, errs
    assert max(errs) <= 10 * min(errs) + 1e-13, errs  # the same accuracy whatever the units


def test_scipy_bridge_named_transpose_solver_is_scale_free_too():
    A, b, w = system(False)
    for s in (1e-9, 1e9):
        err = max_error(
            lambda A_, b_: sparse_solve_c4t(A_, b_, "gmres", transpose_solve="cgs", tol=1e-10), A, b, w * s
        )
        assert err < 1e-8, (s, err)


def test_scipy_bridge_applies_a_user_atol_in_the_units_of_b():
    A, b, _ = system(True)
    b = 1e-6 * b
    x = sparse_solve_c4t(A.to_sparse_csr(), b, "cg", tol=1e-12, atol=1e-3 * float(b.norm()))
    res = float((b - A @ x).norm())
    assert res <= 1e-3 * float(b.norm())  # the caller's floor, honoured (not rescaled away)
    assert res > 1e-12 * float(b.norm())  # and it did decide: a loose solve, as asked


@pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed")
@pytest.mark.parametrize("what", ["b", "loss"])
def test_jax_bridge_has_the_same_accuracy_at_every_scale(what):
    from tsgu_bridges.jax_sparse_solve import sparse_solve_j4t

    A, b, w = system(False)
    errs = []
    for s in SCALES:
        bs, ws = (b * s, w) if what == "b" else (b, w * s)
        errs.append(max_error(sparse_solve_j4t, A, bs, ws))
    assert max(errs) < 1e-7, errs
    assert max(errs) <= 10 * min(errs) + 1e-13, errs


@pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed")
def test_jax_bridge_default_with_x0_and_a_block():
    import jax.numpy as jnp

    from tsgu_bridges.jax_sparse_solve import sparse_solve_j4t

    A, b, _ = system(False)
    B = torch.stack([1e-9 * b, 1e9 * b.flip(0)], 1)
    X = sparse_solve_j4t(A.to_sparse_csr(), B, x0=jnp.zeros(tuple(B.shape), dtype=jnp.float32))
    ref = torch.linalg.solve(A, B)
    assert rel(X[:, 0], ref[:, 0]) < 1e-8 and rel(X[:, 1], ref[:, 1]) < 1e-8


# --- autocast ---------------------------------------------------------------------------------------


def _bridge_calls():
    calls = [
        ("scipy-lu", lambda A_, B_: sparse_solve_c4t(A_, B_)),
        ("scipy-gmres", lambda A_, B_: sparse_solve_c4t(A_, B_[:, 0], "gmres", tol=1e-6)),
    ]
    if HAVE_JAX:
        from tsgu_bridges.jax_sparse_solve import sparse_solve_j4t

        calls.append(("jax", lambda A_, B_: sparse_solve_j4t(A_, B_)))
    return calls


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("name,call", _bridge_calls(), ids=[c[0] for c in _bridge_calls()])
def test_bridges_run_in_float32_under_bfloat16_autocast(name, call, layout):
    A64, b64, _ = system(False)
    B64 = torch.stack([b64, b64.flip(0)], 1)

    def run(B: torch.Tensor):
        As = A64.float().to_sparse(layout=layout).requires_grad_()
        return call(As, B), As

    x_ref, A_ref = run(B64.float())
    x_ref.sum().backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        W = torch.eye(B64.shape[0])
        B = W @ B64.float()  # what an autocast region hands on: bfloat16
        assert B.dtype == torch.bfloat16
        x, As = run(B64.float())
        x_half, _ = run(B)  # a bfloat16 right-hand side from autocast is taken in float32
    x.sum().backward()
    assert x.dtype == torch.float32 and x_half.dtype == torch.float32
    torch.testing.assert_close(x, x_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(As.grad.to_dense(), A_ref.grad.to_dense(), rtol=1e-4, atol=1e-6)
    exact = torch.linalg.solve(A64, B64 if x.dim() == 2 else B64[:, 0])
    assert rel(x.double(), exact) < 1e-4
    exact_half = torch.linalg.solve(A64, B.double() if x.dim() == 2 else B[:, 0].double())
    assert rel(x_half.double(), exact_half) < 1e-4  # B itself was rounded to bfloat16
