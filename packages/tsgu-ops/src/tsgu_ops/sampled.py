"""The sampled product (SDDMM) and the product with a fixed pattern, as differentiable primitives.

Every sparse gradient of this library is a *sampled product*: the values of ``U @ V.T`` at the stored
entries of a matrix, ``s[k] = U[i_k] · V[j_k]``.  Its partner is the product of a matrix with fixed
pattern and variable values with a dense matrix, ``Y = S(v) @ X`` (or ``S(v).T @ X``).  The two are
each other's derivatives:

* ``Y = S(v) X``:   ``dv = sampled(G, X̄)``,   ``dX = S(v̄)ᵀ G``
* ``Yᵀ-form, Y = S(v)ᵀ X``:   ``dv = sampled(X̄, G)``,   ``dX = S(v̄) G``
* ``s = sampled(U, V)``:   ``dU = S(g) V̄``,   ``dV = S(g)ᵀ Ū``

so implementing both as autograd Functions whose backward calls the other gives derivatives of any
order.  The bars are complex conjugates: for complex inputs these are the conjugate (Wirtinger)
gradients that PyTorch's autograd uses (``dA = G Bᴴ``, ``dB = Aᴴ G`` for ``C = A B``); for real
inputs ``conj`` is a no-op.  They work on the flattened (block-diagonal) problem of a
:class:`~tsgu_ops.pattern.SparsePattern`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import Function, once_differentiable  # noqa: F401

from . import _checks
from ._gradients import (  # noqa: F401  (the gradient boundary, re-exported for the packages)
    SparseToValues,
    ValuesToSparse,
    deliver,
    differentiable_values,
    register_use,
    sparse_grad,
)
from .pattern import COMPUTE_DTYPES, SparsePattern, conj


class PatternMatmul(Function):
    """``Y = S(values) @ X`` (``transpose=False``) or ``S(values).T @ X`` on a fixed pattern."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, values: torch.Tensor, X: torch.Tensor, pattern: SparsePattern, transpose: bool
    ) -> torch.Tensor:
        ctx.pattern, ctx.transpose = pattern, transpose
        ctx.save_for_backward(values, X)
        return pattern.matmul(values, X, transpose=transpose)

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        values, X = ctx.saved_tensors
        pattern, transpose = ctx.pattern, ctx.transpose
        d_values = d_X = None
        if ctx.needs_input_grad[0]:
            Xc = conj(X)  # a no-op for real X; the conjugate (Wirtinger) gradient for complex X
            d_values = (
                SampledProduct.apply(Xc, G, pattern) if transpose else SampledProduct.apply(G, Xc, pattern)
            )
        if ctx.needs_input_grad[1]:
            d_X = PatternMatmul.apply(conj(values), G, pattern, not transpose)
        return d_values, d_X, None, None


class SampledProduct(Function):
    """``s[k] = U[rows[k]] · V[cols[k]]`` at the entries of a fixed pattern."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, U: torch.Tensor, V: torch.Tensor, pattern: SparsePattern
    ) -> torch.Tensor:
        ctx.pattern = pattern
        ctx.save_for_backward(U, V)
        return pattern.sampled(U, V)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        U, V = ctx.saved_tensors
        pattern = ctx.pattern
        d_U = d_V = None
        if ctx.needs_input_grad[0]:
            d_U = PatternMatmul.apply(g, conj(V), pattern, False)
        if ctx.needs_input_grad[1]:
            d_V = PatternMatmul.apply(g, conj(U), pattern, True)
        return d_U, d_V, None


def _check_sparse_matrix(name: str, A: Any) -> None:
    _checks.require_tensor(name, A)
    _checks.require_layout(name, A, _checks.SPARSE_LAYOUTS)
    _checks.require_no_dense_dims(name, A)
    if A.dim() not in (2, 3):
        raise ValueError(f"{name} must be 2-D (n, m) or batched 3-D (b, n, m), got shape {tuple(A.shape)}")
    _checks.check_sparse_indices(name, A)


def sampled_product(A: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Values of ``U @ V.mT`` at the stored entries of ``A``, as a sparse tensor like ``A``.

    For every stored entry ``(i, j)`` of ``A`` (per batch item), the result holds
    ``U[..., i, :] · V[..., j, :]``.  Only ``A``'s indices are used, never its values.  This is the
    shape of every sparse gradient of the library (``dA = sampled_product(A, G, B)`` for
    ``C = A @ B``); it runs PyTorch's native sampled kernel where available and otherwise gathers in
    bounded chunks, so memory stays ``O(nnz + (n + m)·p)``.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR pattern, ``(n, m)`` or ``(b, n, m)``; int32 or int64 indices.
    U : Tensor
        Dense ``(n, p)`` (or ``(b, n, p)`` for a batched ``A``); float32, float64, complex64 or
        complex128.  No factor is conjugated: the gradients are the conjugate (Wirtinger)
        gradients of PyTorch's autograd (``dU = S(g) V̄``, ``dV = S(g)ᵀ Ū``).
    V : Tensor
        Dense ``(m, p)`` (or ``(b, m, p)``), same dtype as ``U``.

    Returns
    -------
    Tensor
        Sparse tensor with ``A``'s layout, shape, indices (and their dtype), differentiable with
        respect to ``U`` and ``V`` (to any order).

    Raises
    ------
    TypeError
        If an argument is not a tensor, ``U`` has a dtype other than float32, float64,
        complex64, complex128, or ``U`` and ``V`` differ in dtype.
    ValueError
        If ``A`` is not COO/CSR or has malformed indices, a tensor is on another device (or the
        ``meta`` device), or the shapes do not fit.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import sampled_product
    >>> A = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).to_sparse()
    >>> U = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> sampled_product(A, U, U).to_dense()
    tensor([[ 0., 11.],
            [11.,  0.]])
    """
    _check_sparse_matrix("A", A)
    for name, X, k in (("U", U, -2), ("V", V, -1)):
        _checks.require_tensor(name, X)
        if X.layout != torch.strided:
            raise ValueError(f"{name} must be a dense (strided) tensor, got {X.layout}")
        if X.dim() != A.dim():
            raise ValueError(f"{name} must have {A.dim()} dimensions like A, got shape {tuple(X.shape)}")
        if X.shape[-2] != A.shape[k] or (A.dim() == 3 and X.shape[0] != A.shape[0]):
            raise ValueError(
                f"{name} has shape {tuple(X.shape)}, incompatible with A of shape {tuple(A.shape)}"
            )
    _checks.require_value_dtype("U", U, COMPUTE_DTYPES)
    _checks.require_same_dtype("U", U, "V", V)
    _checks.require_same_device("A", A, "U", U)
    _checks.require_same_device("A", A, "V", V)
    if U.shape[-1] != V.shape[-1]:
        raise ValueError(f"U and V must have the same number of columns, got {U.shape[-1]} and {V.shape[-1]}")
    pattern = SparsePattern(A)
    values = SampledProduct.apply(pattern.flat_rhs(U), pattern.flat_rhs(V), pattern)
    return sparse_grad(pattern, values)


def sparse_values(A: torch.Tensor) -> torch.Tensor:
    """The stored values of ``A`` as a dense tensor whose gradient flows back sparsely.

    ``A._values()`` (COO) and ``A.values()`` give the same numbers, but the gradient of ``A`` that
    results from them is built by PyTorch and may densify; with this function ``A.grad`` has
    ``A``'s layout, indices and index dtype.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR tensor, ``(n, m)`` or ``(b, n, m)``; float32, float64, complex64 or
        complex128 values.

    Raises
    ------
    TypeError
        A non-tensor, or values of another dtype.
    ValueError
        Another layout or rank, malformed indices, or a ``meta`` tensor.

    Returns
    -------
    Tensor
        1-D values in storage order (COO: ``A._values()``; CSR: ``A.values()`` flattened).

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import sparse_values
    >>> A = torch.eye(2).to_sparse_csr().requires_grad_()
    >>> sparse_values(A).sum().backward()
    >>> A.grad.layout, A.grad.values()
    (torch.sparse_csr, tensor([1., 1.]))
    """
    _check_sparse_matrix("A", A)
    _checks.require_value_dtype("A", A, COMPUTE_DTYPES)
    pattern = SparsePattern(A)
    return SparseToValues.apply(A, pattern)  # type: ignore[no-any-return]


def sparse_with_values(like: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A sparse tensor with ``like``'s layout, shape and indices holding ``values``, differentiably.

    Building a CSR tensor with ``torch.sparse_csr_tensor(crow, col, values)`` from values that need
    grad makes PyTorch compute a dense ``n × n`` gradient in the constructor's backward.  This
    constructor maps the sparse gradient straight back to ``values``: memory ``O(nnz)``.

    Parameters
    ----------
    like : Tensor
        Sparse COO or CSR tensor (2-D or batched 3-D) whose indices are reused.
    values : Tensor
        Values in ``like``'s storage order: shape ``(nnz,)`` (COO, or CSR flattened) or, for a
        batched CSR, ``(b, nnz_per_item)``; float32, float64, complex64 or complex128, on
        ``like``'s device.  ``like``'s own values (and their dtype) are not used.

    Raises
    ------
    TypeError
        A non-tensor, or ``values`` of another dtype.
    ValueError
        ``like`` of another layout or rank, with malformed indices or on the ``meta`` device;
        ``values`` of the wrong size, sparse, or on another device.

    Returns
    -------
    Tensor
        The new sparse tensor; its gradient reaches ``values`` with ``O(nnz)`` memory.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import sparse_with_values
    >>> like = torch.eye(3).to_sparse_csr()
    >>> v = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> S = sparse_with_values(like, v)
    >>> (S @ torch.ones(3, 1)).sum().backward()
    >>> v.grad
    tensor([1., 1., 1.])
    """
    _check_sparse_matrix("like", like)
    _checks.require_tensor("values", values)
    _checks.require_value_dtype("values", values, COMPUTE_DTYPES)
    _checks.require_same_device("like", like, "values", values)
    pattern = SparsePattern(like)
    if values.numel() != pattern.nnz or values.layout != torch.strided:
        raise ValueError(
            f"values must be a dense tensor with {pattern.nnz} elements (like's nnz), "
            f"got shape {tuple(values.shape)}"
        )
    return ValuesToSparse.apply(values.reshape(-1), pattern)  # type: ignore[no-any-return]
