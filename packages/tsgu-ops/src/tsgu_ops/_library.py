"""The value-level kernels of tsgu-ops as ``torch.library`` custom operators.

Three kernels work on a fixed sparsity pattern given as dense index tensors and a dense vector of
values, so that ``torch.compile``, ``torch.func`` and :class:`tsgu_ops.nn.SparseParameter` never see
a sparse tensor:

* ``tsgu::csr_mm``       ``Y = S(values) @ X`` or ``S(values)ᵀ @ X``;
* ``tsgu::csr_sampled``  ``s[k] = U[row_k] · V[col_k]`` (the sampled product, SDDMM);
* ``tsgu::csr_trisolve`` ``X = op(S(values))⁻¹ B`` for a triangular ``S``.

The pattern is a :class:`Structure`: CSR row pointers and column indices of an ``(N, M)`` matrix in
row-major order, and the same entries in column-major order (the CSR indices of ``Sᵀ`` and the
permutation from that order to the row-major one), built once per pattern by :func:`structure`.
Values are always in row-major order.  Each operator has a fake (meta) kernel for tracing, a
registered autograd formula (which calls the other operators, so derivatives of any order exist)
and a vmap rule: a batch of value vectors (and right-hand sides) on one pattern runs as one
block-diagonal problem built by index arithmetic, without a Python loop over the batch.

``torch.library`` custom operators do not take part in ``torch.func``'s ``grad``/``vjp``/``jvp``
transforms (their autograd is a ``Function`` without ``setup_context``), so eager code calls the
operators through the autograd Functions :class:`MatmulFn`, :class:`SampledFn` and
:class:`TriSolveFn` (``setup_context``, ``jvp`` and a generated vmap rule); code being compiled
calls the operators themselves, whose registered autograd AOTAutograd traces.  :func:`csr_mm`,
:func:`csr_sampled` and :func:`csr_trisolve` choose.

The torch-version checks of this machinery are :mod:`tsgu_ops._compat`'s (one place).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import torch
from torch import Tensor
from torch.autograd.function import Function

from ._compat import HAS_CUSTOM_OP, HAS_REGISTER_VMAP, functorch_bug_guard, is_compiling
from .pattern import compress_rows, quiet

P = ParamSpec("P")
R = TypeVar("R")


class Structure:
    """A fixed ``(N, M)`` sparsity pattern in the form the operators take.

    ``crow``/``col``: CSR indices (row-major order); ``crow_t``/``col_t``: CSR indices of the
    transpose; ``perm_t[j]``: row-major position of the transpose's ``j``-th entry.  ``crow`` and
    ``col`` share one int dtype, ``crow_t``/``col_t``/``perm_t`` are int64.  A plain object (not a
    pytree), so that ``torch.func`` passes it through its transforms untouched.
    """

    def __init__(self, crow: Tensor, col: Tensor, crow_t: Tensor, col_t: Tensor, perm_t: Tensor) -> None:
        self.crow, self.col, self.crow_t, self.col_t, self.perm_t = crow, col, crow_t, col_t, perm_t

    @property
    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The five index tensors, in the operators' argument order."""
        return (self.crow, self.col, self.crow_t, self.col_t, self.perm_t)


def structure(crow: Tensor, col: Tensor, n_cols: int) -> Structure:
    """The :class:`Structure` of an ``(len(crow) - 1, n_cols)`` CSR pattern (sorted rows)."""
    n_rows = crow.numel() - 1
    nnz = col.numel()
    counts = (crow[1:] - crow[:-1]).to(torch.int64)
    rows = torch.repeat_interleave(torch.arange(n_rows, device=crow.device), counts, output_size=nnz)
    perm_t = torch.argsort(col, stable=True)
    crow_t = compress_rows(col.index_select(0, perm_t).to(torch.int64), n_cols)
    col_t = rows.index_select(0, perm_t)
    return Structure(crow, col, crow_t, col_t, perm_t)


def _rows(crow: Tensor, nnz: int) -> Tensor:
    counts = (crow[1:] - crow[:-1]).to(torch.int64)
    return torch.repeat_interleave(
        torch.arange(crow.numel() - 1, device=crow.device), counts, output_size=nnz
    )


def triangle_mask(crow: Tensor, col: Tensor, upper: bool, unitriangular: bool) -> Tensor:
    """Bool per entry (row-major): inside the triangle a triangular solve reads."""
    rows = _rows(crow, col.numel())
    c = col.to(torch.int64)
    if upper:
        return c > rows if unitriangular else c >= rows
    return c < rows if unitriangular else c <= rows


def _exact(device: torch.device) -> Any:
    """Autocast off: the kernels compute in the dtype of their operands (set by the callers)."""
    return torch.autocast(device.type, enabled=False)


def _csr(crow: Tensor, col: Tensor, values: Tensor, n_cols: int) -> Tensor:
    return quiet(
        lambda: torch.sparse_csr_tensor(crow, col, values, (crow.numel() - 1, n_cols), check_invariants=False)
    )


# ------------------------------------------------------------------------------------------------
# eager kernels
def _mm_impl(
    crow: Tensor,
    col: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    perm_t: Tensor,
    values: Tensor,
    X: Tensor,
    transpose: bool,
) -> Tensor:
    n_rows, n_cols = crow.numel() - 1, crow_t.numel() - 1
    out_rows = n_cols if transpose else n_rows
    if col.numel() == 0:
        return torch.zeros(out_rows, X.shape[-1], dtype=X.dtype, device=X.device)
    if transpose:
        S = _csr(crow_t, col_t, values.index_select(0, perm_t), n_rows)
    else:
        S = _csr(crow, col, values, n_cols)
    with _exact(X.device):
        return quiet(lambda: S @ X.contiguous())


def _sampled_impl(
    crow: Tensor,
    col: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    perm_t: Tensor,
    U: Tensor,
    V: Tensor,
) -> Tensor:
    nnz, p = col.numel(), U.shape[-1]
    if nnz == 0 or p == 0:
        return torch.zeros(nnz, dtype=U.dtype, device=U.device)
    if U.dtype in (torch.float32, torch.float64):
        zeros = torch.zeros(nnz, dtype=U.dtype, device=U.device)
        S = _csr(crow, col, zeros, crow_t.numel() - 1)
        with _exact(U.device):
            out = torch.sparse.sampled_addmm(S, U.contiguous(), V.mT.contiguous(), beta=0.0)
        return out.values().clone()
    rows = _rows(crow, nnz)
    chunk = max(1, (1 << 20) // max(p, 1))
    parts = [
        (U[rows[s : s + chunk]] * V[col[s : s + chunk].to(torch.int64)]).sum(-1) for s in range(0, nnz, chunk)
    ]
    return torch.cat(parts)


def _trisolve_impl(
    crow: Tensor,
    col: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    perm_t: Tensor,
    values: Tensor,
    B: Tensor,
    upper: bool,
    unitriangular: bool,
    transpose: bool,
) -> Tensor:
    from .triangular import csr_triangular_solve

    S = _csr(crow, col, values, crow_t.numel() - 1)
    with _exact(B.device):
        X = csr_triangular_solve(
            S, B.contiguous(), upper=upper, unitriangular=unitriangular, transpose=transpose
        )
    return X.clone()


# ------------------------------------------------------------------------------------------------
# block-diagonal batching (the vmap rules)
def _block(s: Structure, batch: int) -> Structure:
    """The structure of ``batch`` copies of ``s`` along the diagonal (index arithmetic)."""
    n_rows, n_cols, nnz = s.crow.numel() - 1, s.crow_t.numel() - 1, s.col.numel()
    dev = s.crow.device
    itype = s.crow.dtype
    if batch * max(nnz, n_rows, n_cols, 1) >= 2**31 - 1:
        itype = torch.int64
    k = torch.arange(batch, device=dev, dtype=torch.int64)[:, None]

    def pointers(crow: Tensor, dtype: torch.dtype) -> Tensor:
        tail = (crow[1:].to(torch.int64)[None, :] + k * nnz).reshape(-1)
        return torch.cat([torch.zeros(1, dtype=torch.int64, device=dev), tail]).to(dtype)

    crow = pointers(s.crow, itype)
    col = (s.col.to(torch.int64)[None, :] + k * n_cols).reshape(-1).to(itype)
    crow_t = pointers(s.crow_t, torch.int64)
    col_t = (s.col_t[None, :] + k * n_rows).reshape(-1)
    perm_t = (s.perm_t[None, :] + k * nnz).reshape(-1)
    return Structure(crow, col, crow_t, col_t, perm_t)


def _batched(x: Tensor, dim: int | None, batch: int) -> Tensor:
    """``x`` with its vmapped dimension first (expanded when it has none)."""
    with functorch_bug_guard():  # torch 2.5 + forward-over-reverse: a clear error (see _compat)
        if dim is None:
            return x.unsqueeze(0).expand(batch, *x.shape)
        return x.movedim(dim, 0)


def _check_unbatched_structure(name: str, in_dims: Any) -> None:
    if any(d is not None for d in in_dims[:5]):
        raise ValueError(
            f"vmap over {name}: the sparsity pattern (index tensors) must be the same for every "
            "batch item; map over the values and the dense operands only"
        )


# ------------------------------------------------------------------------------------------------
# the custom operators
if HAS_CUSTOM_OP:

    @torch.library.custom_op("tsgu::csr_mm", mutates_args=())
    def _op_mm(
        crow: Tensor,
        col: Tensor,
        crow_t: Tensor,
        col_t: Tensor,
        perm_t: Tensor,
        values: Tensor,
        X: Tensor,
        transpose: bool,
    ) -> Tensor:
        return _mm_impl(crow, col, crow_t, col_t, perm_t, values, X, transpose)

    @_op_mm.register_fake
    def _(crow, col, crow_t, col_t, perm_t, values, X, transpose):  # type: ignore[no-untyped-def]
        rows = (crow_t if transpose else crow).shape[0] - 1
        return X.new_empty(rows, X.shape[-1])

    @torch.library.custom_op("tsgu::csr_sampled", mutates_args=())
    def _op_sampled(
        crow: Tensor, col: Tensor, crow_t: Tensor, col_t: Tensor, perm_t: Tensor, U: Tensor, V: Tensor
    ) -> Tensor:
        return _sampled_impl(crow, col, crow_t, col_t, perm_t, U, V)

    @_op_sampled.register_fake
    def _(crow, col, crow_t, col_t, perm_t, U, V):  # type: ignore[no-untyped-def]
        return U.new_empty(col.shape[0])

    @torch.library.custom_op("tsgu::csr_trisolve", mutates_args=())
    def _op_trisolve(
        crow: Tensor,
        col: Tensor,
        crow_t: Tensor,
        col_t: Tensor,
        perm_t: Tensor,
        values: Tensor,
        B: Tensor,
        upper: bool,
        unitriangular: bool,
        transpose: bool,
    ) -> Tensor:
        return _trisolve_impl(crow, col, crow_t, col_t, perm_t, values, B, upper, unitriangular, transpose)

    @_op_trisolve.register_fake
    def _(crow, col, crow_t, col_t, perm_t, values, B, upper, unitriangular, transpose):  # type: ignore[no-untyped-def]
        return torch.empty_like(B)

    # --- autograd of the operators (what AOTAutograd traces under torch.compile) --------------
    def _setup_mm(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        *idx, values, X, transpose = inputs
        ctx.transpose = transpose
        ctx.save_for_backward(*idx, values, X)

    def _backward_mm(ctx: Any, G: Tensor) -> tuple[Tensor | None, ...]:
        *idx, values, X = ctx.saved_tensors
        s = Structure(*idx)
        dv = dX = None
        if ctx.needs_input_grad[5]:
            dv = _op_sampled(*s.tensors, X, G) if ctx.transpose else _op_sampled(*s.tensors, G, X)
        if ctx.needs_input_grad[6]:
            dX = _op_mm(*s.tensors, values, G, not ctx.transpose)
        return None, None, None, None, None, dv, dX, None

    _op_mm.register_autograd(_backward_mm, setup_context=_setup_mm)

    def _setup_sampled(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)

    def _backward_sampled(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        *idx, U, V = ctx.saved_tensors
        s = Structure(*idx)
        dU = _op_mm(*s.tensors, g, V, False) if ctx.needs_input_grad[5] else None
        dV = _op_mm(*s.tensors, g, U, True) if ctx.needs_input_grad[6] else None
        return None, None, None, None, None, dU, dV

    _op_sampled.register_autograd(_backward_sampled, setup_context=_setup_sampled)

    def _setup_trisolve(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        *idx, values, _B, upper, unitriangular, transpose = inputs
        ctx.flags = (upper, unitriangular, transpose)
        ctx.save_for_backward(*idx, values, output)

    def _backward_trisolve(ctx: Any, G: Tensor) -> tuple[Tensor | None, ...]:
        *idx, values, X = ctx.saved_tensors
        s = Structure(*idx)
        upper, unit, transpose = ctx.flags
        Gb = _op_trisolve(*s.tensors, values, G, upper, unit, not transpose)
        dv = None
        if ctx.needs_input_grad[5]:
            prod = _op_sampled(*s.tensors, X, Gb) if transpose else _op_sampled(*s.tensors, Gb, X)
            dv = -prod * triangle_mask(s.crow, s.col, upper, unit)
        dB = Gb if ctx.needs_input_grad[6] else None
        return None, None, None, None, None, dv, dB, None, None, None

    _op_trisolve.register_autograd(_backward_trisolve, setup_context=_setup_trisolve)

    # --- vmap rules: one block-diagonal problem ------------------------------------------------
    if HAS_REGISTER_VMAP:

        @_op_mm.register_vmap
        def _(info, in_dims, crow, col, crow_t, col_t, perm_t, values, X, transpose):  # type: ignore[no-untyped-def]
            _check_unbatched_structure("tsgu::csr_mm", in_dims)
            b = info.batch_size
            v = _batched(values, in_dims[5], b).reshape(-1)
            Xb = _batched(X, in_dims[6], b)
            Y = _op_mm(
                *_block(Structure(crow, col, crow_t, col_t, perm_t), b).tensors,
                v,
                Xb.reshape(-1, Xb.shape[-1]),
                transpose,
            )
            return Y.reshape(b, -1, Y.shape[-1]), 0

        @_op_sampled.register_vmap
        def _(info, in_dims, crow, col, crow_t, col_t, perm_t, U, V):  # type: ignore[no-untyped-def]
            _check_unbatched_structure("tsgu::csr_sampled", in_dims)
            b = info.batch_size
            Ub, Vb = _batched(U, in_dims[5], b), _batched(V, in_dims[6], b)
            s = _op_sampled(
                *_block(Structure(crow, col, crow_t, col_t, perm_t), b).tensors,
                Ub.reshape(-1, Ub.shape[-1]),
                Vb.reshape(-1, Vb.shape[-1]),
            )
            return s.reshape(b, -1), 0

        @_op_trisolve.register_vmap
        def _(info, in_dims, crow, col, crow_t, col_t, perm_t, values, B, upper, unitriangular, transpose):  # type: ignore[no-untyped-def]
            _check_unbatched_structure("tsgu::csr_trisolve", in_dims)
            b = info.batch_size
            v = _batched(values, in_dims[5], b).reshape(-1)
            Bb = _batched(B, in_dims[6], b)
            X = _op_trisolve(
                *_block(Structure(crow, col, crow_t, col_t, perm_t), b).tensors,
                v,
                Bb.reshape(-1, Bb.shape[-1]),
                upper,
                unitriangular,
                transpose,
            )
            return X.reshape(b, -1, X.shape[-1]), 0

    mm_op: Any = _op_mm
    sampled_op: Any = _op_sampled
    trisolve_op: Any = _op_trisolve
else:  # pragma: no cover - torch < 2.4: eager kernels only (no compile support)
    mm_op, sampled_op, trisolve_op = _mm_impl, _sampled_impl, _trisolve_impl


def _untransformed() -> bool:
    """Whether no ``torch.func`` transform is active: the Functions then call the eager kernels
    directly (a custom operator's first call imports ``torch._dynamo``, about 70 MB, and adds
    dispatcher overhead); under a transform they call the operators, whose vmap rules apply."""
    level = getattr(torch._C._functorch, "maybe_current_level", None)
    return level is not None and level() is None


# ------------------------------------------------------------------------------------------------
# autograd Functions for eager code and torch.func (grad, vjp, jvp, jacrev, jacfwd, hessian, vmap)
class MatmulFn(Function):
    """``Y = S(values) @ X`` (``S(values)ᵀ @ X`` when ``transpose``); ``apply(s, values, X, transpose)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(s: Structure, values: Tensor, X: Tensor, transpose: bool) -> Tensor:  # type: ignore[override]
        fn = _mm_impl if _untransformed() else mm_op
        return fn(*s.tensors, values, X, transpose)  # type: ignore[no-any-return]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        s, values, X, transpose = inputs
        ctx.s, ctx.transpose = s, transpose
        ctx.save_for_backward(values, X)
        ctx.save_for_forward(values, X)

    @staticmethod
    def backward(ctx: Any, G: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        values, X = ctx.saved_tensors
        s, transpose = ctx.s, ctx.transpose
        dv = dX = None
        if ctx.needs_input_grad[1]:
            dv = SampledFn.apply(s, X, G) if transpose else SampledFn.apply(s, G, X)
        if ctx.needs_input_grad[2]:
            dX = MatmulFn.apply(s, values, G, not transpose)
        return None, dv, dX, None

    @staticmethod
    def jvp(ctx: Any, _s: None, t_values: Tensor | None, t_X: Tensor | None, _t: None) -> Tensor:
        values, X = ctx.saved_tensors
        out = None
        if t_values is not None:
            out = MatmulFn.apply(ctx.s, t_values, X, ctx.transpose)
        if t_X is not None:
            term = MatmulFn.apply(ctx.s, values, t_X, ctx.transpose)
            out = term if out is None else out + term
        return out  # type: ignore[return-value]


class SampledFn(Function):
    """``s[k] = U[row_k] · V[col_k]``; ``apply(s, U, V)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(s: Structure, U: Tensor, V: Tensor) -> Tensor:  # type: ignore[override]
        fn = _sampled_impl if _untransformed() else sampled_op
        return fn(*s.tensors, U, V)  # type: ignore[no-any-return]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        s, U, V = inputs
        ctx.s = s
        ctx.save_for_backward(U, V)
        ctx.save_for_forward(U, V)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        U, V = ctx.saved_tensors
        dU = MatmulFn.apply(ctx.s, g, V, False) if ctx.needs_input_grad[1] else None
        dV = MatmulFn.apply(ctx.s, g, U, True) if ctx.needs_input_grad[2] else None
        return None, dU, dV

    @staticmethod
    def jvp(ctx: Any, _s: None, t_U: Tensor | None, t_V: Tensor | None) -> Tensor:
        U, V = ctx.saved_tensors
        out = None
        if t_U is not None:
            out = SampledFn.apply(ctx.s, t_U, V)
        if t_V is not None:
            term = SampledFn.apply(ctx.s, U, t_V)
            out = term if out is None else out + term
        return out  # type: ignore[return-value]


class TriSolveFn(Function):
    """``X = op(S(values))⁻¹ B``; ``apply(s, values, B, upper, unitriangular, transpose)``.

    Entries outside the triangle the solve reads get a zero gradient.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(  # type: ignore[override]
        s: Structure, values: Tensor, B: Tensor, upper: bool, unitriangular: bool, transpose: bool
    ) -> Tensor:
        fn = _trisolve_impl if _untransformed() else trisolve_op
        return fn(*s.tensors, values, B, upper, unitriangular, transpose)  # type: ignore[no-any-return]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        s, values, _B, upper, unitriangular, transpose = inputs
        ctx.s, ctx.flags = s, (upper, unitriangular, transpose)
        ctx.save_for_backward(values, output)
        ctx.save_for_forward(values, output)

    @staticmethod
    def backward(ctx: Any, G: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        values, X = ctx.saved_tensors
        s = ctx.s
        upper, unit, transpose = ctx.flags
        Gb = TriSolveFn.apply(s, values, G, upper, unit, not transpose)
        dv = None
        if ctx.needs_input_grad[1]:
            prod = SampledFn.apply(s, X, Gb) if transpose else SampledFn.apply(s, Gb, X)
            dv = -prod * triangle_mask(s.crow, s.col, upper, unit)
        dB = Gb if ctx.needs_input_grad[2] else None
        return None, dv, dB, None, None, None

    @staticmethod
    def jvp(
        ctx: Any, _s: None, t_values: Tensor | None, t_B: Tensor | None, _u: None, _d: None, _t: None
    ) -> Tensor:
        # d(op(S)⁻¹ B) = op(S)⁻¹ (dB − op(dS) X), dS restricted to the triangle the solve reads.
        values, X = ctx.saved_tensors
        s = ctx.s
        upper, unit, transpose = ctx.flags
        rhs = None
        if t_values is not None:
            dS = t_values * triangle_mask(s.crow, s.col, upper, unit)
            rhs = -MatmulFn.apply(s, dS, X, transpose)
        if t_B is not None:
            rhs = t_B if rhs is None else rhs + t_B
        return TriSolveFn.apply(s, values, rhs, upper, unit, transpose)  # type: ignore[no-any-return]


def _compiling() -> bool:
    """:func:`is_compiling`, answered without importing ``torch._dynamo`` when it is not loaded
    (nothing can be compiling then; importing it costs about 70 MB)."""
    return "torch._dynamo" in sys.modules and is_compiling()


# ------------------------------------------------------------------------------------------------
# entry points: the operators themselves when compiling, the Functions otherwise
def csr_mm(s: Structure, values: Tensor, X: Tensor, transpose: bool = False) -> Tensor:
    """``S(values) @ X`` (or ``S(values)ᵀ @ X``) for a 2-D ``X``; differentiable in both."""
    if HAS_CUSTOM_OP and _compiling():
        return mm_op(*s.tensors, values, X, transpose)  # type: ignore[no-any-return]
    return MatmulFn.apply(s, values, X, transpose)  # type: ignore[no-any-return]


def csr_sampled(s: Structure, U: Tensor, V: Tensor) -> Tensor:
    """``U[row_k] · V[col_k]`` at every entry (row-major order); differentiable in both."""
    if HAS_CUSTOM_OP and _compiling():
        return sampled_op(*s.tensors, U, V)  # type: ignore[no-any-return]
    return SampledFn.apply(s, U, V)  # type: ignore[no-any-return]


def csr_trisolve(
    s: Structure, values: Tensor, B: Tensor, *, upper: bool, unitriangular: bool, transpose: bool
) -> Tensor:
    """``op(S(values))⁻¹ B`` for a triangular pattern and a 2-D ``B``; differentiable in both."""
    if HAS_CUSTOM_OP and _compiling():
        return trisolve_op(*s.tensors, values, B, upper, unitriangular, transpose)  # type: ignore[no-any-return]
    return TriSolveFn.apply(s, values, B, upper, unitriangular, transpose)  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------------
# a black-box linear solve on the values (SparseParameter.solve): torch.func-ready, not compiled
#: ``solver(A, B) -> X`` for a sparse CSR ``A`` (detached) and a dense 2-D ``B``.
BlackBoxSolver = Any


class ValueSolveFn(Function):
    """``X = op(S(values))⁻¹ B`` through a black-box ``solver`` (op: identity or transpose).

    ``apply(s, values, B, solver, transpose)``.  The forward builds the sparse matrix from the
    (plain) values and calls ``solver``; the backward is the implicit derivative (``dB = op(S)⁻ᵀ G``
    by the same Function, ``dv = −sampled(dB, X)``), so derivatives of any order, ``jvp`` and a vmap
    rule (one solve per batch item: the solver is a black box) make it usable by ``torch.func``.
    """

    @staticmethod
    def forward(s: Structure, values: Tensor, B: Tensor, solver: BlackBoxSolver, transpose: bool) -> Tensor:  # type: ignore[override]
        n = s.crow.numel() - 1
        if transpose:
            S = _csr(s.crow_t, s.col_t, values[s.perm_t], n)
        else:
            S = _csr(s.crow, s.col, values, s.crow_t.numel() - 1)
        with torch.no_grad():
            return solver(S, B).to(B.dtype).reshape(B.shape)  # type: ignore[no-any-return]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        s, values, _B, solver, transpose = inputs
        ctx.s, ctx.solver, ctx.transpose = s, solver, transpose
        ctx.save_for_backward(values, output)
        ctx.save_for_forward(values, output)

    @staticmethod
    def backward(ctx: Any, G: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        values, X = ctx.saved_tensors
        s, transpose = ctx.s, ctx.transpose
        Gb = ValueSolveFn.apply(s, values, G, ctx.solver, not transpose)
        dv = None
        if ctx.needs_input_grad[1]:
            dv = -(SampledFn.apply(s, X, Gb) if transpose else SampledFn.apply(s, Gb, X))
        return None, dv, (Gb if ctx.needs_input_grad[2] else None), None, None

    @staticmethod
    def jvp(ctx: Any, _s: None, t_values: Tensor | None, t_B: Tensor | None, _f: None, _t: None) -> Tensor:
        values, X = ctx.saved_tensors
        rhs = None if t_values is None else -MatmulFn.apply(ctx.s, t_values, X, ctx.transpose)
        if t_B is not None:
            rhs = t_B if rhs is None else rhs + t_B
        return ValueSolveFn.apply(ctx.s, values, rhs, ctx.solver, ctx.transpose)  # type: ignore[no-any-return]

    @staticmethod
    def vmap(
        info: Any,
        in_dims: tuple[Any, ...],
        s: Structure,
        values: Tensor,
        B: Tensor,
        solver: BlackBoxSolver,
        transpose: bool,
    ) -> tuple[Tensor, int]:  # type: ignore[override]
        b = info.batch_size
        vs, Bs = _batched(values, in_dims[1], b), _batched(B, in_dims[2], b)
        out = [ValueSolveFn.apply(s, vs[i], Bs[i], solver, transpose) for i in range(b)]
        return torch.stack(out), 0


def eager_under_compile(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: inside ``torch.compile`` the call runs eagerly, as one opaque call (a graph break).

    What ``torch.compiler.disable`` does, except that the wrapper is made on the first call made
    while ``torch._dynamo`` is loaded: decorating with ``torch.compiler.disable`` itself imports
    ``torch._dynamo`` (seconds and about 70 MB) into every program that imports the decorated
    function, compiled or not.  For functions that hand sparse tensors to code dynamo cannot trace.

    Examples
    --------
    >>> from tsgu_ops._library import eager_under_compile
    >>> @eager_under_compile
    ... def twice(x):
    ...     return 2 * x
    >>> twice(3)
    6
    """
    disabled: list[Callable[P, R]] = []

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        if not disabled:
            disabled.append(torch.compiler.disable(fn))
        return disabled[0](*args, **kwargs)

    return wrapper


@eager_under_compile
def value_solve(s: Structure, values: Tensor, B: Tensor, solver: BlackBoxSolver) -> Tensor:
    """Differentiable ``S(values)⁻¹ B`` for a 2-D ``B``; inside ``torch.compile`` a graph break."""
    return ValueSolveFn.apply(s, values, B, solver, False)  # type: ignore[no-any-return]
