"""LSMR (Fong and Saunders, 2011) for least squares ``min ‖A x − b‖² + damp² ‖x‖²``.

Golub–Kahan bidiagonalisation of ``A`` with a second QR step, so that ``‖Aᵀ r‖`` decreases
monotonically; the stopping rules are the published ones (``atol``, ``btol``, ``conlim``), evaluated
with the cheap norm estimates of the paper.  Written for blocks: the columns of ``b`` ``(m, k)``
have their own scalars and stop on their own (a stopped column keeps its iterate), so several
right-hand sides cost one operator application per step instead of ``k``.  SciPy's ``lsmr`` solves
one vector; torchsparsegradutils 0.2.7 failed on ``maxiter=0`` and reshaped ``(m, k)`` wrongly.
"""

from __future__ import annotations

from typing import Any

import torch

from tsgu_ops.internal import (
    COMPLEX_DTYPES,
    FLOAT_DTYPES,
    autocast_fp32,
    check_sparse_indices,
    require_not_meta,
    require_same_dtype,
    require_value_dtype,
)

from ._common import (
    SolveInfo,
    SolveReason,
    check_on_failure,
    givens,
    non_finite_message,
    not_differentiable,
    resolve_check_every,
    signal,
)
from ._device_lsmr import LSMR_CHECK_EVERY, device_lsmr
from ._graphs import capture_not_offered
from ._operator import SparseOperator, col_norm

_LSMR_DTYPES = FLOAT_DTYPES + COMPLEX_DTYPES

__all__ = ["lsmr"]


def _closure(op: Any, vector: bool) -> Any:
    if isinstance(op, SparseOperator):
        return op
    if isinstance(op, torch.Tensor):
        if op.layout in (torch.sparse_coo, torch.sparse_csr) and not op.is_complex():
            return SparseOperator(op)
        M = op.detach()
        return lambda X: M @ X
    if callable(op):
        if vector:  # a user closure written for vectors (0.2.7) sees vectors
            return lambda X: op(X.squeeze(-1)).unsqueeze(-1)
        return op
    raise RuntimeError("matmul_closure must be a tensor, or a callable object!")


@autocast_fp32
def lsmr(
    A: Any,
    b: torch.Tensor,
    Armat: Any = None,
    n: int | None = None,
    damp: float = 0.0,
    atol: float = 1e-6,
    btol: float = 1e-6,
    conlim: float = 1e8,
    maxiter: int | None = None,
    x0: torch.Tensor | None = None,
    check_nonzero: bool = True,
    *,
    on_failure: str = "warn",
    return_info: bool = False,
    loop: str = "auto",
    capture: bool | None = None,
) -> Any:
    """Least-squares solve of ``A x ≈ b`` by LSMR; several right-hand sides at once.

    Parameters
    ----------
    A : Tensor or callable
        ``(m, n)`` dense or sparse tensor, or a callable ``x ↦ A x`` (then ``Armat`` and ``n``
        are required).
    b : Tensor
        ``(m,)`` (``(m, 1)`` and ``(1, m)`` are treated as a vector, as in 0.2.7) or ``(m, k)``.
    Armat : Tensor or callable
        ``Aᴴ`` or ``y ↦ Aᴴ y`` (default: from ``A``).
    n : int
        Number of unknowns (default ``A.shape[1]``).
    damp, atol, btol, conlim : float
        Damping and the stopping tolerances of the paper (SciPy's meaning).
    maxiter : int
        Iteration cap (default ``min(m, n)``); ``0`` returns the initial guess.
    x0 : Tensor
        Initial guess ``(n,)`` or ``(n, k)``; not modified.
    check_nonzero : bool
        Return at once when ``b`` or ``Aᴴ b`` is zero.
    on_failure : {"warn", "raise", "ignore"}
        What a column that meets a NaN or an infinity (in ``A``, ``b`` or an iterate that
        overflowed) causes: a :class:`~tsgu_krylov.ConvergenceWarning`, a
        :class:`~tsgu_krylov.ConvergenceError`, or nothing.  Its solution is NaN in every case.
    loop : {"auto", "device", "host"}
        ``"device"``: the device loop (:mod:`tsgu_krylov._device_lsmr`): the same recurrence with
        its per-column scalar work grouped (87 kernel calls per iteration instead of 204),
        the stopping flags read every 8 iterations; same iterate and iteration count as
        ``"host"`` (complex values: the block loop, looking every 8 iterations).  ``"host"``: the
        block loop.  ``"auto"`` (default): the device loop on accelerators, the block loop on
        the CPU.  With ``return_info`` the block loop runs (it records each column's stop).
    capture : bool, optional
        Accepted for symmetry with :func:`~tsgu_krylov.linear_cg` and :func:`~tsgu_krylov.minres`
        (and validated): CUDA-graph capture is not offered for this solver yet (its loop has not been
        restructured into fixed-state blocks);
        ``True`` warns and the loop runs uncaptured.
    return_info : bool
        Also return a :class:`~tsgu_krylov.SolveInfo` (as the other solvers do): ``converged``
        per column (one of the paper's stopping tests passed), ``relative_residual`` the estimate
        ``‖b − A x‖ / ‖b‖`` of the stopping test, ``tolerance`` ``btol``, ``matvecs`` counting
        products with ``A`` and ``Aᴴ``.

    Returns
    -------
    (Tensor, int) or (Tensor, int, SolveInfo)
        ``x`` of shape ``(n,)`` or ``(n, k)`` and the number of iterations run (and the report).

    Raises
    ------
    TypeError
        ``b`` (or a tensor ``A``/``Armat``) of a dtype other than float32, float64, complex64 or
        complex128 (LSMR is the one tsgu-krylov solver that takes complex values, as in 0.2.7),
        or of different dtypes.
    ValueError
        Wrong shapes, a ``meta`` tensor, a sparse ``A``/``Armat`` with out-of-range indices.

    Examples
    --------
    >>> import torch
    >>> from tsgu_krylov import lsmr
    >>> A = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], dtype=torch.float64).to_sparse()
    >>> x, itn = lsmr(A, torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64))
    >>> x
    tensor([1.0000, 1.0000], dtype=torch.float64)
    """
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"b must be a torch.Tensor, got {type(b).__name__}")
    require_value_dtype("b", b, _LSMR_DTYPES)
    require_not_meta("b", b)
    check_on_failure(on_failure)
    if loop not in ("auto", "device", "host"):
        raise ValueError(f"loop must be 'auto', 'device' or 'host', got {loop!r}")
    capture_not_offered(capture, "lsmr")
    for name, op in (("A", A), ("Armat", Armat)):
        if isinstance(op, torch.Tensor):
            require_not_meta(name, op)
            if op.layout in (torch.sparse_coo, torch.sparse_csr):
                check_sparse_indices(name, op)
            require_value_dtype(name, op, _LSMR_DTYPES)
            require_same_dtype(name, op, "b", b)
    if b.dim() == 2 and 1 in b.shape:
        b = b.reshape(-1)
    if b.dim() not in (1, 2):
        raise ValueError(f"b must be (m,) or (m, k), got shape {tuple(b.shape)}")
    vector = b.dim() == 1
    if isinstance(A, torch.Tensor):
        if A.dim() != 2:
            raise ValueError(f"A must be a 2-D (m, n) tensor, got shape {tuple(A.shape)}")
        n = int(A.shape[1]) if n is None else n
        if Armat is None:
            if A.layout in (torch.sparse_coo, torch.sparse_csr) and not A.is_complex():
                Aop = SparseOperator(A)
                A, Armat = Aop, SparseOperator(A, transpose=True, pattern=Aop.pattern)
            else:
                Armat = A.detach().adjoint()
    elif not callable(A):
        raise RuntimeError("matmul_closure must be a tensor, or a callable object!")
    if n is None:
        raise RuntimeError("n needs to be provided or computed from A given as a tensor")
    if Armat is None or not (isinstance(Armat, torch.Tensor) or callable(Armat)):
        raise RuntimeError("matmul_closure must be a tensor, or a callable object!")
    if maxiter is not None and maxiter < 0:
        raise ValueError(f"maxiter must be nonnegative, got {maxiter}")
    Aop = _closure(A, vector)
    Atop = _closure(Armat, vector)
    B = b.unsqueeze(-1) if vector else b
    m, k = B.shape
    maxiter = min(m, n) if maxiter is None else maxiter
    real = torch.empty((), dtype=B.dtype).real.dtype
    every = resolve_check_every(LSMR_CHECK_EVERY if loop == "device" else None, B.device)
    with torch.no_grad():
        if x0 is None:
            X = torch.zeros(n, k, dtype=B.dtype, device=B.device)
            U = B.clone()
        else:
            X = (x0.unsqueeze(-1) if x0.dim() == 1 else x0).to(B.dtype).clone()
            U = B - Aop(X)
        beta = col_norm(U).to(real)
        U = U / torch.where(beta > 0, beta, 1.0).unsqueeze(0)
        V = Atop(U)
        alpha = col_norm(V).to(real)
        V = V / torch.where(alpha > 0, alpha, 1.0).unsqueeze(0)
        # a NaN/Inf in A, b or x0: the column is marked and is NaN at the end
        non_finite = ~(torch.isfinite(alpha) & torch.isfinite(beta))
        matvecs = 2 if x0 is not None else 1
        if maxiter == 0 or (check_nonzero and bool(((alpha * beta) == 0).all())):
            X, _ = _nan_columns(X, non_finite, on_failure, k)
            solved = (alpha * beta) == 0  # b = 0 or Aᴴb = 0 (0 is the least-squares solution)
            info = _info(0, matvecs, X, beta, col_norm(B).to(real), solved, non_finite, btol)
            X = X.squeeze(-1) if vector else X
            return (X, 0, info) if return_info else (X, 0)
        zero = torch.zeros_like(beta)
        one = torch.ones_like(beta)
        zetabar, alphabar = alpha * beta, alpha
        rho, rhobar, cbar, sbar = one, one, one, zero
        Hv, Hbar = V.clone(), torch.zeros_like(V)
        betadd, betad, rhodold, tautildeold, thetatilde, zeta, d = beta, zero, one, zero, zero, zero, zero
        normA2 = alpha * alpha
        maxrbar, minrbar = zero, torch.full_like(beta, torch.finfo(real).max)  # 1e100: float32 overflow
        normb = beta
        ctol = 1.0 / conlim if conlim > 0 else 0.0
        active = ((alpha * beta) != 0) & ~non_finite
        itn = 0
        last = torch.zeros(k, dtype=torch.int64, device=B.device)
        stopped = ~active & ~non_finite  # b = 0 or Aᴴb = 0 for this column: x = 0 solves it
        normr = beta
        # the device loop keeps no per-column stopping record: a report (return_info) takes the
        # block loop, which writes one
        device_loop = (
            (loop == "device" or (loop == "auto" and B.device.type != "cpu"))
            and not B.is_complex()
            and not return_info
        )
        if device_loop:
            X, last, bad = device_lsmr(
                Aop, Atop, X, U, V, alpha, beta, active, damp, atol, btol, ctol, maxiter, every
            )
            non_finite = non_finite | bad
        while not device_loop and itn < maxiter:
            itn += 1
            matvecs += 2
            U = Aop(V) - alpha.to(B.dtype).unsqueeze(0) * U
            beta = col_norm(U).to(real)
            U = U / torch.where(beta > 0, beta, 1.0).unsqueeze(0)
            V = torch.where((beta > 0).unsqueeze(0), Atop(U) - beta.to(B.dtype).unsqueeze(0) * V, V)
            alpha = torch.where(beta > 0, col_norm(V).to(real), alpha)
            V = V / torch.where(alpha > 0, alpha, 1.0).unsqueeze(0)
            chat, shat, alphahat = givens(alphabar, torch.full_like(alphabar, damp))
            rhoold = rho
            c, s, rho = givens(alphahat, beta)
            thetanew = s * alpha
            alphabar = c * alpha
            rhobarold, zetaold = rhobar, zeta
            thetabar = sbar * rho
            rhotemp = cbar * rho
            cbar, sbar, rhobar = givens(cbar * rho, thetanew)
            zeta = cbar * zetabar
            zetabar = -sbar * zetabar
            den1 = rhoold * rhobarold
            Hbar = Hv - (thetabar * rho / torch.where(den1 != 0, den1, 1.0)).to(B.dtype).unsqueeze(0) * Hbar
            den2 = rho * rhobar
            stepx = torch.where(active & (den2 != 0), zeta / torch.where(den2 != 0, den2, 1.0), zero)
            X = X + stepx.to(B.dtype).unsqueeze(0) * Hbar
            Hv = V - (thetanew / torch.where(rho != 0, rho, 1.0)).to(B.dtype).unsqueeze(0) * Hv
            # estimate ‖r‖
            betaacute = chat * betadd
            betacheck = -shat * betadd
            betahat = c * betaacute
            betadd = -s * betaacute
            thetatildeold = thetatilde
            ctildeold, stildeold, rhotildeold = givens(rhodold, thetabar)
            thetatilde = stildeold * rhobar
            rhodold = ctildeold * rhobar
            betad = -stildeold * betad + ctildeold * betahat
            tautildeold = (zetaold - thetatildeold * tautildeold) / torch.where(
                rhotildeold != 0, rhotildeold, 1.0
            )
            taud = (zeta - thetatilde * tautildeold) / torch.where(rhodold != 0, rhodold, 1.0)
            d = d + betacheck * betacheck
            normr = torch.sqrt(d + (betad - taud) ** 2 + betadd * betadd)
            # estimate ‖A‖ and cond(A)
            normA2 = normA2 + beta * beta
            normA = torch.sqrt(normA2)
            normA2 = normA2 + alpha * alpha
            maxrbar = torch.maximum(maxrbar, rhobarold)
            if itn > 1:
                minrbar = torch.minimum(minrbar, rhobarold)
            tiny = torch.finfo(real).tiny
            condA = torch.maximum(maxrbar, rhotemp) / torch.minimum(minrbar, rhotemp).clamp_min(tiny)
            normar = zetabar.abs()
            normx = col_norm(X).to(real)
            # stopping rules
            test1 = normr / torch.where(normb > 0, normb, 1.0)
            prod = normA * normr
            test2 = torch.where(
                prod != 0, normar / torch.where(prod != 0, prod, 1.0), torch.full_like(prod, float("inf"))
            )
            test3 = 1.0 / condA
            t1 = test1 / (1 + normA * normx / torch.where(normb > 0, normb, 1.0))
            rtol = btol + atol * normA * normx / torch.where(normb > 0, normb, 1.0)
            stop = (
                (test1 <= rtol)
                | (test2 <= atol)
                | (test3 <= ctol)
                | (1 + t1 <= 1)
                | (1 + test2 <= 1)
                | (1 + test3 <= 1)
            )
            last = torch.where(active, torch.full_like(last, itn), last)
            overflow = active & ~(torch.isfinite(normr) & torch.isfinite(normx) & torch.isfinite(alpha))
            non_finite |= overflow
            stopped |= active & stop & ~overflow
            active = active & ~stop & ~overflow
            if itn % every == 0 and not bool(active.any()):
                break
    X, iterations = _nan_columns(X, non_finite | ~torch.isfinite(B).all(0), on_failure, k, last)
    report = _info(iterations, matvecs, X, normr, normb, stopped, non_finite, btol) if return_info else None
    X = X.squeeze(-1) if vector else X
    X = not_differentiable("lsmr", X, A, b, Armat, x0)
    return (X, iterations, report) if return_info else (X, iterations)


def _info(
    iterations: int,
    matvecs: int,
    X: torch.Tensor,
    normr: torch.Tensor,
    normb: torch.Tensor,
    stopped: torch.Tensor,
    non_finite: torch.Tensor,
    btol: float,
) -> SolveInfo:
    """The :class:`SolveInfo` of an LSMR solve (the columns of ``X`` are its right-hand sides):
    one host read for the reason."""
    bad = non_finite | ~torch.isfinite(X).all(0)
    rel = normr / torch.where(normb > 0, normb, torch.ones_like(normb))
    rel = torch.where(bad, torch.full_like(rel, float("nan")), rel)
    converged = stopped & ~bad
    any_bad, all_converged = torch.stack([bad.any(), converged.all()]).tolist()
    if any_bad:
        reason = SolveReason.NON_FINITE
    elif all_converged:
        reason = SolveReason.CONVERGED
    else:
        reason = SolveReason.MAX_ITER
    return SolveInfo(
        iterations=iterations,
        matvecs=matvecs,
        converged=converged.detach(),
        relative_residual=rel.detach(),
        tolerance=btol,
        breakdown=torch.zeros_like(converged),
        reason=reason,
        non_finite=bad.detach(),
    )


def _nan_columns(
    X: torch.Tensor, non_finite: torch.Tensor, on_failure: str, k: int, last: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """NaN in the columns that met a NaN/Inf (or hold one), reported as ``on_failure`` asks; and
    the iteration count ``max(last)`` (0 without ``last``), read with the same host sync."""
    bad = non_finite | ~torch.isfinite(X).all(0)
    top = last.max() if last is not None and k else torch.zeros((), dtype=torch.int64, device=X.device)
    n_bad, itn = torch.stack([bad.sum(), top]).tolist()
    if not n_bad:
        return X, itn
    signal(non_finite_message("LSMR", n_bad, k), on_failure)
    nan = torch.full((), float("nan"), dtype=X.dtype, device=X.device)
    return torch.where(bad.unsqueeze(0), nan, X), itn
