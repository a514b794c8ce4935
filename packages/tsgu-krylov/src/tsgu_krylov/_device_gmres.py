"""The GMRES device loop (``gmres(..., loop="device")``): per-column scalars on the device.

Same restart cycles, Arnoldi process (classical Gram–Schmidt applied twice), Givens rotations,
stopping steps and triangular solve as the block loop of :func:`~tsgu_krylov.gmres` (read with
``check_every=1``, the CPU default), arranged so that an Arnoldi step is a fixed sequence of
about 15 aten calls and the host looks only every ``check_every`` steps:

* the basis is one preallocated ``(L, restart + 1, n)`` tensor (``L`` columns of every batch
  item); the projections are ``bmm`` and ``baddbmm``, written where they are kept (the
  Hessenberg column and the next basis vector are ``out=`` views of preallocated tensors);
* the rotations are not applied to the Hessenberg column at every step: only the entry that the
  new rotation needs, ``a_j = q_j · h_j``, where ``q_j`` is row ``j`` of the product of the
  rotations so far (``q_{j+1} = −s_j q_j + c_j e_{j+1}``, two calls).  The residual norms
  ``|g_{j+1}| = β ∏ |s_i|``, the stopping steps, the breakdown (``r_j = 0``) and overflow flags
  are computed from the stored ``c, s, r`` at the checks; the triangular factor ``R = Qᵀ H`` and
  ``g = β Qᵀ e₀`` at the end of a cycle;
* a column that stops keeps running through the Arnoldi steps until the next check, as in the
  block loop, and its iterate takes the step where it stopped.

The cycle's residual is not read on the host either: whether any column is active is read with
the first check of the cycle, which then discards the steps run (they were not needed).
Differences from the block loop: ``R`` is formed by one product instead of rotating each column
as it comes (rounding), and a column with ``r_j = 0`` takes ``c_j = 0`` (the block loop 1);
either way that direction gets no step.
"""

from __future__ import annotations

from typing import Any

import torch

from ._common import apply_checked, column_non_finite
from ._device_loop import _finite
from ._operator import col_norm

#: Arnoldi steps between host checks of the GMRES device loop.
GMRES_CHECK_EVERY = 8


@torch.no_grad()
def device_gmres(
    A: Any,
    M: Any,
    B: torch.Tensor,
    X: torch.Tensor,
    target: torch.Tensor,
    m: int,
    max_iter: int,
    check_every: int,
) -> tuple[torch.Tensor, int, int, torch.Tensor, torch.Tensor]:
    """The block loop of :func:`~tsgu_krylov.gmres` as a device loop.

    Returns ``(X, iterations, matvecs, breakdown, non_finite)`` as the block loop with
    ``check_every=1`` leaves them before its final residual check.  ``X`` is not modified.
    """
    lead = B.shape[:-2] + B.shape[-1:]
    n = B.shape[-2]
    L = max(1, B[..., 0, :].numel())
    dtype, device = B.dtype, B.device
    tiny = torch.finfo(dtype).tiny
    X = X.clone()
    iterations = matvecs = 0
    first = True
    no = torch.zeros(lead, dtype=torch.bool, device=device)
    breakdown, non_finite = no, no
    eye = torch.eye(m + 1, dtype=dtype, device=device)
    ones = torch.ones(L, dtype=dtype, device=device)

    def flat(t: torch.Tensor) -> torch.Tensor:  # (*lead) -> (L,)
        return t.reshape(L)

    # Cycles whose outcome the host has not read yet: [started (1,), live-after-step flags of the
    # steps not yet checked, steps checked before them].  A cycle that started runs, in the block
    # loop, up to the first step after which no column is live; one that did not start ends the
    # solve.  Reading them waits for the next check (or for a cycle whose length depends on them).
    pending: list[tuple[torch.Tensor, torch.Tensor, int]] = []
    finished = False
    total = 0  # Arnoldi steps run by this loop (the checks' cadence)

    def resolve(current: tuple[torch.Tensor, torch.Tensor, int] | None) -> tuple[bool, int | None]:
        """Read the pending cycles (and the current one): ``(finished, ran of the current)``."""
        nonlocal iterations, matvecs
        cycles = pending + ([current] if current is not None else [])
        flags = torch.cat([torch.cat([st, fl]) for st, fl, _ in cycles]).tolist()
        pending.clear()
        pos = 0
        for i, (_, fl, before) in enumerate(cycles):
            started, alive = flags[pos], flags[pos + 1 : pos + 1 + fl.shape[0]]
            pos += 1 + fl.shape[0]
            is_current = current is not None and i == len(cycles) - 1
            if not started:
                matvecs += 1  # its residual: then the block loop stops
                return True, None
            ran = next((before + t + 1 for t, ok in enumerate(alive) if not ok), None)
            if is_current:
                if ran is not None:
                    iterations += ran
                    matvecs += 1 + ran
                return False, ran
            ran = before + len(alive) if ran is None else ran
            iterations += ran
            matvecs += 1 + ran
        return False, None

    while not finished:
        upper = iterations + sum(before + fl.shape[0] for _, fl, before in pending)
        if pending and (upper >= max_iter or max_iter - upper < m):
            # the next cycle's length (or whether there is one) depends on them
            finished, _ = resolve(None)
            continue
        if iterations >= max_iter:
            break
        R = B - (apply_checked(A, X, "matmul_closure", "rhs") if first else A(X))
        beta = col_norm(R)
        non_finite = non_finite | ~_finite(beta) | column_non_finite(X)
        R = R.where(~non_finite.unsqueeze(-2), 0.0)
        beta = beta.where(~non_finite, 0.0)
        active = beta > target
        steps = min(m, max_iter - upper)
        Vb = torch.empty(L, steps + 1, n, dtype=dtype, device=device)
        inv = torch.where(beta > 0, beta, 1.0).reciprocal()
        torch.mul(R.transpose(-1, -2), inv.unsqueeze(-1), out=Vb[:, 0, :].view(*lead, n))
        Hb = torch.zeros(L, steps + 1, steps, dtype=dtype, device=device)
        q = eye[0, : steps + 1].expand(L, steps + 1)
        qs: list[torch.Tensor] = []
        cs: list[torch.Tensor] = []
        ss: list[torch.Tensor] = []
        rs: list[torch.Tensor] = []
        beta_f, target_f, active_f = flat(beta), flat(target), flat(active)
        started = active_f.any().view(1)
        checked = 0  # steps of this cycle known to leave a column live
        ran: int | None = None
        k = steps
        for j in range(steps):
            v = Vb[:, j, :].view(*lead, n).transpose(-1, -2)  # (*batch, n, k)
            if M is None:
                Z = v
            else:
                Z = apply_checked(M, v.contiguous(), "preconditioner", "residual") if first else M(v)
            first = False
            w = A(Z).transpose(-1, -2).reshape(L, n, 1)
            basis = Vb[:, : j + 1, :]
            h1 = torch.bmm(basis, w)  # classical Gram–Schmidt, twice
            w = torch.baddbmm(w, basis.mT, h1, alpha=-1.0)
            h2 = torch.bmm(basis, w)
            w = torch.baddbmm(w, basis.mT, h2, alpha=-1.0)
            h = torch.add(h1, h2, out=Hb[:, : j + 1, j : j + 1])
            hn3 = torch.linalg.vector_norm(w, dim=-2, keepdim=True, out=Hb[:, j + 1 : j + 2, j : j + 1])
            hn = hn3.view(L)
            a = torch.bmm(q[:, None, : j + 1], h).view(L)  # the rotated entry j of the new column
            r = torch.hypot(a, hn)
            r_c, hn_c = torch._foreach_clamp_min([r, hn], [tiny, tiny])
            c, s, inv_hn = torch._foreach_div([a, hn, ones], [r_c, r_c, hn_c])
            torch.mul(w, inv_hn.view(L, 1, 1), out=Vb[:, j + 1 : j + 2, :].mT)
            qs.append(q)
            cs.append(c)
            ss.append(s)
            rs.append(r)
            q_new = torch.mul(eye[j + 1, : steps + 1], c.unsqueeze(-1))
            q = q_new.addcmul_(s.unsqueeze(-1), q, value=-1.0)
            total += 1
            if total % check_every == 0:
                # residual norms after each step so far, and whether a column is still live (a
                # breakdown, r = 0, has s = 0; a column inactive from the start has β ≤ tol)
                res = beta_f * torch.stack(ss).abs().cumprod(0)  # (j + 1, L)
                window = (res[checked:] > target_f).any(-1)
                finished, ran = resolve((started, window, checked))
                if finished:
                    break
                started = torch.ones(1, dtype=torch.bool, device=device)
                if ran is not None:
                    k = j + 1
                    break
                checked = j + 1
        if finished:
            break
        if ran is None:  # the cycle ran to its end: its outcome is read later
            res = beta_f * torch.stack(ss).abs().cumprod(0)
            pending.append((started, (res[checked:] > target_f).any(-1), checked))
        # when each column stopped: the first step after which it was not live (overflow and
        # breakdown included), as the block loop's ``stop``; the steps run after the block loop
        # would have ended the cycle change nothing (every column has stopped by then)
        res = beta_f * torch.stack(ss[:k]).abs().cumprod(0)  # (k, L)
        r_h = torch.stack(rs[:k])
        bad = ~_finite(r_h + res)
        live = active_f & (res > target_f) & (r_h != 0) & ~bad
        # a column live through step j is live through every earlier step
        n_live = live.sum(0)
        stop = torch.clamp(n_live + 1, max=steps)  # (L,)
        at = n_live.clamp(max=k - 1).unsqueeze(0)
        stopped = active_f & (n_live < k)
        over = stopped & bad.gather(0, at).squeeze(0)
        broke = stopped & ~over & (r_h.gather(0, at).squeeze(0) == 0)
        non_finite = non_finite | over.view(lead)
        breakdown = breakdown | broke.view(lead)
        # the triangular factor and right-hand side of the cycle's least-squares problem
        Q = torch.stack(qs[:k], dim=1)  # (L, k, steps + 1): rows q_i before rotation i
        C = torch.stack(cs[:k], dim=1).unsqueeze(-1)
        S = torch.stack(ss[:k], dim=1).unsqueeze(-1)
        Qt = Q * C + S * eye[1 : k + 1, : steps + 1]  # rows 0..k−1 of the rotations' product
        Rm = Qt[..., : k + 1] @ Hb[:, : k + 1, :k]  # (L, k, k), upper triangular
        gk = beta_f.unsqueeze(-1) * Qt[..., 0]
        idx = torch.arange(k, device=device)
        keep = idx < stop.unsqueeze(-1)
        Rm = torch.where(
            keep.unsqueeze(-1) & keep.unsqueeze(-2), Rm, torch.zeros((), dtype=dtype, device=device)
        )
        Rm = Rm + torch.diag_embed((~keep).to(dtype))
        diag_ok = torch.diagonal(Rm, dim1=-2, dim2=-1) != 0
        Rm = Rm + torch.diag_embed((~diag_ok).to(dtype))
        gk = torch.where(keep & diag_ok, gk, 0.0)
        gk = torch.where((active_f & ~flat(non_finite)).unsqueeze(-1), gk, 0.0)
        y = torch.linalg.solve_triangular(Rm, gk.unsqueeze(-1), upper=True)  # (L, k, 1)
        update = (y.mT @ Vb[:, :k, :]).view(*lead, n).transpose(-1, -2)  # (*batch, n, k)
        X = X + (update if M is None else M(update))
    if pending:
        resolve(None)
    return X, iterations, matvecs, breakdown, non_finite
