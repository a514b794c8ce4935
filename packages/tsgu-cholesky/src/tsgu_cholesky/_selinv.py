"""Selected inversion: the entries of ``A⁻¹`` on the pattern of the Cholesky factor (Takahashi).

For ``A = L D Lᵀ`` (``L`` unit lower triangular, in elimination order) the inverse ``Z = A⁻¹``
satisfies ``Z = D⁻¹ L⁻¹ + (I − Lᵀ) Z``.  Read column by column from the last one to the first,
with ``J = {i > j : L[i, j] ≠ 0}``:

    Z[J, j] = −Z[J, J] L[J, j]
    Z[j, j] = 1 / D[j] − L[J, j]ᵀ Z[J, j]

Every entry of ``Z[J, J]`` lies on the pattern of ``L + Lᵀ`` (``J`` is a clique of the filled
graph) and belongs to a later column, so it is known when column ``j`` is reached; no entry
outside the pattern of ``L`` is ever formed.  The cost is about that of the factorisation
(``Σ_j |J|²`` multiply-adds) and the memory that of ``L``.

Two kernels compute the same recurrence on the CSC arrays of ``L`` (sorted rows, diagonal first):

* :func:`selinv_numba` (extra ``[fast]``): a compiled loop.  For each ``k ∈ J`` it walks the
  stored rows of column ``k`` of ``Z`` up to ``max J`` and picks those in ``J`` through a position
  map (``J ∖ {≤ k} ⊂ struct(L[:, k])``), using each lower entry twice (``Z[i, k]`` and
  ``Z[k, i]``).
* :func:`selinv_numpy`: one vectorised step per column (``Z[J, J]`` gathered by a binary search
  in the sorted ``(column, row)`` keys of ``L``).  Exact as well, but its per-column overhead makes
  it the slower choice from a few ten thousand unknowns on.

Both accept real or complex values (the complex-step derivative of the selected inverse runs the
same kernel on a complex factor).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

#: Environment variable that forces one kernel: ``"numba"`` or ``"numpy"`` (default: numba when
#: it is installed).
ENGINE_ENV = "TSGU_CHOLESKY_KERNEL"


def selinv_numpy(
    indptr: np.ndarray, indices: np.ndarray, ldata: np.ndarray, d: np.ndarray, keys: np.ndarray
) -> np.ndarray:
    """Selected inverse on the pattern of ``L`` (CSC order) with NumPy, one step per column.

    ``keys`` are the sorted ``column·n + row`` keys of ``L``'s entries.
    """
    n = d.shape[0]
    z = np.zeros(ldata.shape[0], dtype=np.result_type(ldata, d))
    for j in range(n - 1, -1, -1):
        s, e = int(indptr[j]), int(indptr[j + 1])
        if e - s == 1:
            z[s] = 1.0 / d[j]
            continue
        J = indices[s + 1 : e].astype(np.int64)
        lj = ldata[s + 1 : e]
        hi = np.maximum.outer(J, J)
        lo = np.minimum.outer(J, J)
        zjj = z[np.searchsorted(keys, lo * n + hi)]
        y = zjj @ lj
        z[s + 1 : e] = -y
        z[s] = 1.0 / d[j] + lj @ y
    return z


def _selinv_loop(indptr: Any, indices: Any, ldata: Any, d: Any, z: Any) -> None:  # pragma: no cover
    # Compiled by numba (the coverage tool does not see inside); same recurrence as selinv_numpy.
    n = d.shape[0]
    pos = np.full(n, -1, np.int64)
    y = np.zeros(n, z.dtype)
    for j in range(n - 1, -1, -1):
        s = indptr[j]
        e = indptr[j + 1]
        m = e - s - 1
        for a in range(m):
            pos[indices[s + 1 + a]] = a
            y[a] = 0
        last = indices[e - 1] if m > 0 else -1
        for a in range(m):
            k = indices[s + 1 + a]
            lk = ldata[s + 1 + a]
            ks = indptr[k]
            ke = indptr[k + 1]
            acc = z[ks] * lk  # Z[k, k] L[k, j]
            for t in range(ks + 1, ke):
                i = indices[t]
                if i > last:
                    break
                b = pos[i]
                if b >= 0:  # i ∈ J, i > k: Z[i, k] contributes to rows i and (by symmetry) k
                    y[b] += z[t] * lk
                    acc += z[t] * ldata[s + 1 + b]
            y[a] += acc
        diag = 1.0 / d[j]
        for a in range(m):
            z[s + 1 + a] = -y[a]
            diag += ldata[s + 1 + a] * y[a]
            pos[indices[s + 1 + a]] = -1
        z[s] = diag


_compiled: Callable[..., None] | None = None


def numba_available() -> bool:
    """Whether the compiled kernel can be used (numba importable)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def selinv_numba(indptr: np.ndarray, indices: np.ndarray, ldata: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Selected inverse on the pattern of ``L`` (CSC order), compiled with numba."""
    global _compiled
    if _compiled is None:
        import numba

        _compiled = numba.njit(cache=True, nogil=True)(_selinv_loop)
    z = np.zeros(ldata.shape[0], dtype=np.result_type(ldata, d))
    _compiled(indptr.astype(np.int64), indices.astype(np.int64), ldata, d, z)
    return z


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
    indptr: np.ndarray, indices: np.ndarray, ldata: np.ndarray, d: np.ndarray, keys: np.ndarray
) -> np.ndarray:
    """``Z = (L D Lᵀ)⁻¹`` on the pattern of ``L`` (values in ``L``'s CSC order)."""
    if kernel_name() == "numba":
        return selinv_numba(indptr, indices, ldata, d)
    return selinv_numpy(indptr, indices, ldata, d, keys)
