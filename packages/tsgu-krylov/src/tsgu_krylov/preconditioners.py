"""Preconditioners: Jacobi, incomplete Cholesky IC(0) and incomplete LU ILU(0).

A preconditioner is a callable applying ``M⁻¹`` to a block ``(*batch, n, k)``; every solver of
this package and :func:`~tsgu_krylov.sparse_generic_solve` accept one.  Its ``.T`` is the
preconditioner of ``Aᵀ`` (what the backward pass of a solve uses).

The incomplete factorisations keep exactly the pattern of ``A`` (no fill-in).  They are computed
with the fine-grained fixed-point iteration of Chow and Patel (SIAM J. Sci. Comput. 37, 2015):
every stored factor entry is updated at once from

* ILU(0): ``u_ij = a_ij − Σ_{k<i} l_ik u_kj`` (i ≤ j) and
  ``l_ij = (a_ij − Σ_{k<j} l_ik u_kj) / u_jj`` (i > j),
* IC(0): ``l_jj = √(a_jj − Σ_{k<j} l_jk²)`` and ``l_ij = (a_ij − Σ_{k<j} l_ik l_jk) / l_jj``,

where the sums over the whole pattern are one sparse product ``L·U`` (``L·Lᵀ``) sampled on the
pattern.  A sweep is a handful of native kernels instead of a sequential loop over rows; the
iteration reaches the exact incomplete factors (the sequential algorithm's) after at most as many
sweeps as the dependency depth, and a good preconditioner after a few (``sweeps``, default 5).
Applying ``M⁻¹`` is two sparse triangular solves with tsgu-ops' kernel.
"""

from __future__ import annotations

from typing import Any

import torch

from tsgu_ops.pattern import SparsePattern, compress_rows, lexsort_rows_cols, quiet
from tsgu_ops.triangular import csr_triangular_solve

from ._operator import fold_block

__all__ = ["IC0", "ILU0", "Jacobi", "Preconditioner", "make_preconditioner"]

_SPARSE = (torch.sparse_coo, torch.sparse_csr)


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
    pattern = SparsePattern(A)
    return pattern, pattern._sorted(pattern.values(A))


class Preconditioner:
    """Base class: ``M⁻¹`` on blocks of any leading shape; subclasses implement :meth:`apply_flat`."""

    def __init__(self, pattern: SparsePattern, transposed: bool = False):
        self.pattern = pattern
        self.transposed = transposed

    def apply_flat(self, R: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, R: torch.Tensor) -> torch.Tensor:
        flat, unfold = fold_block(R, self.pattern.batch, self.pattern.shape)
        return unfold(self.apply_flat(flat), self.pattern.n)

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


def _diagonal_slots(
    pattern: SparsePattern, rows: torch.Tensor, cols: torch.Tensor, what: str
) -> torch.Tensor:
    """Position of each row's diagonal entry among the given row-major entries."""
    on = rows == cols
    if int(on.sum()) != pattern.N:
        raise ValueError(f"{what}: every diagonal entry of A must be stored (the pattern lacks some)")
    return torch.nonzero(on).squeeze(-1)


class ILU0(Preconditioner):
    """Incomplete LU factorisation on ``A``'s own pattern: ``M = L U`` (``L`` unit lower).

    Parameters
    ----------
    A : Tensor
        Square sparse COO/CSR (or dense) ``(n, n)`` or ``(b, n, n)``, every diagonal entry stored.
    sweeps : int
        Fixed-point sweeps of the factorisation (see the module docstring).

    Examples
    --------
    >>> import torch
    >>> from tsgu_krylov import ILU0
    >>> A = torch.tensor([[4.0, 1.0], [2.0, 3.0]], dtype=torch.float64).to_sparse_csr()
    >>> ILU0(A)(torch.tensor([[5.0], [5.0]], dtype=torch.float64))  # no fill-in here: exact
    tensor([[1.],
            [1.]], dtype=torch.float64)
    """

    def __init__(self, A: torch.Tensor, sweeps: int = 5):
        pattern, a = _pattern_of(A)
        super().__init__(pattern)
        N = pattern.N
        rows, cols = pattern.sorted_rows, pattern.sorted_cols.to(torch.int64)
        diag_pos = _diagonal_slots(pattern, rows, cols, "ILU(0)")
        d = a[diag_pos]
        if bool((d == 0).any()):
            raise ValueError("ILU(0): A has a zero diagonal entry")
        lower = cols < rows
        keys = rows * N + cols
        lr, lc = rows[lower], cols[lower]
        ur, uc = rows[~lower], cols[~lower]
        u = a[~lower].clone()
        l = a[lower] / d[lc]
        u_diag_slot = torch.nonzero(ur == uc).squeeze(-1)  # u_jj among the upper entries, by row j
        for _ in range(sweeps):
            s = _sampled_spgemm(_csr(lr, lc, l, N), _csr(ur, uc, u, N), keys, N)
            ujj = u[u_diag_slot][lc]
            l_new = (a[lower] - s[lower] + l * ujj) / ujj
            u = a[~lower] - s[~lower]
            l = l_new
            if bool((u[u_diag_slot] == 0).any()):
                raise ValueError("ILU(0) breakdown: a zero pivot appeared; try Jacobi")
        # the unit diagonal is stored: PyTorch's CSR solve is far slower with unitriangular=True
        ar = torch.arange(N, device=lr.device)
        rows_l, cols_l = torch.cat([lr, ar]), torch.cat([lc, ar])
        order = lexsort_rows_cols(rows_l, cols_l, N)
        vals_l = torch.cat([l, torch.ones(N, dtype=l.dtype, device=l.device)])
        self.L = _csr(rows_l[order], cols_l[order], vals_l[order], N)
        self.U = _csr(ur, uc, u, N)
        self.sweeps = sweeps

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
    sweeps : int
        Fixed-point sweeps of the factorisation.

    Raises
    ------
    ValueError
        When a pivot is not positive (``A`` is not positive definite, or IC(0) does not exist for it).

    Examples
    --------
    >>> import torch
    >>> from tsgu_krylov import IC0
    >>> A = torch.tensor([[4.0, 2.0], [2.0, 5.0]], dtype=torch.float64).to_sparse()
    >>> IC0(A)(torch.tensor([[6.0], [7.0]], dtype=torch.float64))
    tensor([[1.],
            [1.]], dtype=torch.float64)
    """

    def __init__(self, A: torch.Tensor, sweeps: int = 5):
        pattern, a = _pattern_of(A)
        super().__init__(pattern)
        N = pattern.N
        rows, cols = pattern.sorted_rows, pattern.sorted_cols.to(torch.int64)
        keep = cols <= rows
        rows, cols, a = rows[keep], cols[keep], a[keep]
        diag_pos = _diagonal_slots(pattern, rows, cols, "IC(0)")
        d = a[diag_pos]
        if bool((d <= 0).any()):
            raise ValueError("IC(0) breakdown: A has a non-positive diagonal entry (not positive definite)")
        strict = cols < rows
        keys = rows * N + cols
        sr, sc = rows[strict], cols[strict]
        # transposed order of the strict part, for Lᵀ as CSR
        t_order = lexsort_rows_cols(sc, sr, N)
        ldiag = d.sqrt()
        lstrict = a[strict] / ldiag[sc]
        for _ in range(sweeps):
            Ls = _csr(sr, sc, lstrict, N)
            LsT = _csr(sc[t_order], sr[t_order], lstrict[t_order], N)
            s = _sampled_spgemm(Ls, LsT, keys, N)
            pivot = d - s[diag_pos]
            if bool((pivot <= 0).any()):
                raise ValueError(
                    "IC(0) breakdown: a non-positive pivot appeared (A is not positive definite enough "
                    "for an incomplete Cholesky factor); try ILU0 or Jacobi"
                )
            new_diag = pivot.sqrt()
            lstrict = (a[strict] - s[strict]) / ldiag[sc]
            ldiag = new_diag
        values = torch.empty_like(a)
        values[strict] = lstrict
        values[diag_pos] = ldiag
        self.L = _csr(rows, cols, values, N)
        self.sweeps = sweeps

    def apply_flat(self, R: torch.Tensor) -> torch.Tensor:
        Y = csr_triangular_solve(self.L, R, upper=False)
        return csr_triangular_solve(self.L, Y, upper=False, transpose=True)


_KINDS = {"jacobi": Jacobi, "ic0": IC0, "ilu0": ILU0}


def make_preconditioner(A: torch.Tensor, kind: Any) -> Any:
    """``None`` or a preconditioner for ``A`` by name: ``"jacobi"``, ``"ic0"`` or ``"ilu0"``.

    A preconditioner object or callable passes through unchanged.

    Examples
    --------
    >>> import torch
    >>> from tsgu_krylov import make_preconditioner
    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64).to_sparse_csr()
    >>> type(make_preconditioner(A, "IC(0)")).__name__
    'IC0'
    """
    if kind is None or isinstance(kind, Preconditioner):
        return kind
    if isinstance(kind, str):
        key = kind.lower().replace("(", "").replace(")", "").replace("-", "").replace("_", "")
        if key not in _KINDS:
            raise ValueError(f"preconditioner must be one of {sorted(_KINDS)} or a callable, got {kind!r}")
        return _KINDS[key](A)
    if isinstance(kind, torch.Tensor) or callable(kind):
        return kind
    raise TypeError(f"preconditioner must be a name, a tensor or a callable, got {type(kind).__name__}")
