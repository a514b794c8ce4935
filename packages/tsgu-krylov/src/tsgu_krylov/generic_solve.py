"""``sparse_generic_solve``: ``X = A⁻¹ B`` with any solver, differentiated implicitly.

The forward pass runs a solver; the backward pass runs the transposed solve ``Gb = A⁻ᵀ G`` and
returns ``dB = Gb`` and ``dA = −Gb Xᵀ`` at ``A``'s stored entries (tsgu-ops' implicit solve, so the
backward is differentiable again: Hessian-vector products work).

Solvers follow the 0.2.7 protocol ``solve(A, B, **kwargs) -> X`` where ``A`` is the detached sparse
tensor.  The transpose convention is the project's one: ``transpose_solve(A, G, **kwargs)`` receives
``A`` itself and returns ``A⁻ᵀ G``.  What changed from 0.2.7 (where both defaults were MINRES, which
is wrong for a non-symmetric ``A``, and a lone ``solve`` was reused with ``A`` for the transpose):

* ``solve=None`` picks from ``A``: symmetric → MINRES (CG with ``structure="spd"``), otherwise
  GMRES; built-in solvers solve the transpose with ``Aᵀ`` themselves;
* a lone user ``solve`` is called with ``Aᵀ`` (a sparse tensor of ``A``'s layout) for the
  transpose, which is right for every ``A`` and the same as before for a symmetric one;
* built-in solvers accept ``tol``/``rtol``/``atol``/``maxiter``/``x0`` and a ``preconditioner``
  given by name (``"jacobi"``, ``"ic0"``, ``"ilu0"``), built once per call and transposed for the
  backward solve;
* batched ``A`` ``(b, n, n)`` with ``B`` ``(b, n)`` or ``(b, n, k)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.function import Function

from tsgu_ops.internal import (
    FLOAT_DTYPES,
    Kernel,
    SolverPair,
    SparsePattern,
    autocast_fp32,
    check_solve_inputs,
    check_sparse_indices,
    eager_under_compile,
    require_not_meta,
    require_value_dtype,
    rhs_kernel_backward,
    rhs_kernel_forward,
    solve_sparse_rhs,
)

from ._operator import SparseOperator
from .bicgstab import BICGSTABSettings, bicgstab
from .gmres import gmres
from .linear_cg import linear_cg
from .minres import minres
from .preconditioners import Preconditioner, make_preconditioner

__all__ = ["SparseGenericSolve", "sparse_generic_solve"]

BUILTIN: dict[str, Callable[..., Any]] = {
    "cg": linear_cg,
    "linear_cg": linear_cg,
    "minres": minres,
    "bicgstab": bicgstab,
    "gmres": gmres,
}
_BUILTIN_FUNCS = {id(f) for f in BUILTIN.values()}
_TOL_KEYS = ("tol", "rtol", "tolerance", "settings")
_DEFAULT_ABSTOL = BICGSTABSettings().abstol


def default_rtol(dtype: torch.dtype) -> float:
    """The generic solve's documented relative tolerance: 1e-10 in float64, 1e-6 in float32."""
    return 1e-10 if dtype == torch.float64 else 1e-6


def builtin_defaults(fn: Any, named: bool, kwargs: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """Keywords a built-in solver gets on top of the caller's, in both directions.

    * A solver chosen by name (or by default) solves to :func:`default_rtol` unless a tolerance
      (``tol``, ``rtol``, ``tolerance`` or ``settings``) is given; a solver passed as a function
      (``solve=linear_cg``, the 0.2.7 call) keeps its own defaults (0.2.7's).
    * No absolute floor unless the caller gives one: BiCGSTAB's 0.2.7 default ``abstol=1e-8``
      ended the forward solve of a small ``B`` and, in the backward pass, the adjoint solve of a
      small loss (a gradient 80 % wrong at a loss scaled by 1e-9), so it gets ``atol=0`` unless
      ``atol=`` or a ``settings`` with another ``abstol`` is passed.
    """
    extra: dict[str, Any] = {}
    if named and not any(k in kwargs for k in _TOL_KEYS):
        extra["rtol"] = default_rtol(dtype)
    if fn is bicgstab and "atol" not in kwargs:
        settings = kwargs.get("settings")
        if getattr(settings, "abstol", _DEFAULT_ABSTOL) == _DEFAULT_ABSTOL:
            extra["atol"] = 0.0
    return extra


def transposed_sparse(A: torch.Tensor, pattern: SparsePattern | None = None) -> torch.Tensor:
    """``Aᵀ`` as a sparse tensor of ``A``'s layout (CSR stays CSR, with its index dtype)."""
    if A.layout == torch.sparse_coo:
        return A.detach().transpose(-2, -1)
    pattern = pattern if pattern is not None else SparsePattern(A)
    values = pattern.values(A.detach())
    T = pattern.csr_t(values)
    if pattern.batch is None:
        return T
    b, n = pattern.batch, pattern.n
    # the flattened transpose is block diagonal: cut its rows back into the batch
    crow = T.crow_indices().to(A.crow_indices().dtype)
    per = A.col_indices().shape[-1]
    crow_b = crow[1:].reshape(b, n) - (torch.arange(b, device=crow.device, dtype=crow.dtype) * per)[:, None]
    crow_b = torch.cat([torch.zeros(b, 1, dtype=crow.dtype, device=crow.device), crow_b], dim=1)
    col = T.col_indices().reshape(b, per)
    col = col - (torch.arange(b, device=col.device, dtype=col.dtype) * n)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(
            crow_b, col.to(crow_b.dtype), T.values().reshape(b, per), tuple(A.shape), check_invariants=False
        )


def _is_builtin(fn: Any) -> bool:
    return id(fn) in _BUILTIN_FUNCS


def _resolve(fn: Any, name: str) -> Any:
    if fn is None or callable(fn):
        return fn
    if isinstance(fn, str):
        if fn.lower() not in BUILTIN:
            raise ValueError(f"{name} must be a callable or one of {sorted(BUILTIN)}, got {fn!r}")
        return BUILTIN[fn.lower()]
    raise TypeError(f"{name} must be a callable or a solver name, got {type(fn).__name__}")


class _Kernel(SolverPair):
    """The solver pair of the generic solve (:class:`~tsgu_ops.internal.SolverPair`): a built-in
    solver gets the operator of ``A`` or ``Aᵀ`` (a :class:`SparseOperator`, built once per
    direction), a user callable gets ``A`` (``Aᵀ`` for a lone ``solve`` in the transposed
    direction); the preconditioner is built once and transposed for the backward."""

    def __init__(
        self,
        solve: Any,
        transpose_solve: Any,
        kwargs: dict[str, Any],
        vector: bool,
        pattern: SparsePattern | None = None,
        defaults: dict[bool, dict[str, Any]] | None = None,
    ):
        super().__init__(solve, transpose_solve, kwargs, pattern)
        self.vector = vector
        self.defaults = defaults or {}  # per direction: what builtin_defaults added
        self._pc: Any = None
        self._pc_built = False
        self._At: torch.Tensor | None = None

    def build(self, A: torch.Tensor, values: torch.Tensor, transposed: bool) -> SparseOperator:
        return SparseOperator(A, transpose=transposed, pattern=self.pattern_of(A))

    def _preconditioner(self, A: torch.Tensor, transposed: bool) -> Any:
        spec = self.kwargs.get("preconditioner")
        if not self._pc_built:
            # CG and MINRES need a symmetric (SPD) preconditioner: "ilu0" is then applied symmetrically
            needs_spd = any(f is linear_cg or f is minres for f in (self.solve, self.transpose_solve))
            self._pc = make_preconditioner(A, spec, symmetric=needs_spd)
            self._pc_built = True
        pc = self._pc
        if transposed and isinstance(pc, Preconditioner):
            return pc.T
        return pc

    def _call(
        self, fn: Any, A: Any, B: torch.Tensor, kwargs: dict[str, Any], builtin: bool = False
    ) -> torch.Tensor:
        # a built-in solver takes the block (n, 1) / (b, n, 1) itself; a user solver gets B's own
        # shape, as in 0.2.7
        Bc = B.squeeze(-1) if self.vector and not builtin else B
        X = fn(A, Bc, **kwargs)
        if isinstance(X, tuple):  # a built-in solver asked for its info: keep the solution
            X = X[0]
        if not isinstance(X, torch.Tensor) or X.numel() != B.numel():
            got = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
            raise ValueError(f"the solver must return a tensor shaped like B {tuple(Bc.shape)}, got {got}")
        return X.reshape(B.shape).to(B.dtype)

    def __call__(
        self, A: torch.Tensor, values: torch.Tensor, B: torch.Tensor, transposed: bool
    ) -> torch.Tensor:
        fn, on_transpose = self.pick(transposed)
        kwargs = dict(self.kwargs)
        if _is_builtin(fn):  # a built-in solver solves op X = B: hand it the operator of Aᵀ
            kwargs.update(self.defaults.get(transposed, {}))
            if "preconditioner" in kwargs:
                kwargs["preconditioner"] = self._preconditioner(A, transposed)
            kwargs.pop("return_info", None)
            return self._call(fn, self.matrix(A, values, transposed), B, kwargs, builtin=True)
        if on_transpose:  # a lone user solve: give it Aᵀ itself
            if self._At is None:
                self._At = transposed_sparse(A, self.pattern_of(A))
            return self._call(fn, self._At, B, kwargs)
        return self._call(fn, A, B, kwargs)


def _make_kernel(
    A: torch.Tensor,
    solve: Any,
    transpose_solve: Any,
    kwargs: dict[str, Any],
    vector: bool,
    pattern: SparsePattern | None = None,
) -> Kernel:
    named = (isinstance(solve, str), isinstance(transpose_solve, str))
    solve = _resolve(solve, "solve")
    transpose_solve = _resolve(transpose_solve, "transpose_solve")
    kwargs = dict(kwargs)
    structure = kwargs.pop("structure", None)
    if structure not in (None, "spd", "symmetric", "general"):
        raise ValueError(f"structure must be 'spd', 'symmetric', 'general' or None, got {structure!r}")
    if solve is None and transpose_solve is None:
        if structure is None:
            pattern = pattern if pattern is not None else SparsePattern(A)
            structure = "symmetric" if pattern.symmetric(pattern.values(A.detach())) else "general"
        # the default must give accurate gradients, not 0.2.7's loose MINRES tolerance
        solve = {"spd": linear_cg, "symmetric": minres, "general": gmres}[structure]
        named = (True, True)
    if solve is None:
        solve, named = transpose_solve, (named[1], named[1])
    if transpose_solve is None:
        transpose_solve, named = solve, (named[0], named[0])
    defaults = {
        t: builtin_defaults(fn, nm, kwargs, A.dtype)
        for t, fn, nm in ((False, solve, named[0]), (True, transpose_solve, named[1]))
        if _is_builtin(fn)
    }
    return _Kernel(solve, transpose_solve, kwargs, vector, pattern, defaults)


class SparseGenericSolve(Function):
    """Autograd Function of :func:`sparse_generic_solve`.

    ``SparseGenericSolve.apply(A, B, solve, transpose_solve, kwargs_dict)``: no validation, ``B``
    at least 2-D; the backward is differentiable.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, A: torch.Tensor, B: torch.Tensor, solve: Any, transpose_solve: Any, kwargs: dict[str, Any]
    ) -> torch.Tensor:
        vector = B.dim() == A.dim() - 1
        return rhs_kernel_forward(ctx, A, B, _make_kernel(A, solve, transpose_solve, kwargs or {}, vector))

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (*rhs_kernel_backward(ctx, G), None, None, None)


# Dynamo cannot trace sparse tensors through the solver loops (it fails inside torch, not with a graph
# break): inside torch.compile the solve runs eagerly, as one opaque call, and autograd is unchanged.
@autocast_fp32
@eager_under_compile(
    reason=(
        "tsgu_krylov.sparse_generic_solve takes a sparse tensor and runs a solver whose stopping "
        "depends on the data: torch.compile runs it eagerly, as a graph break, which fullgraph=True "
        "forbids (compile the code around it with fullgraph=False)"
    )
)
def sparse_generic_solve(
    A: torch.Tensor,
    B: torch.Tensor,
    solve: Any = None,
    transpose_solve: Any = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Solve ``A X = B`` with an iterative or black-box solver; sparse gradient for ``A``.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, ``(n, n)`` or batched ``(b, n, n)``; any index dtype.
    B : Tensor
        Dense ``(n,)`` / ``(n, k)``, or ``(b, n)`` / ``(b, n, k)`` for a batched ``A``.
    solve : callable or str, optional
        ``solve(A, B, **kwargs) -> X``; a name (``"cg"``, ``"minres"``, ``"bicgstab"``,
        ``"gmres"``) or one of this package's solvers.  ``None``: chosen from ``A`` (MINRES if
        symmetric, GMRES otherwise, CG with ``structure="spd"``).  A solver chosen by name or by
        default solves to ``rtol`` 1e-10 in float64 (1e-6 in float32) unless a tolerance
        (``tol``, ``rtol``, ``tolerance``, ``settings``) is given; a solver passed as a function
        (``solve=linear_cg``, as in 0.2.7) keeps its own defaults (``linear_cg``: 1e-5,
        ``bicgstab``: 1e-6).  No absolute tolerance applies unless one is given (``atol=``, or a
        ``BICGSTABSettings`` with a non-default ``abstol``): forward and backward solves reach
        the same relative accuracy whatever the scale of ``B`` and of the loss.
    transpose_solve : callable or str, optional
        ``transpose_solve(A, G, **kwargs) -> A⁻ᵀ G`` (it receives ``A``, not ``Aᵀ``).  Default: the
        forward solver applied to ``Aᵀ``.
    **kwargs
        Passed to both solvers (e.g. ``settings=``, ``rtol=``, ``maxiter=``,
        ``preconditioner="ilu0"``).  ``structure`` (``"spd"``, ``"symmetric"``, ``"general"``)
        is read here and only steers the default choice.

    Returns
    -------
    Tensor
        ``X`` with ``B``'s shape, in ``A``'s dtype.

    Raises
    ------
    ValueError, TypeError
        The 0.2.7 messages (see spec §2.6); ``A`` with out-of-range or malformed indices, on the
        ``meta`` device, or with values other than float32/float64 (complex values are not
        supported by tsgu-krylov); a complex ``B``.  Another real dtype of ``B`` only warns, and
        ``B`` is cast to ``A``'s dtype (0.2.7).
    ConvergenceError
        A built-in solver given ``on_failure="raise"`` that missed its tolerance or met a NaN/Inf.

    Notes
    -----
    With a built-in solver, a NaN or an infinity in ``A`` or ``B`` (or an overflowing iterate)
    gives a :class:`~tsgu_krylov.ConvergenceWarning` and NaN in the affected columns of ``X``.

    Examples
    --------
    >>> import torch
    >>> from tsgu_krylov import sparse_generic_solve
    >>> A = torch.tensor([[4.0, 1.0], [2.0, 3.0]], dtype=torch.float64).to_sparse_csr().requires_grad_()
    >>> B = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> X = sparse_generic_solve(A, B)
    >>> X.detach()
    tensor([0.1000, 0.6000], dtype=torch.float64)
    >>> X.sum().backward()
    >>> A.grad.layout
    torch.sparse_csr
    """
    check_solve_inputs(A, B)
    check_sparse_indices("A", A)  # before any native kernel reads them
    require_value_dtype("A", A, FLOAT_DTYPES)
    require_not_meta("B", B)
    if B.is_complex():
        raise TypeError(
            f"B must have real values (float32 or float64; complex values are not supported by "
            f"tsgu-krylov), got {B.dtype}"
        )
    if A.dtype != B.dtype:
        warnings.warn(
            f"A and B have different dtypes ({A.dtype} and {B.dtype}); B is cast to {A.dtype}",
            UserWarning,
            stacklevel=2,
        )
        B = B.to(A.dtype)
    vector = B.dim() == A.dim() - 1
    pattern = SparsePattern.of(A)  # one index structure per matrix: symmetry test, operators, gradient
    kernel = _make_kernel(A, solve, transpose_solve, kwargs, vector, pattern)
    return solve_sparse_rhs(A, B, kernel, pattern=pattern)
