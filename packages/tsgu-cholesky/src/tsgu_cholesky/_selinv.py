"""Selected inversion: the entries of ``A⁻¹`` on the pattern of the Cholesky factor (Takahashi).

For ``A = L D Lᵀ`` (``L`` unit lower triangular, in elimination order) the inverse ``Z = A⁻¹``
satisfies ``Z = D⁻¹ L⁻¹ + (I − Lᵀ) Z``.  Read column by column from the last one to the first,
with ``J = {i > j : L[i, j] ≠ 0}``:

    Z[J, j] = −Z[J, J] L[J, j]
    Z[j, j] = 1 / D[j] − L[J, j]ᵀ Z[J, j]

Every entry of ``Z[J, J]`` lies on the pattern of ``L + Lᵀ`` (``J`` is a clique of the filled
graph) and belongs to a later column, so it is known when column ``j`` is reached; no entry
outside the pattern of ``L`` is ever formed.

**Supernodes.**  Consecutive columns ``K = f..l−1`` whose structures nest exactly
(``struct L[:, j] = {j} ∪ struct L[:, j+1]``) form a supernode: a dense unit lower triangular
diagonal block ``L_KK`` and a dense block ``L_RK`` on the rows ``R`` below it.  The recurrence of
its ``|K|`` columns, taken together, is (with ``L̂ = L_RK L_KK⁻¹``)

    Z_RK = −Z_RR L̂
    Z_KK = L_KK⁻ᵀ D_K⁻¹ L_KK⁻¹ − L̂ᵀ Z_RK

three dense matrix products (BLAS) on blocks gathered from the pattern; ``Z_RR`` is a clique of
later columns.  The work is that of the column recurrence (``Σ_j |J|²`` multiply-adds), done in
dense blocks; the memory is ``Z`` on the pattern of ``L`` plus the blocks of the largest
supernode (``O(|R|² + |K|·(|K| + |R|))`` values; ``R`` and ``K`` being cliques of ``L``, that
is ``O(nnz(L))``: ≤ 23 MiB beside 107 MiB for ``Z`` at 640², ≤ 75 MiB beside 44 MiB at 30³).

Two kernels compute the same recurrence on the CSC arrays of ``L`` (sorted rows, diagonal first):

* :func:`selinv_numba` (extra ``[fast]``): one compiled loop over the supernodes; ``Z_RR`` read
  through the supernodal structure (a binary search per row of ``R`` and ancestor supernode,
  which also checks that the pattern is closed under elimination) and multiplied on the fly by
  vectorised loops; the products of large supernodes (from :data:`BLAS_FROM` multiply-adds on)
  by BLAS, held to one thread by threadpoolctl (without it: loops only).
* :func:`selinv_numpy`: a Python loop over the supernodes with NumPy products (``Z_RR`` gathered
  by a binary search in the sorted ``(column, row)`` keys of ``L``; narrow supernodes column by
  column).  Exact as well, slower (the per-supernode overhead).

Both accept real or complex values (the complex-step derivative of the selected inverse runs the
same kernel on a complex factor).  :func:`selinv_columns` is the plain column recurrence (a
reference for the tests).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

#: Environment variable that forces one kernel: ``"numba"`` or ``"numpy"`` (default: numba when
#: it is installed).
ENGINE_ENV = "TSGU_CHOLESKY_KERNEL"

_NOT_CLOSED = (
    "the pattern of L is not closed under elimination (an entry of the filled graph is missing): "
    "the selected inversion needs the symbolic pattern of the factor"
)


# ------------------------------------------------------------------------------------------------
# supernode partition


def supernodes_numpy(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """First column of every supernode, then ``n`` (vectorised; temporaries of ``nnz(L)`` size).

    Column ``j + 1`` continues the supernode of ``j`` when ``struct L[:, j] = {j} ∪ struct
    L[:, j+1]`` (checked entry by entry, not inferred from counts).
    """
    n = indptr.shape[0] - 1
    if n <= 1:
        return np.arange(n + 1, dtype=np.int64)
    indptr = indptr.astype(np.int64, copy=False)
    cnt = np.diff(indptr)
    cand = (cnt[:-1] == cnt[1:] + 1) & (cnt[:-1] >= 2)
    cj = np.flatnonzero(cand)
    if cj.size:
        first = indices[indptr[cj] + 1]
        keep = first == cj + 1
        cand[cj[~keep]] = False
        cj = cj[keep]
    if cj.size:
        lens = cnt[cj] - 2
        total = int(lens.sum())
        if total:
            owner = np.repeat(np.arange(cj.size), lens)
            off = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
            a = indices[indptr[cj][owner] + 2 + off]
            b = indices[indptr[cj + 1][owner] + 1 + off]
            bad = np.bincount(owner[a != b], minlength=cj.size) > 0
            cand[cj[bad]] = False
    starts = np.concatenate(([0], np.flatnonzero(~cand) + 1)).astype(np.int64)
    return np.append(starts, n)


def _supernodes_loop(indptr: Any, indices: Any) -> Any:  # pragma: no cover - compiled by numba
    n = indptr.shape[0] - 1
    sup = np.empty(n + 1, np.int64)
    ns = 0
    j = 0
    while j < n:
        sup[ns] = j
        ns += 1
        k = j
        while k + 1 < n:
            s = indptr[k]
            e = indptr[k + 1]
            e2 = indptr[k + 2]
            if e - s != e2 - e + 1 or e - s < 2 or indices[s + 1] != k + 1:
                break
            same = True
            for t in range(e - s - 2):
                if indices[s + 2 + t] != indices[e + 1 + t]:
                    same = False
                    break
            if not same:
                break
            k += 1
        j = k + 1
    sup[ns] = n
    return sup[: ns + 1].copy()


# ------------------------------------------------------------------------------------------------
# NumPy kernels


def selinv_columns(
    indptr: np.ndarray, indices: np.ndarray, ldata: np.ndarray, d: np.ndarray, keys: np.ndarray
) -> np.ndarray:
    """The column recurrence with NumPy, one step per column (reference; slow for large ``n``)."""
    z = np.zeros(ldata.shape[0], dtype=np.result_type(ldata, d))
    for j in range(d.shape[0] - 1, -1, -1):
        _column_step(indptr, indices, ldata, d, keys, z, j)
    return z


def _column_step(
    indptr: np.ndarray,
    indices: np.ndarray,
    ldata: np.ndarray,
    d: np.ndarray,
    keys: np.ndarray,
    z: np.ndarray,
    j: int,
) -> None:
    n = d.shape[0]
    s, e = int(indptr[j]), int(indptr[j + 1])
    if e - s == 1:
        z[s] = 1.0 / d[j]
        return
    J = indices[s + 1 : e].astype(np.int64)
    lj = ldata[s + 1 : e]
    hi = np.maximum.outer(J, J)
    lo = np.minimum.outer(J, J)
    zjj = z[_find(keys, lo * n + hi)]
    y = zjj @ lj
    z[s + 1 : e] = -y
    z[s] = 1.0 / d[j] + lj @ y


def _find(keys: np.ndarray, want: np.ndarray) -> np.ndarray:
    pos = np.minimum(np.searchsorted(keys, want), keys.shape[0] - 1)
    if not np.array_equal(keys[pos], want):
        raise ValueError(_NOT_CLOSED)
    return pos


def _unit_lower_inverse(T: np.ndarray) -> np.ndarray:
    w = T.shape[0]
    if w == 1:
        return np.ones((1, 1), dtype=T.dtype)
    from scipy.linalg import solve_triangular

    return np.asarray(solve_triangular(T, np.eye(w, dtype=T.dtype), lower=True, unit_diagonal=True))


def selinv_numpy(
    indptr: np.ndarray,
    indices: np.ndarray,
    ldata: np.ndarray,
    d: np.ndarray,
    keys: np.ndarray,
    sup: np.ndarray | None = None,
) -> np.ndarray:
    """Selected inverse on the pattern of ``L`` (CSC order): supernodal, NumPy products.

    ``keys`` are the sorted ``column·n + row`` keys of ``L``'s entries; ``sup`` the supernode
    partition (:func:`supernodes_numpy`), computed when not given.
    """
    n = d.shape[0]
    indptr = indptr.astype(np.int64, copy=False)
    indices = indices.astype(np.int64, copy=False)
    if sup is None:
        sup = supernodes_numpy(indptr, indices)
    z = np.zeros(ldata.shape[0], dtype=np.result_type(ldata, d))
    for s in range(sup.shape[0] - 2, -1, -1):
        f, l = int(sup[s]), int(sup[s + 1])
        w = l - f
        if w < NUMPY_BLOCK_FROM:  # narrow: the column steps cost less Python than the block step
            for j in range(l - 1, f - 1, -1):
                _column_step(indptr, indices, ldata, d, keys, z, j)
            continue
        p0 = int(indptr[f])
        r = int(indptr[f + 1]) - p0 - w
        starts = indptr[f:l]  # column f + i starts here: rows f + i .. l − 1, then R
        i = np.arange(w)
        q, c = np.tril_indices(w, -1)  # strictly lower part of the diagonal block
        kk_pos = starts[c] + (q - c)
        T = np.eye(w, dtype=ldata.dtype)
        T[q, c] = ldata[kk_pos]
        Linv = _unit_lower_inverse(T)
        Zkk = (Linv.T / d[f:l]) @ Linv
        if r:
            R = indices[p0 + w : p0 + w + r]
            rk_pos = starts[None, :] + (w - i)[None, :] + np.arange(r)[:, None]
            Lhat = ldata[rk_pos] @ Linv
            a, b = np.tril_indices(r)
            zab = z[_find(keys, R[b] * n + R[a])]
            Zrr = np.empty((r, r), dtype=z.dtype)
            Zrr[a, b] = zab
            Zrr[b, a] = zab
            Zrk = -(Zrr @ Lhat)
            z[rk_pos] = Zrk
            Zkk -= Lhat.T @ Zrk
        z[starts] = np.diagonal(Zkk)
        z[kk_pos] = Zkk[q, c]
    return z


# ------------------------------------------------------------------------------------------------
# numba kernel


def _selinv_super_loop(
    indptr: Any, indices: Any, ldata: Any, d: Any, sup: Any, z: Any, blas_from: int
) -> int:  # pragma: no cover
    # Compiled by numba (the coverage tool does not see inside); same recurrence as selinv_numpy.
    # Every inner loop runs over contiguous memory (vectorised by the compiler); products of at
    # least ``blas_from`` multiply-adds go to BLAS (np.dot) on a gathered dense Z_RR instead.
    # Returns 0, or −1 when an entry of Z_RR is missing from the pattern (not closed).
    n = d.shape[0]
    ns = sup.shape[0] - 1
    col2sup = np.empty(n, np.int64)
    for s in range(ns):
        for j in range(sup[s], sup[s + 1]):
            col2sup[j] = s
    for s in range(ns - 1, -1, -1):
        f = sup[s]
        l = sup[s + 1]
        w = l - f
        p0 = indptr[f]
        r = indptr[f + 1] - p0 - w
        big = w * w * w >= blas_from
        # Linv = L_KK⁻¹ (row-major; unit lower triangular): row q = e_q − Σ_{m<q} L[q, m] row m,
        # by blocks of NB rows when large (the part left of the diagonal block by BLAS)
        Linv = np.zeros((w, w), z.dtype)
        nb = NB if big else w
        for i0 in range(0, w, nb):
            i1 = min(i0 + nb, w)
            for q in range(i0, i1):
                Linv[q, q] = 1.0
                for m in range(i0, q):
                    lqm = ldata[indptr[f + m] + (q - m)]
                    for c in range(i0, m + 1):
                        Linv[q, c] -= lqm * Linv[m, c]
            if i0 > 0:
                # Linv[I, :i0] = −Linv[I, I] · L[I, :i0] · Linv[:i0, :i0]
                Lb = np.empty((i1 - i0, i0), z.dtype)
                for q in range(i0, i1):
                    for m in range(i0):
                        Lb[q - i0, m] = ldata[indptr[f + m] + (q - m)]
                T = np.dot(Lb, Linv[:i0, :i0].copy())
                Linv[i0:i1, :i0] = -np.dot(Linv[i0:i1, i0:i1].copy(), T)
        # Zkk (lower part used) = Linv^T D^-1 Linv = Σ_m Linv[m, :]^T Linv[m, :] / d[m]
        Zkk = np.zeros((w, w), z.dtype)
        if big:  # by block columns J: Zkk[j0:, J] = Linv[j0:, j0:]ᵀ D⁻¹ Linv[j0:, J]
            for j0 in range(0, w, NB):
                j1 = min(j0 + NB, w)
                DL = np.empty((w - j0, j1 - j0), z.dtype)
                for m in range(j0, w):
                    dm = 1.0 / d[f + m]
                    for c in range(j0, j1):
                        DL[m - j0, c - j0] = Linv[m, c] * dm
                Zkk[j0:, j0:j1] = np.dot(Linv[j0:, j0:].T.copy(), DL)
        else:
            for m in range(w):
                dm = 1.0 / d[f + m]
                for q in range(m + 1):
                    v = Linv[m, q] * dm
                    for c in range(q + 1):
                        Zkk[q, c] += v * Linv[m, c]
        if r > 0:
            R = indices[p0 + w : p0 + w + r]
            # Lhat = L_RK Linv (r × w, row-major); L_RK[a, m] = ldata[indptr[f + m] + (w − m) + a]
            if r * w * w >= blas_from:
                Lrk = np.empty((r, w), z.dtype)
                for m in range(w):
                    base = indptr[f + m] + (w - m)
                    for a in range(r):
                        Lrk[a, m] = ldata[base + a]
                Lhat = np.dot(Lrk, Linv)
            else:
                Lhat = np.zeros((r, w), z.dtype)
                for m in range(w):
                    base = indptr[f + m] + (w - m)
                    for a in range(r):
                        lv = ldata[base + a]
                        for c in range(m + 1):
                            Lhat[a, c] += lv * Linv[m, c]
            # Y = Z_RR Lhat, Z_RR read from z through the supernodes the rows of R belong to
            Y = np.zeros((r, w), z.dtype)
            dense = r * r * w >= blas_from
            U = np.zeros((r if dense else 0, r if dense else 0), z.dtype)  # upper triangle of Z_RR
            rel = np.empty(r, np.int64)
            b = 0
            while b < r:
                c0 = R[b]
                t = col2sup[c0]
                lt = sup[t + 1]
                b2 = b
                while b2 < r and R[b2] < lt:
                    b2 += 1
                # rows R[b2:] lie in the tail of column c0 (the rows below supernode t)
                tail = indptr[c0] + (lt - c0)
                lo = tail
                hi = indptr[c0 + 1]
                for a in range(b2, r):
                    x = R[a]
                    h = hi
                    while lo < h:  # binary search, lower bound moves up (R is sorted)
                        mid = (lo + h) // 2
                        if indices[mid] < x:
                            lo = mid + 1
                        else:
                            h = mid
                    if lo == hi or indices[lo] != x:
                        return -1
                    rel[a] = lo - tail
                for bb in range(b, b2):
                    cb = R[bb]
                    base = indptr[cb]
                    base2 = base + (lt - cb)
                    if dense:  # row bb of the upper triangle: contiguous writes
                        for a in range(bb, b2):
                            U[bb, a] = z[base + (R[a] - cb)]
                        for a in range(b2, r):
                            U[bb, a] = z[base2 + rel[a]]
                        continue
                    # diagonal entry, then Z[R[a], R[bb]] for a > bb used twice (symmetry)
                    v = z[base]
                    for c in range(w):
                        Y[bb, c] += v * Lhat[bb, c]
                    for a in range(bb + 1, b2):
                        v = z[base + (R[a] - cb)]
                        for c in range(w):
                            Y[bb, c] += v * Lhat[a, c]
                            Y[a, c] += v * Lhat[bb, c]
                    for a in range(b2, r):
                        v = z[base2 + rel[a]]
                        for c in range(w):
                            Y[bb, c] += v * Lhat[a, c]
                            Y[a, c] += v * Lhat[bb, c]
                b = b2
            if dense:  # Z_RR = U + Uᵀ − diag(U)
                Y = np.dot(U, Lhat) + np.dot(U.T, Lhat)
                for a in range(r):
                    for c in range(w):
                        Y[a, c] -= U[a, a] * Lhat[a, c]
            # Zkk += Lhat^T Y (lower part); Z_RK = −Y
            if r * w * w >= blas_from:
                Zkk += np.dot(Lhat.T.copy(), Y)
            else:
                for a in range(r):
                    for q in range(w):
                        v = Lhat[a, q]
                        for c in range(q + 1):
                            Zkk[q, c] += v * Y[a, c]
            for c in range(w):
                base = indptr[f + c] + (w - c)
                for a in range(r):
                    z[base + a] = -Y[a, c]
        for c in range(w):
            base = indptr[f + c]
            for q in range(c, w):
                z[base + (q - c)] = Zkk[q, c]
    return 0


#: Products of at least this many multiply-adds go to BLAS (``np.dot``) in the compiled kernel,
#: smaller ones are vectorised loops.  BLAS is used only when threadpoolctl (in the ``[fast]``
#: extra) can hold it to one thread for the call: measured on a shared 2-core host, a threaded
#: BLAS waiting on its descheduled threads made the kernel 2-5× slower than the loops, a
#: one-thread BLAS from 10⁶ multiply-adds on 1.5-2.5× faster than the loops (2-D 640², 3-D 30³).
BLAS_FROM = 10**6

#: Supernodes narrower than this are done column by column by the NumPy kernel.
NUMPY_BLOCK_FROM = 4

#: Block size of the blocked triangular inverse and ``L_KK⁻ᵀ D⁻¹ L_KK⁻¹`` (BLAS path).
NB = 96

_compiled: dict[str, Callable[..., Any]] = {}


def _jit(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if name not in _compiled:
        import numba

        _compiled[name] = numba.njit(cache=True, nogil=True)(fn)
    return _compiled[name]


def numba_available() -> bool:
    """Whether the compiled kernel can be used (numba importable)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def supernodes(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Supernode partition of a CSC pattern of ``L`` (compiled with the numba kernel)."""
    if kernel_name() == "numba":
        fn = _jit("supernodes", _supernodes_loop)
        return fn(indptr.astype(np.int64, copy=False), indices.astype(np.int64, copy=False))  # type: ignore[no-any-return]
    return supernodes_numpy(indptr, indices)


def selinv_numba(
    indptr: np.ndarray, indices: np.ndarray, ldata: np.ndarray, d: np.ndarray, sup: np.ndarray | None = None
) -> np.ndarray:
    """Selected inverse on the pattern of ``L`` (CSC order): supernodal, compiled with numba."""
    indptr = indptr.astype(np.int64, copy=False)
    indices = indices.astype(np.int64, copy=False)
    if sup is None:
        sup = _jit("supernodes", _supernodes_loop)(indptr, indices)
    dtype = np.result_type(ldata, d)
    z = np.zeros(ldata.shape[0], dtype=dtype)
    kernel = _jit("selinv", _selinv_super_loop)
    args = (indptr, indices, np.ascontiguousarray(ldata, dtype), np.ascontiguousarray(d, dtype), sup, z)
    if _largest_product(indptr, sup) < BLAS_FROM:
        status = kernel(*args, 2**62)
    else:
        with _one_blas_thread() as held:
            status = kernel(*args, BLAS_FROM if held else 2**62)
    if status != 0:
        raise ValueError(_NOT_CLOSED)
    return z


def _largest_product(indptr: np.ndarray, sup: np.ndarray) -> float:
    """Multiply-adds of the largest product of one supernode (``max(w³, r²w)``)."""
    if sup.shape[0] < 2:
        return 0.0
    f = sup[:-1]
    w = np.diff(sup).astype(np.float64)
    r = (indptr[f + 1] - indptr[f]).astype(np.float64) - w
    return float(np.maximum(w**3, r * r * w).max())


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limits: Any = None


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[bool]:
    """Hold BLAS to one thread while any kernel call is inside (threadpoolctl).

    Yields whether it could (``False`` without threadpoolctl).  Counted, so that overlapping
    calls from several threads restore the user's setting once, when the last one leaves.
    """
    global _blas_users, _blas_limits
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield False
        return
    with _blas_lock:
        if _blas_users == 0:
            _blas_limits = threadpool_limits(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield True
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limits.restore_original_limits()
                _blas_limits = None


def kernel_name() -> str:
    """The kernel that :func:`selected_inverse_on_factor` uses: ``"numba"`` or ``"numpy"``."""
    forced = os.environ.get(ENGINE_ENV, "").strip().lower()
    if forced in ("numba", "numpy"):
        if forced == "numba" and not numba_available():
            raise ImportError(
                f"{ENGINE_ENV}=numba, but numba is not installed: pip install 'tsgu-cholesky[fast]'"
            )
        return forced
    if forced:
        raise ValueError(f"{ENGINE_ENV} must be 'numba' or 'numpy', got {forced!r}")
    return "numba" if numba_available() else "numpy"


def selected_inverse_on_factor(
    indptr: np.ndarray,
    indices: np.ndarray,
    ldata: np.ndarray,
    d: np.ndarray,
    keys: np.ndarray,
    sup: np.ndarray | None = None,
) -> np.ndarray:
    """``Z = (L D Lᵀ)⁻¹`` on the pattern of ``L`` (values in ``L``'s CSC order).

    The pattern must be closed under elimination (the symbolic pattern of the factor), with
    sorted rows and the diagonal first in every column; a missing entry raises ``ValueError``.
    ``sup`` (optional) is the supernode partition (:func:`supernodes`).
    """
    n = d.shape[0]
    if n and not np.array_equal(indices[indptr[:-1]], np.arange(n)):
        raise ValueError("the pattern of L must store the diagonal first in every column")
    if kernel_name() == "numba":
        return selinv_numba(indptr, indices, ldata, d, sup)
    return selinv_numpy(indptr, indices, ldata, d, keys, sup)
