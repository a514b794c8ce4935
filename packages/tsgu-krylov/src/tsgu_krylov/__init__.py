"""tsgu-krylov: Krylov solvers, preconditioners and differentiable sparse linear solves.

Solvers (pure PyTorch, CPU and CUDA, blocks of right-hand sides and batches in one call):
:func:`linear_cg` (SPD), :func:`minres` (symmetric), :func:`bicgstab` and :func:`gmres`
(general), :func:`lsmr` (least squares).  Preconditioners: :class:`Jacobi`, :class:`IC0`,
:class:`ILU0`, :class:`AMG`.  Differentiable solves with sparse gradients: :func:`sparse_generic_solve`,
:func:`sparse_generic_lstsq`.
"""

from ._common import ConvergenceError, ConvergenceWarning, SolveInfo, SolveReason
from ._version import __version__
from .bicgstab import BICGSTABSettings, bicgstab
from .generic_lstsq import SparseGenericLstsq, sparse_generic_lstsq
from .generic_solve import SparseGenericSolve, sparse_generic_solve
from .gmres import gmres
from .linear_cg import CGInfo, LinearCGSettings, linear_cg
from .lsmr import lsmr
from .minres import MINRESSettings, minres
from .preconditioners import AMG, IC0, ILU0, Jacobi, Preconditioner, make_preconditioner

__all__ = [
    "AMG",
    "BICGSTABSettings",
    "CGInfo",
    "ConvergenceError",
    "ConvergenceWarning",
    "IC0",
    "ILU0",
    "Jacobi",
    "LinearCGSettings",
    "MINRESSettings",
    "Preconditioner",
    "SolveInfo",
    "SolveReason",
    "SparseGenericLstsq",
    "SparseGenericSolve",
    "__version__",
    "bicgstab",
    "gmres",
    "linear_cg",
    "lsmr",
    "make_preconditioner",
    "minres",
    "sparse_generic_lstsq",
    "sparse_generic_solve",
]
