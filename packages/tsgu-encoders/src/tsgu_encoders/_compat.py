"""Deprecated names and private helpers of torchsparsegradutils 0.2.7's encoders, kept working.

* ``PairwiseVoxelEncoder``: the 3-D-only predecessor of :class:`PairwiseEncoder` (warns when
  instantiated);
* ``calc_pairwise_coo_indices`` (and its misspelt twin ``calc_pariwise_coo_indices``): the 3-D-only
  predecessor of :func:`calc_pairwise_coo_indices_nd` (warns when reached through the package);
* ``_trim_nd``, ``_gen_coords_nd``, ``_gen_coords``, ``_gen_offsets_nd``, ``_gen_offsets``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .offsets import (
    calc_pairwise_coo_indices_nd,
    check_volume_shape,
    gen_offsets_nd,
    spatial_offsets,
    trim_nd,
)
from .pairwise_encoder import PairwiseEncoder

_SHAPE_4D = "`volume_shape` must be a 4D tuple of positive integers, representing [C, H, D, W]"


def _check_4d(volume_shape: Any) -> None:
    if len(check_volume_shape(volume_shape, _SHAPE_4D)) != 4:
        raise ValueError(_SHAPE_4D)


class PairwiseVoxelEncoder(PairwiseEncoder):
    """Deprecated: :class:`PairwiseEncoder` restricted to ``(C, H, D, W)`` volumes."""

    def _check_volume_shape(self, volume_shape: Any) -> tuple[int, ...]:
        # called first by PairwiseEncoder.__init__, so instantiating warns before anything else
        warnings.warn(
            "PairwiseVoxelEncoder is deprecated and will be removed in a future version. Use "
            "PairwiseEncoder instead, which supports any number of spatial dimensions.",
            DeprecationWarning,
            stacklevel=4,  # the frame it named when __init__ warned itself (one above the instantiation)
        )
        _check_4d(volume_shape)
        return super()._check_volume_shape(volume_shape)


def calc_pairwise_coo_indices(
    radius: float,
    volume_shape: Sequence[int],
    diag: bool = False,
    upper: bool | None = None,
    channel_voxel_relation: str = "indep",
    dtype: torch.dtype = torch.int64,
    device: torch.device | str | None = torch.device("cpu"),
) -> dict[tuple[int, ...], torch.Tensor]:
    """Deprecated: :func:`calc_pairwise_coo_indices_nd` for ``(C, H, D, W)`` volumes only."""
    _check_4d(volume_shape)
    return calc_pairwise_coo_indices_nd(
        radius, volume_shape, diag, upper, channel_voxel_relation, dtype, device
    )


calc_pariwise_coo_indices = calc_pairwise_coo_indices  # the 0.2.x misspelling

_trim_nd = trim_nd


def _gen_coords_nd(radius: float, d: int) -> set[tuple[int, ...]]:
    return set(spatial_offsets(radius, d))


def _gen_coords(radius: float) -> set[tuple[int, ...]]:
    return _gen_coords_nd(radius, 3)


def _gen_offsets_nd(
    radius: float,
    d: int,
    upper: bool | None = None,
    num_channels: int = 1,
    channel_voxel_relation: str = "indep",
) -> list[tuple[int, ...]]:
    return gen_offsets_nd(radius, d, upper, num_channels, channel_voxel_relation)


def _gen_offsets(
    radius: float, upper: bool | None = None, num_channels: int = 1, channel_voxel_relation: str = "indep"
) -> list[tuple[int, ...]]:
    return gen_offsets_nd(radius, 3, upper, num_channels, channel_voxel_relation)


def deprecated_getattr(module_name: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving the deprecated names lazily, with 0.2.7's warnings."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - it becomes a module's __getattr__
        if name == "PairwiseVoxelEncoder":
            return PairwiseVoxelEncoder  # warns when instantiated
        if name in ("calc_pairwise_coo_indices", "calc_pariwise_coo_indices"):
            typo = (
                " (calc_pariwise_coo_indices is a misspelt alias kept for old code)"
                if name == "calc_pariwise_coo_indices"
                else ""
            )
            warnings.warn(
                f"{name} is deprecated and will be removed in a future version{typo}. "
                "Use calc_pairwise_coo_indices_nd instead.",
                DeprecationWarning,
                stacklevel=2,
            )
            return calc_pairwise_coo_indices
        raise AttributeError(f"module '{module_name}' has no attribute '{name}'")

    return __getattr__
