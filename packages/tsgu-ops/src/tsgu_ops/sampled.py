"""The sampled product (SDDMM) and the product with a fixed pattern, on values in a pattern's order.

Every sparse gradient of this library is a *sampled product*: the values of ``U @ V.T`` at the stored
entries of a matrix, ``s[k] = U[i_k] · V[j_k]``.  Its partner is the product of a matrix with fixed
pattern and variable values with a dense matrix, ``Y = S(v) @ X`` (or ``S(v).T @ X``).  Both are the
kernels of :mod:`tsgu_ops._kernels` (each other's derivatives, to any order, with the conjugate
(Wirtinger) gradients of PyTorch's autograd for complex values); this module exposes them on values
in a :class:`~tsgu_ops.pattern.SparsePattern`'s *original* order (the input tensor's storage order),
and holds the public :func:`sampled_product`, :func:`sparse_values` and :func:`sparse_with_values`.
"""

from __future__ import annotations

from typing import Any

import torch

from . import _checks, _kernels
from ._compat import autocast_fp32
from ._gradients import SparseToValues, ValuesToSparse, differentiable_values, sparse_grad
from .pattern import COMPUTE_DTYPES, SparsePattern


def pattern_matmul(
    values: torch.Tensor, X: torch.Tensor, pattern: SparsePattern, transpose: bool
) -> torch.Tensor:
    """``S(values) @ X`` (``S(values)ᵀ @ X``) for values in original order and a 2-D ``X``;
    differentiable in both, to any order, under ``torch.func`` too."""
    return _kernels.mm(pattern, pattern._sorted(values), X, transpose)


def pattern_sampled(U: torch.Tensor, V: torch.Tensor, pattern: SparsePattern) -> torch.Tensor:
    """``U[rows[k]] · V[cols[k]]`` per stored entry (original order); differentiable in both."""
    return pattern._unsort(_kernels.sampled(pattern, U, V))


class PatternMatmul:
    """``PatternMatmul.apply(values, X, pattern, transpose)``: :func:`pattern_matmul`.

    The name and call of the autograd Function of earlier releases, kept for the packages of the
    project; the computation is the one product kernel.
    """

    @staticmethod
    def apply(values: torch.Tensor, X: torch.Tensor, pattern: SparsePattern, transpose: bool) -> torch.Tensor:
        return pattern_matmul(values, X, pattern, transpose)


class SampledProduct:
    """``SampledProduct.apply(U, V, pattern)``: :func:`pattern_sampled` (the one sampled kernel)."""

    @staticmethod
    def apply(U: torch.Tensor, V: torch.Tensor, pattern: SparsePattern) -> torch.Tensor:
        return pattern_sampled(U, V, pattern)


def _check_sparse_matrix(name: str, A: Any) -> None:
    _checks.require_tensor(name, A)
    _checks.require_layout(name, A, _checks.SPARSE_LAYOUTS)
    _checks.require_no_dense_dims(name, A)
    if A.dim() not in (2, 3):
        raise ValueError(f"{name} must be 2-D (n, m) or batched 3-D (b, n, m), got shape {tuple(A.shape)}")
    _checks.check_sparse_indices(name, A)


@_kernels.eager_under_compile
@autocast_fp32
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
    with _kernels.plain_sparse():
        _check_sampled_inputs(A, U, V)
    return _sampled_product(A, U, V)


def _check_sampled_inputs(A: Any, U: Any, V: Any) -> None:
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


@_kernels.eager_under_compile  # a sparse tensor in and out: dynamo cannot trace it
def _sampled_product(A: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    with _kernels.plain_sparse():
        pattern = SparsePattern.of(A)
    values = pattern_sampled(pattern.flat_rhs(U), pattern.flat_rhs(V), pattern)
    if _kernels.is_wrapped(values):
        raise_no_sparse_under_transforms("sampled_product")
    return sparse_grad(pattern, values)


def operand_values(A: torch.Tensor, pattern: SparsePattern, name: str) -> torch.Tensor:
    """The values of the sparse operand ``A`` of the public function ``name``, differentiable back
    to ``A`` when it requires grad (see :func:`differentiable_values`).

    Under a ``torch.func`` transform a sparse ``A`` that requires grad cannot take part (PyTorch's
    sparse tensors have no functorch support): a clear error names the supported routes.
    """
    if A.requires_grad and torch.is_grad_enabled() and _kernels.transforms_active():
        raise NotImplementedError(
            f"{name}: a sparse A that requires grad cannot be used under a torch.func transform "
            "(vmap, grad, jacrev, ...): PyTorch's sparse tensors do not take part in them. Transform "
            "with respect to the dense operands with a fixed A (A.detach()), or keep A's pattern in "
            "a tsgu_ops.nn.SparseParameter and pass the values (values=v) to transform with respect "
            "to them"
        )
    with _kernels.plain_sparse():
        return differentiable_values(A, pattern)


def raise_no_sparse_under_transforms(name: str) -> None:
    """The clear error for a sparse tensor made from values under a ``torch.func`` transform."""
    raise NotImplementedError(
        f"{name} cannot build a sparse tensor from values under a torch.func transform (vmap, grad, "
        "jacrev, ...): PyTorch's sparse tensors do not hold functorch-wrapped values. Transform "
        "functions of dense values instead: keep the pattern in a tsgu_ops.nn.SparseParameter and "
        "pass the values as SparseParameter.mm(B, values=v) / .triangular_solve(B, values=v) / "
        ".solve(B, solve, values=v), or apply the operation to a fixed sparse matrix"
    )


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
    if isinstance(values, torch.Tensor) and _kernels.is_wrapped(values):
        raise_no_sparse_under_transforms("sparse_with_values")
    with _kernels.plain_sparse():
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
