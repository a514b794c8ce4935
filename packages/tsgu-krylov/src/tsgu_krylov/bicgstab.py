"""BiCGSTAB (van der Vorst) for general non-symmetric systems, right-preconditioned.

Each step costs two operator applications.  All right-hand side columns advance together as one
block with their own scalars ``ρ, α, ω``; a column stops when ``‖r‖ ≤ max(atol, rtol·‖b‖)``, when it
used its budget of operator applications, or when the recurrence breaks down (``ρ = 0`` or a zero
denominator), in which case it keeps its last iterate and is reported.

Differences from torchsparsegradutils 0.2.7 (a pykrylov port that loops over columns, without
batch support, breakdown guard or convergence signal): one block for every column and batch item,
breakdown detection, a warning (or error) when a column misses its tolerance, ``return_info``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, NamedTuple

import torch

from ._common import (
    alias,
    apply_checked,
    check_on_failure,
    check_rhs,
    check_tolerance,
    check_x0,
    finish,
    resolve_check_every,
    safe_div,
    true_relative_residual,
)
from ._operator import as_block, as_matvec, as_preconditioner, col_dot, col_norm, from_block

__all__ = ["BICGSTABSettings", "bicgstab"]

_logger = logging.getLogger("bicgstab")
_logger.disabled = True


class BICGSTABSettings(NamedTuple):
    """Defaults of :func:`bicgstab` (the torchsparsegradutils 0.2.7 settings tuple).

    ``matvec_max`` is the budget of operator applications per column (``None``: ``2 n + 1``, enough
    for the ``n`` steps that solve the system in exact arithmetic; 0.2.7 used ``2 n``),
    ``precon`` a preconditioner applying ``M⁻¹`` (tensor or callable).
    """

    matvec_max: int | None = None
    abstol: float = 1e-8
    reltol: float = 1e-6
    precon: Any = None
    logger: logging.Logger = _logger


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
) -> Any:
    """Solve ``A x = b`` for a general square ``A`` by BiCGSTAB.

    Parameters
    ----------
    matmul_closure : Tensor or callable
        ``A``: sparse COO/CSR or dense ``(n, n)`` / ``(*batch, n, n)``, or a callable on blocks.
    rhs : Tensor
        ``(n,)`` or ``(*batch, n, k)``.
    initial_guess, x0 : Tensor
        Starting point (aliases), shaped like ``rhs``; never modified.
    settings : BICGSTABSettings
        ``reltol``, ``abstol``, ``matvec_max``, ``precon`` (0.2.7 names).
    preconditioner : Tensor or callable
        Applies ``M⁻¹`` (overrides ``settings.precon``).
    rtol, tol, atol : float
        Override ``settings.reltol`` / ``settings.abstol``.
    max_iter, maxiter : int
        Cap on iterations (two operator applications each), on top of ``matvec_max``.
    return_info : bool
        Also return a :class:`~tsgu_krylov.SolveInfo`.
    check_every : int, optional
        Iterations between host-side convergence checks (default: every iteration on the CPU,
        where looking costs nothing, every 8 on an accelerator).
    on_failure : {"warn", "raise", "ignore"}

    Returns
    -------
    Tensor
        ``x`` shaped like ``rhs`` (and the info with ``return_info=True``).

    Examples
    --------
    >>> import torch
    >>> from tsgu_krylov import bicgstab
    >>> A = torch.tensor([[3.0, 1.0], [-1.0, 2.0]], dtype=torch.float64).to_sparse_csr()
    >>> bicgstab(A, torch.tensor([1.0, 1.0], dtype=torch.float64))
    tensor([0.1429, 0.5714], dtype=torch.float64)
    """
    A = as_matvec(matmul_closure)
    precon = preconditioner if preconditioner is not None else settings.precon
    if precon is not None and not (isinstance(precon, torch.Tensor) or callable(precon)):
        raise RuntimeError("settings.precon must be a tensor, or a callable object!")
    M = as_preconditioner(precon, "settings.precon")
    check_rhs(rhs)
    rtol = alias("rtol", rtol, tol=tol)
    rtol = check_tolerance("rtol", settings.reltol if rtol is None else rtol)
    atol = check_tolerance("atol", settings.abstol if atol is None else atol)
    max_iter = alias("max_iter", max_iter, maxiter=maxiter)
    check_on_failure(on_failure)
    check_every = resolve_check_every(check_every, rhs.device)
    initial_guess = alias("initial_guess", initial_guess, x0=x0)
    B, vector = as_block(rhs)
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
    budget = 2 * n + 1 if budget is None else budget
    steps = (budget - 1) // 2  # the initial residual costs one application, each step two
    if max_iter is not None:
        steps = min(steps, int(max_iter))

    b_norm = col_norm(B)
    threshold = torch.clamp(rtol * b_norm, min=atol)
    X = torch.zeros_like(B) if X0 is None else X0.clone()
    R = B - apply_checked(A, X, "matmul_closure", "rhs")
    matvecs = 1
    R_hat = R.clone()
    ones = torch.ones_like(b_norm)
    rho, alpha, omega = ones, ones, ones
    V = torch.zeros_like(B)
    P = torch.zeros_like(B)
    active = col_norm(R) > threshold
    breakdown = torch.zeros_like(active)
    iterations = 0
    checked_M = False
    for it in range(steps):
        if it % check_every == 0 and not bool(active.any()):
            break
        rho_new = col_dot(R_hat, R)
        bad = active & ((rho_new == 0) | ~torch.isfinite(rho_new))
        beta = safe_div(rho_new, rho, active) * safe_div(alpha, omega, active)
        P = R + beta.unsqueeze(-2) * (P - omega.unsqueeze(-2) * V)
        if M is None:
            P_hat = P
        elif not checked_M:
            P_hat = apply_checked(M, P, "preconditioner", "residual")
            checked_M = True
        else:
            P_hat = M(P)
        V = A(P_hat)
        den = col_dot(R_hat, V)
        bad = bad | (active & ((den == 0) | ~torch.isfinite(den)))
        step = active & ~bad
        alpha = safe_div(rho_new, den, step)
        S = R - alpha.unsqueeze(-2) * V
        X.addcmul_(alpha.unsqueeze(-2), P_hat)
        half = step & (col_norm(S) > threshold)  # columns that still need the stabilising half-step
        S_hat = S if M is None else M(S)
        T = A(S_hat)
        matvecs += 2
        tt = col_dot(T, T)
        omega_new = safe_div(col_dot(T, S), tt, half)
        bad = bad | (half & (omega_new == 0))
        X.addcmul_(omega_new.unsqueeze(-2), S_hat)
        R = S - omega_new.unsqueeze(-2) * T  # α = ω = 0 for inactive columns: R is unchanged
        omega = torch.where(half, omega_new, omega)
        rho = torch.where(step, rho_new, rho)
        breakdown |= bad
        active = step & half & ~bad & (col_norm(R) > threshold)
        iterations = it + 1
        settings.logger.debug("iteration %d: %d active columns", iterations, int(active.sum()))
    rel, abs_res = true_relative_residual(A, X, B, b_norm)
    matvecs += 1
    info = finish(
        "BiCGSTAB",
        iterations=iterations,
        matvecs=matvecs,
        rel=rel,
        abs_res=abs_res,
        rtol=rtol,
        atol=atol,
        breakdown=breakdown,
        on_failure=on_failure,
    )
    X = from_block(X, vector)
    return (X, info) if return_info else X
