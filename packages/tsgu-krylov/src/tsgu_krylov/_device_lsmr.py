"""The LSMR device loop (``lsmr(..., loop="device")``, real dtypes): grouped scalar work.

The same recurrence, norm estimates and stopping rules as the block loop of
:func:`~tsgu_krylov.lsmr`, operation for operation, with the per-column scalar work grouped:

* the products of each stage of the rotations (``θ, ᾱ, θ̄, ρ_temp, β̂, β̈, ρρ̄`` and ``‖A‖²``;
  then ``ζ, ζ̄, ρρ̄, θ̃, ρ̇, ...``) are one ``torch._foreach_addcmul`` each (signs as its scalars);
* the two independent rotations of a step (``(ρ_temp, θ_new)`` and ``(ρ̇_old, θ̄)``) are one
  rotation of stacked pairs; the four guarded divisions are one stacked division; the six
  stopping tests one stacked comparison;
* with ``damp = 0`` the damping rotation is the identity, and is skipped;
* the flags are read on the host every ``check_every`` iterations (a stopped column's step is
  zero, as in the block loop); the iteration count and the non-finite flags are reconstructed
  from the stored active sets afterwards.

Counted on the CPU this is 87 aten calls per iteration, against 204 for the block loop; the
difference is launches, not flops (every scalar is a ``(k,)`` vector).

Differences from the block loop: rounding only (fused multiply-adds, the order of a few
products).  Over hundreds of iterations on an ill-conditioned problem it grows like any rounding
in LSMR: on the 12³ convection–diffusion grid (245 iterations to ``atol = btol = 1e-10``) the two
iterates differ by 7e-10 relative while each is 1.5e-8 from the exact solution.
"""

from __future__ import annotations

from typing import Any

import torch

from ._device_loop import _finite

#: Iterations between host checks of the LSMR device loop.
LSMR_CHECK_EVERY = 8


def _rotate(a: torch.Tensor, b: torch.Tensor, c10: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Givens rotations of stacked pairs, as :func:`~._common.givens`: ``(cs, r)`` with ``cs[0]``
    the cosines and ``cs[1]`` the sines (the identity where ``r`` is 0 or NaN)."""
    r = torch.hypot(a, b)
    ok = r > 0
    cs = torch.stack([a, b]) / torch.where(ok, r, c10[0])
    return torch.where(ok, cs, c10), r


@torch.no_grad()
def device_lsmr(
    Aop: Any,
    Atop: Any,
    X: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    active: torch.Tensor,
    damp: float,
    atol: float,
    btol: float,
    ctol: float,
    maxiter: int,
    check_every: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The block loop of :func:`~tsgu_krylov.lsmr` from its initial state.

    Returns ``(X, last, non_finite)``: the iterate, the iterations each column ran and the columns
    that met a NaN/Inf inside the loop, as the block loop leaves them.
    """
    zero = torch.zeros_like(beta)
    one = torch.ones_like(beta)
    # 0-d constants: a Python number in torch.where is a kernel call of its own (scalar_tensor)
    one_s = torch.ones((), dtype=beta.dtype, device=beta.device)
    inf_s = torch.full((), float("inf"), dtype=beta.dtype, device=beta.device)
    tiny = torch.finfo(beta.dtype).tiny
    c10 = torch.tensor([1.0, 0.0], dtype=beta.dtype, device=beta.device).view(2, *([1] * beta.dim()))
    c10_pair = c10.unsqueeze(1)
    thr = torch.stack([zero, zero + atol, zero + ctol])  # row 0: btol + atol‖A‖‖x‖/‖b‖, per step
    dampt = torch.full_like(beta, damp)
    zetabar, alphabar = alpha * beta, alpha
    rho, rhobar, cbar, sbar = one, one, one, zero
    Hv, Hbar = V.clone(), torch.zeros_like(V)
    betadd, betad, rhodold, tautildeold, thetatilde, zeta, d = beta, zero, one, zero, zero, zero, zero
    normA2 = alpha * alpha
    maxrbar, minrbar = zero, torch.full_like(beta, torch.finfo(beta.dtype).max)
    nb = torch.where(beta > 0, beta, 1.0)  # ‖b‖ (1 for a zero b)
    acts = [active]  # active at the start of each iteration
    fins: list[torch.Tensor] = []
    for itn in range(1, maxiter + 1):
        U = torch.addcmul(Aop(V), alpha, U, value=-1.0)
        beta = torch.linalg.vector_norm(U, dim=0)
        bpos = beta > 0
        U = U / torch.where(bpos, beta, one_s)
        V = torch.where(bpos, torch.addcmul(Atop(U), beta, V, value=-1.0), V)
        alpha = torch.where(bpos, torch.linalg.vector_norm(V, dim=0), alpha)
        V = V / torch.where(alpha > 0, alpha, one_s)
        if damp == 0.0:  # the damping rotation is the identity (ᾱ ≥ 0)
            alphahat, betaacute = alphabar, betadd
        else:
            (chat, shat), alphahat = _rotate(alphabar, dampt, c10)
            betaacute, betacheck = torch._foreach_mul([chat, shat], [betadd, betadd])
            d = torch.addcmul(d, betacheck, betacheck)
        (c, s), rho_new = _rotate(alphahat, beta, c10)
        thetanew, alphabar, thetabar, rhotemp, betahat, betadd, den1, normA2a = torch._foreach_addcmul(
            [zero, zero, zero, zero, zero, zero, zero, normA2],
            [s, c, sbar, cbar, c, s, rho, beta],
            [alpha, alpha, rho_new, rho_new, betaacute, betaacute, rhobar, beta],
            [1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0],
        )
        rho, rhobarold, zetaold, thetatildeold = rho_new, rhobar, zeta, thetatilde
        maxrbar = torch.maximum(maxrbar, rhobarold)
        if itn > 1:
            minrbar = torch.minimum(minrbar, rhobarold)
        # the two rotations of the step, side by side
        cs2, r2 = _rotate(torch.stack([rhotemp, rhodold]), torch.stack([thetanew, thetabar]), c10_pair)
        (cbar, ctildeold), (sbar, stildeold), (rhobar, rhotildeold) = cs2[0], cs2[1], r2
        zeta, zetabar, den2, thetatilde, rhodold, tr, num_tau, normA2, pb = torch._foreach_addcmul(
            [zero, zero, zero, zero, zero, zero, zetaold, normA2a, zero],
            [cbar, sbar, rho, stildeold, ctildeold, thetabar, thetatildeold, alpha, ctildeold],
            [zetabar, zetabar, rhobar, rhobar, rhobar, rho, tautildeold, alpha, betahat],
            [1.0, -1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0],
        )
        betad = torch.addcmul(pb, stildeold, betad, value=-1.0)
        # the four guarded divisions of the step in one
        D = torch.stack([den1, den2, rho, rhotildeold])
        nz = D != 0
        coef1, q2, coef2, tautildeold = torch.stack([tr, zeta, thetanew, num_tau]) / torch.where(nz, D, one_s)
        stepx = torch.where(active & nz[1], q2, zero)
        taud = torch.addcmul(zeta, thetatilde, tautildeold, value=-1.0)
        taud = taud / torch.where(rhodold != 0, rhodold, one_s)
        Hbar = torch.addcmul(Hv, coef1, Hbar, value=-1.0)
        X, Hv = torch._foreach_addcmul([X, V], [stepx, coef2], [Hbar, Hv], [1.0, -1.0])
        normx = torch.linalg.vector_norm(X, dim=0)
        # ‖r‖, ‖A‖, cond(A), ‖Aᵀr‖ estimates and the stopping rules
        e = betad - taud
        normr = torch.addcmul(torch.addcmul(d, e, e), betadd, betadd).sqrt()
        normA = normA2a.sqrt()
        condA = torch.maximum(maxrbar, rhotemp) / torch.minimum(minrbar, rhotemp).clamp_min(tiny)
        prod = normA * normr
        pnz = prod != 0
        test2 = torch.where(pnz, zetabar.abs() / torch.where(pnz, prod, one_s), inf_s)
        test1 = normr / nb
        test3 = condA.reciprocal()
        ax = normA * normx / nb
        t1 = test1 / (1 + ax)
        thr[0] = (atol * normA) * normx / nb + btol
        stop = torch.stack([test1, test2, test3]) <= thr
        stop = (stop | (torch.stack([t1, test2, test3]) + 1 <= 1)).any(0)
        fin = _finite(normr + normx + alpha)
        fins.append(fin)
        active = active & ~stop & fin
        acts.append(active)
        if itn % check_every == 0 and not bool(active.any()):
            break
    started = torch.stack(acts[:-1])  # (iterations, k)
    last = started.sum(0)
    non_finite = (started & ~torch.stack(fins)).any(0)
    return X, last, non_finite
