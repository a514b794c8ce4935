"""``sparse_solve_c4t``: ``X = A⁻¹ B`` with SciPy (CPU tensors) or CuPy (CUDA tensors), sparse gradient.

The matrix is handed to the backend once per call as one CSR matrix (a batch ``(b, n, n)`` is its
block-diagonal ``(b·n, b·n)`` matrix, built by index arithmetic; the right-hand sides are stacked to
match), and differentiated with tsgu-ops' implicit solve: ``dB = A⁻ᵀ G``, ``dA = −dB Xᵀ`` at the stored
entries.

* ``solve=None`` or ``"spsolve"``: a sparse LU factorisation (SuperLU) computed in the forward pass and
  **reused** by the backward pass (``trans="T"``): the backward costs two triangular solves, no
  second factorisation.  On the CPU a structurally symmetric pattern is ordered by minimum degree on
  ``A + Aᵀ`` in SuperLU's symmetric mode, anything else by COLAMD (see ``_superlu_options`` for the
  measurements); SuperLU's own keywords (``permc_spec=``, ``diag_pivot_thresh=``,
  ``options=``, ...) override the choice.
* ``"cg"``, ``"cgs"``, ``"minres"``, ``"gmres"``: the backend's iterative solver; ``tol`` is passed
  as ``rtol`` or ``tol``, whichever the installed SciPy/CuPy takes.  It is handed ``b / ‖b‖`` (a
  caller's ``atol`` and ``x0`` divided by ``‖b‖`` too) and its answer scaled back, forward and
  backward, so that the accuracy does not depend on the units of ``B`` or of the loss (SciPy's
  MINRES and CGS are not scale-free).  After each solve the true
  residual ``‖b − A x‖`` is measured (in float64) and a :class:`~tsgu_bridges.ConvergenceWarning`
  is given when it is above ``max(rtol ‖b‖, atol)`` plus a few units of the dtype's roundoff
  (SciPy's MINRES in float32 stopped 35x above it on pyamg's ``bar``, 1.6 % off, silently).  The
  transpose solve runs the same solver on ``Aᵀ``.
* A NaN or Inf in ``A`` or ``B`` gives a NaN result with a ``RuntimeWarning``; indices are checked
  (a 1-based COO index made SuperLU abort the process) and only float32/float64 values are taken.
* A callable ``solve(A_backend, B_backend, **kwargs)`` gets the backend matrix and array; the
  project's transpose convention holds for ``transpose_solve``: it receives ``A`` itself (not
  ``Aᵀ``) and returns ``A⁻ᵀ G``; without one, ``solve`` is called with ``Aᵀ``.

Differences from 0.2.7: named and user transpose solvers gave wrong gradients for a non-symmetric
``A`` (they were handed ``A`` and solved with it); an uncoalesced COO ``A`` failed in backward; a CUDA
tensor without CuPy crashed in NumPy.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch.autograd.function import Function

from tsgu_ops.internal import (
    Kernel,
    SolverPair,
    autocast_fp32,
    check_solve_inputs,
    rhs_kernel_backward,
    rhs_kernel_forward,
    solve_sparse_rhs,
)

from ._checks import (
    SOLVE_DTYPES,
    check_dense,
    check_matrix,
    check_residual,
    nonfinite_result,
    relative_residuals,
)
from .cupy_bindings import _backend_to_torch, _get_array_modules, _torch_to_backend

__all__ = ["SparseSolveC4T", "sparse_solve_c4t"]

SOLVERS = ["cg", "cgs", "minres", "gmres", "spsolve"]
_ITERATIVE = ("cg", "cgs", "minres", "gmres")
_DIRECT_DROPS = ("tol", "tolerance", "atol", "rtol", "maxiter", "matvec_max")
_ALWAYS_PASSED = ("x0", "M", "callback", "show", "check")


def _check_solver(name: str, fn: Any, B: torch.Tensor) -> None:
    if fn is None or callable(fn):
        return
    if not isinstance(fn, str) or fn not in SOLVERS:
        raise ValueError(f"Unknown solver: {fn}. Supported solvers: {SOLVERS}")
    if fn in _ITERATIVE and B.dim() >= 2 and B.shape[-1] > 1:
        what = "Solver" if name == "solve" else "Transpose solver"
        raise ValueError(
            f"{what} '{fn}' does not support multi-RHS (B.shape={B.shape}). Use solve='spsolve' or "
            f"solve=None for multi-RHS problems, or reshape B to a vector."
        )


def _tolerances(fn: Any, kwargs: dict[str, Any]) -> tuple[float, float]:
    """``(rtol, atol)`` the backend solver ``fn`` works to: the caller's, else its own defaults."""
    params = inspect.signature(fn).parameters

    def default(*names: str) -> Any:
        for key in names:
            if key in params and params[key].default is not inspect.Parameter.empty:
                return params[key].default
        return None

    rtol = next((kwargs[k] for k in ("tol", "rtol", "tolerance") if k in kwargs), None)
    if rtol is None or not isinstance(rtol, (int, float)):
        rtol = default("rtol", "tol")
    atol = kwargs.get("atol", default("atol"))
    rtol = float(rtol) if isinstance(rtol, (int, float)) else 1e-5  # SciPy's and CuPy's default
    atol = float(atol) if isinstance(atol, (int, float)) else 0.0  # None / "legacy": none
    return rtol, atol


def _iterative_kwargs(fn: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Map the caller's keywords to what the installed backend solver accepts."""
    params = inspect.signature(fn).parameters
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in ("tol", "rtol", "tolerance"):
            out["rtol" if "rtol" in params else "tol"] = value
        elif key in params or key in _ALWAYS_PASSED:
            out[key] = value
    return out


def _scale_free_solve(backend_fn: Any, M: Any, b: Any, kwargs: dict[str, Any], xp: Any) -> tuple[Any, int]:
    """``backend_fn(M, b)`` on ``b / ‖b‖``, scaled back: the answer does not depend on the units.

    SciPy's Krylov solvers are not scale-free: MINRES lost 0.3 % at ‖b‖ = 1e6 and 95 % at 1e12
    (rtol 1e-10, a 64-point Laplacian), and CGS's breakdown test compares ``ρ`` with ``eps²``,
    absolutely; the adjoint right-hand side has the units of the loss.  So both directions solve
    for a unit right-hand side, with a caller's ``atol`` and ``x0`` in the same units
    (``atol / ‖b‖``, ``x0 / ‖b‖``), which is the same stopping test ``‖r‖ ≤ max(rtol‖b‖, atol)``.
    Returns ``(x, info)``.
    """
    kw = _iterative_kwargs(backend_fn, kwargs)
    norm = float(xp.linalg.norm(b))
    if not (norm > 0 and norm < float("inf")):  # zero (or non-finite, checked before): as given
        out = backend_fn(M, b, **kw)
        return (out[0], int(out[1])) if isinstance(out, tuple) else (out, 0)
    if isinstance(kw.get("atol"), (int, float)):
        kw["atol"] = float(kw["atol"]) / norm
    if kw.get("x0") is not None:
        kw["x0"] = kw["x0"] / norm
    out = backend_fn(M, b / norm, **kw)
    X, info = (out[0], int(out[1])) if isinstance(out, tuple) else (out, 0)
    return X * norm, info


#: SuperLU's keywords a caller may pass (``permc_spec=...``); given any, they are used as given.
_SPLU_KEYWORDS = ("permc_spec", "diag_pivot_thresh", "relax", "panel_size", "options")


def _superlu_options(symmetric: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    """SuperLU options of the default direct solve, chosen by measurement.

    A structurally symmetric matrix (FEM stiffness, Laplacians, elasticity) is ordered by minimum
    degree on ``A + Aᵀ`` in SuperLU's *symmetric mode* (diagonal pivots preferred down to 1 % of the
    column's largest entry, as MUMPS's default threshold); anything else gets SciPy's default,
    COLAMD with partial pivoting.  Factor time (best of 3, float64, one shared 2-core machine) and
    fill-in ``nnz(L + U) / nnz(A)``; ``python -m benchmarks --full --only superlu_factor`` re-measures:

    ===============================  ======  ============  =============  =====================
    matrix                           n       COLAMD        MMD_AT_PLUS_A  MMD_AT_PLUS_A, sym.
    ===============================  ======  ============  =============  =====================
    pyamg bar                        600     0.029 s 4.2x  0.090 s 4.2x   0.031 s 4.2x
    pyamg poisson 120²               14 400  0.46 s 14.1x  0.48 s 8.1x    0.42 s 8.1x
    pyamg aniso rotated 120²         14 400  0.96 s 12.4x  0.66 s 7.6x    0.79 s 7.6x
    pyamg elasticity 60²             7 200   0.68 s 11.9x  0.47 s 9.0x    0.51 s 9.0x
    skfem P1 tri Laplace             3 969   0.12 s 10.2x  1.3 s 6.9x     0.067 s 6.9x
    skfem P2 tri Laplace             16 129  0.67 s 12.6x  6.6 s 6.5x     0.48 s 6.5x
    skfem P1 tri elasticity          7 938   0.64 s 10.9x  6.7 s 8.7x     0.55 s 8.7x
    skfem P1 tet stiffness + mass    4 233   1.27 s 23.3x  6.4 s 20.5x    0.71 s 20.5x
    skfem P1 tet Laplace             2 695   0.49 s 19.2x  2.2 s 15.3x    0.31 s 15.3x
    skfem P1 tet Laplace, 24k [1]_   24 335  23-49 s 77x   see below      22-27 s 53x
    ===============================  ======  ============  =============  =====================

    .. [1] ``MeshTet().refined(5)``, interior nodes; two single runs each, at different loads.

    (On an idle machine issue 16 measured 81 s for the 24k tet mesh with the previous default
    against 4.2 s with COLAMD, and 4.4 s against 0.075 s on a 16k P1 triangle mesh.)

    Minimum degree on ``A + Aᵀ`` fills in up to half less than COLAMD (3 % more on one small
    matrix, 12² elasticity), but without symmetric mode SuperLU takes up to 20x COLAMD's time for
    the same fill (the bridge's previous default; 0.2.7 used COLAMD).  In symmetric mode it is as
    fast as COLAMD or faster (up to 1.8x) on every matrix of the corpus and within 20 % of the
    fastest ordering measured; a threshold of 1 % bounds the growth of the diagonal pivots it keeps.
    """
    given = {key: kwargs[key] for key in _SPLU_KEYWORDS if key in kwargs}
    if given:
        return given
    if symmetric:
        return {"permc_spec": "MMD_AT_PLUS_A", "diag_pivot_thresh": 0.01, "options": {"SymmetricMode": True}}
    return {"permc_spec": "COLAMD"}


class _BackendKernel(SolverPair):
    """The solver pair of the SciPy/CuPy bridge (:class:`~tsgu_ops.internal.SolverPair`): the
    backend matrix per direction and the LU factors live for one call (forward and backward)."""

    def __init__(self, solve: Any, transpose_solve: Any, kwargs: dict[str, Any]):
        super().__init__(solve, transpose_solve, kwargs)
        self._lu: Any = None

    def build(self, A: torch.Tensor, values: torch.Tensor, transposed: bool) -> Any:
        pattern = self.pattern_of(A)
        S = (pattern.csr_t if transposed else pattern.csr)(values)
        xp, xsp = _get_array_modules(A)
        parts = [_torch_to_backend(t, xp) for t in (S.values(), S.col_indices(), S.crow_indices())]
        return xsp.csr_matrix(tuple(parts), shape=tuple(S.shape))

    def _factor(self, A: torch.Tensor, M: Any, options: dict[str, Any]) -> Any:
        _, xsp = _get_array_modules(A)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=getattr(xsp, "SparseEfficiencyWarning", Warning))
            self._lu = xsp.linalg.splu(M.tocsc(), **options)
        return self._lu

    def _direct(self, A: torch.Tensor, values: torch.Tensor, Bb: Any, transposed: bool) -> Any:
        trans = "T" if transposed else "N"
        if self._lu is not None:
            return self._lu.solve(Bb, trans=trans)
        M = self.matrix(A, values, False)
        if A.device.type == "cpu":
            options = _superlu_options(self.pattern_of(A).symmetric(), self.kwargs)
        else:  # cupyx's splu: the caller's keywords only, as before
            options = {key: self.kwargs[key] for key in _SPLU_KEYWORDS if key in self.kwargs}
        X = self._factor(A, M, options).solve(Bb, trans=trans)
        if options.get("options", {}).get("SymmetricMode"):
            # Diagonal pivoting under a relaxed threshold is stable for the SPD and diagonally
            # dominant matrices it is meant for; for anything else one product checks the
            # backward error of this first solve and, if the factor is not trustworthy, falls
            # back to SciPy's default (COLAMD, partial pivoting).
            xp, _ = _get_array_modules(A)
            r, b, scale = relative_residuals(self.matrix(A, values, transposed), X, Bb, xp)
            omega = float((r / (scale + b + float(torch.finfo(A.dtype).tiny))).max()) if len(r) else 0.0
            if not omega <= float(torch.finfo(A.dtype).eps) ** 0.5:
                X = self._factor(A, M, {"permc_spec": "COLAMD"}).solve(Bb, trans=trans)
        return X

    def __call__(
        self, A: torch.Tensor, values: torch.Tensor, B: torch.Tensor, transposed: bool
    ) -> torch.Tensor:
        fn, on_transpose = self.pick(transposed)
        pattern_rows = B.shape[-2] * (B.shape[0] if B.dim() == 3 else 1)
        Bf = B.reshape(pattern_rows, B.shape[-1])
        nan = nonfinite_result(values, B)
        if nan is not None:  # SuperLU calls such a matrix singular; never a plausible finite answer
            return nan
        xp, xsp = _get_array_modules(A)
        Bb = _torch_to_backend(Bf.contiguous(), xp)
        if fn is None or fn == "spsolve":
            X = self._direct(A, values, Bb, transposed)
        elif isinstance(fn, str):
            backend_fn = getattr(xsp.linalg, fn)
            M = self.matrix(A, values, transposed)  # a named transpose solver works on Aᵀ
            X, info = _scale_free_solve(backend_fn, M, Bb[:, 0], self.kwargs, xp)
            # The solver's own stopping test is not the answer's accuracy (SciPy's MINRES stops on
            # an estimate that, in float32, is far below the true residual): measure it.
            rtol, atol = _tolerances(backend_fn, self.kwargs)
            r, b, scale = relative_residuals(M, X, Bb[:, 0], xp)
            check_residual(fn, r, b, scale, A.dtype, rtol, atol, info)
        else:
            M = self.matrix(A, values, on_transpose)  # a lone user solve is handed Aᵀ
            X = fn(M, Bb, **self.kwargs)
            if isinstance(X, tuple):
                X = X[0]
        Xt = _backend_to_torch(X).to(device=B.device, dtype=A.dtype)
        return Xt.reshape(B.shape)


def _make_kernel(solve: Any, transpose_solve: Any, kwargs: dict[str, Any]) -> Kernel:
    if transpose_solve is None:
        transpose_solve = solve
    return _BackendKernel(solve, transpose_solve, kwargs)


def _prepare(A: Any, B: Any, solve: Any, transpose_solve: Any) -> None:
    check_solve_inputs(A, B, b_layout=True)
    _check_solver("solve", solve, B)
    _check_solver("transpose_solve", transpose_solve, B)
    # SciPy/CuPy trust the indices: a 1-based COO index made SuperLU call the matrix singular or
    # abort the process.  Complex values are refused (the Krylov names and the transpose solve
    # would need conjugates).
    check_matrix("A", A, SOLVE_DTYPES)
    check_dense("B", B)
    if A.dtype != B.dtype:
        raise TypeError(f"A and B must have the same dtype, got A: {A.dtype}, B: {B.dtype}")
    _get_array_modules(A)  # a CUDA tensor without CuPy fails here, clearly


class SparseSolveC4T(Function):
    """Autograd Function of :func:`sparse_solve_c4t`: ``apply(A, B, solve, transpose_solve, kwargs)``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, A: torch.Tensor, B: torch.Tensor, solve: Any, transpose_solve: Any, kwargs: dict[str, Any]
    ) -> torch.Tensor:
        _prepare(A, B, solve, transpose_solve)
        return rhs_kernel_forward(ctx, A, B, _make_kernel(solve, transpose_solve, kwargs or {}))

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (*rhs_kernel_backward(ctx, G), None, None, None)


@autocast_fp32
def sparse_solve_c4t(
    A: torch.Tensor, B: torch.Tensor, solve: Any = None, transpose_solve: Any = None, **kwargs: Any
) -> torch.Tensor:
    """Solve ``A X = B`` with SciPy (CPU) or CuPy (CUDA); sparse gradient for ``A``.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR ``(n, n)`` or batched ``(b, n, n)``, float32/float64.
    B : Tensor
        Dense ``(n,)`` / ``(n, k)`` (``(b, n)`` / ``(b, n, k)`` for a batched ``A``), ``A``'s dtype.
    solve : None, str or callable
        ``None``/``"spsolve"`` (LU, reused in backward), ``"cg"``, ``"cgs"``, ``"minres"``,
        ``"gmres"`` (one right-hand side), or ``solve(A_backend, B_backend, **kwargs)``.
    transpose_solve : None, str or callable
        As ``solve``, for ``A⁻ᵀ G``; a callable receives ``A`` itself.  Default: ``solve``'s method
        applied to ``Aᵀ``.
    **kwargs
        Passed to the iterative or user solvers (``tol`` becomes ``rtol`` where needed).  An
        ``atol`` applies to both the forward and the adjoint solve; without one the named solvers
        stop on ``rtol`` alone (SciPy's default ``atol=0``).

    Returns
    -------
    Tensor
        ``X`` with ``B``'s shape and ``A``'s dtype.

    Raises
    ------
    ValueError
        The validation messages of 0.2.7 (spec §2.6 items 1–6 and §3.1), unknown solver names,
        iterative solvers with several right-hand sides; indices out of range, a CSR ``crow`` that
        is not a valid row pointer, a ``meta`` tensor.
    TypeError
        A layout other than COO/CSR, a non-strided ``B``, different dtypes, a dtype other than
        float32/float64 (complex included).
    RuntimeError
        A CUDA tensor without CuPy installed.

    Warns
    -----
    ConvergenceWarning
        An iterative solve whose true residual is above its tolerance (forward or backward).
    RuntimeWarning
        ``A`` or ``B`` holds a NaN or an Inf (the result is NaN).

    Examples
    --------
    >>> import torch
    >>> from tsgu_bridges import sparse_solve_c4t
    >>> A = torch.tensor([[4.0, 1.0], [2.0, 3.0]], dtype=torch.float64).to_sparse_csr().requires_grad_()
    >>> X = sparse_solve_c4t(A, torch.tensor([1.0, 2.0], dtype=torch.float64))
    >>> X.detach()
    tensor([0.1000, 0.6000], dtype=torch.float64)
    >>> X.sum().backward()
    >>> A.grad.layout
    torch.sparse_csr
    """
    _prepare(A, B, solve, transpose_solve)
    return solve_sparse_rhs(A, B, _make_kernel(solve, transpose_solve, kwargs))
