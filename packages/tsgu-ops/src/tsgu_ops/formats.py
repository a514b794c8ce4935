"""Conversions between sparse formats, block diagonals, identity and CSR stacking.

Everything here works by index arithmetic on whole index tensors: no Python loop over batch items or
stored entries.  Index dtypes are kept (a CSR int32 input gives a CSR int32 output; PyTorch stores
COO indices as int64 whatever they were built from), and results built from values that need grad
stay differentiable without densifying (see :func:`tsgu_ops.sparse_with_values`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import _checks
from ._gradients import ValuesToSparse, differentiable_values, sparse_grad
from .pattern import SparsePattern, compress_rows, csr_row_indices, quiet

__all__ = [
    "convert_coo_to_csr",
    "convert_coo_to_csr_indices_values",
    "sparse_block_diag",
    "sparse_block_diag_split",
    "sparse_eye",
    "stack_csr",
]


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A CSR tensor; differentiable in ``values`` through the sparse-preserving constructor."""
    template = quiet(
        lambda: torch.sparse_csr_tensor(crow, col, values.detach(), tuple(size), check_invariants=False)
    )
    if torch.is_grad_enabled() and values.requires_grad:
        return ValuesToSparse.apply(values.reshape(-1), SparsePattern(template))  # type: ignore[no-any-return]
    return template


def _values_of(t: torch.Tensor) -> torch.Tensor:
    """Stored values of sparse ``t`` (storage order), differentiable back to ``t`` (sparse gradient)."""
    return differentiable_values(t, SparsePattern(t)).reshape(-1)


def _coo(idx: torch.Tensor, values: torch.Tensor, size: Sequence[int], coalesced: bool) -> torch.Tensor:
    """A 2-D coalesced COO tensor, differentiable in ``values`` without densifying.

    With ``coalesced=False`` the entries are sorted and duplicates summed (an ``index_add``, so the
    gradient of each duplicate is the gradient of its coordinate).
    """
    template = torch.sparse_coo_tensor(
        idx, values.detach(), tuple(size), is_coalesced=coalesced, check_invariants=False
    )
    if not coalesced:
        pattern = SparsePattern(template)
        values = pattern._sorted(values)
        idx = torch.stack([pattern.sorted_rows, pattern.sorted_cols.to(torch.int64)])
        template = torch.sparse_coo_tensor(
            idx, values.detach(), tuple(size), is_coalesced=True, check_invariants=False
        )
    if torch.is_grad_enabled() and values.requires_grad:
        return sparse_grad(SparsePattern(template), values)
    return template


def _sort_coo_indices(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort the columns of a ``(2, nnz)`` or ``(3, nnz)`` index tensor lexicographically.

    Returns ``(sorted_indices, perm)`` with ``sorted_indices = indices[:, perm]``: ``perm[j]`` is the
    original position of the j-th sorted column.  A stable radix-style sort (last row first).

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops.formats import _sort_coo_indices
    >>> _sort_coo_indices(torch.tensor([[1, 0, 1], [0, 2, 1]]))
    (tensor([[0, 1, 1],
            [2, 0, 1]]), tensor([1, 0, 2]))
    """
    _checks.require_tensor("indices", indices)
    if indices.dim() != 2 or indices.shape[0] not in (2, 3):
        raise ValueError(f"indices must have shape (2, nnz) or (3, nnz), got {tuple(indices.shape)}")
    if indices.shape[1] == 0:  # nothing to sort: any dtype (``torch.tensor([])`` is float), as 0.2.7
        return indices, torch.zeros(0, dtype=torch.int64, device=indices.device)
    _checks.require_index_dtype("indices.dtype", indices.dtype)
    perm = torch.arange(indices.shape[1], device=indices.device)
    for r in range(indices.shape[0] - 1, -1, -1):
        perm = perm[torch.argsort(indices[r, perm], stable=True)]
    return indices[:, perm], perm


def _compress_row_indices(row_indices: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Compressed row pointers ``(num_rows + 1,)`` of sorted row indices; keeps their dtype.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops.formats import _compress_row_indices
    >>> _compress_row_indices(torch.tensor([0, 0, 2]), 3)
    tensor([0, 2, 2, 3])
    """
    _checks.require_tensor("row_indices", row_indices)
    if row_indices.dtype not in _checks.INDEX_DTYPES:
        raise TypeError(f"row_indices must have dtype torch.int32 or torch.int64, got {row_indices.dtype}")
    if row_indices.dim() != 1:
        raise ValueError(f"row_indices must be 1-D, got shape {tuple(row_indices.shape)}")
    if isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows <= 0:
        raise ValueError(f"num_rows must be a positive int, got {num_rows!r}")
    if row_indices.numel() and (int(row_indices.min()) < 0 or int(row_indices.max()) >= num_rows):
        raise ValueError(f"row_indices must lie in [0, {num_rows}), got values outside that range")
    return compress_rows(row_indices, num_rows)


def _demcompress_crow_indices(crow_indices: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Row index of every stored entry from compressed row pointers (int64).

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops.formats import _demcompress_crow_indices
    >>> _demcompress_crow_indices(torch.tensor([0, 2, 2, 3]), 3)
    tensor([0, 0, 2])
    """
    _checks.require_tensor("crow_indices", crow_indices)
    if crow_indices.dim() != 1 or crow_indices.numel() != num_rows + 1:
        raise ValueError(
            f"crow_indices must be 1-D with num_rows + 1 = {num_rows + 1} entries, "
            f"got shape {tuple(crow_indices.shape)}"
        )
    return csr_row_indices(crow_indices, int(crow_indices[-1]))


def convert_coo_to_csr_indices_values(
    coo_indices: torch.Tensor, num_rows: int, values: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR ``(crow_indices, col_indices, values_or_perm)`` from COO indices.

    ``coo_indices`` is ``(2, nnz)`` ``[row, col]`` or ``(3, nnz)`` ``[batch, row, col]``, int32 or
    int64 (the outputs keep that dtype).  Entries are sorted by (batch, row, col).  With ``values``,
    duplicate coordinates are summed (``col`` and the values then have the same, de-duplicated
    length); without, the third output is the permutation ``perm`` (int64, ``perm[j]`` = original
    position of the j-th sorted entry) and duplicates are kept, so ``len(col) == len(perm)``.
    Batched output: ``crow (b, num_rows + 1)``, ``col`` and values ``(b, nnz_per_item)`` with
    ``b = max batch id + 1``; every item must have the same nnz (a CSR rule).

    Raises
    ------
    TypeError
        Non-tensor inputs or a non-integer index dtype.
    ValueError
        Index tensors without 2 or 3 rows, row indices ``>= num_rows`` or negative, ``values``
        whose length is not nnz, or batch items with different nnz.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import convert_coo_to_csr_indices_values
    >>> idx = torch.tensor([[1, 0, 1], [0, 1, 0]])
    >>> convert_coo_to_csr_indices_values(idx, 2, torch.tensor([1.0, 2.0, 3.0]))
    (tensor([0, 1, 2]), tensor([1, 0]), tensor([2., 4.]))
    """
    _checks.require_tensor("coo_indices", coo_indices)
    if coo_indices.dim() != 2 or coo_indices.shape[0] < 2:
        raise ValueError(
            f"coo_indices must have at least 2 rows (row, col), got shape {tuple(coo_indices.shape)}"
        )
    if coo_indices.shape[0] > 3:
        raise ValueError(
            f"coo_indices must have at most 3 rows (batch, row, col), got {coo_indices.shape[0]}"
        )
    if coo_indices.dtype not in _checks.INDEX_DTYPES:
        raise TypeError(f"coo_indices must have dtype torch.int32 or torch.int64, got {coo_indices.dtype}")
    if isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows < 0:
        raise ValueError(f"num_rows must be a non-negative int, got {num_rows!r}")
    nnz = coo_indices.shape[1]
    if values is not None:
        _checks.require_tensor("values", values)
        if values.dim() == 0 or values.shape[0] != nnz:
            raise ValueError(
                f"values must have nnz = {nnz} entries along dim 0, got shape {tuple(values.shape)}"
            )
    rows = coo_indices[-2]
    if nnz and (int(rows.max()) >= num_rows or int(coo_indices.min()) < 0):
        raise ValueError(f"row indices must lie in [0, {num_rows}) and indices must be non-negative")
    idx, perm = _sort_coo_indices(coo_indices)
    itype = coo_indices.dtype
    out_vals: torch.Tensor = perm
    if values is not None:
        if nnz:
            new = torch.ones(nnz, dtype=torch.bool, device=idx.device)
            new[1:] = (idx[:, 1:] != idx[:, :-1]).any(0)
            group = torch.cumsum(new.to(torch.int64), 0) - 1
            n_unique = int(group[-1]) + 1
            summed = torch.zeros((n_unique, *values.shape[1:]), dtype=values.dtype, device=values.device)
            out_vals = summed.index_add(0, group, values[perm])
            idx = idx[:, new]
        else:
            out_vals = values[perm]
    if coo_indices.shape[0] == 2:
        return compress_rows(idx[0], num_rows), idx[1], out_vals
    b = int(idx[0].max()) + 1 if idx.shape[1] else 0
    per_item = torch.bincount(idx[0].to(torch.int64), minlength=b)
    if b and bool((per_item != per_item[0]).any()):
        raise ValueError(
            f"batched CSR needs the same nnz in every batch item, got nnz per item {per_item.tolist()}"
        )
    k = idx.shape[1] // b if b else 0
    counts = torch.bincount((idx[0] * num_rows + idx[1]).to(torch.int64), minlength=b * num_rows)
    crow = torch.zeros(b, num_rows + 1, dtype=torch.int64, device=idx.device)
    crow[:, 1:] = torch.cumsum(counts.reshape(b, num_rows), 1)
    return crow.to(itype), idx[2].reshape(b, k), out_vals.reshape(b, k, *out_vals.shape[1:])


def convert_coo_to_csr(sparse_coo_tensor: torch.Tensor) -> torch.Tensor:
    """Convert a 2-D or batched 3-D COO tensor to CSR (duplicates summed).

    Equal to ``A.to_sparse_csr()`` (2-D) and to stacking per-item conversions (3-D; every batch item
    needs the same nnz).  Differentiable in the values without densifying.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import convert_coo_to_csr
    >>> A = torch.tensor([[0.0, 1.0], [2.0, 0.0]]).to_sparse()
    >>> convert_coo_to_csr(A).crow_indices()
    tensor([0, 1, 2])
    """
    _checks.require_tensor("sparse_coo_tensor", sparse_coo_tensor)
    A = sparse_coo_tensor
    if A.layout != torch.sparse_coo:
        raise ValueError(f"Unsupported layout: {A.layout}")
    if A.dim() not in (2, 3) or A.dense_dim() != 0:
        raise ValueError(
            f"sparse_coo_tensor must be 2-D or 3-D without dense dims, got shape {tuple(A.shape)}"
        )
    _checks.check_sparse_indices("sparse_coo_tensor", A)
    A = A if A.is_coalesced() else A.coalesce()
    idx, values = A.indices(), A.values()
    if A.dim() == 2:
        return _csr(compress_rows(idx[0], A.shape[0]), idx[1], values, A.shape)
    b, n = A.shape[0], A.shape[1]
    per_item = torch.bincount(idx[0], minlength=b)
    if b and bool((per_item != per_item[0]).any()):
        raise ValueError(
            f"batched CSR needs the same nnz in every batch item, got nnz per item {per_item.tolist()}"
        )
    k = idx.shape[1] // b if b else 0
    counts = torch.bincount(idx[0] * n + idx[1], minlength=b * n).reshape(b, n)
    crow = torch.zeros(b, n + 1, dtype=torch.int64, device=idx.device)
    crow[:, 1:] = torch.cumsum(counts, 1)
    return _csr(crow, idx[2].reshape(b, k), values.reshape(b, k), A.shape)


def _check_blocks(tensors: Sequence[Any]) -> torch.layout:
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"all arguments must be torch.Tensor, argument {i} is {type(t).__name__}")
    if not tensors:
        raise ValueError("sparse_block_diag needs at least one tensor")
    layouts = {t.layout for t in tensors}
    if len(layouts) != 1 or next(iter(layouts)) not in _checks.SPARSE_LAYOUTS:
        raise ValueError(
            "all tensors must share one sparse layout, torch.sparse_coo or torch.sparse_csr; got "
            f"{sorted(str(x) for x in layouts)}"
        )
    for i, t in enumerate(tensors):
        if t.sparse_dim() != 2:
            raise ValueError(f"every tensor must have sparse_dim() == 2, tensor {i} has {t.sparse_dim()}")
        if t.dense_dim() != 0:
            raise ValueError(f"every tensor must have dense_dim() == 0, tensor {i} has {t.dense_dim()}")
    for i, t in enumerate(tensors):
        _checks.check_sparse_indices(f"sparse_tensors[{i}]", t)
    return next(iter(layouts))


def sparse_block_diag(*sparse_tensors: torch.Tensor) -> torch.Tensor:
    """Block-diagonal matrix of 2-D sparse blocks sharing one layout (COO or CSR).

    Blocks may have different shapes; the result is ``(Σ n_i, Σ m_i)`` in the blocks' layout
    (CSR keeps the index dtype when all blocks share it; COO is coalesced, duplicates summed).  A
    single tensor is returned unchanged.  Differentiable with respect to the blocks (their values
    may require grad, as in 0.2.7): each block receives a sparse gradient with its own layout and
    indices, in ``O(nnz)`` memory.  Any value dtype (complex included) is kept.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import sparse_block_diag
    >>> a = torch.tensor([[1.0]]).to_sparse()
    >>> b = torch.tensor([[0.0, 2.0]]).to_sparse()
    >>> sparse_block_diag(a, b).to_dense()
    tensor([[1., 0., 0.],
            [0., 0., 2.]])
    """
    layout = _check_blocks(sparse_tensors)
    if len(sparse_tensors) == 1:
        return sparse_tensors[0]
    row_off = [0]
    col_off = [0]
    for t in sparse_tensors:
        row_off.append(row_off[-1] + t.shape[0])
        col_off.append(col_off[-1] + t.shape[1])
    size = (row_off[-1], col_off[-1])
    device = sparse_tensors[0].device
    if layout == torch.sparse_coo:
        offs = [torch.tensor([[r], [c]], device=device) for r, c in zip(row_off, col_off)]
        idx = torch.cat([t._indices() + o for t, o in zip(sparse_tensors, offs)], 1)
        values = torch.cat([_values_of(t) for t in sparse_tensors])
        return _coo(idx, values, size, all(t.is_coalesced() for t in sparse_tensors))
    itypes = {t.crow_indices().dtype for t in sparse_tensors}
    itype = itypes.pop() if len(itypes) == 1 else torch.int64
    if size[1] >= 2**31 - 1 or sum(t._nnz() for t in sparse_tensors) >= 2**31 - 1:
        itype = torch.int64
    nnz_off = [0]
    for t in sparse_tensors:
        nnz_off.append(nnz_off[-1] + t._nnz())
    crow = torch.cat(
        [t.crow_indices()[:-1].to(itype) + o for t, o in zip(sparse_tensors, nnz_off)]
        + [torch.tensor([nnz_off[-1]], dtype=itype, device=device)]
    )
    col = torch.cat([t.col_indices().to(itype) + o for t, o in zip(sparse_tensors, col_off)])
    values = torch.cat([_values_of(t) for t in sparse_tensors])
    return _csr(crow, col, values, size)


def sparse_block_diag_split(t: torch.Tensor, *shapes: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """Split a block-diagonal 2-D sparse matrix into its blocks (inverse of :func:`sparse_block_diag`).

    ``shapes`` are the ``(rows_i, cols_i)`` of the blocks.  Unlike torchsparsegradutils 0.2.7, a
    stored entry outside the diagonal blocks raises ``ValueError`` (0.2.7 dropped it for COO and
    produced invalid blocks for CSR).  COO blocks are coalesced.  Differentiable with respect to
    ``t`` (its values may require grad): ``t`` receives a sparse gradient with its own layout and
    indices, in ``O(nnz)`` memory.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import sparse_block_diag, sparse_block_diag_split
    >>> a, b = torch.eye(2).to_sparse_csr(), torch.ones(1, 1).to_sparse_csr()
    >>> [x.to_dense().tolist() for x in sparse_block_diag_split(sparse_block_diag(a, b), (2, 2), (1, 1))]
    [[[1.0, 0.0], [0.0, 1.0]], [[1.0]]]
    """
    _checks.require_tensor("t", t)
    if t.layout not in _checks.SPARSE_LAYOUTS:
        raise ValueError(f"t must be torch.sparse_coo or torch.sparse_csr, got {t.layout}")
    if t.dim() != 2:
        raise ValueError(f"t must be 2-D, got shape {tuple(t.shape)}")
    for s in shapes:
        if len(s) != 2:
            raise ValueError(f"every shape must be (rows, cols), got {tuple(s)}")
    rows = [int(s[0]) for s in shapes]
    cols = [int(s[1]) for s in shapes]
    if sum(rows) != t.shape[0] or sum(cols) != t.shape[1]:
        raise ValueError(f"the shapes add up to ({sum(rows)}, {sum(cols)}), but t has shape {tuple(t.shape)}")
    _checks.check_sparse_indices("t", t)
    device = t.device
    row_off = torch.tensor([0, *rows], device=device).cumsum(0)
    col_off = torch.tensor([0, *cols], device=device).cumsum(0)
    pattern = SparsePattern(t)
    # values in row-major order (a COO input's duplicates summed), differentiable back to t
    values = pattern._sorted(_values_of(t))
    idx = torch.stack([pattern.sorted_rows, pattern.sorted_cols.to(torch.int64)])
    block = torch.searchsorted(row_off[1:], idx[0], right=True)
    cblock = torch.searchsorted(col_off[1:], idx[1], right=True)
    if bool((block != cblock).any()):
        raise ValueError("t has stored entries outside the diagonal blocks given by shapes")
    counts = torch.bincount(block, minlength=len(shapes)).tolist()
    local = idx - torch.stack([row_off[block], col_off[block]])
    out = []
    for li, v, r, c in zip(local.split(counts, 1), values.split(counts), rows, cols):
        if t.layout == torch.sparse_coo:
            out.append(_coo(li, v, (r, c), True))
        else:
            itype = t.crow_indices().dtype
            out.append(_csr(compress_rows(li[0].to(itype), r), li[1].to(itype), v, (r, c)))
    return tuple(out)


def sparse_eye(
    size: Sequence[int],
    *,
    layout: torch.layout = torch.sparse_coo,
    values_dtype: torch.dtype = torch.float64,
    indices_dtype: torch.dtype = torch.int64,
    device: torch.device | str = torch.device("cpu"),
    requires_grad: bool = False,
) -> torch.Tensor:
    """Sparse identity of shape ``(n, n)`` or batched ``(b, n, n)``.

    The default values dtype is float64, as in torchsparsegradutils 0.2.7.  COO output is marked
    coalesced (indices int64, a PyTorch rule); CSR keeps ``indices_dtype``.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import sparse_eye
    >>> sparse_eye((2, 3, 3), layout=torch.sparse_csr, indices_dtype=torch.int32).crow_indices()
    tensor([[0, 1, 2, 3],
            [0, 1, 2, 3]], dtype=torch.int32)
    """
    size = tuple(size)
    if len(size) not in (2, 3):
        raise ValueError(f"size must have 2 or 3 entries, got {len(size)}: {size}")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in size):
        raise ValueError(f"size must contain non-negative ints, got {size}")
    if size[-1] != size[-2]:
        raise ValueError(f"size must be square in its last two entries, got {size}")
    if values_dtype not in _checks.FLOAT_DTYPES:
        raise ValueError(f"values_dtype must be torch.float32 or torch.float64, got {values_dtype}")
    if indices_dtype not in _checks.INDEX_DTYPES:
        raise ValueError(f"indices_dtype must be torch.int32 or torch.int64, got {indices_dtype}")
    if layout not in _checks.SPARSE_LAYOUTS:
        raise ValueError(f"layout must be torch.sparse_coo or torch.sparse_csr, got {layout}")
    n = size[-1]
    b = size[0] if len(size) == 3 else None
    diag = torch.arange(n, dtype=indices_dtype, device=device)
    total = n * (b or 1)
    values = torch.ones(total, dtype=values_dtype, device=device)
    if layout == torch.sparse_coo:
        if b is None:
            idx = torch.stack([diag, diag])
        else:
            batch = torch.arange(b, dtype=indices_dtype, device=device).repeat_interleave(n)
            idx = torch.stack([batch, diag.repeat(b), diag.repeat(b)])
        out = torch.sparse_coo_tensor(idx, values, size, is_coalesced=True, check_invariants=False)
    else:
        crow = torch.arange(n + 1, dtype=indices_dtype, device=device)
        if b is None:
            out = quiet(lambda: torch.sparse_csr_tensor(crow, diag, values, size))
        else:
            out = quiet(
                lambda: torch.sparse_csr_tensor(
                    crow.repeat(b, 1), diag.repeat(b, 1), values.reshape(b, n), size
                )
            )
    return out.requires_grad_(requires_grad)


def stack_csr(tensors: Sequence[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """Stack 2-D CSR tensors of one shape and nnz into a batched CSR ``(len, n, m)``.

    Only ``dim=0`` (or ``-3``) gives a valid batched CSR tensor; other values raise ``ValueError``
    (0.2.7 produced invalid tensors).  Keeps the index dtype; differentiable in the values without
    densifying.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import stack_csr
    >>> stack_csr([torch.eye(2).to_sparse_csr(), 2 * torch.eye(2).to_sparse_csr()]).shape
    torch.Size([2, 2, 2])
    """
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"tensors must be a list or tuple of CSR tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError("tensors must not be empty")
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor) or t.layout != torch.sparse_csr:
            got = t.layout if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"all tensors must be sparse CSR, tensor {i} is {got}")
        if t.dim() != 2:
            raise ValueError(f"all tensors must be 2-D, tensor {i} has shape {tuple(t.shape)}")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"all tensors must have the same shape, got {sorted(shapes)}")
    if dim not in (0, -3):
        raise ValueError(f"only dim=0 gives a valid batched CSR tensor, got dim={dim}")
    for i, t in enumerate(tensors):
        _checks.check_sparse_indices(f"tensors[{i}]", t)
    nnzs = {t._nnz() for t in tensors}
    if len(nnzs) != 1:
        raise ValueError(f"all tensors must have the same nnz to form a batched CSR, got {sorted(nnzs)}")
    itypes = {t.crow_indices().dtype for t in tensors}
    itype = itypes.pop() if len(itypes) == 1 else torch.int64
    crow = torch.stack([t.crow_indices().to(itype) for t in tensors])
    col = torch.stack([t.col_indices().to(itype) for t in tensors])
    values = torch.stack([t.values() for t in tensors])
    return _csr(crow, col, values, (len(tensors), *tensors[0].shape))
