"""Sparse Cholesky factorisation, log-determinant, solve and selected inverse with sparse gradients.

Conventions shared by every function of this module:

* ``A`` is a symmetric positive definite COO or CSR tensor ``(n, n)``, or a batch ``(b, n, n)``
  (one block-diagonal problem; items may have different patterns), int32/int64 indices,
  float32/float64 values.  Its pattern must be symmetric and store the whole diagonal; its values
  must be symmetric to ``max(1e-6, 1000·eps)`` relative to ``max |A|``.  An uncoalesced COO tensor
  is the sum of its duplicates.
* **The symmetric reading.**  ``A`` is read as its symmetric part ``S = (A + Aᵀ)/2`` (equal to
  ``A`` for a symmetric matrix), and every gradient is the exact gradient of that function.  The
  gradient therefore treats ``A[i, j]`` and ``A[j, i]`` alike: for ``log det``, ``∂/∂A[i, j] =
  (A⁻¹)[j, i] = (A⁻¹)[i, j]``, which is what dense autograd of ``torch.linalg.slogdet`` gives at
  those entries; for the solve and the selected inverse it is the symmetrised dense gradient
  (``sym(M) = (M + Mᵀ)/2`` of the gradient ``M`` that dense autograd gives for a general matrix).
  Through any symmetric parametrisation (``A`` built with ``A[i, j] = A[j, i] = θ_k``) both give
  the same gradient of ``θ``.
* Gradients are sparse with ``A``'s layout, pattern and index dtype (:func:`tsgu_ops.internal.deliver`).
* The factorisation is computed in float64 on the CPU (float32 results are rounded from it); a
  CUDA tensor makes a host round trip and its results come back to its device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.autograd.function import Function

from tsgu_ops.internal import (
    SampledProduct,
    SparsePattern,
    autocast_fp32,
    differentiable_values,
    sparse_grad,
)

from . import _engine
from ._checks import check_rhs, check_spd_matrix
from ._cholesky_adjoint import (
    FactorStructure,
    cholesky_adjoint,
    factor_structure,
    lower_solve,
    lower_transpose_solve,
    sampled,
)
from ._engine import Analysis, NotPositiveDefiniteError

__all__ = [
    "NotPositiveDefiniteError",
    "SparseCholesky",
    "analyze",
    "sparse_cholesky",
    "sparse_cholesky_solve",
    "sparse_inverse_diagonal",
    "sparse_logdet",
    "sparse_selected_inverse",
]


# ------------------------------------------------------------------------------------------------
# values in original (storage) order <-> canonical order (row-major, one per coordinate)


def _to_canonical(pattern: SparsePattern, v: torch.Tensor) -> torch.Tensor:
    if pattern.canon is not None:  # duplicates: a coordinate holds the sum of its entries
        out = torch.zeros(pattern.n_canonical, dtype=v.dtype, device=v.device)
        return out.index_add(0, pattern.canon, v)
    return v if pattern.perm is None else v.index_select(0, pattern.perm)


def _from_canonical(pattern: SparsePattern, c: torch.Tensor) -> torch.Tensor:
    if pattern.canon is not None:
        return c.index_select(0, pattern.canon)
    if pattern.perm is None:
        return c
    return torch.empty_like(c).index_copy_(0, pattern.perm, c)


def _symmetry_rtol(dtype: torch.dtype) -> float:
    return max(1e-6, 1000 * torch.finfo(dtype).eps)


def _canonical_coordinates(pattern: SparsePattern) -> tuple[np.ndarray, np.ndarray]:
    rows = pattern.sorted_rows.detach().to("cpu", torch.int64).numpy()
    cols = pattern.sorted_cols.detach().to("cpu", torch.int64).numpy()
    return rows, cols


def _describe(index: int, n: int, batched: bool) -> str:
    return f"({index % n}, ·)" + (f" of batch item {index // n}" if batched else "")


def _structure(
    pattern: SparsePattern,
) -> tuple[np.ndarray, np.ndarray, Analysis | None, np.ndarray, np.ndarray]:
    """Canonical coordinates, the cached analysis (if any), transposed and diagonal positions."""
    rows, cols = _canonical_coordinates(pattern)
    n, batch = pattern.n, pattern.batch
    cached = _engine.cached_analysis(rows, cols, n, batch)
    if cached is not None:
        return rows, cols, cached, cached.transpose, cached.diag
    N = pattern.N
    transpose = _engine.transposed_positions(rows, cols, N)
    if transpose is None:
        raise ValueError(
            "A must have a symmetric sparsity pattern (an entry (i, j) stored for every stored (j, i)); "
            "got a structurally non-symmetric A"
        )
    diag, missing = _engine.diagonal_positions(rows, cols, N)
    if missing is not None:
        where = f"({missing % n}, {missing % n})" + (
            f" of batch item {missing // n}" if batch is not None else ""
        )
        raise ValueError(
            "A must store every diagonal entry (an SPD matrix has a positive diagonal); "
            f"entry {where} is missing"
        )
    return rows, cols, None, transpose, diag


class _Factor:
    """Everything one factorisation of ``A`` gives: shared by the forward and every backward."""

    def __init__(self, A: torch.Tensor, pattern: SparsePattern, values: torch.Tensor) -> None:
        self.pattern = pattern
        self.device = A.device
        self.dtype = A.dtype
        self.batched = pattern.batch is not None
        self.items = 1 if pattern.batch is None else pattern.batch
        self.n = pattern.n
        self.empty = pattern.N == 0
        self.analysis: Analysis | None = None
        self._c: np.ndarray | None = None
        if self.empty:
            self.S = np.zeros(0)
            return
        vd = values.detach().to("cpu", torch.float64)
        if not bool(np.isfinite(vd.numpy()).all()):  # NumPy: no thread pool to wake for a check
            raise ValueError("A must have finite values, got NaN or Inf among its stored values")
        rows, cols, analysis, transpose, diag = _structure(pattern)
        vc = _to_canonical(pattern, vd).numpy()
        scale = float(np.abs(vc).max()) if vc.size else 0.0
        asym = np.abs(vc - vc[transpose])
        if vc.size and float(asym.max()) > _symmetry_rtol(self.dtype) * scale:
            k = int(np.argmax(asym))
            raise ValueError(
                "A must be symmetric: A[i, j] and A[j, i] differ by "
                f"{float(asym[k]):.3g} at (i, j) = ({rows[k] % self.n}, {cols[k] % self.n})"
                + (f" of batch item {rows[k] // self.n}" if self.batched else "")
                + f", more than {_symmetry_rtol(self.dtype):.0e} of max |A| = {scale:.3g}"
            )
        self.S = 0.5 * (vc + vc[transpose])
        dvals = self.S[diag]
        if not bool((dvals > 0).all()):
            i = int(np.argmin(dvals > 0))
            raise NotPositiveDefiniteError(
                f"A is not positive definite: the pivot of column {i % self.n}"
                + (f" of batch item {i // self.n}" if self.batched else "")
                + f" is {float(dvals[i]):.6g} (its diagonal entry, must be > 0); if A should be SPD, "
                "add a diagonal shift A + s·I"
            )
        if analysis is None:
            analysis = _engine.build_analysis(rows, cols, self.n, pattern.batch, transpose, diag)
            _engine.remember(analysis)
        self.numeric = _engine.Numeric(analysis, self.S)
        self.analysis = analysis
        self._items_of_entries: torch.Tensor | None = None

    # -- results as tensors ---------------------------------------------------------------------
    def _tensor(self, x: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(device=self.device, dtype=dtype or self.dtype)

    def logdet(self) -> torch.Tensor:
        if self.empty:
            return torch.zeros(self.items, dtype=self.dtype, device=self.device)
        return self._tensor(self.numeric.logdet())

    def inverse_canonical(self) -> torch.Tensor:
        """``S⁻¹`` at the canonical entries."""
        if self.empty:
            return torch.zeros(self.pattern.n_canonical, dtype=self.dtype, device=self.device)
        return self._tensor(self.numeric.inverse_on_pattern())

    def tangent_canonical(self, g: torch.Tensor) -> torch.Tensor:
        """``−S⁻¹ sym(G) S⁻¹`` at the canonical entries, ``G`` given at the canonical entries."""
        if self.empty:
            return torch.zeros_like(g)
        a = self.analysis
        assert a is not None
        e = g.detach().to("cpu", torch.float64).numpy()
        e = 0.5 * (e + e[a.transpose])
        return self._tensor(self.numeric.tangent_inverse_on_pattern(self.S, e), g.dtype)

    def solve(self, B: torch.Tensor) -> torch.Tensor:
        """``S⁻¹ B`` for a flattened ``(N, p)`` right-hand side."""
        if self.empty or B.numel() == 0:
            return torch.zeros_like(B)
        X = self.numeric.solve(B.detach().to("cpu", torch.float64).numpy())
        return self._tensor(X, B.dtype)

    # -- samples x = Pᵀ C⁻ᵀ ε (C = L D^½, the Cholesky factor of P S Pᵀ) and their adjoint --------
    def _sample_maps(self) -> tuple[FactorStructure, np.ndarray, np.ndarray, np.ndarray]:
        """Row structure of ``L``; slot ↔ step maps; the symmetric reading's weight per entry.

        A slot ``b·n + r`` of a flattened right-hand side is the ``r``-th elimination step of
        item ``b`` (the order :attr:`SparseCholesky.perm` and :attr:`SparseCholesky.L` use);
        ``step_of_slot`` maps it to the step of the flattened (block-diagonal) factor.
        """
        a = self.analysis
        assert a is not None
        hit = a.derived.get("sample")
        if hit is None:
            st = factor_structure(a.l_indptr, a.l_indices)
            step_of_slot = np.argsort(a.order // a.n, kind="stable")
            slot_of_step = np.empty_like(step_of_slot)
            slot_of_step[step_of_slot] = np.arange(a.N, dtype=step_of_slot.dtype)
            # S = (A + Aᵀ)/2: an off-diagonal stored value reaches the lower entry read by the
            # factorisation with weight ½ (the other half through its mirror), a diagonal one fully
            half = np.where(a.rows != a.cols, 0.5, 1.0)
            hit = (st, step_of_slot, slot_of_step, half)
            a.derived["sample"] = hit
        return hit  # type: ignore[no-any-return]

    def factor_values(self) -> np.ndarray:
        """The values of ``C = L D^½`` on the pattern of ``L`` (CSC order), computed once."""
        if self._c is None:
            st = self._sample_maps()[0]
            self._c = self.numeric.l_data * np.sqrt(self.numeric.d)[st.col]
        return self._c

    def sample(self, E: torch.Tensor) -> tuple[torch.Tensor, np.ndarray | None]:
        """``Pᵀ C⁻ᵀ ε`` for a flattened ``(N, p)`` ``ε`` (slots as in :meth:`_sample_maps`).

        Also returns ``W = C⁻ᵀ ε`` (float64, elimination order) for the backward pass.
        """
        if self.empty or E.numel() == 0:
            return torch.zeros_like(E), None
        a, num = self.analysis, self.numeric
        assert a is not None
        _, _, slot_of_step, _ = self._sample_maps()
        e = E.detach().to("cpu", torch.float64).numpy()
        W = lower_transpose_solve(a.l_indptr, a.l_indices, num.l_data, num.d, e[slot_of_step])
        return self._tensor(W[a.perm], E.dtype), W  # x[i] = W[step of unknown i]

    def sample_adjoint(
        self, W: np.ndarray | None, G: torch.Tensor, values: bool, eps: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Gradients of a sample for the upstream ``G`` ``(N, p)``: canonical values of ``A``, and ``ε``.

        ``Ḡ_p = P G``, ``V = C⁻¹ Ḡ_p`` (the gradient of ``ε``), ``C̄ = −(W Vᵀ)`` on the pattern of
        ``C``, ``Ā`` by the reverse mode of the factorisation, then the symmetric reading.
        """
        if self.empty or W is None:
            dv = torch.zeros(self.pattern.n_canonical, dtype=G.dtype, device=G.device) if values else None
            return dv, (torch.zeros_like(G) if eps else None)
        a, num = self.analysis, self.numeric
        assert a is not None
        st, step_of_slot, _, half = self._sample_maps()
        g = G.detach().to("cpu", torch.float64).numpy()
        V = lower_solve(a.l_indptr, a.l_indices, num.l_data, num.d, g[a.order])
        dE = self._tensor(V[step_of_slot], G.dtype) if eps else None
        dv = None
        if values:
            cbar = -sampled(a.l_indptr, a.l_indices, st.col, W, V)
            abar = cholesky_adjoint(a.l_indptr, a.l_indices, self.factor_values(), cbar, st)
            dv = self._tensor(abar[a.z_pos] * half, G.dtype)
        return dv, dE

    def items_of_entries(self) -> torch.Tensor:
        """Batch item of every stored entry (original order)."""
        if self._items_of_entries is None:
            self._items_of_entries = torch.div(self.pattern.rows, self.n, rounding_mode="floor")
        return self._items_of_entries


# ------------------------------------------------------------------------------------------------
# autograd Functions on A's values (original order); the sparse gradient is made by tsgu-ops


class _Logdet(Function):
    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, fac: _Factor) -> torch.Tensor:  # type: ignore[override]
        ctx.fac = fac
        ctx.save_for_backward(v)
        out = fac.logdet()
        return out if fac.batched else out.reshape(())

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        (v,) = ctx.saved_tensors
        fac: _Factor = ctx.fac
        if not ctx.needs_input_grad[0]:
            return None, None
        if torch.is_grad_enabled():  # create_graph: the gradient itself is differentiable
            z = _from_canonical(fac.pattern, _SelectedInverse.apply(v, fac))
        else:
            z = _from_canonical(fac.pattern, fac.inverse_canonical())
        gi = g.reshape(-1).index_select(0, fac.items_of_entries()) if fac.batched else g
        return gi * z, None


class _SelectedInverse(Function):
    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, fac: _Factor) -> torch.Tensor:  # type: ignore[override]
        ctx.fac = fac
        return fac.inverse_canonical()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "the selected inverse (and so the gradient of sparse_logdet) is differentiable once: "
                "create_graph=True through sparse_selected_inverse / sparse_inverse_diagonal, or a third "
                "derivative of sparse_logdet, is not supported"
            )
        fac: _Factor = ctx.fac
        return _from_canonical(fac.pattern, fac.tangent_canonical(g)), None


class _Solve(Function):
    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, B: torch.Tensor, fac: _Factor) -> torch.Tensor:  # type: ignore[override]
        ctx.fac = fac
        X = fac.solve(B)
        ctx.save_for_backward(v, X)
        return X

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        v, X = ctx.saved_tensors
        fac: _Factor = ctx.fac
        Gb = _Solve.apply(v, G, fac)  # S is symmetric: the adjoint solve is the same solve
        dv = None
        if ctx.needs_input_grad[0]:
            p = fac.pattern
            dv = -0.5 * (SampledProduct.apply(Gb, X, p) + SampledProduct.apply(X, Gb, p))
        return dv, (Gb if ctx.needs_input_grad[1] else None), None


class _Sample(Function):
    """``x = Pᵀ C⁻ᵀ ε`` (a draw with covariance ``S⁻¹``), differentiable once in ``A`` and ``ε``."""

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, E: torch.Tensor, fac: _Factor) -> torch.Tensor:  # type: ignore[override]
        ctx.fac = fac
        X, ctx.W = fac.sample(E)
        return X

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "SparseCholesky.sample (and so SparseMultivariateNormal(precision_matrix=Q).rsample) "
                "is differentiable once: create_graph=True through a sample is not supported. "
                "Differentiate the sample without create_graph, or take the sample from a detached "
                "matrix (A.detach()) so that the second derivative reaches the other inputs only; "
                "log_prob and sparse_logdet are twice differentiable in A"
            )
        fac: _Factor = ctx.fac
        dv, dE = fac.sample_adjoint(ctx.W, G, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        if dv is not None:
            dv = _from_canonical(fac.pattern, dv)
        return dv, dE, None


# ------------------------------------------------------------------------------------------------


class SparseCholesky:
    """The Cholesky factorisation of a sparse SPD matrix: ``A[perm][:, perm] = L Lᵀ``.

    Made by :func:`sparse_cholesky`.  Its methods reuse the one numeric factorisation (forward and
    backward) and are differentiable with respect to ``A`` (sparse gradients, the symmetric
    reading of the module docstring) and ``B``.

    Attributes
    ----------
    shape : torch.Size
        ``A``'s shape.
    analysis : Analysis or None
        The symbolic analysis (cached per pattern); ``None`` for an empty matrix.

    Examples
    --------
    >>> import torch
    >>> from tsgu_cholesky import sparse_cholesky
    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64).to_sparse_csr()
    >>> F = sparse_cholesky(A)
    >>> round(float(F.logdet()), 6) == round(float(torch.logdet(A.to_dense())), 6)
    True
    >>> F.solve(torch.tensor([5.0, 4.0], dtype=torch.float64)).round(decimals=12)
    tensor([1., 1.], dtype=torch.float64)
    """

    def __init__(self, A: torch.Tensor) -> None:
        A = check_spd_matrix("A", A)
        self.shape = A.shape
        self._A = A
        self._pattern = SparsePattern.of(A)
        self._values = differentiable_values(A, self._pattern)
        self._fac = _Factor(A, self._pattern, self._values)
        self.analysis = self._fac.analysis

    # -- the factor itself (not differentiable) --------------------------------------------------
    @property
    def perm(self) -> torch.Tensor:
        """Fill-reducing order, int64 ``(n,)`` (or ``(b, n)``): ``A[perm][:, perm] = L Lᵀ``."""
        fac = self._fac
        if fac.empty or self.analysis is None:
            shape = (fac.items, fac.n) if fac.batched else (fac.n,)
            return torch.zeros(shape, dtype=torch.int64, device=fac.device)
        order = self.analysis.order
        item_of_step = order // fac.n
        per_item = np.argsort(item_of_step, kind="stable")  # steps grouped by item, in order
        out = (order[per_item] % fac.n).reshape(fac.items, fac.n)
        t = torch.from_numpy(out).to(fac.device)
        return t if fac.batched else t[0]

    @property
    def L(self) -> torch.Tensor:
        """The lower triangular Cholesky factor of ``A[perm][:, perm]`` (detached).

        A CSR tensor ``(n, n)`` with ``A``'s index dtype (CSR input) or int64; for a batch, a COO
        tensor ``(b, n, n)`` (COO allows items with different numbers of entries).
        """
        fac = self._fac
        a = self.analysis
        idx_dtype = self._A.crow_indices().dtype if self._A.layout == torch.sparse_csr else torch.int64
        if fac.empty or a is None:
            if fac.batched:
                return torch.sparse_coo_tensor(
                    torch.zeros(3, 0, dtype=torch.int64), torch.zeros(0, dtype=fac.dtype), tuple(self.shape)
                )
            return torch.sparse_csr_tensor(
                torch.zeros(fac.n + 1, dtype=idx_dtype),
                torch.zeros(0, dtype=idx_dtype),
                torch.zeros(0, dtype=fac.dtype),
                tuple(self.shape),
            )
        num = fac.numeric
        col = np.repeat(np.arange(a.N, dtype=np.int64), np.diff(a.l_indptr))
        row = a.l_indices
        data = num.l_data * np.sqrt(num.d)[col]
        item_of_step = a.order // fac.n
        rank = np.empty(a.N, dtype=np.int64)
        grouped = np.argsort(item_of_step, kind="stable")
        rank[grouped] = np.arange(a.N) - item_of_step[grouped] * fac.n
        item = item_of_step[col]
        r, c = rank[row], rank[col]
        if fac.batched:
            idx = torch.from_numpy(np.stack([item, r, c]))
            out = torch.sparse_coo_tensor(idx, torch.from_numpy(data), tuple(self.shape)).coalesce()
            return out.to(device=fac.device, dtype=fac.dtype)
        import scipy.sparse as sp

        M = sp.csr_matrix((data, (r, c)), shape=(fac.n, fac.n))
        M.sort_indices()
        return torch.sparse_csr_tensor(
            torch.from_numpy(M.indptr.astype(np.int64)).to(idx_dtype),
            torch.from_numpy(M.indices.astype(np.int64)).to(idx_dtype),
            torch.from_numpy(M.data),
            (fac.n, fac.n),
        ).to(device=fac.device, dtype=fac.dtype)

    # -- differentiable results ------------------------------------------------------------------
    def logdet(self) -> torch.Tensor:
        """``log det A``: a scalar (or ``(b,)``); gradient ``A⁻¹`` on ``A``'s entries (selected inversion)."""
        return _Logdet.apply(self._values, self._fac)  # type: ignore[no-any-return]

    def solve(self, B: torch.Tensor) -> torch.Tensor:
        """``A⁻¹ B`` for ``B`` ``(n,)``/``(n, k)`` (``(b, n)``/``(b, n, k)`` for a batch)."""
        B = check_rhs(self._A, B)
        vector = B.dim() == len(self.shape) - 1
        B2 = B.unsqueeze(-1) if vector else B
        p = self._pattern
        X = p.unflat(_Solve.apply(self._values, p.flat_rhs(B2), self._fac), B2, p.n)
        return X.squeeze(-1) if vector else X

    def sample(self, eps: torch.Tensor) -> torch.Tensor:
        """``Pᵀ L⁻ᵀ ε``: for standard normal ``ε``, a draw from ``N(0, A⁻¹)``.

        With ``P v = v[perm]`` (so ``A = Pᵀ L Lᵀ P``) the covariance of ``Pᵀ L⁻ᵀ ε`` is
        ``Pᵀ L⁻ᵀ L⁻¹ P = A⁻¹``.  ``eps`` is dense ``(n,)`` or ``(n, k)`` (``(b, n)`` or
        ``(b, n, k)`` for a batch; ``k`` independent draws), ``A``'s dtype and device; the result
        has its shape.  Entry ``r`` of ``eps`` feeds elimination step ``r`` (``perm[r]`` of the
        result).  One triangular solve with the factor.

        Differentiable with respect to ``A`` (sparse, ``A``'s pattern; the symmetric reading of
        the module docstring) and ``eps``: the backward pass is one triangular solve
        ``V = L⁻¹ P G``, the sampled product ``L̄ = −(W Vᵀ)`` on the pattern of ``L``
        (``W = L⁻ᵀ ε``) and the reverse mode of the sparse factorisation, ``O(flops of the
        factorisation)`` on the pattern of ``L`` (:mod:`tsgu_cholesky._cholesky_adjoint`).
        Differentiable once: ``create_graph=True`` through a sample raises ``RuntimeError``.

        Examples
        --------
        >>> import torch
        >>> from tsgu_cholesky import sparse_cholesky
        >>> dense = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> A = dense.to_sparse_coo().requires_grad_()
        >>> F = sparse_cholesky(A)
        >>> eps = torch.randn(2, 100_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> x = F.sample(eps)
        >>> bool((torch.cov(x) - torch.linalg.inv(dense)).abs().max() < 0.01)
        True
        >>> x.pow(2).sum().backward()  # the gradient reaches A's values through the factor
        >>> A.grad.layout == A.layout
        True
        """
        eps = check_rhs(self._A, eps, "eps")
        vector = eps.dim() == len(self.shape) - 1
        E2 = eps.unsqueeze(-1) if vector else eps
        p = self._pattern
        X = p.unflat(_Sample.apply(self._values, p.flat_rhs(E2), self._fac), E2, p.n)
        return X.squeeze(-1) if vector else X

    def _inverse_canonical(self) -> torch.Tensor:
        return _SelectedInverse.apply(self._values, self._fac)  # type: ignore[no-any-return]

    def selected_inverse(self) -> torch.Tensor:
        """The entries of ``A⁻¹`` on ``A``'s pattern, as a sparse tensor like ``A``.

        Same layout, indices and index dtype as ``A``; an uncoalesced COO ``A`` gives a coalesced
        COO result (one entry per coordinate).  Differentiable once (``create_graph=True``
        raises); the gradient is computed by a complex-step derivative of the factorisation and
        the selected inversion (exact to rounding, one complex factorisation).
        """
        zc = self._inverse_canonical()
        p = self._pattern
        if p.canon is None:
            return sparse_grad(p, _from_canonical(p, zc))
        rows, cols = p.sorted_rows, p.sorted_cols.to(torch.int64)
        if p.batch is None:
            idx = torch.stack([rows, cols])
        else:
            b = torch.div(rows, p.n, rounding_mode="floor")
            idx = torch.stack([b, rows - b * p.n, cols - b * p.n])
        shell = torch.sparse_coo_tensor(idx, zc.detach(), tuple(self.shape), is_coalesced=True)
        return sparse_grad(SparsePattern(shell), zc)

    def inverse_diagonal(self) -> torch.Tensor:
        """The diagonal of ``A⁻¹`` (marginal variances), dense ``(n,)`` or ``(b, n)``; differentiable once."""
        fac = self._fac
        if fac.empty or self.analysis is None:
            shape = (fac.items, fac.n) if fac.batched else (fac.n,)
            return torch.zeros(shape, dtype=fac.dtype, device=fac.device)
        pos = torch.from_numpy(self.analysis.diag).to(fac.device)
        d = self._inverse_canonical().index_select(0, pos)
        return d.reshape(fac.items, fac.n) if fac.batched else d


@autocast_fp32
def sparse_cholesky(A: torch.Tensor) -> SparseCholesky:
    """Factor a sparse symmetric positive definite matrix: ``A[perm][:, perm] = L Lᵀ``.

    Parameters
    ----------
    A : Tensor
        SPD, sparse COO or CSR, ``(n, n)`` or ``(b, n, n)``, int32/int64 indices, float32/float64
        values (see the module docstring for what is checked and how ``A`` is read).

    Returns
    -------
    SparseCholesky
        With ``perm``, ``L``, and the differentiable ``logdet()``, ``solve(B)``, ``sample(eps)``,
        ``selected_inverse()`` and ``inverse_diagonal()``, all reusing this factorisation.

    Raises
    ------
    TypeError
        ``A`` not a tensor, or of another value dtype.
    ValueError
        Not sparse COO/CSR, not square, malformed indices, ``meta``, NaN/Inf values, a
        non-symmetric pattern or values, a missing diagonal entry, or not positive definite
        (:class:`NotPositiveDefiniteError`, which names the column whose pivot failed).

    Examples
    --------
    >>> import torch
    >>> from tsgu_cholesky import sparse_cholesky
    >>> A = torch.tensor([[4.0, 2.0], [2.0, 5.0]], dtype=torch.float64).to_sparse_csr()
    >>> F = sparse_cholesky(A)
    >>> L, p = F.L.to_dense(), F.perm
    >>> torch.allclose(L @ L.T, A.to_dense()[p][:, p])
    True
    """
    return SparseCholesky(A)


@autocast_fp32
def sparse_logdet(A: torch.Tensor) -> torch.Tensor:
    """Exact ``log det A`` of a sparse SPD matrix, differentiable with a sparse gradient.

    The gradient is ``A⁻¹`` at ``A``'s stored entries (``∂ log det A / ∂A[i, j] = (A⁻¹)[j, i]``,
    equal to ``(A⁻¹)[i, j]``: what dense autograd of ``torch.linalg.slogdet`` gives there),
    computed by selected inversion (Takahashi's recurrences) on the factor of the forward pass:
    no solve per column, nothing stochastic, memory of the order of ``nnz(L)``.  A second
    derivative (``create_graph=True``) is supported: it is the gradient of the selected inverse.

    Parameters
    ----------
    A : Tensor
        As for :func:`sparse_cholesky`.

    Returns
    -------
    Tensor
        A scalar, or ``(b,)`` for a batch; ``A``'s dtype and device.

    Examples
    --------
    >>> import torch
    >>> from tsgu_cholesky import sparse_logdet
    >>> dense = torch.tensor([[2.0, -1.0, 0.0], [-1.0, 2.0, -1.0], [0.0, -1.0, 2.0]], dtype=torch.float64)
    >>> A = dense.to_sparse_coo().requires_grad_()
    >>> ld = sparse_logdet(A)
    >>> bool(torch.isclose(ld.detach(), torch.logdet(dense), rtol=1e-12))
    True
    >>> ld.backward()
    >>> torch.allclose(A.grad.to_dense(), torch.linalg.inv(dense) * (dense != 0))
    True
    """
    return sparse_cholesky(A).logdet()


@autocast_fp32
def sparse_cholesky_solve(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``A⁻¹ B`` for a sparse SPD ``A`` by a direct (Cholesky) solve; differentiable in ``A`` and ``B``.

    The backward pass reuses the forward's factorisation (one factorisation per call): ``dB =
    A⁻¹ G`` and ``dA = −sym(A⁻¹ G Xᵀ)`` at ``A``'s stored entries (sparse, ``A``'s pattern).  It is
    differentiable again (``create_graph=True``).

    Parameters
    ----------
    A : Tensor
        As for :func:`sparse_cholesky`.
    B : Tensor
        Dense ``(n,)`` or ``(n, k)`` (``(b, n)`` or ``(b, n, k)`` for a batched ``A``), ``A``'s
        dtype and device.

    Examples
    --------
    >>> import torch
    >>> from tsgu_cholesky import sparse_cholesky_solve
    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64).to_sparse_csr()
    >>> sparse_cholesky_solve(A, torch.tensor([5.0, 4.0], dtype=torch.float64)).round(decimals=12)
    tensor([1., 1.], dtype=torch.float64)
    """
    F = sparse_cholesky(A)
    return F.solve(B)


@autocast_fp32
def sparse_selected_inverse(A: torch.Tensor) -> torch.Tensor:
    """The entries of ``A⁻¹`` on ``A``'s pattern (selected inversion), sparse like ``A``.

    See :meth:`SparseCholesky.selected_inverse`.

    Examples
    --------
    >>> import torch
    >>> from tsgu_cholesky import sparse_selected_inverse
    >>> dense = torch.tensor([[2.0, -1.0, 0.0], [-1.0, 2.0, -1.0], [0.0, -1.0, 2.0]], dtype=torch.float64)
    >>> Z = sparse_selected_inverse(dense.to_sparse_csr())
    >>> torch.allclose(Z.to_dense(), torch.linalg.inv(dense) * (dense != 0))
    True
    """
    return sparse_cholesky(A).selected_inverse()


@autocast_fp32
def sparse_inverse_diagonal(A: torch.Tensor) -> torch.Tensor:
    """The diagonal of ``A⁻¹`` (marginal variances of a GMRF with precision ``A``), dense.

    See :meth:`SparseCholesky.inverse_diagonal`.

    Examples
    --------
    >>> import torch
    >>> from tsgu_cholesky import sparse_inverse_diagonal
    >>> dense = torch.tensor([[2.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
    >>> sparse_inverse_diagonal(dense.to_sparse_coo())
    tensor([0.6667, 0.6667], dtype=torch.float64)
    """
    return sparse_cholesky(A).inverse_diagonal()


def analyze(A: torch.Tensor) -> Analysis:
    """The symbolic analysis of ``A``'s pattern (ordering, pattern of ``L``, index maps), cached.

    Every function of this package looks the analysis of its argument's pattern up in a small
    cache (by pattern content); this runs or fetches it explicitly, e.g. to time the symbolic
    phase apart from the numeric one or to warm the cache.  ``A`` must be SPD (the ordering is
    taken from a factorisation of its values).

    Examples
    --------
    >>> import torch
    >>> from tsgu_cholesky import analyze
    >>> A = torch.tensor([[2.0, -1.0], [-1.0, 2.0]], dtype=torch.float64).to_sparse_csr()
    >>> a = analyze(A)
    >>> a.N, a.nnz_L
    (2, 3)
    >>> analyze(A) is a
    True
    """
    A = check_spd_matrix("A", A)
    fac = _Factor(A, SparsePattern.of(A), SparsePattern.of(A).values(A))
    if fac.analysis is None:
        raise ValueError("A is empty: there is nothing to analyse")
    return fac.analysis
