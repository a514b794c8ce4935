"""A sparse triangular factor and the four products a Gaussian needs from it, on any sample shape.

Vectors of shape ``(*lead, n)`` (leading sample and batch dimensions) are arranged as the columns of
one dense block: ``(n, M)`` for a 2-D factor, ``(B, n, M)`` for a batched one (the factor's batch is
the last batch dimension), so every product is one call of a tsgu-ops kernel whatever the sample
shape, and gradients reach the factor's values as sparse gradients.
"""

from __future__ import annotations

import torch

from tsgu_ops import sparse_mm, sparse_triangular_solve
from tsgu_ops.pattern import SparsePattern
from tsgu_ops.sampled import PatternMatmul, differentiable_values


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
        p = self.pattern
        values = differentiable_values(self.L, p)
        on = p.rows == p.cols
        d = torch.zeros(p.N, dtype=values.dtype, device=values.device).index_add(0, p.rows[on], values[on])
        return d if self.batch is None else d.reshape(self.batch, self.n)

    def row_sum_sq(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        """``Σ_j L_ij² w_j`` per row; ``w`` (default 1) is ``(*lead, n)``, ending with ``B`` if batched."""
        p = self.pattern
        values = differentiable_values(self.L, p)
        sq = values * values
        if weights is None:
            out = torch.zeros(p.N, dtype=values.dtype, device=values.device).index_add(0, p.rows, sq)
            return out if self.batch is None else out.reshape(self.batch, self.n)
        lead = weights.shape[:-2] if self.batch is not None else weights.shape[:-1]
        w = weights.reshape(*lead, p.N)
        terms = sq * w[..., p.cols]
        out = torch.zeros(*lead, p.N, dtype=terms.dtype, device=terms.device).index_add(-1, p.rows, terms)
        return out.reshape(weights.shape)

    def dense(self) -> torch.Tensor:
        D = self.L.detach().to_dense() if not self.L.requires_grad else self.L.to_dense()
        if self.unit:
            D = D + torch.eye(self.n, dtype=D.dtype, device=D.device)
        return D

    # -- checks for validate_args ---------------------------------------------------------------
    def check(self, name: str) -> None:
        p = self.pattern
        if bool((p.cols > p.rows).any()):
            raise ValueError(f"{name} must be lower triangular: it stores entries above the diagonal")
        if self.unit:
            if bool((p.cols == p.rows).any()):
                raise ValueError(
                    f"{name} must be strictly lower triangular with a separate diagonal (LDLᵀ): it "
                    "stores diagonal entries"
                )
        else:
            d = self.diagonal().detach()
            stored = torch.zeros(p.N, dtype=torch.bool, device=d.device)
            stored[p.rows[p.rows == p.cols]] = True
            if not bool(stored.all()) or not bool((d > 0).all()):
                raise ValueError(f"{name} must have a stored, positive diagonal (LLᵀ form)")
