"""Preconditioned conjugate gradients for symmetric positive-definite systems.

Every right-hand side column is normalised to unit norm and the columns advance as one block with
their own step sizes; a column whose residual falls below ``stop_updating_after`` is frozen (its
step is zero), so the others can go on.  Compared with SciPy's ``cg``:

* several right-hand sides and batch dimensions in one call, without a loop over columns;
* convergence and breakdown are tested on the device every iteration, but the host looks at the
  result only every ``check_every`` iterations (one synchronisation instead of one per step);
* the true residual ``‖b − A x‖`` is recomputed at the end and reported per column
  (:class:`CGInfo`), and a column that missed its tolerance gives a warning (or an error);
* optionally the Lanczos tridiagonal matrix of the first ``n_tridiag`` columns is returned (its
  eigenvalues approximate those of ``A``), as GPyTorch's ``linear_cg`` does.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from tsgu_ops.internal import autocast_fp32

from ._common import (
    SolveInfo,
    SolveReason,
    alias,
    apply_checked,
    check_on_failure,
    check_rhs,
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
from ._device_loop import DEVICE_CHECK_EVERY, device_cg
from ._graphs import resolve_capture
from ._operator import SparseOperator, col_dot, col_norm, from_block

__all__ = ["CGInfo", "LinearCGSettings", "linear_cg"]


class LinearCGSettings(NamedTuple):
    """Defaults of :func:`linear_cg` (the torchsparsegradutils 0.2.7 settings tuple)."""

    max_cg_iterations: int = 1000
    max_lanczos_quadrature_iterations: int = 20
    cg_tolerance: float = 1e-5
    terminate_cg_by_size: bool = False
    verbose_linalg: bool = False


@dataclass(frozen=True, init=False)
class CGInfo(SolveInfo):
    """Report of a :func:`linear_cg` call (``return_info=True``): a :class:`SolveInfo` with CG's
    fields.

    Tensor fields have shape ``(*batch, k)`` (length 1 for a vector right-hand side) and are detached.
    ``reason`` is ``"converged"`` (every true residual met the tolerance), ``"converged_atol"``
    (likewise, but for some column only by the absolute floor ``atol``; ``tolerance`` is then the
    relative tolerance that decided, ``atol / ‖b‖``), ``"mean_converged"`` /
    ``"recursive_converged"`` (the loop's test passed but a true residual did not, even after the
    solve was continued from it), ``"stopped_updating"`` (no iteration was needed), ``"max_iter"``
    or ``"non_finite"`` (a column met a NaN or an infinity; ``non_finite`` says which, and their
    solution is NaN).  ``true_relative_residual`` is :attr:`SolveInfo.relative_residual` (the same
    tensor) and ``recursive_relative_residual`` the loop's own residual; ``breakdown`` is all
    ``False`` (a CG breakdown raises).
    """

    recursive_relative_residual: torch.Tensor | None = None

    def __init__(
        self,
        iterations: int,
        matvecs: int,
        converged: torch.Tensor,
        recursive_relative_residual: torch.Tensor,
        true_relative_residual: torch.Tensor,
        tolerance: float,
        reason: str,
        non_finite: torch.Tensor | None = None,
        breakdown: torch.Tensor | None = None,
    ) -> None:
        super().__init__(
            iterations=iterations,
            matvecs=matvecs,
            converged=converged,
            relative_residual=true_relative_residual,
            tolerance=tolerance,
            breakdown=torch.zeros_like(converged) if breakdown is None else breakdown,
            reason=SolveReason(reason),
            non_finite=non_finite,
        )
        object.__setattr__(self, "recursive_relative_residual", recursive_relative_residual)

    @property
    def true_relative_residual(self) -> torch.Tensor:
        """``‖b − A x‖ / ‖b‖`` per column, recomputed from the returned solution."""
        return self.relative_residual


def _finite_nonneg(name: str, value: Any) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and nonnegative")
    return value


@autocast_fp32
def linear_cg(
    matmul_closure: Any,
    rhs: torch.Tensor,
    n_tridiag: int = 0,
    tolerance: float | None = None,
    eps: float | None = None,
    stop_updating_after: float | None = None,
    max_iter: int | None = None,
    max_tridiag_iter: int | None = None,
    initial_guess: torch.Tensor | None = None,
    preconditioner: Any = None,
    settings: LinearCGSettings = LinearCGSettings(),
    convergence_reduction: str = "all",
    min_iter: int = 0,
    return_info: bool = False,
    *,
    x0: torch.Tensor | None = None,
    rtol: float | None = None,
    tol: float | None = None,
    atol: float = 0.0,
    maxiter: int | None = None,
    check_every: int | None = None,
    on_failure: str = "warn",
    loop: str = "auto",
    capture: bool | None = None,
    _restarts: int = 2,
) -> Any:
    """Solve ``A x = b`` for symmetric positive-definite ``A`` by preconditioned conjugate gradients.

    Parameters
    ----------
    matmul_closure : Tensor or callable
        ``A``: a sparse COO/CSR or dense tensor ``(n, n)`` / ``(*batch, n, n)``, or a callable
        ``f(X) -> A @ X`` on blocks ``(*batch, n, k)``.  A sparse tensor's indices are validated.
    rhs : Tensor
        ``b``: ``(n,)`` or ``(*batch, n, k)`` (``k`` right-hand sides solved together); with a
        batched tensor ``A`` ``(*batch, n, n)`` also ``(*batch, n)`` (one vector per item).
        float32 or float64 (complex, half precision and integers are rejected), ``A``'s dtype.
    n_tridiag : int
        Return the Lanczos tridiagonal matrices of the first ``n_tridiag`` columns too.
    tolerance, rtol, tol : float
        Relative residual tolerance (aliases; default ``settings.cg_tolerance``).
    atol : float
        Absolute residual tolerance: a column has converged when ``‖r‖ ≤ max(rtol·‖b‖, atol)``.
        Default 0: the accuracy does not depend on the units of ``b``.
    eps : float
        Smallest acceptable ``pᵀAp`` and ``rᵀz`` (default: the dtype's ``tiny``).  With the default,
        ``rᵀz`` below it means the residual vanished (the column is frozen, converged); a
        ``rᵀz`` below an ``eps`` given here, for a column that has not converged, raises the 0.2.7
        breakdown error.
    stop_updating_after : float
        A column freezes once its relative residual is below this (default: the tolerance).
    max_iter, maxiter : int
        Iteration cap (aliases; default ``settings.max_cg_iterations``).
    max_tridiag_iter : int
        Cap on the tridiagonal size (default ``settings.max_lanczos_quadrature_iterations``).
    initial_guess, x0 : Tensor
        Starting point (aliases), shaped like ``rhs``.
    preconditioner : Tensor or callable
        Applies ``M⁻¹`` (SPD) to a block; see :mod:`tsgu_krylov.preconditioners`.
    settings : LinearCGSettings
    convergence_reduction : {"all", "mean"}
        Stop when every / the mean normalised residual is below the tolerance.
    min_iter : int
        Run at least this many iterations.
    return_info : bool
        Also return a :class:`CGInfo`.
    check_every : int, optional
        Iterations between host-side convergence checks (default: every iteration on the CPU,
        where looking costs nothing, every 8 on an accelerator and in the device loop).
    on_failure : {"warn", "raise", "ignore"}
        What a column that did not converge causes.
    loop : {"auto", "device", "host"}
        ``"device"``: the device loop (:mod:`tsgu_krylov._device_loop`): scalars stay on the device,
        12 kernel calls per unpreconditioned iteration, one host sync every ``check_every``
        iterations; same iterate, iteration count and report as the host loops (a breakdown is
        detected at the checks).  ``"host"``: the block loop (and, for one right-hand side on the
        CPU, its scalar copy).  ``"auto"`` (default): the device loop on accelerators, the host
        loops on the CPU.  Lanczos tridiagonalisation (``n_tridiag``),
        ``convergence_reduction="mean"`` and a user-given ``eps`` always run the block loop.
    capture : bool, optional
        Replay the device loop's ``check_every`` iterations between two checks from one CUDA graph
        (:mod:`tsgu_krylov._graphs`): one launch per block instead of a dozen per iteration, the
        same kernels on the same memory.  ``None`` (default): off for now (automatic on CUDA
        with the device loop once a GPU run has verified it), never on the CPU.  ``True`` warns
        (once) and runs uncaptured where capture cannot apply (not CUDA, the host loop).  A capture
        that fails (an operator or preconditioner that reads the device on the host, a kernel that
        cannot be captured) warns and runs the loop uncaptured, from an untouched state.  Not yet
        run on a GPU.
    _restarts : int
        Private: how many times a solve whose recursive residual met the tolerance while its
        recomputed true residual did not (roundoff in the recurrence, at tight tolerances) is
        continued from the true residual before that is reported.

    Returns
    -------
    Tensor or tuple
        ``x`` shaped like ``rhs``; ``(x, T)`` with ``n_tridiag > 0`` (``T`` is
        ``(n_tridiag, *batch, r, r)``); the :class:`CGInfo` is appended with ``return_info=True``.

    Raises
    ------
    TypeError, ValueError
        Bad arguments (messages as torchsparsegradutils 0.2.7), a dtype other than float32/float64,
        a ``meta`` tensor, a sparse tensor with out-of-range indices.
    RuntimeError
        A non-tensor, non-callable operator, an operator or preconditioner returning the wrong
        shape, or a breakdown (``pᵀAp`` below ``eps``, or ``rᵀz`` negative, for a column that has
        not converged: ``A`` or ``M`` is not positive definite).  A residual whose ``rᵀz`` falls
        below ``eps`` has converged exactly (it is frozen, not an error).
    ConvergenceError
        With ``on_failure="raise"``, a column that missed its tolerance or met a NaN/Inf.

    Notes
    -----
    A NaN or an infinity in ``A``, ``b`` or the preconditioner, or an iterate that overflows,
    gives a ``ConvergenceWarning`` (an error with ``on_failure="raise"``) and NaN in the affected
    columns; ``CGInfo.non_finite`` marks them.  (0.2.7 raised "NaNs encountered ..." for a NaN
    in the first product and a breakdown error for an overflow.)

    Examples
    --------
    >>> import torch
    >>> from tsgu_krylov import linear_cg
    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64).to_sparse_csr()
    >>> x, info = linear_cg(A, torch.tensor([1.0, 2.0], dtype=torch.float64), return_info=True)
    >>> x
    tensor([0.0909, 0.6364], dtype=torch.float64)
    >>> info.iterations, bool(info.converged.all())
    (2, True)
    """
    check_rhs(rhs)
    tolerance = alias("tolerance", tolerance, rtol=rtol, tol=tol)
    max_iter = alias("max_iter", max_iter, maxiter=maxiter)
    initial_guess = alias("initial_guess", initial_guess, x0=x0)
    tolerance = settings.cg_tolerance if tolerance is None else tolerance
    max_iter = settings.max_cg_iterations if max_iter is None else max_iter
    max_tridiag_iter = (
        settings.max_lanczos_quadrature_iterations if max_tridiag_iter is None else max_tridiag_iter
    )
    tolerance = _finite_nonneg("tolerance", tolerance)
    atol = _finite_nonneg("atol", atol)
    user_eps = eps
    if eps is None:
        eps = torch.finfo(rhs.dtype).tiny
    if not math.isfinite(float(eps)) or float(eps) <= 0:
        raise ValueError("eps must be finite and positive")
    if rhs.dtype == torch.float32 and struct.unpack("f", struct.pack("f", float(eps)))[0] <= 0:
        raise ValueError("eps must be representable as a positive value in the rhs dtype")
    stop_updating_after = tolerance if stop_updating_after is None else stop_updating_after
    stop_updating_after = _finite_nonneg("stop_updating_after", stop_updating_after)
    if convergence_reduction not in ("all", "mean"):
        raise ValueError("convergence_reduction must be 'all' or 'mean'")
    if min_iter < 0:
        raise ValueError("min_iter must be nonnegative")
    if max_iter < 0:
        raise ValueError("max_iter must be nonnegative")
    if n_tridiag < 0:
        raise ValueError("n_tridiag must be nonnegative")
    check_on_failure(on_failure)
    if loop not in ("auto", "device", "host"):
        raise ValueError(f"loop must be 'auto', 'device' or 'host', got {loop!r}")
    device_loop = (loop == "device" or (loop == "auto" and rhs.device.type != "cpu")) and (
        n_tridiag == 0 and convergence_reduction == "all" and user_eps is None
    )
    if device_loop and check_every is None:
        check_every = DEVICE_CHECK_EVERY
    check_every = resolve_check_every(check_every, rhs.device)
    use_capture = resolve_capture(capture, rhs.device, device_loop, "linear_cg")
    # 0.2.7 raised this even without a tridiagonalisation; now only when one is asked for.
    if n_tridiag and max_tridiag_iter > max_iter:
        raise RuntimeError(
            "Getting a tridiagonalization larger than the number of CG iterations run is not possible!"
        )
    A = operator(matmul_closure, rhs)
    M = preconditioner_operator(preconditioner, rhs)

    B, vector = rhs_block(rhs, matmul_closure)
    X0 = check_x0(initial_guess, rhs, B)
    n = B.shape[-2]
    n_iter = min(max_iter, n) if settings.terminate_cg_by_size else max_iter
    n_tridiag_iter = min(max_tridiag_iter, n)
    if n_tridiag > B.shape[-1]:
        raise ValueError(f"n_tridiag={n_tridiag} is larger than the number of right-hand sides {B.shape[-1]}")

    # Normalise every column; an all-zero column has the exact answer 0.
    b_norm = col_norm(B)
    zero = b_norm == 0
    scale = torch.where(zero, torch.ones_like(b_norm), b_norm).unsqueeze(-2)
    Bn = B / scale
    X = torch.zeros_like(Bn) if X0 is None else torch.where(zero.unsqueeze(-2), 0.0, X0 / scale)

    # One right-hand side on the CPU: the same loop on Python scalars (reading them costs nothing
    # there), a third of the kernel calls of the masked block loop below.
    single = n_tridiag == 0 and B.dim() == 2 and B.shape[-1] == 1 and B.device.type == "cpu"
    single = single and user_eps is None  # a user eps raises on rᵀz < eps: the block loop's test
    split_form = getattr(M, "split_form", None)
    if single and not device_loop and split_form is not None:
        if isinstance(A, SparseOperator) and A.batch is None:
            # prepared before M's first application, which then uses it (see _single_column_cg)
            split_form(A.matrix)
    R = Bn - apply_checked(A, X, "matmul_closure", "rhs")
    # A NaN/Inf in A, b or M (0.2.7: "NaNs encountered ..." error) marks its column, which is
    # cleared so that nothing non-finite reaches the shared loop, and is NaN at the end.
    non_finite = column_non_finite(R)
    Z = R if M is None else apply_checked(M, R, "preconditioner", "residual")
    non_finite |= column_non_finite(Z)
    if device_loop or bool(non_finite.any()):  # the device loop reads nothing on the host here
        keep = ~non_finite.unsqueeze(-2)
        R, Z, X = R.where(keep, 0.0), Z.where(keep, 0.0), X.where(keep, 0.0)
    rz = col_dot(R, Z)
    res = col_norm(R)
    freeze_at = torch.clamp(atol / scale.squeeze(-2), min=stop_updating_after)
    active = res > freeze_at
    if M is not None and bool((active & (rz < eps)).any()):
        raise RuntimeError(
            "CG breakdown: preconditioned residual inner product must be finite and at least eps"
        )
    if user_eps is not None and bool((active & (rz < eps)).any()):
        # a floor the caller chose (0.2.7): an active column below it is a breakdown, not a freeze
        raise RuntimeError(
            "CG breakdown: residual inner product must be finite and at least eps for active right-hand sides"
        )
    active &= rz >= eps  # ‖r‖² below eps (no preconditioner): the residual is zero already
    P = Z.clone()
    matvecs = 1
    iterations = 0
    loop_passed = False
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    tri_active: list[torch.Tensor] = []
    broken_pap = torch.zeros_like(active)
    broken_rz = torch.zeros_like(active)
    stop_tol = torch.clamp(atol / scale.squeeze(-2), min=tolerance)

    def loop_test() -> bool:
        if iterations < min_iter:
            return False
        if n_tridiag and iterations < min(n_tridiag_iter, max_iter - 1):
            return False
        if convergence_reduction == "mean":
            return bool(res.mean() <= tolerance)
        return bool((res <= stop_tol).all())

    # (the device loop finds out at its first check, without a host read here)
    skip = not device_loop and not bool(active.any()) and n_tridiag == 0 and min_iter == 0
    if not skip and device_loop:
        # a column that is still updated after meeting the loop's tolerance would move between
        # checks: then the device loop looks every iteration
        test_tolerance = stop_updating_after < tolerance
        every = 1 if test_tolerance else check_every
        state = device_cg(
            A,
            M,
            X,
            R,
            P,
            rz,
            res,
            active,
            freeze_at,
            stop_tol,
            float(eps),
            n_iter,
            min_iter,
            every,
            test_tolerance,
            use_capture,
        )
        X, res, active, loop_passed, iterations = state[0], state[1], state[2], state[3], state[4]
        matvecs += state[5]
        non_finite |= state[6]
    elif not skip and single:
        state = _single_column_cg(
            A,
            M,
            X,
            R,
            P,
            rz,
            res,
            active,
            freeze_at,
            stop_tol,
            float(eps),
            tolerance,
            n_iter,
            min_iter,
            check_every,
            convergence_reduction,
        )
        X, res, active, loop_passed, iterations, matvecs = (
            state[0],
            state[1],
            state[2],
            state[3],
            state[4],
            matvecs + state[5],
        )
        non_finite |= state[6]
    elif not skip:
        below_eps = None  # with a user eps: active columns whose rᵀz fell below it
        for it in range(n_iter):
            if below_eps is not None and bool(below_eps.any()):
                # 0.2.7 tests rᵀz against a user eps when it is next needed (this iteration's α):
                # a breakdown then, not a freeze (a last iteration's rᵀz is never tested)
                raise RuntimeError(
                    "CG breakdown: residual inner product must be finite and at least eps for active "
                    "right-hand sides"
                )
            AP = A(P)
            matvecs += 1
            pAp = col_dot(P, AP)
            overflow = active & ~torch.isfinite(pAp)
            non_finite |= overflow
            bad = active & ~overflow & ~(pAp >= eps)
            broken_pap |= bad
            step = active & ~bad & ~overflow
            alpha = safe_div(rz, pAp, step)  # 0 for frozen columns: they do not move
            X.addcmul_(alpha.unsqueeze(-2), P)
            R.addcmul_(alpha.unsqueeze(-2), AP, value=-1.0)
            Z = R if M is None else M(R)
            rz_new = col_dot(R, Z)
            # without a preconditioner rᵀz is ‖r‖²: one reduction fewer per iteration
            res = torch.where(step, col_norm(R) if M is not None else rz_new.clamp(min=0).sqrt(), res)
            still = step & (res > freeze_at)
            overflow = still & ~(torch.isfinite(rz_new) & torch.isfinite(res))
            non_finite |= overflow
            bad = still & ~overflow & (rz_new < 0)  # an indefinite preconditioner
            broken_rz |= bad
            if user_eps is not None:
                below_eps = still & ~bad & ~overflow & (rz_new < eps)
            # 0 ≤ rᵀz < eps: the residual vanished (exact convergence in at most n steps); the
            # column is frozen at its solution, which is success, not a breakdown
            still = still & ~bad & ~overflow & (rz_new >= eps)
            beta = safe_div(rz_new, rz, still)
            P.mul_(beta.unsqueeze(-2)).add_(Z)  # a frozen column's P is never used again (α = 0)
            rz = torch.where(still, rz_new, rz)
            if n_tridiag and it < n_tridiag_iter:
                alphas.append(alpha[..., :n_tridiag])
                betas.append(beta[..., :n_tridiag])
                tri_active.append(step[..., :n_tridiag])
            active = still
            iterations = it + 1
            if iterations % check_every == 0 or iterations == n_iter:
                if bool(broken_pap.any()):
                    raise RuntimeError(
                        "CG breakdown: p^T A p must be finite and at least eps for active right-hand sides"
                    )
                if bool(broken_rz.any()):
                    raise RuntimeError(
                        "CG breakdown: residual inner product must be finite and at least eps for active "
                        "right-hand sides"
                    )
                if loop_test():
                    loop_passed = True
                    break
                if (
                    not bool(active.any())
                    and iterations >= min_iter
                    and (not n_tridiag or iterations >= n_tridiag_iter)
                ):
                    # every column is frozen: below stop_updating_after, or its residual vanished
                    # (exact convergence, which the loop's own test cannot see with tolerance 0)
                    loop_passed = True
                    break
    if settings.verbose_linalg:
        print(f"Running CG on a {tuple(rhs.shape)} RHS for {iterations} iterations (tol={tolerance}).")

    X = X * scale
    true_rel, true_abs = true_relative_residual(A, X, B, b_norm)
    matvecs += 1
    missed = ~non_finite & ~(true_abs <= torch.clamp(tolerance * b_norm, min=atol))
    if (
        _restarts > 0
        and loop_passed
        and n_tridiag == 0
        and convergence_reduction == "all"
        and iterations < n_iter
        and bool(missed.any())
    ):
        # The recursive residual met the tolerance but the recomputed one did not (roundoff in
        # the recurrence, seen at tight tolerances): continue from the true residual, with the
        # iterations left, instead of reporting a solve that one more step would finish.
        X, more = linear_cg(
            matmul_closure,
            B,
            tolerance=tolerance,
            eps=user_eps,
            stop_updating_after=stop_updating_after,
            max_iter=n_iter - iterations,
            initial_guess=X,
            preconditioner=preconditioner,
            settings=settings._replace(terminate_cg_by_size=False),
            return_info=True,
            atol=atol,
            check_every=check_every,
            on_failure="ignore",
            loop=loop,
            capture=use_capture,
            _restarts=_restarts - 1,
        )
        iterations += more.iterations
        matvecs += more.matvecs
        res = more.recursive_relative_residual
        true_rel = more.true_relative_residual
        true_abs = true_rel * torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
        if more.non_finite is not None:
            non_finite = non_finite | more.non_finite
    outcome = finish(
        "CG",
        X=X,
        B=B,
        iterations=iterations,
        matvecs=matvecs,
        rel=true_rel,
        abs_res=true_abs,
        b_norm=b_norm,
        rtol=tolerance,
        atol=atol,
        breakdown=torch.zeros_like(active),
        on_failure=on_failure,
        non_finite=non_finite,
    )
    X, converged, true_rel = outcome.X, outcome.info.converged, outcome.info.relative_residual
    if outcome.info.reason == "non_finite":
        reason = "non_finite"
    elif outcome.info.reason in ("converged", "converged_atol"):
        reason = outcome.info.reason  # "converged_atol": the absolute tolerance decided
    elif loop_passed:
        reason = "mean_converged" if convergence_reduction == "mean" else "recursive_converged"
    elif iterations == 0:
        reason = "stopped_updating"
    else:
        reason = "max_iter"
    out: list[Any] = [
        not_differentiable(
            "linear_cg", from_block(X, vector), matmul_closure, rhs, initial_guess, preconditioner, R
        )
    ]
    if n_tridiag:
        out.append(_tridiagonal(alphas, betas, tri_active, B, n_tridiag))
    if return_info:
        out.append(
            CGInfo(
                iterations=iterations,
                matvecs=matvecs,
                converged=converged.detach(),
                recursive_relative_residual=res.detach(),
                true_relative_residual=true_rel.detach(),
                tolerance=outcome.info.tolerance,
                reason=reason,  # type: ignore[arg-type]
                non_finite=outcome.info.non_finite,
            )
        )
    return out[0] if len(out) == 1 else tuple(out)


@torch.no_grad()
def _single_column_cg(
    A: Any,
    M: Any,
    X: torch.Tensor,
    R: torch.Tensor,
    P: torch.Tensor,
    rz_t: torch.Tensor,
    res_t: torch.Tensor,
    active_t: torch.Tensor,
    freeze_at_t: torch.Tensor,
    stop_tol_t: torch.Tensor,
    eps: float,
    tolerance: float,
    n_iter: int,
    min_iter: int,
    check_every: int,
    convergence_reduction: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool, int, int, torch.Tensor]:
    """The block loop of :func:`linear_cg` for one column ``(n, 1)`` on the CPU, on Python scalars.

    Same recurrence, freezing, breakdown and stopping tests in the same order, without autograd
    (a tracked operator is reported by the caller: ``R`` then requires grad); ``X``, ``R`` and ``P``
    are only read.  Returns ``(X, res,
    active, loop_passed, iterations, matvecs, non_finite)`` with the tensors shaped as the block
    loop leaves them.
    """
    n = X.numel()
    # x and r share one (2, n) block, p and w = A p another: both updates x += αp, r −= αw are then
    # one kernel over 2n entries (which PyTorch runs on all threads, as it would not for n < 32768),
    # the product writes w in place, and p = z + βp is one pass: the loop is memory-bound.
    # x, r and z = M⁻¹ r share one (3, n) block: [r; z] · r gives ‖r‖² and rᵀz in one pass
    XRZ = torch.empty((3, n), dtype=X.dtype, device=X.device)
    XR, RZ = XRZ[:2], XRZ[1:]
    x, r, z_buf = XRZ[0], XRZ[1], XRZ[2]
    x.copy_(X.reshape(-1))
    r.copy_(R.reshape(-1))
    PW = torch.empty((2, n), dtype=X.dtype, device=X.device)
    p, w = PW[0], PW[1]
    p.copy_(P.reshape(-1))
    sign = torch.tensor([[1.0], [-1.0]], dtype=X.dtype, device=X.device)
    into = A.mv_into if isinstance(A, SparseOperator) and A.batch is None else None
    rz, res, active = float(rz_t), float(res_t), bool(active_t)
    freeze_at, stop_tol = float(freeze_at_t), float(stop_tol_t)
    # IC(0) whose factor keeps A's own off-diagonal entries (5/7-point stencils): the whole loop
    # compiled, in the split form that needs no product with A (see _compiled.SplitFactor)
    split = getattr(M, "split_form", None)
    split = split(A.matrix) if split is not None and into is not None and active else None
    if split is not None:
        limit = tolerance if convergence_reduction == "mean" else stop_tol
        res, iterations, loop_passed, active, bad, broken = split.cg(
            x, r, n_iter, min_iter, check_every, eps, freeze_at, limit
        )
        if broken:
            raise RuntimeError(
                "CG breakdown: p^T A p must be finite and at least eps for active right-hand sides"
            )
        return (
            x.view(X.shape),
            torch.full_like(res_t, res),
            torch.tensor([active], device=X.device),
            loop_passed,
            iterations,
            iterations,
            torch.tensor([bad], device=X.device),
        )
    # Jacobi: plain CG on D^-½ A D^-½ in the variables x̂ = D^½ x, r̂ = D^-½ r, p̂ = D^½ p (the same
    # iterates; r̂ᵀr̂ is PCG's rᵀz).  ‖r‖ = ‖D^½ r̂‖ lies within [√d_min, √d_max]·‖r̂‖: it is
    # computed only once that bound reaches a threshold, so the loop costs what CG costs.
    # M = c·I (Jacobi of a constant positive diagonal): CG's iterates do not see it
    if into is not None and getattr(M, "scalar", None) is not None:
        M = None
    scaled = getattr(M, "scaled_matrix", None)
    scaled = scaled(A.matrix) if scaled is not None and into is not None else None
    if scaled is not None:
        S_hat, s = scaled
        root_d = s.reciprocal()
        x.div_(s)
        r.mul_(s)
        p.div_(s)
        d_lo, d_hi = float(root_d.min()), float(root_d.max())
        threshold = max(freeze_at, tolerance if convergence_reduction == "mean" else stop_tol)
        M = None
        into = lambda v, out: torch.mv(S_hat, v, out=out)  # type: ignore[assignment]  # noqa: E731

    pc_into = getattr(M, "vector_into", None)
    broken_pap = broken_rz = non_finite = loop_passed = False
    iterations = matvecs = 0
    for it in range(n_iter):
        matvecs += 1
        if active:
            if into is not None:
                into(p, w)
            else:
                w.copy_(A(p.view(-1, 1)).reshape(-1))
            pAp = float(torch.dot(p, w))
            step = False
            if not math.isfinite(pAp):
                non_finite = True
            elif not pAp >= eps:
                broken_pap = True
            else:
                step = True
            still = False
            if step:
                alpha = rz / pAp
                XR.addcmul_(PW, sign, value=alpha)
                if M is None:
                    z = r
                    rz_new = float(torch.dot(r, r))
                    if scaled is None:
                        res = math.sqrt(max(rz_new, 0.0))
                    else:
                        res = math.sqrt(max(rz_new, 0.0)) * d_lo
                        if not res > threshold and d_lo != d_hi:  # the exact norm decides
                            res = float(torch.linalg.vector_norm(r * root_d))
                else:
                    z = z_buf
                    if pc_into is not None:
                        pc_into(r, z)
                    else:
                        z.copy_(M(r.view(-1, 1)).reshape(-1))
                    rr, rz_new = torch.mv(RZ, r).tolist()
                    res = math.sqrt(max(rr, 0.0))
                if res > freeze_at:
                    if not (math.isfinite(rz_new) and math.isfinite(res)):
                        non_finite = True
                    elif rz_new < 0:  # an indefinite preconditioner
                        broken_rz = True
                    elif rz_new >= eps:  # below eps: the residual vanished (exact convergence)
                        still = True
                if still:
                    torch.add(z, p, alpha=rz_new / rz, out=p)
                    rz = rz_new
            active = still
        iterations = it + 1
        if iterations % check_every == 0 or iterations == n_iter:
            if broken_pap:
                raise RuntimeError(
                    "CG breakdown: p^T A p must be finite and at least eps for active right-hand sides"
                )
            if broken_rz:
                raise RuntimeError(
                    "CG breakdown: residual inner product must be finite and at least eps for active "
                    "right-hand sides"
                )
            if iterations >= min_iter:
                limit = tolerance if convergence_reduction == "mean" else stop_tol
                if res <= limit:
                    loop_passed = True
                    break
                if not active:
                    break
    if scaled is not None:
        x.mul_(s)
        res = float(torch.linalg.vector_norm(r * root_d))
    flag = torch.tensor([non_finite], device=X.device)
    res_out = torch.full_like(res_t, res)
    return (
        x.view(X.shape),
        res_out,
        torch.tensor([active], device=X.device),
        loop_passed,
        iterations,
        matvecs,
        flag,
    )


def _tridiagonal(
    alphas: list[torch.Tensor],
    betas: list[torch.Tensor],
    active: list[torch.Tensor],
    B: torch.Tensor,
    n_tridiag: int,
) -> torch.Tensor:
    """Lanczos matrices ``T`` ``(n_tridiag, *batch, r, r)`` from the CG coefficients.

    ``T[j, j] = 1/α_j + β_{j−1}/α_{j−1}`` and ``T[j, j−1] = T[j−1, j] = √β_{j−1} / α_{j−1}``; the
    matrix stops growing at the first step where a column was frozen or every off-diagonal
    entry fell below 1e-6 (the recurrence has found an invariant subspace).
    """
    batch = B.shape[:-2]
    r = 0
    for j in range(len(alphas)):
        if not bool(active[j].all()):
            break
        r = j + 1
        if j > 0:
            off = torch.sqrt(betas[j - 1]) / alphas[j - 1]
            if float(off.abs().max()) < 1e-6:
                break
    T = torch.zeros(*batch, n_tridiag, r, r, dtype=B.dtype, device=B.device)
    for j in range(r):
        diag = 1.0 / alphas[j]
        if j > 0:
            diag = diag + betas[j - 1] / alphas[j - 1]
            off = torch.sqrt(betas[j - 1]) / alphas[j - 1]
            T[..., j, j - 1] = off
            T[..., j - 1, j] = off
        T[..., j, j] = diag
    return T.movedim(-3, 0)
