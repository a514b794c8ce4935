"""The Jacobi (diagonal) preconditioner."""

from __future__ import annotations

import torch

from ._compiled import csr_diagonal, csr_scaled_values, use_compiled
from ._precond_base import Preconditioner, _pattern_of

__all__ = ["Jacobi"]


class Jacobi(Preconditioner):
    """``M = diag(A)``: divides by the diagonal (a zero or missing diagonal entry raises).

    Applying it is one element-wise multiply.  The single-column CG loop goes further and runs
    Jacobi-preconditioned CG as plain CG on the symmetrically scaled matrix
    ``D^-½ A D^-½`` (the same iterates in exact arithmetic), so it costs what CG costs; where
    every diagonal entry is the same positive number (:attr:`scalar`, e.g. a Laplacian on a
    uniform grid) ``M`` is a multiple of the identity, to which CG is blind, and the loop runs
    plain CG on ``A`` itself.

    Examples
    --------
    >>> import torch
    >>> from tsgu_krylov import Jacobi
    >>> A = torch.tensor([[4.0, 1.0], [1.0, 2.0]]).to_sparse()
    >>> Jacobi(A)(torch.ones(2, 1))
    tensor([[0.2500],
            [0.5000]])
    """

    def __init__(self, A: torch.Tensor):
        pattern, values = _pattern_of(A)
        super().__init__(pattern)
        if A.layout == torch.sparse_csr and A.dim() == 2 and use_compiled(values):
            d = csr_diagonal(A)  # one compiled pass over A's own entries
        else:
            rows = pattern.sorted_rows
            on = rows == pattern.sorted_cols
            d = torch.zeros(pattern.N, dtype=values.dtype, device=values.device)
            # every entry adds (0 off the diagonal): no masked selection (a host sync, a compaction)
            d = d.index_add_(0, rows, torch.where(on, values, 0))
        if bool((d == 0).any()):
            raise ValueError("Jacobi preconditioner: A has a zero or missing diagonal entry")
        self.diag = d
        self.inv_diag = (1.0 / d).unsqueeze(-1)
        self._inv = self.inv_diag.view(-1)
        lo, hi = torch.aminmax(d) if d.numel() else (d.new_ones(()), d.new_ones(()))
        #: the common diagonal entry where all are equal and positive (``M = scalar·I``), else ``None``
        self.scalar: float | None = float(lo) if bool((lo == hi) & (lo > 0)) else None

    @property
    def symmetric(self) -> bool:  # type: ignore[override]
        """Positive definite (what CG needs) when every diagonal entry is positive."""
        return bool((self.diag > 0).all())

    def apply_flat(self, R: torch.Tensor) -> torch.Tensor:
        return R * self.inv_diag

    def vector_into(self, r: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.mul(r, self._inv, out=out)

    def scaled_matrix(self, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(D^-½ S D^-½, D^-½)`` for a 2-D CSR ``S`` of this size with a positive diagonal.

        ``None`` when the diagonal has a non-positive entry (no real square root).
        """
        if S.layout != torch.sparse_csr or S.dim() != 2 or S.shape[0] != self.diag.numel():
            return None
        if not bool((self.diag > 0).all()):
            return None
        s = self.diag.rsqrt()
        crow, col = S.crow_indices(), S.col_indices()
        if use_compiled(S.values()):
            values = csr_scaled_values(S, s)
        else:
            s_rows = torch.repeat_interleave(s, crow.diff(), output_size=col.numel())  # s of each row
            values = S.values() * s_rows * s[col]
        scaled = torch.sparse_csr_tensor(crow, col, values, S.shape, check_invariants=False)
        return scaled, s
