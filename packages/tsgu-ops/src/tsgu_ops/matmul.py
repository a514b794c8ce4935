"""``sparse_mm``: product of a sparse matrix with a dense one, with a sparse gradient."""

from __future__ import annotations

from typing import Any

import torch

from . import _checks, _kernels
from ._compat import autocast_fp32
from .pattern import COMPUTE_DTYPES, SparsePattern
from .sampled import operand_values


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


class SparseMatMul:
    """The 0.2.7 autograd Function behind :func:`sparse_mm`, kept as a thin shim.

    ``SparseMatMul.apply(A, B)`` takes the same arguments as :func:`sparse_mm` and does no
    validation; it runs the same computation (the product kernel on ``A``'s values, with the
    gradients documented there: ``dA = G Bᴴ`` at ``A``'s stored entries, ``dB = Aᴴ G``, to any
    order).
    """

    @staticmethod
    def apply(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return _sparse_mm(A, B)


@_kernels.eager_under_compile  # a sparse tensor: dynamo cannot trace it (a graph break)
def _sparse_mm(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    with _kernels.plain_sparse():
        pattern = SparsePattern.of(A)
    values = pattern._sorted(operand_values(A, pattern, "sparse_mm"))
    out = _kernels.mm(pattern, values, pattern.flat_rhs(B), False)
    return pattern.unflat(out, B, pattern.n)


@_kernels.eager_under_compile
@autocast_fp32
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
    with _kernels.plain_sparse():
        check_sparse_dense_pair(A, B, allow_shared=True)
    return _sparse_mm(A, B)
