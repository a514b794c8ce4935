"""Marginal variances from a factor the user already has: ``diag((L Lᵀ)⁻¹)`` or ``diag(((I+L) D (I+L)ᵀ)⁻¹)``.

No factorisation is made: the selected inversion (:mod:`tsgu_cholesky._selinv`, Takahashi's
recurrences) runs on the given factor, in its own (natural) order.  Its pattern must be closed
under elimination (every column's rows below the diagonal a clique of ``L + Lᵀ``), which a
Cholesky factor's pattern is but a user's factor need not be: the closure (the symbolic
factorisation, :func:`tsgu_cholesky._selinv_adjoint.closed_lower_pattern`) is computed first and
the fill entries hold zeros, so any lower-triangular pattern is accepted (the cost grows with the
fill; a factor made by a Cholesky factorisation has none).

The gradient (first order) is the adjoint of the recurrence (:mod:`tsgu_cholesky._selinv_adjoint`),
at the cost of the forward; it reaches ``L`` sparsely (``L``'s layout, pattern and index dtype) and
``diagonal`` densely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.autograd.function import Function

from tsgu_ops.internal import (
    FLOAT_DTYPES,
    SparsePattern,
    autocast_fp32,
    differentiable_values,
    require_not_meta,
    require_tensor,
    require_value_dtype,
)

from ._checks import check_spd_matrix
from ._selinv import selected_inverse_on_factor
from ._selinv_adjoint import closed_lower_pattern, selinv_adjoint_numpy
from .cholesky import _to_canonical

__all__ = ["factor_inverse_diagonal"]


@dataclass
class _Closed:
    """The closed pattern of ``K`` copies of an ``(N, N)`` unit factor (block diagonal, CSC)."""

    indptr: np.ndarray
    indices: np.ndarray
    keys: np.ndarray
    diag: np.ndarray  # CSC position of every diagonal entry

    @classmethod
    def of(cls, indptr: np.ndarray, indices: np.ndarray, N: int, K: int) -> _Closed:
        nnz = int(indptr[-1])
        if K > 1:
            step = np.arange(K, dtype=np.int64)
            indices = (indices[None, :] + (step * N)[:, None]).reshape(-1)
            indptr = np.concatenate([(indptr[:-1][None, :] + (step * nnz)[:, None]).reshape(-1), [K * nnz]])
        NK = N * K
        col = np.repeat(np.arange(NK, dtype=np.int64), np.diff(indptr))
        return cls(indptr, indices, col * NK + indices, indptr[:-1].copy())


class _FactorSelectedInverse(Function):
    """``Z = (L D Lᵀ)⁻¹`` on the closed pattern of the unit factor ``L`` (values ``lu``), ``D = d``."""

    @staticmethod
    def forward(ctx: Any, lu: torch.Tensor, d: torch.Tensor, closed: _Closed) -> torch.Tensor:  # type: ignore[override]
        lu64 = lu.detach().to("cpu", torch.float64).numpy()
        d64 = d.detach().to("cpu", torch.float64).numpy()
        z = selected_inverse_on_factor(closed.indptr, closed.indices, lu64, d64, closed.keys)
        ctx.closed, ctx.lu, ctx.d, ctx.z = closed, lu64, d64, z
        return torch.from_numpy(z).to(device=lu.device, dtype=lu.dtype)

    @staticmethod
    def backward(ctx: Any, zbar: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "factor_inverse_diagonal is differentiable once: create_graph=True through it "
                "(a second derivative) is not supported"
            )
        c: _Closed = ctx.closed
        zb = zbar.detach().to("cpu", torch.float64).numpy()
        lbar, dbar = selinv_adjoint_numpy(c.indptr, c.indices, ctx.lu, ctx.d, c.keys, ctx.z, zb)
        dev, dt = zbar.device, zbar.dtype
        return (
            torch.from_numpy(lbar).to(device=dev, dtype=dt) if ctx.needs_input_grad[0] else None,
            torch.from_numpy(dbar).to(device=dev, dtype=dt) if ctx.needs_input_grad[1] else None,
            None,
        )


def _check_factor(L: Any) -> torch.Tensor:
    L = require_tensor("L", L)
    if L.layout not in (torch.sparse_coo, torch.sparse_csr):
        raise ValueError(f"L must be a sparse COO or CSR tensor, got layout {L.layout}")
    return check_spd_matrix("L", L)  # the same structural checks: square (batched) COO/CSR, float


def _check_diagonal(diagonal: Any, L: torch.Tensor) -> torch.Tensor:
    D = require_tensor("diagonal", diagonal)
    require_not_meta("diagonal", D)
    if D.layout != torch.strided:
        raise ValueError(f"diagonal must be a dense (strided) tensor, got layout {D.layout}")
    require_value_dtype("diagonal", D, FLOAT_DTYPES)
    if D.dtype != L.dtype:
        raise TypeError(f"L and diagonal must have the same dtype, got L: {L.dtype}, diagonal: {D.dtype}")
    if D.device != L.device:
        raise ValueError(
            f"L and diagonal must be on the same device, got L: {L.device}, diagonal: {D.device}"
        )
    n = L.shape[-1]
    try:
        if D.dim() < 1 or D.shape[-1] != n:
            raise RuntimeError
        torch.broadcast_shapes(D.shape[:-1], L.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"diagonal must have shape (..., {n}) whose batch dimensions broadcast with L's "
            f"{tuple(L.shape[:-2])}, got {tuple(D.shape)}"
        ) from None
    Dd = D.detach()
    if not bool((Dd > 0).all()) or not bool(torch.isfinite(Dd).all()):
        raise ValueError("diagonal must be positive and finite (D of A = (I + L) D (I + L)ᵀ)")
    return D


@autocast_fp32
def factor_inverse_diagonal(L: torch.Tensor, diagonal: torch.Tensor | None = None) -> torch.Tensor:
    """``diag(A⁻¹)`` for ``A`` given by a sparse triangular factor, by selected inversion on it.

    ``A = L Lᵀ`` (``diagonal`` not given; ``L`` must store a nonzero diagonal) or
    ``A = (I + L) D (I + L)ᵀ`` with ``D = diag(diagonal)`` (``L`` strictly lower triangular, the
    unit diagonal implicit).  No factorisation is computed: Takahashi's recurrences run on ``L``
    itself (its pattern closed under elimination first, see the module docstring).

    Parameters
    ----------
    L : Tensor
        Lower triangular, sparse COO or CSR, ``(n, n)`` or ``(b, n, n)`` (every item its own
        factor), int32/int64 indices, float32/float64 values.  An uncoalesced COO tensor is the
        sum of its duplicates.
    diagonal : Tensor, optional
        Positive ``(..., n)``, ``L``'s dtype and device; its batch dimensions broadcast with
        ``L``'s (``L``'s batch is the last one).

    Returns
    -------
    Tensor
        Dense ``(n,)``, ``(b, n)`` or the broadcast ``(..., n)``; differentiable once with respect
        to ``L`` (a sparse gradient with ``L``'s layout, pattern and index dtype) and ``diagonal``.

    Raises
    ------
    TypeError
        Not tensors, other value dtypes, or dtypes that differ.
    ValueError
        ``L`` not sparse, not square, malformed indices, NaN/Inf values, an entry above the
        diagonal, a zero or missing diagonal entry (``A = L Lᵀ`` singular), a stored diagonal entry
        together with ``diagonal``; ``diagonal`` of the wrong shape or not positive.

    Examples
    --------
    >>> import torch
    >>> from tsgu_cholesky import factor_inverse_diagonal
    >>> dense = torch.tensor([[2.0, 0.0, 0.0], [-1.0, 1.5, 0.0], [0.0, 0.5, 1.0]], dtype=torch.float64)
    >>> L = dense.to_sparse_csr()
    >>> v = factor_inverse_diagonal(L)
    >>> torch.allclose(v, torch.linalg.inv(dense @ dense.T).diagonal())
    True
    """
    L = _check_factor(L)
    D = None if diagonal is None else _check_diagonal(diagonal, L)
    p = SparsePattern.of(L)
    n, B = p.n, p.batch
    N = p.N
    v = _to_canonical(p, differentiable_values(L, p))
    rows, cols = p.sorted_rows, p.sorted_cols.to(torch.int64)
    vd = v.detach()
    if not bool(torch.isfinite(vd).all()):
        raise ValueError("L must have finite values, got NaN or Inf among its stored values")
    above = cols > rows
    if bool(above.any()):
        k = int(torch.argmax(above.to(torch.int8)))
        where = f"({int(rows[k]) % n}, {int(cols[k]) % n})" + (
            f" of batch item {int(rows[k]) // n}" if B is not None else ""
        )
        raise ValueError(f"L must be lower triangular: it stores an entry above the diagonal at {where}")
    on = rows == cols
    off = ~on
    r_off, c_off = rows[off], cols[off]
    if D is None:
        s = torch.zeros(N, dtype=v.dtype, device=v.device).index_add(0, rows[on], v[on])
        stored = torch.zeros(N, dtype=torch.bool, device=v.device)
        stored[rows[on]] = True
        bad = ~stored | (s.detach() == 0)
        if bool(bad.any()):
            i = int(torch.argmax(bad.to(torch.int8)))
            where = f"({i % n}, {i % n})" + (f" of batch item {i // n}" if B is not None else "")
            raise ValueError(
                "L must store a nonzero diagonal (A = L Lᵀ is singular otherwise): "
                f"entry {where} is {'zero' if bool(stored[i]) else 'missing'}"
            )
        lu_off = v[off] / s.index_select(0, c_off)
        d = s * s
        K, out_shape = 1, ((n,) if B is None else (B, n))
    else:
        if bool(on.any()):
            raise ValueError(
                "with diagonal (A = (I + L) D (I + L)ᵀ) L must be strictly lower triangular (the "
                "unit diagonal is implicit), got stored diagonal entries"
            )
        lead = torch.broadcast_shapes(D.shape[:-1], L.shape[:-2])
        Dx = D.expand(*lead, n)
        if B is not None and B > 1:  # L's items are the last batch dimension
            K = int(np.prod(lead[:-1], dtype=np.int64))
        else:  # one factor shared by every vector of diagonal (a batch of one broadcasts)
            K = int(np.prod(lead, dtype=np.int64))
        d = Dx.reshape(-1)
        lu_off = v[off]
        out_shape = (*lead, n)
    if N == 0 or K == 0:
        return torch.zeros(out_shape, dtype=L.dtype, device=L.device)
    indptr, indices = closed_lower_pattern(r_off.detach().cpu().numpy(), c_off.detach().cpu().numpy(), N)
    one = _Closed.of(indptr, indices, N, 1)
    pos = np.searchsorted(one.keys, c_off.cpu().numpy() * N + r_off.cpu().numpy())
    lu = torch.zeros(int(indptr[-1]), dtype=v.dtype, device=v.device).index_copy(
        0, torch.from_numpy(pos).to(v.device), lu_off
    )
    closed = one if K == 1 else _Closed.of(indptr, indices, N, K)
    if K > 1:
        lu = lu.repeat(K)
    z = _FactorSelectedInverse.apply(lu, d, closed)
    out = z.index_select(0, torch.from_numpy(closed.diag).to(z.device))
    return out.reshape(out_shape)
