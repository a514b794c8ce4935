"""What every solver shares: its result report, the non-convergence signal, keyword aliases."""

from __future__ import annotations

import enum
import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch

from tsgu_ops.internal import (
    FLOAT_DTYPES,
    check_sparse_indices,
    require_not_meta,
    require_same_dtype,
    require_value_dtype,
)

from ._operator import MatVec, SparseOperator, as_matvec, as_preconditioner, col_norm

OnFailure = Literal["warn", "raise", "ignore"]
_ON_FAILURE = ("warn", "raise", "ignore")


class ConvergenceWarning(UserWarning):
    """A solver stopped before every right-hand side reached its tolerance."""


class ConvergenceError(RuntimeError):
    """Raised instead of :class:`ConvergenceWarning` when ``on_failure="raise"``."""


class SolveReason(str, enum.Enum):
    """Why a solve stopped: the ``reason`` of every :class:`SolveInfo`.

    A ``str`` enum: ``info.reason == "converged"`` holds as before, and each member carries a
    sentence for people (:attr:`message`).  Members are ordered from best to worst outcome.
    """

    CONVERGED = "converged"
    CONVERGED_ATOL = "converged_atol"
    STOPPED_UPDATING = "stopped_updating"
    RECURSIVE_CONVERGED = "recursive_converged"
    MEAN_CONVERGED = "mean_converged"
    MAX_ITER = "max_iter"
    BREAKDOWN = "breakdown"
    NON_FINITE = "non_finite"

    @property
    def message(self) -> str:
        """What the reason means, in a sentence."""
        return _REASON_MESSAGES[self]

    def __str__(self) -> str:
        return self.value


_REASON_MESSAGES = {
    SolveReason.CONVERGED: "every right-hand side met its relative tolerance (true residual)",
    SolveReason.CONVERGED_ATOL: (
        "every right-hand side converged, at least one only by the absolute tolerance atol, not rtol"
    ),
    SolveReason.STOPPED_UPDATING: "no iteration was needed: every residual was already below its threshold",
    SolveReason.RECURSIVE_CONVERGED: (
        "the recurrence's residual met the tolerance but a recomputed true residual did not"
    ),
    SolveReason.MEAN_CONVERGED: "the mean residual met the tolerance but a true residual did not",
    SolveReason.MAX_ITER: "the iteration budget ran out before every right-hand side converged",
    SolveReason.BREAKDOWN: "the recurrence broke down (a zero denominator) for a right-hand side",
    SolveReason.NON_FINITE: "a right-hand side met a NaN or an infinity; its solution is NaN",
}


@dataclass(frozen=True)
class SolveInfo:
    """What a Krylov solve did (returned with ``return_info=True``).

    Attributes
    ----------
    iterations : int
        Iterations run (the largest over the right-hand sides).
    matvecs : int
        Operator applications, the final residual check included.
    converged : Tensor
        Bool, ``(*batch, k)``: whether each right-hand side met its tolerance (true residual).
    relative_residual : Tensor
        ``‖b − A x‖ / ‖b‖`` per right-hand side, recomputed from the returned solution (for
        least squares: the stopping test's value).
    tolerance : float
        The relative tolerance that decided: ``rtol``, or, where an absolute floor ``atol`` was
        looser than ``rtol·‖b‖`` for a right-hand side that it let pass, the largest such
        ``atol / ‖b‖`` (then ``reason`` is ``"converged_atol"``).  Units never change it unless
        ``atol`` is given.
    breakdown : Tensor
        Bool, ``(*batch, k)``: right-hand sides whose recurrence broke down (a zero denominator);
        they were frozen at their last iterate.
    reason : SolveReason
        A ``str`` enum (compares equal to its value; ``reason.message`` explains it):
        ``"converged"``, ``"converged_atol"`` (converged, but for at least one right-hand side only
        by the absolute floor ``atol``, not by ``rtol``), ``"max_iter"``, ``"breakdown"`` or
        ``"non_finite"`` (the worst that happened to any right-hand side, in the order
        non_finite, breakdown, max_iter).
    non_finite : Tensor
        Bool, ``(*batch, k)``: right-hand sides that met a NaN or an infinity (in the operator, the
        right-hand side, the preconditioner or an iterate that overflowed); their solution is NaN
        and their relative residual NaN.
    """

    iterations: int
    matvecs: int
    converged: torch.Tensor
    relative_residual: torch.Tensor
    tolerance: float
    breakdown: torch.Tensor
    reason: SolveReason
    non_finite: torch.Tensor | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", SolveReason(self.reason))


def check_on_failure(on_failure: Any) -> None:
    if on_failure not in _ON_FAILURE:
        raise ValueError(f"on_failure must be one of {_ON_FAILURE}, got {on_failure!r}")


def check_tolerance(name: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "nonnegative"
        raise ValueError(f"{name} must be finite and {kind}, got {value}")
    return value


def resolve_check_every(check_every: Any, device: torch.device) -> int:
    """Iterations between host-side looks at the convergence flags.

    On the CPU the flags are already on the host, so every iteration; on an accelerator reading
    them waits for the queue to drain, so every 8 iterations by default (a converged column is
    frozen on the device meanwhile, so the extra iterations do not change the answer).
    """
    if check_every is None:
        return 1 if device.type == "cpu" else 8
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be a positive int, got {check_every!r}")
    return check_every


def alias(primary_name: str, primary: Any, **aliases: Any) -> Any:
    """One value from a keyword and its aliases (``rtol``/``tol``, ``max_iter``/``maxiter``)."""
    given = {k: v for k, v in aliases.items() if v is not None}
    if primary is not None:
        given = {primary_name: primary, **given}
    if len({repr(v) for v in given.values()}) > 1:
        names = " and ".join(given)
        raise ValueError(f"{names} are aliases of one setting; give one of them, got {given}")
    return next(iter(given.values()), None)


def check_rhs(rhs: Any) -> torch.Tensor:
    """``rhs`` as a solver takes it: a real float32/float64 dense tensor with data (not ``meta``).

    The 0.2.7 message ("rhs must be a real floating-point torch.Tensor") starts the error for a
    non-tensor, an integer or a complex ``rhs``; the supported dtypes follow.
    """
    if not isinstance(rhs, torch.Tensor) or rhs.is_complex() or not rhs.is_floating_point():
        got = rhs.dtype if isinstance(rhs, torch.Tensor) else type(rhs).__name__
        raise TypeError(
            "rhs must be a real floating-point torch.Tensor (float32 or float64; complex values are "
            f"not supported by tsgu-krylov), got {got}"
        )
    require_value_dtype("rhs", rhs, FLOAT_DTYPES)
    require_not_meta("rhs", rhs)
    if rhs.dim() == 0:
        raise ValueError("rhs must have at least one dimension")
    if rhs.layout != torch.strided:
        raise TypeError(f"rhs must be a dense (strided) tensor, got {rhs.layout}")
    return rhs


def check_operator_tensor(op: Any, name: str, rhs: torch.Tensor) -> None:
    """Validate an operator or preconditioner given as a tensor (a callable is the caller's business).

    A sparse tensor's indices are checked (:func:`tsgu_ops._checks.check_sparse_indices`: an
    out-of-range index would make the native product read out of bounds), its values must be
    float32/float64 like ``rhs`` and it must hold data (not ``meta``).
    """
    if not isinstance(op, torch.Tensor):
        return
    require_not_meta(name, op)
    if op.layout in (torch.sparse_coo, torch.sparse_csr):
        check_sparse_indices(name, op)
    require_value_dtype(name, op, FLOAT_DTYPES)
    require_same_dtype(name, op, "rhs", rhs)


def operator(op: Any, rhs: torch.Tensor, name: str = "matmul_closure") -> MatVec:
    """:func:`~._operator.as_matvec` after :func:`check_operator_tensor`."""
    check_operator_tensor(op, name, rhs)
    return as_matvec(op, name)


def preconditioner_operator(op: Any, rhs: torch.Tensor, name: str = "preconditioner") -> MatVec | None:
    """:func:`~._operator.as_preconditioner` after :func:`check_operator_tensor`."""
    check_operator_tensor(op, name, rhs)
    return as_preconditioner(op, name)


def operator_batch(op: Any) -> tuple[tuple[int, ...], int] | None:
    """``(batch shape, n)`` of a batched operator (a tensor of 3 or more dims, or a batched
    :class:`~._operator.SparseOperator`); ``None`` for a 2-D operator or a callable."""
    if isinstance(op, torch.Tensor) and op.dim() >= 3:
        return tuple(op.shape[:-2]), int(op.shape[-1])
    if isinstance(op, SparseOperator) and op.batch is not None:
        return (op.batch,), op.n
    return None


def rhs_block(rhs: torch.Tensor, op: Any) -> tuple[torch.Tensor, bool]:
    """The right-hand side as a block ``(*batch, n, k)`` and whether it was a (batch of) vector(s).

    ``(n,)`` is one vector.  For a batched operator ``(*batch, n, n)``, a right-hand side
    ``(*batch, n)`` is one vector per batch item (a 2-D right-hand side otherwise means ``(n, k)``),
    and the block is broadcast against the operator's batch shape (as ``torch.matmul`` does, and
    0.2.7's CG and MINRES did: ``A`` ``(3, n, n)`` with ``b`` ``(n, k)`` solves 3 systems).
    """
    if rhs.dim() == 1:
        B, vector = rhs.unsqueeze(-1), True
    else:
        B, vector = rhs, False
    batch = operator_batch(op)
    if batch is not None:
        shape, n = batch
        if not vector and rhs.dim() == len(shape) + 1 and tuple(rhs.shape) == (*shape, n):
            B, vector = rhs.unsqueeze(-1), True
        try:
            full = torch.broadcast_shapes(shape, B.shape[:-2])
        except RuntimeError:
            raise ValueError(
                f"rhs of shape {tuple(rhs.shape)} does not broadcast against the operator's batch "
                f"shape {shape}"
            ) from None
        if tuple(full) != tuple(B.shape[:-2]):
            B = B.expand(*full, *B.shape[-2:]).contiguous()
    return B, vector


def check_x0(
    x0: Any, rhs: torch.Tensor, block: torch.Tensor, name: str = "initial_guess"
) -> torch.Tensor | None:
    """The initial guess as a block like ``block`` (``(n, 1)`` accepted for a vector rhs).

    A guess shaped like ``rhs`` follows ``rhs`` through :func:`rhs_block` (made a block and
    broadcast against a batched operator).
    """
    if x0 is None:
        return None
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x0).__name__}")
    if x0.dtype != rhs.dtype or x0.device != rhs.device:
        raise ValueError(f"{name} must share rhs device and dtype")
    if x0.shape == rhs.shape:
        if x0.numel() == block.numel():
            return x0.reshape(block.shape)
        pre = tuple(rhs.shape) if tuple(rhs.shape[-2:]) == tuple(block.shape[-2:]) else (*rhs.shape, 1)
        return torch.broadcast_to(x0.reshape(pre), block.shape)
    if x0.shape == block.shape:
        return x0
    raise ValueError(f"{name} must have shape {tuple(rhs.shape)}, got {tuple(x0.shape)}")


def apply_checked(op: MatVec, X: torch.Tensor, name: str, what: str) -> torch.Tensor:
    """``op(X)``, checked once for shape, dtype and device (the first application of a solve)."""
    Y = op(X)
    if not isinstance(Y, torch.Tensor) or Y.shape != X.shape or Y.dtype != X.dtype or Y.device != X.device:
        raise RuntimeError(f"{name} output must match {what} shape, device, and dtype")
    return Y


def true_relative_residual(
    op: MatVec, X: torch.Tensor, B: torch.Tensor, b_norm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(‖B − A X‖ / ‖B‖, ‖B − A X‖)`` per column; a zero column is measured absolutely."""
    r = col_norm(B - op(X))
    return r / torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm)), r


def column_non_finite(X: torch.Tensor) -> torch.Tensor:
    """Bool ``(*batch, k)``: columns of a block holding a NaN or an infinity."""
    return ~torch.isfinite(X).all(-2)


@dataclass(frozen=True)
class Outcome:
    """What :func:`finish` decided: the solution to return (NaN in non-finite columns) and the report."""

    X: torch.Tensor
    info: SolveInfo


def finish(
    solver: str,
    *,
    X: torch.Tensor,
    B: torch.Tensor,
    iterations: int,
    matvecs: int,
    rel: torch.Tensor,
    abs_res: torch.Tensor,
    b_norm: torch.Tensor,
    rtol: float,
    atol: float,
    breakdown: torch.Tensor,
    on_failure: str,
    non_finite: torch.Tensor | None = None,
    atol_default: str | None = None,
) -> Outcome:
    """Build the report and signal non-convergence as asked (warning by default).

    A column converged when ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)`` (a zero right-hand side is held to
    ``atol`` alone).  A column that met a NaN or an infinity (``non_finite`` from the solver's loop,
    or found here in ``B``, ``X`` or the residual) never passes for a solution: its ``X`` becomes
    NaN, whatever the loop left there, and it is reported.

    A column that passed only because of ``atol`` (its residual is above ``rtol·‖b‖``) makes the
    reported tolerance the largest such ``atol / ‖b‖`` and the reason ``"converged_atol"``.  When
    that ``atol`` is a default the caller did not choose (``atol_default`` names it, e.g.
    0.2.7's ``BICGSTABSettings.abstol``), a :class:`ConvergenceWarning` says so (not with
    ``on_failure="ignore"``; never an error: the documented criterion was met).
    """
    bad = column_non_finite(X) | column_non_finite(B) | ~torch.isfinite(abs_res)
    if non_finite is not None:
        bad = bad | non_finite
    # no host read before the one below (a device loop's budget): NaN where bad, unconditionally
    X = torch.where(bad.unsqueeze(-2), torch.full((), float("nan"), dtype=X.dtype, device=X.device), X)
    rel = torch.where(bad, torch.full_like(rel, float("nan")), rel)
    converged = ~bad & (abs_res <= torch.clamp(rtol * b_norm, min=atol))
    by_atol = converged & (abs_res > rtol * b_norm) & (b_norm > 0)
    tolerance = rtol
    if atol > 0 and bool(by_atol.any()):
        tolerance = max(rtol, float((atol / b_norm[by_atol]).max()))
    breakdown = breakdown & ~bad
    n_bad, n_nonfinite, n_broken = torch.stack([(~converged).sum(), bad.sum(), breakdown.sum()]).tolist()
    if n_nonfinite:
        reason = "non_finite"
    elif n_bad == 0:
        reason = "converged" if tolerance == rtol else "converged_atol"
    else:
        reason = "breakdown" if n_broken else "max_iter"
    info = SolveInfo(
        iterations=iterations,
        matvecs=matvecs,
        converged=converged.detach(),
        relative_residual=rel.detach(),
        tolerance=tolerance,
        breakdown=breakdown.detach(),
        reason=SolveReason(reason),
        non_finite=bad.detach(),
    )
    if n_bad:
        finite_rel = rel[~bad]
        worst = float(finite_rel.max()) if finite_rel.numel() else float("nan")
        parts = []
        if n_bad > n_nonfinite:
            parts.append(
                f"{solver} terminated in {iterations} iterations with maximum true relative residual "
                f"{worst:.3e} which is larger than the tolerance of {rtol}. {n_bad - n_nonfinite} of "
                f"{converged.numel()} right-hand sides did not converge."
            )
        if n_broken:
            parts.append(f"{n_broken} broke down (a zero denominator in the recurrence).")
        if n_nonfinite:
            parts.append(non_finite_message(solver, n_nonfinite, converged.numel()))
        signal(" ".join(parts), on_failure)
    if atol_default is not None and tolerance != rtol and on_failure != "ignore":
        n_atol = int(by_atol.sum())
        warnings.warn(
            f"{solver}: the absolute tolerance atol={atol:g} ({atol_default}), not rtol={rtol:g}, "
            f"ended the solve of {n_atol} of {converged.numel()} right-hand sides, at a true relative "
            f"residual up to {float(rel[by_atol].max()):.3e}: the accuracy depends on the scale of b. "
            "Pass atol=0 for a solve to rtol whatever the units.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return Outcome(X, info)


def non_finite_message(solver: str, n_bad: int, total: int) -> str:
    return (
        f"{solver}: {n_bad} of {total} right-hand sides met a non-finite value (NaN or Inf in the "
        "operator, the right-hand side or the preconditioner, or an iterate that overflowed); their "
        "solution is returned as NaN."
    )


def signal(msg: str, on_failure: str) -> None:
    if on_failure == "raise":
        raise ConvergenceError(msg)
    if on_failure == "warn":
        warnings.warn(msg, ConvergenceWarning, stacklevel=4)


def givens(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Givens rotation ``(c, s, r)`` with ``[c s; −s c] [a; b] = [r; 0]`` and ``r ≥ 0`` (elementwise).

    ``a = b = 0`` gives the identity rotation.  Used by GMRES (Hessenberg QR) and LSMR.
    """
    r = torch.hypot(a, b)
    ok = r > 0
    safe = torch.where(ok, r, torch.ones_like(r))
    return torch.where(ok, a / safe, torch.ones_like(a)), torch.where(ok, b / safe, torch.zeros_like(b)), r


def safe_div(num: torch.Tensor, den: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``mask``, else 0, without dividing by zero anywhere."""
    ok = mask & (den != 0)
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


class _NotDifferentiable(torch.autograd.Function):
    """Identity whose backward raises: see :func:`not_differentiable`."""

    @staticmethod
    def forward(ctx: Any, X: torch.Tensor, name: str, *inputs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.name = name
        return X.clone()

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> Any:
        raise RuntimeError(
            f"{ctx.name} is not differentiable through its iterations (they update vectors in place "
            "and read step sizes as numbers, as in 0.2.7): use tsgu_krylov.sparse_generic_solve, "
            "whose gradient is exact and costs one transposed solve, or detach the solver's inputs"
        )


def not_differentiable(name: str, X: torch.Tensor, *inputs: Any) -> torch.Tensor:
    """``X``, made to raise a clear error if autograd ever differentiates through the solve.

    The solvers are not differentiable (0.2.7 said so; their in-place updates made backward fail
    there).  A gradient recorded through their loops would be wrong (the single-column fast paths
    read step sizes as Python numbers) or missing (tensor operators are applied detached), so when
    grad mode is on and ``X`` or any tensor among ``inputs`` (operator, preconditioner, right-hand
    side, initial guess) requires grad, ``X`` is returned through an identity whose backward raises.
    ``sparse_generic_solve`` calls the solvers with grad mode off and differentiates implicitly.
    """
    if not torch.is_grad_enabled():
        return X
    tracked = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    if not X.requires_grad and not tracked:
        return X
    return _NotDifferentiable.apply(X, name, *tracked)  # type: ignore[no-any-return]
