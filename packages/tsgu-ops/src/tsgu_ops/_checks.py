"""Argument validation shared by the public functions of tsgu-ops.

Every public function checks its arguments before touching data and raises a ``ValueError`` or a
``TypeError`` that names the argument, what was expected and what was received.  Messages that
torchsparsegradutils 0.2.7 users rely on are kept word for word by the callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

SPARSE_LAYOUTS = (torch.sparse_coo, torch.sparse_csr)
INDEX_DTYPES = (torch.int32, torch.int64)
FLOAT_DTYPES = (torch.float32, torch.float64)


class DtypeMismatchError(TypeError, RuntimeError):
    """Raised when two tensors that are combined have different dtypes.

    It is a ``TypeError`` (the argument has the wrong type) and, for programs written against
    torchsparsegradutils 0.2.7 where the mismatch surfaced as a ``RuntimeError`` from inside torch,
    also a ``RuntimeError``.
    """


def require_tensor(name: str, value: Any) -> torch.Tensor:
    """Return ``value`` if it is a tensor, else raise ``TypeError`` naming ``name``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def require_layout(name: str, value: torch.Tensor, layouts: Sequence[torch.layout]) -> None:
    if value.layout not in layouts:
        expected = " or ".join(str(x) for x in layouts)
        raise ValueError(f"{name} must have layout {expected}, got {value.layout}")


def require_index_dtype(name: str, dtype: Any) -> torch.dtype:
    if dtype not in INDEX_DTYPES:
        raise ValueError(f"{name} must be torch.int32 or torch.int64, got {dtype}")
    return dtype  # type: ignore[no-any-return]


def require_same_dtype(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.dtype != b.dtype:
        raise DtypeMismatchError(
            f"{name_a} and {name_b} must have the same dtype, got {name_a}: {a.dtype}, {name_b}: {b.dtype}"
        )


def require_same_device(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.device != b.device:
        raise ValueError(
            f"{name_a} and {name_b} must be on the same device, got {name_a}: {a.device}, "
            f"{name_b}: {b.device}"
        )


def require_floating(name: str, value: torch.Tensor) -> None:
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")


def require_no_dense_dims(name: str, value: torch.Tensor) -> None:
    if value.layout != torch.strided and value.dense_dim() != 0:
        raise ValueError(
            f"{name} must have no dense dimensions (hybrid sparse tensors are not supported), "
            f"got dense_dim()={value.dense_dim()}"
        )


def require_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def require_size(name: str, size: Any, ranks: Sequence[int]) -> tuple[int, ...]:
    """Validate a shape given as a sequence of non-negative Python ints."""
    if isinstance(size, torch.Size):
        size = tuple(size)
    if not isinstance(size, (tuple, list)) or any(
        isinstance(s, bool) or not isinstance(s, int) for s in size
    ):
        raise TypeError(f"{name} must be a tuple of ints, got {size!r}")
    if len(size) not in ranks:
        allowed = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{name} must have {allowed} entries, got {len(size)}: {tuple(size)}")
    if any(s < 0 for s in size):
        raise ValueError(f"{name} must contain non-negative sizes, got {tuple(size)}")
    return tuple(size)
