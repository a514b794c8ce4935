"""Argument validation shared by the public functions of tsgu-ops.

Every public function checks its arguments before touching data and raises a ``ValueError`` or a
``TypeError`` that names the argument, what was expected and what was received.  Messages that
torchsparsegradutils 0.2.7 users rely on are kept word for word by the callers.
"""

from __future__ import annotations

import weakref
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


#: Value dtypes the public operations compute with.  Complex values are supported where an
#: operation documents it (conjugate/Wirtinger gradients, as PyTorch's own autograd).
COMPLEX_DTYPES = (torch.complex64, torch.complex128)


def require_value_dtype(
    name: str, value: torch.Tensor, allowed: Sequence[torch.dtype] = FLOAT_DTYPES
) -> None:
    """Raise ``TypeError`` unless ``value``'s dtype is one of ``allowed`` (names them all)."""
    if value.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{name} must have one of the dtypes {names}, got {value.dtype}")


def require_not_meta(name: str, value: torch.Tensor) -> None:
    """Raise ``ValueError`` for a tensor on the ``meta`` device (it holds no data to compute with)."""
    if value.device.type == "meta":
        raise ValueError(
            f"{name} is on the 'meta' device: it has no data, so it can be neither validated nor "
            "computed with; materialise it first (e.g. tensor.to_empty(device='cpu'))"
        )


def index_stamp(A: torch.Tensor) -> tuple | None:
    """What must be unchanged for an index analysis of ``A`` to hold (its validation here, its
    :class:`~tsgu_ops.SparsePattern`): the tensor, its index tensors, their versions and storage;
    ``None``: do not cache (compile tracing, subclasses, meta and functorch-wrapped tensors)."""
    if type(A) is not torch.Tensor or torch.compiler.is_compiling() or A.device.type == "meta":
        return None
    try:
        if A.layout == torch.sparse_coo:
            idx: tuple[torch.Tensor, ...] = (A._indices(),)
            coalesced: bool | None = A.is_coalesced()
        elif A.layout == torch.sparse_csr:
            idx = (A.crow_indices(), A.col_indices())
            coalesced = None
        else:
            return None
        return (
            A._version,
            A.layout,
            tuple(A.shape),
            A.device,
            coalesced,
            *((t._version, t.data_ptr(), t.dtype, tuple(t.shape)) for t in idx),
        )
    except (RuntimeError, NotImplementedError, AttributeError):  # functorch wrappers, fake tensors
        return None


def _index_members(A: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (A._indices(),) if A.layout == torch.sparse_coo else (A.crow_indices(), A.col_indices())


#: Devices on which cache hits compare the indices with a copy (:func:`index_snapshot`).
COMPARED_DEVICES: tuple[str, ...] = ("cpu",)
#: Whether :func:`indices_unchanged` compares (``tsgu_ops.testing.count_kernels`` turns it off
#: while it counts: it counts what a device runs, and no device runs the comparison).
_COMPARING = [True]


def index_snapshot(A: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """A private copy of a CPU ``A``'s index tensors, for :func:`indices_unchanged`; ``None`` on
    other devices (those not in :data:`COMPARED_DEVICES`).

    Version counters do not see every change of the indices: a CSR or COO tensor built from the
    user's ``col`` tensor shares its memory, but ``A``'s version counter (which its index views
    report) does not move when ``col`` itself is written in place.  A cached analysis of ``A``
    would then describe indices ``A`` no longer holds: a silently wrong result, or, for
    out-of-range indices validated before the change, a native CPU kernel reading outside its
    memory.  On the CPU every cache hit therefore also compares the indices with this copy (one
    pass over them).  On other devices the comparison would cost a host synchronisation per call
    (and is not allowed while a CUDA graph is captured): there the cache trusts the stamp, and
    indices must not be changed in place behind ``A``'s back.
    """
    if A.device.type not in COMPARED_DEVICES:
        return None
    return tuple(t.clone() for t in _index_members(A))


def validated_snapshot(A: torch.Tensor, stamp: tuple) -> tuple[torch.Tensor, ...] | None:
    """The copy :func:`check_sparse_indices` keeps of ``A``'s indices at ``stamp``, if it holds
    one (so that a pattern cache can share it instead of copying again), else a new one."""
    hit = _VALIDATED.get(id(A))
    if hit is not None and hit[0]() is A and hit[1] == stamp and hit[2] is not None:
        return hit[2]
    return index_snapshot(A)


def indices_unchanged(A: torch.Tensor, snapshot: tuple[torch.Tensor, ...] | None) -> bool:
    """Whether ``A``'s index tensors still hold what :func:`index_snapshot` copied (``True`` for
    ``None``: nothing to compare)."""
    if snapshot is None or not _COMPARING[0]:
        return True
    members = _index_members(A)
    return all(m.shape == c.shape and torch.equal(m, c) for m, c in zip(members, snapshot))


#: ``id(A) -> (weak reference to A, index_stamp(A), index_snapshot(A))`` of tensors whose indices
#: were validated.
_VALIDATED: dict[int, tuple[weakref.ref, tuple, tuple[torch.Tensor, ...] | None]] = {}


def check_sparse_indices(name: str, A: torch.Tensor) -> None:
    """Validate the index structure of a sparse COO or CSR tensor ``A`` (2-D or batched 3-D).

    PyTorch's native sparse kernels trust their indices: an out-of-range COO index or a
    non-monotone ``crow`` silently drops entries or corrupts memory.  Every public function of the
    project that hands a user's sparse tensor to a native kernel calls this first.  It checks, with
    a few reductions over the indices (``O(nnz)``, one host synchronisation):

    * COO: indices of shape ``(ndim, nnz)`` with every row ``d`` within ``[0, A.shape[d])``;
    * CSR: ``crow`` starts at 0, never decreases, ends at the number of stored entries, and every
      column index lies within ``[0, A.shape[-1])``; in a batch, every item holds the same nnz;
    * the tensor is not on the ``meta`` device.

    Raises
    ------
    ValueError
        Naming ``name``, what was expected and what was found.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops._checks import check_sparse_indices
    >>> A = torch.sparse_coo_tensor(torch.tensor([[1, 2], [1, 2]]), torch.ones(2), (2, 2),
    ...                             check_invariants=False)
    >>> check_sparse_indices("A", A)
    Traceback (most recent call last):
    ...
    ValueError: A has a row index out of range: indices[0] must lie in [0, 2), found 2

    The very same tensor with unchanged indices (same versions and storage) is validated once:
    later calls cost no host synchronisation (a training loop's fixed matrix); on the CPU they
    compare the indices with a copy taken at validation (:func:`index_snapshot`), which sees a
    change the version counters miss.
    """
    stamp = index_stamp(A)
    key = id(A)
    if stamp is not None:
        hit = _VALIDATED.get(key)
        if hit is not None and hit[0]() is A and hit[1] == stamp and indices_unchanged(A, hit[2]):
            return
    _check_sparse_indices(name, A)
    if stamp is not None:

        def forget(ref: weakref.ref, key: int = key) -> None:
            cur = _VALIDATED.get(key)
            if cur is not None and cur[0] is ref:
                del _VALIDATED[key]

        _VALIDATED[key] = (weakref.ref(A, forget), stamp, index_snapshot(A))


def _check_sparse_indices(name: str, A: torch.Tensor) -> None:
    require_not_meta(name, A)
    if A.layout == torch.sparse_coo:
        idx = A._indices()
        if idx.dim() != 2 or idx.shape[0] != A.sparse_dim():
            raise ValueError(f"{name} has malformed COO indices of shape {tuple(idx.shape)}")
        if idx.shape[1] == 0:
            return
        lo, hi = torch.stack([idx.amin(dim=1), idx.amax(dim=1)]).tolist()  # one synchronisation
        what = {A.sparse_dim() - 2: "row", A.sparse_dim() - 1: "column"}
        for d in range(A.sparse_dim()):
            size = int(A.shape[d])
            bad = hi[d] if hi[d] >= size else lo[d] if lo[d] < 0 else None
            if bad is not None:
                kind = what.get(d, "batch")
                raise ValueError(
                    f"{name} has a {kind} index out of range: indices[{d}] must lie in "
                    f"[0, {size}), found {bad}"
                )
        return
    if A.layout == torch.sparse_csr:
        crow, col = A.crow_indices(), A.col_indices()
        rows, cols = int(A.shape[-2]), int(A.shape[-1])
        if crow.shape[-1] != rows + 1 or crow.dim() != A.dim() - 1 or col.dim() != A.dim() - 1:
            raise ValueError(
                f"{name} has malformed CSR indices: crow_indices of shape {tuple(crow.shape)} and "
                f"col_indices of shape {tuple(col.shape)} for a matrix of shape {tuple(A.shape)}"
            )
        per = int(col.shape[-1])
        first = crow[..., 0]
        last = crow[..., -1]
        steps = crow[..., 1:] - crow[..., :-1]
        zero = torch.zeros((), dtype=torch.int64, device=crow.device)
        # every statistic in one tensor: one host synchronisation (each costs a round trip on a GPU)
        stats = torch.stack(
            [
                first.abs().max().to(torch.int64) if first.numel() else zero,
                (last - per).abs().max().to(torch.int64) if last.numel() else zero,
                (steps < 0).any().to(torch.int64) if steps.numel() else zero,
                col.min().to(torch.int64) if col.numel() else zero,
                col.max().to(torch.int64) if col.numel() else zero,
            ]
        ).tolist()
        if stats[0] != 0:
            raise ValueError(f"{name} has crow_indices that do not start at 0")
        if stats[1] != 0:
            raise ValueError(
                f"{name} has crow_indices whose last entry is not the number of stored entries "
                f"per matrix ({per})"
            )
        if stats[2] != 0:
            raise ValueError(f"{name} has crow_indices that decrease (they must be non-decreasing)")
        cmin, cmax = stats[3], stats[4]
        if col.numel() and (cmin < 0 or cmax >= cols):  # no stored entry: no column to check
            raise ValueError(
                f"{name} has a column index out of range: col_indices must lie in [0, {cols}), "
                f"found {cmax if cmax >= cols else cmin}"
            )
        return
    raise ValueError(f"{name} must be a sparse COO or CSR tensor, got {A.layout}")
