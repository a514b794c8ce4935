"""Counting kernel calls and host synchronisations of a callable, on any device (the CPU included).

On a GPU the cost of a loop of small operations is the number of kernels it launches and the number
of times the host waits for the device (reading a number: ``.item()``, ``float(t)``, ``bool(t)``,
``if t:``; a result whose shape depends on the data: ``nonzero``, boolean indexing; ``tolist``).
Both can be counted on the CPU: a :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees
every aten call that reaches a backend kernel.  Views and metadata (``view``, ``select``,
``detach``, ``crow_indices``, ``size`` ...) launch nothing and are not counted; allocations
(``empty``) are not kernels either.  Tests pin budgets with :func:`count_kernels` so that a hot
path cannot regress unnoticed.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: aten calls that read device memory on the host: each one waits for the device.
SYNC_OPS = frozenset(
    {
        "aten._local_scalar_dense.default",
        "aten.nonzero.default",
        "aten.masked_select.default",
        "aten._unique2.default",
        "aten.unique_dim.default",
        "aten.unique_consecutive.default",
        "aten.repeat_interleave.Tensor",  # unless output_size is given: the length is data
        "aten.equal.default",
        "aten.is_nonzero.default",
    }
)

#: aten calls that neither launch a kernel nor read data (besides views, which are recognised by
#: their schema).
NON_KERNEL_OPS = frozenset(
    {
        "aten.detach.default",
        "aten.alias.default",
        "aten.lift_fresh.default",
        "aten.empty.memory_format",
        "aten.empty_strided.default",
        "aten.empty_like.default",
        "aten._nnz.default",
        "aten.is_coalesced.default",
        "aten.sparse_dim.default",
        "aten.dense_dim.default",
        "aten.sym_size.int",
        "aten.sym_stride.int",
        "aten.sym_numel.default",
        "aten.sym_storage_offset.default",
        "aten.is_same_size.default",
        "aten._sparse_csr_tensor_unsafe.default",
        "aten.sparse_compressed_tensor.comp_plain_value_size",
        "aten._sparse_compressed_tensor_unsafe.default",
        "aten._sparse_coo_tensor_with_dims_and_tensors.default",
    }
)


@dataclass
class KernelCount:
    """What :func:`count_kernels` saw.

    Attributes
    ----------
    kernels : int
        aten calls that run a kernel (everything but views, metadata and host reads).
    syncs : int
        Host synchronisations (see :data:`SYNC_OPS`; ``Tensor.tolist`` too).
    ops : collections.Counter
        Calls per aten overload name, kernels and syncs alike (for a diagnostic message).
    """

    kernels: int = 0
    syncs: int = 0
    ops: collections.Counter[str] = field(default_factory=collections.Counter)

    def __str__(self) -> str:
        top = ", ".join(f"{name} ×{n}" for name, n in self.ops.most_common(12))
        return f"{self.kernels} kernel calls, {self.syncs} host syncs ({top})"


class _Counter(TorchDispatchMode):
    def __init__(self, count: KernelCount) -> None:
        super().__init__()
        self.count = count

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = str(func)
        kwargs = kwargs or {}
        if name == "aten.repeat_interleave.Tensor" and kwargs.get("output_size") is not None:
            sync = False  # the length is given: no read of the counts
        else:
            sync = name in SYNC_OPS or (name == "aten.index.Tensor" and _bool_index(args))
        if sync:
            self.count.syncs += 1
            self.count.ops[name] += 1
        elif not getattr(func, "is_view", False) and name not in NON_KERNEL_OPS:
            self.count.kernels += 1
            self.count.ops[name] += 1
        return func(*args, **kwargs)


def _bool_index(args: Any) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


@contextlib.contextmanager
def counting() -> Iterator[KernelCount]:
    """Context manager: count the kernel calls and host syncs of the code inside.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops.testing import counting
    >>> x = torch.ones(3)
    >>> with counting() as c:
    ...     y = (x * 2).sum()
    ...     z = float(y)
    >>> c.kernels, c.syncs
    (2, 1)
    """
    count = KernelCount()
    original = torch.Tensor.tolist

    def tolist(t: torch.Tensor) -> Any:  # the CPU reads it without a dispatcher call
        count.syncs += 1
        count.ops["Tensor.tolist"] += 1
        return original(t)

    torch.Tensor.tolist = tolist  # type: ignore[method-assign,assignment]
    try:
        with _Counter(count):
            yield count
    finally:
        torch.Tensor.tolist = original  # type: ignore[method-assign]


def count_kernels(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, KernelCount]:
    """Call ``fn(*args, **kwargs)`` and count its kernel calls and host syncs.

    Returns ``(result, KernelCount)``.  The count is what a device would run: the comparison of
    a CPU tensor's indices with their copy on a cache hit (``tsgu_ops._checks.index_snapshot``,
    done on the CPU only) is skipped while counting.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops.testing import count_kernels
    >>> A = torch.eye(3).to_sparse_csr()
    >>> _, c = count_kernels(torch.mv, A, torch.ones(3))
    >>> c.kernels, c.syncs
    (1, 0)
    """
    from ._checks import _COMPARING

    before = _COMPARING[0]
    _COMPARING[0] = False
    try:
        with counting() as count:
            result = fn(*args, **kwargs)
    finally:
        _COMPARING[0] = before
    return result, count
