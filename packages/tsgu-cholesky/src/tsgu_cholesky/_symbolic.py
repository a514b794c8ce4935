"""The pattern of the Cholesky factor from the elimination tree (no numeric factorisation).

For a symmetric pattern in elimination order (CSC, every column holding its rows on both sides
of the diagonal), the elimination tree is found by Liu's algorithm (path compression through
``ancestor``), and the pattern of row ``k`` of ``L`` is the union of the tree paths from every
``i < k`` with ``A[i, k] ≠ 0`` up to ``k`` (the row subtree): walked once to count each column,
once to fill it.  Rows come out sorted in every column (row ``k`` is added at step ``k``), the
diagonal first.  The cost is ``O(nnz(L))`` time and the memory that of the result.  This is the
pattern of ``L`` closed under elimination, with no entry dropped by a numerical cancellation.

Compiled with numba (extra ``[fast]``); without numba the engine takes the pattern from a
factorisation of generic values instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._selinv import kernel_name


def _pattern_loop(ap: Any, ai: Any, n: int) -> Any:  # pragma: no cover - compiled by numba
    parent = np.full(n, -1, np.int64)
    ancestor = np.full(n, -1, np.int64)
    for k in range(n):
        for p in range(ap[k], ap[k + 1]):
            i = ai[p]
            while i != -1 and i < k:
                nxt = ancestor[i]
                ancestor[i] = k
                if nxt == -1:
                    parent[i] = k
                i = nxt
    flag = np.full(n, -1, np.int64)
    count = np.ones(n, np.int64)
    for k in range(n):
        flag[k] = k
        for p in range(ap[k], ap[k + 1]):
            i = ai[p]
            if i < k:
                while flag[i] != k:
                    count[i] += 1
                    flag[i] = k
                    i = parent[i]
    indptr = np.zeros(n + 1, np.int64)
    for j in range(n):
        indptr[j + 1] = indptr[j] + count[j]
    indices = np.empty(indptr[n], np.int64)
    nxt_pos = indptr[:n].copy()
    flag[:] = -1
    for k in range(n):
        flag[k] = k
        indices[nxt_pos[k]] = k
        nxt_pos[k] += 1
        for p in range(ap[k], ap[k + 1]):
            i = ai[p]
            if i < k:
                while flag[i] != k:
                    indices[nxt_pos[i]] = k
                    nxt_pos[i] += 1
                    flag[i] = k
                    i = parent[i]
    return indptr, indices, parent


_compiled: Callable[..., Any] | None = None


def symbolic_pattern(
    a_indptr: np.ndarray, a_indices: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(indptr, indices, parent)`` of ``L`` (CSC) and the elimination tree.

    ``None`` when the compiled kernels are not used (:func:`._selinv.kernel_name`).
    """
    global _compiled
    if kernel_name() != "numba":
        return None
    if _compiled is None:
        import numba

        _compiled = numba.njit(cache=True, nogil=True)(_pattern_loop)
    out = _compiled(a_indptr.astype(np.int64, copy=False), a_indices.astype(np.int64, copy=False), n)
    return out  # type: ignore[no-any-return]
