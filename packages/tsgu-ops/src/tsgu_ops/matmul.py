"""``sparse_mm``: product of a sparse matrix with a dense one, with a sparse gradient."""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import Function

from . import _checks
from .pattern import COMPUTE_DTYPES, SparsePattern, conj
from .sampled import PatternMatmul, SampledProduct, deliver, differentiable_values, register_use


def check_sparse_dense_pair(A: Any, B: Any, *, allow_shared: bool) -> None:
    """The 0.2.7 validation of ``sparse_mm`` (messages and order kept), plus dtype/device checks."""
    if not isinstance(A, torch.Tensor) or not isinstance(B, torch.Tensor):
        raise ValueError("Both A and B should be instances of torch.Tensor")
    if A.dim() < 2 or B.dim() < 2:
        raise ValueError("Both A and B should be at least 2-dimensional tensors")
    shared = allow_shared and A.dim() == 2 and B.dim() == 3
    if (A.dim() != B.dim() and not shared) or A.dim() not in (2, 3) or B.dim() not in (2, 3):
        raise ValueError("A and B must both be 2D or both be 3D tensors")
    if A.layout not in (torch.sparse_coo, torch.sparse_csr):
        raise ValueError("A should be in either COO or CSR sparse format")
    if B.layout != torch.strided:
        raise ValueError("B must be a dense (strided) tensor")
    _checks.require_no_dense_dims("A", A)
    if A.dim() == 3 and A.size(0) != B.size(0):
        raise ValueError("If batched, A and B must have the same batch size")
    if A.size(-1) != B.size(-2):
        raise ValueError(f"Incompatible inner dimensions: A[..., {A.size(-1)}] vs B[..., {B.size(-2)}]")
    _checks.require_value_dtype("A", A, COMPUTE_DTYPES)
    _checks.require_same_dtype("A", A, "B", B)
    _checks.require_same_device("A", A, "B", B)
    _checks.check_sparse_indices("A", A)


class SparseMatMul(Function):
    """Autograd Function behind :func:`sparse_mm`: ``C = A @ B`` with a sparse ``dA``.

    ``SparseMatMul.apply(A, B)`` takes the same arguments as :func:`sparse_mm` and does no
    validation.  Backward: ``dA = G Bᴴ`` sampled at ``A``'s stored entries (layout, indices and index
    dtype of ``A``), ``dB = Aᴴ G`` (``ᴴ`` is the transpose for real dtypes); each only when
    requested.  The backward is made of
    differentiable operations, so second derivatives (in ``A``, ``B`` and the incoming gradient)
    are exact.  :func:`sparse_mm` itself runs the same computation on ``A``'s values
    (:class:`~tsgu_ops.sampled.PatternMatmul`), so that inside a double backward the gradient of
    ``A`` is accumulated as dense values rather than as sparse tensors (PyTorch's in-place
    addition of batched CSR tensors is unreliable).
    """

    @staticmethod
    def forward(ctx: Any, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        pattern = SparsePattern.of(A)
        ctx.pattern = pattern
        register_use(ctx, A)
        ctx.save_for_backward(A, B)
        out = pattern.matmul(pattern.values(A), pattern.flat_rhs(B))
        return pattern.unflat(out, B, pattern.n)

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        A, B = ctx.saved_tensors
        pattern: SparsePattern = ctx.pattern
        dA = dB = None
        Gf = pattern.flat_rhs(G)
        if ctx.needs_input_grad[0]:
            dvalues = SampledProduct.apply(Gf, conj(pattern.flat_rhs(B)), pattern)
            dA = deliver(ctx, 0, pattern, dvalues, A)
        if ctx.needs_input_grad[1]:
            values = differentiable_values(A, pattern)
            dB = pattern.unflat(PatternMatmul.apply(conj(values), Gf, pattern, True), G, pattern.m)
        return dA, dB


def sparse_mm(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Matrix product ``A @ B`` of a sparse ``A`` and a dense ``B``, with a sparse gradient for ``A``.

    Shapes: ``(n, m) @ (m, p) -> (n, p)``; batched ``(b, n, m) @ (b, m, p) -> (b, n, p)``; and one
    2-D ``A`` shared by a batched ``B``: ``(n, m) @ (b, m, p) -> (b, n, p)``.  A batch is computed
    as one block-diagonal product (index arithmetic, no loop over the batch).

    Gradients: for each stored entry ``(i, j)`` of ``A``, ``dA[i, j] = Σ_k G[i, k] conj(B[j, k])``
    (the sampled product ``G Bᴴ`` at ``A``'s entries; ``conj`` is a no-op for real dtypes, and for
    complex dtypes these are the conjugate gradients PyTorch's autograd uses), returned with
    ``A``'s layout, indices and index dtype (a COO ``A`` keeps its own, possibly uncoalesced,
    index list; a CSR ``A`` keeps ``crow``/``col`` and their int32/int64 dtype); ``dB = Aᴴ G``.
    Each is computed only when requested, and second derivatives are supported.  No ``n × m``
    dense tensor is ever made.

    Parameters
    ----------
    A : Tensor
        Sparse COO (coalesced or not) or CSR matrix, ``(n, m)`` or ``(b, n, m)``; float32,
        float64, complex64 or complex128 values; int32/int64 indices.
    B : Tensor
        Dense (strided) matrix, ``(m, p)`` or ``(b, m, p)``, same dtype and device as ``A``.

    Returns
    -------
    Tensor
        Dense ``(n, p)`` or ``(b, n, p)``.

    Raises
    ------
    ValueError
        With the messages of torchsparsegradutils 0.2.7: non-tensors, rank < 2, ranks not 2-D/3-D,
        ``A`` not COO/CSR, ``B`` not strided, batch sizes or inner dimensions that differ; and
        for malformed indices of ``A`` (out of range, a CSR ``crow`` that decreases or does not end
        at nnz) or a ``meta`` tensor.
    TypeError
        If ``A`` has a dtype other than float32, float64, complex64, complex128, or ``A`` and
        ``B`` have different dtypes (:class:`~tsgu_ops.DtypeMismatchError`, which is also a
        ``RuntimeError`` as in 0.2.7).

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import sparse_mm
    >>> A = torch.tensor([[2.0, 0.0], [0.0, 3.0]]).to_sparse_csr().requires_grad_()
    >>> B = torch.ones(2, 1, requires_grad=True)
    >>> C = sparse_mm(A, B)
    >>> C.sum().backward()
    >>> C.detach().flatten(), A.grad.layout, A.grad.values()
    (tensor([2., 3.]), torch.sparse_csr, tensor([1., 1.]))
    """
    check_sparse_dense_pair(A, B, allow_shared=True)
    pattern = SparsePattern.of(A)
    values = differentiable_values(A, pattern)
    out = PatternMatmul.apply(values, pattern.flat_rhs(B), pattern, False)
    return pattern.unflat(out, B, pattern.n)
