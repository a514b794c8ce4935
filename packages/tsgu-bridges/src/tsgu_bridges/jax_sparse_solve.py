"""``sparse_solve_j4t``: ``X = A⁻¹ B`` with a JAX solver, sparse gradient for ``A`` (needs ``jax``).

``A`` crosses to JAX as a ``BCOO`` matrix (its transpose, for the backward pass, by swapping the
index columns), ``B`` by DLPack; the result comes back as a tensor of ``A``'s dtype and is
differentiated with tsgu-ops' implicit solve.

* Default solvers: ``jax.scipy.sparse.linalg.bicgstab`` (``tol`` 1e-10 in float64, 1e-6 in float32
  unless given, no absolute floor unless ``atol`` is given), mapped over the columns of a block
  right-hand side with ``jax.vmap`` (each column its own Krylov space; 0.2.7 solved the block as
  one long vector), and on ``Aᵀ`` for the transpose.  Each column is solved for a unit
  right-hand side and scaled back, so the accuracy does not depend on the units of ``B`` or of
  the loss.
* A user ``solve(A_jax, B_jax, **kwargs)`` returns ``x`` or ``(x, info)``; ``transpose_solve``
  follows the project's convention: it receives ``A`` itself and returns ``A⁻ᵀ G`` (0.2.7 handed it
  ``Aᵀ`` and, by default, transposed twice, so non-symmetric gradients were wrong).
* float64 runs inside a scoped ``jax.enable_x64(True)``; the global flag is left as it was
  (0.2.7 switched it on for the rest of the program).
* Checked up front: indices in range (a 1-based COO index gave NaN), float32/float64 values (float16
  gave NaN, bfloat16 two digits).  A NaN or Inf in ``A`` or ``B`` gives NaN with a
  ``RuntimeWarning`` (BiCGSTAB returned zeros for a NaN matrix).  After the default solver the
  true residual of every column is measured; above ``max(tol ‖b‖, atol)`` plus a few units of
  roundoff it gives a :class:`~tsgu_bridges.ConvergenceWarning`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import torch
from jax.experimental import sparse as jsparse
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

from ._checks import SOLVE_DTYPES, check_dense, check_matrix, check_residual, coo_residuals, nonfinite_result
from .jax_bindings import _x64_scope, j2t, t2j

__all__ = ["SparseSolveJ4T", "sparse_solve_j4t"]


def _device_for(t: torch.Tensor) -> Any:
    if t.device.type == "cuda":
        return jax.devices("gpu")[t.device.index or 0]
    return jax.devices("cpu")[0]


def _default_solver(A: Any, B: Any, **kwargs: Any) -> Any:
    # Each column is solved for a unit right-hand side and scaled back (an atol and an x0 in the
    # same units), so that the accuracy does not depend on the units of B or of the loss.
    atol = kwargs.pop("atol", 0.0)
    x0 = kwargs.pop("x0", None)

    def one(b: Any, x: Any) -> Any:
        norm = jnp.linalg.norm(b)
        s = jnp.where((norm > 0) & jnp.isfinite(norm), norm, jnp.ones_like(norm))
        guess = None if x is None else x / s
        return jax.scipy.sparse.linalg.bicgstab(A, b / s, x0=guess, atol=atol / s, **kwargs)[0] * s

    if x0 is None:
        return jax.vmap(lambda b: one(b, None), in_axes=1, out_axes=1)(B)
    x0 = jnp.reshape(jnp.asarray(x0), B.shape)
    return jax.vmap(one, in_axes=(1, 1), out_axes=1)(B, x0)


class _JaxKernel(SolverPair):
    """The solver pair of the JAX bridge (:class:`~tsgu_ops.internal.SolverPair`): a BCOO matrix
    of ``A`` or ``Aᵀ`` per direction, on the JAX device of ``A``."""

    def build(self, A: torch.Tensor, values: torch.Tensor, transposed: bool) -> Any:
        p = self.pattern_of(A)
        rows, cols = p.sorted_rows, p.sorted_cols.to(torch.int64)
        if transposed:
            rows, cols = cols, rows
        idx = torch.stack([rows, cols], dim=1)
        dev = _device_for(A)
        data = jax.device_put(t2j(p._sorted(values)), dev)
        return jsparse.BCOO((data, jax.device_put(t2j(idx), dev)), shape=(p.N, p.N))

    def __call__(
        self, A: torch.Tensor, values: torch.Tensor, B: torch.Tensor, transposed: bool
    ) -> torch.Tensor:
        fn, on_transpose = self.pick(transposed)
        fn = fn or _default_solver  # the default solver is handed Aᵀ for the transpose
        kwargs = dict(self.kwargs)
        if fn is _default_solver and "tol" not in kwargs:
            kwargs["tol"] = 1e-10 if A.dtype == torch.float64 else 1e-6
        rows = B.shape[-2] * (B.shape[0] if B.dim() == 3 else 1)
        Bf = B.reshape(rows, B.shape[-1])
        nan = nonfinite_result(values, B)
        if nan is not None:  # JAX's BiCGSTAB returned zeros for a NaN matrix
            return nan
        with _x64_scope(A.dtype == torch.float64):
            M = self.matrix(A, values, on_transpose)
            Bj = jax.device_put(t2j(Bf), _device_for(A))
            X = fn(M, Bj, **kwargs)
            if isinstance(X, tuple):
                X = X[0]
            X = jnp.asarray(X)
            Xt = j2t(X).to(device=B.device, dtype=A.dtype).clone()
        if fn is _default_solver:
            # BiCGSTAB's stopping test is on its recurrence; measure the answer's true residual
            p = self.pattern_of(A)
            r_, c_ = p.sorted_rows, p.sorted_cols.to(torch.int64)
            if transposed:
                r_, c_ = c_, r_
            res = coo_residuals(r_, c_, p._sorted(values), Xt.reshape(Bf.shape), Bf)
            check_residual("bicgstab", *res, A.dtype, float(kwargs["tol"]), float(kwargs.get("atol", 0.0)))
        return Xt.reshape(B.shape)


def _make_kernel(solve: Any, transpose_solve: Any, kwargs: dict[str, Any]) -> Kernel:
    for name, fn in (("solve", solve), ("transpose_solve", transpose_solve)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be None or a callable, got {type(fn).__name__}")
    return _JaxKernel(solve, transpose_solve, kwargs)


class SparseSolveJ4T(Function):
    """Autograd Function of :func:`sparse_solve_j4t`: ``apply(A, B, solve, transpose_solve, kwargs)``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, A: torch.Tensor, B: torch.Tensor, solve: Any, transpose_solve: Any, kwargs: dict[str, Any]
    ) -> torch.Tensor:
        _prepare(A, B)
        return rhs_kernel_forward(ctx, A, B, _make_kernel(solve, transpose_solve, kwargs or {}))

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (*rhs_kernel_backward(ctx, G), None, None, None)


@autocast_fp32
def sparse_solve_j4t(
    A: torch.Tensor, B: torch.Tensor, solve: Any = None, transpose_solve: Any = None, **kwargs: Any
) -> torch.Tensor:
    """Solve ``A X = B`` with a JAX solver; sparse gradient for ``A``.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR ``(n, n)`` or batched ``(b, n, n)`` (solved as one block-diagonal system).
    B : Tensor
        Dense ``(n,)`` / ``(n, k)`` (``(b, n)`` / ``(b, n, k)``), ``A``'s dtype.
    solve, transpose_solve : callable, optional
        ``f(A_jax, B_jax, **kwargs) -> x or (x, info)``; ``transpose_solve`` receives ``A`` itself
        and returns ``A⁻ᵀ G``.  Default: JAX BiCGSTAB per column (on ``Aᵀ`` for the transpose).
    **kwargs
        Passed to the solvers (``tol``, ``atol``, ``maxiter``, ``M`` for the default).

    Returns
    -------
    Tensor
        ``X`` with ``B``'s shape and ``A``'s dtype.

    Raises
    ------
    ValueError
        The validation messages of 0.2.7, and "A and B must have the same dtype. Got A: ..., B: ...";
        indices out of range, an invalid CSR ``crow``, a ``meta`` tensor.
    TypeError
        A dtype other than float32/float64 (complex included).

    Warns
    -----
    ConvergenceWarning
        The default solver's true residual is above its tolerance (some column, forward or backward).
    RuntimeWarning
        ``A`` or ``B`` holds a NaN or an Inf (the result is NaN).

    Examples
    --------
    >>> import torch
    >>> from tsgu_bridges.jax_sparse_solve import sparse_solve_j4t
    >>> A = torch.tensor([[4.0, 1.0], [2.0, 3.0]], dtype=torch.float64).to_sparse().requires_grad_()
    >>> sparse_solve_j4t(A, torch.tensor([1.0, 2.0], dtype=torch.float64)).detach()
    tensor([0.1000, 0.6000], dtype=torch.float64)
    """
    _prepare(A, B)
    return solve_sparse_rhs(A, B, _make_kernel(solve, transpose_solve, kwargs))


def _prepare(A: Any, B: Any) -> None:
    check_solve_inputs(A, B)
    # JAX trusts the indices (a 1-based COO index gave NaN, silently), solves float16 into NaN and
    # bfloat16 to two digits: indices in range and float32/float64 values only.
    check_matrix("A", A, SOLVE_DTYPES)
    if A.dtype != B.dtype:
        raise ValueError(f"A and B must have the same dtype. Got A: {A.dtype}, B: {B.dtype}")
    check_dense("B", B)
