"""Incomplete factorisations on the pattern of ``A``: :class:`ILU0` and :class:`IC0`.

The factors keep exactly the pattern of ``A`` (no fill-in).  By default (``method="exact"``) they
are the factors of the sequential textbook algorithm, for ILU(0) (IKJ order, ``L`` unit lower,
``U`` upper)::

    for i, for k < i with a_ik stored:  a_ik /= a_kk
                                        a_ij -= a_ik a_kj   for j > k with a_ij and a_kj stored

and for IC(0) ``l_jj = √(a_jj − Σ_{k<j} l_jk²)``, ``l_ij = (a_ij − Σ_{k<j} l_ik l_jk) / l_jj``,
computed one dependency level at a time by :mod:`._levels` (the update pairs and the level
schedule are analysed once per pattern and cached; a refactorisation with new values is the
numeric part only).  The work is device-generic and shared by the items of a batch.

A zero ILU(0) pivot ``u_kk`` or a non-positive IC(0) pivot raises a ``ValueError`` that names the
row and the pivot value (factors are never silently NaN).

``method="sweeps"`` computes the factors instead with ``sweeps`` fine-grained fixed-point sweeps of
Chow and Patel (SIAM J. Sci. Comput. 37, 2015), which update every entry at once from the current
``L·U`` (``L·Lᵀ``) product on the pattern.  A few sweeps only approximate the exact factors, and
on some matrices the iteration diverges; its result is therefore checked: finite, and the
fixed-point residual ``‖(L U − A)|pattern‖ / ‖A|pattern‖`` at most ``max_residual`` (default 1),
else ``ValueError``.  Sweeps also do not keep ILU(0) of a symmetric matrix symmetric.

On the CPU with numba installed (``tsgu-krylov[fast]``; float32/float64) the exact factors come
instead from the sequential loop itself, compiled (:mod:`._compiled`: the same factors, pivots and
checks, no level schedule); ``TSGU_KRYLOV_KERNEL=torch`` forces the level schedule.

Applying ``M⁻¹`` is two triangular solves of factors prepared once
(:class:`._levels.TriangularFactors`): compiled loops on the CPU with numba, else PyTorch's native
sparse triangular solve.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import torch

from tsgu_ops.internal import SparsePattern, compress_rows, lexsort_rows_cols, quiet

from ._compiled import SplitFactor, csr_lower, ic0_values, ilu0_values, use_compiled
from ._levels import LevelSchedule, TriangularFactors, _expand, cached, lower_csr, transposed_order
from ._precond_base import Preconditioner, _canonical, _pattern_of, _where

__all__ = ["IC0", "ILU0"]

_METHODS = ("exact", "sweeps")


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


def _stored_updates(
    rows: torch.Tensor,
    cols: torch.Tensor,
    N: int,
    s1: torch.Tensor,
    s2: torch.Tensor,
    target: torch.Tensor,
    divided: torch.Tensor,
    divisors: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The candidate pairs ``(s1, s2)`` whose target coordinate (key ``row * N + col``) is stored,
    with its position ``t``, and each entry's divisor: ``divisors`` for the entries ``divided``,
    ``nnz`` (no division) for the others."""
    nnz = rows.numel()
    keys = rows * N + cols
    pos = torch.searchsorted(keys, target).clamp_max(max(nnz - 1, 0))
    hit = keys[pos] == target
    div = torch.full((nnz,), nnz, dtype=torch.int64, device=rows.device)
    div[divided] = divisors
    return s1[hit], s2[hit], pos[hit], div


def _ilu_pairs(
    rows: torch.Tensor, cols: torch.Tensor, N: int, diag_pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Update pairs of ILU(0) on a row-major pattern, and each entry's divisor.

    Entry ``(i, j)`` receives ``−l_ik u_kj`` for every ``k < min(i, j)`` with ``(i, k)`` and
    ``(k, j)`` stored: pairs ``(s1, s2, t)`` of positions.  A strictly lower entry is then divided
    by ``u_jj`` (``div``; ``nnz`` means no division).
    """
    crow = compress_rows(rows, N).to(torch.int64)
    lower = torch.nonzero(cols < rows).squeeze(-1)
    k = cols[lower]
    starts = diag_pos[k] + 1  # row k's strictly upper entries follow its diagonal
    group, s2 = _expand(starts, crow[k + 1] - starts)
    s1 = lower[group]
    return _stored_updates(rows, cols, N, s1, s2, rows[s1] * N + cols[s2], lower, diag_pos[k])


def _ic_pairs(
    rows: torch.Tensor, cols: torch.Tensor, N: int, diag_pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Update pairs of IC(0) on a row-major lower-triangular pattern, and each entry's divisor.

    Entry ``(i, j)``, ``j ≤ i``, receives ``−l_ik l_jk`` for every ``k < j`` with ``(i, k)`` and
    ``(j, k)`` stored: for each column ``k``, every pair of its strictly lower entries.
    """
    strict = torch.nonzero(cols < rows).squeeze(-1)
    by_col = strict[torch.argsort(cols[strict], stable=True)]  # column-major, rows ascending
    ccol = compress_rows(cols[by_col], N).to(torch.int64)
    k = cols[by_col]
    rank = torch.arange(by_col.numel(), device=rows.device) - ccol[k]
    group, partner = _expand(ccol[k], rank + 1)  # rows ≤ its own in the same column
    s1 = by_col[group]
    s2 = by_col[partner]
    return _stored_updates(rows, cols, N, s1, s2, rows[s1] * N + rows[s2], strict, diag_pos[cols[strict]])


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


class _IluSymbolic:
    """Pattern-only part of ILU(0) (cached per pattern): update pairs, level schedule, factor layout."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, N: int):
        self.rows, self.cols, self.N = rows, cols, N
        self.diag_pos = _diagonal_slots(rows, cols, N, "ILU(0)")
        self.crow = compress_rows(rows, N).to(torch.int64)
        self.lower = torch.nonzero(cols <= rows).squeeze(-1)
        self.upper = torch.nonzero(cols >= rows).squeeze(-1)
        lr, lc = rows[self.lower], cols[self.lower]
        self.l_diag = torch.nonzero(lr == lc).squeeze(-1)
        L = lower_csr(lr, lc, lc.to(torch.float64), N)
        self.l_crow, self.l_col = L.crow_indices(), L.col_indices()
        ur, uc = rows[self.upper], cols[self.upper]
        self.ut_order = transposed_order(ur, uc, N)
        Ut = lower_csr(uc[self.ut_order], ur[self.ut_order], uc.to(torch.float64), N)
        self.ut_crow, self.ut_col = Ut.crow_indices(), Ut.col_indices()

    @cached_property
    def schedule(self) -> LevelSchedule:
        """The level schedule (the PyTorch path only; built on first use)."""
        s1, s2, t, div = _ilu_pairs(self.rows, self.cols, self.N, self.diag_pos)
        return LevelSchedule(self.rows.numel(), s1, s2, t, div, None)

    def compiled(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return ilu0_values(self.crow, self.cols, self.diag_pos, a)


class _IcSymbolic:
    """Pattern-only part of IC(0) on a lower-triangular pattern (cached per pattern)."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, N: int):
        self.rows, self.cols, self.N = rows, cols, N
        self.diag_pos = _diagonal_slots(rows, cols, N, "IC(0)")
        L = lower_csr(rows, cols, cols.to(torch.float64), N)
        self.crow, self.col = L.crow_indices(), L.col_indices()

    @cached_property
    def schedule(self) -> LevelSchedule:
        """The level schedule (the PyTorch path only; built on first use)."""
        rows = self.rows
        s1, s2, t, div = _ic_pairs(rows, self.cols, self.N, self.diag_pos)
        on = torch.zeros(rows.numel(), dtype=torch.bool, device=rows.device)
        on[self.diag_pos] = True
        return LevelSchedule(rows.numel(), s1, s2, t, div, on)

    def compiled(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return ic0_values(self.crow.to(torch.int64), self.cols, self.diag_pos, a)


class _Incomplete(Preconditioner):
    """What ILU0 and IC0 share: the argument checks, the entries of ``A`` the factorisation reads,
    and their factor values, computed by levels (exact) or by checked sweeps."""

    _what: str  # the factorisation's name in messages
    _key: str  # its cache key
    _symbolic: Any  # its pattern-only part (a class; made once per pattern)
    _cholesky: bool  # L Lᵀ from the lower triangle, positive pivots (IC(0)); else L U, nonzero pivots

    def __init__(
        self, A: torch.Tensor, method: str = "exact", sweeps: int | None = None, max_residual: float = 1.0
    ):
        pattern, a = _pattern_of(A)
        super().__init__(pattern)
        n_sweeps = _check_method(method, sweeps)
        limit = _check_max_residual(max_residual)
        N = pattern.N
        if n_sweeps is None and self._cholesky and A.layout == torch.sparse_csr and A.dim() == 2:
            if use_compiled(a) and self._factor_csr_compiled(A):
                self.method, self.sweeps = method, n_sweeps
                return
        rows, cols, a = _canonical(pattern, a)
        # every entry, also those IC(0) does not read: a NaN anywhere means A is not what it seems
        if not bool(torch.isfinite(a).all()):
            raise ValueError(f"{self._what}: A has non-finite (inf or NaN) values")
        if self._cholesky:  # only the lower triangle is read
            keep = cols <= rows
            rows, cols, a = rows[keep], cols[keep], a[keep]
        sym = cached(self._key, rows, cols, lambda: self._symbolic(rows, cols, N))
        if n_sweeps is None and use_compiled(a):  # the sequential loop, compiled (no schedule)
            f, pivots, size = sym.compiled(a)
            _check_pivots(pattern, pivots, size, self._what, positive=self._cholesky)
            _check_finite(pattern, rows, f, self._what)
        elif n_sweeps is None:
            f, pivots = sym.schedule.run(a)
            s1, s2, t = sym.schedule.s1, sym.schedule.s2, sym.schedule.t
            size = a.abs().index_add(0, t, (f[s1] * f[s2]).abs())[sym.diag_pos]
            _check_pivots(pattern, pivots[sym.diag_pos], size, self._what, positive=self._cholesky)
            _check_finite(pattern, rows, f, self._what)
        else:
            f, prod = self._sweeps(rows, cols, a, sym.diag_pos, n_sweeps)
            _check_finite(pattern, rows, f, self._what)
            resid = float(torch.linalg.vector_norm(prod - a) / torch.linalg.vector_norm(a))
            _check_sweeps(pattern, resid, limit, n_sweeps, self._what)
        self._build(rows, cols, f, sym)
        self.method, self.sweeps = method, n_sweeps

    def _factor_csr_compiled(self, A: torch.Tensor) -> bool:
        """IC(0) of a 2-D CPU CSR ``A`` with sorted columns straight from its arrays (one compiled
        pass for the lower triangle and the checks, one for the factor: no canonical copy, no
        pattern analysis).  ``False`` where the columns need sorting (the general path then)."""
        lower = csr_lower(A)
        if lower == "unsorted":
            return False
        if lower == "non-finite":
            raise ValueError(f"{self._what}: A has non-finite (inf or NaN) values")
        if lower == "no diagonal":
            raise ValueError(
                f"{self._what}: every diagonal entry of A must be stored (the pattern lacks some)"
            )
        assert not isinstance(lower, str)
        crow, col, a, diag = lower
        f, pivots, size = ic0_values(crow, col, diag, a)
        _check_pivots(self.pattern, pivots, size, self._what, positive=True)
        if not bool(torch.isfinite(f).all()):  # the rows only for the message
            rows = torch.repeat_interleave(torch.arange(self.pattern.N), crow.diff().to(torch.int64))
            _check_finite(self.pattern, rows, f, self._what)
        N = self.pattern.N
        self.L = quiet(lambda: torch.sparse_csr_tensor(crow, col, f, (N, N), check_invariants=False))
        self._tri = TriangularFactors((self.L, False), (self.L, True))
        return True

    def _sweeps(
        self, rows: torch.Tensor, cols: torch.Tensor, a: torch.Tensor, diag_pos: torch.Tensor, sweeps: int
    ) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """Chow–Patel sweeps: the factor values and the factors' product on the pattern."""
        raise NotImplementedError

    def _build(self, rows: torch.Tensor, cols: torch.Tensor, f: torch.Tensor, sym: Any) -> None:
        """The factor matrices, from the factor values ``f`` at the entries read."""
        raise NotImplementedError  # pragma: no cover - abstract


class ILU0(_Incomplete):
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

    _what, _key, _symbolic, _cholesky = "ILU(0)", "ilu0", _IluSymbolic, False

    def _build(self, rows: torch.Tensor, cols: torch.Tensor, f: torch.Tensor, sym: Any) -> None:
        N = self.pattern.N
        self._rows, self._cols, self._f, self._sym = rows, cols, f, sym
        fl = f[sym.lower]
        fl[sym.l_diag] = 1.0  # the unit diagonal is stored: the CSR solve is far slower without it
        self.L = quiet(
            lambda: torch.sparse_csr_tensor(sym.l_crow, sym.l_col, fl, (N, N), check_invariants=False)
        )
        # U is kept as the lower-triangular Uᵀ, solved transposed (the faster native kernel)
        ut = quiet(
            lambda: torch.sparse_csr_tensor(
                sym.ut_crow, sym.ut_col, f[sym.upper][sym.ut_order], (N, N), check_invariants=False
            )
        )
        self._tri = TriangularFactors((self.L, False), (ut, True))

    def _sweeps(
        self, rows: torch.Tensor, cols: torch.Tensor, a: torch.Tensor, diag_pos: torch.Tensor, sweeps: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Chow–Patel sweeps from ``L = strict lower of A / diag``, ``U = upper of A``."""
        pattern, N = self.pattern, self.pattern.N
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
        full_l = _csr(rows_l, cols_l, torch.cat([l, ones])[order], N)
        return f, _sampled_spgemm(full_l, _csr(ur, uc, u, N), keys, N)

    @property
    def U(self) -> torch.Tensor:
        """The upper factor ``U`` as a flattened CSR matrix (built on request)."""
        sym, N = self._sym, self.pattern.N
        return _csr(self._rows[sym.upper], self._cols[sym.upper], self._f[sym.upper], N)

    def apply_flat(self, R: torch.Tensor) -> torch.Tensor:
        return self._tri.solve(R, self.transposed)


class IC0(_Incomplete):
    """Incomplete Cholesky on the lower triangle of ``A``'s pattern: ``M = L Lᵀ`` (SPD ``A``).

    Parameters
    ----------
    A : Tensor
        Symmetric positive-definite sparse COO/CSR (or dense) ``(n, n)`` or ``(b, n, n)``; only its
        lower triangle is read.
    method, sweeps, max_residual
        As for :class:`ILU0`: the sequential algorithm's factor, computed level by level
        (``"exact"``, the default), or ``sweeps`` checked Chow–Patel fixed-point sweeps.

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

    symmetric = True

    _what, _key, _symbolic, _cholesky = "IC(0)", "ic0", _IcSymbolic, True

    def _build(self, rows: torch.Tensor, cols: torch.Tensor, f: torch.Tensor, sym: Any) -> None:
        N = self.pattern.N
        self.L = quiet(lambda: torch.sparse_csr_tensor(sym.crow, sym.col, f, (N, N), check_invariants=False))
        self._tri = TriangularFactors((self.L, False), (self.L, True))

    def _sweeps(
        self, rows: torch.Tensor, cols: torch.Tensor, a: torch.Tensor, diag_pos: torch.Tensor, sweeps: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Chow–Patel sweeps from ``L = lower of A`` scaled by ``√diag``."""
        pattern, N = self.pattern, self.pattern.N
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
        t_all = lexsort_rows_cols(cols, rows, N)
        Lt = _csr(cols[t_all], rows[t_all], f[t_all], N)
        return f, _sampled_spgemm(_csr(rows, cols, f, N), Lt, keys, N)

    def apply_flat(self, R: torch.Tensor) -> torch.Tensor:
        # a vector, once a split form is prepared (it holds L in the passes' faster layout)
        split = next((f for _, f in self.__dict__.get("_split", ()) if f is not None), None)
        if split is not None and R.shape[1] == 1 and R.device.type == "cpu" and R.dtype == split.dtype:
            return split.solve(R.reshape(-1).contiguous()).view(R.shape)
        return self._tri.solve(R)  # L Lᵀ is symmetric: the transpose is the same

    def split_form(self, S: torch.Tensor) -> SplitFactor | None:
        """This factor prepared for CG on ``S`` without products with ``S`` (Eisenstat's trick).

        For a 2-D CPU CSR ``S`` (float32/float64, numba) whose strict lower part is ``L``'s own up
        to the scaling ``l_ij l_jj = s_ij`` (IC(0) of ``S`` changed no off-diagonal entry, as for
        5- and 7-point stencils; checked entry by entry); ``None`` otherwise.
        """
        L = self.L
        if S.layout != torch.sparse_csr or S.dim() != 2 or S.shape != L.shape or S.dtype != L.dtype:
            return None
        if self.pattern.batch is not None or not use_compiled(S.values()) or S.device != L.device:
            return None
        key = (S.crow_indices(), S.col_indices(), S.values().detach())
        # the last one: (crow, col, values) of its matrix and the result (shared with a later .T)
        cache: list[tuple[tuple[torch.Tensor, ...], SplitFactor | None]] = self.__dict__.setdefault(
            "_split", []
        )
        for seen, result in cache:  # the backward's Sᵀ equals S for a symmetric S: no second pass
            if all(
                a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(seen, key)
            ):
                return result
        result = SplitFactor.build(S, L)
        cache[:] = [(tuple(t.clone() for t in key), result)]
        return result
