"""The value-level kernels of tsgu-ops: one implementation of each, registered once.

Three kernels work on a fixed sparsity pattern given as dense index tensors and a dense vector of
values, so that ``torch.compile``, ``torch.func`` and :class:`tsgu_ops.nn.SparseParameter` never see
a sparse tensor:

* ``tsgu::csr_mm``       ``Y = S(values) @ X`` or ``S(values)ᵀ @ X`` (the product);
* ``tsgu::csr_sampled``  ``s[k] = U[row_k] · V[col_k]`` (the sampled product, SDDMM);
* ``tsgu::csr_trisolve`` ``X = op(S(values))⁻¹ B`` for a triangular ``S``.

The pattern is the tuple :attr:`SparsePattern.kernel_indices <tsgu_ops.pattern.SparsePattern>` of
the flattened ``(N, M)`` matrix in canonical (row-major, one entry per coordinate) order: CSR row
pointers and columns, the CSR indices of ``Sᵀ`` with the permutation from that order to the
row-major one, and the row of every entry (32-bit copies where every index fits: PyTorch's CPU
kernels convert 64-bit indices on every call otherwise).  Values are in the same canonical order.

Each kernel is written once, as a plain function (``*_impl``), and registered once as a
``torch.library.custom_op`` with its fake kernel, its autograd formula (which calls the other
operators, so derivatives of any order exist under ``torch.compile``) and a vmap rule (a batch of
value vectors and operands on one pattern runs as one block-diagonal problem, built by index
arithmetic).  ``torch.library`` autograd has no forward mode, so eager code and ``torch.func``
reach the same kernels through the autograd Functions :class:`MatmulFn`, :class:`SampledFn` and
:class:`TriSolveFn` (``setup_context``, ``jvp``, a generated vmap rule); code being compiled calls
the operators.  Each backward formula is written once (``_mm_grads``, ``_sampled_grads``,
``_trisolve_grads``) and run on the operators or on the Functions.  :func:`mm`, :func:`sampled`
and :func:`trisolve` choose.  :class:`SolveFn` is the implicit derivative of a black-box linear
solve on the same values.

Complex values: every formula uses the conjugate (Wirtinger) gradients of PyTorch's autograd;
the kernels themselves are bilinear and conjugate nothing.  Autocast is disabled inside every
kernel (the sparse kernels have no half-precision implementation): they compute in the dtype of
their operands.  Every torch-version check is :mod:`tsgu_ops._compat`'s.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

import torch
from torch import Tensor
from torch.autograd.function import Function

from ._compat import (
    AUTOCAST_DTYPES,
    HAS_CUSTOM_OP,
    HAS_REGISTER_VMAP,
    functorch_bug_guard,
    is_compiling,
    quiet,
)

P = ParamSpec("P")
R = TypeVar("R")

#: Largest number of elements of a temporary that the sampled product allocates on its gather path
#: (the ``chunk × p`` row blocks of U and V); the product is computed chunk by chunk.
SAMPLED_CHUNK_ELEMENTS = 1 << 20

#: Value dtypes that the products and solves compute with (and the native kernels support on every
#: device): real, and complex with conjugate (Wirtinger) gradients.
COMPUTE_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)

#: ``(crow, col, crow_t, col_t, perm_t, rows)``: see the module docstring.
Indices = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def conj(t: Tensor) -> Tensor:
    """Complex conjugate as a new tensor (differentiable); ``t`` itself for real dtypes.

    ``Tensor.conj()`` returns a lazy view, which fails on views of sparse values and which some
    sparse kernels would read without the conjugation.
    """
    return t.conj_physical() if t.is_complex() else t


def _csr(crow: Tensor, col: Tensor, values: Tensor, n_cols: int) -> Tensor:
    return quiet(
        lambda: torch.sparse_csr_tensor(crow, col, values, (crow.numel() - 1, n_cols), check_invariants=False)
    )


class _NoAutocast:
    """Autocast off for the kernel's device type, only where it is on (entering costs a little)."""

    def __init__(self, device: torch.device) -> None:
        self.ctx: Any = None
        if torch.is_autocast_enabled(device.type):
            self.ctx = torch.autocast(device.type, enabled=False)

    def __enter__(self) -> None:
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


def _like(x: Tensor, values: Tensor) -> Tensor:
    """An operand that autocast made half precision, back in the values' precision."""
    if x.dtype != values.dtype and x.dtype in AUTOCAST_DTYPES:
        return x.to(values.dtype)
    return x


# ------------------------------------------------------------------------------------------------
# the eager kernels (one each)
def mm_impl(
    crow: Tensor,
    col: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    perm_t: Tensor,
    rows: Tensor,
    values: Tensor,
    X: Tensor,
    transpose: bool,
) -> Tensor:
    """``S(values) @ X`` (``S(values)ᵀ @ X``) for a 2-D ``X``; no autograd."""
    n_rows, n_cols = crow.numel() - 1, crow_t.numel() - 1
    out_rows = n_cols if transpose else n_rows
    X = _like(X, values)
    if col.numel() == 0 or X.shape[-1] == 0:
        return torch.zeros(out_rows, X.shape[-1], dtype=X.dtype, device=X.device)
    values, X = values.resolve_conj(), X.resolve_conj()  # the sparse kernels ignore the conj bit
    if transpose:
        S = _csr(crow_t, col_t, values.index_select(0, perm_t), n_rows)
    else:
        S = _csr(crow, col, values, n_cols)
    with _NoAutocast(X.device):
        return quiet(lambda: S @ X)


def sampled_impl(
    crow: Tensor,
    col: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    perm_t: Tensor,
    rows: Tensor,
    U: Tensor,
    V: Tensor,
) -> Tensor:
    """``s[k] = U[rows[k]] · V[col[k]]`` at every entry (canonical order); no autograd.

    One column: two gathers and a product (several times cheaper than the kernel).  Otherwise
    PyTorch's native sampled product where it supports the dtype, else a gather in chunks of at
    most :data:`SAMPLED_CHUNK_ELEMENTS` elements: no ``nnz × p`` temporary is made.
    """
    nnz, p = col.numel(), U.shape[-1]
    dtype = torch.promote_types(U.dtype, V.dtype)
    if nnz == 0 or p == 0:
        return torch.zeros(nnz, dtype=dtype, device=U.device)
    U, V = U.resolve_conj(), V.resolve_conj()
    if p == 1:
        u, v = U.reshape(-1).to(dtype), V.reshape(-1).to(dtype)
        return u.index_select(0, rows).mul_(v.index_select(0, col))
    if U.dtype == V.dtype and U.dtype in COMPUTE_DTYPES:
        zeros = torch.zeros(nnz, dtype=U.dtype, device=U.device)
        S = _csr(crow, col, zeros, crow_t.numel() - 1)
        with _NoAutocast(U.device):
            out = torch.sparse.sampled_addmm(S, U, V.transpose(0, 1), beta=0.0)
        return out.values().clone()  # a tensor of its own (a custom operator may not return a view)
    out = torch.empty(nnz, dtype=dtype, device=U.device)
    chunk = max(1, SAMPLED_CHUNK_ELEMENTS // p)
    for start in range(0, nnz, chunk):
        r, c = rows[start : start + chunk], col[start : start + chunk]
        torch.sum(U[r].to(dtype) * V[c].to(dtype), dim=-1, out=out[start : start + chunk])
    return out


def csr_triangular_solve(
    S: Tensor, B: Tensor, *, upper: bool, unitriangular: bool = False, transpose: bool = False
) -> Tensor:
    """``op(S)⁻¹ B`` for a 2-D CSR triangular ``S`` (sorted columns) and a dense ``(n, p)`` ``B``.

    The bare native kernel, without validation or autograd: what the differentiable solve and
    tsgu-krylov's incomplete-factorisation preconditioners run.
    """
    if S._nnz() == 0:  # no stored entry: the identity, or a zero (singular) diagonal
        return B.clone() if unitriangular else B / torch.zeros((), dtype=B.dtype, device=B.device)
    Bc = B.resolve_conj().contiguous()
    with _NoAutocast(B.device):
        return quiet(
            lambda: (
                torch.triangular_solve(
                    Bc, S, upper=upper, transpose=transpose, unitriangular=unitriangular
                ).solution
            )
        )


def trisolve_impl(
    crow: Tensor,
    col: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    perm_t: Tensor,
    rows: Tensor,
    values: Tensor,
    B: Tensor,
    upper: bool,
    unitriangular: bool,
    transpose: bool,
    unit_crow: Tensor | None,
    unit_col: Tensor | None,
    unit_pos: Tensor | None,
) -> Tensor:
    """``op(S(values))⁻¹ B`` for a 2-D ``B``; no autograd.

    ``unit_*``: the pattern with an explicit diagonal and where the stored entries go in it (see
    :meth:`SparsePattern.unit_diagonal_layout <tsgu_ops.pattern.SparsePattern>`): PyTorch's CSR
    triangular solve is an order of magnitude slower with ``unitriangular=True`` than with stored
    ones, so a unit-triangular solve stores them when the layout is given.
    """
    B = _like(B, values)
    n_cols = crow_t.numel() - 1
    if unitriangular and unit_crow is not None and unit_col is not None and unit_pos is not None:
        v = values.new_ones(unit_col.numel()).index_copy(0, unit_pos, values)
        S = _csr(unit_crow, unit_col, v, n_cols)
        X = csr_triangular_solve(S, B, upper=upper, transpose=transpose)
    else:
        S = _csr(crow, col, values, n_cols)
        X = csr_triangular_solve(S, B, upper=upper, unitriangular=unitriangular, transpose=transpose)
    return X if X.data_ptr() != B.data_ptr() else X.clone()


def triangle_mask(rows: Tensor, col: Tensor, upper: bool) -> Tensor:
    """Bool per entry (canonical order): inside the triangle that a triangular solve reads."""
    c = col.to(rows.dtype)
    return c >= rows if upper else c <= rows


# ------------------------------------------------------------------------------------------------
# block-diagonal batching (the vmap rules): index arithmetic, no loop over the batch
def block_indices(idx: Indices, batch: int) -> Indices:
    """The kernel indices of ``batch`` copies of a pattern along the diagonal."""
    crow, col, crow_t, col_t, perm_t, rows = idx
    n_rows, n_cols, nnz = crow.numel() - 1, crow_t.numel() - 1, col.numel()
    dev = crow.device
    big = batch * max(nnz, n_rows, n_cols, 1) >= 2**31 - 1
    k = torch.arange(batch, device=dev, dtype=torch.int64)[:, None]

    def pointers(p: Tensor) -> Tensor:
        tail = (p[1:].to(torch.int64)[None, :] + k * nnz).reshape(-1)
        out = torch.cat([torch.zeros(1, dtype=torch.int64, device=dev), tail])
        return out if big else out.to(p.dtype)

    def offset(t: Tensor, step: int) -> Tensor:
        out = (t.to(torch.int64)[None, :] + k * step).reshape(-1)
        return out if big else out.to(t.dtype)

    return (
        pointers(crow),
        offset(col, n_cols),
        pointers(crow_t),
        offset(col_t, n_rows),
        offset(perm_t, nnz),
        offset(rows, n_rows),
    )


def _batched(x: Tensor, dim: int | None, batch: int) -> Tensor:
    """``x`` with its vmapped dimension first (expanded when it has none)."""
    with functorch_bug_guard():  # torch 2.5 + forward-over-reverse: a clear error (see _compat)
        if dim is None:
            return x.unsqueeze(0).expand(batch, *x.shape)
        return x.movedim(dim, 0)


def _check_unbatched_indices(name: str, in_dims: Any, count: int = 6) -> None:
    if any(d is not None for d in in_dims[:count]):
        raise ValueError(
            f"vmap over {name}: the sparsity pattern (index tensors) must be the same for every "
            "batch item; map over the values and the dense operands only"
        )


# ------------------------------------------------------------------------------------------------
# the derivatives, written once: ``k`` runs the kernels on one pattern, as the custom operators
# (:class:`_Operators`, the operators' own autograd) or as the autograd Functions
# (:class:`_Functions`, eager code and torch.func), so derivatives of any order exist either way
def _mm_grads(
    k: Any, values: Tensor, X: Tensor, G: Tensor, transpose: bool, need_values: bool, need_X: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Of ``Y = op(S(values)) X``: ``dv = sampled(G, X̄)`` (``sampled(X̄, G)`` when transposed)
    and ``dX = op(S(v̄))ᵀ G``."""
    dv = dX = None
    if need_values:
        Xc = conj(X)
        dv = k.sampled(Xc, G) if transpose else k.sampled(G, Xc)
    if need_X:
        dX = k.mm(conj(values), G, not transpose)
    return dv, dX


def _sampled_grads(
    k: Any, U: Tensor, V: Tensor, g: Tensor, need_U: bool, need_V: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Of ``s = sampled(U, V)``: ``dU = S(g) V̄`` and ``dV = S(g)ᵀ Ū``."""
    dU = k.mm(g, conj(V), False) if need_U else None
    dV = k.mm(g, conj(U), True) if need_V else None
    return dU, dV


def _trisolve_grads(
    k: Any, values: Tensor, X: Tensor, G: Tensor, flags: Any, need_values: bool, need_B: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Of ``X = op(S(values))⁻¹ B``: ``dB = Gb = op(S)⁻ᴴ G`` (the solve with ``conj(S)`` and the
    other transpose flag) and ``dv = −sampled(Gb, X̄)`` (``−sampled(X̄, Gb)`` when transposed),
    zero outside the triangle the solve reads."""
    upper, unit, transpose = flags
    Gb = k.trisolve(conj(values), G, upper, unit, not transpose)
    dv = None
    if need_values:
        Xc = conj(X)
        prod = k.sampled(Xc, Gb) if transpose else k.sampled(Gb, Xc)
        dv = -prod * k.mask(upper)
    return dv, Gb if need_B else None


class _Operators:
    """The kernels on kernel indices ``idx`` as the custom operators (``unit``: the stored-ones
    layout that the triangular solve passes on, or ``None``s)."""

    def __init__(self, idx: Any, unit: Any = (None, None, None)) -> None:
        self.idx, self.unit = idx, unit

    def mm(self, values: Tensor, X: Tensor, transpose: bool) -> Tensor:
        return mm_op(*self.idx, values, X, transpose)  # type: ignore[no-any-return]

    def sampled(self, U: Tensor, V: Tensor) -> Tensor:
        return sampled_op(*self.idx, U, V)  # type: ignore[no-any-return]

    def trisolve(self, values: Tensor, B: Tensor, upper: bool, unit: bool, transpose: bool) -> Tensor:
        return trisolve_op(*self.idx, values, B, upper, unit, transpose, *self.unit)  # type: ignore[no-any-return]

    def mask(self, upper: bool) -> Tensor:
        return triangle_mask(self.idx[5], self.idx[1], upper)


class _Functions:
    """The kernels on a pattern as the autograd Functions :class:`MatmulFn`, :class:`SampledFn`
    and :class:`TriSolveFn`."""

    def __init__(self, pattern: Any) -> None:
        self.pattern = pattern

    def mm(self, values: Tensor, X: Tensor, transpose: bool) -> Tensor:
        return MatmulFn.apply(self.pattern, values, X, transpose)  # type: ignore[no-any-return]

    def sampled(self, U: Tensor, V: Tensor) -> Tensor:
        return SampledFn.apply(self.pattern, U, V)  # type: ignore[no-any-return]

    def trisolve(self, values: Tensor, B: Tensor, upper: bool, unit: bool, transpose: bool) -> Tensor:
        return TriSolveFn.apply(self.pattern, values, B, upper, unit, transpose)  # type: ignore[no-any-return]

    def mask(self, upper: bool) -> Tensor:
        idx = self.pattern.kernel_indices
        return triangle_mask(idx[5], idx[1], upper)


def _blocks(name: str, info: Any, in_dims: Any, args: tuple[Any, ...]) -> tuple[int, Indices, Tensor, Tensor]:
    """A vmap rule's one block-diagonal problem: the batch size, the kernel indices of the batch's
    copies of the pattern along the diagonal, and the two dense operands (``args[6]``,
    ``args[7]``) stacked to match (values end to end, matrix rows below each other)."""
    _check_unbatched_indices(name, in_dims)
    b = info.batch_size
    first, second = (_batched(x, d, b).flatten(0, 1) for x, d in zip(args[6:8], in_dims[6:8]))
    return b, block_indices(tuple(args[:6]), b), first, second  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# the custom operators: the eager kernels registered as they are, with their fake kernels,
# autograd (what AOTAutograd traces under torch.compile) and vmap rules
if HAS_CUSTOM_OP:
    _op_mm = torch.library.custom_op("tsgu::csr_mm", mm_impl, mutates_args=())
    _op_sampled = torch.library.custom_op("tsgu::csr_sampled", sampled_impl, mutates_args=())
    _op_trisolve = torch.library.custom_op("tsgu::csr_trisolve", trisolve_impl, mutates_args=())

    @_op_mm.register_fake
    def _(crow, col, crow_t, col_t, perm_t, rows, values, X, transpose):  # type: ignore[no-untyped-def]
        n = (crow_t if transpose else crow).shape[0] - 1
        return X.new_empty(n, X.shape[-1], dtype=values.dtype if X.dtype in AUTOCAST_DTYPES else X.dtype)

    @_op_sampled.register_fake
    def _(crow, col, crow_t, col_t, perm_t, rows, U, V):  # type: ignore[no-untyped-def]
        return U.new_empty(col.shape[0], dtype=torch.promote_types(U.dtype, V.dtype))

    @_op_trisolve.register_fake
    def _(crow, col, crow_t, col_t, perm_t, rows, values, B, upper, unitriangular, transpose, uc, ucol, up):  # type: ignore[no-untyped-def]
        return torch.empty_like(B, dtype=values.dtype if B.dtype in AUTOCAST_DTYPES else B.dtype)

    def _setup_mm(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.transpose = inputs[8]
        ctx.save_for_backward(*inputs[:8])

    def _backward_mm(ctx: Any, G: Tensor) -> tuple[Tensor | None, ...]:
        *idx, values, X = ctx.saved_tensors
        grads = _mm_grads(_Operators(idx), values, X, G, ctx.transpose, *ctx.needs_input_grad[6:8])
        return (None,) * 6 + grads + (None,)

    _op_mm.register_autograd(_backward_mm, setup_context=_setup_mm)

    def _setup_sampled(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)

    def _backward_sampled(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        *idx, U, V = ctx.saved_tensors
        return (None,) * 6 + _sampled_grads(_Operators(idx), U, V, g, *ctx.needs_input_grad[6:8])

    _op_sampled.register_autograd(_backward_sampled, setup_context=_setup_sampled)

    def _setup_trisolve(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.flags = inputs[8:11]
        ctx.unit = inputs[11:14]
        ctx.save_for_backward(*inputs[:7], output)

    def _backward_trisolve(ctx: Any, G: Tensor) -> tuple[Tensor | None, ...]:
        *idx, values, X = ctx.saved_tensors
        k = _Operators(idx, ctx.unit)
        grads = _trisolve_grads(k, values, X, G, ctx.flags, *ctx.needs_input_grad[6:8])
        return (None,) * 6 + grads + (None,) * 6

    _op_trisolve.register_autograd(_backward_trisolve, setup_context=_setup_trisolve)

    # --- vmap rules: one block-diagonal problem ------------------------------------------------
    if HAS_REGISTER_VMAP:

        @_op_mm.register_vmap
        def _(info, in_dims, *args):  # type: ignore[no-untyped-def]
            b, idx, v, X = _blocks("tsgu::csr_mm", info, in_dims, args)
            Y = _op_mm(*idx, v, X, args[8])
            return Y.reshape(b, -1, Y.shape[-1]), 0

        @_op_sampled.register_vmap
        def _(info, in_dims, *args):  # type: ignore[no-untyped-def]
            b, idx, U, V = _blocks("tsgu::csr_sampled", info, in_dims, args)
            return _op_sampled(*idx, U, V).reshape(b, -1), 0

        @_op_trisolve.register_vmap
        def _(info, in_dims, *args):  # type: ignore[no-untyped-def]
            b, idx, v, B = _blocks("tsgu::csr_trisolve", info, in_dims, args)
            # the block problem without the stored-ones layout (it is per pattern, not per block)
            X = _op_trisolve(*idx, v, B, *args[8:11], None, None, None)
            return X.reshape(b, -1, X.shape[-1]), 0

    mm_op: Any = _op_mm
    sampled_op: Any = _op_sampled
    trisolve_op: Any = _op_trisolve
else:  # pragma: no cover - torch < 2.4: eager kernels only (no compile support)
    mm_op, sampled_op, trisolve_op = mm_impl, sampled_impl, trisolve_impl


def _untransformed() -> bool:
    """Whether no ``torch.func`` transform is active: the Functions then call the eager kernels
    directly (a custom operator's first call imports ``torch._dynamo``, about 70 MB, and adds
    dispatcher overhead); under a transform they call the operators, whose vmap rules apply."""
    level = getattr(torch._C._functorch, "maybe_current_level", None)
    return level is not None and level() is None


def transforms_active() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, jvp, ...) is being applied."""
    return not _untransformed()


def plain_sparse() -> Any:
    """Context for the code that reads a sparse operand (validation, index analysis, values):
    with a ``torch.func`` transform active, functorch is disabled inside, since its layers cannot
    handle sparse tensors (even ``A.dense_dim()`` of a fixed sparse ``A`` fails under ``grad``).
    The dense operands stay visible with their logical (per-example) shapes."""
    return torch._C._DisableFuncTorch() if transforms_active() else contextlib.nullcontext()


def is_wrapped(t: Tensor) -> bool:
    """Whether ``t`` is a functorch-wrapped tensor (a transform's batched or tracking tensor)."""
    check = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(check(t)) if check is not None and transforms_active() else False


def _compiling() -> bool:
    """:func:`is_compiling`, answered without importing ``torch._dynamo`` when it is not loaded
    (nothing can be compiling then; importing it costs about 70 MB)."""
    return "torch._dynamo" in sys.modules and is_compiling()


# ------------------------------------------------------------------------------------------------
# autograd Functions for eager code and torch.func (grad, vjp, jvp, jacrev, jacfwd, hessian, vmap)
# ``pattern`` is any object with ``kernel_indices`` (a SparsePattern): not a pytree, so torch.func
# passes it through its transforms untouched.
def _eager_or_op(impl: Any, op: Any) -> Any:
    """What a Function's forward runs: the eager kernel, or under a ``torch.func`` transform the
    operator (whose vmap rule applies)."""
    return impl if _untransformed() else op


def _keep(ctx: Any, pattern: Any, flags: tuple[Any, ...], a: Tensor, b: Tensor) -> None:
    """What a Function's backward and jvp need: the pattern, its flags and two tensors."""
    ctx.pattern, ctx.flags = pattern, flags
    ctx.save_for_backward(a, b)
    ctx.save_for_forward(a, b)


class MatmulFn(Function):
    """``Y = S(values) @ X`` (``S(values)ᵀ @ X`` when ``transpose``).

    ``apply(pattern, values, X, transpose)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(pattern: Any, values: Tensor, X: Tensor, transpose: bool) -> Tensor:  # type: ignore[override]
        return _eager_or_op(mm_impl, mm_op)(*pattern.kernel_indices, values, X, transpose)  # type: ignore[no-any-return]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        pattern, values, X, transpose = inputs
        _keep(ctx, pattern, (transpose,), values, X)

    @staticmethod
    def backward(ctx: Any, G: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        values, X = ctx.saved_tensors
        k, (transpose,) = _Functions(ctx.pattern), ctx.flags
        return (None, *_mm_grads(k, values, X, G, transpose, *ctx.needs_input_grad[1:3]), None)

    @staticmethod
    def jvp(ctx: Any, _p: None, t_values: Tensor | None, t_X: Tensor | None, _t: None) -> Tensor:
        values, X = ctx.saved_tensors
        (transpose,) = ctx.flags
        out = None
        if t_values is not None:
            out = MatmulFn.apply(ctx.pattern, t_values, X, transpose)
        if t_X is not None:
            term = MatmulFn.apply(ctx.pattern, values, t_X, transpose)
            out = term if out is None else out + term
        return out  # type: ignore[return-value]


class SampledFn(Function):
    """``s[k] = U[row_k] · V[col_k]`` (canonical order); ``apply(pattern, U, V)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(pattern: Any, U: Tensor, V: Tensor) -> Tensor:  # type: ignore[override]
        return _eager_or_op(sampled_impl, sampled_op)(*pattern.kernel_indices, U, V)  # type: ignore[no-any-return]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        pattern, U, V = inputs
        _keep(ctx, pattern, (), U, V)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        U, V = ctx.saved_tensors
        return (None, *_sampled_grads(_Functions(ctx.pattern), U, V, g, *ctx.needs_input_grad[1:3]))

    @staticmethod
    def jvp(ctx: Any, _p: None, t_U: Tensor | None, t_V: Tensor | None) -> Tensor:
        U, V = ctx.saved_tensors
        out = None
        if t_U is not None:
            out = SampledFn.apply(ctx.pattern, t_U, V)
        if t_V is not None:
            term = SampledFn.apply(ctx.pattern, U, t_V)
            out = term if out is None else out + term
        return out  # type: ignore[return-value]


def _unit_layout(pattern: Any, upper: bool, unitriangular: bool) -> tuple[Any, Any, Any]:
    if not unitriangular:
        return (None, None, None)
    layout = pattern.unit_diagonal_layout(upper)
    return (None, None, None) if layout is None else layout


class TriSolveFn(Function):
    """``X = op(S(values))⁻¹ B``; ``apply(pattern, values, B, upper, unitriangular, transpose)``.

    Entries outside the triangle the solve reads get a zero gradient.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(  # type: ignore[override]
        pattern: Any, values: Tensor, B: Tensor, upper: bool, unitriangular: bool, transpose: bool
    ) -> Tensor:
        unit = _unit_layout(pattern, upper, unitriangular)
        fn = _eager_or_op(trisolve_impl, trisolve_op)
        return fn(*pattern.kernel_indices, values, B, upper, unitriangular, transpose, *unit)  # type: ignore[no-any-return]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        pattern, values, _B, upper, unitriangular, transpose = inputs
        _keep(ctx, pattern, (upper, unitriangular, transpose), values, output)

    @staticmethod
    def backward(ctx: Any, G: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        values, X = ctx.saved_tensors
        grads = _trisolve_grads(_Functions(ctx.pattern), values, X, G, ctx.flags, *ctx.needs_input_grad[1:3])
        return (None, *grads, None, None, None)

    @staticmethod
    def jvp(
        ctx: Any, _p: None, t_values: Tensor | None, t_B: Tensor | None, _u: None, _d: None, _t: None
    ) -> Tensor:
        # d(op(S)⁻¹ B) = op(S)⁻¹ (dB − op(dS) X), dS restricted to the triangle the solve reads.
        values, X = ctx.saved_tensors
        pattern = ctx.pattern
        upper, unit, transpose = ctx.flags
        rhs = None
        if t_values is not None:
            rhs = -MatmulFn.apply(pattern, t_values * _Functions(pattern).mask(upper), X, transpose)
        if t_B is not None:
            rhs = t_B if rhs is None else rhs + t_B
        return TriSolveFn.apply(pattern, values, rhs, upper, unit, transpose)  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------------
# entry points: the operators themselves when compiling, the Functions otherwise, and the bare
# kernel when nothing can differentiate the call (a Function with ``setup_context`` binds its
# arguments with ``inspect.signature`` on every call: tens of microseconds of a forward pass)
def _plain(a: Tensor, b: Tensor) -> bool:
    """Whether no derivative of this call can be asked for: no grad needed, no transform, no
    forward-mode dual level open."""
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return False
    if getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0:
        return False
    return _untransformed()


def _route(
    op: Any, impl: Any, fn: Any, pattern: Any, a: Tensor, b: Tensor, flags: tuple[bool, ...], unit: Any = ()
) -> Tensor:
    """``op``, ``impl`` or ``fn.apply`` on the pattern, the two operands and the flags (``unit``:
    the stored-ones layout, passed to the kernels only; the Function finds it itself)."""
    if HAS_CUSTOM_OP and _compiling():
        return op(*pattern.kernel_indices, a, b, *flags, *unit)  # type: ignore[no-any-return]
    if _plain(a, b):
        idx: Indices = pattern.kernel_indices
        return impl(*idx, a, b, *flags, *unit)  # type: ignore[no-any-return]
    return fn.apply(pattern, a, b, *flags)  # type: ignore[no-any-return]


def mm(pattern: Any, values: Tensor, X: Tensor, transpose: bool = False) -> Tensor:
    """``S(values) @ X`` (or ``S(values)ᵀ @ X``) for a 2-D ``X``; differentiable in both."""
    return _route(mm_op, mm_impl, MatmulFn, pattern, values, X, (transpose,))


def sampled(pattern: Any, U: Tensor, V: Tensor) -> Tensor:
    """``U[row_k] · V[col_k]`` at every entry (canonical order); differentiable in both."""
    return _route(sampled_op, sampled_impl, SampledFn, pattern, U, V, ())


def trisolve(
    pattern: Any, values: Tensor, B: Tensor, *, upper: bool, unitriangular: bool, transpose: bool
) -> Tensor:
    """``op(S(values))⁻¹ B`` for a triangular pattern and a 2-D ``B``; differentiable in both."""
    flags, unit = (upper, unitriangular, transpose), _unit_layout(pattern, upper, unitriangular)
    return _route(trisolve_op, trisolve_impl, TriSolveFn, pattern, values, B, flags, unit)


# ------------------------------------------------------------------------------------------------
# the implicit derivative of a black-box linear solve on the values
#: ``kernel(A, values, B, transposed) -> X``: ``A`` is what the caller passed as ``source``
#: (the detached sparse matrix, or ``None``), ``values`` the stored values in the pattern's
#: original order (detached), ``B`` a right-hand side shaped like the caller's.
Kernel = Callable[[Any, Tensor, Tensor, bool], Tensor]


class Source:
    """Holds the sparse matrix a black-box kernel receives, out of sight of ``torch.func``
    (which would try to wrap a sparse tensor input and fail)."""

    def __init__(self, A: Tensor | None) -> None:
        self.A = A


class SolveFn(Function):
    """``X = op(A)⁻¹ B`` as a function of ``A``'s values (original order) through a black-box kernel.

    ``apply(values, B, source, pattern, kernel, transposed, mask)``; ``op`` is ``A`` or ``Aᵀ``.
    Backward: ``dB = op(A)⁻ᴴ G`` by the same Function with the flag flipped (so derivatives of any
    order exist) and ``dv = −sampled(dB, X̄)`` (``−sampled(X̄, dB)`` when transposed), zero where
    ``mask`` is false.  ``jvp`` and a vmap rule (one solve per batch item: the kernel is a black
    box) make it usable by ``torch.func``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        values: Tensor,
        B: Tensor,
        source: Source,
        pattern: Any,
        kernel: Kernel,
        transposed: bool,
        mask: Tensor | None,
    ) -> Tensor:
        with torch.no_grad():
            return kernel(source.A, values.detach(), B.detach(), transposed)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        values, _B, source, pattern, kernel, transposed, mask = inputs
        ctx.source, ctx.pattern, ctx.kernel, ctx.transposed, ctx.mask = (
            source,
            pattern,
            kernel,
            transposed,
            mask,
        )
        ctx.save_for_backward(values, output)
        ctx.save_for_forward(values, output)

    @staticmethod
    def backward(ctx: Any, G: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        values, X = ctx.saved_tensors
        # op(A)⁻ᴴ G = conj(op(A)⁻ᵀ conj(G)): conj is a no-op for real dtypes
        Gb = conj(
            SolveFn.apply(values, conj(G), ctx.source, ctx.pattern, ctx.kernel, not ctx.transposed, ctx.mask)
        )
        dv = None
        if ctx.needs_input_grad[0]:
            dv = solve_grad_values(ctx.pattern, Gb, X, ctx.transposed, ctx.mask)
        dB = Gb if ctx.needs_input_grad[1] else None
        return dv, dB, None, None, None, None, None

    @staticmethod
    def jvp(ctx: Any, t_values: Tensor | None, t_B: Tensor | None, *_: Any) -> Tensor:
        # dX = op(A)⁻¹ (dB − op(dA) X)
        values, X = ctx.saved_tensors
        pattern = ctx.pattern
        rhs = None
        if t_values is not None:
            t = t_values if ctx.mask is None else t_values * ctx.mask
            Y = mm(pattern, pattern._sorted(t), pattern.flat_rhs(X), ctx.transposed)
            rhs = -pattern.unflat(Y, X, pattern.n)
        if t_B is not None:
            rhs = t_B if rhs is None else rhs + t_B
        return SolveFn.apply(values, rhs, ctx.source, pattern, ctx.kernel, ctx.transposed, ctx.mask)  # type: ignore[no-any-return]

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[Any, ...], values: Tensor, B: Tensor, source: Source, *rest: Any
    ) -> tuple[Tensor, int]:
        # ``rest``: the pattern, kernel, flag and mask, the same for every item
        b = info.batch_size
        if in_dims[0] is not None and source.A is not None:
            raise ValueError(
                "vmap over the values of a black-box solve that receives the sparse matrix: pass the "
                "values to the kernel instead (SparseParameter.solve does)"
            )
        vs, Bs = _batched(values, in_dims[0], b), _batched(B, in_dims[1], b)
        out = [SolveFn.apply(vs[i], Bs[i], source, *rest) for i in range(b)]
        return torch.stack(out), 0


# torch.autograd.Function.apply binds its arguments to ``forward``'s signature on every call of a
# Function with ``setup_context`` (to fill in defaults), and inspect.signature recomputes it each
# time (about 55 µs, three times per triangular solve forward + backward).  The signature never
# changes: give it once, where inspect.signature looks first.
for _fn in (MatmulFn, SampledFn, TriSolveFn, SolveFn):
    _fn.forward.__signature__ = inspect.signature(_fn.forward)  # type: ignore[union-attr]
del _fn


def solve_grad_values(
    pattern: Any, Gb: Tensor, X: Tensor, transposed: bool, mask: Tensor | None = None
) -> Tensor:
    """``dA`` of a linear solve at the stored entries (values in the pattern's original order).

    ``Gb`` is the gradient of the right-hand side (the transposed solve of the upstream gradient)
    and ``X`` the solution, both shaped like the right-hand side.  ``mask`` (bool, per entry)
    zeroes entries that the forward solve did not read.
    """
    U, V = pattern.flat_rhs(Gb), conj(pattern.flat_rhs(X))
    s = sampled(pattern, V, U) if transposed else sampled(pattern, U, V)
    values = -pattern._unsort(s)
    if mask is not None:
        values = values * mask
    return values


#: What a graph break at a public op that takes a sparse tensor tells the user (``{name}`` is the op).
SPARSE_GRAPH_BREAK = (
    "{name} takes a sparse tensor, and torch.compile cannot trace sparse tensors (dynamo does not "
    "wrap them): the call runs eagerly, as a graph break, which fullgraph=True forbids. For "
    "fullgraph=True, make a tsgu_ops.nn.SparseParameter of the matrix outside the compiled function "
    "(SparseParameter(A, requires_grad=False) for a constant matrix) and call its .mm(B) or "
    ".triangular_solve(B) inside; their values= argument takes values computed in the graph"
)


#: ``torch._dynamo.graph_break`` takes a message (torch 2.8 and later; before, the break has none).
_GRAPH_BREAK_TAKES_MSG = torch.torch_version.TorchVersion(torch.__version__) >= "2.8"


def _disable(fn: Callable[P, R], reason: str) -> Callable[P, R]:
    try:
        return torch.compiler.disable(fn, reason=reason)
    except TypeError:  # torch < 2.7: no reason
        return torch.compiler.disable(fn)


@overload
def eager_under_compile(fn: Callable[P, R], *, reason: str | None = None) -> Callable[P, R]: ...


@overload
def eager_under_compile(
    fn: None = None, *, reason: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def eager_under_compile(fn: Any = None, *, reason: str | None = None) -> Any:
    """Decorator: inside ``torch.compile`` the call runs eagerly, as one opaque call (a graph break).

    What ``torch.compiler.disable`` does, except that the wrapper is made on the first call made
    while ``torch._dynamo`` is loaded: decorating with ``torch.compiler.disable`` itself imports
    ``torch._dynamo`` (seconds and about 70 MB) into every program that imports the decorated
    function, compiled or not.  For functions that hand sparse tensors to code dynamo cannot trace.

    ``reason`` is what ``fullgraph=True`` reports at the graph break (default: the sparse-tensor
    message :data:`SPARSE_GRAPH_BREAK` naming the function and the supported route), also when
    the first call of the function is the one being traced.

    Examples
    --------
    >>> from tsgu_ops.internal import eager_under_compile
    >>> @eager_under_compile
    ... def twice(x):
    ...     return 2 * x
    >>> twice(3)
    6
    >>> @eager_under_compile(reason="thrice runs eagerly")
    ... def thrice(x):
    ...     return 3 * x
    >>> thrice(3)
    9
    """
    if fn is None:
        return functools.partial(eager_under_compile, reason=reason)
    module = fn.__module__.split(".")[0]
    message = reason or SPARSE_GRAPH_BREAK.format(name=f"{module}.{fn.__name__.lstrip('_')}")
    disabled: list[Callable[..., Any]] = []

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        if not disabled:
            if torch.compiler.is_compiling():
                # dynamo is tracing the first call: break here with the message (making the
                # disabled wrapper is itself a call dynamo refuses, with an unhelpful message)
                if _GRAPH_BREAK_TAKES_MSG:
                    torch._dynamo.graph_break(msg=message)
                else:  # pragma: no cover - old torch
                    torch._dynamo.graph_break()
            disabled.append(_disable(fn, message))
        return disabled[0](*args, **kwargs)

    return wrapper
