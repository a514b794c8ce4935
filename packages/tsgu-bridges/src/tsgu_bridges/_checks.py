"""Checks shared by the bridges: the input a backend would misread, and the answer it got wrong.

* :func:`check_matrix`: tsgu-ops' index validation (COO ranges, CSR ``crow``/columns, ``meta``)
  and a value-dtype check, before any conversion.  SciPy, CuPy and JAX trust the indices they are
  handed: a 1-based COO index made SuperLU report a singular factor or abort the process, and JAX
  returned NaN or zeros.
* :func:`nonfinite_result`: a NaN or Inf in ``A`` or ``B`` gives NaN and a warning (SuperLU called
  such a matrix singular, and JAX's BiCGSTAB returned zeros).
* :func:`check_residual`: the true relative residual of an iterative solve, per column, against the
  tolerance the solver was given; SciPy's MINRES stops on a residual estimate that, in float32, can
  be far below the true one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tsgu_ops.internal import FLOAT_DTYPES, check_sparse_indices, require_not_meta, require_value_dtype

__all__ = [
    "EXPORT_DTYPES",
    "SOLVE_DTYPES",
    "ConvergenceWarning",
    "check_matrix",
    "check_residual",
    "coo_residuals",
    "nonfinite_result",
]

#: Value dtypes of the solves (SuperLU, SciPy's and JAX's Krylov solvers in real arithmetic).
SOLVE_DTYPES: tuple[torch.dtype, ...] = FLOAT_DTYPES

#: Value dtypes ``scipy.sparse`` holds (the converters); float16 and bfloat16 are not among them.
EXPORT_DTYPES: tuple[torch.dtype, ...] = (
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
)

#: A converged Krylov solve in floating point cannot beat the residual of its rounded answer,
#: ``|b - A fl(x)| <= u |A| |x|`` per entry (``u`` the unit roundoff); a backward-stable solve
#: (CG, GMRES) lands within a small multiple of it.  A true residual above
#: ``max(rtol ‖b‖, atol) + ROUNDOFF_SLACK · eps · ‖|A| |x|‖`` is a wrong answer, not rounding.
#: Measured on the real-matrix corpus in float32 (rtol 1e-6): SciPy's CG ends within 1.1x of
#: ``eps ‖|A||x|‖``, its MINRES 10-60x above it (pyamg's ``bar``: 35x, a 1.6 % error in ``x``).
ROUNDOFF_SLACK = 4.0


class ConvergenceWarning(UserWarning):
    """An iterative bridge solve returned an answer whose true residual misses its tolerance."""


def check_matrix(name: str, A: torch.Tensor, dtypes: Sequence[torch.dtype]) -> None:
    """Indices in range, not ``meta``, values of one of ``dtypes`` (``ValueError``/``TypeError``)."""
    check_sparse_indices(name, A)
    require_value_dtype(name, A, dtypes)


def check_dense(name: str, B: torch.Tensor) -> None:
    """The right-hand side: not ``meta``, a solve dtype."""
    require_not_meta(name, B)
    require_value_dtype(name, B, SOLVE_DTYPES)


def nonfinite_result(values: torch.Tensor, B: torch.Tensor, what: str = "A") -> torch.Tensor | None:
    """NaN of ``B``'s shape, with a ``RuntimeWarning``, if ``values`` or ``B`` holds a NaN or an Inf.

    ``None`` when both are finite (the solve goes ahead).  ``what`` names the matrix in the warning.
    """
    bad = [n for n, t in ((what, values), ("B", B)) if t.numel() and not bool(torch.isfinite(t).all())]
    if not bad:
        return None
    warnings.warn(
        f"{' and '.join(bad)} holds values that are not finite (NaN or Inf): the solution is NaN",
        RuntimeWarning,
        stacklevel=4,
    )
    return torch.full_like(B, float("nan"))


def _host(t: Any) -> Any:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    elif hasattr(t, "get"):  # a CuPy array
        t = t.get()
    return np.asarray(t, dtype=np.float64).reshape(-1)


def relative_residuals(M: Any, X: Any, B: Any, xp: Any = np) -> tuple[Any, Any, Any]:
    """``(‖b - M x‖, ‖b‖, ‖|M| |x|‖)`` per column, in float64 (SciPy/cupyx matrices, 2-D arrays)."""
    M64 = M.astype(xp.float64)
    X64 = xp.asarray(X, dtype=xp.float64).reshape(X.shape[0], -1)
    B64 = xp.asarray(B, dtype=xp.float64).reshape(X64.shape)
    R = B64 - M64 @ X64
    scale = abs(M64) @ abs(X64)
    return xp.linalg.norm(R, axis=0), xp.linalg.norm(B64, axis=0), xp.linalg.norm(scale, axis=0)


def coo_residuals(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, X: torch.Tensor, B: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`relative_residuals` for a matrix given by COO triplets, computed by torch in float64."""
    X64, B64, v64 = (t.to(torch.float64).reshape(t.shape[0], -1) for t in (X, B, vals))
    AX = torch.zeros_like(B64).index_add_(0, rows, v64 * X64[cols])
    scale = torch.zeros_like(B64).index_add_(0, rows, v64.abs() * X64[cols].abs())
    norm = torch.linalg.vector_norm
    return norm(B64 - AX, dim=0), norm(B64, dim=0), norm(scale, dim=0)


def check_residual(
    solver: str,
    r: Any,
    b: Any,
    scale: Any,
    dtype: torch.dtype,
    rtol: float,
    atol: float,
    info: int = 0,
) -> None:
    """Warn (:class:`ConvergenceWarning`) for each solve whose true residual misses its tolerance.

    ``r``, ``b``, ``scale``: per-column ``‖b - A x‖``, ``‖b‖`` and ``‖|A| |x|‖`` (NumPy/CuPy/JAX
    arrays or sequences).  A NaN residual counts as missed.
    """
    r, b, scale = (_host(t) for t in (r, b, scale))
    eps = torch.finfo(dtype).eps
    bound = np.maximum(rtol * b, atol) + ROUNDOFF_SLACK * eps * scale
    missed = ~(r <= bound)
    if not missed.any() and info >= 0:
        return
    rel = r / np.where(b > 0, b, 1.0)
    j = int(np.argmax(np.where(missed, np.nan_to_num(rel, nan=np.inf), -1.0)))
    others = int(missed.sum()) - 1
    more = f" (and {others} other column{'s' if others > 1 else ''})" if others > 0 else ""
    warnings.warn(
        f"{solver} did not converge: true relative residual {rel[j]:.2e} in column {j}{more} is "
        f"above the tolerance {rtol:g} (atol {atol:g}, solver info={info}); the solution is inaccurate. "
        f"Raise maxiter, use a preconditioner, float64, or the direct solve",
        ConvergenceWarning,
        stacklevel=4,
    )
