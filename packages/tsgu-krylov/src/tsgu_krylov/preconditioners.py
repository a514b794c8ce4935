"""Preconditioners: Jacobi, incomplete Cholesky IC(0) and incomplete LU ILU(0).

A preconditioner is a callable applying ``M⁻¹`` to a block ``(*batch, n, k)`` (or a vector ``(n,)``,
``(b, n)`` for a batch of matrices); every solver of this package and
:func:`~tsgu_krylov.sparse_generic_solve` accept one.  Its ``.T`` is the preconditioner of ``Aᵀ``
(what the backward pass of a solve uses).

The incomplete factorisations keep exactly the pattern of ``A`` (no fill-in).  By default
(``method="exact"``) they are the factors of the sequential textbook algorithm, for ILU(0) (IKJ
order, ``L`` unit lower, ``U`` upper)::

    for i, for k < i with a_ik stored:  a_ik /= a_kk
                                        a_ij -= a_ik a_kj   for j > k with a_ij and a_kj stored

and for IC(0) ``l_jj = √(a_jj − Σ_{k<j} l_jk²)``, ``l_ij = (a_ij − Σ_{k<j} l_ik l_jk) / l_jj``.  Each
stored entry is computed once, from entries of earlier rows and of earlier columns of its own row;
the entries are grouped in *levels* of the dependency graph (an entry's level is one more than the
highest level it reads), and one level is computed at once with a few native kernels (gathers, a
product and a scatter-add over the level's update pairs).  The Python loop runs over levels, never
over rows or entries: about ``2·(nx + ny + nz)`` of them for a 3-D grid Laplacian.  The work is
device-generic (the same kernels on CPU and GPU) and shared by the items of a batch.

A zero ILU(0) pivot ``u_kk`` or a non-positive IC(0) pivot raises a ``ValueError`` that names the
row and the pivot value (factors are never silently NaN).

``method="sweeps"`` computes the factors instead with ``sweeps`` fine-grained fixed-point sweeps of
Chow and Patel (SIAM J. Sci. Comput. 37, 2015), which update every entry at once from the current
``L·U`` (``L·Lᵀ``) product on the pattern.  A sweep is a handful of kernels regardless of the
dependency depth, but a few sweeps only approximate the exact factors, and on some matrices the
iteration diverges; its result is therefore checked: finite, and the fixed-point residual
``‖(L U − A)|pattern‖ / ‖A|pattern‖`` at most ``max_residual`` (default 1), else ``ValueError``.
Sweeps also do not keep ILU(0) of a symmetric matrix symmetric.

A solver that needs a symmetric positive-definite preconditioner (CG, MINRES) gets one from
:func:`make_preconditioner` with ``symmetric=True`` (what :func:`~tsgu_krylov.sparse_generic_solve`
passes for them): ``"ilu0"`` of a symmetric ``A`` is then applied symmetrically, as IC(0) (for a
symmetric ``A`` the exact ILU(0) factors are ``U = D Lᵀ``, so ``L U = (L D^½)(L D^½)ᵀ``, the IC(0)
factorisation), and ``"ilu0"`` of a non-symmetric ``A`` is refused.

Applying ``M⁻¹`` is two sparse triangular solves with tsgu-ops' kernel.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tsgu_ops.internal import SparsePattern, check_sparse_indices, compress_rows, lexsort_rows_cols, quiet
from tsgu_ops.triangular import csr_triangular_solve

from ._operator import fold_block

__all__ = ["IC0", "ILU0", "Jacobi", "Preconditioner", "make_preconditioner"]

_SPARSE = (torch.sparse_coo, torch.sparse_csr)
_METHODS = ("exact", "sweeps")


def _pattern_of(A: Any, name: str = "A") -> tuple[SparsePattern, torch.Tensor]:
    """Pattern and canonical (row-major, duplicates summed) values of a square matrix."""
    if not isinstance(A, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(A).__name__}")
    if A.layout == torch.strided:
        if A.dim() not in (2, 3):
            raise ValueError(f"{name} must be (n, n) or (b, n, n), got shape {tuple(A.shape)}")
        A = A.detach().to_sparse_csr() if A.dim() == 2 else A.detach().to_sparse(layout=torch.sparse_coo)
    if A.layout not in _SPARSE:
        raise ValueError(f"{name} must be a dense, COO or CSR tensor, got layout {A.layout}")
    if A.dim() not in (2, 3) or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name} must be square (n, n) or batched (b, n, n), got shape {tuple(A.shape)}")
    if not A.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {A.dtype}")
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


def _check_method(method: Any, sweeps: Any) -> int | None:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if method == "exact":
        if sweeps is not None:
            raise ValueError("sweeps is an option of method='sweeps'; the exact factorisation has none")
        return None
    if sweeps is None:
        return 5
    if isinstance(sweeps, bool) or not isinstance(sweeps, int) or sweeps < 1:
        raise ValueError(f"sweeps must be a positive int, got {sweeps!r}")
    return sweeps


def _check_max_residual(max_residual: Any) -> float:
    if isinstance(max_residual, bool) or not isinstance(max_residual, (int, float)) or not max_residual > 0:
        raise ValueError(f"max_residual must be a positive number, got {max_residual!r}")
    return float(max_residual)


class Preconditioner:
    """Base class: ``M⁻¹`` on blocks of any leading shape; subclasses implement :meth:`apply_flat`."""

    def __init__(self, pattern: SparsePattern, transposed: bool = False):
        self.pattern = pattern
        self.transposed = transposed

    def apply_flat(self, R: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

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


class Jacobi(Preconditioner):
    """``M = diag(A)``: divides by the diagonal (a zero or missing diagonal entry raises).

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
        on = pattern.sorted_rows == pattern.sorted_cols
        d = torch.zeros(pattern.N, dtype=values.dtype, device=values.device)
        d = d.index_add(0, pattern.sorted_rows[on], values[on])
        if bool((d == 0).any()):
            raise ValueError("Jacobi preconditioner: A has a zero or missing diagonal entry")
        self.inv_diag = (1.0 / d).unsqueeze(-1)

    def apply_flat(self, R: torch.Tensor) -> torch.Tensor:
        return R * self.inv_diag


def _expand(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated ranges ``starts[g] + 0 … counts[g]−1``: the group and the index of each."""
    dev = starts.device
    total = int(counts.sum()) if counts.numel() else 0
    group = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), counts, output_size=total)
    shift = starts - (torch.cumsum(counts, 0) - counts)
    return group, shift.index_select(0, group) + torch.arange(total, device=dev)


def _ilu_pairs(
    rows: torch.Tensor, cols: torch.Tensor, N: int, diag_pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Update pairs of ILU(0) on a row-major pattern, and each entry's divisor.

    Entry ``(i, j)`` receives ``−l_ik u_kj`` for every ``k < min(i, j)`` with ``(i, k)`` and
    ``(k, j)`` stored: pairs ``(s1, s2, t)`` of positions.  A strictly lower entry is then divided
    by ``u_jj`` (``div``; ``nnz`` means no division).
    """
    nnz = rows.numel()
    crow = compress_rows(rows, N).to(torch.int64)
    lower = torch.nonzero(cols < rows).squeeze(-1)
    k = cols[lower]
    starts = diag_pos[k] + 1  # row k's strictly upper entries follow its diagonal
    group, s2 = _expand(starts, crow[k + 1] - starts)
    s1 = lower[group]
    want = rows[s1] * N + cols[s2]
    keys = rows * N + cols
    pos = torch.searchsorted(keys, want).clamp_max(max(nnz - 1, 0))
    hit = keys[pos] == want
    div = torch.full((nnz,), nnz, dtype=torch.int64, device=rows.device)
    div[lower] = diag_pos[k]
    return s1[hit], s2[hit], pos[hit], div


def _ic_pairs(
    rows: torch.Tensor, cols: torch.Tensor, N: int, diag_pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Update pairs of IC(0) on a row-major lower-triangular pattern, and each entry's divisor.

    Entry ``(i, j)``, ``j ≤ i``, receives ``−l_ik l_jk`` for every ``k < j`` with ``(i, k)`` and
    ``(j, k)`` stored: for each column ``k``, every pair of its strictly lower entries.
    """
    nnz = rows.numel()
    strict = torch.nonzero(cols < rows).squeeze(-1)
    by_col = strict[torch.argsort(cols[strict], stable=True)]  # column-major, rows ascending
    ccol = compress_rows(cols[by_col], N).to(torch.int64)
    k = cols[by_col]
    rank = torch.arange(by_col.numel(), device=rows.device) - ccol[k]
    group, partner = _expand(ccol[k], rank + 1)  # rows ≤ its own in the same column
    s1 = by_col[group]
    s2 = by_col[partner]
    want = rows[s1] * N + rows[s2]
    keys = rows * N + cols
    pos = torch.searchsorted(keys, want).clamp_max(max(nnz - 1, 0))
    hit = keys[pos] == want
    div = torch.full((nnz,), nnz, dtype=torch.int64, device=rows.device)
    div[strict] = diag_pos[cols[strict]]
    return s1[hit], s2[hit], pos[hit], div


def _levels(nnz: int, s1: torch.Tensor, s2: torch.Tensor, t: torch.Tensor, div: torch.Tensor) -> torch.Tensor:
    """Level of every entry in the dependency graph (Kahn's algorithm, one frontier at a time).

    A structural analysis of the pattern in many small steps: it runs on the host, whatever the
    device of the factorisation (one transfer of the indices each way), with NumPy when it is
    installed (a NumPy call costs a fraction of a PyTorch operator's dispatch) and PyTorch
    otherwise.
    """
    cpu = torch.device("cpu")
    has = torch.nonzero(div < nnz).squeeze(-1)
    src = torch.cat([s1, s2, div[has]]).to(cpu)
    dst = torch.cat([t, t, has]).to(cpu)
    try:
        import numpy
    except ImportError:  # NumPy accompanies PyTorch almost everywhere, but is not required
        return _levels_torch(nnz, src, dst)
    try:
        src_np, dst_np = src.numpy(), dst.numpy()
    except RuntimeError:  # pragma: no cover - a PyTorch built without NumPy support
        return _levels_torch(nnz, src, dst)
    return torch.from_numpy(_levels_numpy(numpy, nnz, src_np, dst_np))


def _levels_numpy(np: Any, nnz: int, src: Any, dst: Any) -> Any:
    """:func:`_levels` on NumPy arrays of edges ``src → dst``."""
    order = np.argsort(src, kind="stable")
    out_dst = dst[order]
    out_count = np.bincount(src, minlength=nnz)
    out_start = np.cumsum(out_count) - out_count
    indeg = np.bincount(dst, minlength=nnz)
    level = np.zeros(nnz, dtype=np.int64)
    frontier = np.flatnonzero(indeg == 0)
    lev = 0
    while frontier.size:
        level[frontier] = lev
        counts = out_count[frontier]
        ends = np.cumsum(counts)
        total = int(ends[-1])
        if total == 0:
            break
        idx = np.repeat(out_start[frontier] - (ends - counts), counts) + np.arange(total)
        reached = out_dst[idx]
        np.subtract.at(indeg, reached, 1)
        ready = reached[indeg[reached] == 0]  # once per edge that reached it
        # keep one copy of each: a done entry's in-degree is free, store a distinct mark there
        mark = np.arange(-1, -ready.size - 1, -1)
        indeg[ready] = mark
        frontier = ready[indeg[ready] == mark]
        lev += 1
    return level


def _levels_torch(nnz: int, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """:func:`_levels` with PyTorch operators on the CPU."""
    order = torch.argsort(src, stable=True)
    out_ptr = compress_rows(src[order], nnz).to(torch.int64)
    out_start, out_count = out_ptr[:-1], out_ptr[1:] - out_ptr[:-1]
    out_dst = dst[order]
    indeg = torch.bincount(dst, minlength=nnz)
    level = torch.zeros(nnz, dtype=torch.int64)
    minus_one = torch.full((dst.numel(),), -1, dtype=torch.int64)
    frontier = torch.nonzero(indeg == 0).squeeze(-1)
    lev = 0
    while frontier.numel():
        level.index_fill_(0, frontier, lev)
        _, idx = _expand(out_start.index_select(0, frontier), out_count.index_select(0, frontier))
        if idx.numel() == 0:
            break
        reached = out_dst.index_select(0, idx)
        indeg.index_add_(0, reached, minus_one[: idx.numel()])
        ready = reached[indeg.index_select(0, reached) == 0]  # once per edge that reached it
        # keep one copy of each: a done entry's in-degree is free, store a distinct mark there
        mark = torch.arange(-1, -ready.numel() - 1, -1)
        indeg.index_put_((ready,), mark)
        frontier = ready[indeg.index_select(0, ready) == mark]
        lev += 1
    return level


def _factor_by_levels(
    a: torch.Tensor,
    s1: torch.Tensor,
    s2: torch.Tensor,
    t: torch.Tensor,
    div: torch.Tensor,
    sqrt_at: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sequential incomplete factorisation, one dependency level at a time.

    Entry ``e`` becomes ``(a_e − Σ_{pairs p → e} f_{s1[p]} f_{s2[p]}) / f_{div[e]}`` (no division
    where ``div[e] = nnz``), or, for IC(0) where ``sqrt_at[e]`` (the diagonal, never divided), the
    square root of the bracket.  Returns the factor values (row-major) and, at the entries that
    are not divided, the brackets (for the diagonal entries: the pivots).
    """
    nnz = a.numel()
    dev = a.device
    level = _levels(nnz, s1, s2, t, div).to(dev)
    # level order; within a level the entries to divide come first, then the others
    plain = (div == nnz) if sqrt_at is None else sqrt_at
    key = 2 * level + plain.to(torch.int64)
    order = torch.argsort(key, stable=True)
    n_levels = int(level.max()) + 1 if nnz else 0
    bounds = compress_rows(key[order], 2 * n_levels).tolist()  # [divided, plain) per level
    rank = torch.empty(nnz + 1, dtype=torch.int64, device=dev)
    rank[order] = torch.arange(nnz, device=dev)
    rank[nnz] = nnz  # a slot that holds 1
    t_rank, p_order = torch.sort(rank[t], stable=True)  # pairs by the level order of their target
    p_bounds = torch.searchsorted(t_rank, torch.tensor(bounds[::2], device=dev)).tolist()
    s1r, s2r = rank[s1][p_order], rank[s2][p_order]
    div_l = rank[div[order]]
    # one buffer: the brackets, turned into factor entries in place, level by level
    f = torch.ones(nnz + 1, dtype=a.dtype, device=dev)
    f[:nnz] = a[order]
    brackets = f.clone() if sqrt_at is not None else f
    # every level's views at once (one native call each instead of a Python slice per level)
    cuts = bounds[1:-1]
    segments = f[:nnz].tensor_split(cuts)  # divided, plain, divided, plain, …
    saved = brackets[:nnz].tensor_split(cuts)
    divisors = div_l.tensor_split(cuts)
    p_cuts = p_bounds[1:-1]
    firsts, seconds, targets = s1r.tensor_split(p_cuts), s2r.tensor_split(p_cuts), t_rank.tensor_split(p_cuts)
    for lev in range(n_levels):
        if targets[lev].numel():
            prod = f.index_select(0, firsts[lev]).mul_(f.index_select(0, seconds[lev]))
            f.index_add_(0, targets[lev], prod, alpha=-1)
        divided, plain = segments[2 * lev], segments[2 * lev + 1]
        if divided.numel():
            divided.div_(f.index_select(0, divisors[2 * lev]))
        if plain.numel() and sqrt_at is not None:
            saved[2 * lev + 1].copy_(plain)
            plain.sqrt_()
    back = rank[:nnz]
    return f[back], brackets[back]


def _diagonal_slots(rows: torch.Tensor, cols: torch.Tensor, N: int, what: str) -> torch.Tensor:
    """Position of each row's diagonal entry among row-major entries (every one must be stored)."""
    on = torch.nonzero(rows == cols).squeeze(-1)
    if on.numel() != N:
        raise ValueError(f"{what}: every diagonal entry of A must be stored (the pattern lacks some)")
    return on


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, N: int) -> torch.Tensor:
    """CSR matrix from row-major sorted coordinates."""
    return quiet(
        lambda: torch.sparse_csr_tensor(compress_rows(rows, N), cols, values, (N, N), check_invariants=False)
    )


def _sampled_spgemm(Lm: torch.Tensor, Um: torch.Tensor, keys: torch.Tensor, N: int) -> torch.Tensor:
    """Values of the sparse product ``Lm @ Um`` at the row-major positions ``keys`` (0 elsewhere)."""
    if Lm._nnz() == 0 or Um._nnz() == 0:
        return torch.zeros(keys.numel(), dtype=Lm.dtype, device=Lm.device)
    S = quiet(lambda: Lm @ Um)
    crow, col, val = S.crow_indices(), S.col_indices(), S.values()
    if val.numel() == 0:
        return torch.zeros(keys.numel(), dtype=Lm.dtype, device=Lm.device)
    rows = torch.repeat_interleave(
        torch.arange(N, device=crow.device), (crow[1:] - crow[:-1]).to(torch.int64), output_size=val.numel()
    )
    order = lexsort_rows_cols(rows, col.to(torch.int64), N)
    skeys = (rows * N + col.to(torch.int64))[order]
    sval = val[order]
    pos = torch.searchsorted(skeys, keys).clamp_max(skeys.numel() - 1)
    return torch.where(skeys[pos] == keys, sval[pos], torch.zeros((), dtype=val.dtype, device=val.device))


def _check_pivots(
    pattern: SparsePattern,
    pivots: torch.Tensor,
    size: torch.Tensor,
    what: str,
    positive: bool,
    hint: str | None = None,
) -> None:
    """Raise at the first row whose pivot is zero (``positive``: not positive) or not finite.

    ``size`` bounds the terms each pivot was computed from (``|a_kk| + Σ |l_kj u_jk|``): a pivot
    within a few rounding errors of that is zero in all but name, and dividing by it would only
    amplify rounding noise, so it counts as zero.
    """
    tiny = 8 * torch.finfo(pivots.dtype).eps * size
    ok = pivots > tiny if positive else pivots.abs() > tiny
    bad = torch.nonzero(~(ok & torch.isfinite(pivots))).squeeze(-1)
    if bad.numel():
        row = int(bad[0])
        value = float(pivots[row])
        note = ""
        if not math.isfinite(value):
            kind = "non-finite"
        else:
            kind = "non-positive" if positive else "zero"
            if value != 0 and abs(value) <= float(tiny[row]):
                note = f" (zero within rounding error: the terms it comes from are ~{float(size[row]):.3g})"
        if hint is None:
            hint = (
                "A is not positive definite, or IC(0) does not exist for it; try 'ilu0' with a "
                "non-symmetric solver, or 'jacobi'"
                if positive
                else "A has no ILU(0) factorisation in this ordering; try 'jacobi' or reorder A"
            )
        raise ValueError(
            f"{what} breakdown at {_where(pattern, row)}: {kind} pivot {value:.6g}{note}; {hint}"
        )


_SWEEPS_DIVERGED = (
    "the fixed-point sweeps did not converge (the exact factorisation may exist); "
    "use method='exact' (the default)"
)


def _check_finite(pattern: SparsePattern, rows: torch.Tensor, f: torch.Tensor, what: str) -> None:
    bad = torch.nonzero(~torch.isfinite(f)).squeeze(-1)
    if bad.numel():
        row = int(rows[bad[0]])
        raise ValueError(f"{what}: the factors are not finite (overflow) at {_where(pattern, row)}")


def _check_sweeps(pattern: SparsePattern, resid: float, limit: float, sweeps: int, what: str) -> None:
    if not resid <= limit:
        raise ValueError(
            f"{what} with method='sweeps' did not converge: after {sweeps} sweeps the relative "
            f"fixed-point residual ‖(factor product − A) on the pattern‖ / ‖A‖ is {resid:.3g} "
            f"(limit max_residual={limit:g}); use method='exact' (the default)"
        )


class ILU0(Preconditioner):
    """Incomplete LU factorisation on ``A``'s own pattern: ``M = L U`` (``L`` unit lower).

    Parameters
    ----------
    A : Tensor
        Square sparse COO/CSR (or dense) ``(n, n)`` or ``(b, n, n)``, every diagonal entry stored.
    method : {"exact", "sweeps"}
        ``"exact"`` (default): the sequential algorithm's factors, computed level by level.
        ``"sweeps"``: ``sweeps`` Chow–Patel fixed-point sweeps, an approximation whose result is
        checked (see the module docstring).
    sweeps : int, optional
        Number of sweeps for ``method="sweeps"`` (default 5); not allowed with ``"exact"``.
    max_residual : float
        ``method="sweeps"`` only: the largest accepted relative fixed-point residual.

    Attributes
    ----------
    L, U : Tensor
        The factors as flattened ``(b·n, b·n)`` CSR matrices (``L`` stores its unit diagonal).

    Raises
    ------
    ValueError
        A missing diagonal entry; a zero (or rounding-level) pivot ``u_kk``, naming the row and the
        pivot; non-finite factors; sweeps that did not converge.

    Examples
    --------
    >>> import torch
    >>> from tsgu_krylov import ILU0
    >>> A = torch.tensor([[4.0, 1.0], [2.0, 3.0]], dtype=torch.float64).to_sparse_csr()
    >>> ILU0(A)(torch.tensor([[5.0], [5.0]], dtype=torch.float64))  # no fill-in here: exact
    tensor([[1.],
            [1.]], dtype=torch.float64)
    >>> ILU0(torch.tensor([[1.0, 1.0], [1.0, 1.0]]).to_sparse())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ILU(0) breakdown at row 1: zero pivot 0; ...
    """

    def __init__(
        self, A: torch.Tensor, method: str = "exact", sweeps: int | None = None, max_residual: float = 1.0
    ):
        pattern, a = _pattern_of(A)
        super().__init__(pattern)
        n_sweeps = _check_method(method, sweeps)
        limit = _check_max_residual(max_residual)
        N = pattern.N
        rows, cols, a = _canonical(pattern, a)
        if not bool(torch.isfinite(a).all()):
            raise ValueError("ILU(0): A has non-finite (inf or NaN) values")
        diag_pos = _diagonal_slots(rows, cols, N, "ILU(0)")
        if n_sweeps is None:
            s1, s2, t, div = _ilu_pairs(rows, cols, N, diag_pos)
            f, _ = _factor_by_levels(a, s1, s2, t, div, None)
            size = a.abs().index_add(0, t, (f[s1] * f[s2]).abs())[diag_pos]
            _check_pivots(pattern, f[diag_pos], size, "ILU(0)", positive=False)
        else:
            f = self._sweeps(pattern, rows, cols, a, N, diag_pos, n_sweeps, limit)
        _check_finite(pattern, rows, f, "ILU(0)")
        lower = cols <= rows
        upper = cols >= rows
        fl = f.clone()
        fl[diag_pos] = 1.0  # the unit diagonal is stored: the CSR solve is far slower without it
        self.L = _csr(rows[lower], cols[lower], fl[lower], N)
        self.U = _csr(rows[upper], cols[upper], f[upper], N)
        self.method, self.sweeps = method, n_sweeps

    @staticmethod
    def _sweeps(
        pattern: SparsePattern,
        rows: torch.Tensor,
        cols: torch.Tensor,
        a: torch.Tensor,
        N: int,
        diag_pos: torch.Tensor,
        sweeps: int,
        limit: float,
    ) -> torch.Tensor:
        """Chow–Patel sweeps from ``L = strict lower of A / diag``, ``U = upper of A``."""
        lower = cols < rows
        keys = rows * N + cols
        lr, lc = rows[lower], cols[lower]
        ur, uc = rows[~lower], cols[~lower]
        ar = torch.arange(N, device=rows.device)
        order = lexsort_rows_cols(torch.cat([lr, ar]), torch.cat([lc, ar]), N)
        rows_l, cols_l = torch.cat([lr, ar])[order], torch.cat([lc, ar])[order]
        ones = torch.ones(N, dtype=a.dtype, device=a.device)
        d = a[diag_pos]
        _check_pivots(pattern, d, d.abs(), "ILU(0)", positive=False)
        u = a[~lower].clone()
        l = a[lower] / d[lc]
        u_diag_slot = torch.nonzero(ur == uc).squeeze(-1)  # u_jj among the upper entries, by row j
        for sweep in range(sweeps):
            s = _sampled_spgemm(_csr(lr, lc, l, N), _csr(ur, uc, u, N), keys, N)
            ujj = u[u_diag_slot][lc]
            l_new = (a[lower] - s[lower] + l * ujj) / ujj
            u = a[~lower] - s[~lower]
            l = l_new
            size = d.abs() + s[diag_pos].abs()
            _check_pivots(pattern, u[u_diag_slot], size, f"ILU(0) sweep {sweep + 1}", False, _SWEEPS_DIVERGED)
        f = torch.empty_like(a)
        f[lower], f[~lower] = l, u
        _check_finite(pattern, rows, f, "ILU(0)")
        full_l = _csr(rows_l, cols_l, torch.cat([l, ones])[order], N)
        prod = _sampled_spgemm(full_l, _csr(ur, uc, u, N), keys, N)
        resid = float(torch.linalg.vector_norm(prod - a) / torch.linalg.vector_norm(a))
        _check_sweeps(pattern, resid, limit, sweeps, "ILU(0)")
        return f

    def apply_flat(self, R: torch.Tensor) -> torch.Tensor:
        if self.transposed:  # (LU)ᵀ = Uᵀ Lᵀ
            Y = csr_triangular_solve(self.U, R, upper=True, transpose=True)
            return csr_triangular_solve(self.L, Y, upper=False, transpose=True)
        Y = csr_triangular_solve(self.L, R, upper=False)
        return csr_triangular_solve(self.U, Y, upper=True)


class IC0(Preconditioner):
    """Incomplete Cholesky on the lower triangle of ``A``'s pattern: ``M = L Lᵀ`` (SPD ``A``).

    Parameters
    ----------
    A : Tensor
        Symmetric positive-definite sparse COO/CSR (or dense) ``(n, n)`` or ``(b, n, n)``; only its
        lower triangle is read.
    method : {"exact", "sweeps"}
        ``"exact"`` (default): the sequential algorithm's factor, computed level by level.
        ``"sweeps"``: ``sweeps`` Chow–Patel fixed-point sweeps, checked (see the module docstring).
    sweeps : int, optional
        Number of sweeps for ``method="sweeps"`` (default 5); not allowed with ``"exact"``.
    max_residual : float
        ``method="sweeps"`` only: the largest accepted relative fixed-point residual.

    Attributes
    ----------
    L : Tensor
        The lower factor as a flattened ``(b·n, b·n)`` CSR matrix.

    Raises
    ------
    ValueError
        A missing diagonal entry; a pivot ``a_jj − Σ l_jk²`` that is not positive, naming the row
        and the pivot (``A`` is not positive definite, or IC(0) does not exist for it); sweeps that
        did not converge.

    Examples
    --------
    >>> import torch
    >>> from tsgu_krylov import IC0
    >>> A = torch.tensor([[4.0, 2.0], [2.0, 5.0]], dtype=torch.float64).to_sparse()
    >>> IC0(A)(torch.tensor([[6.0], [7.0]], dtype=torch.float64))
    tensor([[1.],
            [1.]], dtype=torch.float64)
    >>> IC0(torch.tensor([[1.0, 2.0], [2.0, 1.0]]).to_sparse())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: IC(0) breakdown at row 1: non-positive pivot -3; ...
    """

    def __init__(
        self, A: torch.Tensor, method: str = "exact", sweeps: int | None = None, max_residual: float = 1.0
    ):
        pattern, a = _pattern_of(A)
        super().__init__(pattern)
        n_sweeps = _check_method(method, sweeps)
        limit = _check_max_residual(max_residual)
        N = pattern.N
        rows, cols, a = _canonical(pattern, a)
        keep = cols <= rows
        rows, cols, a = rows[keep], cols[keep], a[keep]
        if not bool(torch.isfinite(a).all()):
            raise ValueError("IC(0): A has non-finite (inf or NaN) values")
        diag_pos = _diagonal_slots(rows, cols, N, "IC(0)")
        if n_sweeps is None:
            s1, s2, t, div = _ic_pairs(rows, cols, N, diag_pos)
            on = torch.zeros(rows.numel(), dtype=torch.bool, device=rows.device)
            on[diag_pos] = True
            f, before = _factor_by_levels(a, s1, s2, t, div, on)
            size = a.abs().index_add(0, t, (f[s1] * f[s2]).abs())[diag_pos]
            _check_pivots(pattern, before[diag_pos], size, "IC(0)", positive=True)
        else:
            f = self._sweeps(pattern, rows, cols, a, N, diag_pos, n_sweeps, limit)
        _check_finite(pattern, rows, f, "IC(0)")
        self.L = _csr(rows, cols, f, N)
        self.method, self.sweeps = method, n_sweeps

    @staticmethod
    def _sweeps(
        pattern: SparsePattern,
        rows: torch.Tensor,
        cols: torch.Tensor,
        a: torch.Tensor,
        N: int,
        diag_pos: torch.Tensor,
        sweeps: int,
        limit: float,
    ) -> torch.Tensor:
        """Chow–Patel sweeps from ``L = lower of A`` scaled by ``√diag``."""
        d = a[diag_pos]
        _check_pivots(pattern, d, d.abs(), "IC(0)", positive=True)
        strict = cols < rows
        keys = rows * N + cols
        sr, sc = rows[strict], cols[strict]
        t_order = lexsort_rows_cols(sc, sr, N)  # transposed order of the strict part, for Lᵀ
        ldiag = d.sqrt()
        lstrict = a[strict] / ldiag[sc]
        for sweep in range(sweeps):
            Ls = _csr(sr, sc, lstrict, N)
            LsT = _csr(sc[t_order], sr[t_order], lstrict[t_order], N)
            s = _sampled_spgemm(Ls, LsT, keys, N)
            pivot = d - s[diag_pos]
            size = d.abs() + s[diag_pos].abs()
            _check_pivots(pattern, pivot, size, f"IC(0) sweep {sweep + 1}", True, _SWEEPS_DIVERGED)
            new_diag = pivot.sqrt()
            lstrict = (a[strict] - s[strict]) / ldiag[sc]
            ldiag = new_diag
        f = torch.empty_like(a)
        f[strict], f[diag_pos] = lstrict, ldiag
        _check_finite(pattern, rows, f, "IC(0)")
        t_all = lexsort_rows_cols(cols, rows, N)
        prod = _sampled_spgemm(_csr(rows, cols, f, N), _csr(cols[t_all], rows[t_all], f[t_all], N), keys, N)
        resid = float(torch.linalg.vector_norm(prod - a) / torch.linalg.vector_norm(a))
        _check_sweeps(pattern, resid, limit, sweeps, "IC(0)")
        return f

    def apply_flat(self, R: torch.Tensor) -> torch.Tensor:
        Y = csr_triangular_solve(self.L, R, upper=False)
        return csr_triangular_solve(self.L, Y, upper=False, transpose=True)


_KINDS = {"jacobi": Jacobi, "ic0": IC0, "ilu0": ILU0}


def make_preconditioner(A: torch.Tensor, kind: Any, *, symmetric: bool = False) -> Any:
    """``None`` or a preconditioner for ``A`` by name: ``"jacobi"``, ``"ic0"`` or ``"ilu0"``.

    A preconditioner object or callable passes through unchanged.

    Parameters
    ----------
    A : Tensor
        The matrix (sparse COO/CSR or dense, ``(n, n)`` or ``(b, n, n)``).
    kind : str, Preconditioner, Tensor, callable or None
        A name (case, ``(``, ``)``, ``-`` and ``_`` ignored: ``"IC(0)"`` is ``"ic0"``) or a ready
        preconditioner.
    symmetric : bool
        Whether the solver needs a symmetric positive-definite preconditioner (CG, MINRES).  Then
        ``"ilu0"`` of a symmetric ``A`` is applied symmetrically, i.e. built as IC(0) (the same
        factorisation: for a symmetric ``A``, ILU(0) gives ``U = D Lᵀ``), and ``"ilu0"`` of a
        non-symmetric ``A`` raises ``ValueError``.

    Examples
    --------
    >>> import torch
    >>> from tsgu_krylov import make_preconditioner
    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64).to_sparse_csr()
    >>> type(make_preconditioner(A, "IC(0)")).__name__
    'IC0'
    >>> type(make_preconditioner(A, "ilu0", symmetric=True)).__name__  # e.g. for MINRES
    'IC0'
    """
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be a bool, got {type(symmetric).__name__}")
    if kind is None or isinstance(kind, Preconditioner):
        return kind
    if isinstance(kind, str):
        key = kind.lower().replace("(", "").replace(")", "").replace("-", "").replace("_", "")
        if key not in _KINDS:
            raise ValueError(f"preconditioner must be one of {sorted(_KINDS)} or a callable, got {kind!r}")
        if key == "ilu0" and symmetric:
            return _symmetric_ilu0(A)
        return _KINDS[key](A)
    if isinstance(kind, torch.Tensor) or callable(kind):
        return kind
    raise TypeError(f"preconditioner must be a name, a tensor or a callable, got {type(kind).__name__}")


def _symmetric_ilu0(A: torch.Tensor) -> IC0:
    """ILU(0) applied symmetrically, for a solver that needs an SPD preconditioner: IC(0)."""
    pattern, values = _pattern_of(A)
    if not pattern.symmetric(values):
        raise ValueError(
            "preconditioner='ilu0': the solver (CG or MINRES) needs a symmetric preconditioner, but A "
            "is not symmetric, so ILU(0) is not; use a non-symmetric solver (gmres, bicgstab) with "
            "'ilu0', or 'jacobi'"
        )
    try:
        return IC0(A)
    except ValueError as err:
        raise ValueError(
            "preconditioner='ilu0' for a solver that needs a symmetric positive-definite "
            f"preconditioner is applied symmetrically, as IC(0), which broke down: {err}"
        ) from err
