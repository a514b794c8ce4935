"""``sparse_triangular_solve``: triangular solves with a sparse matrix and a sparse gradient."""

from __future__ import annotations

from typing import Any

import torch

from . import _checks, _kernels
from ._compat import autocast_fp32
from ._kernels import csr_triangular_solve  # noqa: F401  (tsgu-krylov's preconditioners use it)
from .pattern import COMPUTE_DTYPES, SparsePattern
from .sampled import operand_values


def _check(A: Any, B: Any) -> None:
    """The 0.2.7 validation of ``sparse_triangular_solve`` (messages and order kept)."""
    if not isinstance(A, torch.Tensor) or not isinstance(B, torch.Tensor):
        raise ValueError("Both A and B should be instances of torch.Tensor")
    if A.dim() < 2 or B.dim() < 2:
        raise ValueError("Both A and B should be at least 2-dimensional tensors")
    if A.dim() != B.dim() or A.dim() not in (2, 3):
        raise ValueError("A and B must both be 2D or both be 3D tensors")
    if A.layout not in (torch.sparse_coo, torch.sparse_csr):
        raise ValueError("A should be in either COO or CSR sparse format")
    if B.layout != torch.strided:
        raise ValueError("B must be a dense (strided) tensor")
    if A.size(-1) != A.size(-2):
        raise ValueError("A must be square on its last two dimensions")
    if A.size(-2) != B.size(-2):
        raise ValueError(f"Incompatible inner dimensions: A[..., {A.size(-1)}] vs B[..., {B.size(-2)}]")
    if A.dim() == 3 and A.size(0) != B.size(0):
        raise ValueError("If batched, A and B must have the same batch size")
    _checks.require_no_dense_dims("A", A)
    _checks.require_value_dtype("A", A, COMPUTE_DTYPES)
    _checks.require_same_dtype("A", A, "B", B)
    _checks.require_same_device("A", A, "B", B)
    _checks.check_sparse_indices("A", A)


STRICT_MESSAGE = "First input should be strictly triangular (i.e. unit diagonals is implicit)"


def _pattern_for(A: torch.Tensor, unitriangular: bool) -> SparsePattern:
    pattern = SparsePattern.of(A)
    if unitriangular and pattern.has_diagonal:
        raise ValueError(STRICT_MESSAGE)
    return pattern


@_kernels.eager_under_compile  # a sparse tensor: dynamo cannot trace it (a graph break)
def _triangular(
    A: torch.Tensor, B: torch.Tensor, upper: bool = True, unitriangular: bool = False, transpose: bool = False
) -> torch.Tensor:
    with _kernels.plain_sparse():
        pattern = _pattern_for(A, unitriangular)
    values = pattern._sorted(operand_values(A, pattern, "sparse_triangular_solve"))
    X = _kernels.trisolve(
        pattern, values, pattern.flat_rhs(B), upper=upper, unitriangular=unitriangular, transpose=transpose
    )
    return pattern.unflat(X, B, pattern.n)


class SparseTriangularSolve:
    """The 0.2.7 autograd Function behind :func:`sparse_triangular_solve`, kept as a thin shim.

    ``SparseTriangularSolve.apply(A, B, upper, unitriangular, transpose)`` takes the arguments of
    :func:`sparse_triangular_solve` without validating them and runs the same computation (the
    triangular-solve kernel on ``A``'s values).  Backward: with ``Gb = op(A)⁻ᴴ G`` (a
    differentiable solve), ``dB = Gb`` and ``dA[i, j] = −Gb[i] · conj(X[j])`` (``−conj(X[i]) ·
    Gb[j]`` when ``transpose``) at the stored entries of the triangle that the solve reads.
    """

    apply = staticmethod(_triangular)


@_kernels.eager_under_compile
@autocast_fp32
def sparse_triangular_solve(
    A: torch.Tensor,
    B: torch.Tensor,
    upper: bool = True,
    unitriangular: bool = False,
    transpose: bool = False,
) -> torch.Tensor:
    """Solve ``A X = B`` (or ``Aᵀ X = B``) for a sparse triangular ``A``, with a sparse gradient.

    ``upper`` says which triangle of ``A`` itself holds the matrix (entries in the other triangle
    are ignored, as in :func:`torch.linalg.solve_triangular`); ``unitriangular=True`` means the
    diagonal is implicitly 1 and ``A`` must store strictly triangular entries only.  A batch is
    solved as one block-diagonal system (no loop over the batch); the index analysis of ``A``
    (canonical order, transpose, the stored-ones layout of a unit-triangular solve) is made once
    per pattern and reused while ``A`` is unchanged.

    Gradients, with ``Gb = A⁻ᴴ G`` (``conj(A)⁻¹ G`` when ``transpose``): ``dB = Gb`` and, at the
    stored entries, ``dA[i, j] = −Gb[i] · conj(X[j])`` (``−conj(X[i]) · Gb[j]`` when
    ``transpose``), with ``A``'s layout, indices and index dtype.  For real dtypes ``conj`` is a
    no-op (``A⁻ᴴ = A⁻ᵀ``); for complex dtypes these are the conjugate (Wirtinger) gradients that
    PyTorch's autograd uses.  Second derivatives are supported.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, ``(n, n)`` or ``(b, n, n)``; float32, float64, complex64 or complex128
        values; int32/int64 indices.
    B : Tensor
        Dense ``(n, p)`` or ``(b, n, p)`` (a 1-D ``B`` is rejected, as in 0.2.7).
    upper : bool
        ``A`` is upper triangular (default) or lower triangular.
    unitriangular : bool
        The diagonal is implicit ones; a stored diagonal entry raises ``ValueError``.
    transpose : bool
        Solve with ``Aᵀ`` instead of ``A``.

    Returns
    -------
    Tensor
        ``X`` with ``B``'s shape.

    Raises
    ------
    ValueError
        The 0.2.7 messages (non-tensors, ranks, layouts, non-square ``A``, inner dimensions, batch
        size), and "First input should be strictly triangular (i.e. unit diagonals is implicit)"
        for ``unitriangular=True`` with a stored diagonal, now raised in the forward pass; and for
        malformed indices of ``A`` or a ``meta`` tensor.
    TypeError
        If ``A`` has a dtype other than float32, float64, complex64, complex128, or ``A`` and
        ``B`` have different dtypes.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import sparse_triangular_solve
    >>> L = torch.tensor([[2.0, 0.0], [1.0, 4.0]]).to_sparse_csr()
    >>> sparse_triangular_solve(L, torch.tensor([[2.0], [9.0]]), upper=False)
    tensor([[1.],
            [2.]])
    """
    with _kernels.plain_sparse():
        _check(A, B)
    return _triangular(A, B, upper, unitriangular, transpose)
