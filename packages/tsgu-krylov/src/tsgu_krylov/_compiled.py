"""Compiled CPU kernels of IC(0)/ILU(0): the factorisation and the triangular solves (numba).

On the CPU a sparse triangular solve is one long chain of dependent rows, and the sequential
factorisation is one pass over the rows: both are loops no sequence of PyTorch operators runs
well (the level schedule of :mod:`._levels` pays a few operator calls per level, the native
triangular solve several times an SpMV).  With numba installed (the extra ``tsgu-krylov[fast]``),
a CPU float32/float64 factor is computed and applied by these loops instead:

* :func:`ilu0_values` / :func:`ic0_values`: the textbook algorithms of :mod:`.incomplete` row by
  row (IKJ for ILU(0), the left-looking row form for IC(0)), with one dense work row; they return
  the same factor values, pivots and pivot sizes as :meth:`._levels.LevelSchedule.run`, so the
  same checks follow.  No symbolic analysis is needed.
* :class:`CompiledFactor`: a lower-triangular factor ``F`` prepared once for ``F x = b`` (forward
  over the rows of ``F``) and ``Fᵀ x = b`` (backward over the rows of ``Fᵀ``), each row scaled by
  the inverse of its diagonal entry, so a row costs one multiply-add per stored entry.
* The *chain layout* of the vector solves: a triangular solve is a chain of dependent rows, and
  its speed is set by what lies on that chain.  Each row's entry in the neighbouring column
  (``i − 1``, or ``i + 1`` for ``Fᵀ``) is kept apart and added last from a register; the other
  entries sit in rows of one fixed width, padded by a zero column, and each width compiles its
  own copy of the passes (the width a constant, :func:`_with_width`), fused multiply-adds in
  source order.  On Poisson 40³ a pass went from ~3 to ~1.1 ns per row (one multiply-add of
  latency per row; the rows' other terms overlap with it).
* :class:`SplitFactor`: IC(0)-preconditioned CG in Eisenstat's split form, the whole loop
  compiled, in the same layout, its passes compiled as separate functions (written out inside
  one long loop they ran ~25 % slower).

Every other device and dtype, and ``TSGU_KRYLOV_KERNEL=torch``, uses the PyTorch path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

try:  # the loops read NumPy as a global (numba compiles its array functions)
    import numpy as np
except ImportError:  # pragma: no cover - NumPy accompanies numba
    np = None  # type: ignore[assignment]

#: Environment variable that forces one kernel: ``"numba"`` or ``"torch"`` (default: numba where
#: it is installed and the tensors are CPU float32/float64).
KERNEL_ENV = "TSGU_KRYLOV_KERNEL"

_compiled: dict[str, Callable[..., Any]] = {}


def numba_available() -> bool:
    """Whether numba is importable."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def kernel_name() -> str:
    """``"numba"`` or ``"torch"``: the kernel CPU factorisations use (see :data:`KERNEL_ENV`)."""
    forced = os.environ.get(KERNEL_ENV, "").strip().lower()
    if forced == "numba":
        if not numba_available():
            raise ImportError(
                f"{KERNEL_ENV}=numba, but numba is not installed: pip install 'tsgu-krylov[fast]'"
            )
        return forced
    if forced == "torch":
        return forced
    if forced:
        raise ValueError(f"{KERNEL_ENV} must be 'numba' or 'torch', got {forced!r}")
    return "numba" if numba_available() else "torch"


def use_compiled(t: torch.Tensor) -> bool:
    """Whether values ``t`` go through the compiled kernels (CPU, float32/float64, numba)."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and kernel_name() == "numba"


#: fastmath flags of the passes along a chain of dependent rows: multiply-adds fused, nothing
#: reordered (reordering lets LLVM move the chain's term to the front of a row's sum, which made
#: every row wait for the previous one through all of its terms: ~2 instead of ~1 ns per row)
_CHAIN = frozenset({"contract"})
#: fastmath flags of independent element-wise passes and sums (reordered, vectorised)
_SUMS = frozenset({"reassoc", "contract", "nsz"})


def _jit(
    name: str, fn: Callable[..., Any], reassociate: bool = False, flags: frozenset[str] | None = None
) -> Callable[..., Any]:
    if name not in _compiled:
        import numba

        # error_model="numpy": a zero pivot gives inf/NaN (then reported by the pivot check), not an
        # exception; reassociate: sums may be reordered (vectorised), NaN and inf keep their meaning
        fast: Any = set(flags) if flags is not None else (set(_SUMS) if reassociate else False)
        _compiled[name] = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=fast)(fn)
    return _compiled[name]


# ----------------------------------------------------------------------------------------------
# the loops (compiled by numba; the coverage tool does not see inside them)
def _ilu0_loop(
    indptr: Any, indices: Any, diag: Any, f: Any, pivot: Any, size: Any
) -> None:  # pragma: no cover
    # IKJ on row-major sorted CSR, in place on f (A's values on entry)
    n = indptr.shape[0] - 1
    where = np.full(n, -1, np.int64)  # column -> position in the current row, -1 where none
    for i in range(n):
        lo, hi, d = indptr[i], indptr[i + 1], diag[i]
        for p in range(lo, hi):
            where[indices[p]] = p
        s = abs(f[d])
        for p in range(lo, hi):
            k = indices[p]
            if k >= i:
                break
            lik = f[p] / f[diag[k]]
            f[p] = lik
            for q in range(diag[k] + 1, indptr[k + 1]):
                t = where[indices[q]]
                if t >= 0:
                    u = lik * f[q]
                    f[t] -= u
                    if t == d:
                        s += abs(u)
        pivot[i] = f[d]
        size[i] = s
        for p in range(lo, hi):
            where[indices[p]] = -1


def _ic0_loop(
    indptr: Any, indices: Any, diag: Any, f: Any, pivot: Any, size: Any
) -> None:  # pragma: no cover
    # left-looking rows on a row-major sorted lower-triangular CSR, in place on f
    n = indptr.shape[0] - 1
    row = np.zeros(n, f.dtype)  # row i of L so far, by column (zero elsewhere)
    for i in range(n):
        lo, hi = indptr[i], indptr[i + 1]
        sq = 0.0
        for p in range(lo, hi):
            j = indices[p]
            if j == i:
                bracket = f[p] - sq
                pivot[i] = bracket
                size[i] = abs(f[p]) + sq
                f[p] = np.sqrt(bracket)  # NaN for a negative bracket: the pivot check reports it
            else:
                s = 0.0
                for q in range(indptr[j], diag[j]):
                    s += f[q] * row[indices[q]]
                v = (f[p] - s) / f[diag[j]]
                f[p] = v
                row[j] = v
                sq += v * v
        for p in range(lo, hi):
            row[indices[p]] = 0.0


def _prepare_loop(
    indptr: Any, indices: Any, data: Any, lp: Any, li: Any, ld: Any, up: Any, ui: Any, ud: Any, dinv: Any
) -> None:  # pragma: no cover
    # a lower CSR F -> its strict part and the strict part of Fᵀ (CSR), rows scaled by 1/diag
    n = indptr.shape[0] - 1
    for i in range(n):
        for p in range(indptr[i], indptr[i + 1]):
            if indices[p] == i:
                dinv[i] = 1.0 / data[p]
    lp[0] = 0
    for i in range(n + 1):
        up[i] = 0
    m = 0
    for i in range(n):
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            if j < i:
                li[m] = j
                ld[m] = data[p] * dinv[i]
                m += 1
                up[j + 1] += 1
        lp[i + 1] = m
    for j in range(n):
        up[j + 1] += up[j]
    fill = up[:n].copy()
    for i in range(n):  # rows ascending: the columns of every row of Fᵀ come out sorted
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            if j < i:
                q = fill[j]
                ui[q] = i
                ud[q] = data[p] * dinv[j]
                fill[j] = q + 1


def _solve_vector_loop(
    indptr: Any, indices: Any, sdata: Any, dinv: Any, b: Any, x: Any, reverse: bool
) -> None:  # pragma: no cover
    # x_i = b_i / f_ii - Σ_j (f_ij / f_ii) x_j over the rows in order (reverse: last row first);
    # the neighbouring row's term (column i ∓ 1, if stored) comes from a register
    n = b.shape[0]
    prev = 0.0
    for s in range(n):
        i = n - 1 - s if reverse else s
        acc = b[i] * dinv[i]
        lo, hi = indptr[i], indptr[i + 1]
        near = 0.0
        if reverse:
            if hi > lo and indices[lo] == i + 1:
                near = sdata[lo]
                lo += 1
        elif hi > lo and indices[hi - 1] == i - 1:
            near = sdata[hi - 1]
            hi -= 1
        for p in range(lo, hi):
            acc -= sdata[p] * x[indices[p]]
        acc -= near * prev
        x[i] = acc
        prev = acc


def _far_width_loop(indptr: Any, indices: Any, upper: bool) -> int:  # pragma: no cover
    # the most entries a row holds besides its neighbour on the chain (column i + 1 if upper,
    # else i - 1)
    width = 0
    for i in range(indptr.shape[0] - 1):
        near = i + 1 if upper else i - 1
        m = 0
        for p in range(indptr[i], indptr[i + 1]):
            if indices[p] != near:
                m += 1
        width = max(width, m)
    return width


def _chain_layout_loop(
    indptr: Any, indices: Any, data: Any, upper: bool, width: int, near: Any, pi: Any, pd: Any
) -> None:  # pragma: no cover
    # a strict triangle (CSR) in the passes' layout: each row's entry on the chain (column i + 1
    # if upper, else i - 1) in near[i] (0 where not stored), its other entries in `width` slots
    # (row-major), padded by column n with value 0
    n = indptr.shape[0] - 1
    for i in range(n):
        c = i + 1 if upper else i - 1
        near[i] = 0.0
        t = i * width
        for p in range(indptr[i], indptr[i + 1]):
            if indices[p] == c:
                near[i] = data[p]
            else:
                pi[t] = indices[p]
                pd[t] = data[p]
                t += 1
        for q in range(t, (i + 1) * width):
            pi[q] = n
            pd[q] = 0.0


# The passes along a chain of rows read the row width of the passes' layout (_chain_layout_loop) from
# the global `_W`, which :func:`_with_width` binds to the factor's width in a copy of the pass
# (compiled, and cached, under its own name): with the width a compile-time constant the loop
# over a row's slots is unrolled and consecutive rows overlap, ~1 instead of ~2 ns per row of a
# 7-point stencil (a width passed as an argument, even through per-width helper functions, or a
# runtime choice between two directions, kept them apart).
_W = 0


def _with_width(name: str, fn: Callable[..., Any], width: int, **bound: Any) -> Callable[..., Any]:
    """``fn`` compiled (fastmath :data:`_CHAIN`) with its global ``_W`` bound to ``width`` and
    others to ``bound`` (by name); the copy is named ``{name}_w{width}``, so numba caches each apart."""
    key = f"{name}_w{width}"
    if key not in _compiled:
        import types

        import numba

        scope = dict(fn.__globals__)
        scope.update(bound, _W=int(width))
        copy = types.FunctionType(fn.__code__, scope, key, fn.__defaults__, fn.__closure__)
        copy.__qualname__ = key
        copy.__module__ = fn.__module__
        _compiled[key] = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=set(_CHAIN))(copy)
    return _compiled[key]


def _chain_solver(width: int, reverse: bool) -> Callable[..., Any]:
    """:func:`_solve_chain_loop` for rows of ``width`` slots, last row first if ``reverse``."""
    name = "_solve_chain_reverse" if reverse else "_solve_chain"
    return _with_width(name, _solve_chain_loop, width, _REV=bool(reverse))


#: the direction of :func:`_solve_chain_loop`, bound (like ``_W``) in each compiled copy: a
#: runtime branch between the two directions ran ~40 % slower, an index computed as n - 1 - s ~2×
_REV = False


def _solve_chain_loop(pi: Any, pd: Any, near: Any, dinv: Any, b: Any, x: Any) -> None:  # pragma: no cover
    # _solve_vector_loop on the passes' layout (_chain_layout_loop); x has n + 1 entries, x[n] = 0
    n = b.shape[0]
    start, stop, step = (n - 1, -1, -1) if _REV else (0, n, 1)
    last = 0.0
    for i in range(start, stop, step):
        acc = b[i] * dinv[i]
        for p in range(i * _W, i * _W + _W):
            acc -= pd[p] * x[pi[p]]
        acc -= near[i] * last
        x[i] = acc
        last = acc


def _solve_block_loop(
    indptr: Any, indices: Any, sdata: Any, dinv: Any, b: Any, x: Any, reverse: bool
) -> None:  # pragma: no cover
    # the same for a row-major (n, k) block
    n, k = b.shape
    for s in range(n):
        i = n - 1 - s if reverse else s
        for c in range(k):
            x[i, c] = b[i, c] * dinv[i]
        for p in range(indptr[i], indptr[i + 1]):
            v, j = sdata[p], indices[p]
            for c in range(k):
                x[i, c] -= v * x[j, c]


def _diagonal_loop(indptr: Any, indices: Any, data: Any, d: Any) -> None:  # pragma: no cover
    # the diagonal of a CSR matrix (repeated entries summed, any column order)
    for i in range(indptr.shape[0] - 1):
        acc = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            if indices[p] == i:
                acc += data[p]
        d[i] = acc


def _scale_loop(indptr: Any, indices: Any, data: Any, s: Any, out: Any) -> None:  # pragma: no cover
    # out = values of diag(s) S diag(s)
    for i in range(indptr.shape[0] - 1):
        si = s[i]
        for p in range(indptr[i], indptr[i + 1]):
            out[p] = data[p] * si * s[indices[p]]


def _lower_loop(
    indptr: Any, indices: Any, data: Any, lp: Any, li: Any, ld: Any, diag: Any
) -> int:  # pragma: no cover
    # the lower triangle of a CSR matrix whose rows have strictly increasing columns; 0 when done,
    # 1 when a row's columns are not strictly increasing, 2 for a non-finite value, 3 for a
    # missing diagonal entry
    n = indptr.shape[0] - 1
    m = 0
    lp[0] = 0
    for i in range(n):
        last = -1
        diag[i] = -1
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            if j <= last:
                return 1
            last = j
            v = data[p]
            if not np.isfinite(v):
                return 2
            if j <= i:
                li[m] = j
                ld[m] = v
                if j == i:
                    diag[i] = m
                m += 1
        if diag[i] < 0:
            return 3
        lp[i + 1] = m
    return 0


def _split_prepare_loop(
    ap: Any,
    ai: Any,
    av: Any,
    fp: Any,
    fi: Any,
    fv: Any,
    lp: Any,
    li: Any,
    ld: Any,
    up: Any,
    ui: Any,
    ud: Any,
    near: Any,
    k: Any,
    ell: Any,
    tol: float,
) -> int:  # pragma: no cover
    # from A (CSR, strictly increasing columns) and its IC(0) factor L (lower CSR, diagonal last in
    # each row): F = strict lower part of diag(l)⁻¹ A diag(l)⁻¹ (CSR, lp/li/ld), Fᵀ (CSR, up/ui/ud),
    # k = 2 − a_ii / l_i² and l; 0 when done, 1 when L is not (D̃ + E) D̃^-½ for A's strict lower
    # part E (patterns differ, or some l_ij l_jj differs from a_ij beyond rounding), 2 when a row
    # of A is not strictly increasing or lacks its diagonal entry.  The entry F[i, i-1] (the
    # previous row's, on the passes' chain of dependent rows) is kept apart in near[i] (0 where
    # not stored), so the passes take it from a register, after the other terms
    n = ap.shape[0] - 1
    for i in range(n):
        last = fp[i + 1] - 1
        if last < fp[i] or fi[last] != i:
            return 1
        ell[i] = fv[last]
    m = 0
    lp[0] = 0
    for j in range(n + 1):
        up[j] = 0
    for i in range(n):
        q = fp[i]
        prev = -1
        d = 0.0
        found = False
        near[i] = 0.0
        for p in range(ap[i], ap[i + 1]):
            j = ai[p]
            if j <= prev:
                return 2
            prev = j
            if j > i:
                continue
            if j == i:
                d = av[p]
                found = True
                continue
            if q >= fp[i + 1] - 1 or fi[q] != j:
                return 1
            a = av[p]
            if abs(fv[q] * ell[j] - a) > tol * abs(a):
                return 1
            q += 1
            if j == i - 1:
                near[i] = a / (ell[i] * ell[j])
                continue
            li[m] = j
            ld[m] = a / (ell[i] * ell[j])
            m += 1
            up[j + 1] += 1
        if not found or q != fp[i + 1] - 1:
            return 1 if found else 2
        lp[i + 1] = m
        k[i] = 2.0 - d / (ell[i] * ell[i])
    for j in range(n):
        up[j + 1] += up[j]
    fill = up[:n].copy()
    for i in range(n):  # rows ascending: the columns of every row of Fᵀ come out sorted
        for p in range(lp[i], lp[i + 1]):
            j = li[p]
            q = fill[j]
            ui[q] = i
            ud[q] = ld[p]
            fill[j] = q + 1
    return 0


def _back_pass(
    gi: Any, gd: Any, near: Any, rh: Any, pv: Any, w: Any, beta: float
) -> None:  # pragma: no cover
    # p̂ = r̂ + β p̂ and w = (I + Fᵀ)⁻¹ p̂, last row first (layout: see _split_cg_loop)
    last = 0.0
    nxt = 0.0  # near[i + 1]
    for i in range(pv.shape[0] - 1, -1, -1):
        pi = rh[i] + beta * pv[i]
        pv[i] = pi
        acc = pi
        for p in range(i * _W, i * _W + _W):
            acc -= gd[p] * w[gi[p]]
        acc -= nxt * last
        w[i] = acc
        last = acc
        nxt = near[i]


def _forward_pass(fi: Any, fd: Any, near: Any, k: Any, pv: Any, w: Any, u: Any) -> float:  # pragma: no cover
    # u = (I + F)⁻¹ (p̂ − k∘w); returns p̂ᵀ(w + u)
    last = 0.0
    pq = 0.0
    for i in range(pv.shape[0]):
        acc = pv[i] - k[i] * w[i]
        for p in range(i * _W, i * _W + _W):
            acc -= fd[p] * u[fi[p]]
        acc -= near[i] * last
        u[i] = acc
        last = acc
        pq += pv[i] * (w[i] + acc)
    return pq


def _forward_pass_norm(
    fi: Any, fd: Any, near: Any, k: Any, ell: Any, pv: Any, w: Any, u: Any, rh: Any, out: Any
) -> None:  # pragma: no cover
    # the same, and ‖L r̂‖² beside it: out = [p̂ᵀ(w + u), ‖L r̂‖²]
    last = 0.0
    last_r = 0.0
    pq = 0.0
    rr = 0.0
    for i in range(pv.shape[0]):
        acc = pv[i] - k[i] * w[i]
        acc_r = rh[i]
        for p in range(i * _W, i * _W + _W):
            j = fi[p]
            acc -= fd[p] * u[j]
            acc_r += fd[p] * rh[j]
        acc -= near[i] * last
        acc_r += near[i] * last_r
        u[i] = acc
        last = acc
        last_r = rh[i]
        pq += pv[i] * (w[i] + acc)
        v = ell[i] * acc_r
        rr += v * v
    out[0] = pq
    out[1] = rr


def _residual_norm2(fi: Any, fd: Any, near: Any, ell: Any, rh: Any) -> float:  # pragma: no cover
    # ‖L r̂‖²
    rr = 0.0
    last_r = 0.0
    for i in range(ell.shape[0]):
        acc_r = rh[i]
        for p in range(i * _W, i * _W + _W):
            acc_r += fd[p] * rh[fi[p]]
        acc_r += near[i] * last_r
        last_r = rh[i]
        v = ell[i] * acc_r
        rr += v * v
    return rr


def _update_pass(xt: Any, rh: Any, w: Any, u: Any, alpha: float) -> float:  # pragma: no cover
    # x̃ += α w, r̂ −= α (w + u); returns r̂ᵀr̂
    rho = 0.0
    for i in range(xt.shape[0]):
        xt[i] += alpha * w[i]
        v = rh[i] - alpha * (w[i] + u[i])
        rh[i] = v
        rho += v * v
    return rho


# the passes as compiled functions, called by the compiled _split_cg_loop (bound by _split_cg_kernel
# in its copy of the loop: separately compiled, the passes run ~25 % faster than written out inside
# one long function)
_nb_back_pass: Any = None
_nb_forward_pass: Any = None
_nb_forward_pass_norm: Any = None
_nb_residual_norm2: Any = None
_nb_update_pass: Any = None


def _split_cg_loop(
    fi: Any,
    fd: Any,
    gi: Any,
    gd: Any,
    near: Any,
    k: Any,
    ell: Any,
    x: Any,
    r: Any,
    n_iter: int,
    min_iter: int,
    check_every: int,
    eps: float,
    freeze_at: float,
    limit: float,
    out: Any,
) -> float:  # pragma: no cover
    # CG with M = L Lᵀ, L = diag(l) (I + F), run as CG on L⁻¹ A L⁻ᵀ (Eisenstat): with
    # Ã = diag(l)⁻¹ A diag(l)⁻¹ = (I + F) + (I + Fᵀ) − diag(k), the product is
    # L⁻¹ A L⁻ᵀ p̂ = w + (I + F)⁻¹ (p̂ − k∘w) with w = (I + Fᵀ)⁻¹ p̂ = diag(l) p: two unit
    # triangular passes, no product with A.  The iterates are PCG's: x̃ = diag(l) x, r̂ = L⁻¹ r,
    # p̂ = Lᵀ p, r̂ᵀr̂ = rᵀz.  ‖r‖ = ‖L r̂‖ of the current iterate is summed in the forward pass of
    # the next step, whose update is dropped when it meets the test.  x (in/out) and r (in) are
    # the normalised solution and residual; out = [iterations, passed, active, non-finite, p̂ᵀAp̂
    # breakdown]; returns ‖r‖ of the returned x.
    #
    # Layout: F's entries (i, i-1) are near[i]; its other strict entries are rows of _W slots
    # (fi/fd, row-major; Fᵀ's likewise in the back pass's _W slots of gi/gd), padded by column n, where every
    # work vector holds 0.  Each pass adds the near term last, from the previous row's result
    # held in a register, so the chain of dependent rows costs one multiply-add per row (not a
    # store, a load and every term of the row), and every row runs the same trip count.
    n = x.shape[0]
    xt = np.empty(n, x.dtype)
    rh = np.zeros(n + 1, x.dtype)
    pv = np.empty(n, x.dtype)
    w = np.zeros(n + 1, x.dtype)
    u = np.zeros(n + 1, x.dtype)
    sums = np.empty(2, x.dtype)
    rho = 0.0
    last = 0.0
    for i in range(n):
        xt[i] = ell[i] * x[i]
        acc = r[i] / ell[i]
        for p in range(i * _W, i * _W + _W):
            acc -= fd[p] * rh[fi[p]]
        acc -= near[i] * last
        rh[i] = acc
        pv[i] = acc
        rho += acc * acc
        last = acc
    beta = 0.0
    ratio = -1.0
    res = -1.0  # not yet known for the current iterate
    iterations = 0
    passed = 0
    active = 1
    bad = 0
    broken = 0
    for it in range(n_iter):
        _nb_back_pass(gi, gd, near, rh, pv, w, beta)  # p̂ = r̂ + β p̂, w = (I + Fᵀ)⁻¹ p̂
        # ‖r‖ is summed (a few more loads per entry) only when it may decide: every 8th step,
        # and whenever ‖r̂‖ times the last seen ratio ‖r‖ / ‖r̂‖ comes within 100× of a threshold
        look = it > 0 and (ratio < 0 or it % 8 == 0 or ratio * np.sqrt(rho) <= 100.0 * max(limit, freeze_at))
        # u = (I + F)⁻¹ (p̂ − k∘w) and p̂ᵀ(w + u) (and, to look, ‖L r̂‖²)
        if look:
            _nb_forward_pass_norm(fi, fd, near, k, ell, pv, w, u, rh, sums)
            pq = sums[0]
            res = np.sqrt(sums[1])
            ratio = res / np.sqrt(rho) if rho > 0 else -1.0
            if not np.isfinite(res):
                bad = 1
                active = 0
                break
            if not res > freeze_at:
                active = 0
            if iterations % check_every == 0 and iterations >= min_iter and res <= limit:
                passed = 1
                break
            if active == 0:
                break
        else:
            pq = _nb_forward_pass(fi, fd, near, k, pv, w, u)
        if not np.isfinite(pq):
            bad = 1
            active = 0
            break
        if not pq >= eps:
            broken = 1
            active = 0
            break
        alpha = rho / pq
        rho_new = _nb_update_pass(xt, rh, w, u, alpha)
        iterations = it + 1
        res = -1.0
        if not np.isfinite(rho_new):
            bad = 1
            active = 0
            break
        if not rho_new >= eps:  # the residual vanished: exact convergence
            active = 0
            break
        beta = rho_new / rho
        rho = rho_new
    if res < 0:  # ‖L r̂‖ of the last update
        res = np.sqrt(_nb_residual_norm2(fi, fd, near, ell, rh))
        if not np.isfinite(res):
            bad = 1
            active = 0
        elif not res > freeze_at:
            active = 0
        if iterations >= min_iter and res <= limit:
            passed = 1
    for i in range(n):
        x[i] = xt[i] / ell[i]
    out[0] = iterations
    out[1] = passed
    out[2] = active
    out[3] = bad
    out[4] = broken
    return res


def _split_cg_kernel(fw: int, gw: int) -> Callable[..., Any]:
    """The compiled :func:`_split_cg_loop` for ``F`` rows of ``fw`` and ``Fᵀ`` rows of ``gw``
    slots, its passes compiled first (bound by name in its copy, each for its width)."""
    passes = {
        "_nb_back_pass": _with_width("_back_pass", _back_pass, gw),
        "_nb_forward_pass": _with_width("_forward_pass", _forward_pass, fw),
        "_nb_forward_pass_norm": _with_width("_forward_pass_norm", _forward_pass_norm, fw),
        "_nb_residual_norm2": _with_width("_residual_norm2", _residual_norm2, fw),
        "_nb_update_pass": _jit("update_pass", _update_pass, reassociate=True),
    }
    return _with_width(f"_split_cg_g{gw}", _split_cg_loop, fw, **passes)


# ----------------------------------------------------------------------------------------------
# entry points
def csr_lower(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | str:
    """The lower triangle of a 2-D CPU CSR matrix as ``(crow, col, values, diagonal positions)``
    in one pass, or why not: ``"unsorted"`` (columns not strictly increasing in some row: the
    caller canonicalises), ``"non-finite"`` or ``"no diagonal"``."""
    crow, col = S.crow_indices(), S.col_indices()
    values = S.values().detach().contiguous()
    n, nnz = S.shape[0], values.numel()
    lp = torch.empty(n + 1, dtype=crow.dtype)
    li = torch.empty(nnz, dtype=col.dtype)
    ld = torch.empty(nnz, dtype=values.dtype)
    diag = torch.empty(n, dtype=torch.int64)
    status = _jit("lower", _lower_loop)(
        crow.numpy(), col.numpy(), values.numpy(), lp.numpy(), li.numpy(), ld.numpy(), diag.numpy()
    )
    if status:
        return {1: "unsorted", 2: "non-finite", 3: "no diagonal"}[status]
    m = int(lp[-1])
    return lp, li[:m], ld[:m], diag


def csr_diagonal(S: torch.Tensor) -> torch.Tensor:
    """The diagonal of a 2-D CPU CSR matrix (repeated entries summed)."""
    d = torch.empty(S.shape[0], dtype=S.dtype)
    values = S.values().detach().contiguous()
    _jit("diagonal", _diagonal_loop)(
        S.crow_indices().numpy(), S.col_indices().numpy(), values.numpy(), d.numpy()
    )
    return d


def csr_scaled_values(S: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Values of ``diag(s) S diag(s)`` on the pattern of a 2-D CPU CSR matrix ``S``."""
    values = S.values().detach().contiguous()
    out = torch.empty_like(values)
    _jit("scale", _scale_loop)(
        S.crow_indices().numpy(), S.col_indices().numpy(), values.numpy(), s.contiguous().numpy(), out.numpy()
    )
    return out


def _factor_values(
    name: str,
    loop: Callable[..., Any],
    crow: torch.Tensor,
    cols: torch.Tensor,
    diag: torch.Tensor,
    a: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run a factorisation loop on a copy of the values ``a``: the factor values, and per row the
    pivot and the size of the terms it comes from."""
    f = a.detach().clone().contiguous()
    n = crow.numel() - 1
    pivot = torch.empty(n, dtype=a.dtype)
    size = torch.empty(n, dtype=a.dtype)
    _jit(name, loop)(crow.numpy(), cols.numpy(), diag.numpy(), f.numpy(), pivot.numpy(), size.numpy())
    return f, pivot, size


def ilu0_values(
    crow: torch.Tensor, cols: torch.Tensor, diag: torch.Tensor, a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ILU(0) factor values (row-major, ``L`` strictly below the diagonal, ``U`` on and above), and
    per row the pivot ``u_ii`` and the size of the terms it comes from."""
    return _factor_values("ilu0", _ilu0_loop, crow, cols, diag, a)


def ic0_values(
    crow: torch.Tensor, cols: torch.Tensor, diag: torch.Tensor, a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IC(0) factor values on a lower-triangular pattern (row-major), and per row the pivot
    ``a_ii − Σ l_ik²`` (before the square root) and the size of the terms it comes from."""
    return _factor_values("ic0", _ic0_loop, crow, cols, diag, a)


class CompiledFactor:
    """A lower-triangular CSR factor ``F`` (diagonal stored, nonzero) prepared for ``F x = b`` and
    ``Fᵀ x = b`` by the compiled loops."""

    def __init__(self, F: torch.Tensor):
        crow = F.crow_indices().numpy()
        col = F.col_indices().numpy()
        val = F.values().detach().contiguous().numpy()
        n = F.shape[0]
        nnz_strict = val.shape[0] - n
        itype = col.dtype
        self.lower = (
            np.empty(n + 1, itype),
            np.empty(nnz_strict, itype),
            np.empty(nnz_strict, val.dtype),
        )
        self.upper = (
            np.empty(n + 1, itype),
            np.empty(nnz_strict, itype),
            np.empty(nnz_strict, val.dtype),
        )
        self.dinv = np.empty(n, val.dtype)
        _jit("prepare", _prepare_loop)(crow, col, val, *self.lower, *self.upper, self.dinv)
        self.dtype = F.dtype
        # per direction, at its first vector solve: the chain layout, or None where one long row
        # would make its padding cost more than the rows themselves
        self.chain: dict[bool, tuple[int, Any, Any, Any] | None] = {}

    def _chain(self, transpose: bool) -> tuple[int, Any, Any, Any] | None:
        if transpose not in self.chain:
            indptr, indices, sdata = self.upper if transpose else self.lower
            n = indptr.shape[0] - 1
            width = _jit("far_width", _far_width_loop)(indptr, indices, transpose)
            layout = None
            if width * n <= 2 * (sdata.shape[0] + n):
                near = np.empty(n, sdata.dtype)
                pi, pd = np.empty(width * n, indices.dtype), np.empty(width * n, sdata.dtype)
                _jit("chain_layout", _chain_layout_loop)(
                    indptr, indices, sdata, transpose, width, near, pi, pd
                )
                layout = (width, pi, pd, near)
            self.chain[transpose] = layout
        return self.chain[transpose]

    def solve(self, B: torch.Tensor, transpose: bool) -> torch.Tensor:
        """``F⁻¹ B`` (``transpose``: ``F⁻ᵀ B``) for a contiguous CPU ``(n, k)`` block ``B``."""
        indptr, indices, sdata = self.upper if transpose else self.lower
        chain = self._chain(transpose) if B.shape[1] == 1 else None
        if chain is not None:
            # one more entry, kept 0, for the padding's column n
            x = torch.zeros(B.shape[0] + 1, dtype=B.dtype)
            width, pi, pd, near = chain
            _chain_solver(width, transpose)(pi, pd, near, self.dinv, B.view(-1).numpy(), x.numpy())
            return x[:-1].view(B.shape)
        X = torch.empty_like(B)
        if B.shape[1] == 1:
            _jit("solve_vector", _solve_vector_loop)(
                indptr, indices, sdata, self.dinv, B.view(-1).numpy(), X.view(-1).numpy(), transpose
            )
        else:
            _jit("solve_block", _solve_block_loop)(
                indptr, indices, sdata, self.dinv, B.numpy(), X.numpy(), transpose
            )
        return X


class SplitFactor:
    """An IC(0) factor ``L = diag(l) (I + F)`` whose strict part is ``A``'s own, scaled
    (``F = strict lower part of diag(l)⁻¹ A diag(l)⁻¹``), prepared for :meth:`cg`.

    That holds when the factorisation changed no off-diagonal entry (no two rows of the lower
    triangle share a column left of the diagonal, as for 5- and 7-point stencils); then
    preconditioned CG needs no product with ``A`` (Eisenstat's trick).  Build with :meth:`build`,
    which returns ``None`` when ``L`` is not of that form.
    """

    def __init__(self, widths: tuple[int, int], arrays: tuple[Any, ...], dtype: torch.dtype):
        self.widths = widths  # the row widths of F and Fᵀ in the passes' layout
        self.arrays = arrays
        self.dtype = dtype
        self._extra: tuple[Any, Any, Any] | None = None

    @classmethod
    def build(cls, S: torch.Tensor, L: torch.Tensor) -> SplitFactor | None:
        """For a 2-D CPU CSR ``S`` and its IC(0) factor ``L`` (lower CSR, same dtype), or ``None``."""
        values = S.values().detach().contiguous()
        fvals = L.values().detach().contiguous()
        n = S.shape[0]
        itype = np.int64
        ap, ai = S.crow_indices().numpy(), S.col_indices().numpy()
        fp, fi = L.crow_indices().numpy(), L.col_indices().numpy()
        m = max(fvals.numel() - n, 0)
        dt = values.numpy().dtype
        jtype = np.int32 if n < 2**31 else np.int64
        lp, li, ld = np.empty(n + 1, itype), np.empty(m, jtype), np.empty(m, dt)
        up, ui, ud = np.empty(n + 1, itype), np.empty(m, jtype), np.empty(m, dt)
        near, k, ell = np.empty(n, dt), np.empty(n, dt), np.empty(n, dt)
        tol = 8.0 * float(torch.finfo(S.dtype).eps)
        status = _jit("split_prepare", _split_prepare_loop)(
            ap, ai, values.numpy(), fp, fi, fvals.numpy(), lp, li, ld, up, ui, ud, near, k, ell, tol
        )
        if status:
            return None
        fw = int(np.max(np.diff(lp))) if n else 0
        gw = int(np.max(np.diff(up))) if n else 0
        # rows of very different lengths (one long row): padding would at least double the work
        if (fw + gw) * n > 2 * (2 * m + n):
            return None
        padded = []
        none = np.empty(n, dt)  # the chain entries are near already: none is left in these rows
        for indptr, indices, data, width in ((lp, li, ld, fw), (up, ui, ud, gw)):
            pi, pd = np.empty(n * width, jtype), np.empty(n * width, dt)
            _jit("chain_layout", _chain_layout_loop)(indptr, indices, data, False, width, none, pi, pd)
            padded += [pi, pd]
        return cls((fw, gw), (*padded, near, k, ell), S.dtype)

    def solve(self, r: torch.Tensor) -> torch.Tensor:
        """``M⁻¹ r = L⁻ᵀ L⁻¹ r`` for a contiguous CPU vector ``r``: ``(I + F)⁻¹ diag(l)⁻¹ r``,
        then ``diag(l)⁻¹ (I + Fᵀ)⁻¹``, by the passes' loops (no preparation of ``L``)."""
        fw, gw = self.widths
        fi, fd, gi, gd, near, _k, ell = self.arrays
        if self._extra is None:  # 1 / l, ones, and Fᵀ's chain entries (i, i + 1) = near[i + 1]
            self._extra = (1.0 / ell, np.ones_like(ell), np.append(near[1:], 0.0))
        linv, ones, near_up = self._extra
        y = np.zeros(ell.shape[0] + 1, ell.dtype)
        _chain_solver(fw, False)(fi, fd, near, linv, r.numpy(), y)
        z = torch.zeros(ell.shape[0] + 1, dtype=self.dtype)
        _chain_solver(gw, True)(gi, gd, near_up, ones, y[:-1], z.numpy())
        return z[:-1].mul_(torch.from_numpy(linv))

    def cg(
        self,
        x: torch.Tensor,
        r: torch.Tensor,
        n_iter: int,
        min_iter: int,
        check_every: int,
        eps: float,
        freeze_at: float,
        limit: float,
    ) -> tuple[float, int, bool, bool, bool, bool]:
        """Run preconditioned CG from the normalised ``x`` (overwritten with the result) and its
        residual ``r``: ``(‖r‖, iterations, passed, active, non-finite, breakdown)``."""
        out = np.zeros(5, np.int64)
        res = _split_cg_kernel(*self.widths)(
            *self.arrays, x.numpy(), r.numpy(), n_iter, min_iter, check_every, eps, freeze_at, limit, out
        )
        return float(res), int(out[0]), bool(out[1]), bool(out[2]), bool(out[3]), bool(out[4])
