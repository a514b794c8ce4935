"""tsgu-bridges: SciPy (CPU), CuPy (GPU) and JAX solvers for torch sparse tensors, with sparse gradients.

* :func:`to_scipy` / :func:`from_scipy`: zero-copy conversions (index dtypes kept, batches as lists);
* :func:`sparse_solve_c4t` (:class:`SparseSolveC4T`): SciPy on CPU tensors (SuperLU factorisation
  reused by the backward pass, or SciPy's iterative solvers), CuPy on CUDA tensors; converters
  ``t2c_coo``, ``c2t_coo``, ``t2c_csr``, ``c2t_csr``;
* :mod:`tsgu_bridges.jax_sparse_solve` (``sparse_solve_j4t``) and :mod:`tsgu_bridges.jax_bindings`
  (``t2j``, ``j2t``, ...): need ``jax`` (extra ``[jax]``).

Importing the package never imports CuPy or JAX.  Every solve uses tsgu-ops' implicit
differentiation and its transpose convention: ``transpose_solve(A, G)`` receives ``A`` itself.
"""

from ._checks import ConvergenceWarning
from ._version import __version__
from .cupy_bindings import c2t_coo, c2t_csr, have_cupy, t2c_coo, t2c_csr
from .cupy_sparse_solve import SparseSolveC4T, sparse_solve_c4t
from .scipy_bridge import from_scipy, to_scipy

__all__ = [
    "ConvergenceWarning",
    "SparseSolveC4T",
    "__version__",
    "c2t_coo",
    "c2t_csr",
    "from_scipy",
    "have_cupy",
    "sparse_solve_c4t",
    "t2c_coo",
    "t2c_csr",
    "to_scipy",
]
