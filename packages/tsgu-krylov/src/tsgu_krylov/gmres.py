"""Restarted GMRES(m) with right preconditioning, for general non-symmetric systems.

Each cycle runs ``m`` Arnoldi steps on ``A M⁻¹`` from the current residual, orthogonalising by
classical Gram–Schmidt applied twice (two matrix products per step instead of a loop over the
basis: as stable as modified Gram–Schmidt in practice, and vectorised), and keeps the Hessenberg
matrix triangular with Givens rotations — accumulated as one small orthogonal matrix, so a new
column is rotated by one product — so that the residual norm ``|g_{j+1}|`` is known at every step
without forming the iterate.  With right preconditioning that number is the true residual.

All columns of a block right-hand side share the Arnoldi loop but have their own basis, rotations
and stopping step: a column that converged at step ``j`` of a cycle takes the iterate of that
step.  SciPy's ``gmres`` solves one vector and counts ``maxiter`` in restart cycles; here
``max_iter`` counts Arnoldi steps (operator applications).

One right-hand side on the CPU takes a scalar copy of that loop (:func:`_single_column_gmres`):
one contiguous basis, the rotations and the small triangular solve on Python floats, and the
second Gram–Schmidt pass only when the first one cancelled; same cycles, counts and reports.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tsgu_ops.internal import autocast_fp32

from ._common import (
    alias,
    apply_checked,
    check_on_failure,
    check_rhs,
    check_tolerance,
    check_x0,
    column_non_finite,
    finish,
    givens,
    not_differentiable,
    operator,
    preconditioner_operator,
    resolve_check_every,
    rhs_block,
    true_relative_residual,
)
from ._device_gmres import GMRES_CHECK_EVERY, device_gmres
from ._graphs import capture_not_offered
from ._operator import SparseOperator, col_norm, from_block
from .preconditioners import Preconditioner

__all__ = ["gmres"]


@autocast_fp32
def gmres(
    matmul_closure: Any,
    rhs: torch.Tensor,
    *,
    x0: torch.Tensor | None = None,
    initial_guess: torch.Tensor | None = None,
    preconditioner: Any = None,
    rtol: float | None = None,
    tol: float | None = None,
    atol: float = 0.0,
    restart: int = 30,
    max_iter: int | None = None,
    maxiter: int | None = None,
    return_info: bool = False,
    check_every: int | None = None,
    on_failure: str = "warn",
    loop: str = "auto",
    capture: bool | None = None,
) -> Any:
    """Solve ``A x = b`` for a general square ``A`` by restarted GMRES.

    Parameters
    ----------
    matmul_closure : Tensor or callable
        ``A``: sparse COO/CSR or dense ``(n, n)`` / ``(*batch, n, n)``, or a callable on blocks.
        A sparse tensor's indices are validated.
    rhs : Tensor
        ``(n,)`` or ``(*batch, n, k)``; with a batched tensor ``A`` also ``(*batch, n)`` (one
        vector per item).  float32 or float64, ``A``'s dtype.
    x0, initial_guess : Tensor
        Starting point (aliases).
    preconditioner : Tensor or callable
        Applies ``M⁻¹`` (right preconditioning: the residual that is tested is the true one).
    rtol, tol : float
        Relative residual tolerance (aliases; default 1e-5, SciPy's;
        :func:`~tsgu_krylov.sparse_generic_solve` uses 1e-10 in float64, 1e-6 in float32).
    atol : float
        Absolute residual tolerance (default 0: the accuracy does not depend on the units of ``b``).
    restart : int
        Arnoldi steps per cycle (the basis holds ``restart + 1`` blocks).
    max_iter, maxiter : int
        Cap on Arnoldi steps over all cycles (aliases; default ``min(10 n, 10000)``).
    return_info : bool
        Also return a :class:`~tsgu_krylov.SolveInfo`.
    check_every : int, optional
        Arnoldi steps between host-side convergence checks (default: 1 on the CPU, 8 on an
        accelerator).
    on_failure : {"warn", "raise", "ignore"}
    loop : {"auto", "device", "host"}
        ``"device"``: the device loop (:mod:`tsgu_krylov._device_gmres`): per-column scalars stay
        on the device, about 15 kernel calls per Arnoldi step, one host sync every
        ``check_every`` steps (default 8); same iterate, step and matvec counts and report as the
        block loop with ``check_every=1``.  ``"host"``: the block loop (and, for one right-hand
        side on the CPU, its scalar copy).  ``"auto"`` (default): the device loop on
        accelerators, the host loops on the CPU.
    capture : bool, optional
        Accepted for symmetry with :func:`~tsgu_krylov.linear_cg` and :func:`~tsgu_krylov.minres`
        (and validated): CUDA-graph capture is not offered for this solver yet (its Arnoldi steps work
        on a basis that grows within a cycle (a different shape each step));
        ``True`` warns and the loop runs uncaptured.

    Returns
    -------
    Tensor
        ``x`` shaped like ``rhs`` (and the info with ``return_info=True``).

    Raises
    ------
    TypeError
        ``rhs`` or a tensor operator/preconditioner of a dtype other than float32/float64 (complex
        values are not supported by tsgu-krylov), or of different dtypes.
    ValueError
        Bad shapes or keywords, a ``meta`` tensor, a sparse tensor with out-of-range indices.
    RuntimeError
        A non-tensor, non-callable operator, or one that returns the wrong shape (0.2.7 messages).

    Notes
    -----
    A NaN or an infinity in ``A``, ``b`` or the preconditioner, or an iterate that overflows, gives
    a :class:`~tsgu_krylov.ConvergenceWarning` (a :class:`~tsgu_krylov.ConvergenceError` with
    ``on_failure="raise"``) and NaN in the affected columns, never a plausible vector; the info's
    ``non_finite`` marks them and its ``reason`` is ``"non_finite"``.

    Examples
    --------
    >>> import torch
    >>> from tsgu_krylov import gmres
    >>> A = torch.tensor([[3.0, 1.0], [-1.0, 2.0]], dtype=torch.float64).to_sparse()
    >>> gmres(A, torch.tensor([1.0, 1.0], dtype=torch.float64), rtol=1e-10)
    tensor([0.1429, 0.5714], dtype=torch.float64)
    """
    check_rhs(rhs)
    A = operator(matmul_closure, rhs)
    M = preconditioner_operator(preconditioner, rhs)
    rtol = alias("rtol", rtol, tol=tol)
    rtol = check_tolerance("rtol", 1e-5 if rtol is None else rtol)
    atol = check_tolerance("atol", atol)
    if isinstance(restart, bool) or not isinstance(restart, int) or restart < 1:
        raise ValueError(f"restart must be a positive int, got {restart!r}")
    check_on_failure(on_failure)
    if loop not in ("auto", "device", "host"):
        raise ValueError(f"loop must be 'auto', 'device' or 'host', got {loop!r}")
    capture_not_offered(capture, "gmres")
    device_loop = loop == "device" or (loop == "auto" and rhs.device.type != "cpu")
    if device_loop and check_every is None:
        check_every = GMRES_CHECK_EVERY
    check_every = resolve_check_every(check_every, rhs.device)
    B, vector = rhs_block(rhs, matmul_closure)
    X0 = check_x0(alias("x0", x0, initial_guess=initial_guess), rhs, B, "x0")
    n = B.shape[-2]
    max_iter = alias("max_iter", max_iter, maxiter=maxiter)
    max_iter = min(10 * n, 10_000) if max_iter is None else int(max_iter)
    if max_iter < 0:
        raise ValueError(f"max_iter must be nonnegative, got {max_iter}")
    m = max(1, min(restart, n))

    b_norm = col_norm(B)
    target = torch.clamp(rtol * b_norm, min=atol)
    X = torch.zeros_like(B) if X0 is None else X0.clone()
    lead = B.shape[:-2] + B.shape[-1:]  # per-column scalar shape (*batch, k)
    dtype, device = B.dtype, B.device
    iterations = 0
    matvecs = 0
    first = True
    breakdown = torch.zeros(lead, dtype=torch.bool, device=device)
    # columns that met a NaN/Inf (in A, b, M or an overflowing iterate): frozen, NaN at the end
    non_finite = torch.zeros(lead, dtype=torch.bool, device=device)
    # One right-hand side on the CPU: the same restarted Arnoldi on a contiguous basis, with the
    # Givens rotations and the small triangular solve on Python scalars (reading them costs nothing
    # there) and a second Gram–Schmidt pass only when the first one cancelled.  Not when autograd
    # could record the solve (b or x0 requiring grad, or a user callable, operator or preconditioner,
    # that may hold parameters): the scalars are not recorded, so those keep the block loop.  Inside
    # sparse_generic_solve's autograd Function grad mode is off and the fast path applies.
    user_callable = any(
        op is not None and not isinstance(op, (torch.Tensor, SparseOperator, Preconditioner))
        for op in (matmul_closure, preconditioner)
    )
    needs_grad = torch.is_grad_enabled() and (
        B.requires_grad or (X0 is not None and X0.requires_grad) or user_callable
    )
    single = B.dim() == 2 and B.shape[-1] == 1 and device.type == "cpu" and not needs_grad
    single = single and not device_loop
    if device_loop:
        X, iterations, matvecs, breakdown, non_finite = device_gmres(
            A, M, B, X, target, m, max_iter, check_every
        )
    if single:
        X, iterations, matvecs, broke, bad = _single_column_gmres(
            A, M, B, X, float(target), m, max_iter, check_every
        )
        breakdown |= broke
        non_finite |= bad
    while not single and not device_loop and iterations < max_iter:
        R = B - (apply_checked(A, X, "matmul_closure", "rhs") if first else A(X))
        matvecs += 1
        beta = col_norm(R)
        non_finite |= ~torch.isfinite(beta) | column_non_finite(X)
        R = R.where(~non_finite.unsqueeze(-2), 0.0)
        beta = beta.where(~non_finite, 0.0)
        active = beta > target
        if not bool(active.any()):
            break
        steps = min(m, max_iter - iterations)
        # basis stored column-major per right-hand side: (*batch, k, steps+1, n), so that the
        # Gram–Schmidt projections are batched matrix-vector products
        Vb = torch.zeros(*lead, steps + 1, n, dtype=dtype, device=device)
        Vb[..., 0, :] = (R / torch.where(beta > 0, beta, 1.0).unsqueeze(-2)).transpose(-1, -2)
        H = torch.zeros(*lead, steps + 1, steps, dtype=dtype, device=device)
        # Qᵀ, the product of the Givens rotations so far (only rows 0..j+1 are ever touched): the
        # new Hessenberg column is rotated by one small matrix product instead of j scalar steps
        Qt = torch.eye(steps + 1, dtype=dtype, device=device).expand(*lead, steps + 1, steps + 1).clone()
        g = torch.zeros(*lead, steps + 1, dtype=dtype, device=device)
        g[..., 0] = beta
        stop = torch.full(lead, steps, dtype=torch.int64, device=device)  # steps used per column
        live = active.clone()
        j_done = 0
        for j in range(steps):
            v = Vb[..., j, :].transpose(-1, -2)  # (*batch, n, k)
            if M is None:
                Z = v
            else:
                Z = apply_checked(M, v.contiguous(), "preconditioner", "residual") if first else M(v)
            first = False
            w = A(Z).transpose(-1, -2).unsqueeze(-1)  # (*lead, n, 1)
            matvecs += 1
            basis = Vb[..., : j + 1, :]  # (*lead, j+1, n)
            h = basis @ w  # classical Gram–Schmidt, twice
            w = w - basis.transpose(-1, -2) @ h
            h2 = basis @ w
            w = w - basis.transpose(-1, -2) @ h2
            h = (h + h2).squeeze(-1)  # (*lead, j+1)
            w = w.squeeze(-1)
            hn = torch.linalg.vector_norm(w, dim=-1)
            Vb[..., j + 1, :] = w / torch.where(hn > 0, hn, 1.0).unsqueeze(-1)
            col = torch.cat([h, hn.unsqueeze(-1)], dim=-1)  # (*lead, j+2)
            col = (Qt[..., : j + 2, : j + 2] @ col.unsqueeze(-1)).squeeze(-1)  # earlier rotations
            c, sg, r = givens(col[..., j], col[..., j + 1])
            row_j, row_j1 = Qt[..., j, : j + 2].clone(), Qt[..., j + 1, : j + 2].clone()
            Qt[..., j, : j + 2] = c.unsqueeze(-1) * row_j + sg.unsqueeze(-1) * row_j1
            Qt[..., j + 1, : j + 2] = -sg.unsqueeze(-1) * row_j + c.unsqueeze(-1) * row_j1
            col = torch.cat([col[..., :j], r.unsqueeze(-1), torch.zeros_like(r).unsqueeze(-1)], dim=-1)
            H[..., : j + 2, j] = col
            g[..., j + 1] = -sg * g[..., j]
            g[..., j] = c * g[..., j]
            res = g[..., j + 1].abs()
            overflow = live & ~(torch.isfinite(r) & torch.isfinite(res))
            non_finite |= overflow
            done_now = live & ~overflow & ((res <= target) | (hn == 0))
            breakdown |= live & ~overflow & (r == 0)
            stop = torch.where(done_now | overflow, torch.full_like(stop, j + 1), stop)
            live = live & ~done_now & ~overflow & (r != 0)
            j_done = j + 1
            iterations += 1
            if j_done % check_every == 0 and not bool(live.any()):
                break
        # y solves the leading stop×stop triangle of each column; the rest is zero
        k = j_done
        Rm = H[..., :k, :k]
        gk = g[..., :k]
        idx = torch.arange(k, device=device)
        keep = idx < stop.unsqueeze(-1)  # (*lead, k)
        Rm = torch.where(
            keep.unsqueeze(-1) & keep.unsqueeze(-2), Rm, torch.zeros((), dtype=dtype, device=device)
        )
        Rm = Rm + torch.diag_embed((~keep).to(dtype))
        diag_ok = torch.diagonal(Rm, dim1=-2, dim2=-1) != 0
        Rm = Rm + torch.diag_embed((~diag_ok).to(dtype))  # broken-down columns: zero step there
        gk = torch.where(keep & diag_ok, gk, 0.0)
        gk = torch.where((active & ~non_finite).unsqueeze(-1), gk, 0.0)
        y = torch.linalg.solve_triangular(Rm, gk.unsqueeze(-1), upper=True).squeeze(-1)  # (*lead, k)
        update = (y.unsqueeze(-2) @ Vb[..., :k, :]).squeeze(-2).transpose(-1, -2)  # (*batch, n, k)
        X = X + (update if M is None else M(update))
    rel, abs_res = true_relative_residual(A, X, B, b_norm)
    matvecs += 1
    outcome = finish(
        "GMRES",
        X=X,
        B=B,
        iterations=iterations,
        matvecs=matvecs,
        rel=rel,
        abs_res=abs_res,
        b_norm=b_norm,
        rtol=rtol,
        atol=atol,
        breakdown=breakdown & ~(abs_res <= torch.clamp(rtol * b_norm, min=atol)),
        on_failure=on_failure,
        non_finite=non_finite,
    )
    X = from_block(outcome.X, vector)
    X = not_differentiable("gmres", X, matmul_closure, rhs, x0, initial_guess, preconditioner)
    return (X, outcome.info) if return_info else X


def _single_column_gmres(
    A: Any,
    M: Any,
    B: torch.Tensor,
    X: torch.Tensor,
    target: float,
    m: int,
    max_iter: int,
    check_every: int,
) -> tuple[torch.Tensor, int, int, bool, bool]:
    """The block loop of :func:`gmres` for one column ``(n, 1)`` on the CPU, on Python scalars.

    Same restart cycles, step counting, stopping, breakdown and non-finite tests, in the same
    order, as the block loop.  The basis is one contiguous ``(steps + 1, n)`` tensor; each step
    applies the operator once, projects with one matrix-vector product each way (classical
    Gram–Schmidt) and repeats the projection only when it cancelled (``‖w‖`` fell below 0.7 of its
    value before the pass: "twice is enough"), which keeps the basis orthogonal to working
    precision.  On operators whose ``A v`` lies mostly in the basis (diffusion-dominated grids) the
    test fires at nearly every step; the saving is then the kernel calls, not the flops.  The
    Hessenberg column is read once per step and rotated, with ``g``, on Python floats; the
    triangular solve at the end of a cycle is a back substitution on them.

    Parameters
    ----------
    A : callable
        The operator on ``(n, 1)`` blocks.
    M : callable or None
        The right preconditioner ``M⁻¹`` on ``(n, 1)`` blocks.
    B : Tensor
        The right-hand side ``(n, 1)``.
    X : Tensor
        The starting point ``(n, 1)``, a copy owned by the solve (updated in place).
    target : float
        ``max(rtol ‖b‖, atol)``, the residual norm to reach.
    m : int
        Arnoldi steps per cycle.
    max_iter : int
        Cap on Arnoldi steps over all cycles.
    check_every : int
        Steps between convergence checks; a column that stopped inside that window keeps its
        iterate, and the remaining steps are counted (as operator applications) as the block loop
        counts them.

    Returns
    -------
    tuple
        ``(X, iterations, matvecs, breakdown, non_finite)``, the counts as the block loop reports
        them before the final residual check.
    """
    n = B.shape[0]
    dtype = B.dtype
    b = B.reshape(-1)
    X = X.contiguous()
    V = torch.empty(min(m, max_iter) + 1, n, dtype=dtype)  # reused by every cycle
    iterations = matvecs = 0
    first = True
    breakdown = non_finite = False
    with torch.no_grad():
        while iterations < max_iter:
            AX = apply_checked(A, X, "matmul_closure", "rhs") if first else A(X)
            r = b - AX.reshape(-1)
            matvecs += 1
            beta = float(torch.linalg.vector_norm(r))
            if not math.isfinite(beta) or not bool(torch.isfinite(X).all()):
                non_finite = True
            if non_finite or not beta > target:
                break
            steps = min(m, max_iter - iterations)
            torch.div(r, beta, out=V[0])
            R: list[list[float]] = []  # R[j]: column j of the rotated Hessenberg matrix, rows 0..j
            cs: list[float] = []
            sn: list[float] = []
            g = [beta]
            stop = steps
            live = True
            overflow = False
            j_done = 0
            for j in range(steps):
                if live:
                    v = V[j].view(n, 1)
                    if M is None:
                        Z = v
                    else:
                        Z = apply_checked(M, v, "preconditioner", "residual") if first else M(v)
                    first = False
                    w = A(Z).reshape(-1)
                    basis = V[: j + 1]
                    out = V[j + 1]
                    before = float(torch.linalg.vector_norm(w))
                    h_t = torch.mv(basis, w)
                    torch.addmv(w, basis.t(), h_t, alpha=-1.0, out=out)
                    hn = float(torch.linalg.vector_norm(out))
                    if hn < 0.7 * before:  # cancellation: project once more
                        h2 = torch.mv(basis, out)
                        out.addmv_(basis.t(), h2, alpha=-1.0)
                        h_t += h2
                        hn = float(torch.linalg.vector_norm(out))
                    if hn > 0:
                        out.div_(hn)
                    col = h_t.tolist()
                    for i in range(j):  # the earlier rotations
                        c, s = cs[i], sn[i]
                        a, d = col[i], col[i + 1]
                        col[i] = c * a + s * d
                        col[i + 1] = -s * a + c * d
                    a, d = col[j], hn
                    rr = math.hypot(a, d)
                    if rr > 0:
                        c, s = a / rr, d / rr
                    else:
                        c, s = 1.0, 0.0
                    cs.append(c)
                    sn.append(s)
                    col[j] = rr
                    R.append(col)
                    g.append(-s * g[j])
                    g[j] = c * g[j]
                    res = abs(g[j + 1])
                    if not (math.isfinite(rr) and math.isfinite(res)):
                        overflow = non_finite = True
                        stop = j + 1
                        live = False
                    else:
                        if rr == 0:
                            breakdown = True
                        if res <= target or hn == 0:
                            stop = j + 1
                            live = False
                        elif rr == 0:
                            live = False
                matvecs += 1
                j_done = j + 1
                iterations += 1
                if j_done % check_every == 0 and not live:
                    break
            if overflow:
                continue  # the next cycle's residual finds the column non-finite and stops
            # back substitution on the leading stop×stop triangle; a zero pivot (breakdown) takes no
            # step in that direction, as in the block loop
            k = min(stop, j_done)
            y = [0.0] * k
            for i in range(k - 1, -1, -1):
                pivot = R[i][i]
                if pivot == 0:
                    continue
                acc = g[i]
                for jj in range(i + 1, k):
                    acc -= R[jj][i] * y[jj]
                y[i] = acc / pivot
            update = torch.mv(V[:k].t(), torch.tensor(y, dtype=dtype))
            if M is None:
                X.view(-1).add_(update)
            else:
                X = X + M(update.view(n, 1))
    return X, iterations, matvecs, breakdown, non_finite
