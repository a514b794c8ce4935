"""Operators and block right-hand sides shared by every solver.

A solver sees its right-hand side as one block ``(*batch, n, k)``: ``k`` columns advanced together,
each with its own scalars (step sizes, residual norms), so nothing loops over columns.  The operator
may be

* a sparse COO/CSR tensor ``(n, n)`` or batched ``(b, n, n)`` (applied as one flattened CSR product,
  built once per solve),
* a dense tensor (``torch.matmul``, which broadcasts batch dimensions), or
* a callable ``f(X) -> A @ X`` receiving the block ``(*batch, n, k)``.

A preconditioner (``M⁻¹``) may be any of the same, or ``None`` for the identity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tsgu_ops.internal import SparsePattern

MatVec = Callable[[torch.Tensor], torch.Tensor]

_SPARSE = (torch.sparse_coo, torch.sparse_csr)


class SparseOperator:
    """``X ↦ A @ X`` (or ``Aᵀ @ X``) for a detached sparse ``A``, on blocks of any leading shape.

    The flattened CSR matrix is built once per solve, with 32-bit indices where they fit (PyTorch's
    CPU kernels convert 64-bit indices to 32-bit ones on every product otherwise, which doubles its
    cost); a 2-D ``A`` applied to a batched block multiplies all columns of all items at once, and a
    batched ``A`` ``(b, n, n)`` is one block-diagonal product.  A single column is one
    matrix-vector product (:meth:`mv`), the cheapest kernel.
    """

    def __init__(self, A: torch.Tensor, transpose: bool = False, pattern: SparsePattern | None = None):
        A = A.detach()
        self.pattern = pattern if pattern is not None else SparsePattern(A)
        values = self.pattern.values(A)
        P = self.pattern
        self.matrix = P.csr_t(values, compact=True) if transpose else P.csr(values, compact=True)
        self.batch = self.pattern.batch
        self.n = self.pattern.n
        self.shape = tuple(A.shape)
        self.dtype = A.dtype

    def mv(self, x: torch.Tensor) -> torch.Tensor:
        """``A @ x`` for one vector ``x`` of the flattened operator's length (``b·n``)."""
        return torch.mv(self.matrix, x)

    def mv_into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """:meth:`mv` written into ``out`` (a contiguous vector): no allocation per product."""
        return torch.mv(self.matrix, x, out=out)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        S = self.matrix
        if self.batch is None and (X.dim() == 1 or (X.dim() == 2 and X.shape[-1] == 1)):
            y = torch.mv(S, X.reshape(-1))  # one column: the matrix-vector kernel
            return y if X.dim() == 1 else y.unsqueeze(-1)
        flat, unfold = fold_block(X, self.batch, self.shape)
        return unfold(S @ flat, S.shape[0] // (self.batch or 1))


def fold_block(
    X: torch.Tensor, batch: int | None, shape: tuple[int, ...]
) -> tuple[torch.Tensor, Callable[[torch.Tensor, int], torch.Tensor]]:
    """A block ``(*lead, [b,] n, k)`` as one 2-D ``(b·n, L·k)`` matrix for a flattened operator.

    ``batch`` is the operator's batch size (``None`` for a 2-D operator, whose leading block
    dimensions all become columns).  Returns the matrix and the inverse map, which takes a result
    with ``rows`` rows per item.
    """
    if batch is None:
        lead = X.shape[:-2]
        n, k = X.shape[-2:]
        if not lead:
            return X, lambda Y, rows: Y
        flat = X.reshape(-1, n, k).permute(1, 0, 2).reshape(n, -1)
        return flat, lambda Y, rows: Y.reshape(rows, -1, k).permute(1, 0, 2).reshape(*lead, rows, k)
    b = batch
    if X.dim() < 3 or X.shape[-3] != b:
        raise ValueError(
            f"a batched operator of shape {shape} needs a right-hand side with batch size {b} "
            f"in dimension -3, got shape {tuple(X.shape)}"
        )
    lead = X.shape[:-3]
    n, k = X.shape[-2:]
    L = 1
    for s in lead:
        L *= s
    # (L, b, n, k) -> (b·n, L·k): every column of every item in one product
    flat = X.reshape(L, b, n, k).permute(1, 2, 0, 3).reshape(b * n, L * k)
    return flat, lambda Y, rows: Y.reshape(b, rows, L, k).permute(2, 0, 1, 3).reshape(*lead, b, rows, k)


def as_matvec(op: Any, name: str = "matmul_closure", *, transpose: bool = False) -> MatVec:
    """A callable applying ``op`` (tensor or callable) to a block; RuntimeError as in 0.2.7 otherwise."""
    if isinstance(op, torch.Tensor):
        if op.layout in _SPARSE:
            return SparseOperator(op, transpose=transpose)
        if op.layout != torch.strided:
            raise TypeError(f"{name} must be a dense, COO or CSR tensor, got layout {op.layout}")
        M = op.detach()
        if transpose:
            M = M.mT
        return lambda X: torch.matmul(M, X)
    if callable(op):
        if transpose:
            raise TypeError(f"{name} is a callable: its transpose is not available")
        return op  # type: ignore[no-any-return]
    raise RuntimeError(f"{name} must be a tensor, or a callable object!")


def as_preconditioner(op: Any, name: str = "preconditioner") -> MatVec | None:
    """``None`` (identity) or a callable applying ``M⁻¹`` to a block."""
    if op is None:
        return None
    if isinstance(op, torch.Tensor) or callable(op):
        return as_matvec(op, name)
    raise RuntimeError(f"{name} must be a tensor, or a callable object!")


def as_block(rhs: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(n,)`` → ``(n, 1)``; anything else unchanged. Returns the block and whether it was a vector."""
    if rhs.dim() == 1:
        return rhs.unsqueeze(-1), True
    return rhs, False


def from_block(X: torch.Tensor, vector: bool) -> torch.Tensor:
    return X.squeeze(-1) if vector else X


def col_dot(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Per-column inner products ``Σᵢ conj(U[..., i, j]) V[..., i, j]`` → ``(*batch, k)``."""
    if U.dim() == 2 and U.shape[-1] == 1 and V.shape == U.shape:  # one column: one BLAS dot
        u, v = U.reshape(-1), V.reshape(-1)
        return (torch.vdot(u, v) if U.is_complex() else torch.dot(u, v)).reshape(1)
    # a product and a sum over rows: 3x faster than torch.linalg.vecdot on (27000, 8) blocks
    return (U.conj() * V).sum(-2)


def col_norm(U: torch.Tensor) -> torch.Tensor:
    """Per-column 2-norms ``(*batch, k)``."""
    if U.dim() == 2 and U.shape[-1] == 1:
        return torch.linalg.vector_norm(U).reshape(1)
    return torch.linalg.vector_norm(U, dim=-2)
