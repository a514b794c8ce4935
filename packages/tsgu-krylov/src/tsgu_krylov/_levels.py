"""The level-scheduling engine of the incomplete factorisations, and triangular factor application.

**Levels.**  An incomplete factorisation computes every stored entry once, from entries of earlier
rows and of earlier columns of its own row.  The entries are grouped in *levels* of that dependency
graph (an entry's level is one more than the highest level it reads), and one level is computed at
once with a few native kernels (gathers, a product and a scatter-add over the level's update
pairs).  The Python loop runs over levels, never over rows or entries: about ``2·(nx + ny + nz)``
of them for a 3-D grid Laplacian.

**Symbolic once per pattern.**  The update pairs, the levels and the level order depend only on
the pattern; :class:`LevelSchedule` holds them, and :func:`cached` keeps the last few schedules
keyed by the pattern's canonical indices (compared entry by entry, an ``O(nnz)`` test), so a
training loop that refactors a matrix with new values pays only the numeric part
(:meth:`LevelSchedule.run`: a few kernels per level).

**Application.**  :class:`TriangularFactors` applies ``(F₁ F₂)⁻¹`` for stored factors, every
factor kept as a *lower* triangular CSR matrix with 32-bit indices, built once (an upper factor
``U`` is stored as ``Uᵀ``).  On the CPU with numba (float32/float64) the solves are the compiled
loops of :mod:`._compiled`, each factor prepared once; elsewhere PyTorch's native sparse
triangular solve, an upper factor solved with ``transpose=True`` (on the CPU that kernel is about
twice as fast as the upper solve of the same matrix, and 64-bit indices would be converted on
every call).

The compiled factorisations (:func:`._compiled.ic0_values`, :func:`._compiled.ilu0_values`) need
no level schedule: :mod:`.incomplete` builds the schedule only for the PyTorch path.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from tsgu_ops.internal import compress_rows, lexsort_rows_cols, quiet

from ._compiled import CompiledFactor, use_compiled


def _expand(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated ranges ``starts[g] + 0 … counts[g]−1``: the group and the index of each."""
    dev = starts.device
    total = int(counts.sum()) if counts.numel() else 0
    group = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), counts, output_size=total)
    shift = starts - (torch.cumsum(counts, 0) - counts)
    return group, shift.index_select(0, group) + torch.arange(total, device=dev)


def _levels(nnz: int, s1: torch.Tensor, s2: torch.Tensor, t: torch.Tensor, div: torch.Tensor) -> torch.Tensor:
    """Level of every entry in the dependency graph (Kahn's algorithm, one frontier at a time).

    A structural analysis of the pattern in many small steps: it runs on the host, whatever the
    device of the factorisation (one transfer of the indices each way), with NumPy when it is
    installed (a NumPy call costs a fraction of a PyTorch operator's dispatch) and PyTorch
    otherwise.
    """
    cpu = torch.device("cpu")
    has = torch.nonzero(div < nnz).squeeze(-1)
    src = torch.cat([s1, s2, div[has]]).to(cpu)
    dst = torch.cat([t, t, has]).to(cpu)
    try:
        import numpy
    except ImportError:  # NumPy accompanies PyTorch almost everywhere, but is not required
        return _levels_torch(nnz, src, dst)
    try:
        src_np, dst_np = src.numpy(), dst.numpy()
    except RuntimeError:  # pragma: no cover - a PyTorch built without NumPy support
        return _levels_torch(nnz, src, dst)
    return torch.from_numpy(_levels_numpy(numpy, nnz, src_np, dst_np))


def _levels_numpy(np: Any, nnz: int, src: Any, dst: Any) -> Any:
    """:func:`_levels` on NumPy arrays of edges ``src → dst``."""
    order = np.argsort(src, kind="stable")
    out_dst = dst[order]
    out_count = np.bincount(src, minlength=nnz)
    out_start = np.cumsum(out_count) - out_count
    indeg = np.bincount(dst, minlength=nnz)
    level = np.zeros(nnz, dtype=np.int64)
    frontier = np.flatnonzero(indeg == 0)
    lev = 0
    while frontier.size:
        level[frontier] = lev
        counts = out_count[frontier]
        ends = np.cumsum(counts)
        total = int(ends[-1])
        if total == 0:
            break
        idx = np.repeat(out_start[frontier] - (ends - counts), counts) + np.arange(total)
        reached = out_dst[idx]
        np.subtract.at(indeg, reached, 1)
        ready = reached[indeg[reached] == 0]  # once per edge that reached it
        # keep one copy of each: a done entry's in-degree is free, store a distinct mark there
        mark = np.arange(-1, -ready.size - 1, -1)
        indeg[ready] = mark
        frontier = ready[indeg[ready] == mark]
        lev += 1
    return level


def _levels_torch(nnz: int, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """:func:`_levels` with PyTorch operators on the CPU."""
    order = torch.argsort(src, stable=True)
    out_ptr = compress_rows(src[order], nnz).to(torch.int64)
    out_start, out_count = out_ptr[:-1], out_ptr[1:] - out_ptr[:-1]
    out_dst = dst[order]
    indeg = torch.bincount(dst, minlength=nnz)
    level = torch.zeros(nnz, dtype=torch.int64)
    minus_one = torch.full((dst.numel(),), -1, dtype=torch.int64)
    frontier = torch.nonzero(indeg == 0).squeeze(-1)
    lev = 0
    while frontier.numel():
        level.index_fill_(0, frontier, lev)
        _, idx = _expand(out_start.index_select(0, frontier), out_count.index_select(0, frontier))
        if idx.numel() == 0:
            break
        reached = out_dst.index_select(0, idx)
        indeg.index_add_(0, reached, minus_one[: idx.numel()])
        ready = reached[indeg.index_select(0, reached) == 0]  # once per edge that reached it
        # keep one copy of each: a done entry's in-degree is free, store a distinct mark there
        mark = torch.arange(-1, -ready.numel() - 1, -1)
        indeg.index_put_((ready,), mark)
        frontier = ready[indeg.index_select(0, ready) == mark]
        lev += 1
    return level


class LevelSchedule:
    """The symbolic part of a level-scheduled incomplete factorisation.

    Entry ``e`` becomes ``(a_e − Σ_{pairs p → e} f_{s1[p]} f_{s2[p]}) / f_{div[e]}`` (no division
    where ``div[e] = nnz``), or, where ``sqrt_at[e]`` (the IC(0) diagonal, never divided), the
    square root of the bracket.  Built from the update pairs once per pattern; :meth:`run` is the
    numeric factorisation for one set of values.
    """

    def __init__(
        self,
        nnz: int,
        s1: torch.Tensor,
        s2: torch.Tensor,
        t: torch.Tensor,
        div: torch.Tensor,
        sqrt_at: torch.Tensor | None,
    ):
        dev = s1.device
        self.nnz = nnz
        self.s1, self.s2, self.t = s1, s2, t
        self.with_sqrt = sqrt_at is not None
        level = _levels(nnz, s1, s2, t, div).to(dev)
        # level order; within a level the entries to divide come first, then the others
        plain = (div == nnz) if sqrt_at is None else sqrt_at
        key = 2 * level + plain.to(torch.int64)
        order = torch.argsort(key, stable=True)
        self.n_levels = int(level.max()) + 1 if nnz else 0
        bounds = compress_rows(key[order], 2 * self.n_levels).tolist()  # [divided, plain) per level
        rank = torch.empty(nnz + 1, dtype=torch.int64, device=dev)
        rank[order] = torch.arange(nnz, device=dev)
        rank[nnz] = nnz  # a slot that holds 1
        t_rank, p_order = torch.sort(rank[t], stable=True)  # pairs by the level order of their target
        p_bounds = torch.searchsorted(t_rank, torch.tensor(bounds[::2], device=dev)).tolist()
        s1r, s2r = rank[s1][p_order], rank[s2][p_order]
        div_l = rank[div[order]]
        self.order = order
        self.back = rank[:nnz]
        self.cuts = bounds[1:-1]
        # every level's index views at once (one native call each instead of a slice per level)
        self.divisors = div_l.tensor_split(self.cuts)
        p_cuts = p_bounds[1:-1]
        self.firsts, self.seconds = s1r.tensor_split(p_cuts), s2r.tensor_split(p_cuts)
        self.targets = t_rank.tensor_split(p_cuts)

    def run(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Factor values (row-major) and, at the entries not divided, the brackets (the pivots)."""
        nnz = self.nnz
        # one buffer: the brackets, turned into factor entries in place, level by level
        f = torch.ones(nnz + 1, dtype=a.dtype, device=a.device)
        f[:nnz] = a[self.order]
        brackets = f.clone() if self.with_sqrt else f
        segments = f[:nnz].tensor_split(self.cuts)  # divided, plain, divided, plain, …
        saved = brackets[:nnz].tensor_split(self.cuts)
        firsts, seconds, targets, divisors = self.firsts, self.seconds, self.targets, self.divisors
        for lev in range(self.n_levels):
            if targets[lev].numel():
                prod = f.index_select(0, firsts[lev]).mul_(f.index_select(0, seconds[lev]))
                f.index_add_(0, targets[lev], prod, alpha=-1)
            divided, plain = segments[2 * lev], segments[2 * lev + 1]
            if divided.numel():
                divided.div_(f.index_select(0, divisors[2 * lev]))
            if plain.numel() and self.with_sqrt:
                saved[2 * lev + 1].copy_(plain)
                plain.sqrt_()
        return f[self.back], brackets[self.back]


def _factor_by_levels(
    a: torch.Tensor,
    s1: torch.Tensor,
    s2: torch.Tensor,
    t: torch.Tensor,
    div: torch.Tensor,
    sqrt_at: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`LevelSchedule` built and run once (no caching)."""
    return LevelSchedule(a.numel(), s1, s2, t, div, sqrt_at).run(a)


# ----------------------------------------------------------------------------------------------
# symbolic analyses per pattern
_CACHE_SIZE = 8
_CACHE: OrderedDict[tuple[Any, ...], list[tuple[torch.Tensor, torch.Tensor, Any]]] = OrderedDict()


def cached(kind: str, rows: torch.Tensor, cols: torch.Tensor, build: Callable[[], Any]) -> Any:
    """``build()`` for the pattern ``(rows, cols)`` (row-major, canonical), reused for an equal one.

    The key is the kind of analysis and the pattern itself: a later call whose index tensors hold
    the same entries (any tensor objects) gets the stored result; the last ``_CACHE_SIZE``
    patterns are kept.  The result must depend on the pattern only, never on values.
    """
    key = (kind, rows.numel(), rows.device, int(rows[-1]) if rows.numel() else -1)
    bucket = _CACHE.get(key)
    if bucket is not None:
        for r, c, result in bucket:
            if torch.equal(r, rows) and torch.equal(c, cols):
                _CACHE.move_to_end(key)
                return result
    result = build()
    _CACHE.setdefault(key, []).append((rows.clone(), cols.clone(), result))
    _CACHE.move_to_end(key)
    while sum(len(b) for b in _CACHE.values()) > _CACHE_SIZE:
        oldest = next(iter(_CACHE))
        _CACHE[oldest].pop(0)
        if not _CACHE[oldest]:
            del _CACHE[oldest]
    return result


def clear_cache() -> None:
    """Forget every cached symbolic analysis (and every :func:`remembered` result)."""
    _CACHE.clear()
    _SEEN.clear()


# results per tensor state: the same tensors again, unmodified (a training loop's backward pass,
# a repeated solve), found without reading a single index or value
_SEEN_SIZE = 2
_SEEN: list[tuple[tuple[Any, ...], list[torch.Tensor], Any]] = []


def tensor_stamp(A: torch.Tensor) -> tuple[tuple[Any, ...], list[torch.Tensor]] | None:
    """What identifies a sparse COO/CSR ``A``'s state: layout, shape, dtype, device and per member
    tensor (indices, values) its address and version counter (which every in-place change of
    the member, or of any view of it, advances); with the members, which the caller keeps alive
    so that no other tensor can take their memory.  ``None`` where there is no version counter
    (inference mode) or the layout is another."""
    if A.layout == torch.sparse_csr:
        members = [A.crow_indices(), A.col_indices(), A.values()]
    elif A.layout == torch.sparse_coo:
        members = [A._indices(), A._values()]
    else:
        return None
    try:
        state = tuple((t.data_ptr(), t._version, tuple(t.shape), t.dtype) for t in members)
    except RuntimeError:  # an inference tensor has no version counter
        return None
    coalesced = A.layout == torch.sparse_coo and A.is_coalesced()
    key = (A.layout, tuple(A.shape), A.dtype, str(A.device), coalesced)
    return (key, state), members


def remembered(kind: str, A: torch.Tensor, options: Any) -> Any:
    """The result :func:`remember` stored for these very tensors, unmodified since, or ``None``."""
    stamp = tensor_stamp(A)
    if stamp is None:
        return None
    for key, _members, result in _SEEN:
        if key == (kind, stamp[0], options):
            return result
    return None


def remember(kind: str, A: torch.Tensor, options: Any, result: Any) -> None:
    """Store ``result`` for ``A``'s present state (the last :data:`_SEEN_SIZE` are kept)."""
    stamp = tensor_stamp(A)
    if stamp is None:
        return
    key = (kind, stamp[0], options)
    kept = [e for e in _SEEN if e[0] != key][-(_SEEN_SIZE - 1) :]
    _SEEN[:] = [*kept, (key, stamp[1], result)]


# ----------------------------------------------------------------------------------------------
# application of stored factors
def lower_csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, N: int) -> torch.Tensor:
    """A lower-triangular CSR matrix with 32-bit indices (64-bit if they do not fit) from row-major
    sorted coordinates."""
    dtype = torch.int32 if max(N, values.numel()) < 2**31 else torch.int64
    crow = compress_rows(rows, N).to(dtype)
    return quiet(
        lambda: torch.sparse_csr_tensor(crow, cols.to(dtype), values, (N, N), check_invariants=False)
    )


def transposed_order(rows: torch.Tensor, cols: torch.Tensor, N: int) -> torch.Tensor:
    """Permutation listing row-major entries ``(rows, cols)`` in the row-major order of the transpose."""
    return lexsort_rows_cols(cols, rows, N)


class TriangularFactors:
    """``x = (F₁ F₂)⁻¹ b`` and its transpose by two native triangular solves of prepared factors.

    ``first`` and ``second`` are ``(matrix, transposed)``: a lower-triangular CSR matrix and whether
    it stands for its transpose (an upper factor).  ``F₁ F₂`` is solved as ``F₁ y = b``,
    ``F₂ x = y``; the transposed system ``(F₁ F₂)ᵀ = F₂ᵀ F₁ᵀ`` as ``F₂ᵀ y = b``, ``F₁ᵀ x = y``.
    """

    def __init__(self, first: tuple[torch.Tensor, bool], second: tuple[torch.Tensor, bool]):
        self.first, self.second = first, second
        # on the CPU with numba: the compiled loops (one preparation per distinct factor, at its
        # first solve: a CG loop in the split form never needs one)
        self.compiled: dict[int, CompiledFactor] = {}
        values = first[0].values()
        self.use_compiled = use_compiled(values)
        self.dtype = values.dtype

    def _solve(self, factor: tuple[torch.Tensor, bool], B: torch.Tensor, flip: bool) -> torch.Tensor:
        S, transposed = factor
        prepared = None
        if self.use_compiled:
            prepared = self.compiled.get(id(S))
            if prepared is None:
                prepared = self.compiled[id(S)] = CompiledFactor(S)
        if prepared is not None and B.device.type == "cpu" and B.dtype == self.dtype:
            return prepared.solve(B, transposed != flip)
        return quiet(lambda: torch.triangular_solve(B, S, upper=False, transpose=transposed != flip).solution)

    def solve(self, B: torch.Tensor, transposed: bool = False) -> torch.Tensor:
        """``(F₁ F₂)⁻¹ B`` (``transposed``: ``(F₁ F₂)⁻ᵀ B``) for a dense ``(N, k)`` ``B``."""
        B = B.contiguous()
        if transposed:
            return self._solve(self.first, self._solve(self.second, B, True), True)
        return self._solve(self.second, self._solve(self.first, B, False), False)
