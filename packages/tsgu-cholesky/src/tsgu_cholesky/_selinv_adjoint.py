"""The adjoint (reverse mode) of the selected inversion, and the elimination closure of a pattern.

For the recurrence of :mod:`tsgu_cholesky._selinv` (``A = L D Lᵀ``, ``L`` unit lower triangular,
``J = {i > j : L[i, j] ≠ 0}``), read from the last column to the first,

    y = Z[J, J] l,   Z[J, j] = −y,   Z[j, j] = 1 / D[j] + lᵀ y        (l = L[J, j])

the adjoint runs the columns the other way, from the first to the last.  Column ``j`` of ``Z`` is
only read by the columns before it, so when the reverse pass reaches ``j`` the adjoints ``Z̄[·, j]``
are complete, and with ``ȳ = Z̄[j, j] l − Z̄[J, j]``:

    D̄[j] = −Z̄[j, j] / D[j]²,   l̄ = Z̄[j, j] y + Z[J, J] ȳ,   Z̄[J, J] += ȳ lᵀ

(``Z[J, J]`` is symmetric and stored once: both ``(a, b)`` and ``(b, a)`` add into the same
lower entry).  Same cost and memory as the forward recurrence; nothing outside the pattern of
``L`` is formed.  Written for the selected inversion of a factor that the user gives (the
precision factor of a distribution), whose pattern must first be closed under elimination
(:func:`closed_lower_pattern`).
"""

from __future__ import annotations

import numpy as np


def closed_lower_pattern(rows: np.ndarray, cols: np.ndarray, N: int) -> tuple[np.ndarray, np.ndarray]:
    """The pattern of ``L`` closed under elimination, in CSC order with the diagonal first.

    ``rows``, ``cols`` are the strictly lower entries (``rows > cols``, each coordinate once) of
    an ``(N, N)`` lower-triangular pattern.  The closure is the pattern of the Cholesky factor of
    any ``L D Lᵀ`` with this pattern (no cancellation): column ``j`` holds its own entries and,
    for every child ``c`` of ``j`` in the elimination tree (``j`` the first row below the diagonal
    of column ``c``), the rest of column ``c``.  Afterwards every column's set below the diagonal
    is a clique of ``L + Lᵀ``, which the selected inversion needs.

    Returns ``indptr`` (``N + 1``) and ``indices`` (int64; each column starts with its diagonal,
    then its rows in increasing order).
    """
    order = np.lexsort((rows, cols))
    r = rows[order].astype(np.int64)
    c = cols[order].astype(np.int64)
    ptr = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(np.bincount(c, minlength=N), out=ptr[1:])
    pending: dict[int, list[np.ndarray]] = {}
    columns: list[np.ndarray] = []
    for j in range(N):
        own = r[ptr[j] : ptr[j + 1]]
        parts = pending.pop(j, None)
        s = np.unique(np.concatenate([own, *parts])) if parts else own
        columns.append(s)
        if s.shape[0] > 1:
            pending.setdefault(int(s[0]), []).append(s[1:])
    counts = np.fromiter((1 + s.shape[0] for s in columns), dtype=np.int64, count=N)
    indptr = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), dtype=np.int64)
    indices[indptr[:-1]] = np.arange(N, dtype=np.int64)
    nonempty = counts > 1
    if nonempty.any():
        indices[np.setdiff1d(np.arange(indptr[-1]), indptr[:-1], assume_unique=True)] = np.concatenate(
            [columns[j] for j in np.flatnonzero(nonempty)]
        )
    return indptr, indices


def selinv_adjoint_numpy(
    indptr: np.ndarray,
    indices: np.ndarray,
    ldata: np.ndarray,
    d: np.ndarray,
    keys: np.ndarray,
    z: np.ndarray,
    zbar: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Adjoints ``(L̄, D̄)`` of ``Z = (L D Lᵀ)⁻¹`` on the pattern of ``L`` for the cotangent ``Z̄``.

    Arrays as for :func:`tsgu_cholesky._selinv.selinv_numpy` (CSC of ``L``, sorted rows, diagonal
    first; ``keys`` the sorted ``column·n + row`` keys); ``z`` the forward's result and ``zbar`` its
    cotangent, both in ``L``'s CSC order.  ``L̄`` at the diagonal positions is zero (the unit
    diagonal is not a variable).
    """
    n = d.shape[0]
    zb = np.array(zbar, dtype=np.result_type(zbar, z), copy=True)
    lbar = np.zeros(ldata.shape[0], dtype=zb.dtype)
    dbar = np.empty(n, dtype=zb.dtype)
    for j in range(n):
        s, e = int(indptr[j]), int(indptr[j + 1])
        zjj = zb[s]
        dbar[j] = -zjj / (d[j] * d[j])
        if e - s == 1:
            continue
        J = indices[s + 1 : e]
        lj = ldata[s + 1 : e]
        pos = np.searchsorted(keys, np.minimum.outer(J, J) * n + np.maximum.outer(J, J))
        y = -z[s + 1 : e]
        yb = zjj * lj - zb[s + 1 : e]
        lbar[s + 1 : e] = zjj * y + z[pos] @ yb
        np.add.at(zb, pos.ravel(), np.multiply.outer(yb, lj).ravel())
    return lbar, dbar
