"""torch sparse tensors ↔ ``scipy.sparse`` matrices, sharing memory where the layouts allow.

* CSR ↔ ``csr_matrix``: values, column indices and row pointers are shared in both directions
  (NumPy views of the tensors' buffers and ``torch.from_numpy``); the index dtype is kept
  (SciPy would downcast int64 to int32 when the values fit: the original arrays are put back).
* COO ↔ ``coo_matrix``: the values and the index rows are shared; torch COO indices are int64, so
  an int32 SciPy matrix's indices are widened on the way back.  An uncoalesced COO tensor is
  coalesced once, with a warning (SciPy would sum duplicates in every operation anyway).
* A batched ``(b, n, m)`` tensor becomes a list of ``b`` matrices (and a list comes back stacked).
* Tensors that require grad are detached for export.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ._checks import EXPORT_DTYPES, check_matrix

__all__ = ["from_scipy", "to_scipy"]


def _coalesced(x: torch.Tensor) -> torch.Tensor:
    if not x.is_coalesced():
        warnings.warn(
            "exporting a non-coalesced tensor -> coalescing implicitly (duplicates are summed)",
            UserWarning,
            stacklevel=3,
        )
        x = x.coalesce()
    return x


def _check(x: Any, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.layout not in (torch.sparse_coo, torch.sparse_csr):
        raise ValueError(f"{name} must be a sparse COO or CSR tensor, got layout {x.layout}")
    if x.dim() not in (2, 3) or x.dense_dim() != 0:
        raise ValueError(
            f"{name} must be 2-D (n, m) or batched (b, n, m) without dense dimensions, got {tuple(x.shape)}"
        )
    # SciPy trusts the indices it is handed (shared memory, no copy): check them, and the dtype
    # (scipy.sparse holds no float16/bfloat16), before it sees them.
    check_matrix(name, x, EXPORT_DTYPES)
    if x.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU for SciPy, got {x.device} (use the CuPy bridge on CUDA)")
    return x.detach()


def _csr_to_scipy(
    crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]
) -> sp.csr_matrix:
    indptr, indices = crow.numpy(), col.numpy()
    m = sp.csr_matrix((values.numpy(), indices, indptr), shape=shape, copy=False)
    if m.indices.dtype != indices.dtype:  # keep the tensor's index dtype (and its memory)
        m.indices, m.indptr = indices, indptr
    return m


def _coo_to_scipy(idx: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]) -> sp.coo_matrix:
    row, col = idx[0].numpy(), idx[1].numpy()
    m = sp.coo_matrix((values.numpy(), (row, col)), shape=shape, copy=False)
    if m.row.dtype != row.dtype:
        m.row, m.col = row, col
    return m


def to_scipy(x: torch.Tensor) -> Any:
    """A CPU COO/CSR tensor as a ``scipy.sparse`` matrix of the same layout (a list if batched).

    Examples
    --------
    >>> import torch
    >>> from tsgu_bridges import to_scipy
    >>> m = to_scipy(torch.eye(2).to_sparse_csr())
    >>> type(m).__name__, m.indices.dtype
    ('csr_matrix', dtype('int64'))
    """
    x = _check(x)
    if x.layout == torch.sparse_csr:
        if x.dim() == 2:
            return _csr_to_scipy(x.crow_indices(), x.col_indices(), x.values(), tuple(x.shape))
        return [
            _csr_to_scipy(c, i, v, tuple(x.shape[1:]))
            for c, i, v in zip(x.crow_indices(), x.col_indices(), x.values())
        ]
    x = _coalesced(x)
    idx, vals = x.indices(), x.values()
    if x.dim() == 2:
        return _coo_to_scipy(idx, vals, tuple(x.shape))
    counts = torch.bincount(idx[0], minlength=x.shape[0]).tolist()
    out = []
    for part_i, part_v in zip(torch.split(idx[1:], counts, dim=1), torch.split(vals, counts)):
        out.append(_coo_to_scipy(part_i.contiguous(), part_v, tuple(x.shape[1:])))
    return out


def from_scipy(m: Any, layout: torch.layout | None = None) -> torch.Tensor:
    """A ``scipy.sparse`` matrix (or a list of equal-shape ones) as a torch COO/CSR tensor.

    ``layout`` defaults to CSR for CSR input and COO otherwise; other SciPy formats are converted.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from tsgu_bridges import from_scipy
    >>> from_scipy(sp.eye(2, format="csr")).to_dense()
    tensor([[1., 0.],
            [0., 1.]], dtype=torch.float64)
    """
    if isinstance(m, (list, tuple)):
        if not m:
            raise ValueError("cannot stack an empty list of matrices")
        parts = [from_scipy(x, layout) for x in m]
        if parts[0].layout == torch.sparse_coo:
            return torch.stack(parts).coalesce()
        from tsgu_ops import stack_csr

        return stack_csr(parts)
    if not sp.issparse(m):
        raise TypeError(f"m must be a scipy.sparse matrix or a list of them, got {type(m).__name__}")
    if layout is None:
        layout = torch.sparse_csr if m.format == "csr" else torch.sparse_coo
    if layout == torch.sparse_csr:
        c = m.tocsr()
        return torch.sparse_csr_tensor(
            torch.from_numpy(np.asarray(c.indptr)),
            torch.from_numpy(np.asarray(c.indices)),
            torch.from_numpy(np.asarray(c.data)),
            c.shape,
        )
    if layout == torch.sparse_coo:
        c = m.tocoo()
        idx = torch.stack([torch.from_numpy(np.asarray(c.row)), torch.from_numpy(np.asarray(c.col))]).to(
            torch.int64
        )
        return torch.sparse_coo_tensor(idx, torch.from_numpy(np.asarray(c.data)), c.shape)
    raise ValueError(f"layout must be torch.sparse_coo or torch.sparse_csr, got {layout}")
