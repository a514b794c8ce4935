"""The factorisation engine: symbolic analysis once per pattern, numeric LDLᵀ per call (SciPy SuperLU).

Engine (chosen by measurement, see docs/quickstart/cholesky.md): SciPy's SuperLU in symmetric mode
(``diag_pivot_thresh=0``, ``SymmetricMode``) does no pivoting, so on an SPD matrix ``P A Pᵀ = L U``
with ``L`` unit lower triangular and ``U = D Lᵀ``: the LDLᵀ factorisation, ``D = diag(U)``.  How
this differs from calling ``splu`` directly:

* **Symbolic phase, once per pattern** (:class:`Analysis`): SuperLU's minimum-degree ordering on
  ``Aᵀ + A`` (``MMD_AT_PLUS_A``, with its elimination-tree postorder), read from an incomplete
  factorisation that drops every off-diagonal entry (the order depends on the pattern only, and
  so it costs next to no numeric work); the pattern of ``L`` closed under elimination from the
  elimination tree (:mod:`._symbolic`, with numba; without it, from a factorisation of generic
  values — SuperLU's ``L`` of the user's values may leave out entries that cancel exactly, which
  the selected inversion cannot do without); its supernodes; every index map the numeric phase
  and the gradients need (where each stored entry of ``A`` goes in the permuted CSC matrix,
  where it lies in the pattern of ``L``).  Every numeric factorisation then permutes the values
  with one gather and runs SuperLU with the ``NATURAL`` order: no ordering and no index sorting,
  and a first call on a pattern pays one numeric factorisation, like every later one.  The
  analyses of the last few patterns are cached by pattern *content* (compared entry by entry,
  never trusted on a pointer).
* **Checks** SuperLU does not make: ``perm_r == perm_c`` (no off-diagonal pivot was taken) and
  every pivot ``D[j] > 0``; otherwise a ``ValueError`` names the column whose pivot failed.
* **Batches** are one block-diagonal matrix (the ordering never couples items, nor does ``L``).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl

from ._selinv import selected_inverse_on_factor, supernodes
from ._symbolic import symbolic_pattern

#: How many symbolic analyses are kept (least recently used first out).
CACHE_SIZE = 8

_OPTIONS = {"SymmetricMode": True}


class NotPositiveDefiniteError(ValueError):
    """``A`` is not (numerically) symmetric positive definite: a pivot of its factorisation is ≤ 0."""


def _splu(M: sp.csc_matrix, order: str) -> Any:
    return spl.splu(M, permc_spec=order, diag_pivot_thresh=0.0, options=_OPTIONS)


@dataclass
class Analysis:
    """Symbolic analysis of a symmetric pattern (flattened to one ``(N, N)`` block-diagonal matrix).

    Attributes
    ----------
    n, batch, N : int
        Size of one item, the batch (``None``: unbatched) and of the flattened matrix.
    rows, cols : ndarray
        Canonical (row-major, unique) coordinates of the stored entries in the flattened matrix.
    perm : ndarray
        Fill-reducing order: ``perm[i]`` is the elimination step of unknown ``i``.
    order : ndarray
        Its inverse: ``order[k]`` is the unknown eliminated at step ``k``.
    a_indptr, a_indices, a_take : ndarray
        The permuted matrix in CSC form: its values are ``values[a_take]`` (canonical values).
    l_indptr, l_indices, l_keys : ndarray
        Pattern of ``L`` (CSC, sorted rows, diagonal first) and its sorted ``column·N + row`` keys.
    z_pos : ndarray
        For each canonical entry ``(r, c)``: the position of ``(max, min)(perm[r], perm[c])`` in
        the pattern of ``L`` (where ``A⁻¹[r, c]`` is found after selected inversion).
    transpose : ndarray
        Canonical position of the transposed entry ``(c, r)`` of each canonical entry.
    diag : ndarray
        Canonical position of every diagonal entry ``(i, i)``, for ``i`` in ``range(N)``.
    seconds : float
        Time the symbolic phase took (ordering by SuperLU included).
    supernodes : ndarray or None
        First column of every supernode of ``L``, then ``N`` (:func:`._selinv.supernodes`).
    derived : dict
        Further index maps of the pattern, made when a gradient first needs them and kept with
        the analysis (e.g. the row structure of ``L`` for the adjoint of the factorisation).
    """

    n: int
    batch: int | None
    N: int
    rows: np.ndarray
    cols: np.ndarray
    perm: np.ndarray = field(repr=False)
    order: np.ndarray = field(repr=False)
    a_indptr: np.ndarray = field(repr=False)
    a_indices: np.ndarray = field(repr=False)
    a_take: np.ndarray = field(repr=False)
    l_indptr: np.ndarray = field(repr=False)
    l_indices: np.ndarray = field(repr=False)
    l_keys: np.ndarray = field(repr=False)
    z_pos: np.ndarray = field(repr=False)
    transpose: np.ndarray = field(repr=False)
    diag: np.ndarray = field(repr=False)
    seconds: float = 0.0
    supernodes: np.ndarray | None = field(default=None, repr=False)
    derived: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def nnz_L(self) -> int:
        """Stored entries of ``L`` (diagonal included)."""
        return int(self.l_indices.shape[0])

    def permuted(self, values: np.ndarray) -> sp.csc_matrix:
        """The permuted matrix ``P S Pᵀ`` (CSC) holding canonical ``values``."""
        return sp.csc_matrix(
            (values[self.a_take], self.a_indices, self.a_indptr), shape=(self.N, self.N), copy=False
        )

    def same_pattern(self, rows: np.ndarray, cols: np.ndarray, n: int, batch: int | None) -> bool:
        return (
            n == self.n
            and batch == self.batch
            and rows.shape == self.rows.shape
            and bool(np.array_equal(rows, self.rows))
            and bool(np.array_equal(cols, self.cols))
        )


def transposed_positions(rows: np.ndarray, cols: np.ndarray, N: int) -> np.ndarray | None:
    """Canonical position of ``(c, r)`` for each canonical ``(r, c)``; ``None`` if one is missing."""
    keys = rows * N + cols  # canonical order is row-major: keys ascend
    tkeys = cols * N + rows
    pos = np.searchsorted(keys, tkeys)
    pos = np.minimum(pos, max(keys.shape[0] - 1, 0))
    if keys.shape[0] and not np.array_equal(keys[pos], tkeys):
        return None
    return pos


def diagonal_positions(rows: np.ndarray, cols: np.ndarray, N: int) -> tuple[np.ndarray, int | None]:
    """Canonical position of each diagonal entry; and the first missing diagonal (or ``None``)."""
    keys = rows * N + cols
    dk = np.arange(N, dtype=np.int64) * (N + 1)
    pos = np.minimum(np.searchsorted(keys, dk), max(keys.shape[0] - 1, 0))
    ok = keys[pos] == dk if keys.shape[0] else np.zeros(N, dtype=bool)
    if not ok.all():
        return pos, int(np.argmin(ok))
    return pos, None


def build_analysis(
    rows: np.ndarray,
    cols: np.ndarray,
    n: int,
    batch: int | None,
    transpose: np.ndarray,
    diag: np.ndarray,
) -> Analysis:
    """The symbolic analysis of a pattern (minimum-degree order on ``Aᵀ + A``, pattern of ``L``)."""
    import time

    t0 = time.perf_counter()
    N = n * (1 if batch is None else batch)
    # Generic values on the pattern (random off-diagonal weights, a dominant diagonal): the
    # ordering needs a matrix SuperLU can eliminate without trouble, and without numba the
    # pattern of L comes from factoring them (they cancel nothing).
    rng = np.random.default_rng(12345)
    generic: np.ndarray = -(0.5 + rng.random(rows.shape[0], dtype=np.float64))  # type: ignore[assignment]
    generic = 0.5 * (generic + generic[transpose])
    off = rows != cols
    generic = np.where(off, generic, 0.0)
    rowsum = np.bincount(rows, weights=np.abs(generic), minlength=N)
    generic = np.where(off, generic, (rowsum + 1.0)[rows])
    S = sp.csc_matrix(sp.csr_matrix((generic, cols, _indptr(rows, N)), shape=(N, N)))
    perm = _ordering(S)
    order = np.empty_like(perm)
    order[perm] = np.arange(N, dtype=np.int64)
    pr, pc = perm[rows], perm[cols]
    a_take = np.lexsort((pr, pc)).astype(np.int64)
    a_indices = pr[a_take]
    a_indptr = _indptr(pc[a_take], N)
    pattern = symbolic_pattern(a_indptr, a_indices, N)
    if pattern is not None:
        l_indptr, l_indices = pattern[0], pattern[1]
    else:
        # without numba: the pattern of L from a factorisation of the generic values in this order
        # (generic values cancel nothing, so that pattern is the closed one)
        Sp = sp.csc_matrix((generic[a_take], a_indices, a_indptr), shape=(N, N))
        lu = _splu_checked(Sp, "NATURAL", None)
        if not np.array_equal(lu.perm_c, np.arange(N)):
            raise RuntimeError("SuperLU changed the precomputed order; please report this")
        L = lu.L
        L.sort_indices()
        l_indptr = L.indptr.astype(np.int64)
        l_indices = L.indices.astype(np.int64)
    l_keys = _l_keys(l_indptr, l_indices, N)
    hi, lo = np.maximum(pr, pc), np.minimum(pr, pc)
    z_pos = np.searchsorted(l_keys, lo * N + hi)
    analysis = Analysis(
        n=n,
        batch=batch,
        N=N,
        rows=rows,
        cols=cols,
        perm=perm,
        order=order,
        a_indptr=a_indptr,
        a_indices=a_indices,
        a_take=a_take,
        l_indptr=l_indptr,
        l_indices=l_indices,
        l_keys=l_keys,
        z_pos=z_pos,
        transpose=transpose,
        diag=diag,
        supernodes=supernodes(l_indptr, l_indices),
    )
    analysis.seconds = time.perf_counter() - t0
    return analysis


def _ordering(S: sp.csc_matrix) -> np.ndarray:
    """SuperLU's fill-reducing order (minimum degree on ``Aᵀ + A``, then its etree postorder).

    The order depends on the pattern only; it is read from an incomplete factorisation that
    drops every off-diagonal entry (``drop_tol=1``), which costs the ordering and next to no
    numeric work (a complete factorisation would cost as much as the numeric phase).
    """
    try:
        ilu = spl.spilu(
            S,
            drop_tol=1.0,
            fill_factor=1.0,
            permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.0,
            options=_OPTIONS,
        )
        return np.asarray(ilu.perm_c, dtype=np.int64)
    except RuntimeError:  # pragma: no cover - generic values are diagonally dominant
        return np.asarray(_splu_checked(S, "MMD_AT_PLUS_A", None).perm_c, dtype=np.int64)


def _indptr(sorted_major: np.ndarray, N: int) -> np.ndarray:
    counts = np.bincount(sorted_major, minlength=N)
    out = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _l_keys(indptr: np.ndarray, indices: np.ndarray, N: int) -> np.ndarray:
    col = np.repeat(np.arange(N, dtype=np.int64), np.diff(indptr))
    return col * N + indices


def _splu_checked(M: sp.csc_matrix, order: str, analysis: Analysis | None) -> Any:
    try:
        lu = _splu(M, order)
    except RuntimeError as exc:  # "Factor is exactly singular"
        raise NotPositiveDefiniteError(
            f"A is not positive definite: its factorisation met an exactly zero pivot ({exc}); "
            "if A should be SPD, add a diagonal shift A + s·I"
        ) from exc
    if not np.array_equal(lu.perm_r, lu.perm_c):
        raise NotPositiveDefiniteError(
            "A is not positive definite: its factorisation needed an off-diagonal pivot (a zero "
            "pivot on the diagonal); if A should be SPD, add a diagonal shift A + s·I"
        )
    return lu


_cache: collections.OrderedDict[tuple[Any, ...], Analysis] = collections.OrderedDict()
_lock = threading.Lock()


def cached_analysis(rows: np.ndarray, cols: np.ndarray, n: int, batch: int | None) -> Analysis | None:
    """The cached analysis of this pattern (compared entry by entry), or ``None``."""
    key = (n, batch, rows.shape[0])
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit.same_pattern(rows, cols, n, batch):
            _cache.move_to_end(key)
            return hit
    return None


def remember(analysis: Analysis) -> None:
    key = (analysis.n, analysis.batch, analysis.rows.shape[0])
    with _lock:
        _cache[key] = analysis
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


def clear_cache() -> None:
    """Forget every cached symbolic analysis."""
    with _lock:
        _cache.clear()


class Numeric:
    """The numeric LDLᵀ factor of one set of values on an analysed pattern.

    ``values`` are canonical float64 (or complex128) values of the symmetric matrix ``S``.
    The selected inverse is computed at most once (:meth:`selinv`) and shared by every gradient.
    """

    def __init__(self, analysis: Analysis, values: np.ndarray) -> None:
        self.analysis = analysis
        lu = _splu_checked(analysis.permuted(values), "NATURAL", analysis)
        if not np.array_equal(lu.perm_c, np.arange(analysis.N)):
            # SuperLU re-ordered an already postordered matrix: never seen; refuse to guess
            raise RuntimeError("SuperLU changed the precomputed order; please report this")
        self.lu = lu
        L = lu.L
        L.sort_indices()
        if np.array_equal(L.indptr, analysis.l_indptr) and np.array_equal(L.indices, analysis.l_indices):
            self.l_data = L.data
        else:
            # SuperLU left out entries that cancelled numerically: put its values into the
            # (closed) analysed pattern, zeros elsewhere
            keys = _l_keys(L.indptr.astype(np.int64), L.indices.astype(np.int64), analysis.N)
            pos = np.minimum(np.searchsorted(analysis.l_keys, keys), analysis.nnz_L - 1)
            if not np.array_equal(analysis.l_keys[pos], keys):
                raise RuntimeError(
                    "SuperLU's L has entries outside the symbolic analysis; please report this"
                )
            self.l_data = np.zeros(analysis.nnz_L, dtype=L.data.dtype)
            self.l_data[pos] = L.data
        self.d = lu.U.diagonal()
        self.complex = np.iscomplexobj(values)
        self._z: np.ndarray | None = None
        if not self.complex:
            self._check_pivots()

    def _check_pivots(self) -> None:
        d = self.d
        bad = ~(d > 0) | ~np.isfinite(d)
        if bad.any():
            step = int(np.argmax(bad))
            a = self.analysis
            unknown = int(a.order[step])
            where = f"column {unknown % a.n}" + (
                f" of batch item {unknown // a.n}" if a.batch is not None else ""
            )
            raise NotPositiveDefiniteError(
                f"A is not positive definite: the pivot of {where} is {d[step]:.6g} (must be > 0; "
                f"elimination step {step} of {a.N} in the fill-reducing order); if A should be SPD "
                "it may be ill-conditioned: add a diagonal shift A + s·I"
            )

    def logdet(self) -> np.ndarray:
        """``log det`` of every item, shape ``(batch or 1,)``."""
        a = self.analysis
        items = 1 if a.batch is None else a.batch
        item_of_step = a.order // a.n
        return np.bincount(item_of_step, weights=np.log(self.d), minlength=items)

    def solve(self, B: np.ndarray) -> np.ndarray:
        """``S⁻¹ B`` for ``B`` of shape ``(N, p)`` (original order)."""
        perm = self.analysis.perm
        Bp = np.empty_like(B, dtype=np.result_type(B, self.d))
        Bp[perm] = B
        Xp = self.lu.solve(np.ascontiguousarray(Bp))
        return Xp[perm]

    def selinv(self) -> np.ndarray:
        """``S⁻¹`` on the pattern of ``L`` (CSC order), computed once."""
        if self._z is None:
            a = self.analysis
            self._z = selected_inverse_on_factor(
                a.l_indptr, a.l_indices, self.l_data, self.d, a.l_keys, a.supernodes
            )
        return self._z

    def inverse_on_pattern(self) -> np.ndarray:
        """``S⁻¹`` at the canonical entries of the pattern."""
        return self.selinv()[self.analysis.z_pos]

    def tangent_inverse_on_pattern(self, values: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """``d/dt (S + t E)⁻¹`` at the canonical entries, for a symmetric direction ``E``.

        Complex-step differentiation: ``Im((S + i h E)⁻¹) / h`` with ``h`` far below rounding of
        ``S`` (``1e-20`` relative), exact to rounding since no subtraction cancels (every step of
        the factorisation and of the selected inversion is analytic: there is no pivoting).
        """
        scale_e = float(np.abs(direction).max()) if direction.size else 0.0
        if scale_e == 0.0:
            return np.zeros(values.shape[0])
        h = 1e-20 * float(np.abs(values).max()) / scale_e
        shifted = Numeric(self.analysis, values + 1j * h * direction)
        return shifted.inverse_on_pattern().imag / h
