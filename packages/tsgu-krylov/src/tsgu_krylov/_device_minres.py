"""The MINRES device loop (``minres(..., loop="device")``): scalars on the device, 15 kernels.

Same Lanczos recurrence and QR update as the block loop of :func:`~tsgu_krylov.minres` (read
with ``check_every=1``, the CPU default), rearranged so that an unpreconditioned iteration is a
fixed sequence of 15 aten calls (the operator product included) and the host looks only every
``check_every`` iterations:

* the per-column scalars of the rotation (``δ, γ̄, ε, d̄, γ, c, s, φ, φ̄``) are computed in five
  grouped calls (``torch._foreach_addcmul`` on a zero base for products with a sign,
  ``_foreach_clamp_min``, ``_foreach_div``, ``_foreach_mul``) instead of about twenty separate
  ones;
* the search directions are kept unnormalised, ``Ŵ_j = γ_j w_j = v_j − (ε_j/γ_{j−2}) Ŵ_{j−2} −
  (δ_j/γ_{j−1}) Ŵ_{j−1}``, so that no division of a vector is needed, and the iterate is updated
  one iteration late, ``x += (φ_{j−1}/γ_{j−1}) Ŵ_{j−1}``, in the same ``_foreach_addcmul_`` as
  ``Ŵ_j`` (the last update is made after the loop);
* ``φ̄`` is carried relative to the column's tolerance and passed through
  ``torch.nn.functional.threshold(·, 1, 0)``: a column that meets its tolerance gets ``φ̄ = 0``,
  after which its ``φ`` is 0 and its iterate moves no more (the Lanczos vectors of a stopped column
  run on, as in the block loop, and are not used).  A NaN in ``α``, ``β`` or ``φ̄`` of a running
  column (an overflow, a non-finite operator) makes its ``φ̄`` NaN, which stops it as well;
* the stored ``φ̄`` of every iteration (a reference, no copy) tells afterwards when each column
  stopped and whether it stopped on a NaN: the iteration count, the ``non_finite`` flags and the
  final active set are those of the block loop.

Differences from the block loop: the tolerance test is ``φ̄/tol > 1`` instead of ``φ̄ > tol``
(they can differ only within a rounding error of the tolerance); ``1/β`` is ``1/max(β, tiny)``,
which differs from the block loop's 0 only for a Lanczos vector whose norm underflows (the column
has then stopped).  A zero tolerance (``rtol = atol = 0``) runs the block loop.  The two loops
round differently (``Ŵ`` unnormalised, the late iterate update), so at a tolerance within a few
units of roundoff (float32 at ``rtol = 1e-6``) one of them can stop an iteration earlier, or need
the restart from the true residual where the other does not.
"""

from __future__ import annotations

from typing import Any

import torch

from ._device_loop import _col_dot, _finite
from ._graphs import BlockLoop

#: Iterations between host checks of the MINRES device loop (a check is 2 kernels and 1 sync).
MINRES_CHECK_EVERY = 8


@torch.no_grad()
def device_minres(
    op: Any,
    M: Any,
    X: torch.Tensor,
    R: torch.Tensor,
    Y: torch.Tensor,
    beta1: torch.Tensor,
    target: torch.Tensor,
    active: torch.Tensor,
    eps: float,
    max_iter: int,
    check_every: int,
    capture: bool = False,
) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """The block loop of :func:`~tsgu_krylov.minres` as a device loop.

    Takes the state after the initial residual ``R`` (``Y = M⁻¹ R``, ``β₁ = √(rᵀY)``; ``target``
    positive wherever ``active``) and returns ``(X, iterations, active, non_finite)`` as the
    block loop with ``check_every=1`` leaves them (one operator application per iteration).
    ``X`` is not modified.

    The iterations between two checks are one block (:class:`~tsgu_krylov._graphs.BlockLoop`)
    of a fixed state updated in place (``X``, the Lanczos vectors and directions, the rotation's
    scalars, and ``Φ``: the relative ``φ̄`` after each iteration of the block, row
    ``every − steps + i`` for iteration ``i``, the last row the current one); with ``capture``
    the full blocks are replayed from a CUDA graph.
    """
    every = check_every
    zero = torch.zeros_like(beta1)
    one = torch.ones_like(beta1)
    tiny = torch.finfo(beta1.dtype).tiny
    # φ̄ relative to the tolerance: a column runs while it is above 1, and is 0 once stopped
    phib0 = torch.where(active, beta1 / torch.where(active, target, one), zero)
    Phi = torch.zeros((every, *phib0.shape), dtype=phib0.dtype, device=phib0.device)
    Phi[-1] = phib0
    s0 = torch.nan_to_num(beta1.reciprocal(), nan=0.0, posinf=0.0)  # 1/β, 0 for β = 0
    # X, W_{j−1}, W_{j−2}, R_{j−1}, R_j, Y, then β_j/β_{j−1}, c, s, d̄, 1/γ_{j−1}, ε_j/γ_{j−2},
    # φ_{j−1} and tol/γ_{j−1} (the pending iterate update), 1/β, and Φ
    state = [X.clone(), torch.zeros_like(R), torch.zeros_like(R), R.clone(), R.clone(), Y.clone()]
    state += [zero.clone(), -one, zero.clone(), zero.clone(), one.clone(), zero.clone()]
    state += [zero.clone(), zero.clone(), s0, Phi]

    def make_block(steps: int) -> Any:
        def block(st: list[torch.Tensor]) -> list[torch.Tensor]:
            X, W1, W2, R1, R2, Y, nc1, cs, sn, dbar, ig1, a2, phi, tig, s, Phi = st
            phib = Phi[-1]
            for i in range(every - steps, every):
                V = (R2 if M is None else Y) * s.unsqueeze(-2)
                Yn = torch.addcmul(op(V), nc1.unsqueeze(-2), R1, value=-1.0)
                alfa = _col_dot(V, Yn)
                if M is None:  # (α/β) r_j is α v_j
                    Yn.addcmul_(alfa.unsqueeze(-2), V, value=-1.0)
                else:
                    Yn.addcmul_((alfa * s).unsqueeze(-2), R2, value=-1.0)
                R1, R2 = R2, Yn
                if M is None:
                    beta = torch.linalg.vector_norm(R2, dim=-2)
                else:
                    Y = M(R2)
                    beta = _col_dot(R2, Y).clamp_min(0).sqrt()
                # one rotation of the QR factorisation of the tridiagonal matrix
                m0, m1, eps_new, dbar = torch._foreach_addcmul(
                    [zero, zero, zero, zero],
                    [cs, sn, sn, cs],
                    [dbar, dbar, beta, beta],
                    [1.0, 1.0, 1.0, -1.0],
                )
                delta, gbar = torch._foreach_addcmul([m0, m1], [sn, cs], [alfa, alfa], [1.0, -1.0])
                gamma, beta_c = torch._foreach_clamp_min([torch.hypot(gbar, beta), beta], [eps, tiny])
                cs, sn, ig, tig_new, s_new = torch._foreach_div(
                    [gbar, beta, one, target, one], [gamma, gamma, gamma, gamma, beta_c]
                )
                phi_new, phib_new, nc1, a2_new, a1, xc = torch._foreach_mul(
                    [cs, sn, beta, eps_new, delta, phi], [phib, phib, s, ig1, ig1, tig]
                )
                phib = torch.threshold(phib_new, 1.0, 0.0, out=Phi[i])
                # Ŵ_j, and the iterate's update along Ŵ_{j−1} (one iteration late)
                Wn = torch.addcmul(V, a1.unsqueeze(-2), W1, value=-1.0)
                torch._foreach_addcmul_([Wn, X], [a2.unsqueeze(-2), xc.unsqueeze(-2)], [W2, W1], [-1.0, 1.0])
                W1, W2 = Wn, W1
                a2, ig1, phi, tig, s = a2_new, ig, phi_new, tig_new, s_new
            return [X, W1, W2, R1, R2, Y, nc1, cs, sn, dbar, ig1, a2, phi, tig, s, Phi]

        return block

    loop = BlockLoop(make_block, state, every, capture, "minres")
    history = [phib0[None]]  # φ̄ (relative) at the start and after each iteration, by block
    iterations = it = 0
    while it < max_iter:
        steps = min(every, max_iter - it)
        loop.run(steps)
        it += steps
        # iteration j + 1 of the block loop runs when a column runs after iteration j: one read
        # gives the iterations since the last check and whether any column still runs
        window = torch.cat([history[-1][-1:], Phi[every - steps :]])
        history.append(window[1:])
        *ran, running = window.flatten(1).gt(0).any(-1).tolist()
        iterations += sum(ran)
        if not running:
            break
    X, W1, phi, tig = state[0], state[1], state[12], state[13]
    if iterations == 0:
        return X, 0, active, torch.zeros_like(active)
    X.addcmul_((phi * tig).unsqueeze(-2), W1)
    H = torch.cat(history)[: iterations + 1]  # (iterations + 1, *lead)
    stop = (H > 0).sum(0)  # where each column stopped (its first φ̄ ≤ tol)
    non_finite = active & (stop <= iterations) & ~_finite(H.gather(0, stop.clamp(max=iterations)[None])[0])
    return X, iterations, H[iterations] > 0, non_finite
