"""``sparse_logsumexp`` and ``sparse_bidir_logsumexp``: logsumexp over rows/columns of sparse matrices.

One vectorised path for every layout: each stored value gets a group id (its row, its column, or
its batch item, offset by batch), the per-group maximum is found with ``scatter_reduce`` and the
shifted exponentials are summed with ``index_add``.  With ``include_zeros=True`` every structural
zero counts as the value 0, which matches :func:`torch.logsumexp` on the dense matrix; the count of
zeros per group is known from the shape, so they are added in closed form (``k · exp(−max)``).
Gradients flow through the stored values only (the shift is detached).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import _checks
from ._compat import autocast_fp32
from ._gradients import SparseToValues
from .pattern import SparsePattern, csr_row_indices

_LAYOUTS = (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc)
#: Value dtypes of the logsumexp functions (complex values have no logsumexp order: TypeError).
VALUE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_input(x: Any) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (2, 3):
        raise NotImplementedError(
            f"only 2-D (r, c) and batched 3-D (b, r, c) inputs are supported, got {x.dim()}-D"
        )
    if x.layout not in _LAYOUTS:
        raise NotImplementedError(
            f"input must be torch.sparse_coo, torch.sparse_csr or torch.sparse_csc, got {x.layout}"
        )
    if x.dense_dim() != 0:
        raise ValueError(f"input must have no dense dimensions, got dense_dim()={x.dense_dim()}")
    _checks.require_value_dtype("input", x, VALUE_DTYPES)
    # CSC is validated as the CSR tensor of its transpose (same index tensors)
    _checks.check_sparse_indices("input", x.mT if x.layout == torch.sparse_csc else x)


def _row_col_val(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(batch, row, col, values)`` of every stored entry (int64 indices, batch 0 when 2-D).

    An uncoalesced COO input is coalesced (duplicates summed) first; values stay differentiable
    (COO/CSR through a gradient that keeps the input's layout).
    """
    batched = x.dim() == 3
    b = x.shape[0] if batched else 1
    if x.layout == torch.sparse_coo:
        xc = x if x.is_coalesced() else x.coalesce()
        idx = xc._indices()
        vals = SparseToValues.apply(xc, SparsePattern(xc)) if xc.requires_grad else xc._values()
        if batched:
            return idx[0], idx[1], idx[2], vals
        return torch.zeros_like(idx[0]), idx[0], idx[1], vals
    if x.layout == torch.sparse_csr:
        compressed, plain = x.crow_indices(), x.col_indices()
    else:
        compressed, plain = x.ccol_indices(), x.row_indices()
    per = plain.shape[-1]
    n_major = compressed.shape[-1] - 1
    offs = torch.arange(b, device=x.device)
    flat_c = compressed.reshape(b, compressed.shape[-1]).to(torch.int64)
    flat = torch.cat(
        [
            torch.zeros(1, dtype=torch.int64, device=x.device),
            (flat_c[:, 1:] + (offs * per)[:, None]).reshape(-1),
        ]
    )
    major = csr_row_indices(flat, b * per)
    batch = torch.div(major, n_major, rounding_mode="floor")
    major = major - batch * n_major
    minor = plain.reshape(-1).to(torch.int64)
    if x.layout == torch.sparse_csr:
        vals = SparseToValues.apply(x, SparsePattern(x)) if x.requires_grad else x.values().reshape(-1)
        return batch, major, minor, vals
    vals = x.values().reshape(-1)
    return batch, minor, major, vals


def _scatter_logsumexp(
    values: torch.Tensor, group: torch.Tensor, num_groups: int, zeros_per_group: torch.Tensor | int
) -> torch.Tensor:
    """logsumexp of ``values`` per group, with ``zeros_per_group`` extra zeros in each group."""
    dtype, device = values.dtype, values.device
    neg_inf = torch.full((num_groups,), float("-inf"), dtype=dtype, device=device)
    vmax = neg_inf.scatter_reduce(0, group, values.detach(), reduce="amax", include_self=True)
    zeros = torch.as_tensor(zeros_per_group, device=device)
    vmax = torch.where(zeros > 0, vmax.clamp_min(0), vmax)
    shift = torch.where(torch.isinf(vmax), torch.zeros_like(vmax), vmax)
    total = torch.zeros(num_groups, dtype=dtype, device=device).index_add(
        0, group, torch.exp(values - shift[group])
    )
    total = total + zeros.to(dtype) * torch.exp(-shift)
    return torch.log(total) + shift


def _normalise_dims(dim: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    if not isinstance(dim, (int, tuple, list, torch.Size)):
        raise TypeError(f"dim must be an int or a sequence of ints, got {type(dim).__name__}")
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if len(dims) == 0:
        raise RuntimeError("dim must name at least one dimension, got an empty sequence")
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"dim must contain ints, got {d!r}")
        if not -ndim <= d < ndim:
            raise IndexError(
                f"Dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], but got {d})"
            )
        out.append(d % ndim)
    if len(set(out)) != len(out):
        raise RuntimeError(f"dim {tuple(dims)} names a dimension more than once")
    return tuple(sorted(out))


def _reduce(
    parts: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    shape: tuple[int, ...],
    dims: tuple[int, ...],
    include_zeros: bool,
) -> torch.Tensor:
    """Reduce over matrix dims (1 = rows, 2 = cols, in batched numbering) → ``(b, kept)``."""
    batch, row, col, vals = parts
    b, r, c = shape
    if dims == (1,):
        group, size, cells = batch * c + col, c, r
    elif dims == (2,):
        group, size, cells = batch * r + row, r, c
    else:
        group, size, cells = batch, 1, r * c
    num = b * size
    zeros: torch.Tensor | int = 0
    if include_zeros:
        stored = torch.bincount(group, minlength=num)
        zeros = cells - stored
    return _scatter_logsumexp(vals, group, num, zeros).reshape(b, size)


def _logsumexp_2d(x: torch.Tensor, dims: tuple[int, ...], include_zeros: bool) -> torch.Tensor:
    """2-D input, normalised ``dims`` ⊆ {0, 1}; result of shape ``(c,)``, ``(r,)`` or ``()``."""
    out = _reduce(_row_col_val(x), (1, *x.shape), tuple(d + 1 for d in dims), include_zeros)
    return out.reshape(-1) if len(dims) == 1 else out.reshape(())


def _logsumexp_batched(x: torch.Tensor, dims: tuple[int, ...], include_zeros: bool) -> torch.Tensor:
    """3-D input, normalised ``dims`` ⊆ {1, 2}; result ``(b, c)``, ``(b, r)`` or ``(b,)``."""
    out = _reduce(_row_col_val(x), tuple(x.shape), dims, include_zeros)
    return out if len(dims) == 1 else out.reshape(-1)


@autocast_fp32
def sparse_logsumexp(
    input: torch.Tensor, dim: int | Sequence[int], keepdim: bool = False, include_zeros: bool = True
) -> torch.Tensor:
    """``torch.logsumexp`` of a sparse matrix along ``dim``, computed from its stored values.

    Parameters
    ----------
    input : Tensor
        2-D ``(r, c)`` or batched ``(b, r, c)`` COO, CSR or CSC tensor (int32/int64 indices, no
        dense dimensions).  An uncoalesced COO is coalesced first (duplicates are summed).
    dim : int or sequence of int
        2-D: ``1`` → per row ``(r,)``, ``0`` → per column ``(c,)``, ``(0, 1)`` → scalar.  3-D:
        ``2`` → ``(b, r)``, ``1`` → ``(b, c)``, ``(1, 2)`` → ``(b,)``; the batch cannot be reduced.
        Negative values count from the end.
    keepdim : bool
        Keep reduced dimensions with size 1.
    include_zeros : bool
        ``True``: every absent entry counts as 0 (equal to the dense ``torch.logsumexp``);
        ``False``: only stored values count (an empty group gives ``-inf``).

    Returns
    -------
    Tensor
        Dense result with the values' dtype, on the input's device.  Differentiable through the
        stored values (COO/CSR; PyTorch has no backward for CSC values), with a gradient of the
        input's layout.

    Raises
    ------
    NotImplementedError
        Rank not 2/3, a layout other than COO/CSR/CSC, or reducing the batch dimension.
    ValueError
        A hybrid tensor (dense dimensions), malformed indices (out of range, a ``crow``/``ccol``
        that decreases or does not end at nnz), or a ``meta`` tensor.
    TypeError
        A non-tensor input, values that are not float16, bfloat16, float32 or float64 (integer or
        complex), or a ``dim`` that is not an int or a sequence of ints.
    RuntimeError
        An empty ``dim`` sequence or a repeated dimension.
    IndexError
        A dimension out of range.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import sparse_logsumexp
    >>> x = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    >>> torch.allclose(sparse_logsumexp(x.to_sparse(), 1), torch.logsumexp(x, 1))
    True
    """
    _check_input(input)
    dims = _normalise_dims(dim, input.dim())
    if input.dim() == 3:
        if 0 in dims:
            raise NotImplementedError("the batch dimension (dim 0) of a 3-D input cannot be reduced")
        out = _logsumexp_batched(input, dims, include_zeros)
    else:
        out = _logsumexp_2d(input, dims, include_zeros)
    if keepdim:
        shape = list(input.shape)
        for d in dims:
            shape[d] = 1
        out = out.reshape(shape)
    return out


def _bidir(x: torch.Tensor, include_zeros: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(col (b, c), row (b, r), padded (2, b, G))`` with col/row views into ``padded``."""
    shape = tuple(x.shape) if x.dim() == 3 else (1, *x.shape)
    _, r, c = shape
    parts = _row_col_val(x)
    col = _reduce(parts, shape, (1,), include_zeros)
    row = _reduce(parts, shape, (2,), include_zeros)
    G = max(r, c)
    pad = torch.nn.functional.pad
    padded = torch.stack(
        [pad(col, (0, G - c), value=float("-inf")), pad(row, (0, G - r), value=float("-inf"))]
    )
    return padded[0, :, :c], padded[1, :, :r], padded


def _bidir_2d(x: torch.Tensor, include_zeros: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2-D input → ``(col (c,), row (r,), padded (2, G))``; col and row are views of ``padded``."""
    col, row, padded = _bidir(x, include_zeros)
    return col[0], row[0], padded[:, 0]


def _bidir_batched(x: torch.Tensor, include_zeros: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3-D input → ``(col (b, c), row (b, r), padded (2, b, G))``; col and row are views."""
    return _bidir(x, include_zeros)


@autocast_fp32
def sparse_bidir_logsumexp(
    input: torch.Tensor,
    keepdim: bool = False,
    include_zeros: bool = True,
    output_layout: str = "tuple",
) -> Any:
    """Column-wise and row-wise logsumexp of a sparse matrix in one pass; columns first.

    2-D input gives ``(lse over dim 0 → (c,), lse over dim 1 → (r,))``; 3-D gives ``((b, c),
    (b, r))``.  Equal to two :func:`sparse_logsumexp` calls, and each stored value's gradient is the
    sum of its row and column contributions.

    Parameters
    ----------
    input : Tensor
        As for :func:`sparse_logsumexp`.
    keepdim : bool
        Only with ``output_layout="tuple"``: column result ``(1, c)`` / ``(b, 1, c)``, row result
        ``(r, 1)`` / ``(b, r, 1)``.
    include_zeros : bool
        As for :func:`sparse_logsumexp`.
    output_layout : {"tuple", "padded", "nested"}
        ``"tuple"``: ``(col, row)``; ``"padded"``: one dense ``(2, G)`` or ``(2, b, G)`` tensor with
        ``G = max(r, c)``, ``[0]`` the columns and ``[1]`` the rows, each padded with ``-inf``
        (experimental); ``"nested"``: ``torch.nested.as_nested_tensor([col, row])``.

    Raises
    ------
    ValueError
        Unknown ``output_layout``, or ``keepdim`` with a non-tuple layout; plus the errors of
        :func:`sparse_logsumexp`.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import sparse_bidir_logsumexp
    >>> x = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    >>> col, row = sparse_bidir_logsumexp(x.to_sparse_csr())
    >>> torch.allclose(col, torch.logsumexp(x, 0)), torch.allclose(row, torch.logsumexp(x, 1))
    (True, True)
    """
    _check_input(input)
    if output_layout not in ("tuple", "padded", "nested"):
        raise ValueError(f"unknown output_layout {output_layout!r}; expected 'tuple', 'padded' or 'nested'")
    if keepdim and output_layout != "tuple":
        raise ValueError(f"keepdim is only supported with output_layout='tuple', got {output_layout!r}")
    if input.dim() == 3:
        col, row, padded = _bidir_batched(input, include_zeros)
    else:
        col, row, padded = _bidir_2d(input, include_zeros)
    if output_layout == "padded":
        return padded
    if output_layout == "nested":
        if not hasattr(torch, "nested"):  # pragma: no cover - torch >= 2.5 always has it
            raise NotImplementedError("nested output needs torch >= 2.4")
        return torch.nested.as_nested_tensor([col, row])
    if keepdim:
        col, row = col.unsqueeze(-2), row.unsqueeze(-1)
    return col, row
