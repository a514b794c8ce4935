"""Implicit differentiation of a linear solve ``X = A⁻¹ B`` given any forward solver.

For ``A X = B`` and an upstream gradient ``G = ∂L/∂X``:

* ``dB = A⁻ᴴ G`` (one solve with the transpose: ``conj(A⁻ᵀ conj(G))``), and
* ``dA = −dB Xᴴ``, needed only at ``A``'s stored entries: ``dA[i, j] = −dB[i] · conj(X[j])``, a
  sampled product, so the gradient keeps ``A``'s sparsity pattern.

For the transposed system ``Aᵀ X = B`` the roles swap: ``dB = conj(A)⁻¹ G`` and
``dA[i, j] = −conj(X[i]) · dB[j]``.  For real dtypes every ``conj`` is a no-op (``ᴴ`` is ``ᵀ``); for
complex dtypes these are the conjugate (Wirtinger) gradients of PyTorch's autograd.
The transposed solve in the backward pass is the same autograd Function with the flag flipped, so the
backward is itself differentiable (Hessian-vector products, ``create_graph=True``).

The Function works on ``A``'s stored values (a dense tensor; see :func:`tsgu_ops.sparse_values`)
so that, in a double backward, the gradients of ``A`` from the forward and the backward pass add up
as dense values; the public wrappers turn them into one sparse gradient with ``A``'s layout.

One transpose convention everywhere in the project: ``transpose_solve(A, G)`` receives ``A`` itself
(never ``Aᵀ``) and returns ``A⁻ᵀ G``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import _checks, _kernels
from ._compat import autocast_fp32
from ._gradients import deliver, register_use
from ._kernels import Kernel, Source, solve_grad_values
from .pattern import COMPUTE_DTYPES, SparsePattern, conj
from .sampled import operand_values

SolveFn = Callable[..., torch.Tensor]


class SolveOnValues:
    """``X = op(A)⁻¹ B`` as a function of ``A``'s values; ``op`` is ``A`` or ``Aᵀ`` (``transposed``).

    ``SolveOnValues.apply(values, B, A, pattern, kernel, transposed, mask)``: the call of earlier
    releases, kept for the packages of the project; the computation is the one implicit-solve
    Function :class:`tsgu_ops._kernels.SolveFn` (differentiable to any order, ``torch.func``-ready).
    """

    @staticmethod
    def apply(
        values: torch.Tensor,
        B: torch.Tensor,
        A: torch.Tensor | None,
        pattern: SparsePattern,
        kernel: Kernel,
        transposed: bool,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        return _kernels.SolveFn.apply(values, B, Source(A), pattern, kernel, transposed, mask)  # type: ignore[no-any-return]


def solve_sparse(
    A: torch.Tensor,
    B: torch.Tensor,
    kernel: Kernel,
    *,
    transposed: bool = False,
    mask: torch.Tensor | None = None,
    pattern: SparsePattern | None = None,
) -> torch.Tensor:
    """Differentiable ``op(A)⁻¹ B`` for a sparse ``A`` through ``kernel`` (no validation)."""
    pattern = pattern if pattern is not None else SparsePattern(A)
    values = operand_values(A, pattern, "the sparse solve")
    return SolveOnValues.apply(values, B, A.detach(), pattern, kernel, transposed, mask)


class SolverPair:
    """A ``(solve, transpose_solve)`` pair as the kernel of an implicit solve: the one adapter of the
    project (tsgu-krylov's generic solve and every bridge subclass it).

    It holds what the two directions of one call share: the caller's keywords, one
    :class:`SparsePattern` of ``A`` (built at most once, or the caller's), and a backend matrix per
    direction (:meth:`matrix`, built at most once each by :meth:`build`).  And it holds the one rule
    of the project for the transposed direction (:meth:`pick`): a given ``transpose_solve`` is
    called with ``A`` itself; without one, ``solve`` is called with ``Aᵀ``.  A subclass implements
    :meth:`build` (the backend's matrix from the pattern's CSR order) and ``__call__(A, values, B,
    transposed) -> X`` (the :data:`Kernel` protocol).
    """

    def __init__(
        self,
        solve: Any,
        transpose_solve: Any,
        kwargs: dict[str, Any] | None = None,
        pattern: SparsePattern | None = None,
    ) -> None:
        self.solve, self.transpose_solve = solve, transpose_solve
        self.kwargs = dict(kwargs or {})
        self._pattern = pattern
        self._mats: dict[bool, Any] = {}

    def pattern_of(self, A: torch.Tensor) -> SparsePattern:
        """``A``'s index structure, shared by both directions of this call."""
        if self._pattern is None:
            self._pattern = SparsePattern(A)
        return self._pattern

    def pick(self, transposed: bool) -> tuple[Any, bool]:
        """``(solver, on_transpose)``: which solver runs a direction and whether it must be handed
        ``Aᵀ`` (only a lone ``solve`` in the transposed direction)."""
        if not transposed:
            return self.solve, False
        if self.transpose_solve is not None and self.transpose_solve is not self.solve:
            return self.transpose_solve, False
        return self.solve, True

    def matrix(self, A: torch.Tensor, values: torch.Tensor, transposed: bool) -> Any:
        """The backend matrix of ``A`` (``transposed``: of ``Aᵀ``), built once per call."""
        if transposed not in self._mats:
            self._mats[transposed] = self.build(A, values, transposed)
        return self._mats[transposed]

    def build(self, A: torch.Tensor, values: torch.Tensor, transposed: bool) -> Any:
        """The backend's matrix of ``A`` or ``Aᵀ`` from ``A``'s values (in :meth:`pattern_of`'s
        original order); default: a CSR tensor of the flattened (block-diagonal) matrix."""
        pattern = self.pattern_of(A)
        return pattern.csr_t(values) if transposed else pattern.csr(values)

    def __call__(
        self, A: torch.Tensor, values: torch.Tensor, B: torch.Tensor, transposed: bool
    ) -> torch.Tensor:  # pragma: no cover - subclasses implement it
        raise NotImplementedError


def user_kernel(solve: SolveFn, transpose_solve: SolveFn) -> Kernel:
    """A kernel calling ``solve(A, B)`` / ``transpose_solve(A, B)`` and checking what they return."""

    def kernel(A: torch.Tensor, values: torch.Tensor, B: torch.Tensor, transposed: bool) -> torch.Tensor:
        X = (transpose_solve if transposed else solve)(A, B)
        if not isinstance(X, torch.Tensor) or X.shape != B.shape:
            got = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
            raise ValueError(
                f"the {'transpose_solve' if transposed else 'solve'} callable must return a tensor "
                f"of the right-hand side's shape {tuple(B.shape)}, got {got}"
            )
        return X.to(B.dtype)

    return kernel


def kernel_forward(ctx: Any, A: torch.Tensor, B: torch.Tensor, kernel: Kernel) -> torch.Tensor:
    """Forward of an autograd Function taking the sparse ``A``: ``X = kernel(A, ·, B, False)``.

    With :func:`kernel_backward` this is the whole of :class:`ImplicitSolve`, and of the autograd
    Functions of other packages that solve with their own kernel (generic solve, bridges).
    """
    pattern = SparsePattern(A)
    X = kernel(A.detach(), pattern.values(A), B.detach(), False)
    ctx.pattern, ctx.kernel = pattern, kernel
    register_use(ctx, A)
    ctx.save_for_backward(A, X)
    return X


def kernel_backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(dA, dB)`` for :func:`kernel_forward`: a differentiable transposed solve and a sampled product."""
    A, X = ctx.saved_tensors
    Gb = conj(solve_sparse(A, conj(G), ctx.kernel, transposed=True, pattern=ctx.pattern))
    dA = None
    if ctx.needs_input_grad[0]:
        dA = deliver(ctx, 0, ctx.pattern, solve_grad_values(ctx.pattern, Gb, X, False), A)
    return dA, (Gb if ctx.needs_input_grad[1] else None)


def rhs_kernel_forward(ctx: Any, A: torch.Tensor, B: torch.Tensor, kernel: Kernel) -> torch.Tensor:
    """:func:`kernel_forward` for a right-hand side ``B`` that may be a vector (one rank below ``A``)."""
    ctx.vector = B.dim() == A.dim() - 1
    X = kernel_forward(ctx, A, B.unsqueeze(-1) if ctx.vector else B, kernel)
    return X.squeeze(-1) if ctx.vector else X


def rhs_kernel_backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(dA, dB)`` for :func:`rhs_kernel_forward`."""
    dA, dB = kernel_backward(ctx, G.unsqueeze(-1) if ctx.vector else G)
    if dB is not None and ctx.vector:
        dB = dB.squeeze(-1)
    return dA, dB


def solve_sparse_rhs(
    A: torch.Tensor, B: torch.Tensor, kernel: Kernel, pattern: SparsePattern | None = None
) -> torch.Tensor:
    """:func:`solve_sparse` for a right-hand side that may be a vector (one rank below ``A``)."""
    vector = B.dim() == A.dim() - 1
    X = solve_sparse(A, B.unsqueeze(-1) if vector else B, kernel, pattern=pattern)
    return X.squeeze(-1) if vector else X


class ImplicitSolve:
    """The 0.2.7-style autograd Function of :func:`implicit_solve`, kept as a thin shim.

    ``ImplicitSolve.apply(A, B, solve, transpose_solve)``: ``solve(A, B)`` returns ``A⁻¹ B`` and
    ``transpose_solve(A, B)`` returns ``A⁻ᵀ B``; both receive the detached ``A`` and a detached
    right-hand side shaped like ``B``.  No validation; the computation is :func:`implicit_solve`'s
    (the implicit-solve Function on ``A``'s values).
    """

    @staticmethod
    def apply(A: torch.Tensor, B: torch.Tensor, solve: SolveFn, transpose_solve: SolveFn) -> torch.Tensor:
        return _solve(A, B, user_kernel(solve, transpose_solve))


@_kernels.eager_under_compile  # a sparse tensor: dynamo cannot trace it (a graph break)
def _solve(A: torch.Tensor, B: torch.Tensor, kernel: Kernel) -> torch.Tensor:
    with _kernels.plain_sparse():
        pattern = SparsePattern.of(A)
        source = A.detach()
    values = operand_values(A, pattern, "implicit_solve")
    return SolveOnValues.apply(values, B, source, pattern, kernel, False, None)


@_kernels.eager_under_compile
@autocast_fp32
def implicit_solve(
    A: torch.Tensor, B: torch.Tensor, solve: SolveFn, transpose_solve: SolveFn
) -> torch.Tensor:
    """Solve ``A X = B`` with a black-box solver and differentiate it implicitly.

    ``X = solve(A, B)`` is computed without autograd; the backward pass calls
    ``transpose_solve(A, G)`` for ``dB = A⁻ᵀ G`` and returns ``dA = −dB Xᵀ`` at ``A``'s stored
    entries (``A``'s layout, indices and index dtype).  Second derivatives are supported: the
    backward is built from the same differentiable pieces.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, square, ``(n, n)`` or batched ``(b, n, n)``.
    B : Tensor
        Dense ``(n,)``, ``(n, k)`` or, for a batched ``A``, ``(b, n, k)``; same dtype as ``A``.
    solve : callable
        ``solve(A, B) -> X`` with ``X`` shaped like ``B`` (``B`` is always at least 2-D here).
    transpose_solve : callable
        ``transpose_solve(A, G) -> A⁻ᵀ G``; it receives ``A`` itself, not its transpose.

    Returns
    -------
    Tensor
        ``X`` with ``B``'s shape.

    Raises
    ------
    ValueError, TypeError
        For arguments of the wrong kind or shape, values that are not float32, float64,
        complex64 or complex128 (``TypeError``), malformed indices of ``A`` or a ``meta`` tensor
        (``ValueError``), or a solver returning the wrong shape.  Complex values get the
        conjugate (Wirtinger) gradients of PyTorch's autograd: the backward calls
        ``transpose_solve(A, conj(G))`` and conjugates the result.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import implicit_solve
    >>> A = torch.tensor([[4.0, 1.0], [0.0, 2.0]], dtype=torch.float64).to_sparse().requires_grad_()
    >>> solve = lambda A, B: torch.linalg.solve(A.to_dense(), B)
    >>> tsolve = lambda A, B: torch.linalg.solve(A.to_dense().mT, B)
    >>> X = implicit_solve(A, torch.ones(2, dtype=torch.float64), solve, tsolve)
    >>> X.detach()
    tensor([0.1250, 0.5000], dtype=torch.float64)
    >>> X.sum().backward()
    >>> A.grad.to_dense()
    tensor([[-0.0312, -0.1250],
            [ 0.0000, -0.1875]], dtype=torch.float64)
    """
    with _kernels.plain_sparse():
        _check_implicit(A, B, solve, transpose_solve)
    vector = B.dim() == 1 and A.dim() == 2
    Bm = B.unsqueeze(-1) if vector else B
    X = _solve(A, Bm, user_kernel(solve, transpose_solve))
    return X.squeeze(-1) if vector else X


def _check_implicit(A: Any, B: Any, solve: Any, transpose_solve: Any) -> None:
    check_square_sparse("A", A)
    _checks.require_tensor("B", B)
    if B.layout != torch.strided:
        raise ValueError(f"B must be a dense (strided) tensor, got {B.layout}")
    if not callable(solve) or not callable(transpose_solve):
        raise TypeError("solve and transpose_solve must be callables")
    vector = B.dim() == 1 and A.dim() == 2
    if not vector and B.dim() != A.dim():
        raise ValueError(
            f"B must be (n,) or (n, k) for a 2-D A and (b, n, k) for a batched A, got shape "
            f"{tuple(B.shape)} with A of shape {tuple(A.shape)}"
        )
    if B.shape[-2 if not vector else 0] != A.shape[-1] or (A.dim() == 3 and B.shape[0] != A.shape[0]):
        raise ValueError(
            f"Incompatible dimensions: A has shape {tuple(A.shape)}, B has shape {tuple(B.shape)}"
        )
    _checks.require_value_dtype("A", A, COMPUTE_DTYPES)
    _checks.require_same_dtype("A", A, "B", B)
    _checks.require_same_device("A", A, "B", B)
    _checks.check_sparse_indices("A", A)


def check_square_sparse(name: str, A: Any) -> None:
    _checks.require_tensor(name, A)
    _checks.require_layout(name, A, _checks.SPARSE_LAYOUTS)
    _checks.require_no_dense_dims(name, A)
    if A.dim() not in (2, 3) or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name} must be square (n, n) or batched (b, n, n), got shape {tuple(A.shape)}")


def check_solve_inputs(A: Any, B: Any, *, batched: bool = True, b_layout: bool = True) -> None:
    """Validation of a sparse linear solve ``A X = B``: torchsparsegradutils 0.2.7's order and messages.

    Shared by tsgu-krylov's generic solve and the bridges.  ``batched`` accepts ``A`` ``(b, n, n)``
    with ``B`` ``(b, n)`` / ``(b, n, k)``; ``b_layout`` checks that ``B`` is strided.
    """
    if not isinstance(A, torch.Tensor) or not isinstance(B, torch.Tensor):
        raise ValueError("Both A and B should be instances of torch.Tensor")
    if A.layout not in (torch.sparse_coo, torch.sparse_csr):
        raise TypeError(f"Unsupported sparse layout: {A.layout}. Only COO and CSR are supported.")
    if A.dim() != 2 and not (batched and A.dim() == 3):
        extra = " (or a batched 3D tensor (b, n, n))" if batched else ""
        raise ValueError(f"A must be a 2D tensor{extra}, got shape {tuple(A.shape)}")
    if A.shape[-1] != A.shape[-2]:
        raise ValueError("A must be square")
    lo = A.dim() - 1
    if B.dim() not in (lo, lo + 1):
        if A.dim() == 2:
            raise ValueError("B must be a 1D or 2D tensor")
        raise ValueError(f"B must be a 2D (b, n) or 3D (b, n, k) tensor for a batched A, got {B.dim()}D")
    if B.shape[lo - 1] != A.shape[-1] or (A.dim() == 3 and B.shape[0] != A.shape[0]):
        raise ValueError(f"Incompatible dimensions: A has shape {A.shape}, B has shape {B.shape}")
    if b_layout and B.layout != torch.strided:
        raise TypeError("B must be a dense (strided) tensor")
    if A.dense_dim() != 0:
        raise ValueError(f"A must have no dense dimensions, got dense_dim()={A.dense_dim()}")
    if A.device != B.device:
        raise ValueError(f"A and B must be on the same device, got A: {A.device}, B: {B.device}")
