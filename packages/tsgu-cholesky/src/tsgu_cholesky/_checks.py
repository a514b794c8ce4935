"""Validation of the arguments of tsgu-cholesky (one place, up front, naming the argument)."""

from __future__ import annotations

from typing import Any

import torch

from tsgu_ops.internal import (
    FLOAT_DTYPES,
    SPARSE_LAYOUTS,
    check_sparse_indices,
    require_not_meta,
    require_tensor,
    require_value_dtype,
)


def check_spd_matrix(name: str, A: Any) -> torch.Tensor:
    """``A`` must be a square (batched) COO/CSR float32/float64 tensor with valid indices."""
    A = require_tensor(name, A)
    if A.layout not in SPARSE_LAYOUTS:
        raise ValueError(f"{name} must be a sparse COO or CSR tensor, got layout {A.layout}")
    if A.dense_dim() != 0:
        raise ValueError(
            f"{name} must have no dense dimensions (hybrid sparse tensors are not supported), "
            f"got dense_dim()={A.dense_dim()}"
        )
    if A.dim() not in (2, 3) or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name} must be square (n, n) or batched (b, n, n), got shape {tuple(A.shape)}")
    require_value_dtype(name, A, FLOAT_DTYPES)
    require_not_meta(name, A)
    check_sparse_indices(name, A)
    return A


def check_rhs(A: torch.Tensor, B: Any, name: str = "B") -> torch.Tensor:
    """``B`` must be a dense ``(n,)``/``(n, k)`` (or ``(b, n)``/``(b, n, k)`` for batched ``A``)."""
    B = require_tensor(name, B)
    if B.layout != torch.strided:
        raise ValueError(f"{name} must be a dense (strided) tensor, got layout {B.layout}")
    require_value_dtype(name, B, FLOAT_DTYPES)
    require_not_meta(name, B)
    lo = A.dim() - 1
    if B.dim() not in (lo, lo + 1):
        raise ValueError(
            f"{name} must have {lo} or {lo + 1} dimensions for A of shape {tuple(A.shape)}, "
            f"got shape {tuple(B.shape)}"
        )
    if B.shape[lo - 1] != A.shape[-1] or (A.dim() == 3 and B.shape[0] != A.shape[0]):
        raise ValueError(f"{name} of shape {tuple(B.shape)} does not fit A of shape {tuple(A.shape)}")
    if B.device != A.device:
        raise ValueError(f"A and {name} must be on the same device, got A: {A.device}, {name}: {B.device}")
    if B.dtype != A.dtype:
        raise TypeError(f"A and {name} must have the same dtype, got A: {A.dtype}, {name}: {B.dtype}")
    return B
