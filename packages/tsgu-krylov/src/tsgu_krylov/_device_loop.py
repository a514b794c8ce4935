"""Device loops: Krylov iterations that keep every scalar on the device and sync the host rarely.

On a GPU a Krylov iteration costs what it launches: every small kernel (a mask update, a where, a
per-column reduction) is a launch of a few microseconds, and every host read of a number
(``bool(t)``, ``float(t)``) waits for the queue to drain.  The block loops of the solvers test
convergence and breakdown with several masks per iteration and look at them on the host whenever
``check_every`` says.  A device loop runs the same recurrence with

* per-column scalars as device tensors, never read inside an iteration;
* the two vector updates of CG as one ``torch._foreach_addcmul_`` and the direction update as one
  ``addcmul`` written in place; per-column inner products as one batched product (``einsum``);
* freezing by ``torch.where`` on the step sizes (a frozen column's step is exactly zero), never by
  boolean indexing;
* one host synchronisation every ``check_every`` iterations, reading all flags at once (a few
  kernels per check).

A column is frozen as soon as it meets its tolerance, so the iterations run between its freezing and
the next check do not move it: the returned iterate is the one the block loop with
``check_every=1`` returns, and the reported iteration count is reconstructed from how long each
column stayed active.  Counted with :func:`tsgu_ops.testing.count_kernels` on the CPU
(``loop="device"``), one unpreconditioned CG iteration is 11 aten calls (the product included)
plus the checks' share (about one per iteration at ``check_every=8``), and a solve syncs the host
``iterations / check_every`` times plus a few.

Differences from the block loop (documented in the solvers): a breakdown (``pᵀAp < eps``) is
detected at the checks, not at the iteration it happens; a column that breaks down in between keeps
iterating, and the true residual recomputed at the end decides whether it converged.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._graphs import BlockLoop

#: Default iterations between host checks of a device loop: one sync per 8 iterations costs under
#: 1 % of a CG iteration on a GPU, and frozen columns make the extra iterations free of effect.
DEVICE_CHECK_EVERY = 8


def _col_dot(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Per-column inner products ``(*batch, k)`` as one batched product (one kernel)."""
    return torch.einsum("...ij,...ij->...j", U, V)


def _finite(t: torch.Tensor) -> torch.Tensor:
    """``torch.isfinite`` in two kernels (``t − t`` is 0 exactly when ``t`` is finite); isfinite
    itself is four (abs, ne, eq, mul)."""
    return (t - t) == 0


@torch.no_grad()
def device_cg(
    A: Any,
    M: Any,
    X: torch.Tensor,
    R: torch.Tensor,
    P: torch.Tensor,
    rz: torch.Tensor,
    res: torch.Tensor,
    active: torch.Tensor,
    freeze_at: torch.Tensor,
    stop_tol: torch.Tensor,
    eps: float,
    n_iter: int,
    min_iter: int,
    check_every: int,
    test_tolerance: bool = False,
    capture: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool, int, int, torch.Tensor]:
    """The block CG loop of :func:`~tsgu_krylov.linear_cg` (``convergence_reduction="all"``) as a
    device loop.

    Takes the loop's state after the initial residual (``X``, ``R`` and ``P`` are updated on
    copies) and returns ``(X, res, active, loop_passed, iterations, matvecs, non_finite)`` as the
    block loop leaves them.  A column freezes when it meets ``freeze_at``; the loop stops at a check
    where no column is active or, with ``test_tolerance`` (``freeze_at < stop_tol``: columns go on
    after meeting the loop's tolerance, so the caller passes ``check_every=1``), where every
    residual is below ``stop_tol``.

    The iterations between two checks are one block (:class:`~tsgu_krylov._graphs.BlockLoop`) of
    a fixed state updated in place: ``X, R, P``, the scalars ``rᵀz, pᵀAp, ‖r‖`` and ``H``, the
    active flags after each iteration of the block (row ``every − steps + i`` for iteration ``i``
    of a block of ``steps``, so that the last row is always the current active set).  With
    ``capture`` the full blocks are replayed from a CUDA graph.
    """
    every = check_every
    H = torch.zeros((every, *active.shape), dtype=torch.bool, device=active.device)
    H[-1] = active
    state = [X.clone(), R.clone(), P.clone(), rz.clone(), rz.clone(), res.clone(), H]
    zero = torch.zeros((), dtype=X.dtype, device=X.device)
    # one comparison per iteration decides whether a column goes on: without a preconditioner
    # ‖r‖ > freeze_at and rᵀr ≥ eps is rᵀr > max(freeze_at², the number just below eps)
    thr2 = torch.clamp(freeze_at * freeze_at, min=math.nextafter(eps, 0.0))

    def make_block(steps: int) -> Any:
        def block(st: list[torch.Tensor]) -> list[torch.Tensor]:
            X, R, P, rz, pAp, res, H = st
            act = H[-1]
            for i in range(every - steps, every):
                AP = A(P)
                pAp = _col_dot(P, AP)
                a = torch.where(act, rz / pAp, zero).unsqueeze(-2)
                torch._foreach_addcmul_([X, R], [a, a], [P, AP], [1.0, -1.0])
                if M is None:
                    rz_new = _col_dot(R, R)
                    act = torch.bitwise_and(act, rz_new > thr2, out=H[i])
                    torch.addcmul(R, torch.where(act, rz_new / rz, zero).unsqueeze(-2), P, out=P)
                else:
                    Z = M(R)
                    rz_new = _col_dot(R, Z)
                    res = torch.linalg.vector_norm(R, dim=-2)
                    act = torch.bitwise_and(act & (res > freeze_at), rz_new >= eps, out=H[i])
                    torch.addcmul(Z, torch.where(act, rz_new / rz, zero).unsqueeze(-2), P, out=P)
                rz = rz_new
            return [X, R, P, rz, pAp, res, H]

        return block

    loop = BlockLoop(make_block, state, every, capture, "linear_cg")
    X, _, _, rz_new, pAp, res_s, H = state
    active_s = H[-1]
    still = torch.zeros(active.shape, dtype=torch.int64, device=active.device)  # iterations active
    loop_passed = False
    it = 0
    while it < n_iter:
        steps = min(every, n_iter - it)
        loop.run(steps)
        it += steps
        # NaN/Inf in a step (an overflow, a non-finite operator) freezes the column; it is
        # reported below and its solution becomes NaN in the final report
        active_s &= _finite(pAp + rz_new)
        still += H[every - steps :].sum(0)
        flags = [active_s & (pAp < eps), active_s]
        if M is not None:
            flags.append(active_s & (rz_new < 0))
        if test_tolerance:
            now = rz_new.clamp(min=0).sqrt() if M is None else res_s
            flags.append(~(now <= stop_tol))
        broken, any_active, *rest = torch.stack(flags).flatten(1).any(-1).tolist()
        if broken:
            raise RuntimeError(
                "CG breakdown: p^T A p must be finite and at least eps for active right-hand sides"
            )
        if M is not None and rest.pop(0):
            raise RuntimeError(
                "CG breakdown: residual inner product must be finite and at least eps for active "
                "right-hand sides"
            )
        if it >= min_iter and (not any_active or (test_tolerance and not rest[0])):
            loop_passed = True
            break
    act = active_s.clone()
    if it == 0:
        pAp = rz_new = rz
    started = active
    non_finite = started & ~_finite(pAp + rz_new)
    res_out = rz_new.clamp(min=0).sqrt() if M is None else res_s
    res_out = torch.where(started, res_out, res)
    iterations = it
    if loop_passed and it > 0:
        last = int(torch.where(started, still + 1, torch.zeros_like(still)).max())
        if last == 0 and min_iter == 0:
            # no column was active at the start: the host loop skips the iterations altogether
            # (and its caller does not count it as the loop's test passing)
            return X, res_out, act, False, 0, 0, non_finite
        if not test_tolerance:
            # the block loop stops at the iteration where the last column froze; the iterations
            # run after it until this check moved nothing
            iterations = min(max(last, min_iter), it)
    return X, res_out, act, loop_passed, iterations, iterations, non_finite
