"""``PairwiseEncoder``: per-offset values of an nD volume → a sparse ``(V, V)`` matrix.

All index work happens once, in the constructor: the stored entries are generated directly in
row-major (coalesced / CSR) order — within a row the columns ``lin(p) − lin(o)`` increase as the
offsets' linear shifts decrease, so entries are enumerated row by row over the offsets sorted by
that shift, and no sort is needed — together with, for every entry, the position of its value in
the flattened ``values`` tensor.  A call is then one gather and one sparse constructor, batched by
index arithmetic (no Python loop over offsets or batch items, no re-sorting), and the gradient
reaches ``values`` through tsgu-ops' sparse-preserving constructor: ``O(nnz)`` memory for COO and
CSR alike (PyTorch's own CSR constructor would allocate a dense ``V × V`` gradient).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.autograd.function import Function

from tsgu_ops import _checks
from tsgu_ops.internal import SparsePattern, ValuesToSparse, quiet

from .offsets import check_radius, check_relation, check_volume_shape, gen_offsets_nd

__all__ = ["PairwiseEncoder"]


class _Gather(Function):
    """``flat[:, index]`` whose backward is a scatter (``index`` is injective: no accumulation).

    PyTorch's ``index_select`` backward accumulates with ``index_add``, several times slower than
    the plain copy that an injective index allows.
    """

    @staticmethod
    def forward(ctx: Any, flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.index, ctx.width = index, flat.shape[1]
        return torch.index_select(flat, 1, index)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _Scatter.apply(g, ctx.index, ctx.width), None


class _Scatter(Function):
    """Adjoint of :class:`_Gather` (so that the gather is differentiable to any order)."""

    @staticmethod
    def forward(ctx: Any, g: torch.Tensor, index: torch.Tensor, width: int) -> torch.Tensor:  # type: ignore[override]
        ctx.index = index
        out = g.new_zeros(g.shape[0], width)
        return out.index_copy_(1, index.to(torch.int64), g)

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _Gather.apply(G, ctx.index), None, None


_SHAPE_MSG = "`volume_shape` must be a tuple of at least 2 positive integers, representing [C, *spatial_dims]"


class PairwiseEncoder(nn.Module):
    """Encode per-offset values of a ``(C, *S)`` volume as a sparse ``(V, V)`` matrix, ``V = C·ΠS``.

    ``values[n, c, *s]`` becomes the entry at row ``lin(c, s)`` and column
    ``lin((c, s) − offsets[n])``; values whose partner lies outside the volume are not stored (and
    get a zero gradient).  Typical use: a sparse precision or Cholesky factor of a Gaussian Markov
    random field over an image or a volume.

    Parameters
    ----------
    radius : float
        Neighbourhood radius (≥ 1).
    volume_shape : tuple of int
        ``(C, *S)``, 1 to 5 (or more) spatial axes.
    diag : bool
        Include the diagonal (zero offset, first).
    upper : bool or None
        ``False``: lower triangle only, ``True``: upper triangle only (the exact transpose pattern of
        ``False``, channel couplings included), ``None``: both.
    channel_voxel_relation : {"indep", "intra", "inter"}
        Channel couplings: none, same voxel, same voxel and neighbours.
    layout : torch.sparse_coo or torch.sparse_csr
        Output layout.
    indices_dtype : torch.int32 or torch.int64
        Index dtype of the CSR output (COO indices are always int64 in PyTorch).
    device : torch.device
        Where the index tensors live (``.to()`` moves them).

    Attributes
    ----------
    offsets : list of tuple
        The offsets, in the order of ``values``' offset dimension.
    volume_numel, spatial_dims : int
    indices : Tensor
        COO only: ``(2, nnz)`` pairs, per-offset blocks in offset order (computed on access).
    crow_indices, col_indices : Tensor
        CSR only: the output's index tensors (``indices_dtype``).
    csr_permutation : Tensor or None
        CSR only: ``int64`` map from the offset-ordered entries to CSR order (computed on access).

    Examples
    --------
    >>> import torch
    >>> from tsgu_encoders import PairwiseEncoder
    >>> enc = PairwiseEncoder(1, (1, 3), diag=True, upper=False)
    >>> enc.offsets
    [(0, 0), (0, 1)]
    >>> enc(torch.tensor([[[2.0, 2.0, 2.0]], [[-1.0, -1.0, -1.0]]])).to_dense()
    tensor([[ 2.,  0.,  0.],
            [-1.,  2.,  0.],
            [ 0., -1.,  2.]])
    """

    def __init__(
        self,
        radius: float,
        volume_shape: Sequence[int],
        diag: bool = False,
        upper: bool | None = None,
        channel_voxel_relation: str = "indep",
        layout: torch.layout = torch.sparse_coo,
        indices_dtype: torch.dtype = torch.int64,
        device: torch.device | str | None = torch.device("cpu"),
    ) -> None:
        super().__init__()
        shape = self._check_volume_shape(volume_shape)
        if indices_dtype not in (torch.int32, torch.int64):
            raise ValueError("`indices_dtype` must be torch.int64 or torch.int32 for torch.sparse_coo")
        radius = check_radius(radius)
        check_relation(radius, shape, channel_voxel_relation)
        if upper not in (None, True, False):
            raise ValueError(f"upper must be None, True or False, got {upper!r}")
        self.radius = radius
        self.volume_shape = shape
        self.diag = bool(diag)
        self.upper = upper
        self.channel_voxel_relation = channel_voxel_relation
        self.indices_dtype = indices_dtype
        self.volume_numel = math.prod(shape)
        self.spatial_dims = len(shape) - 1
        self.offsets = gen_offsets_nd(
            radius, self.spatial_dims, upper, shape[0], channel_voxel_relation, diag
        )
        self._build(torch.device("cpu") if device is None else torch.device(device))
        if layout not in (torch.sparse_coo, torch.sparse_csr):
            raise ValueError("layout must be either torch.sparse_coo or torch.sparse_csr")
        self.layout = layout
        self._patterns: dict[int | None, SparsePattern] = {}

    # ------------------------------------------------------------------------------------------
    def _check_volume_shape(self, volume_shape: Any) -> tuple[int, ...]:
        """``volume_shape`` as a tuple of ints, validated first thing (a subclass may narrow it)."""
        return check_volume_shape(volume_shape, _SHAPE_MSG)

    def _build(self, device: torch.device) -> None:
        """Entries in row-major order, their offsets, and where their values are."""
        shape, V = self.volume_shape, self.volume_numel
        strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
        O = torch.tensor(self.offsets, dtype=torch.int64, device=device).reshape(
            len(self.offsets), len(shape)
        )
        shift = (O * torch.tensor(strides, device=device)).sum(1)  # lin(p) − lin(p − o)
        order = torch.argsort(shift, descending=True, stable=True)  # columns ascending within a row
        lin = torch.arange(V, device=device)
        valid = torch.ones(V, len(self.offsets), dtype=torch.bool, device=device)
        for axis, (size, stride) in enumerate(zip(shape, strides)):
            coord = (lin // stride) % size
            partner = coord[:, None] - O[order, axis][None, :]
            valid &= (partner >= 0) & (partner < size)
        counts = valid.sum(1)
        row, k = valid.nonzero(as_tuple=True)  # row-major: by row, then by decreasing shift
        n = order[k]  # offset index of every entry
        self._rows = row
        self._cols = row - shift[n]
        small = len(self.offsets) * V < 2**31 - 1
        self._value_index = (n * V + row).to(torch.int32 if small else torch.int64)
        self._offset_of_entry = n
        crow = torch.zeros(V + 1, dtype=torch.int64, device=device)
        torch.cumsum(counts, 0, out=crow[1:])
        self._crow = crow.to(self.indices_dtype)
        self._col = self._cols.to(self.indices_dtype)

    @property
    def nnz(self) -> int:
        """Stored entries of one output matrix."""
        return int(self._rows.numel())

    @property
    def device(self) -> torch.device:
        return self._rows.device

    @property
    def indices(self) -> torch.Tensor:
        """COO ``(2, nnz)`` pairs, per-offset blocks in offset order (0.2.7 attribute)."""
        if self.layout != torch.sparse_coo:
            raise AttributeError("'PairwiseEncoder' with a CSR layout has no attribute 'indices'")
        order = self._offset_order()
        return torch.stack([self._rows[order], self._cols[order]])

    @property
    def crow_indices(self) -> torch.Tensor:
        if self.layout != torch.sparse_csr:
            raise AttributeError("'PairwiseEncoder' with a COO layout has no attribute 'crow_indices'")
        return self._crow

    @property
    def col_indices(self) -> torch.Tensor:
        if self.layout != torch.sparse_csr:
            raise AttributeError("'PairwiseEncoder' with a COO layout has no attribute 'col_indices'")
        return self._col

    @property
    def csr_permutation(self) -> torch.Tensor | None:
        """CSR: ``perm`` with ``csr_values = offset_ordered_values[perm]`` (0.2.7 attribute)."""
        if self.layout != torch.sparse_csr:
            return None
        order = self._offset_order()
        perm = torch.empty_like(order)
        perm[order] = torch.arange(order.numel(), device=order.device)
        # perm[j] = position in offset order of CSR entry j
        return perm

    def _offset_order(self) -> torch.Tensor:
        """Permutation from row-major entry order to (offset, row) order."""
        key = self._offset_of_entry * self.volume_numel + self._rows
        return torch.argsort(key)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> PairwiseEncoder:  # type: ignore[override]
        super()._apply(fn)
        for name in ("_rows", "_cols", "_value_index", "_offset_of_entry", "_crow", "_col"):
            t = getattr(self, name)
            moved = fn(t)
            setattr(self, name, moved if moved.dtype == t.dtype else t.to(moved.device))
        self._patterns = {}
        return self

    # ------------------------------------------------------------------------------------------
    def _pattern(self, batch: int | None) -> SparsePattern:
        """The output's index structure for a batch size, built once and kept."""
        pattern = self._patterns.get(batch)
        if pattern is not None:
            return pattern
        V, nnz, dev = self.volume_numel, self.nnz, self.device
        if self.layout == torch.sparse_coo:
            if batch is None:
                idx = torch.stack([self._rows, self._cols])
                like = torch.sparse_coo_tensor(idx, torch.zeros(nnz, device=dev), (V, V), is_coalesced=True)
            else:
                b = torch.arange(batch, device=dev).repeat_interleave(nnz)
                idx = torch.stack([b, self._rows.repeat(batch), self._cols.repeat(batch)])
                like = torch.sparse_coo_tensor(
                    idx, torch.zeros(batch * nnz, device=dev), (batch, V, V), is_coalesced=True
                )
        else:
            crow, col = self._crow, self._col
            shape: tuple[int, ...] = (V, V)
            if batch is not None:
                crow, col, shape = crow.expand(batch, -1), col.expand(batch, -1), (batch, V, V)
            like = quiet(
                lambda: torch.sparse_csr_tensor(
                    crow, col, torch.zeros(col.shape, device=dev), shape, check_invariants=False
                )
            )
        pattern = SparsePattern(like)
        self._patterns[batch] = pattern
        return pattern

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """The sparse matrix (or batch of matrices) holding ``values``.

        Parameters
        ----------
        values : Tensor
            ``(N, C, *S)`` or ``(B, N, C, *S)`` with ``N = len(offsets)``; float32 or float64.

        Returns
        -------
        Tensor
            ``(V, V)`` or ``(B, V, V)``, in the encoder's layout (COO coalesced, indices int64;
            CSR with ``indices_dtype``), dtype of ``values``; differentiable w.r.t. ``values``.
        """
        k = self.spatial_dims + 2
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
        if values.layout != torch.strided:
            raise ValueError(
                f"values must be a dense (strided) tensor (N, C, *spatial_dims) or (B, N, C, "
                f"*spatial_dims), got layout {values.layout}"
            )
        _checks.require_not_meta("values", values)
        if values.dim() not in (k, k + 1):
            raise ValueError(
                f"values must have {k} dimensions (N, C, *spatial_dims) or {k + 1} dimensions "
                f"(B, N, C, *spatial_dims)"
            )
        spatial = tuple(values.shape[-self.spatial_dims :])
        if spatial != self.volume_shape[1:]:
            raise ValueError(
                f"Spatial dimensions do not match: expected {self.volume_shape[1:]}, got {spatial}"
            )
        if values.shape[-k] != len(self.offsets):
            raise ValueError(
                f"Shape of values at index {-k} ({values.shape[-k]}) must match number of offsets "
                f"({len(self.offsets)})"
            )
        if values.shape[-k + 1] != self.volume_shape[0]:
            raise ValueError(
                f"Shape of values at index {-k + 1} ({values.shape[-k + 1]}) must match the number of "
                f"channels ({self.volume_shape[0]})"
            )
        if values.dtype not in (torch.float32, torch.float64):
            raise ValueError("values must be either torch.float32 or torch.float64 for sparse tensors")
        if values.device != self.device:
            raise ValueError(f"values must be on the encoder's device {self.device}, got {values.device}")
        batch = values.shape[0] if values.dim() == k + 1 else None
        if batch == 0:
            raise ValueError(
                "values has an empty batch (B = 0): a batched sparse tensor needs at least one item; "
                f"got shape {tuple(values.shape)}"
            )
        flat = values.reshape(batch or 1, -1)
        entries = _Gather.apply(flat, self._value_index)  # (B, nnz) in output order
        pattern = self._pattern(batch)
        return ValuesToSparse.apply(entries.reshape(-1), pattern)  # type: ignore[no-any-return]

    def extra_repr(self) -> str:
        return (
            f"radius={self.radius}, volume_shape={self.volume_shape}, diag={self.diag}, upper={self.upper}, "
            f"channel_voxel_relation={self.channel_voxel_relation!r}, layout={self.layout}, "
            f"offsets={len(self.offsets)}, nnz={self.nnz}"
        )
