"""A sparse SPD precision matrix ``Q`` (a Gaussian Markov random field) and what a Gaussian needs from it.

Everything comes from one exact sparse Cholesky factorisation (tsgu-cholesky),
``Q[perm][:, perm] = L Lᵀ``, made once per distribution:

* ``log det Q`` — :meth:`tsgu_cholesky.SparseCholesky.logdet`, gradient ``Q⁻¹`` on ``Q``'s stored
  entries by selected inversion (never ``n`` solves);
* the quadratic form ``(x−μ)ᵀ Q (x−μ)`` — one sparse product ``Q (x−μ)``
  (:func:`tsgu_ops.sparse_mm`), gradient ``(x−μ)(x−μ)ᵀ`` sampled on ``Q``'s entries;
* the marginal variances ``diag(Q⁻¹)`` — the selected inverse's diagonal;
* samples ``x = μ + Pᵀ L⁻ᵀ ε``: with ``P v = v[perm]`` (so ``Q = Pᵀ L Lᵀ P``) their covariance is
  ``Pᵀ L⁻ᵀ L⁻¹ P = (Pᵀ L Lᵀ P)⁻¹ = Q⁻¹``; one sparse triangular solve with the factor and a
  scatter by ``perm`` (:meth:`tsgu_cholesky.SparseCholesky.sample`), differentiable with respect
  to ``Q`` by the reverse mode of the sparse factorisation (docs/maths.md).

Vectors ``(*lead, n)`` are arranged as the columns of one block (``(n, M)``, or ``(B, n, M)`` for a
batched ``Q``: its batch is the last batch dimension, a batch of one broadcasts) as in
:mod:`tsgu_distributions._factor`, so each product or solve is one kernel call.
"""

from __future__ import annotations

import torch
from tsgu_cholesky import sparse_cholesky

from tsgu_ops import sparse_mm


class Precision:
    """Sparse SPD ``Q`` (COO/CSR, ``(n, n)`` or ``(B, n, n)``) with its Cholesky factorisation."""

    def __init__(self, Q: torch.Tensor) -> None:
        self.Q = Q
        self.n = int(Q.shape[-1])
        self.batch: int | None = int(Q.shape[0]) if Q.dim() == 3 else None
        try:
            self.cholesky = sparse_cholesky(Q)
        except ValueError as exc:  # tsgu-cholesky calls the matrix "A"
            raise type(exc)(
                f"precision_matrix is not a valid SPD precision (A = precision_matrix): {exc}"
            ) from exc

    # -- arranging (*lead, n) vectors as columns (as _factor.Factor does) -------------------------
    def _to_block(self, E: torch.Tensor) -> torch.Tensor:
        if self.batch is None:
            return E.reshape(-1, self.n).T
        return E.reshape(-1, self.batch, self.n).permute(1, 2, 0)

    def _from_block(self, X: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        if self.batch is None:
            return X.T.reshape(shape)
        return X.permute(2, 0, 1).reshape(shape)

    # -- what the distribution needs -------------------------------------------------------------
    def quadratic(self, E: torch.Tensor) -> torch.Tensor:
        """``eᵀ Q e`` for every vector of ``E`` ``(*lead, n)`` (one sparse product), shape ``lead``."""
        QE = self._from_block(sparse_mm(self.Q, self._to_block(E).contiguous()), E.shape)
        return (E * QE).sum(-1)

    def logdet(self) -> torch.Tensor:
        """``log det Q``: a scalar, or ``(B,)``."""
        return self.cholesky.logdet()

    def inverse_diagonal(self) -> torch.Tensor:
        """``diag(Q⁻¹)``, ``(n,)`` or ``(B, n)``."""
        return self.cholesky.inverse_diagonal()

    def covariance(self) -> torch.Tensor:
        """Dense ``Q⁻¹`` (``n`` solves with the factor; for small ``n``)."""
        eye = torch.eye(self.n, dtype=self.Q.dtype, device=self.Q.device)
        if self.batch is not None:
            eye = eye.expand(self.batch, self.n, self.n)
        return self.cholesky.solve(eye)

    def sample(self, eps: torch.Tensor) -> torch.Tensor:
        """``Pᵀ L⁻ᵀ ε`` for every vector ``ε`` of ``eps`` ``(*lead, n)``: covariance ``Q⁻¹``.

        Differentiable with respect to ``Q`` (:meth:`tsgu_cholesky.SparseCholesky.sample`: the
        reverse mode of the sparse factorisation, a sparse gradient on ``Q``'s pattern).
        """
        X = self.cholesky.sample(self._to_block(eps).contiguous())
        return self._from_block(X, eps.shape)
