"""Reverse mode of the sparse Cholesky factorisation, and the gradient of a sample ``C⁻ᵀ ε``.

The factor is ``C = L D^½`` (lower triangular, positive diagonal) of the permuted matrix
``A = P S Pᵀ = C Cᵀ``, stored in CSC order on the analysed (closed) pattern of ``L``: sorted rows,
the diagonal first in every column.  The factorisation, column by column (left-looking),

    c = A[j:, j] − Σ_{k<j, C[j,k]≠0} C[j:, k] C[j, k],   C[j, j] = √c₀,   C[j+1:, j] = c[1:] / C[j, j]

(every ``c`` restricted to the structure of column ``j``: the pattern is closed under
elimination, so the rows ``i ≥ j`` of a column ``k`` with ``C[j, k] ≠ 0`` all lie in it).  Its
reverse mode maps a cotangent ``C̄`` on the pattern of ``C`` to ``Ā`` on the same (lower) pattern,
the gradient with respect to the lower triangle that the factorisation reads.  Column ``j`` of
``C`` is only read by the columns after it, so running ``j`` from the last column to the first,
``C̄[:, j]`` is complete when ``j`` is reached; with ``d = C[j, j]``:

    c̄[1:] = C̄[j+1:, j] / d,   d̄ = C̄[j, j] − Σ_{i>j} C̄[i, j] C[i, j] / d,   c̄₀ = d̄ / (2d)
    Ā[j:, j] = c̄
    for k < j with C[j, k] ≠ 0:   C̄[i, k] −= c̄_i C[j, k]  (i ≥ j),   C̄[j, k] −= Σ_{i≥j} c̄_i C[i, k]

(the diagonal term counts twice in ``C̄[j, k]``: ``∂c₀/∂C[j, k] = −2 C[j, k]``).  The work is that
of the factorisation (each ``(j, k)`` pair touches the part of column ``k`` below row ``j``), the
memory the pattern of ``C``, its row structure and one dense work vector of length ``N`` (a
scatter of ``c̄`` by row).

For a sample ``W = C⁻ᵀ E`` (columns of ``E`` independent draws) and an upstream gradient ``Ḡ``
of ``W``: ``V = C⁻¹ Ḡ`` (the gradient of ``E``) and ``C̄ = −(W Vᵀ)`` on the pattern of ``C`` (a
sampled product; never the ``N × N`` outer product).

Two kernels compute the same thing (the triangular solves are SciPy's, shared by both):

* numba (extra ``[fast]``): the sampled product and the reverse sweep as compiled loops;
* NumPy: the sampled product in chunks, the reverse sweep as one vectorised step per column
  (a Python loop over the ``N`` columns; correct, slower).

The kernel is chosen as for the selected inversion (:func:`tsgu_cholesky._selinv.kernel_name`,
environment variable ``TSGU_CHOLESKY_KERNEL``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl

from ._selinv import _jit, kernel_name

#: The NumPy sampled product works on chunks of at most this many ``(entry, column)`` products.
SAMPLED_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class FactorStructure:
    """Index maps of the pattern of ``C`` that the adjoint needs (once per analysed pattern).

    Attributes
    ----------
    col : ndarray
        Column of every stored entry (CSC order).
    rowptr, rowpos, rowcol : ndarray
        Row structure of the strictly lower part: the entries ``C[j, k]`` (``k < j``) of row ``j``
        are at CSC positions ``rowpos[rowptr[j]:rowptr[j+1]]``, in columns ``rowcol[…]``.
    """

    col: np.ndarray
    rowptr: np.ndarray
    rowpos: np.ndarray
    rowcol: np.ndarray


def factor_structure(indptr: np.ndarray, indices: np.ndarray) -> FactorStructure:
    """The row structure of a CSC lower pattern (diagonal first in every column)."""
    N = indptr.shape[0] - 1
    indptr = indptr.astype(np.int64, copy=False)
    indices = indices.astype(np.int64, copy=False)
    col = np.repeat(np.arange(N, dtype=np.int64), np.diff(indptr))
    strict = np.flatnonzero(indices != col)
    order = np.lexsort((col[strict], indices[strict]))  # by row, then column
    rowpos = strict[order]
    rowptr = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(np.bincount(indices[strict], minlength=N), out=rowptr[1:])
    return FactorStructure(col=col, rowptr=rowptr, rowpos=rowpos, rowcol=col[rowpos])


# ------------------------------------------------------------------------------------------------
# triangular solves with C = L D^½ (SciPy's compiled sparse triangular solve on the unit L)


def _unit_lower(indptr: np.ndarray, indices: np.ndarray, ldata: np.ndarray) -> sp.csc_array:
    N = indptr.shape[0] - 1
    return sp.csc_array((ldata, indices, indptr), shape=(N, N))


def lower_solve(
    indptr: np.ndarray, indices: np.ndarray, ldata: np.ndarray, d: np.ndarray, B: np.ndarray
) -> np.ndarray:
    """``C⁻¹ B = D^-½ L⁻¹ B`` for ``B`` ``(N, p)`` (``L`` unit lower, CSC)."""
    L = _unit_lower(indptr, indices, ldata)
    Y = spl.spsolve_triangular(L, B, lower=True, unit_diagonal=True)
    return np.asarray(Y).reshape(B.shape) / np.sqrt(d)[:, None]


def lower_transpose_solve(
    indptr: np.ndarray, indices: np.ndarray, ldata: np.ndarray, d: np.ndarray, B: np.ndarray
) -> np.ndarray:
    """``C⁻ᵀ B = L⁻ᵀ D^-½ B`` for ``B`` ``(N, p)``."""
    Lt = _unit_lower(indptr, indices, ldata).T.tocsr()  # Lᵀ as CSR: SciPy solves with L, transposed
    Y = spl.spsolve_triangular(Lt, B / np.sqrt(d)[:, None], lower=False, unit_diagonal=True)
    return np.asarray(Y).reshape(B.shape)


# ------------------------------------------------------------------------------------------------
# NumPy kernels


def sampled_numpy(
    indptr: np.ndarray, indices: np.ndarray, col: np.ndarray, W: np.ndarray, V: np.ndarray
) -> np.ndarray:
    """``Σ_m W[i, m] V[j, m]`` at every entry ``(i, j)`` of the pattern (CSC order), in chunks."""
    nnz = indices.shape[0]
    p = max(W.shape[1], 1)
    out = np.empty(nnz, dtype=np.result_type(W, V))
    step = max(1, SAMPLED_CHUNK_ELEMENTS // p)
    for s in range(0, nnz, step):
        e = min(s + step, nnz)
        out[s:e] = np.einsum("ij,ij->i", W[indices[s:e]], V[col[s:e]])
    return out


def cholesky_adjoint_numpy(
    indptr: np.ndarray, indices: np.ndarray, cdata: np.ndarray, cbar: np.ndarray, st: FactorStructure
) -> np.ndarray:
    """``Ā`` on the pattern of ``C`` (CSC order) from ``C̄`` (the reverse sweep, one NumPy step per column)."""
    N = indptr.shape[0] - 1
    cb = np.array(cbar, dtype=np.float64, copy=True)
    abar = np.empty_like(cb)
    work = np.zeros(N, dtype=np.float64)
    for j in range(N - 1, -1, -1):
        s, e = int(indptr[j]), int(indptr[j + 1])
        d = cdata[s]
        below = cb[s + 1 : e] / d
        c0 = (cb[s] - below @ cdata[s + 1 : e]) / (2.0 * d)
        abar[s] = c0
        abar[s + 1 : e] = below
        t0, t1 = int(st.rowptr[j]), int(st.rowptr[j + 1])
        if t0 == t1:
            continue
        work[j] = c0
        work[indices[s + 1 : e]] = below
        q = st.rowpos[t0:t1]  # positions of C[j, k], k < j
        lens = indptr[st.rowcol[t0:t1] + 1] - q  # rows j.. of column k
        seg = np.repeat(np.arange(t1 - t0), lens)
        starts = np.cumsum(lens) - lens
        pos = q[seg] + (np.arange(int(lens.sum())) - starts[seg])
        w = work[indices[pos]]
        cb[pos] -= w * cdata[q][seg]
        cb[q] -= np.bincount(seg, weights=w * cdata[pos], minlength=t1 - t0)
    return abar


# ------------------------------------------------------------------------------------------------
# numba kernels


def _sampled_loop(indptr: Any, indices: Any, W: Any, V: Any, out: Any) -> None:  # pragma: no cover
    # Compiled by numba; W, V row-major (N, p): the inner loop runs over contiguous memory.
    N = indptr.shape[0] - 1
    p = W.shape[1]
    for j in range(N):
        for q in range(indptr[j], indptr[j + 1]):
            i = indices[q]
            acc = 0.0
            for m in range(p):
                acc += W[i, m] * V[j, m]
            out[q] = acc


def _adjoint_loop(
    indptr: Any, indices: Any, cdata: Any, cb: Any, rowptr: Any, rowpos: Any, rowcol: Any, abar: Any
) -> None:  # pragma: no cover - compiled by numba; the same sweep as cholesky_adjoint_numpy
    N = indptr.shape[0] - 1
    work = np.zeros(N, np.float64)
    for j in range(N - 1, -1, -1):
        s = indptr[j]
        e = indptr[j + 1]
        d = cdata[s]
        dbar = cb[s]
        for q in range(s + 1, e):
            v = cb[q] / d
            abar[q] = v
            dbar -= v * cdata[q]
            work[indices[q]] = v
        c0 = dbar / (2.0 * d)
        abar[s] = c0
        work[j] = c0
        for t in range(rowptr[j], rowptr[j + 1]):
            q = rowpos[t]  # C[j, k]
            cjk = cdata[q]
            end = indptr[rowcol[t] + 1]
            acc = 0.0
            for r in range(q, end):
                w = work[indices[r]]
                cb[r] -= w * cjk
                acc += w * cdata[r]
            cb[q] -= acc


def sampled(
    indptr: np.ndarray, indices: np.ndarray, col: np.ndarray, W: np.ndarray, V: np.ndarray
) -> np.ndarray:
    """``(W Vᵀ)`` at the entries of the pattern (CSC order); the kernel of :func:`kernel_name`."""
    if kernel_name() != "numba":
        return sampled_numpy(indptr, indices, col, W, V)
    out = np.empty(indices.shape[0], dtype=np.float64)
    fn = _jit("chol_sampled", _sampled_loop)
    fn(indptr, indices, np.ascontiguousarray(W, np.float64), np.ascontiguousarray(V, np.float64), out)
    return out


def cholesky_adjoint(
    indptr: np.ndarray, indices: np.ndarray, cdata: np.ndarray, cbar: np.ndarray, st: FactorStructure
) -> np.ndarray:
    """``Ā`` on the pattern of ``C`` (lower triangle of ``A = C Cᵀ``) for the cotangent ``C̄``.

    ``indptr``/``indices`` (int64) are the CSC pattern (closed under elimination, diagonal first),
    ``cdata`` the values of ``C`` and ``cbar`` the cotangent, both in CSC order; ``cbar`` is not
    modified.  The kernel of :func:`tsgu_cholesky._selinv.kernel_name`.
    """
    if kernel_name() != "numba":
        return cholesky_adjoint_numpy(indptr, indices, cdata, cbar, st)
    cb = np.array(cbar, dtype=np.float64, copy=True)
    abar = np.empty_like(cb)
    fn = _jit("chol_adjoint", _adjoint_loop)
    fn(indptr, indices, np.ascontiguousarray(cdata, np.float64), cb, st.rowptr, st.rowpos, st.rowcol, abar)
    return abar
