"""The BiCGSTAB device loop (``bicgstab(..., loop="device")``): scalars on the device, few kernels.

Same recurrence as the block loop of :func:`~tsgu_krylov.bicgstab` (read with ``check_every=1``,
the CPU default), written so that an iteration is a fixed sequence of about 19 kernels and the
host looks only every ``check_every`` iterations:

* the two half-steps' vector updates are two ``torch._foreach_addcmul`` calls (``x += αp̂,
  s = r − αv`` and ``x += ωŝ, r = s − ωt, p' = p − ωv``), out of place, so that nothing aliases
  and the state of any earlier iteration is still there to go back to;
* ``sᵀs``, ``tᵀs`` and ``tᵀt`` come from one batched 2 × 2 Gram product per column;
* a column is frozen by ``torch.where`` on its step sizes (``α = ω = β = 0``) as soon as it meets
  its tolerance: then ``s = r`` and ``r`` stay exactly what they were, which is why the tests
  ``‖s‖ > tol`` and ``‖r‖ > tol`` alone decide which columns go on;
* the exceptional events of the block loop (a zero or non-finite ``ρ``, ``r̂ᵀv``, ``tᵀt`` or
  ``ω``; an overflow) are not tested per iteration: each of them turns the column's residual
  norm into NaN or infinity within two iterations, which the check sees.  The loop then returns
  to the state of two checks earlier (kept by reference: nothing is updated in place) and replays
  from there with the block loop's per-iteration tests (breakdown and non-finite flags, exactly
  as the host loop sets them), to the end of the solve.

Differences from the host loop: ``ρ = 0`` exactly (``r̂ ⟂ r``) on the very iteration where the
minimal-residual half-step then meets the tolerance is taken as that step (a converged column,
where the host loop reports a breakdown and keeps the previous iterate); the convergence tests
compare ``sᵀs`` and ``rᵀr`` with ``tol²`` instead of ``‖s‖`` and ``‖r‖`` with ``tol`` (they can
differ only within a rounding error of the tolerance).
"""

from __future__ import annotations

from typing import Any

import torch

from ._device_loop import _col_dot, _finite

#: Iterations between host checks of the BiCGSTAB device loop (a check is about 5 kernels).
BICGSTAB_CHECK_EVERY = 8


def _gram(S: torch.Tensor, T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-column ``(sᵀs, tᵀs, tᵀt)`` ``(*batch, k)`` from one batched 2 × 2 Gram product."""
    n = S.shape[-2]
    W = torch.stack([S.mT, T.mT], dim=-2)  # (*batch, k, 2, n), contiguous
    Wf = W.reshape(-1, 2, n)
    G = torch.bmm(Wf, Wf.mT).reshape(*W.shape[:-2], 2, 2)
    return G[..., 0, 0], G[..., 1, 0], G[..., 1, 1]


@torch.no_grad()
def device_bicgstab(
    A: Any,
    M: Any,
    X: torch.Tensor,
    R: torch.Tensor,
    threshold: torch.Tensor,
    res: torch.Tensor,
    active: torch.Tensor,
    max_steps: int | None,
    budget: int,
    check_every: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """The block loop of :func:`~tsgu_krylov.bicgstab` as a device loop.

    Takes the state after the initial residual (one operator application made) and returns
    ``(X, res, breakdown, non_finite, iterations, matvecs)`` as the block loop with
    ``check_every=1`` leaves them (``matvecs`` counts this loop's applications only; ``res`` is
    the initial residual norm, which the caller reads only when no iteration ran).  ``X`` and
    ``R`` are not modified.
    """
    # iteration k (from 0) starts when its first product and the final check fit in the budget
    # (1 + 2k + 2 ≤ budget); its stabilising half when its second product fits too
    n_lim = max(0, (budget - 3) // 2 + 1)
    if max_steps is not None:
        n_lim = min(n_lim, max_steps)
    zero = torch.zeros((), dtype=X.dtype, device=X.device)
    thr2 = threshold * threshold
    R_hat = R  # never written: every update below is out of place
    ones = torch.ones_like(res)
    no = torch.zeros_like(active)
    rr, rho = _gram(R, R_hat)[:2]
    # state: X, R, P' = p − ωv, ρ_old, α, ω, active, ρ = r̂ᵀr, rᵀr
    state = (X, R, torch.zeros_like(R), ones, ones, ones, active, rho, rr)
    acts: list[torch.Tensor] = []  # active at the start of each iteration
    halves: list[torch.Tensor] = []  # columns that took the stabilising half-step
    breakdown, non_finite = no, no
    careful = False
    snapshots = [(0, state), (0, state)]  # (iteration, state) after the last two checks
    it = 0
    while it < n_lim:
        cut = 2 * it + 4 > budget  # no room for the second product and the final check
        X, R, Pp, rho_o, alpha, omega, act, rho, rr = state
        acts.append(act)
        if careful:
            rho = _col_dot(R_hat, R)
            X, R, Pp, rho_o, alpha, omega, act, half, bad, over = _careful_step(
                A, M, R_hat, X, R, Pp, rho_o, alpha, omega, act, rho, threshold, zero, cut
            )
            breakdown, non_finite = breakdown | bad, non_finite | over
        else:
            q = torch._foreach_div([rho, alpha], [rho_o, omega])
            beta = torch.where(act, q[0] * q[1], zero)
            P = torch.addcmul(R, beta.unsqueeze(-2), Pp)
            P_hat = P if M is None else M(P)
            V = A(P_hat)
            alpha = torch.where(act, rho / _col_dot(R_hat, V), zero)
            a = alpha.unsqueeze(-2)
            X, S = torch._foreach_addcmul([X, R], [a, a], [P_hat, V], [1.0, -1.0])
            if cut:
                half, R, Pp, omega = no, S, P, torch.zeros_like(alpha)
            else:
                S_hat = S if M is None else M(S)
                T = A(S_hat)
                ss, ts, tt = _gram(S, T)
                # a frozen column has s = r bit for bit, so sᵀs ≤ tol² as its rᵀr was
                half = ss > thr2
                omega = torch.where(half, ts / tt, zero)
                w = omega.unsqueeze(-2)
                X, R, Pp = torch._foreach_addcmul([X, S, P], [w, w, w], [S_hat, T, V], [1.0, -1.0, -1.0])
            rho_o = rho
            rr, rho = _gram(R, R_hat)[:2]
            act = rr > thr2
        halves.append(half)
        state = (X, R, Pp, rho_o, alpha, omega, act, rho, rr)
        it += 1
        if it % check_every == 0 or it == n_lim or cut:
            if careful:
                any_active, anomaly = bool(act.any()), False
            else:
                flags = torch.stack([act, ~_finite(rr)]).flatten(1).any(-1)
                any_active, anomaly = flags.tolist()
            if anomaly:
                # back to the state after the check before last (every exceptional event shows
                # within two iterations), then the block loop's tests at every iteration
                it, state = snapshots[0]
                del acts[it:], halves[it:]
                careful = True
                snapshots = [(it, state), (it, state)]
                continue
            snapshots = [snapshots[1], (it, state)]
            if not any_active or cut:
                break
    X = state[0]
    iterations = matvecs = 0
    if acts:
        # the host loop runs iteration k when a column is active at its start, and makes the
        # second product when a column needs the stabilising half-step
        started = torch.stack(acts).flatten(1).any(-1)
        second = torch.stack(halves).flatten(1).any(-1) & started
        iterations, n_second = torch.stack([started.sum(), second.sum()]).tolist()
        matvecs = iterations + n_second
    return X, res, breakdown, non_finite, iterations, matvecs


def _careful_step(
    A: Any,
    M: Any,
    R_hat: torch.Tensor,
    X: torch.Tensor,
    R: torch.Tensor,
    Pp: torch.Tensor,
    rho_o: torch.Tensor,
    alpha: torch.Tensor,
    omega: torch.Tensor,
    act: torch.Tensor,
    rho: torch.Tensor,
    threshold: torch.Tensor,
    zero: torch.Tensor,
    cut: bool,
) -> tuple[torch.Tensor, ...]:
    """One iteration with the block loop's tests (breakdown, overflow) on the device."""
    bad = act & (rho == 0)
    over = act & ~_finite(rho)
    ok_prev = act & (rho_o != 0) & (omega != 0)
    beta = torch.where(ok_prev, rho / torch.where(ok_prev, rho_o, 1.0), zero) * torch.where(
        ok_prev, alpha / torch.where(ok_prev, omega, 1.0), zero
    )
    P = torch.addcmul(R, beta.unsqueeze(-2), Pp)
    P_hat = P if M is None else M(P)
    V = A(P_hat)
    den = _col_dot(R_hat, V)
    over = over | (act & ~_finite(den))
    bad = (bad | (act & (den == 0))) & ~over
    step = act & ~bad & ~over
    alpha = torch.where(step, rho / torch.where(step, den, 1.0), zero)
    a = alpha.unsqueeze(-2)
    X, S = torch._foreach_addcmul([X, R], [a, a], [P_hat, V], [1.0, -1.0])
    s_norm = torch.linalg.vector_norm(S, dim=-2)
    over = over | (step & ~_finite(s_norm))
    step = step & ~over
    half = step & (s_norm > threshold)
    if cut:
        R = torch.where(step.unsqueeze(-2), S, R)
        none = torch.zeros_like(act)
        return X, R, P, torch.where(step, rho, rho_o), alpha, omega, none, none, bad, over
    S_hat = S if M is None else M(S)
    T = A(S_hat)
    tt, ts = _col_dot(T, T), _col_dot(T, S)
    over = over | (half & ~(_finite(tt) & _finite(ts)))
    half = half & ~over
    omega_new = torch.where(half & (tt != 0), ts / torch.where(half & (tt != 0), tt, 1.0), zero)
    bad = bad | (half & (omega_new == 0))
    w = omega_new.unsqueeze(-2)
    X, R = torch._foreach_addcmul([X, S], [w, w], [S_hat, T], [1.0, -1.0])
    Pp = P - omega_new.unsqueeze(-2) * V
    omega = torch.where(half, omega_new, omega)
    rho_o = torch.where(step, rho, rho_o)
    res = torch.linalg.vector_norm(R, dim=-2)
    act = step & half & ~bad & (res > threshold)
    return X, R, Pp, rho_o, alpha, omega, act, half, bad, over
