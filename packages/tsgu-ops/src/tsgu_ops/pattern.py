"""The index structure of a sparse matrix, and batch handling by index arithmetic.

A :class:`SparsePattern` describes where the stored entries of a 2-D ``(n, m)`` or batched
``(b, n, m)`` COO/CSR tensor are.  A batch is flattened into one block-diagonal ``(b·n, b·m)``
matrix by offsetting row and column indices (no Python loop over the batch), so every operation of
the library runs one native kernel per call, and results are split back by reshaping.

Stored entries keep the order of the input tensor ("original order": ``A._values()`` for COO,
``A.values()`` flattened for CSR), so a gradient built from per-entry values lands on the input's
own index tensors: same layout, same pattern, same index dtype.  For the native kernels the pattern
also keeps the entries in row-major order (a CSR matrix) and, built lazily once, the transposed
order; a COO input that is not flagged coalesced is sorted once per pattern.

Patterns are internal plumbing shared by every package of the project; their methods do not
validate arguments.
"""

from __future__ import annotations

import weakref
from functools import cached_property
from typing import Any

import torch

from . import _kernels
from ._checks import index_stamp as _stamp
from ._checks import indices_unchanged, validated_snapshot
from ._compat import quiet
from ._kernels import COMPUTE_DTYPES, SAMPLED_CHUNK_ELEMENTS, conj

__all__ = [
    "COMPUTE_DTYPES",
    "SAMPLED_CHUNK_ELEMENTS",
    "SparsePattern",
    "compress_rows",
    "conj",
    "csr_row_indices",
    "lexsort_rows_cols",
    "quiet",
]


def csr_row_indices(crow: torch.Tensor, nnz: int) -> torch.Tensor:
    """Expand compressed row pointers ``crow`` (1-D) to one int64 row index per stored entry."""
    n = crow.numel() - 1
    counts = (crow[1:] - crow[:-1]).to(torch.int64)
    return torch.repeat_interleave(torch.arange(n, device=crow.device), counts, output_size=nnz)


def compress_rows(rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Row pointers ``(num_rows + 1,)`` of sorted row indices; keeps the rows' int dtype."""
    convert = getattr(torch, "_convert_indices_from_coo_to_csr", None)
    if convert is not None:
        return convert(rows, num_rows, out_int32=rows.dtype == torch.int32)
    counts = torch.bincount(rows.to(torch.int64), minlength=num_rows)  # pragma: no cover
    crow = torch.zeros(num_rows + 1, dtype=torch.int64, device=rows.device)  # pragma: no cover
    torch.cumsum(counts, 0, out=crow[1:])  # pragma: no cover
    return crow.to(rows.dtype)  # pragma: no cover


def lexsort_rows_cols(rows: torch.Tensor, cols: torch.Tensor, num_cols: int) -> torch.Tensor:
    """Stable permutation that orders entries by (row, col)."""
    if rows.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=rows.device)
    max_row = int(rows.max()) + 1
    if max_row * max(num_cols, 1) < 2**62:
        return torch.argsort(rows * num_cols + cols, stable=True)
    perm = torch.argsort(cols, stable=True)
    return perm[torch.argsort(rows[perm], stable=True)]


#: ``id(A) -> (weakref to A, stamp, pattern, index snapshot)``: see :meth:`SparsePattern.of`.
_PATTERNS: dict[int, tuple[weakref.ref, tuple, SparsePattern, Any]] = {}
#: ``[(index stamp, pattern, index snapshot)]``, oldest first, at most :data:`_BY_INDICES_SIZE`:
#: patterns of other tensors built on the very same index tensors (see :meth:`SparsePattern.of`).
#: A pattern holds its index tensors, so no other tensor can take their memory (and address)
#: while it is kept.
_BY_INDICES: list[tuple[tuple, SparsePattern, Any]] = []
_BY_INDICES_SIZE = 8
#: At most this many stored entries, summed over the kept patterns (their index tensors and
#: analyses stay in memory after the matrices are gone; :meth:`SparsePattern.clear_shared`).
_BY_INDICES_NNZ = 1 << 26


class SparsePattern:
    """Index structure of a (batched) COO or CSR matrix, flattened to a block-diagonal problem.

    Parameters
    ----------
    A : Tensor
        A sparse COO or CSR tensor of shape ``(n, m)`` or ``(b, n, m)`` without dense dimensions.
        Only its indices are read; for CSR, batched tensors have the same nnz in every item.

    Attributes
    ----------
    layout, shape, batch, n, m, nnz
        What the input was: ``batch`` is ``None`` for a 2-D input; ``nnz`` counts all stored
        entries (over the batch).
    rows, cols : Tensor
        int64 coordinates of every stored entry in the flattened ``(batch·n, batch·m)`` matrix, in
        original order.
    """

    @classmethod
    def of(cls, A: torch.Tensor) -> SparsePattern:
        """``SparsePattern(A)``, reused by later calls with the same, unchanged tensor ``A``.

        The index analysis (row expansion, the transposed order that every backward needs: a sort
        of the entries) depends only on ``A``'s index tensors, so repeated operations on one
        matrix (a fixed graph's adjacency in every training step, the same system solved again)
        share it.  An entry is used for the very same tensor object, with unchanged version
        counters (``A`` and each index tensor) and storage; it holds no values and disappears
        with ``A``.  A new tensor built on the very same index tensors, unchanged since (a CSR
        matrix made from fixed ``crow``/``col`` and new values in every training step), shares
        the pattern too: the last 8 such patterns (at most 2²⁶ stored entries in all) are kept,
        each holding its index tensors (never values), so that their memory cannot be taken by
        other indices; :meth:`clear_shared` releases them.  Equal indices in other
        tensors get a pattern of their own.  On the CPU a hit also compares the indices with a
        copy taken when the pattern was made (version counters miss a write to the tensor ``A``
        was built from, see :func:`tsgu_ops._checks.index_snapshot`).  Under ``torch.compile``
        tracing, for tensor subclasses and for anything whose versions cannot be read, a fresh
        pattern is built.

        Examples
        --------
        >>> import torch
        >>> A = torch.eye(3).to_sparse_csr()
        >>> SparsePattern.of(A) is SparsePattern.of(A)
        True
        """
        stamp = _stamp(A)
        if stamp is None:
            return cls(A)
        key = id(A)
        hit = _PATTERNS.get(key)
        if hit is not None and hit[0]() is A and hit[1] == stamp and indices_unchanged(A, hit[3]):
            return hit[2]
        # the same index tensors in another tensor: the stamp without A's own version counter
        by_indices = stamp[1:]
        at = next((i for i, e in enumerate(_BY_INDICES) if e[0] == by_indices), None)
        found = None if at is None else _BY_INDICES.pop(at)  # re-appended below if it holds: the newest
        if found is not None and not indices_unchanged(A, found[2]):
            found = None
        if found is None:
            found = (by_indices, cls(A), validated_snapshot(A, stamp))
        _BY_INDICES.append(found)
        del _BY_INDICES[:-_BY_INDICES_SIZE]
        while _BY_INDICES and sum(e[1].nnz for e in _BY_INDICES) > _BY_INDICES_NNZ:
            del _BY_INDICES[0]  # the oldest first (a pattern too large alone is not kept)
        pattern, snapshot = found[1], found[2]

        def drop(ref: weakref.ref, key: int = key) -> None:
            cur = _PATTERNS.get(key)
            if cur is not None and cur[0] is ref:
                del _PATTERNS[key]

        _PATTERNS[key] = (weakref.ref(A, drop), stamp, pattern, snapshot)
        return pattern

    @staticmethod
    def clear_shared() -> None:
        """Forget the patterns kept for tensors built on the same index tensors (see :meth:`of`:
        the last 8, at most 2²⁶ stored entries in all), releasing their index tensors and
        analyses.  A pattern of a tensor still alive stays with that tensor.

        Examples
        --------
        >>> SparsePattern.clear_shared()
        """
        _BY_INDICES.clear()

    def __init__(self, A: torch.Tensor) -> None:
        self.layout = A.layout
        self.shape = tuple(A.shape)
        self.batch: int | None = A.shape[0] if A.dim() == 3 else None
        self.n, self.m = int(A.shape[-2]), int(A.shape[-1])
        b = 1 if self.batch is None else self.batch  # an empty batch (0, n, m) is valid
        self.N, self.M = b * self.n, b * self.m
        self.device = A.device
        self._unit_layouts: dict[bool, tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = {}
        # Stored entries in canonical (row-major, one per coordinate) order, as used by the
        # kernels: ``perm[j]`` is the original position of canonical entry j (None: identity),
        # or, when a COO input holds duplicate coordinates, ``canon[k]`` is the canonical slot
        # of original entry k (several entries share one slot and their values add up).
        self.perm: torch.Tensor | None = None
        self.canon: torch.Tensor | None = None
        if A.layout == torch.sparse_coo:
            idx = A._indices()
            self.coo_indices = idx
            self.coo_coalesced = A.is_coalesced()
            if self.batch is None:
                rows, cols = idx[0], idx[1]
            else:
                rows = idx[0] * self.n + idx[1]
                cols = idx[0] * self.m + idx[2]
            self.nnz = int(idx.shape[1])
            self.rows, self.cols = rows, cols  # the cached properties, known here
            self.index_dtype = torch.int64
            if self.coo_coalesced:
                sr, sc = rows, cols
            else:
                perm = lexsort_rows_cols(rows, cols, self.M)
                sr, sc = rows.index_select(0, perm), cols.index_select(0, perm)
                first = torch.ones(self.nnz, dtype=torch.bool, device=rows.device)
                first[1:] = (sr[1:] != sr[:-1]) | (sc[1:] != sc[:-1])
                if bool(first.all()):
                    self.perm = perm
                else:  # duplicates: the kernels see each coordinate once, with summed values
                    canon = torch.empty_like(perm)
                    canon[perm] = torch.cumsum(first.to(torch.int64), 0) - 1
                    self.canon = canon
                    sr, sc = sr[first], sc[first]
            self.sorted_rows, self.sorted_cols = sr, sc
            self.crow = compress_rows(sr, self.N)
        elif A.layout == torch.sparse_csr:
            crow, col = A.crow_indices(), A.col_indices()
            self.csr_crow, self.csr_col = crow, col
            self.index_dtype = crow.dtype
            if self.batch is None:
                flat_crow, flat_col = crow, col
            else:  # batch offsets: item k's rows and columns shifted by k·n, k·m
                per = col.shape[-1]
                itype = crow.dtype
                if b * max(per, self.m, 1) >= 2**31 - 1:
                    itype = torch.int64
                offs = torch.arange(b, device=crow.device, dtype=itype)
                flat_crow = torch.cat(
                    [
                        torch.zeros(1, dtype=itype, device=crow.device),
                        (crow[:, 1:].to(itype) + (offs * per)[:, None]).reshape(-1),
                    ]
                )
                flat_col = (col.to(itype) + (offs * self.m)[:, None]).reshape(-1)
            self.nnz = int(flat_col.numel())
            self.crow, self.sorted_cols = flat_crow, flat_col
            # row indices of a CSR pattern are expanded only when an operation needs them
        else:  # pragma: no cover - callers validate the layout first
            raise ValueError(f"unsupported layout {A.layout}")

    # ----------------------------------------------------------------------------------------
    # the index analysis, each piece computed once per pattern when first needed
    @cached_property
    def sorted_rows(self) -> torch.Tensor:
        """int64 row of every canonical (row-major) entry (CSR: the expanded row pointers)."""
        return csr_row_indices(self.crow, self.n_canonical)

    @cached_property
    def rows(self) -> torch.Tensor:
        """int64 row of every stored entry, in original order."""
        return self.sorted_rows  # CSR: original order is row-major

    @cached_property
    def cols(self) -> torch.Tensor:
        """int64 column of every stored entry, in original order."""
        return self.sorted_cols.to(torch.int64)

    @property
    def n_canonical(self) -> int:
        """Number of canonical entries (distinct coordinates)."""
        return int(self.sorted_cols.numel())

    @cached_property
    def multiplicity(self) -> torch.Tensor | None:
        """float64, per stored entry (original order): how many entries share its coordinate
        (``None`` without duplicates).  The gradient boundary splits a coordinate's gradient over
        its copies by it (``tsgu_ops._gradients``)."""
        if self.canon is None:
            return None
        counts = torch.bincount(self.canon, minlength=self.n_canonical)
        return counts.index_select(0, self.canon).to(torch.float64)

    @cached_property
    def inverse_perm(self) -> torch.Tensor | None:
        """``inverse_perm[k]``: the canonical position of original entry ``k`` (``None``: identity)."""
        if self.canon is not None:
            return self.canon
        if self.perm is None:
            return None
        inv = torch.empty_like(self.perm)
        inv[self.perm] = torch.arange(self.perm.numel(), device=self.perm.device)
        return inv

    @cached_property
    def transposed_order(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(crow_t, col_t, perm_t)``: CSR indices of the transpose (int64) and, per entry of the
        transpose, its canonical (row-major) position."""
        # Entries are sorted by row; a stable sort by column gives the transpose's CSR order.
        keys = self.sorted_cols
        if self.M < 2**31 - 1 and keys.dtype != torch.int32:
            keys = keys.to(torch.int32)  # sorting 32-bit keys is about twice as fast
        perm_t = torch.argsort(keys, stable=True)
        crow_t = compress_rows(self.sorted_cols.index_select(0, perm_t).to(torch.int64), self.M)
        col_t = self.sorted_rows.index_select(0, perm_t)
        return crow_t, col_t, perm_t

    def _transposed_order(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.transposed_order

    @property
    def fits_32_bits(self) -> bool:
        """Whether every index of the flattened matrix fits in int32."""
        return max(self.N, self.M, self.nnz) < 2**31 - 1

    def _compact(self, *ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.fits_32_bits:
            return ts
        return tuple(t if t.dtype == torch.int32 else t.to(torch.int32) for t in ts)

    @cached_property
    def compact_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(crow, col)`` with 32-bit indices where they fit (PyTorch's CPU product kernels
        otherwise convert 64-bit indices to 32-bit ones on every call: nearly twice the cost)."""
        return self._compact(self.crow, self.sorted_cols)  # type: ignore[return-value]

    @cached_property
    def compact_transposed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(crow_t, col_t)`` of the transpose with 32-bit indices where they fit."""
        return self._compact(*self.transposed_order[:2])  # type: ignore[return-value]

    @cached_property
    def kernel_indices(self) -> _kernels.Indices:
        """``(crow, col, crow_t, col_t, perm_t, rows)``: the pattern as the kernels of
        :mod:`tsgu_ops._kernels` take it (canonical order, 32-bit copies where they fit)."""
        crow, col = self.compact_indices
        crow_t, col_t = self.compact_transposed
        rows = self.sorted_rows
        if self.fits_32_bits:
            rows = rows.to(torch.int32)
        return (crow, col, crow_t, col_t, self.transposed_order[2], rows)

    def unit_diagonal_layout(self, upper: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """CSR indices ``(crow, col)`` of the pattern plus an explicit diagonal, and where the
        stored (canonical) entries go among them; ``None`` when an entry lies outside the strict
        triangle.  Built once per pattern and triangle.

        PyTorch's CSR triangular solve is an order of magnitude slower with ``unitriangular=True``
        than with a stored unit diagonal, so unit-triangular solves store the ones.  Within a row
        the diagonal follows every entry of a strictly lower row and precedes every entry of a
        strictly upper one, so the positions are index arithmetic, not a sort.
        """
        if upper in self._unit_layouts:
            return self._unit_layouts[upper]
        rows, cols = self.sorted_rows, self.sorted_cols.to(torch.int64)
        strict = bool((cols > rows).all()) if upper else bool((cols < rows).all())
        layout = None
        if strict and self.N == self.M:
            N, nc = self.N, self.n_canonical
            dev = rows.device
            crow = self.crow.to(torch.int64) + torch.arange(N + 1, device=dev)
            old = torch.arange(nc, device=dev) + rows + (1 if upper else 0)
            diag = crow[:-1] if upper else crow[1:] - 1
            col = torch.empty(nc + N, dtype=torch.int64, device=dev)
            col[old] = cols
            col[diag] = torch.arange(N, device=dev)
            if max(N, nc + N) < 2**31 - 1:
                crow, col = crow.to(torch.int32), col.to(torch.int32)
            layout = (crow, col, old)
        self._unit_layouts[upper] = layout
        return layout

    @cached_property
    def has_diagonal(self) -> bool:
        """Whether an entry lies on the diagonal (of a batch item)."""
        return bool(self.nnz) and bool((self.rows == self.cols).any())

    @cached_property
    def entry_coordinates(self) -> torch.Tensor:
        """``(3, nnz)`` int64 ``(batch, row, col)`` of every stored entry of a batched pattern
        (original order); for a 2-D pattern ``(2, nnz)`` ``(row, col)``."""
        if self.batch is None:
            return torch.stack([self.rows, self.cols])
        b = torch.div(self.rows, self.n, rounding_mode="floor")
        return torch.stack([b, self.rows - b * self.n, self.cols - b * self.m])

    @cached_property
    def transport_indices(self) -> torch.Tensor:
        """3-D COO indices ``(batch, row, col)`` of a batched pattern, in its storage order (the
        form in which the gradient of a batched CSR matrix travels through autograd)."""
        return self.entry_coordinates

    # ----------------------------------------------------------------------------------------
    # values in original order <-> tensors
    def values(self, A: torch.Tensor) -> torch.Tensor:
        """The stored values of ``A`` (whose pattern this is), flattened, in original order."""
        if self.layout == torch.sparse_coo:
            return A._values()
        return A.values().reshape(-1)

    def _sorted(self, values: torch.Tensor) -> torch.Tensor:
        """Values in original order → canonical order (duplicates summed); differentiable."""
        if self.canon is not None:
            out = torch.zeros(self.n_canonical, dtype=values.dtype, device=values.device)
            return out.index_add(0, self.canon, values)
        return values if self.perm is None else values.index_select(0, self.perm)

    def _unsort(self, sorted_values: torch.Tensor) -> torch.Tensor:
        """Per-coordinate results in canonical order → one per original entry; differentiable."""
        inv = self.inverse_perm
        return sorted_values if inv is None else sorted_values.index_select(0, inv)

    def csr(self, values: torch.Tensor, compact: bool = False) -> torch.Tensor:
        """The flattened ``(N, M)`` matrix as a CSR tensor holding ``values`` (original order);
        ``compact``: with 32-bit indices where they fit."""
        v = self._sorted(values)
        crow, col = self.compact_indices if compact else (self.crow, self.sorted_cols)
        return quiet(lambda: torch.sparse_csr_tensor(crow, col, v, (self.N, self.M), check_invariants=False))

    def csr_t(self, values: torch.Tensor, compact: bool = False) -> torch.Tensor:
        """The transposed flattened ``(M, N)`` matrix as a CSR tensor holding ``values``;
        ``compact``: with 32-bit indices where they fit."""
        crow_t, col_t, perm_t = self.transposed_order
        if compact:
            crow_t, col_t = self.compact_transposed
        v = self._sorted(values).index_select(0, perm_t)
        return quiet(
            lambda: torch.sparse_csr_tensor(crow_t, col_t, v, (self.M, self.N), check_invariants=False)
        )

    def symmetric(self, values: torch.Tensor | None = None) -> bool:
        """Whether the pattern equals its transpose and, given ``values`` (original order), so do
        the stored values (to a few ulps of the largest one).  Uses the cached transposed order."""
        if self.N != self.M:
            return False
        crow_t, col_t, perm_t = self.transposed_order
        if crow_t.shape != self.crow.shape or not torch.equal(
            crow_t.to(torch.int64), self.crow.to(torch.int64)
        ):
            return False
        if not torch.equal(col_t.to(torch.int64), self.sorted_cols.to(torch.int64)):
            return False
        if values is None:
            return True
        v = self._sorted(values)
        if v.numel() == 0:
            return True
        tol = 8 * torch.finfo(v.real.dtype).eps * float(v.abs().max())
        return bool(((v - v.index_select(0, perm_t)).abs() <= tol).all())

    def matmul(self, values: torch.Tensor, X: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``S @ X`` (or ``Sᵀ @ X``) for the flattened matrix ``S`` holding ``values`` (original
        order) and a 2-D ``X``: the product kernel, without autograd."""
        return _kernels.mm_impl(*self.kernel_indices, self._sorted(values), X, transpose)

    def to_sparse(self, values: torch.Tensor) -> torch.Tensor:
        """A tensor with the input's layout, shape and index tensors, holding ``values``.

        Not differentiable with respect to ``values`` on its own: see
        :func:`tsgu_ops.sparse_with_values`.
        """
        if self.layout == torch.sparse_coo:
            return torch.sparse_coo_tensor(
                self.coo_indices,
                values,
                self.shape,
                is_coalesced=self.coo_coalesced,
                check_invariants=False,
            )
        v = values if self.batch is None else values.reshape(self.csr_col.shape)
        return quiet(
            lambda: torch.sparse_csr_tensor(
                self.csr_crow, self.csr_col, v, self.shape, check_invariants=False
            )
        )

    def shares_indices(self, G: torch.Tensor) -> bool:
        """Whether sparse ``G`` stores its entries in this pattern's very index tensors."""
        if G.layout != self.layout or G.shape != torch.Size(self.shape):
            return False
        if G.layout == torch.sparse_coo:
            gi = G._indices()
            return gi.shape == self.coo_indices.shape and gi.data_ptr() == self.coo_indices.data_ptr()
        gc, gcol = G.crow_indices(), G.col_indices()
        return (
            gc.data_ptr() == self.csr_crow.data_ptr()
            and gcol.data_ptr() == self.csr_col.data_ptr()
            and gcol.shape == self.csr_col.shape
        )

    def gather(self, G: torch.Tensor) -> torch.Tensor:
        """Values at this pattern's entries (original order) of a gradient ``G`` w.r.t. the matrix.

        ``G`` may be dense, or sparse of any layout; entries of ``G`` outside the pattern are
        dropped (they are not representable in a gradient with this pattern).
        """
        if G.layout == torch.strided:
            return dense_gather(self, G)
        if self.shares_indices(G):
            return self.values(G)
        # General case: look every entry up in G (row-major, duplicates summed) by binary search.
        if G.layout == torch.sparse_coo and not G.is_coalesced():
            G = G.coalesce()
        if G.layout not in (torch.sparse_coo, torch.sparse_csr):
            G = G.to_sparse_coo().coalesce()
        other = SparsePattern(G)
        gkey = other.rows * self.M + other.cols
        gvals = other.values(G)
        key = self.rows * self.M + self.cols
        if gkey.numel() == 0:
            return torch.zeros(self.nnz, dtype=gvals.dtype, device=gvals.device)
        pos = torch.searchsorted(gkey, key).clamp_max(gkey.numel() - 1)
        hit = gkey[pos] == key
        return torch.where(hit, gvals[pos], torch.zeros((), dtype=gvals.dtype, device=gvals.device))

    # ----------------------------------------------------------------------------------------
    # right-hand sides: (n|m, p), (b, n|m, p) and a shared 2-D matrix applied to (b, m, p)
    def flat_rhs(self, X: torch.Tensor) -> torch.Tensor:
        """Reshape a dense right-hand side to the flattened problem's ``(N or M, p)``."""
        if self.batch is not None:
            return X.reshape(self.batch * X.shape[-2], X.shape[-1])
        if X.dim() == 3:  # shared 2-D matrix, batched right-hand side: columns side by side
            return X.transpose(0, 1).reshape(X.shape[1], X.shape[0] * X.shape[2])
        return X

    def unflat(self, Y: torch.Tensor, like: torch.Tensor, rows: int) -> torch.Tensor:
        """Inverse of :meth:`flat_rhs` for a result with ``rows`` rows per item."""
        if self.batch is not None:
            return Y.reshape(self.batch, rows, Y.shape[-1])
        if like.dim() == 3:
            b, p = like.shape[0], like.shape[2]
            return Y.reshape(rows, b, p).transpose(0, 1)
        return Y

    # ----------------------------------------------------------------------------------------
    def sampled(self, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """``s[k] = U[rows[k]] · V[cols[k]]`` for every stored entry (original order), no autograd.

        ``U`` is ``(N, p)`` and ``V`` is ``(M, p)``.  No factor is conjugated (the product is
        bilinear; callers conjugate where a complex gradient needs it).  The sampled-product
        kernel of :mod:`tsgu_ops._kernels` (bounded memory: chunks of at most
        :data:`SAMPLED_CHUNK_ELEMENTS` elements on its gather path).
        """
        return self._unsort(_kernels.sampled_impl(*self.kernel_indices, U, V))


def dense_gather(pattern: SparsePattern, G: torch.Tensor) -> torch.Tensor:
    """Values of a dense gradient ``G`` (shape of the pattern's matrix) at the stored entries."""
    return G[tuple(pattern.entry_coordinates)]
