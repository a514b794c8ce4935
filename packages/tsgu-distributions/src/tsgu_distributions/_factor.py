"""A sparse triangular factor and the four products a Gaussian needs from it, on any sample shape.

Vectors of shape ``(*lead, n)`` (leading sample and batch dimensions) are arranged as the columns of
one dense block: ``(n, M)`` for a 2-D factor, ``(B, n, M)`` for a batched one (the factor's batch is
the last batch dimension; a batch of one broadcasts over it), so every product is one call of a
tsgu-ops kernel whatever the sample shape, and gradients reach the factor's values as sparse
gradients.

Every path from the factor to a result goes through tsgu-ops (``sparse_mm``,
``sparse_triangular_solve``, ``differentiable_values``, ``sparse_with_values``): the factor is never
indexed, sliced, coalesced or rebuilt with PyTorch's own sparse constructors, whose backward passes
would densify, drop the input's own index list or fail on batched tensors.
"""

from __future__ import annotations

import torch

from tsgu_ops import sparse_mm, sparse_triangular_solve, sparse_with_values
from tsgu_ops.internal import PatternMatmul, SparsePattern, differentiable_values


def _canonical(
    L: torch.Tensor, p: SparsePattern | None = None
) -> tuple[SparsePattern, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``L``'s pattern (``p``, built if not given) and its entries once per coordinate (duplicates
    summed, row-major order): flattened block-diagonal rows and columns, and differentiable values."""
    p = SparsePattern(L) if p is None else p
    values = p._sorted(differentiable_values(L, p))
    return p, p.sorted_rows, p.sorted_cols.to(torch.int64), values


def _derived(L: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A COO tensor shaped like ``L`` holding ``values`` at the flattened coordinates ``rows``,
    ``cols`` (each at most once), differentiable with respect to ``values``.

    Its coordinates are distinct on purpose: PyTorch sums the gradients of two uses of a tensor
    as matrices, and a gradient stored on duplicate coordinates would then count twice.
    """
    n = int(L.shape[-1])
    if L.dim() == 2:
        idx = torch.stack([rows, cols])
    else:
        idx = torch.stack([rows // n, rows % n, cols % n])
    if values.requires_grad and torch.is_grad_enabled():
        like = torch.sparse_coo_tensor(
            idx, torch.zeros(idx.shape[1], dtype=values.dtype, device=values.device), L.shape
        )
        return sparse_with_values(like, values)
    return torch.sparse_coo_tensor(idx, values.detach(), L.shape)


def unit_plus(L: torch.Tensor, pattern: SparsePattern | None = None) -> torch.Tensor:
    """``I + L`` as a sparse COO tensor (``L``'s coordinates plus the whole diagonal).

    Differentiable with respect to ``L``'s values: its gradient reaches ``L`` with ``L``'s own
    layout and indices (through :func:`tsgu_ops.sparse_with_values`).
    """
    p, rows, cols, values = _canonical(L, pattern)
    on = rows == cols
    values = values + on.to(values.dtype)
    has = torch.zeros(p.N, dtype=torch.bool, device=rows.device)
    has[rows[on]] = True
    missing = torch.nonzero(~has).reshape(-1)
    ones = torch.ones(missing.numel(), dtype=values.dtype, device=values.device)
    return _derived(L, torch.cat([rows, missing]), torch.cat([cols, missing]), torch.cat([values, ones]))


def strictly_lower(L: torch.Tensor, pattern: SparsePattern | None = None) -> torch.Tensor:
    """The entries of ``L`` below the diagonal, as a sparse COO tensor (differentiable, as above)."""
    _, rows, cols, values = _canonical(L, pattern)
    keep = rows > cols
    return _derived(L, rows[keep], cols[keep], values[keep])


class Factor:
    """Lower-triangular sparse ``L`` (COO/CSR, ``(n, n)`` or ``(B, n, n)``); ``unit``: ``I + L``."""

    def __init__(self, L: torch.Tensor, unit: bool):
        self.L = L
        self.unit = unit
        self.pattern = SparsePattern(L)
        self.n = int(L.shape[-1])
        self.batch: int | None = int(L.shape[0]) if L.dim() == 3 else None

    # -- arranging (*lead, n) vectors as columns -----------------------------------------------
    def _to_block(self, E: torch.Tensor) -> torch.Tensor:
        n = self.n
        if self.batch is None:
            return E.reshape(-1, n).T
        B = self.batch
        return E.reshape(-1, B, n).permute(1, 2, 0)

    def _from_block(self, X: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        if self.batch is None:
            return X.T.reshape(shape)
        return X.permute(2, 0, 1).reshape(shape)

    def _canonical(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows, columns (flattened block-diagonal coordinates) and values with duplicates summed."""
        _, rows, cols, values = _canonical(self.L, self.pattern)
        return rows, cols, values

    def stores_diagonal(self) -> bool:
        """Whether ``L`` stores at least one entry on its diagonal (one host synchronisation)."""
        p = self.pattern
        return p.nnz > 0 and bool((p.rows == p.cols).any())

    # -- products ------------------------------------------------------------------------------
    def mv(self, E: torch.Tensor) -> torch.Tensor:
        """``L e`` (``(I + L) e`` for a unit factor) for every vector ``e`` of ``E``."""
        X = self._to_block(E)
        Y = self._from_block(sparse_mm(self.L, X.contiguous()), E.shape)
        return Y + E if self.unit else Y

    def mv_t(self, E: torch.Tensor) -> torch.Tensor:
        """``Lᵀ e`` (``(I + L)ᵀ e``)."""
        X = self._to_block(E).contiguous()
        p = self.pattern
        values = differentiable_values(self.L, p)
        Y = p.unflat(PatternMatmul.apply(values, p.flat_rhs(X), p, True), X, p.m)
        Y = self._from_block(Y, E.shape)
        return Y + E if self.unit else Y

    def solve(self, E: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``L⁻¹ e`` (``L⁻ᵀ e`` with ``transpose``), unit diagonal implicit for a unit factor."""
        X = self._to_block(E).contiguous()
        Y = sparse_triangular_solve(self.L, X, upper=False, unitriangular=self.unit, transpose=transpose)
        return self._from_block(Y, E.shape)

    def diagonal(self) -> torch.Tensor:
        """The stored diagonal, ``(n,)`` or ``(B, n)``, differentiable (zeros where none is stored)."""
        rows, cols, values = self._canonical()
        on = rows == cols
        d = torch.zeros(self.pattern.N, dtype=values.dtype, device=values.device)
        d = d.index_add(0, rows[on], values[on])
        return d if self.batch is None else d.reshape(self.batch, self.n)

    def row_sum_sq(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        """``Σ_j L_ij² w_j`` per row; ``w`` (default 1) is ``(*lead, n)``, ending with ``B`` if batched."""
        rows, cols, values = self._canonical()
        N = self.pattern.N
        sq = values * values
        if weights is None:
            out = torch.zeros(N, dtype=values.dtype, device=values.device).index_add(0, rows, sq)
            return out if self.batch is None else out.reshape(self.batch, self.n)
        w = weights.reshape(-1, N)  # (K, B·n): each row holds one vector per batch item
        terms = sq * w[:, cols]
        out = torch.zeros(w.shape[0], N, dtype=terms.dtype, device=terms.device).index_add(1, rows, terms)
        return out.reshape(weights.shape)

    def dense(self) -> torch.Tensor:
        """The dense factor (``I + L`` for a unit one), ``(n, n)`` or ``(B, n, n)``; for small ``n``."""
        rows, cols, values = self._canonical()
        if not torch.is_grad_enabled() or not self.L.requires_grad:
            values = values.detach()
        n = self.n
        b = 1 if self.batch is None else self.batch
        D = torch.zeros(b, n, n, dtype=values.dtype, device=values.device)
        D = D.index_put((rows // n, rows % n, cols % n), values, accumulate=True)
        if self.unit:
            D = D + torch.eye(n, dtype=D.dtype, device=D.device)
        return D[0] if self.batch is None else D

    # -- checks for validate_args ---------------------------------------------------------------
    def check(self, name: str) -> None:
        p = self.pattern
        if bool((p.cols > p.rows).any()):
            raise ValueError(f"{name} must be lower triangular: it stores entries above the diagonal")
        if not self.unit:
            d = self.diagonal().detach()
            stored = torch.zeros(p.N, dtype=torch.bool, device=d.device)
            stored[p.rows[p.rows == p.cols]] = True
            if not bool(stored.all()) or not bool((d.reshape(-1) > 0).all()):
                raise ValueError(
                    f"{name} must store a positive diagonal (LLᵀ form): every diagonal entry must be "
                    "stored and > 0"
                )
