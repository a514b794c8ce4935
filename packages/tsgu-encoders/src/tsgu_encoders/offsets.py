"""Neighbourhood offsets of an nD volume and the (row, col) pairs they relate.

A volume has shape ``(C, *S)``: ``C`` channels and ``d = len(S)`` spatial axes.  An offset
``o = (c, s_1, …, s_d)`` relates the voxel at position ``p`` (row ``lin(p)``) to the voxel at
``p − o`` (column ``lin(p − o)``), where ``lin`` is the row-major linear index; pairs whose partner
falls outside the volume do not exist (no wrap-around, no padding).

Which offsets, and in which order (the order is part of the API: it is the order of the leading
dimension of the encoder's values):

1. spatial offsets: every integer ``s ≠ 0`` with ``Σ s_i² ≤ r²``;
2. ``(0, s)`` for each of them; ``"intra"`` adds ``(c, 0, …, 0)`` and ``"inter"`` also ``(c, s)``,
   for ``c = 1 … C−1``;
3. ``upper=False`` keeps the offsets whose first non-zero component is positive (entries below the
   diagonal, row > col); ``upper=True`` gives the negated offsets of ``upper=False`` (entries
   above the diagonal: the exact transpose pattern, channel couplings included; torchsparsegradutils
   0.2.7 kept the offsets whose first non-zero is negative, which drops every channel coupling);
   ``upper=None`` keeps everything of step 2 (as 0.2.7: channel couplings then lie below the
   diagonal only);
4. sorted by ``((10 c)² + Σ s², (|c|, |s_1|, …), (c ≥ 0, s_1 ≥ 0, …))``, negatives first on ties;
5. ``diag=True`` puts the zero offset first.
"""

from __future__ import annotations

import itertools
import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["calc_pairwise_coo_indices_nd", "gen_offsets_nd", "spatial_offsets", "trim_nd"]

RELATIONS = ("indep", "intra", "inter")


def spatial_offsets(radius: float, d: int) -> list[tuple[int, ...]]:
    """Integer ``s ≠ 0`` in ``d`` dimensions with ``Σ s_i² ≤ radius²`` (unordered).

    Examples
    --------
    >>> sorted(spatial_offsets(1, 2))
    [(-1, 0), (0, -1), (0, 1), (1, 0)]
    """
    if d <= 0:
        raise ValueError(f"the number of spatial dimensions must be positive, got {d}")
    R = math.floor(radius)
    r2 = radius * radius
    return [
        s for s in itertools.product(range(-R, R + 1), repeat=d) if any(s) and sum(x * x for x in s) <= r2
    ]


def _first_nonzero(o: tuple[int, ...]) -> int:
    for x in o:
        if x:
            return x
    return 0


def _sort_key(o: tuple[int, ...]) -> tuple[Any, ...]:
    c, s = o[0], o[1:]
    return ((10 * c) ** 2 + sum(x * x for x in s), tuple(abs(x) for x in o), tuple(x >= 0 for x in o))


def gen_offsets_nd(
    radius: float,
    d: int,
    upper: bool | None = None,
    num_channels: int = 1,
    channel_voxel_relation: str = "indep",
    diag: bool = False,
) -> list[tuple[int, ...]]:
    """The offsets ``(c, s_1, …, s_d)`` of an encoder, in encoder order (module docstring).

    Examples
    --------
    >>> gen_offsets_nd(1, 1, upper=True, num_channels=2, channel_voxel_relation="intra")
    [(0, -1), (-1, 0)]
    """
    spatial = spatial_offsets(radius, d)
    offsets = [(0, *s) for s in spatial]
    if channel_voxel_relation in ("intra", "inter"):
        offsets += [(c,) + (0,) * d for c in range(1, num_channels)]
    if channel_voxel_relation == "inter":
        offsets += [(c, *s) for c in range(1, num_channels) for s in spatial]
    if upper is not None:
        offsets = [o for o in offsets if _first_nonzero(o) > 0]
        if upper:
            offsets = [tuple(-x for x in o) for o in offsets]
    offsets.sort(key=_sort_key)
    if diag:
        offsets.insert(0, (0,) * (d + 1))
    return offsets


def trim_nd(x: torch.Tensor, offsets: Sequence[int]) -> torch.Tensor:
    """``x[k:]`` along axes with ``k > 0``, ``x[:k]`` with ``k < 0``, whole axes with ``k = 0``.

    Examples
    --------
    >>> import torch
    >>> trim_nd(torch.arange(6).reshape(2, 3), (0, -1))
    tensor([[0, 1],
            [3, 4]])
    """
    if len(offsets) != x.dim():
        raise ValueError(f"offsets must have one entry per dimension of x ({x.dim()}), got {len(offsets)}")
    index = tuple(slice(k, None) if k > 0 else slice(None, k) if k < 0 else slice(None) for k in offsets)
    return x[index]


def _as_int(v: Any) -> int | None:
    """``v`` as a Python int if it is an integer (Python, NumPy or a 0-d integer tensor), else None."""
    if (
        isinstance(v, bool)
        # NumPy's bool scalar is named ``bool_`` before NumPy 2 and ``bool`` since; NumPy < 2.3
        # still lets ``operator.index`` read it as 0/1 (with a DeprecationWarning)
        or (type(v).__module__ == "numpy" and type(v).__name__ in ("bool_", "bool"))
        or (isinstance(v, torch.Tensor) and v.dtype == torch.bool)
    ):
        return None
    try:
        return operator.index(v)
    except TypeError:
        return None


def check_volume_shape(volume_shape: Any, message: str) -> tuple[int, ...]:
    """``volume_shape`` as a tuple of Python ints (NumPy integers are accepted), else ``ValueError``."""
    if (
        isinstance(volume_shape, (str, bytes, dict))
        or not hasattr(volume_shape, "__len__")
        or not hasattr(volume_shape, "__iter__")
        or len(volume_shape) < 2
    ):
        raise ValueError(message)  # 0.2.7's message, word for word
    shape = tuple(_as_int(v) for v in volume_shape)
    if any(v is None or v <= 0 for v in shape):
        raise ValueError(message)
    return shape  # type: ignore[return-value]


def check_relation(radius: Any, volume_shape: tuple[int, ...], channel_voxel_relation: Any) -> None:
    if channel_voxel_relation not in RELATIONS:
        raise ValueError("channel_voxel_relation must be 'indep', 'intra', or 'inter'")
    if volume_shape[0] == 1 and channel_voxel_relation != "indep":
        raise ValueError("channel_voxel_relation must be 'indep' when number of channels is 1")


def check_radius(radius: Any) -> float:
    """``radius`` as a float: a real number (Python, NumPy) >= 1 and finite."""
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real):
        raise TypeError(f"radius must be a real number, got {type(radius).__name__}")
    r = float(radius)
    if not r >= 1:
        raise ValueError("radius must be >= 1")
    if not math.isfinite(r):
        raise ValueError(f"radius must be finite (a neighbourhood of finite size), got {r}")
    return r


def calc_pairwise_coo_indices_nd(
    radius: float,
    volume_shape: Sequence[int],
    diag: bool = False,
    upper: bool | None = None,
    channel_voxel_relation: str = "indep",
    dtype: torch.dtype = torch.int64,
    device: torch.device | str | None = torch.device("cpu"),
) -> dict[tuple[int, ...], torch.Tensor]:
    """The (row, col) index pairs of every offset of a ``(C, *S)`` volume.

    Parameters
    ----------
    radius : float
        Neighbourhood radius (≥ 1), Euclidean in voxel units.
    volume_shape : sequence of int
        ``(C, *S)`` with at least one spatial axis.
    diag : bool
        Include the zero offset (the diagonal), first.
    upper : bool or None
        ``False``: entries below the diagonal only; ``True``: above only (the transpose);
        ``None``: both (channel couplings below only, as 0.2.7).
    channel_voxel_relation : {"indep", "intra", "inter"}
        Channel couplings: none, same voxel, or same voxel and neighbours.
    dtype : torch.dtype
        Index dtype of the returned tensors (int32 is kept).
    device : torch.device, optional
        Device of the returned tensors (``None``: the default device).

    Returns
    -------
    dict
        ``offset -> (2, M)`` tensor ``[rows; cols]`` in encoder order; row ``lin(p)``, column
        ``lin(p − offset)`` for every position ``p`` whose partner is inside the volume.

    Raises
    ------
    ValueError
        "radius must be >= 1", "volume_shape must be a tuple of at least 2 positive integers",
        "channel_voxel_relation must be 'indep', 'intra', or 'inter'", "channel_voxel_relation
        must be 'indep' when number of channels is 1".

    Examples
    --------
    >>> idx = calc_pairwise_coo_indices_nd(1, (1, 3), upper=False)
    >>> idx
    {(0, 1): tensor([[1, 2],
            [0, 1]])}
    """
    radius = check_radius(radius)
    shape = check_volume_shape(volume_shape, "volume_shape must be a tuple of at least 2 positive integers")
    check_relation(radius, shape, channel_voxel_relation)
    if dtype not in (torch.int32, torch.int64):
        raise ValueError(f"dtype must be torch.int32 or torch.int64, got {dtype}")
    grid = torch.arange(math.prod(shape), dtype=dtype, device=device).reshape(shape)
    out: dict[tuple[int, ...], torch.Tensor] = {}
    for o in gen_offsets_nd(radius, len(shape) - 1, upper, shape[0], channel_voxel_relation, diag):
        rows = trim_nd(grid, o).reshape(-1)
        cols = trim_nd(grid, tuple(-x for x in o)).reshape(-1)
        out[o] = torch.stack([rows, cols])
    return out
