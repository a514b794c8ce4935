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

import warnings
import weakref
from collections.abc import Callable

import torch

#: Largest number of elements of a temporary that :meth:`SparsePattern.sampled` allocates on the
#: gather path (the ``chunk × p`` row blocks of U and V); the product is computed chunk by chunk.
SAMPLED_CHUNK_ELEMENTS = 1 << 20

#: Value dtypes that the products and solves compute with (and the native kernels support on every
#: device): real, and complex with conjugate (Wirtinger) gradients.
COMPUTE_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def conj(t: torch.Tensor) -> torch.Tensor:
    """Complex conjugate as a new tensor (differentiable); ``t`` itself for real dtypes.

    ``Tensor.conj()`` returns a lazy view, which fails on views of sparse values and which some
    sparse kernels would read without the conjugation.
    """
    return t.conj_physical() if t.is_complex() else t


def quiet(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run ``fn`` with PyTorch's sparse beta/invariant warnings silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        warnings.filterwarnings("ignore", message=".*Sparse invariant checks are implicitly disabled.*")
        warnings.filterwarnings("ignore", message=".*torch.triangular_solve is deprecated.*")
        return fn()


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


def _stamp(A: torch.Tensor) -> tuple | None:
    """What must be unchanged for a cached pattern of ``A`` to hold; ``None``: do not cache."""
    if type(A) is not torch.Tensor or torch.compiler.is_compiling() or A.device.type == "meta":
        return None
    try:
        if A.layout == torch.sparse_coo:
            idx: tuple[torch.Tensor, ...] = (A._indices(),)
            coalesced: bool | None = A.is_coalesced()
        elif A.layout == torch.sparse_csr:
            idx = (A.crow_indices(), A.col_indices())
            coalesced = None
        else:
            return None
        return (
            A._version,
            A.layout,
            tuple(A.shape),
            A.device,
            coalesced,
            *((t._version, t.data_ptr(), t.dtype, tuple(t.shape)) for t in idx),
        )
    except (RuntimeError, NotImplementedError, AttributeError):  # functorch wrappers, fake tensors
        return None


#: ``id(A) -> (weakref to A, stamp, pattern)``: see :meth:`SparsePattern.of`.
_PATTERNS: dict[int, tuple[weakref.ref, tuple, SparsePattern]] = {}


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
        share it.  An entry is used only for the very same tensor object, with unchanged version
        counters (``A`` and each index tensor) and storage; it holds no values and disappears
        with ``A``.  Under ``torch.compile`` tracing, for tensor subclasses and for anything whose
        versions cannot be read, a fresh pattern is built.

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
        if hit is not None and hit[0]() is A and hit[1] == stamp:
            return hit[2]
        pattern = cls(A)

        def drop(ref: weakref.ref, key: int = key) -> None:
            cur = _PATTERNS.get(key)
            if cur is not None and cur[0] is ref:
                del _PATTERNS[key]

        _PATTERNS[key] = (weakref.ref(A, drop), stamp, pattern)
        return pattern

    def __init__(self, A: torch.Tensor) -> None:
        self.layout = A.layout
        self.shape = tuple(A.shape)
        self.batch: int | None = A.shape[0] if A.dim() == 3 else None
        self.n, self.m = int(A.shape[-2]), int(A.shape[-1])
        b = 1 if self.batch is None else self.batch  # an empty batch (0, n, m) is valid
        self.N, self.M = b * self.n, b * self.m
        self.device = A.device
        self._transpose: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._compact: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}
        # Stored entries in canonical (row-major, one per coordinate) order, as used by the
        # kernels: ``perm[j]`` is the original position of canonical entry j (None: identity),
        # or, when a COO input holds duplicate coordinates, ``canon[k]`` is the canonical slot
        # of original entry k (several entries share one slot and their values add up).
        self.perm: torch.Tensor | None = None
        self.canon: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None
        self._cols: torch.Tensor | None = None
        self._sorted_rows: torch.Tensor | None = None
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
            self._rows, self._cols = rows, cols
            self.index_dtype = torch.int64
            if self.coo_coalesced:
                self._sorted_rows, self.sorted_cols = rows, cols
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
                self._sorted_rows, self.sorted_cols = sr, sc
            self.crow = compress_rows(self._sorted_rows, self.N)
        elif A.layout == torch.sparse_csr:
            crow, col = A.crow_indices(), A.col_indices()
            self.csr_crow, self.csr_col = crow, col
            self.index_dtype = crow.dtype
            if self.batch is None:
                flat_crow, flat_col = crow, col
            else:
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

    @property
    def sorted_rows(self) -> torch.Tensor:
        """int64 row of every canonical (row-major) entry."""
        if self._sorted_rows is None:
            self._sorted_rows = csr_row_indices(self.crow, self.nnz)
        return self._sorted_rows

    @property
    def rows(self) -> torch.Tensor:
        """int64 row of every stored entry, in original order."""
        if self._rows is None:
            self._rows = self.sorted_rows  # CSR: original order is row-major
        return self._rows

    @property
    def cols(self) -> torch.Tensor:
        """int64 column of every stored entry, in original order."""
        if self._cols is None:
            self._cols = self.sorted_cols.to(torch.int64)
        return self._cols

    # ----------------------------------------------------------------------------------------
    # values in original order <-> tensors
    def values(self, A: torch.Tensor) -> torch.Tensor:
        """The stored values of ``A`` (whose pattern this is), flattened, in original order."""
        if self.layout == torch.sparse_coo:
            return A._values()
        return A.values().reshape(-1)

    @property
    def n_canonical(self) -> int:
        return int(self.sorted_cols.numel())

    def _sorted(self, values: torch.Tensor) -> torch.Tensor:
        """Values in original order → canonical order (duplicates summed)."""
        if self.canon is not None:
            out = torch.zeros(self.n_canonical, dtype=values.dtype, device=values.device)
            return out.index_add(0, self.canon, values)
        return values if self.perm is None else values.index_select(0, self.perm)

    def _unsort(self, sorted_values: torch.Tensor) -> torch.Tensor:
        """Per-coordinate results in canonical order → one per original entry."""
        if self.canon is not None:
            return sorted_values.index_select(0, self.canon)
        if self.perm is None:
            return sorted_values
        return torch.empty_like(sorted_values).index_copy_(0, self.perm, sorted_values)

    def _csr_indices(self, transpose: bool, compact: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(crow, col)`` of the flattened matrix or its transpose; with ``compact``, 32-bit copies
        where every index fits (made once per pattern: PyTorch's CPU product kernels otherwise
        convert 64-bit indices to 32-bit ones on every call, which nearly doubles their cost)."""
        crow, col = self._transposed_order()[:2] if transpose else (self.crow, self.sorted_cols)
        if not compact or (crow.dtype == col.dtype == torch.int32):
            return crow, col
        if max(self.N, self.M, self.nnz) >= 2**31 - 1:
            return crow, col
        if transpose not in self._compact:
            self._compact[transpose] = (crow.to(torch.int32), col.to(torch.int32))
        return self._compact[transpose]

    def csr(self, values: torch.Tensor, compact: bool = False) -> torch.Tensor:
        """The flattened ``(N, M)`` matrix as a CSR tensor holding ``values`` (original order);
        ``compact``: with 32-bit indices where they fit."""
        v = self._sorted(values)
        crow, col = self._csr_indices(False, compact)
        return quiet(lambda: torch.sparse_csr_tensor(crow, col, v, (self.N, self.M), check_invariants=False))

    def _transposed_order(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._transpose is None:
            # Entries are sorted by row; a stable sort by column gives the transpose's CSR order.
            keys = self.sorted_cols
            if self.M < 2**31 - 1 and keys.dtype != torch.int32:
                keys = keys.to(torch.int32)  # sorting 32-bit keys is about twice as fast
            perm_t = torch.argsort(keys, stable=True)
            crow_t = compress_rows(self.sorted_cols.index_select(0, perm_t).to(torch.int64), self.M)
            col_t = self.sorted_rows.index_select(0, perm_t)
            self._transpose = (crow_t, col_t, perm_t)
        return self._transpose

    def csr_t(self, values: torch.Tensor, compact: bool = False) -> torch.Tensor:
        """The transposed flattened ``(M, N)`` matrix as a CSR tensor holding ``values``;
        ``compact``: with 32-bit indices where they fit."""
        perm_t = self._transposed_order()[2]
        crow_t, col_t = self._csr_indices(True, compact)
        v = self._sorted(values).index_select(0, perm_t)
        return quiet(
            lambda: torch.sparse_csr_tensor(crow_t, col_t, v, (self.M, self.N), check_invariants=False)
        )

    def symmetric(self, values: torch.Tensor | None = None) -> bool:
        """Whether the pattern equals its transpose and, given ``values`` (original order), so do
        the stored values (to a few ulps of the largest one).  Uses the cached transposed order."""
        if self.N != self.M:
            return False
        crow_t, col_t, perm_t = self._transposed_order()
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
        """``S @ X`` (or ``Sᵀ @ X``) for the flattened matrix ``S`` holding ``values``."""
        rows = self.M if transpose else self.N
        if self.nnz == 0:
            return torch.zeros(rows, X.shape[-1], dtype=X.dtype, device=X.device)
        values, X = values.resolve_conj(), X.resolve_conj()  # the kernels ignore the conj bit
        S = self.csr_t(values, compact=True) if transpose else self.csr(values, compact=True)
        return quiet(lambda: S @ X)

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
        """``s[k] = U[rows[k]] · V[cols[k]]`` for every stored entry (original order).

        ``U`` is ``(N, p)`` and ``V`` is ``(M, p)``.  No factor is conjugated (the product is
        bilinear; callers conjugate where a complex gradient needs it).  Uses PyTorch's native
        sampled product (``torch.sparse.sampled_addmm``) where it supports the dtype (float32,
        float64, complex64, complex128), else a gather in chunks of at most
        :data:`SAMPLED_CHUNK_ELEMENTS` elements, so no ``nnz × p`` temporary is made.
        """
        p = U.shape[-1]
        dtype = torch.promote_types(U.dtype, V.dtype)
        if self.nnz == 0 or p == 0:
            return torch.zeros(self.nnz, dtype=dtype, device=U.device)
        U, V = U.resolve_conj(), V.resolve_conj()  # the kernels ignore the conj bit
        if p == 1:  # one column: two gathers and a product, several times cheaper than the kernel
            u, v = U.reshape(-1).to(dtype), V.reshape(-1).to(dtype)
            return u.index_select(0, self.rows).mul_(v.index_select(0, self.cols))
        if U.dtype == V.dtype and U.dtype in COMPUTE_DTYPES:
            zeros = torch.zeros(self.n_canonical, dtype=U.dtype, device=U.device)
            pattern = quiet(
                lambda: torch.sparse_csr_tensor(
                    self.crow, self.sorted_cols, zeros, (self.N, self.M), check_invariants=False
                )
            )
            s = torch.sparse.sampled_addmm(pattern, U, V.transpose(0, 1), beta=0.0).values()
            return self._unsort(s)
        out = torch.empty(self.nnz, dtype=dtype, device=U.device)
        chunk = max(1, SAMPLED_CHUNK_ELEMENTS // max(p, 1))
        for start in range(0, self.nnz, chunk):
            r = self.rows[start : start + chunk]
            c = self.cols[start : start + chunk]
            torch.sum(U[r].to(dtype) * V[c].to(dtype), dim=-1, out=out[start : start + chunk])
        return out


def _block_gather_dense(pattern: SparsePattern, G: torch.Tensor) -> torch.Tensor:
    """Values of a dense batched ``(b, n, m)`` gradient at the pattern's entries."""
    b = torch.div(pattern.rows, pattern.n, rounding_mode="floor")
    r = pattern.rows - b * pattern.n
    c = pattern.cols - b * pattern.m
    return G[b, r, c]


def dense_gather(pattern: SparsePattern, G: torch.Tensor) -> torch.Tensor:
    """Values of a dense gradient ``G`` (shape of the pattern's matrix) at the stored entries."""
    if pattern.batch is not None:
        return _block_gather_dense(pattern, G)
    return G[pattern.rows, pattern.cols]
