"""Algebraic multigrid: a smoothed-aggregation V-cycle as a symmetric preconditioner.

The hierarchy (aggregates, smoothed prolongators ``P``, Galerkin operators ``Aₗ₊₁ = Pᵀ Aₗ P``) is
built on the CPU once per pattern and values: a later :class:`AMG` of a matrix with the same
pattern and values reuses it outright (of the very same tensors, unmodified since — their
version counters unchanged — without reading an index or a value: the last two are remembered,
until ``_levels.clear_cache``), and one with the same pattern and new values (a training
loop) reuses the aggregates and redoes only the numeric part, as long as the finest level's
strong connections are those the aggregates were made from (at most 5 % of them differ;
otherwise the aggregation is made anew: another operator on the same grid is no training
step; with a strength measure PyAMG's setup computes, which this check cannot see, always).
The strength of connection, the standard aggregation and the fit of several candidate vectors
per aggregate are PyAMG's compiled routines (the optional extra ``tsgu-krylov[amg]``); the rest
of the setup is :func:`_smoothed_aggregation` (SciPy products and a Lanczos estimate of
``ρ(D⁻¹A)`` in PyTorch, which also sets the smoother's interval).  A strength measure other than
``"symmetric"`` or ``"classical"`` goes through PyAMG's whole ``smoothed_aggregation_solver``.
What runs per application is PyTorch on ``A``'s device: every level's operator, restriction
``R = Pᵀ`` and prolongation as CSR matrices with 32-bit indices, a Chebyshev smoother (a
polynomial in ``D⁻¹ Aₗ``: nothing but products and vector updates; one column runs as vectors
through ``torch.mv``) and, on the coarsest level, a dense Cholesky solve of at most
``max_coarse`` unknowns.

The V-cycle is symmetric positive definite for a symmetric positive-definite ``A``: the same
Chebyshev polynomial smooths before and after the coarse correction (its error propagator is
``A``-self-adjoint), and the restriction is the transpose of the prolongation.  So CG and MINRES may
use it, and the backward pass of a solve (``Aᵀ = A``) reuses the forward's hierarchy.  A
non-symmetric ``A`` is refused (use ILU(0) there).

Compared with PyAMG's own ``solve``: the same smoothed-aggregation hierarchy (PyAMG's
aggregates; its candidate improvement by Gauss–Seidel sweeps is left out: the constant vector,
or the candidates given, as they are), but the cycle runs as native
sparse products (PyAMG's default symmetric Gauss–Seidel smoother is a sequential sweep, and its
cycle is driven from Python per level and per smoothing step in NumPy/SciPy calls).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import torch

from tsgu_ops.internal import autocast_fp32, quiet

from ._levels import cached, remember, remembered
from ._precond_base import Preconditioner, _canonical, _pattern_of

__all__ = ["AMG"]


def _candidates(B: Any, A: Any) -> Any:
    """The near-null-space candidates ``B`` as a C-contiguous float64 NumPy ``(N, k)`` array (a
    batch's ``(b, n, k)`` flattened, as the hierarchy is), or ``None``; checked."""
    if B is None:
        return None
    if not isinstance(B, torch.Tensor):
        raise TypeError(f"near_null_space must be a torch.Tensor or None, got {type(B).__name__}")
    if B.layout != torch.strided or B.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"near_null_space must be a dense float32/float64 tensor, got {B.dtype} with layout {B.layout}"
        )
    batched = isinstance(A, torch.Tensor) and A.dim() == 3
    if B.dim() != (3 if batched else 2) or B.shape[-1] < 1:
        want = "(b, n, k)" if batched else "(n, k)"
        raise ValueError(f"near_null_space must be {want} with k >= 1, got shape {tuple(B.shape)}")
    flat = B.detach().reshape(-1, B.shape[-1]).to("cpu", torch.float64)
    if not bool(torch.isfinite(flat).all()):
        raise ValueError("near_null_space has non-finite (inf or NaN) values")
    return flat.numpy().copy(order="C")


def _pyamg() -> Any:
    try:
        import pyamg
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "preconditioner 'amg' needs PyAMG for its setup: pip install 'tsgu-krylov[amg]' (or pyamg)"
        ) from err
    return pyamg


def _padded_rows(M: Any) -> tuple[Any, Any, Any] | None:
    """``M``'s CSR arrays with every non-empty row padded to the longest row's length by explicit
    zeros, or ``None`` where its rows are long or even enough already.

    A product with short rows of varying length (a smoothed prolongator's 1 to 6 entries per row)
    runs at a third of the speed of one with rows of equal length on the CPU: the inner loop's
    trip count is mispredicted row by row.  Padded to a common length it costs half as much
    (0.07 ms instead of 0.15 ms for the 64,000-row prolongator of the benchmark's 3-D
    diffusion).  A padding entry repeats the last column of its row with the value 0, so each
    row reads the same entries of ``x`` as before (a non-finite ``x`` reaches the same rows).
    """
    import numpy as np

    lengths = np.diff(M.indptr)
    if lengths.size == 0:
        return None
    width = int(lengths.max())
    filled = lengths > 0
    if width > 8 or int(lengths.min()) == width or int(filled.sum()) * width > 2 * M.nnz:
        return None
    rows = np.repeat(np.arange(lengths.size), lengths)
    slot = np.arange(M.nnz) - M.indptr[rows]
    last = M.indices[np.maximum(M.indptr[1:], 1) - 1]
    cols = np.repeat(last[filled], width).reshape(-1, width)
    vals = np.zeros((int(filled.sum()), width), dtype=M.data.dtype)
    compact = np.cumsum(filled) - 1  # a row's place among the non-empty rows
    cols[compact[rows], slot] = M.indices
    vals[compact[rows], slot] = M.data
    indptr = np.concatenate(([0], np.cumsum(np.where(filled, width, 0))))
    return indptr, cols.reshape(-1), vals.reshape(-1)


def _to_torch_csr(M: Any, dtype: torch.dtype, device: torch.device, pad: bool = False) -> torch.Tensor:
    """A SciPy sparse matrix as a CSR tensor with 32-bit indices (sorted, duplicates summed);
    ``pad``: short rows of varying length padded to one length (:func:`_padded_rows`)."""
    M = M.tocsr()
    M.sum_duplicates()
    M.sort_indices()
    arrays = _padded_rows(M) if pad else None
    indptr, indices, data = arrays if arrays is not None else (M.indptr, M.indices, M.data)
    crow = torch.from_numpy(indptr.astype("int32"))
    col = torch.from_numpy(indices.astype("int32"))
    val = torch.from_numpy(data).to(dtype)
    return quiet(
        lambda: torch.sparse_csr_tensor(
            crow.to(device), col.to(device), val.to(device), M.shape, check_invariants=False
        )
    )


def _spectral_radius(A: torch.Tensor, inv_diag: torch.Tensor, steps: int = 12) -> float:
    """The largest eigenvalue of ``D⁻¹A`` (SPD ``A``), from ``steps`` Lanczos steps on the
    similar ``D^-½ A D^-½``: the largest Ritz value, never above ρ and within 2 % of it on the
    benchmark's 3-D problems (within 1 % on the tested small ones); the Chebyshev interval's
    upper end ``1.1 ρ`` covers the difference, as it covers PyAMG's estimate (1 % tolerance).

    Runs on ``A``'s device in native products (PyAMG's estimate is a Python Arnoldi loop with
    restarts, several times slower here).
    """
    n = A.shape[0]
    s = inv_diag.sqrt()
    gen = torch.Generator(device="cpu").manual_seed(0)
    v = torch.rand(n, dtype=A.dtype, generator=gen).to(A.device) + 0.5  # a fixed random start
    v = v / torch.linalg.vector_norm(v)
    v_prev = torch.zeros_like(v)
    alphas: list[float] = []
    betas: list[float] = []
    beta = 0.0
    for _ in range(min(steps, n)):
        w = s * torch.mv(A, s * v)
        alpha = float(torch.dot(w, v))
        w = w - alpha * v - beta * v_prev
        alphas.append(alpha)
        beta = float(torch.linalg.vector_norm(w))
        if not beta > 1e-10 * abs(alpha):  # an invariant subspace: the Ritz values are exact
            break
        betas.append(beta)
        v_prev, v = v, w / beta
    k = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if k > 1:
        off = torch.tensor(betas[: k - 1], dtype=torch.float64)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return float(torch.linalg.eigvalsh(T).max())


class _Level:
    """One level: ``A``, ``D⁻¹``, the Chebyshev interval and the transfers to the next level."""

    def __init__(
        self,
        lev: Any,
        P: Any | None,
        dtype: torch.dtype,
        device: torch.device,
        fuse: bool = False,
        coarse: bool = False,
    ):
        prepared = getattr(lev, "prepared", None)
        if prepared is not None and prepared[0].dtype == dtype and prepared[0].device == device:
            self.A, self.inv_diag, rho = prepared
        else:
            self.A, self.inv_diag = _torch_operator(lev.A, dtype, device, coarse)
            rho = _spectral_radius(self.A, self.inv_diag.view(-1))
        # PyAMG's own Chebyshev interval: [ρ/30, 1.1 ρ] of D⁻¹A
        self.lo, self.hi = rho / 30.0, 1.1 * rho
        self.theta, self.delta = (self.hi + self.lo) / 2, (self.hi - self.lo) / 2
        # D⁻¹/θ, the first (for degree 1 the only) step's scaling, as a column and as a vector
        self.first = self.inv_diag / self.theta
        self.first_flat = self.first.view(-1)
        self.inv_diag_flat = self.inv_diag.view(-1)
        self.P = None if P is None else _to_torch_csr(P, dtype, device, pad=True)
        R = getattr(lev, "R", None)  # PyAMG's levels have none
        if P is not None and R is None:
            R = P.T
        self.R = None if R is None else _to_torch_csr(R, dtype, device)
        # K = R (I − A D⁻¹/θ): the residual left by one damped Jacobi step from zero, restricted,
        # in one product (the downward half of a degree-1 cycle: one product instead of two and a
        # subtraction).  Formed for a degree-1 smoother (``fuse``) where the setup kept A P (then
        # R A = (A P)ᵀ, A symmetric); a cycle without it restricts in two products.
        self.K: torch.Tensor | None = None
        AP = getattr(lev, "AP", None)
        if fuse and AP is not None and R is not None:
            RA = AP.T.tocsr()
            RA.data *= self.first_flat.double().cpu().numpy()[RA.indices]
            self.K = _to_torch_csr(R.tocsr() - RA, dtype, device)


def _torch_operator(
    A: Any, dtype: torch.dtype, device: torch.device, coarse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """A level's SciPy operator as a CSR tensor and its ``D⁻¹`` as an ``(n, 1)`` column.

    On a ``coarse`` level a row without a non-zero entry is an unknown no candidate reached (an
    empty column of PyAMG's tentative prolongator): it is left alone (``D⁻¹ = 0`` there)."""
    import numpy as np

    d = np.asarray(A.diagonal(), dtype=np.float64)
    if coarse and not bool((d > 0).all()):  # (rows are looked at only where a diagonal is not)
        dead = np.asarray(abs(A).sum(axis=1)).ravel() == 0
        if bool(dead.any()) and bool((d[~dead] > 0).all()):
            inv = torch.from_numpy(np.where(dead, 0.0, 1.0 / np.where(dead, 1.0, d)))
            return _to_torch_csr(A, dtype, device), inv.to(dtype).to(device).unsqueeze(-1)
    if not bool((d > 0).all()):
        raise ValueError(
            "AMG: A needs a positive diagonal (a symmetric positive-definite A); "
            "use 'jacobi' or 'ilu0' otherwise"
        )
    inv_diag = torch.from_numpy(1.0 / d).to(dtype).to(device).unsqueeze(-1)
    return _to_torch_csr(A, dtype, device), inv_diag


class _SALevel:
    """One level of a smoothed-aggregation hierarchy as built by :func:`_smoothed_aggregation`
    (the attributes PyAMG's levels have: ``A``, ``P``, ``AggOp``), and its prepared operator."""

    def __init__(self, A: Any):
        self.A = A
        self.P: Any = None
        self.R: Any = None  # Pᵀ, formed for the Galerkin product and kept for the restriction
        self.AP: Any = None  # A P, from the Galerkin product (for the fused restriction of _Level)
        self.AggOp: Any = None
        self.prepared: tuple[torch.Tensor, torch.Tensor, float] | None = None


#: Strength measures built here (others go through PyAMG's own solver setup).
_NATIVE_STRENGTH = ("symmetric", "classical")


def _strength_spec(strength: Any) -> tuple[str, dict[str, Any]] | None:
    """``(name, options)`` of a strength measure this module builds itself, else ``None``."""
    if isinstance(strength, str) and strength in _NATIVE_STRENGTH:
        return strength, {}
    if (
        isinstance(strength, tuple)
        and len(strength) == 2
        and strength[0] in _NATIVE_STRENGTH
        and isinstance(strength[1], dict)
    ):
        return strength[0], dict(strength[1])
    return None


def _amalgamated(A: Any, block: int) -> Any:
    """The node matrix of ``A`` with ``block`` unknowns per node: entry ``(I, J)`` is the
    Frobenius norm of ``A``'s ``block × block`` block ``(I, J)`` (how PyAMG measures the strength
    of a block matrix), so aggregates made on it keep a node's unknowns together."""
    import numpy as np
    import scipy.sparse as sp

    Ab = A.tobsr(blocksize=(block, block))
    norms = np.sqrt((Ab.data**2).reshape(Ab.data.shape[0], -1).sum(axis=1))
    return sp.csr_matrix((norms, Ab.indices, Ab.indptr), shape=(A.shape[0] // block,) * 2)


def _measure(name: str, pyamg: Any) -> Any:
    return (
        pyamg.strength.symmetric_strength_of_connection
        if name == "symmetric"
        else pyamg.strength.classical_strength_of_connection
    )


def _strong_keys(C: Any) -> Any:
    """The strong off-diagonal connections of a strength matrix ``C`` (of the finest level) as
    sorted keys ``row · n + col``: what the aggregates of the finest level were made from."""
    import numpy as np

    rows = np.repeat(np.arange(C.shape[0], dtype=np.int64), np.diff(C.indptr))
    keep = (rows != C.indices) & (C.data != 0)
    keys = rows[keep] * C.shape[0] + C.indices[keep]
    if C.has_sorted_indices:  # row by row, columns ascending: sorted already
        return keys
    return np.sort(keys)


def _similar(strong: Any, before: Any, tolerance: float = 0.05) -> bool:
    """Whether two sets of strong connections differ in at most ``tolerance`` of the larger one
    (``None`` for either: not known, not similar)."""
    import numpy as np

    if strong is None or before is None:
        return False
    if strong.size == before.size and np.array_equal(strong, before):  # (a training step)
        return True
    differ = np.setxor1d(strong, before, assume_unique=True).size
    return differ <= tolerance * max(strong.size, before.size, 1)


def _smoothed_aggregation(
    S: Any,
    spec: tuple[str, dict[str, Any]],
    max_coarse: int,
    max_levels: int,
    aggregates: list[Any] | None,
    pyamg: Any,
    dtype: torch.dtype,
    candidates: Any = None,
    strength0: Any = None,
) -> list[_SALevel]:
    """A smoothed-aggregation hierarchy (Vaněk, Mandel and Brezina) for the candidate vector ``1``
    or the ``k`` columns of ``candidates`` (an ``(n, k)`` array).

    Per level: PyAMG's strength of connection and standard aggregation (compiled routines; or
    the ``aggregates`` of an earlier setup on the same pattern), the tentative prolongator ``T``
    (the candidates restricted to each aggregate, orthonormalised), ``P = T − (4/3)/ρ · D⁻¹A T``
    with ``ρ = ρ(D⁻¹A)`` from :func:`_spectral_radius` on the level's operator (the same estimate
    sets the Chebyshev interval), and ``A_c = Pᵀ A P``.  What PyAMG's ``smoothed_aggregation_solver``
    does with these options, without its Python eigenvalue loop and block-sparse products.

    With ``k`` candidates every aggregate of a coarse level carries ``k`` unknowns, which stay
    together: a coarse level's strength is measured between its ``k × k`` blocks (their Frobenius
    norms, as PyAMG measures a block matrix) and its aggregates are made of whole blocks; the
    candidates are fitted per aggregate by PyAMG's ``fit_candidates`` (a small QR each), whose
    triangular factors are the next level's candidates.
    """
    import numpy as np
    import scipy.sparse as sp

    name, options = spec
    measure = _measure(name, pyamg)
    cpu = torch.device("cpu")
    levels = [_SALevel(S)]
    B = np.ones(S.shape[0]) if candidates is None else candidates
    k = 1 if candidates is None else candidates.shape[1]
    block = 1  # unknowns per node of the current level: 1 on the finest, k below it
    while len(levels) < max_levels:
        lev = levels[-1]
        A = lev.A
        n = A.shape[0]
        if n <= max_coarse:
            break
        if aggregates is not None and len(levels) > len(aggregates):
            break
        if aggregates is not None and aggregates[len(levels) - 1].shape[0] * block == n:
            agg = aggregates[len(levels) - 1].tocsr()
        else:  # (the earlier setup's aggregates of this level were of other nodes: made anew)
            aggregates = None
            G = A if block == 1 else _amalgamated(A, block)
            C = strength0 if len(levels) == 1 and strength0 is not None else measure(G, **options).tocsr()
            agg = pyamg.aggregation.standard_aggregation(C)[0].tocsr()
            if agg.nnz == 0 and options.get("theta", 0.0) > 0:
                # no connection of this level is strong at theta (a coarse operator of Poisson
                # 20³: every off-diagonal entry below a tenth of its diagonal): every one is
                # strong instead (theta = 0, PyAMG's default) rather than coarsening stalling
                relaxed = {**options, "theta": 0.0}
                agg = pyamg.aggregation.standard_aggregation(measure(G, **relaxed).tocsr())[0].tocsr()
        # an aggregate without members (PyAMG returns one column and no entry where no node
        # was aggregated) would be a zero row and column of the coarse operator: dropped
        size = np.bincount(agg.indices, minlength=agg.shape[1])
        if bool((size == 0).any()):
            agg = agg[:, np.flatnonzero(size)].tocsr()
        nc = agg.shape[1] * k
        if nc == 0 or nc >= n:
            break
        if candidates is None:
            # tentative prolongator: B on each aggregate, scaled to unit norm (a node in no
            # aggregate, which has no strong connection, has an empty row); the coarse
            # candidate is the norms
            member = agg.indices
            b = B[np.repeat(np.arange(n), np.diff(agg.indptr))]
            norms = np.sqrt(np.bincount(member, weights=b**2, minlength=nc))
            T = sp.csr_matrix((b / norms[member], member, agg.indptr), shape=(n, nc))
        else:  # the k candidates orthonormalised per aggregate; their R factors go down
            Q, norms = pyamg.aggregation.fit_candidates(agg, np.ascontiguousarray(B))
            T = sp.csr_matrix(Q.tocsr())
            T.eliminate_zeros()
            block = k
            # an aggregate too small for k independent candidates (or a zero candidate) has an
            # empty column, which would be a zero row and column of the coarse operator: dropped,
            # and the coarse levels below no longer come in blocks of k
            live = np.bincount(T.indices, minlength=T.shape[1]) > 0
            if not bool(live.all()):
                T = T[:, np.flatnonzero(live)].tocsr()
                norms = norms[live]
                block = 1
        A_t, inv_diag = _torch_operator(A, dtype, cpu)
        rho = _spectral_radius(A_t, inv_diag.view(-1))
        lev.prepared = (A_t, inv_diag, rho)
        AT = (A @ T).tocsr()
        AT.data *= np.repeat((4.0 / 3.0 / rho) / A.diagonal(), np.diff(AT.indptr))  # ω/ρ D⁻¹ A T
        P = (T - AT).tocsr()
        R = P.T.tocsr()
        AP = (A @ P).tocsr()
        lev.P, lev.R, lev.AggOp, lev.AP = P, R, agg, AP
        Ac = (R @ AP).tocsr()
        Ac.sum_duplicates()
        levels.append(_SALevel(Ac))
        B = norms
    return levels


class _Hierarchy:
    """The prepared V-cycle of a smoothed-aggregation hierarchy (ours or PyAMG's levels)."""

    def __init__(
        self, levels: list[Any], dtype: torch.dtype, device: torch.device, max_coarse: int, fuse: bool = False
    ):
        self.aggregates = [lev.AggOp for lev in levels[:-1]]
        coarse = levels[-1].A
        n_top = levels[0].A.shape[0]
        direct = len(levels) > 1 and coarse.shape[0] <= max_coarse and coarse.shape[0] < n_top
        keep = levels if not direct else levels[:-1]
        self.levels = [
            _Level(lev, lev.P if i < len(levels) - 1 else None, dtype, device, fuse, coarse=i > 0)
            for i, lev in enumerate(keep)
        ]
        self.coarse: torch.Tensor | None = None
        self.coarse_inv: torch.Tensor | None = None
        if direct:  # a small dense Cholesky factor (the coarsest level only, never A's size)
            dense = coarse.toarray()
            # an unknown no candidate reached (a zero row and column, see _torch_operator):
            # decoupled, its correction zero
            dead = ~dense.any(axis=1)
            dense[dead, dead] = 1.0
            C = torch.from_numpy(dense).to(dtype).to(device)
            L, info = torch.linalg.cholesky_ex(C)
            if int(info) != 0:
                raise ValueError(
                    "AMG: the coarsest operator is not positive definite (A is not symmetric "
                    "positive definite); use 'jacobi' or 'ilu0'"
                )
            self.coarse = L
            # its inverse, symmetrised: one dense product per cycle (a few microseconds at the
            # default max_coarse) instead of two triangular solves (46 µs for 161 unknowns)
            inv = torch.cholesky_inverse(L)
            self.coarse_inv = (inv + inv.T) / 2


def _mul(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``M x`` for a sparse ``M`` and a vector or a block (a vector through ``torch.mv``: on the
    CPU about twice as fast as the one-column product)."""
    return torch.mv(M, x) if x.dim() == 1 else M @ x


def _chebyshev(lev: _Level, b: torch.Tensor, x: torch.Tensor | None, degree: int) -> torch.Tensor:
    """``degree`` steps of Chebyshev iteration for ``A x = b`` preconditioned by ``D``.

    The result is ``x₀ + q(D⁻¹A) D⁻¹ (b − A x₀)`` with one fixed polynomial ``q``: the same
    smoother before and after the coarse correction keeps the V-cycle symmetric.
    """
    block = b.dim() == 2
    first = lev.first if block else lev.first_flat
    r = b if x is None else b - _mul(lev.A, x)
    if degree == 1:  # one damped Jacobi step: x₀ + D⁻¹ r / θ
        return r * first if x is None else x.addcmul_(first, r)
    theta, delta = lev.theta, lev.delta
    sigma = theta / delta
    rho = 1.0 / sigma
    inv_diag = lev.inv_diag if block else lev.inv_diag_flat
    d = r * first
    x = d.clone() if x is None else x + d
    for _ in range(degree - 1):
        r = r - _mul(lev.A, d)
        rho_new = 1.0 / (2.0 * sigma - rho)
        d = d.mul_(rho_new * rho).addcmul_(inv_diag, r, value=2.0 * rho_new / delta)
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
        CPU with PyAMG's aggregation, the cycle on ``A``'s device).
    degree : int or None
        Degree of the Chebyshev smoother, before and after the coarse correction.  ``None`` (the
        default) picks by the sign of ``A``'s off-diagonal entries: ``1`` (one damped Jacobi step
        each side) where none is positive (a Stieltjes matrix: finite-difference and
        finite-volume diffusion, graph Laplacians, P1 Laplacians on non-obtuse meshes), ``3``
        (as PyAMG) otherwise.  Positive couplings (elasticity, higher-order or obtuse finite
        elements) are where one Jacobi step smooths poorly: on the real-matrix corpus degree 1
        needs more than twice the iterations of degree 3 on the elasticity matrices, while on its
        M-matrices it needs at most 1.5× the iterations (a third of the iterations of plain CG or
        fewer) at a third of the smoothing cost; on the benchmark's high-contrast 3-D diffusion,
        19 iterations instead of 16 and 0.6× the solve time.
    max_coarse : int
        Largest coarsest level, applied as its dense inverse (from a Cholesky factor; default 500).
    max_levels : int
        Most levels of the hierarchy (default 10).
    strength : str or tuple
        PyAMG's strength-of-connection measure (default ``("symmetric", {"theta": 0.1})``: entries
        below a tenth of ``√(a_ii a_jj)`` are weak, so aggregates follow the strong couplings of a
        high-contrast coefficient; ``"symmetric"`` alone, PyAMG's default, is ``theta = 0``).  A
        level on which no connection is strong at ``theta`` is aggregated with ``theta = 0``.
    near_null_space : Tensor or None
        Candidate vectors ``B`` of the near-null space, dense ``(n, k)`` (``(b, n, k)`` for a
        batch): the modes the smoother cannot reduce, which the coarse levels must represent.
        ``None`` (the default) is the constant vector, right for scalar diffusion; for elasticity
        pass the rigid-body modes (PyAMG's ``gallery.linear_elasticity`` returns them): on its
        2-D problem (100 × 100, rtol 1e-8) CG then takes 11 iterations instead of 72 (Jacobi:
        398).  The ``k`` candidates are orthonormalised per aggregate (PyAMG's ``fit_candidates``),
        so every coarse aggregate carries ``k`` unknowns, kept together on the coarser levels
        (their strength measured between ``k × k`` blocks); on the 350 × 350 problem (245,000
        unknowns) this setup took 0.65 s instead of 0.95 s through PyAMG's whole solver setup,
        and CG 14 iterations instead of 21.  A candidate an aggregate cannot represent (a zero
        column, or more candidates than the aggregate has unknowns) is dropped there.

    Attributes
    ----------
    levels : int
        Number of levels, the coarsest (dense) one included.

    Raises
    ------
    ImportError
        PyAMG is not installed (``pip install 'tsgu-krylov[amg]'``).
    TypeError
        ``near_null_space`` is not a dense float32/float64 tensor.
    ValueError
        ``A`` is not symmetric, has a non-positive diagonal entry, or its coarsest operator is not
        positive definite; ``near_null_space`` has the wrong shape or a non-finite value; bad
        options.

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
        degree: int | None = None,
        max_coarse: int = 500,
        max_levels: int = 10,
        strength: Any = ("symmetric", {"theta": 0.1}),
        near_null_space: torch.Tensor | None = None,
    ):
        checks = [("degree", degree, 1)] if degree is not None else []
        for name, value, least in (
            *checks,
            ("max_coarse", max_coarse, 1),
            ("max_levels", max_levels, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
        # the very tensors of an earlier AMG, unmodified since (a backward pass, a repeated solve
        # in a training loop): its checks passed and its hierarchy holds, nothing is read again
        candidates = _candidates(near_null_space, A)
        digest = None if candidates is None else hashlib.sha1(candidates.tobytes()).hexdigest()
        setting = (max_coarse, max_levels, repr(strength), digest)
        seen = remembered("amg", A, setting) if isinstance(A, torch.Tensor) else None
        if seen is not None:
            super().__init__(seen[0])
            self._h = seen[1]
            self.degree: int = seen[2] if degree is None else degree
            return
        pattern, values = _pattern_of(A)
        super().__init__(pattern)
        rows, cols, a = _canonical(pattern, values)
        options = (*setting, a.dtype, str(a.device))
        record: dict[str, Any] = cached("amg", rows, cols, dict)
        hit = record.get("hierarchy")
        # the same matrix again (equal values: a copy of it, or its transpose); equal values are
        # finite, since NaN equals nothing
        if hit is not None and record["options"] == options and torch.equal(record["values"], a):
            self._h = hit
            self.degree = record["degree"] if degree is None else degree
            remember("amg", A, setting, (pattern, hit, record["degree"]))
            return
        if not bool(torch.isfinite(a).all()):
            raise ValueError("AMG: A has non-finite (inf or NaN) values")
        # the default degree (see the parameter): 1 for an M-matrix, 3 where a coupling is positive
        auto = 3 if bool(((a > 0) & (rows != cols)).any()) else 1
        self.degree = auto if degree is None else degree
        pyamg = _pyamg()
        kwargs: dict[str, Any]
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
        # same pattern, new values: the aggregates (the symbolic part) are kept
        aggs = record["aggregates"] if record.get("options") == options and "aggregates" in record else None
        spec = _strength_spec(strength)
        # the aggregates of other values are kept only where the finest level's strong
        # connections are (nearly) those they were made for: Poisson's aggregates on a
        # high-contrast diffusion of the same grid took 99 CG iterations instead of 19
        strength0 = _measure(spec[0], pyamg)(S, **spec[1]).tocsr() if spec is not None else None
        strong = _strong_keys(strength0) if strength0 is not None else None
        if aggs is not None and not _similar(strong, record.get("strong")):
            aggs = None
        if candidates is not None and candidates.shape[0] != N:
            raise ValueError(
                f"near_null_space must have {N} rows (one per unknown of A), got {candidates.shape[0]}"
            )
        if spec is not None:
            levels = _smoothed_aggregation(
                S, spec, limit, max_levels, aggs, pyamg, a.dtype, candidates, strength0
            )
        elif candidates is not None:  # another strength measure: PyAMG's own setup fits them
            # without PyAMG's improvement of the candidates by Gauss–Seidel sweeps, as in our own
            # setup: on the 2-D elasticity benchmark (245,000 unknowns) the setup took 0.8–0.9 s
            # instead of 1.06–1.18 s, and the solve 21 iterations in 0.29 s instead of 22 in 0.42 s
            kwargs = {
                "max_coarse": limit,
                "max_levels": max_levels,
                "strength": strength,
                "improve_candidates": None,
            }
            if aggs is not None:
                kwargs["aggregate"] = [("predefined", {"AggOp": g.tocsr()}) for g in aggs]
                kwargs["max_levels"] = len(aggs) + 1
            levels = pyamg.smoothed_aggregation_solver(S, B=candidates, keep=True, **kwargs).levels
        else:  # another strength measure: PyAMG's own setup
            kwargs = {"max_coarse": limit, "max_levels": max_levels, "strength": strength}
            if aggs is not None:
                kwargs["aggregate"] = [("predefined", {"AggOp": g.tocsr()}) for g in aggs]
                kwargs["max_levels"] = len(aggs) + 1
            levels = pyamg.smoothed_aggregation_solver(S, B=np.ones((N, 1)), keep=True, **kwargs).levels
        # the fused restriction where a degree-1 cycle may run on it (this call's degree or the
        # default a later call on the same matrix gets)
        self._h = _Hierarchy(levels, a.dtype, a.device, limit, fuse=1 in (self.degree, auto))
        record.update(
            # the strong connections the aggregates were made from (not those of a later step
            # that reused them: a slow drift over many steps is seen)
            strong=strong if aggs is None else record.get("strong"),
            hierarchy=self._h,
            values=a.clone(),
            options=options,
            aggregates=self._h.aggregates,
            degree=auto,
        )
        remember("amg", A, setting, (pattern, self._h, auto))

    @property
    def levels(self) -> int:
        return len(self._h.levels) + (1 if self._h.coarse is not None else 0)

    def vector_into(self, r: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The V-cycle on one vector, written into ``out``: for the default degree-1 cycle on a
        fused hierarchy, every product writes into work vectors kept per thread (no allocation
        per cycle; the prolongation and the residual as ``addmv``), else :meth:`apply_flat`."""
        h = self._h
        fast = self.degree == 1 and h.coarse_inv is not None and r.dim() == 1 and out is not r
        if not fast or any(lev.K is None or lev.P is None for lev in h.levels):
            return super().vector_into(r, out)
        local = self.__dict__.setdefault("_work", threading.local())
        work = getattr(local, "vectors", None)
        if work is None or work[2][0].dtype != r.dtype or work[2][0].device != r.device:
            # per level below the top: its right-hand side and its x; per level: a residual
            sizes = [lev.A.shape[0] for lev in h.levels[1:]] + [h.coarse_inv.shape[0]]
            work = local.vectors = (
                [torch.empty(m, dtype=r.dtype, device=r.device) for m in sizes],
                [torch.empty(m, dtype=r.dtype, device=r.device) for m in sizes],
                [torch.empty(lev.A.shape[0], dtype=r.dtype, device=r.device) for lev in h.levels],
            )
        rhs, xs, res = [r, *work[0]], [out, *work[1]], work[2]
        for i, lev in enumerate(h.levels):  # x = D⁻¹b/θ, then R (b − A x) = K b
            torch.mul(lev.first_flat, rhs[i], out=xs[i])
            torch.mv(lev.K, rhs[i], out=rhs[i + 1])  # type: ignore[arg-type]
        torch.mv(h.coarse_inv, rhs[-1], out=xs[-1])
        for i in reversed(range(len(h.levels))):  # x += P x_c, then x += D⁻¹(b − A x)/θ
            lev = h.levels[i]
            xs[i].addmv_(lev.P, xs[i + 1])  # type: ignore[arg-type]
            torch.addmv(rhs[i], lev.A, xs[i], alpha=-1.0, out=res[i])
            xs[i].addcmul_(lev.first_flat, res[i])
        return out

    def apply_flat(self, R: torch.Tensor) -> torch.Tensor:
        h, degree = self._h, self.degree
        # one column runs as vectors (torch.mv), a block as products with the block
        b = R.reshape(-1) if R.shape[-1] == 1 else R.contiguous()
        down: list[tuple[_Level, torch.Tensor, torch.Tensor]] = []
        for lev in h.levels:
            x = _chebyshev(lev, b, None, degree)
            if lev.P is None or lev.R is None:  # a last level without a direct solve: smoothed only
                break
            down.append((lev, b, x))
            if degree == 1 and lev.K is not None:  # x = D⁻¹b/θ: R (b − A x) = K b
                b = _mul(lev.K, b)
            else:
                b = _mul(lev.R, b - _mul(lev.A, x))
        else:
            assert h.coarse_inv is not None
            x = _mul(h.coarse_inv, b)
        for lev, b_l, x_l in reversed(down):
            x = _chebyshev(lev, b_l, x_l + _mul(lev.P, x), degree)  # type: ignore[arg-type]
        return x.view(R.shape)
