"""Algebraic multigrid: a smoothed-aggregation V-cycle as a symmetric preconditioner.

The hierarchy (aggregates, smoothed prolongators ``P``, Galerkin operators ``Aₗ₊₁ = Pᵀ Aₗ P``) is
built by PyAMG (the optional extra ``tsgu-krylov[amg]``) on the CPU, once per pattern and values:
a later :class:`AMG` of a matrix with the same pattern and values reuses it outright, and one with
the same pattern and new values (a training loop) reuses the aggregates and redoes only the
numeric part.  What runs per application is PyTorch on ``A``'s device: every level's operator,
restriction ``R = Pᵀ`` and prolongation as CSR matrices with 32-bit indices, a Chebyshev smoother
(a polynomial in ``D⁻¹ Aₗ``: nothing but products and vector updates) and, on the coarsest level,
a dense Cholesky solve of at most ``max_coarse`` unknowns.

The V-cycle is symmetric positive definite for a symmetric positive-definite ``A``: the same
Chebyshev polynomial smooths before and after the coarse correction (its error propagator is
``A``-self-adjoint), and the restriction is the transpose of the prolongation.  So CG and MINRES may
use it, and the backward pass of a solve (``Aᵀ = A``) reuses the forward's hierarchy.  A
non-symmetric ``A`` is refused (use ILU(0) there).

Compared with PyAMG's own ``solve``: the same smoothed-aggregation setup, but the cycle runs as
native sparse products (PyAMG's default symmetric Gauss–Seidel smoother is a sequential sweep,
and its cycle is driven from Python per level and per smoothing step in NumPy/SciPy calls).
"""

from __future__ import annotations

from typing import Any

import torch

from tsgu_ops.internal import autocast_fp32, quiet

from ._levels import cached
from ._precond_base import Preconditioner, _canonical, _pattern_of

__all__ = ["AMG"]


def _pyamg() -> Any:
    try:
        import pyamg
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "preconditioner 'amg' needs PyAMG for its setup: pip install 'tsgu-krylov[amg]' (or pyamg)"
        ) from err
    return pyamg


def _to_torch_csr(M: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A SciPy sparse matrix as a CSR tensor with 32-bit indices (sorted, duplicates summed)."""
    M = M.tocsr()
    M.sum_duplicates()
    M.sort_indices()
    crow = torch.from_numpy(M.indptr.astype("int32"))
    col = torch.from_numpy(M.indices.astype("int32"))
    val = torch.from_numpy(M.data).to(dtype)
    return quiet(
        lambda: torch.sparse_csr_tensor(
            crow.to(device), col.to(device), val.to(device), M.shape, check_invariants=False
        )
    )


class _Level:
    """One level: ``A``, ``D⁻¹``, the Chebyshev interval and the transfers to the next level."""

    def __init__(self, A: Any, P: Any | None, dtype: torch.dtype, device: torch.device, pyamg: Any):
        import numpy as np
        import scipy.sparse as sp

        self.A = _to_torch_csr(A, dtype, device)
        d = np.asarray(A.diagonal(), dtype=np.float64)
        if not bool((d > 0).all()):
            raise ValueError(
                "AMG: A needs a positive diagonal (a symmetric positive-definite A); "
                "use 'jacobi' or 'ilu0' otherwise"
            )
        s = sp.diags(1.0 / np.sqrt(d))
        rho = float(pyamg.util.linalg.approximate_spectral_radius(s @ A @ s, symmetric=True))
        # PyAMG's own Chebyshev interval: [ρ/30, 1.1 ρ] of D⁻¹A
        self.lo, self.hi = rho / 30.0, 1.1 * rho
        self.inv_diag = torch.from_numpy(1.0 / d).to(dtype).to(device).unsqueeze(-1)
        self.P = None if P is None else _to_torch_csr(P, dtype, device)
        self.R = None if P is None else _to_torch_csr(P.T, dtype, device)


class _Hierarchy:
    """The prepared V-cycle of a PyAMG hierarchy."""

    def __init__(self, ml: Any, dtype: torch.dtype, device: torch.device, pyamg: Any, max_coarse: int):
        levels = ml.levels
        self.aggregates = [lev.AggOp for lev in levels[:-1]]
        coarse = levels[-1].A
        n_top = levels[0].A.shape[0]
        direct = len(levels) > 1 and coarse.shape[0] <= max_coarse and coarse.shape[0] < n_top
        keep = levels if not direct else levels[:-1]
        self.levels = [
            _Level(lev.A, lev.P if i < len(levels) - 1 else None, dtype, device, pyamg)
            for i, lev in enumerate(keep)
        ]
        self.coarse: torch.Tensor | None = None
        if direct:  # a small dense Cholesky factor (the coarsest level only, never A's size)
            C = torch.from_numpy(coarse.toarray()).to(dtype).to(device)
            L, info = torch.linalg.cholesky_ex(C)
            if int(info) != 0:
                raise ValueError(
                    "AMG: the coarsest operator is not positive definite (A is not symmetric "
                    "positive definite); use 'jacobi' or 'ilu0'"
                )
            self.coarse = L


def _chebyshev(lev: _Level, b: torch.Tensor, x: torch.Tensor | None, degree: int) -> torch.Tensor:
    """``degree`` steps of Chebyshev iteration for ``A x = b`` preconditioned by ``D``.

    The result is ``x₀ + q(D⁻¹A) D⁻¹ (b − A x₀)`` with one fixed polynomial ``q``: the same
    smoother before and after the coarse correction keeps the V-cycle symmetric.
    """
    theta, delta = (lev.hi + lev.lo) / 2, (lev.hi - lev.lo) / 2
    sigma = theta / delta
    rho = 1.0 / sigma
    r = b if x is None else b - lev.A @ x
    d = (lev.inv_diag * r).div_(theta)
    x = d.clone() if x is None else x + d
    for _ in range(degree - 1):
        r = r - lev.A @ d
        rho_new = 1.0 / (2.0 * sigma - rho)
        d = d.mul_(rho_new * rho).addcmul_(lev.inv_diag, r, value=2.0 * rho_new / delta)
        rho = rho_new
        x = x.add_(d)
    return x


class AMG(Preconditioner):
    """Smoothed-aggregation algebraic multigrid: one symmetric V-cycle per application.

    Parameters
    ----------
    A : Tensor
        Symmetric positive-definite sparse COO/CSR (or dense) ``(n, n)`` or ``(b, n, n)`` (a batch
        is one block-diagonal hierarchy); float32 or float64, any device (the setup runs on the
        CPU with PyAMG, the cycle on ``A``'s device).
    degree : int
        Degree of the Chebyshev smoother, before and after the coarse correction (default 3, as PyAMG).
    max_coarse : int
        Largest coarsest level, solved by a dense Cholesky factor (default 500).
    max_levels : int
        Most levels of the hierarchy (default 10).
    strength : str or tuple
        PyAMG's strength-of-connection measure (default ``"symmetric"``).

    Attributes
    ----------
    levels : int
        Number of levels, the coarsest (dense) one included.

    Raises
    ------
    ImportError
        PyAMG is not installed (``pip install 'tsgu-krylov[amg]'``).
    ValueError
        ``A`` is not symmetric, has a non-positive diagonal entry, or its coarsest operator is not
        positive definite; bad options.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops.testing import grid_operator
    >>> from tsgu_krylov import AMG, linear_cg
    >>> A = grid_operator((30, 30)).to_sparse_csr()
    >>> b = torch.ones(900, dtype=torch.float64)
    >>> M = AMG(A)
    >>> x, info = linear_cg(A, b, rtol=1e-10, preconditioner=M, return_info=True)
    >>> _, plain = linear_cg(A, b, rtol=1e-10, return_info=True)
    >>> info.iterations < plain.iterations / 3, bool(info.converged.all())
    (True, True)
    >>> AMG(torch.tensor([[2.0, 1.0], [0.0, 2.0]]).to_sparse())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: AMG needs a symmetric A ...
    """

    symmetric = True

    @autocast_fp32
    def __init__(
        self,
        A: torch.Tensor,
        *,
        degree: int = 3,
        max_coarse: int = 500,
        max_levels: int = 10,
        strength: Any = "symmetric",
    ):
        for name, value, least in (
            ("degree", degree, 1),
            ("max_coarse", max_coarse, 1),
            ("max_levels", max_levels, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
        pattern, values = _pattern_of(A)
        super().__init__(pattern)
        rows, cols, a = _canonical(pattern, values)
        if not bool(torch.isfinite(a).all()):
            raise ValueError("AMG: A has non-finite (inf or NaN) values")
        self.degree = degree
        options = (max_coarse, max_levels, repr(strength), a.dtype, str(a.device))
        record: dict[str, Any] = cached("amg", rows, cols, dict)
        hit = record.get("hierarchy")
        if hit is not None and record["options"] == options and torch.equal(record["values"], a):
            self._h = hit  # the same matrix again (the backward pass, a repeated solve)
            return
        pyamg = _pyamg()
        import numpy as np
        import scipy.sparse as sp

        N = pattern.N
        S = sp.csr_matrix(
            (a.detach().cpu().double().numpy(), (rows.cpu().numpy(), cols.cpu().numpy())), shape=(N, N)
        )
        # at least one coarsening where A is small: the dense coarse solve is never A's own size
        limit = min(max_coarse, max(1, N // 4))
        # symmetric up to rounding (explicit zeros on one side only do not count)
        if S.shape[0] and abs(S - S.T).max() > 1e-10 * abs(S).max():
            raise ValueError(
                "AMG needs a symmetric A (the smoothed-aggregation V-cycle is symmetric); "
                "for a non-symmetric A use 'ilu0' with gmres or bicgstab"
            )
        kwargs: dict[str, Any] = {"max_coarse": limit, "max_levels": max_levels, "strength": strength}
        if record.get("options") == options and "aggregates" in record:
            # same pattern, new values: the aggregates (the symbolic part) are kept
            aggs = record["aggregates"]
            kwargs["aggregate"] = [("predefined", {"AggOp": g.tocsr()}) for g in aggs]
            kwargs["max_levels"] = len(aggs) + 1
        ml = pyamg.smoothed_aggregation_solver(S, B=np.ones((N, 1)), keep=True, **kwargs)
        self._h = _Hierarchy(ml, a.dtype, a.device, pyamg, limit)
        record.update(hierarchy=self._h, values=a.clone(), options=options, aggregates=self._h.aggregates)

    @property
    def levels(self) -> int:
        return len(self._h.levels) + (1 if self._h.coarse is not None else 0)

    def apply_flat(self, R: torch.Tensor) -> torch.Tensor:
        h, degree = self._h, self.degree
        b = R.contiguous()
        down: list[tuple[_Level, torch.Tensor, torch.Tensor]] = []
        for lev in h.levels:
            x = _chebyshev(lev, b, None, degree)
            if lev.P is None or lev.R is None:  # a last level without a direct solve: smoothed only
                break
            down.append((lev, b, x))
            b = lev.R @ (b - lev.A @ x)
        else:
            assert h.coarse is not None
            x = torch.cholesky_solve(b, h.coarse)
        for lev, b_l, x_l in reversed(down):
            x = _chebyshev(lev, b_l, x_l + lev.P @ x, degree)  # type: ignore[operator]
        return x
