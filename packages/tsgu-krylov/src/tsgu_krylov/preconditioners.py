"""Preconditioners: Jacobi, incomplete Cholesky IC(0), incomplete LU ILU(0).

A preconditioner is a callable applying ``M⁻¹`` to a block ``(*batch, n, k)`` (or a vector ``(n,)``,
``(b, n)`` for a batch of matrices); every solver of this package and
:func:`~tsgu_krylov.sparse_generic_solve` accept one.  Its ``.T`` is the preconditioner of ``Aᵀ``
(what the backward pass of a solve uses).  The implementations live in small modules:

* :mod:`tsgu_krylov.jacobi` — :class:`Jacobi`, one element-wise multiply;
* :mod:`tsgu_krylov.incomplete` — :class:`IC0` and :class:`ILU0`, the factorisations (exact,
  level-scheduled, or Chow–Patel sweeps);
* :mod:`tsgu_krylov.amg` — :class:`AMG`, a smoothed-aggregation V-cycle (PyAMG setup, PyTorch cycle);
* :mod:`tsgu_krylov._levels` — the level-scheduling engine (symbolic analysis cached per
  pattern) and the application of stored triangular factors by the native triangular solve;

and this module picks one by name (:func:`make_preconditioner`).

A solver that needs a symmetric positive-definite preconditioner (CG, MINRES) gets one from
:func:`make_preconditioner` with ``symmetric=True`` (what :func:`~tsgu_krylov.sparse_generic_solve`
passes for them): ``"ilu0"`` of a symmetric ``A`` is then applied symmetrically, as IC(0) (for a
symmetric ``A`` the exact ILU(0) factors are ``U = D Lᵀ``, so ``L U = (L D^½)(L D^½)ᵀ``, the IC(0)
factorisation), and ``"ilu0"`` of a non-symmetric ``A`` is refused.
"""

from __future__ import annotations

from typing import Any

import torch

# the level engine's names stay importable from here, as before the split
from ._levels import _factor_by_levels, _levels, _levels_numpy, _levels_torch  # noqa: F401
from ._precond_base import Preconditioner, _pattern_of
from .amg import AMG
from .incomplete import IC0, ILU0
from .jacobi import Jacobi

__all__ = ["AMG", "IC0", "ILU0", "Jacobi", "Preconditioner", "make_preconditioner"]

_KINDS: dict[str, Any] = {"jacobi": Jacobi, "ic0": IC0, "ilu0": ILU0, "amg": AMG}


def make_preconditioner(A: torch.Tensor, kind: Any, *, symmetric: bool = False) -> Any:
    """``None`` or a preconditioner for ``A`` by name: ``"jacobi"``, ``"ic0"``, ``"ilu0"`` or ``"amg"``.

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
