"""What every preconditioner shares: input analysis and the :class:`Preconditioner` base class."""

from __future__ import annotations

from typing import Any

import torch

from tsgu_ops.internal import (
    SparsePattern,
    autocast_fp32,
    check_sparse_indices,
    require_not_meta,
    require_value_dtype,
)

from ._operator import fold_block

_SPARSE = (torch.sparse_coo, torch.sparse_csr)


def _pattern_of(A: Any, name: str = "A") -> tuple[SparsePattern, torch.Tensor]:
    """Pattern and canonical (row-major, duplicates summed) values of a square matrix."""
    if not isinstance(A, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(A).__name__}")
    # the dtypes of the solvers: there is no half-precision sparse kernel (under autocast the
    # constructors receive float32, see autocast_fp32), and nothing here is complex
    require_value_dtype(name, A)
    require_not_meta(name, A)
    if A.layout == torch.strided:
        if A.dim() not in (2, 3):
            raise ValueError(f"{name} must be (n, n) or (b, n, n), got shape {tuple(A.shape)}")
        A = A.detach().to_sparse_csr() if A.dim() == 2 else A.detach().to_sparse(layout=torch.sparse_coo)
    if A.layout not in _SPARSE:
        raise ValueError(f"{name} must be a dense, COO or CSR tensor, got layout {A.layout}")
    if A.dim() not in (2, 3) or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name} must be square (n, n) or batched (b, n, n), got shape {tuple(A.shape)}")
    A = A.detach()
    check_sparse_indices(name, A)
    pattern = SparsePattern(A)
    return pattern, pattern._sorted(pattern.values(A))


def _canonical(
    pattern: SparsePattern, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """int64 rows, cols and values, strictly row-major with one entry per coordinate.

    A CSR input may hold unsorted or repeated columns within a row; they are sorted and summed.
    """
    rows, cols = pattern.sorted_rows, pattern.sorted_cols.to(torch.int64)
    keys = rows * pattern.N + cols
    if keys.numel() > 1 and not bool((keys[1:] > keys[:-1]).all()):
        keys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        values = torch.zeros(keys.numel(), dtype=values.dtype, device=values.device).index_add(
            0, inverse, values
        )
        rows, cols = keys // pattern.N, keys % pattern.N
    return rows, cols, values


def _where(pattern: SparsePattern, row: int) -> str:
    """``row r`` (or ``batch item b, row r``) of a flattened row index."""
    if pattern.batch is None:
        return f"row {row}"
    return f"batch item {row // pattern.n}, row {row % pattern.n}"


class Preconditioner:
    """Base class: ``M⁻¹`` on blocks of any leading shape; subclasses implement :meth:`apply_flat`.

    ``symmetric`` says whether ``M⁻¹`` is symmetric positive definite by construction (what CG and
    MINRES need); :attr:`T` is the preconditioner of ``Aᵀ`` (what a backward pass uses).
    """

    symmetric = False

    def __init__(self, pattern: SparsePattern, transposed: bool = False):
        self.pattern = pattern
        self.transposed = transposed

    def apply_flat(self, R: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def vector_into(self, r: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``M⁻¹ r`` for one contiguous vector of the flattened length ``b·n``, written into ``out``.

        What the single-column solver loops call (no reshaping of blocks); subclasses with a
        cheaper form override it.
        """
        return out.copy_(self.apply_flat(r.view(-1, 1)).view(-1))

    @autocast_fp32
    def __call__(self, R: torch.Tensor) -> torch.Tensor:
        # a vector (n,), or (b, n) for a batch of matrices, is applied as a one-column block
        vector = R.dim() == (1 if self.pattern.batch is None else 2)
        block = R.unsqueeze(-1) if vector else R
        flat, unfold = fold_block(block, self.pattern.batch, self.pattern.shape)
        out = unfold(self.apply_flat(flat), self.pattern.n)
        return out.squeeze(-1) if vector else out

    @property
    def T(self) -> Preconditioner:
        """The preconditioner of ``Aᵀ``."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.transposed = not self.transposed
        return other
