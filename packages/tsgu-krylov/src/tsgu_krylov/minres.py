"""MINRES for symmetric (possibly indefinite) systems, with shifts and an SPD preconditioner.

Paige and Saunders' method: a Lanczos recurrence builds an orthonormal basis of the Krylov space
and a running QR factorisation of the tridiagonal matrix (one Givens rotation per step) gives the
iterate of minimal residual.  Written for blocks: every column of a ``(*batch, n, k)`` right-hand
side carries its own Lanczos scalars, and shifted systems ``(value·A + σᵢ I) x = b`` are solved
side by side in an extra leading dimension.

Differences from torchsparsegradutils 0.2.7 (a port of GPyTorch's ``minres``) and SciPy:

* each column stops on its own residual estimate ``φ̄ ≤ rtol·‖b‖`` (the norm of the
  preconditioned residual, exact without a preconditioner), not on the mean change of the
  iterate; the host looks every ``check_every`` iterations;
* the true residual is recomputed at the end and reported; a miss warns (or raises);
* the iteration count is exactly ``max_iter`` at most;
* the default tolerance is 1e-10 in float64 (1e-6 in float32) on the relative residual of every
  column and every shift.  0.2.7's ``minres_tolerance=1e-4`` bounded the mean change of the
  iterate, tested every 10 iterations, which in practice solved small systems to machine
  precision; read as a residual bound it would leave errors near 1e-5, so it is not used as one
  unless a different value is set.
"""

from __future__ import annotations

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
    true_relative_residual,
)
from ._device_minres import MINRES_CHECK_EVERY, device_minres
from ._graphs import resolve_capture
from ._operator import col_dot, col_norm, from_block

__all__ = ["MINRESSettings", "minres"]


class MINRESSettings(NamedTuple):
    """Defaults of :func:`minres` (the torchsparsegradutils 0.2.7 settings tuple).

    ``minres_tolerance`` is used as the relative residual tolerance when it differs from 0.2.7's
    default 1e-4; with 1e-4 (the default) :func:`minres` uses 1e-10 (float64) / 1e-6 (float32).
    """

    max_cg_iterations: int = 1000
    minres_tolerance: float = 1e-4
    verbose_linalg: bool = False


_DEFAULT_TOLERANCE = MINRESSettings().minres_tolerance


@autocast_fp32
def minres(
    matmul_closure: Any,
    rhs: torch.Tensor,
    eps: float = 1e-25,
    shifts: torch.Tensor | None = None,
    value: float | None = None,
    max_iter: int | None = None,
    preconditioner: Any = None,
    settings: MINRESSettings = MINRESSettings(),
    *,
    x0: torch.Tensor | None = None,
    rtol: float | None = None,
    tol: float | None = None,
    atol: float = 0.0,
    maxiter: int | None = None,
    return_info: bool = False,
    check_every: int | None = None,
    on_failure: str = "warn",
    loop: str = "auto",
    capture: bool | None = None,
    _restarts: int = 2,
) -> Any:
    """Solve ``(value·A + σ I) x = b`` for symmetric ``A`` by MINRES.

    Parameters
    ----------
    matmul_closure : Tensor or callable
        Symmetric ``A``: sparse COO/CSR or dense ``(n, n)`` / ``(*batch, n, n)``, or a callable on
        blocks ``(*batch, n, k)``.  A sparse tensor's indices are validated.
    rhs : Tensor
        ``(n,)`` or ``(*batch, n, k)``; with a batched tensor ``A`` also ``(*batch, n)`` (one
        vector per item).  float32 or float64, ``A``'s dtype.
    eps : float
        Floor of the rotation norms (guards a division by zero).
    shifts : Tensor, optional
        ``σ``: a 0-d tensor (one shifted system) or ``(s,)`` (``s`` systems; the output gains a
        leading dimension ``s``).
    value : float, optional
        Scale of ``A`` (default 1).
    max_iter, maxiter : int
        Iteration cap (aliases; default ``settings.max_cg_iterations``).
    preconditioner : Tensor or callable
        Applies ``M⁻¹`` (must be symmetric positive definite).
    rtol, tol : float
        Relative residual tolerance (aliases) of every column and every shifted system.
        Default: ``settings.minres_tolerance`` if it was changed from 0.2.7's 1e-4, else 1e-10 in
        float64 and 1e-6 in float32 (see :class:`MINRESSettings`).
    atol : float
        Absolute residual tolerance (default 0: the accuracy does not depend on the units of ``b``).
    x0 : Tensor
        Initial guess shaped like ``rhs`` (applied to every shift).
    return_info : bool
        Also return a :class:`~tsgu_krylov.SolveInfo`.
    check_every : int, optional
        Iterations between host-side convergence checks (default: every iteration on the CPU,
        where looking costs nothing, every 8 on an accelerator).
    on_failure : {"warn", "raise", "ignore"}
    loop : {"auto", "device", "host"}
        ``"device"``: the device loop (:mod:`tsgu_krylov._device_minres`): scalars stay on the
        device, 15 kernel calls per unpreconditioned iteration, one host sync every
        ``check_every`` iterations (default 8); same iterate, iteration and matvec counts and
        report as the host loop with ``check_every=1``.  ``"host"``: the block loop.  ``"auto"``
        (default): the device loop on accelerators, the host loop on the CPU.  A zero tolerance
        (``rtol = atol = 0``) always runs the host loop.
    capture : bool, optional
        Replay the device loop's ``check_every`` iterations between two checks from one CUDA graph
        (see :func:`~tsgu_krylov.linear_cg`): ``None`` (default) off for now (automatic on CUDA
        once verified on a GPU), never on the CPU; ``True`` warns and runs uncaptured where it
        cannot apply; a failed capture warns and runs uncaptured.  Not yet run on a GPU.
    _restarts : int
        Private: how many times a solve whose residual estimate met the tolerance while its
        recomputed true residual did not (roundoff in the recurrence, at tight tolerances) is
        continued from the true residual (without 1-D ``shifts``) before that is reported.

    Returns
    -------
    Tensor
        ``x`` shaped like ``rhs`` (with a leading shift dimension for 1-D ``shifts``), and the
        info with ``return_info=True``.

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
    >>> from tsgu_krylov import minres
    >>> A = torch.tensor([[2.0, 1.0], [1.0, -3.0]], dtype=torch.float64).to_sparse()
    >>> minres(A, torch.tensor([1.0, 0.0], dtype=torch.float64), rtol=1e-10)
    tensor([0.4286, 0.1429], dtype=torch.float64)
    """
    check_rhs(rhs)
    rtol = alias("rtol", rtol, tol=tol)
    if rtol is None:
        rtol = settings.minres_tolerance
        if rtol == _DEFAULT_TOLERANCE:
            rtol = 1e-10 if rhs.dtype == torch.float64 else 1e-6
    rtol = check_tolerance("rtol", rtol)
    atol = check_tolerance("atol", atol)
    max_iter = alias("max_iter", max_iter, maxiter=maxiter)
    max_iter = settings.max_cg_iterations if max_iter is None else int(max_iter)
    if max_iter < 0:
        raise ValueError(f"max_iter must be nonnegative, got {max_iter}")
    check_on_failure(on_failure)
    if loop not in ("auto", "device", "host"):
        raise ValueError(f"loop must be 'auto', 'device' or 'host', got {loop!r}")
    device_loop = loop == "device" or (loop == "auto" and rhs.device.type != "cpu")
    if device_loop and check_every is None:
        check_every = MINRES_CHECK_EVERY
    check_every = resolve_check_every(check_every, rhs.device)
    use_capture = resolve_capture(capture, rhs.device, device_loop, "minres")
    A = operator(matmul_closure, rhs)
    M = preconditioner_operator(preconditioner, rhs)
    scale_a = 1.0 if value is None else float(value)

    B, vector = rhs_block(rhs, matmul_closure)
    X0 = check_x0(x0, rhs, B, "x0")
    if shifts is not None:
        shifts = torch.as_tensor(shifts, dtype=rhs.dtype, device=rhs.device)
        if shifts.dim() > 1:
            raise ValueError(f"shifts must be a 0-d or 1-d tensor, got shape {tuple(shifts.shape)}")
    sig: torch.Tensor | None = shifts
    if shifts is not None and shifts.dim() == 1:
        B = B.expand(shifts.shape[0], *B.shape)
        if X0 is not None:
            X0 = X0.expand(shifts.shape[0], *X0.shape)
        sig = shifts.reshape(-1, *([1] * (B.dim() - 1)))

    def op(V: torch.Tensor) -> torch.Tensor:
        Y = A(V)
        if scale_a != 1.0:
            Y = Y * scale_a
        if sig is not None:
            Y = Y + sig * V
        return Y

    b_norm = col_norm(B)
    X = torch.zeros_like(B) if X0 is None else X0.clone()
    R1 = B - apply_checked(op, X, "matmul_closure", "rhs") if X0 is not None else B.clone()
    matvecs = 1 if X0 is not None else 0
    Y = R1 if M is None else apply_checked(M, R1, "preconditioner", "residual")
    beta1_sq = col_dot(R1, Y)
    # a NaN/Inf in A, b or M: the column is marked, cleared, and NaN at the end
    non_finite = column_non_finite(R1) | column_non_finite(Y) | ~torch.isfinite(beta1_sq)
    # (both looks in one host read)
    any_bad, negative = torch.stack([non_finite.any(), ((beta1_sq < 0) & ~non_finite).any()]).tolist()
    if any_bad:
        keep = ~non_finite.unsqueeze(-2)
        R1, Y, X = R1.where(keep, 0.0), Y.where(keep, 0.0), X.where(keep, 0.0)
        beta1_sq = beta1_sq.where(~non_finite, 0.0)
    if negative:
        raise ValueError("preconditioner must be positive definite (rᵀ M⁻¹ r < 0)")
    beta1 = beta1_sq.sqrt()
    target = torch.clamp(rtol * b_norm, min=atol)
    if M is not None:  # φ̄ measures the residual in the M⁻¹-norm: compare like with like
        target = target * torch.where(b_norm > 0, beta1 / torch.where(b_norm > 0, b_norm, 1.0), 1.0)
    active = beta1 > target
    R2 = R1
    zero = torch.zeros_like(beta1)
    oldb, beta, dbar, epsln = zero, beta1, zero, zero
    phibar = beta1
    cs, sn = -torch.ones_like(beta1), zero
    W = torch.zeros_like(B)
    W2 = torch.zeros_like(B)
    iterations = 0
    # the device loop measures φ̄ relative to a positive tolerance
    device_loop = device_loop and (rtol > 0 or atol > 0)
    if device_loop:
        positive = target.clamp_min(torch.finfo(target.dtype).tiny)
        X, iterations, active, bad = device_minres(
            op, M, X, R1, Y, beta1, positive, active, eps, max_iter, check_every, use_capture
        )
        matvecs += iterations
        non_finite = non_finite | bad
    for it in range(0 if device_loop else max_iter):
        if it % check_every == 0 and not bool(active.any()):
            break
        s = torch.where(beta > 0, 1.0 / torch.where(beta > 0, beta, 1.0), 0.0).unsqueeze(-2)
        V = s * Y
        Y = op(V)
        matvecs += 1
        if it > 0:
            Y = Y - (beta / torch.where(oldb > 0, oldb, 1.0)).unsqueeze(-2) * R1
        alfa = col_dot(V, Y)
        Y = Y - (alfa * s.squeeze(-2)).unsqueeze(-2) * R2
        R1, R2 = R2, Y
        Y = R2 if M is None else M(R2)
        oldb = beta
        beta = col_dot(R2, Y).clamp_min(0).sqrt()
        # QR of the tridiagonal matrix, one rotation per step
        oldeps = epsln
        delta = cs * dbar + sn * alfa
        gbar = sn * dbar - cs * alfa
        epsln = sn * beta
        dbar = -cs * beta
        gamma = torch.hypot(gbar, beta).clamp_min(eps)
        cs, sn = gbar / gamma, beta / gamma
        phi = cs * phibar
        phibar = torch.where(active, sn * phibar, phibar)
        W1, W2 = W2, W
        W = (V - oldeps.unsqueeze(-2) * W1 - delta.unsqueeze(-2) * W2) / gamma.unsqueeze(-2)
        X = X + torch.where(active, phi, 0.0).unsqueeze(-2) * W
        # an overflow (or a NaN from a callable operator) stops the column and marks it
        overflow = active & ~(torch.isfinite(alfa) & torch.isfinite(beta) & torch.isfinite(phibar))
        non_finite |= overflow
        # a column stops when its residual estimate is small or the Lanczos basis is exhausted
        active = active & ~overflow & (phibar > target) & (beta > 0)
        iterations = it + 1
    if settings.verbose_linalg:
        print(f"Running MINRES on a {tuple(rhs.shape)} RHS for {iterations} iterations (rtol={rtol}).")
    rel, abs_res = true_relative_residual(op, X, B, b_norm)
    matvecs += 1
    missed = ~non_finite & ~(abs_res <= torch.clamp(rtol * b_norm, min=atol))
    if (
        _restarts > 0
        and (shifts is None or shifts.dim() == 0)
        and iterations < max_iter
        and bool(missed.any())
        and not bool((active & missed).any())  # every column stopped on its estimate
    ):
        # The residual estimate φ̄ met the tolerance but the recomputed residual did not
        # (roundoff in the recurrence, at tight tolerances): continue from the true residual
        # with the iterations left, instead of reporting a solve that a few more steps finish.
        X, more = minres(
            matmul_closure,
            B,
            eps=eps,
            shifts=shifts,
            value=value,
            max_iter=max_iter - iterations,
            preconditioner=preconditioner,
            settings=settings,
            x0=X,
            rtol=rtol,
            atol=atol,
            return_info=True,
            check_every=check_every,
            on_failure="ignore",
            loop=loop,
            capture=use_capture,
            _restarts=_restarts - 1,
        )
        iterations += more.iterations
        matvecs += more.matvecs
        rel = more.relative_residual
        abs_res = rel * torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
        if more.non_finite is not None:
            non_finite = non_finite | more.non_finite
    outcome = finish(
        "MINRES",
        X=X,
        B=B,
        iterations=iterations,
        matvecs=matvecs,
        rel=rel,
        abs_res=abs_res,
        b_norm=b_norm,
        rtol=rtol,
        atol=atol,
        breakdown=torch.zeros_like(active),
        on_failure=on_failure,
        non_finite=non_finite,
    )
    X = from_block(outcome.X, vector)
    X = not_differentiable("minres", X, matmul_closure, rhs, x0, preconditioner, shifts)
    return (X, outcome.info) if return_info else X
