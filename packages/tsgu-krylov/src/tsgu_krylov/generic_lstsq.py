"""``sparse_generic_lstsq``: ``X = argmin ‖A X − B‖`` for a tall sparse ``A``, sparse gradient.

For a full-column-rank ``A`` ``(m, n)``, ``X = A⁺ B``.  With ``G = ∂L/∂X``, ``Gb = (Aᵀ)⁺ G`` (the
minimum-norm solution of ``Aᵀ y = G``), ``H = A⁺ Gb = (AᵀA)⁻¹ G`` and the residual ``r = A X − B``:

* ``dB = Gb``,
* ``dA = −Gb Xᵀ − r Hᵀ`` at ``A``'s stored entries (Golub and Pereyra), computed as one sampled
  product of the stacked blocks ``[Gb, r]`` and ``[X, H]``.

Differences from 0.2.7: arguments are validated in the forward pass (a wide ``A`` is rejected
before any work), all right-hand side columns go through LSMR as one block (0.2.7 ran one LSMR per
column, three times), the default tolerances follow the dtype (1e-10 in float64, 1e-6 in
float32, instead of 1e-6), and an uncoalesced COO ``A`` works in the backward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import Function, once_differentiable

from tsgu_ops.internal import (
    FLOAT_DTYPES,
    SparsePattern,
    autocast_fp32,
    check_sparse_indices,
    deliver,
    require_not_meta,
    require_value_dtype,
)

from ._operator import SparseOperator
from .lsmr import lsmr

__all__ = ["SparseGenericLstsq", "sparse_generic_lstsq"]


def _tol(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 1e-6


def _default_lstsq(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    op = SparseOperator(A)
    opt = SparseOperator(A, transpose=True, pattern=op.pattern)
    t = _tol(B.dtype)
    return lsmr(op, B, Armat=opt, n=A.shape[1], atol=t, btol=t, maxiter=max(10 * A.shape[1], 100))[0]


def _default_transpose_lstsq(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    opt = SparseOperator(A, transpose=True)
    op = SparseOperator(A, pattern=opt.pattern)
    t = _tol(G.dtype)
    return lsmr(opt, G, Armat=op, n=A.shape[0], atol=t, btol=t, maxiter=max(10 * A.shape[1], 100))[0]


def check_lstsq_inputs(A: Any, B: Any) -> None:
    if not isinstance(A, torch.Tensor) or not isinstance(B, torch.Tensor):
        raise ValueError("Both A and B should be instances of torch.Tensor")
    if A.layout not in (torch.sparse_coo, torch.sparse_csr):
        raise TypeError(f"Unsupported sparse layout: {A.layout}. Only COO and CSR are supported.")
    if A.dim() != 2:
        raise ValueError(f"A must be a 2D tensor, got shape {tuple(A.shape)}")
    if A.shape[0] < A.shape[1]:
        raise ValueError(f"A should be a tall full-rank matrix. Got A.shape={tuple(A.shape)}")
    if B.dim() not in (1, 2):
        raise ValueError("B must be a 1D or 2D tensor")
    if B.shape[0] != A.shape[0]:
        raise ValueError(
            f"Incompatible dimensions: A has shape {tuple(A.shape)}, B has shape {tuple(B.shape)}"
        )
    if B.layout != torch.strided:
        raise TypeError("B must be a dense (strided) tensor")
    if A.dtype != B.dtype:
        raise TypeError(f"A and B must have the same dtype, got A: {A.dtype}, B: {B.dtype}")
    require_value_dtype("A", A, FLOAT_DTYPES)
    require_not_meta("B", B)
    check_sparse_indices("A", A)  # before any native kernel reads them (also rejects meta)
    if A.device != B.device:
        raise ValueError(f"A and B must be on the same device, got A: {A.device}, B: {B.device}")


def _as_block(Y: Any, rows: int, k: int, name: str) -> torch.Tensor:
    if not isinstance(Y, torch.Tensor) or Y.numel() != rows * k:
        got = tuple(Y.shape) if isinstance(Y, torch.Tensor) else type(Y).__name__
        raise ValueError(
            f"{name} must return a tensor of shape ({rows}, {k}) (or ({rows},) for k=1), got {got}"
        )
    return Y.reshape(rows, k)


class SparseGenericLstsq(Function):
    """Autograd Function of :func:`sparse_generic_lstsq`: ``apply(A, B, lstsq, transpose_lstsq)``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, A: torch.Tensor, B: torch.Tensor, lstsq: Any, transpose_lstsq: Any
    ) -> torch.Tensor:
        lstsq = _default_lstsq if lstsq is None else lstsq
        transpose_lstsq = _default_transpose_lstsq if transpose_lstsq is None else transpose_lstsq
        Ad = A.detach()
        vector = B.dim() == 1
        Bm = (B.unsqueeze(-1) if vector else B).detach()
        _m, n = A.shape
        X = _as_block(lstsq(Ad, Bm if not vector else Bm.squeeze(-1)), n, Bm.shape[1], "lstsq").to(A.dtype)
        ctx.lstsq, ctx.transpose_lstsq, ctx.vector = lstsq, transpose_lstsq, vector
        ctx.pattern = SparsePattern(Ad)
        ctx.save_for_backward(Ad, Bm, X)
        return X.squeeze(-1) if vector else X

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        A, B, X = ctx.saved_tensors
        m, n = A.shape
        k = B.shape[1]
        Gm = G.reshape(n, k)
        call = (lambda f, M: f(A, M.squeeze(-1))) if ctx.vector else (lambda f, M: f(A, M))
        Gb = _as_block(call(ctx.transpose_lstsq, Gm), m, k, "transpose_lstsq").to(A.dtype)
        dA = None
        if ctx.needs_input_grad[0]:
            pattern: SparsePattern = ctx.pattern
            H = _as_block(call(ctx.lstsq, Gb), n, k, "lstsq").to(A.dtype)
            r = pattern.matmul(pattern.values(A), X) - B
            values = -pattern.sampled(torch.cat([Gb, r], dim=1), torch.cat([X, H], dim=1))
            dA = deliver(ctx, 0, pattern, values, A)
        dB = None
        if ctx.needs_input_grad[1]:
            dB = Gb.squeeze(-1) if ctx.vector else Gb
        return dA, dB, None, None


@autocast_fp32
def sparse_generic_lstsq(
    A: torch.Tensor, B: torch.Tensor, lstsq: Any = None, transpose_lstsq: Any = None
) -> torch.Tensor:
    """Least-squares solve ``min ‖A X − B‖`` for a tall sparse ``A``; sparse gradient for ``A``.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR ``(m, n)`` with ``m ≥ n`` and full column rank.
    B : Tensor
        Dense ``(m,)`` or ``(m, k)``, same dtype and device as ``A``.
    lstsq : callable, optional
        ``lstsq(A, B) -> X``; default: block LSMR.
    transpose_lstsq : callable, optional
        ``transpose_lstsq(A, G) -> (Aᵀ)⁺ G`` computed from the un-transposed ``A``; default: block
        LSMR on ``Aᵀ`` (minimum-norm solution).

    Returns
    -------
    Tensor
        ``X``: ``(n,)`` or ``(n, k)``.

    Raises
    ------
    ValueError
        Non-tensors, wrong ranks or sizes, and "A should be a tall full-rank matrix. Got
        A.shape=..." for ``m < n`` (in the forward pass).
    TypeError
        A layout other than COO/CSR, a dense ``B`` that is not strided, different dtypes, values
        other than float32/float64 (complex values are not supported by tsgu-krylov).
    ValueError
        ``A`` with out-of-range or malformed indices, or on the ``meta`` device.

    Notes
    -----
    With the default solvers, a NaN or an infinity in ``A`` or ``B`` gives a
    :class:`~tsgu_krylov.ConvergenceWarning` and NaN in the affected columns of ``X``.

    Examples
    --------
    >>> import torch
    >>> from tsgu_krylov import sparse_generic_lstsq
    >>> A = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], dtype=torch.float64).to_sparse()
    >>> X = sparse_generic_lstsq(A.requires_grad_(), torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64))
    >>> X.detach()
    tensor([1.0000, 1.0000], dtype=torch.float64)
    """
    check_lstsq_inputs(A, B)
    return SparseGenericLstsq.apply(A, B, lstsq, transpose_lstsq)  # type: ignore[no-any-return]
