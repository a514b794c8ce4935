"""BiCGSTAB (van der Vorst) for general non-symmetric systems, right-preconditioned.

Each step costs two operator applications (one when every column is done after its first half).
All right-hand side columns advance together as one block with their own scalars ``ρ, α, ω``; a
column stops when ``‖r‖ ≤ max(atol, rtol·‖b‖)`` (its own ``‖b‖``; ``atol`` alone for a zero column),
when the budget of operator applications is used, or when the recurrence breaks down (``ρ = 0`` or a
zero denominator), in which case it keeps its last iterate and is reported.

As in torchsparsegradutils 0.2.7, ``matvec_max`` bounds every operator application, the initial
residual included (here the final true-residual check too), a warm start within tolerance costs one
application and no iteration, and a callable operator solving a vector right-hand side receives
vectors and may answer ``(n,)`` or ``(n, 1)``.  Differences (0.2.7 is a pykrylov port that loops over
columns, without batch support, breakdown guard or convergence signal): one block for every column
and batch item, breakdown detection, a warning (or error) when a column misses its tolerance or
meets a NaN/Inf, ``return_info``.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, NamedTuple

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
    not_differentiable,
    operator,
    preconditioner_operator,
    resolve_check_every,
    rhs_block,
    safe_div,
    true_relative_residual,
)
from ._device_bicgstab import BICGSTAB_CHECK_EVERY, device_bicgstab
from ._graphs import capture_not_offered
from ._operator import MatVec, col_dot, col_norm, from_block

__all__ = ["BICGSTABSettings", "bicgstab"]

_logger = logging.getLogger("bicgstab")
_logger.disabled = True


class BICGSTABSettings(NamedTuple):
    """Defaults of :func:`bicgstab` (the torchsparsegradutils 0.2.7 settings tuple).

    ``matvec_max`` is the budget of operator applications: the initial residual, each step's one
    or two products and the final true-residual check all count, and no more are made (``None``:
    ``2 n + 2``, room for the ``n`` steps that solve the system in exact arithmetic; 0.2.7 used
    ``2 n``, without a final check); ``precon`` a preconditioner applying ``M⁻¹`` (tensor or
    callable).
    """

    matvec_max: int | None = None
    abstol: float = 1e-8
    reltol: float = 1e-6
    precon: Any = None
    logger: logging.Logger = _logger


_DEFAULT_ABSTOL = BICGSTABSettings().abstol


@autocast_fp32
def bicgstab(
    matmul_closure: Any,
    rhs: torch.Tensor,
    initial_guess: torch.Tensor | None = None,
    settings: BICGSTABSettings = BICGSTABSettings(),
    *,
    x0: torch.Tensor | None = None,
    preconditioner: Any = None,
    rtol: float | None = None,
    tol: float | None = None,
    atol: float | None = None,
    max_iter: int | None = None,
    maxiter: int | None = None,
    return_info: bool = False,
    check_every: int | None = None,
    on_failure: str = "warn",
    loop: str = "auto",
    capture: bool | None = None,
) -> Any:
    """Solve ``A x = b`` for a general square ``A`` by BiCGSTAB.

    Parameters
    ----------
    matmul_closure : Tensor or callable
        ``A``: sparse COO/CSR or dense ``(n, n)`` / ``(*batch, n, n)``, or a callable on blocks
        (on vectors ``(n,)`` for a vector ``rhs``, as in 0.2.7; it may answer ``(n,)`` or
        ``(n, 1)``).  A sparse tensor's indices are validated.
    rhs : Tensor
        ``(n,)`` or ``(*batch, n, k)``; with a batched tensor ``A`` also ``(*batch, n)`` (one
        vector per item).  float32 or float64, ``A``'s dtype.
    initial_guess, x0 : Tensor
        Starting point (aliases), shaped like ``rhs``; never modified.
    settings : BICGSTABSettings
        ``reltol``, ``abstol``, ``matvec_max``, ``precon`` (0.2.7 names).
    preconditioner : Tensor or callable
        Applies ``M⁻¹`` (overrides ``settings.precon``).
    rtol, tol, atol : float
        Override ``settings.reltol`` / ``settings.abstol``.  A column has converged when
        ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)`` with its own ``‖b‖`` (``atol`` alone for a zero column).
        The default ``abstol=1e-8`` (0.2.7's) is an absolute floor: when it, not ``rtol``, ends the
        solve of a column (a small ``‖b‖``), a :class:`~tsgu_krylov.ConvergenceWarning` says so and
        the info's ``reason`` is ``"converged_atol"`` with ``tolerance`` the relative tolerance that
        decided.  Pass ``atol=0`` for a solve whose accuracy does not depend on the units of ``b``
        (:func:`~tsgu_krylov.sparse_generic_solve` does, unless given a floor).
    max_iter, maxiter : int
        Cap on iterations (at most two operator applications each), on top of ``matvec_max``.
    return_info : bool
        Also return a :class:`~tsgu_krylov.SolveInfo`.
    check_every : int, optional
        Iterations between host-side convergence checks (default: every iteration on the CPU,
        where looking costs nothing, every 8 on an accelerator).
    on_failure : {"warn", "raise", "ignore"}
    loop : {"auto", "device", "host"}
        ``"device"``: the device loop (:mod:`tsgu_krylov._device_bicgstab`): scalars stay on the
        device, about 20 kernel calls per iteration, one host sync every ``check_every``
        iterations (default 8); same iterate, iteration and matvec counts and report as the host
        loop with ``check_every=1``.  ``"host"``: the block loop (and, for one right-hand side on
        the CPU, its scalar copy).  ``"auto"`` (default): the device loop on accelerators, the
        host loops on the CPU.
    capture : bool, optional
        Accepted for symmetry with :func:`~tsgu_krylov.linear_cg` and :func:`~tsgu_krylov.minres`
        (and validated): CUDA-graph capture is not offered for this solver yet (its loop keeps the
        state of two checks back by reference and replays from it after an anomaly);
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
    >>> from tsgu_krylov import bicgstab
    >>> A = torch.tensor([[3.0, 1.0], [-1.0, 2.0]], dtype=torch.float64).to_sparse_csr()
    >>> bicgstab(A, torch.tensor([1.0, 1.0], dtype=torch.float64))
    tensor([0.1429, 0.5714], dtype=torch.float64)
    """
    precon = preconditioner if preconditioner is not None else settings.precon
    if not (isinstance(matmul_closure, torch.Tensor) or callable(matmul_closure)):
        raise RuntimeError("matmul_closure must be a tensor, or a callable object!")
    if precon is not None and not (isinstance(precon, torch.Tensor) or callable(precon)):
        raise RuntimeError("settings.precon must be a tensor, or a callable object!")
    check_rhs(rhs)
    B, vector = rhs_block(rhs, matmul_closure)
    A = _column_tolerant(operator(matmul_closure, rhs), matmul_closure, vector and rhs.dim() == 1)
    M = preconditioner_operator(precon, rhs, "settings.precon")
    if M is not None:
        M = _column_tolerant(M, precon, vector and rhs.dim() == 1)
    rtol = alias("rtol", rtol, tol=tol)
    rtol = check_tolerance("rtol", settings.reltol if rtol is None else rtol)
    # 0.2.7's absolute floor (abstol=1e-8) is kept for a direct call, but reported (a warning and
    # info.reason "converged_atol") when it, not rtol, ends a solve: it makes the answer depend on
    # the units of b.  sparse_generic_solve passes atol=0 unless the caller gave a floor.
    atol_default = (
        "the 0.2.7 default of BICGSTABSettings.abstol"
        if atol is None and settings.abstol == _DEFAULT_ABSTOL
        else None
    )
    atol = check_tolerance("atol", settings.abstol if atol is None else atol)
    max_iter = alias("max_iter", max_iter, maxiter=maxiter)
    if max_iter is not None and int(max_iter) < 0:
        raise ValueError(f"max_iter must be nonnegative, got {max_iter}")
    check_on_failure(on_failure)
    if loop not in ("auto", "device", "host"):
        raise ValueError(f"loop must be 'auto', 'device' or 'host', got {loop!r}")
    capture_not_offered(capture, "bicgstab")
    device_loop = loop == "device" or (loop == "auto" and rhs.device.type != "cpu")
    if device_loop and check_every is None:
        check_every = BICGSTAB_CHECK_EVERY
    check_every = resolve_check_every(check_every, rhs.device)
    initial_guess = alias("initial_guess", initial_guess, x0=x0)
    X0 = check_x0(initial_guess, rhs, B)
    n = B.shape[-2]
    budget = settings.matvec_max
    if budget is not None and budget < 0:
        raise ValueError("settings.matvec_max must be nonnegative or None")
    if budget == 0:
        warnings.warn(
            "matvec_max=0: returning the initial iterate without evaluating the operator or checking "
            "convergence.",
            UserWarning,
            stacklevel=2,
        )
        X = torch.zeros_like(B) if X0 is None else X0.clone()
        return from_block(X, vector)
    # every operator application counts: the initial residual, one or two per step, and the
    # final true-residual check (needed only after a step; reserved in the budget)
    budget = 2 * n + 2 if budget is None else int(budget)
    max_steps = None if max_iter is None else int(max_iter)

    # per column: ‖r‖ ≤ max(rtol·‖b‖, atol), whatever the initial guess (a zero b: atol alone)
    b_norm = col_norm(B)
    threshold = torch.clamp(rtol * b_norm, min=atol)
    X = torch.zeros_like(B) if X0 is None else X0.clone()
    R = B - apply_checked(A, X, "matmul_closure", "rhs")
    matvecs = 1
    # a NaN/Inf in A, b or x0 marks its column, which is cleared and NaN at the end
    non_finite = column_non_finite(R)
    if bool(non_finite.any()):
        keep = ~non_finite.unsqueeze(-2)
        R, X = R.where(keep, 0.0), X.where(keep, 0.0)
    R_hat = R.clone()
    ones = torch.ones_like(b_norm)
    rho, alpha, omega = ones, ones, ones
    V = torch.zeros_like(B)
    P = torch.zeros_like(B)
    res = col_norm(R)
    active = res > threshold
    breakdown = torch.zeros_like(active)
    iterations = 0
    checked_M = False
    if device_loop:
        X, res, broke, bad, iterations, extra = device_bicgstab(
            A, M, X, R, threshold, res, active, max_steps, budget, check_every
        )
        breakdown, non_finite, matvecs = breakdown | broke, non_finite | bad, matvecs + extra
    single = not device_loop and B.dim() == 2 and B.shape[-1] == 1 and B.device.type == "cpu"
    single = single and check_every == 1
    if single:
        # one right-hand side on the CPU: the same loop on Python scalars (no masks)
        X, res_f, flags, iterations, matvecs = _single_column_bicgstab(
            A, M, X, R, float(res), float(threshold), max_steps, budget, matvecs, settings.logger
        )
        active = torch.zeros_like(active)
        breakdown, non_finite = breakdown | flags[0], non_finite | flags[1]
        res = torch.full_like(b_norm, res_f)
    while not single and not device_loop and (max_steps is None or iterations < max_steps):
        if iterations % check_every == 0 and not bool(active.any()):
            break
        if matvecs + 2 > budget:  # room for one application and the final check
            break
        rho_new = col_dot(R_hat, R)
        bad = active & (rho_new == 0)
        overflow = active & ~torch.isfinite(rho_new)
        beta = safe_div(rho_new, rho, active) * safe_div(alpha, omega, active)
        P = R + beta.unsqueeze(-2) * (P - omega.unsqueeze(-2) * V)
        if M is None:
            P_hat = P
        elif not checked_M:
            P_hat = apply_checked(M, P, "settings.precon", "residual")
            checked_M = True
        else:
            P_hat = M(P)
        V = A(P_hat)
        matvecs += 1
        den = col_dot(R_hat, V)
        overflow |= active & ~torch.isfinite(den)
        bad = (bad | (active & (den == 0))) & ~overflow
        step = active & ~bad & ~overflow
        alpha = safe_div(rho_new, den, step)
        S = R - alpha.unsqueeze(-2) * V
        X.addcmul_(alpha.unsqueeze(-2), P_hat)
        s_norm = col_norm(S)
        overflow |= step & ~torch.isfinite(s_norm)
        step &= ~overflow
        half = step & (s_norm > threshold)  # columns that still need the stabilising half-step
        # the second half is skipped when no column needs it (a look at the flags costs nothing
        # on the CPU), and cut when the budget has no room for it and the final check
        need_half = check_every > 1 or bool(half.any())
        if need_half and matvecs + 2 > budget:
            R = torch.where(step.unsqueeze(-2), S, R)
            non_finite |= overflow
            breakdown |= bad
            iterations += 1
            break
        if need_half:
            S_hat = S if M is None else M(S)
            T = A(S_hat)
            matvecs += 1
            tt = col_dot(T, T)
            overflow |= half & ~(torch.isfinite(tt) & torch.isfinite(col_dot(T, S)))
            half &= ~overflow
            omega_new = safe_div(col_dot(T, S), tt, half)
            bad = bad | (half & (omega_new == 0))
            X.addcmul_(omega_new.unsqueeze(-2), S_hat)
            R = S - omega_new.unsqueeze(-2) * T  # α = ω = 0 for inactive columns: R is unchanged
            omega = torch.where(half, omega_new, omega)
        else:
            R = S
        rho = torch.where(step, rho_new, rho)
        breakdown |= bad
        non_finite |= overflow
        res = col_norm(R)
        active = step & half & ~bad & (res > threshold)
        iterations += 1
        settings.logger.debug("iteration %d: %d active columns", iterations, int(active.sum()))
    if iterations:
        rel, abs_res = true_relative_residual(A, X, B, b_norm)
        matvecs += 1
    else:  # the initial residual is the true residual of the returned iterate
        abs_res = res
        rel = res / torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
    outcome = finish(
        "BiCGSTAB",
        X=X,
        B=B,
        iterations=iterations,
        matvecs=matvecs,
        rel=rel,
        abs_res=abs_res,
        b_norm=b_norm,
        rtol=rtol,
        atol=atol,
        breakdown=breakdown,
        on_failure=on_failure,
        non_finite=non_finite,
        atol_default=atol_default,
    )
    X = from_block(outcome.X, vector)
    X = not_differentiable(
        "bicgstab", X, matmul_closure, rhs, initial_guess, x0, preconditioner, settings.precon
    )
    return (X, outcome.info) if return_info else X


def _single_column_bicgstab(
    A: MatVec,
    M: MatVec | None,
    X: torch.Tensor,
    R: torch.Tensor,
    res: float,
    threshold: float,
    max_steps: int | None,
    budget: int,
    matvecs: int,
    logger: logging.Logger,
) -> tuple[torch.Tensor, float, tuple[torch.Tensor, torch.Tensor], int, int]:
    """The block loop of :func:`bicgstab` for one column ``(n, 1)`` on the CPU, on Python scalars.

    Same recurrence, budget, breakdown and stopping tests in the same order (``check_every`` is 1);
    ``X`` (contiguous) is updated in place.  Returns ``(X, res, (breakdown, non_finite), iterations,
    matvecs)``, the flags as ``(1,)`` bool tensors.
    """
    x = X.view(-1)
    r = R.reshape(-1).clone()
    r_hat = r.clone()
    p = torch.zeros_like(r)
    v = torch.zeros_like(r)
    rho = alpha = omega = 1.0
    active = res > threshold
    breakdown = non_finite = False
    checked_M = False
    iterations = 0
    while max_steps is None or iterations < max_steps:
        if not active or matvecs + 2 > budget:
            break
        rho_new = float(torch.dot(r_hat, r))
        bad = rho_new == 0
        overflow = not math.isfinite(rho_new)
        beta = (rho_new / rho if rho != 0 else 0.0) * (alpha / omega if omega != 0 else 0.0)
        p.add_(v, alpha=-omega).mul_(beta).add_(r)  # p = r + β (p − ω v)
        P = p.unsqueeze(-1)
        if M is None:
            P_hat = P
        elif not checked_M:
            P_hat = apply_checked(M, P, "settings.precon", "residual")
            checked_M = True
        else:
            P_hat = M(P)
        p_hat = P_hat.reshape(-1)
        v = A(P_hat).reshape(-1)
        matvecs += 1
        den = float(torch.dot(r_hat, v))
        overflow = overflow or not math.isfinite(den)
        bad = (bad or den == 0) and not overflow
        step = not bad and not overflow
        alpha = rho_new / den if step else 0.0
        s = torch.add(r, v, alpha=-alpha)
        x.add_(p_hat, alpha=alpha)
        s_norm = float(torch.linalg.vector_norm(s))
        if step and not math.isfinite(s_norm):
            overflow, step = True, False
        half = step and s_norm > threshold  # the stabilising half-step is still needed
        if half and matvecs + 2 > budget:  # no room for it and the final check
            r = s if step else r
            non_finite, breakdown = non_finite or overflow, breakdown or bad
            iterations += 1
            break
        if half:
            S = s.unsqueeze(-1)
            S_hat = S if M is None else M(S)
            t = A(S_hat).reshape(-1)
            matvecs += 1
            tt, ts = float(torch.dot(t, t)), float(torch.dot(t, s))
            if not (math.isfinite(tt) and math.isfinite(ts)):
                overflow, half = True, False
            omega_new = ts / tt if half and tt != 0 else 0.0
            bad = bad or (half and omega_new == 0)
            x.add_(S_hat.reshape(-1), alpha=omega_new)
            r = s.add_(t, alpha=-omega_new)
            if half:
                omega = omega_new
        else:
            r = s if step else r
        if step:
            rho = rho_new
        breakdown, non_finite = breakdown or bad, non_finite or overflow
        res = float(torch.linalg.vector_norm(r))
        active = step and half and not bad and res > threshold
        iterations += 1
        logger.debug("iteration %d: %d active columns", iterations, int(active))
    flags = (torch.tensor([breakdown], device=X.device), torch.tensor([non_finite], device=X.device))
    return X, res, flags, iterations, matvecs


def _column_tolerant(op: MatVec, given: Any, vector: bool) -> MatVec:
    """A user callable as 0.2.7 called it: a vector right-hand side gives it vectors ``(n,)``.

    Its result may be ``(n,)`` or ``(n, 1)`` whichever it was given (0.2.7 accepted both); any
    other shape is the 0.2.7 error of :func:`~._common.apply_checked`.  Tensors are unaffected.
    """
    if isinstance(given, torch.Tensor):
        return op

    def apply(X: torch.Tensor) -> torch.Tensor:
        Y = op(X.squeeze(-1) if vector else X)
        if isinstance(Y, torch.Tensor) and Y.shape != X.shape and X.shape[-1] == 1:
            if Y.shape == X.shape[:-1]:
                Y = Y.unsqueeze(-1)
            elif vector and Y.shape == (*X.shape[:-1], 1, 1):
                Y = Y.squeeze(-1)
        return Y  # type: ignore[no-any-return]

    return apply
