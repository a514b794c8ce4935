"""The declared internal API of tsgu-ops: what the sibling packages of the project build on.

The packages of the tsgu monorepo (tsgu-krylov, tsgu-bridges, tsgu-distributions, tsgu-encoders,
tsgu-cholesky, the meta-package) import tsgu-ops' public names and this module, never its
underscore modules.  It is versioned with the rest (every sibling pins ``tsgu-ops`` exactly), so a
name here may change between releases; users should prefer the public API.

Contents, by mechanism (DESIGN.md, "One idea, one place"):

* validation primitives: :func:`check_sparse_indices`, :func:`require_value_dtype`, ...;
* structure: :class:`SparsePattern` and its index helpers;
* the gradient boundary: :func:`deliver`, :func:`differentiable_values`, :class:`ValuesToSparse`;
* value-level products and the implicit solve: :class:`PatternMatmul`, the ``*_kernel_*`` helpers;
* the compile/autocast policies: :func:`eager_under_compile`, :func:`autocast_fp32`.

Examples
--------
>>> import torch
>>> from tsgu_ops.internal import SparsePattern
>>> SparsePattern(torch.eye(3).to_sparse_csr()).nnz
3
"""

from __future__ import annotations

from ._checks import (
    COMPLEX_DTYPES,
    FLOAT_DTYPES,
    INDEX_DTYPES,
    SPARSE_LAYOUTS,
    check_sparse_indices,
    require_not_meta,
    require_same_device,
    require_same_dtype,
    require_tensor,
    require_value_dtype,
)
from ._compat import AUTOCAST_DTYPES, autocast_fp32, linalg_solve_triangular_compat
from ._gradients import (
    SparseToValues,
    ValuesToSparse,
    deliver,
    differentiable_values,
    register_use,
    sparse_grad,
)
from ._kernels import eager_under_compile
from .implicit import (
    Kernel,
    SolveOnValues,
    SolverPair,
    check_solve_inputs,
    check_square_sparse,
    kernel_backward,
    kernel_forward,
    rhs_kernel_backward,
    rhs_kernel_forward,
    solve_grad_values,
    solve_sparse,
    solve_sparse_rhs,
    user_kernel,
)
from .pattern import (
    COMPUTE_DTYPES,
    SparsePattern,
    compress_rows,
    conj,
    csr_row_indices,
    lexsort_rows_cols,
    quiet,
)
from .sampled import PatternMatmul, SampledProduct

__all__ = [
    "AUTOCAST_DTYPES",
    "COMPLEX_DTYPES",
    "COMPUTE_DTYPES",
    "FLOAT_DTYPES",
    "INDEX_DTYPES",
    "SPARSE_LAYOUTS",
    "Kernel",
    "PatternMatmul",
    "SampledProduct",
    "SolveOnValues",
    "SolverPair",
    "SparsePattern",
    "SparseToValues",
    "ValuesToSparse",
    "autocast_fp32",
    "check_solve_inputs",
    "check_sparse_indices",
    "check_square_sparse",
    "compress_rows",
    "conj",
    "csr_row_indices",
    "deliver",
    "differentiable_values",
    "eager_under_compile",
    "kernel_backward",
    "kernel_forward",
    "lexsort_rows_cols",
    "linalg_solve_triangular_compat",
    "quiet",
    "register_use",
    "require_not_meta",
    "require_same_device",
    "require_same_dtype",
    "require_tensor",
    "require_value_dtype",
    "rhs_kernel_backward",
    "rhs_kernel_forward",
    "solve_grad_values",
    "solve_sparse",
    "solve_sparse_rhs",
    "sparse_grad",
    "user_kernel",
]
