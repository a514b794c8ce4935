"""The prepared sparse operator and the per-column reductions every solver's loop uses."""

from __future__ import annotations

import pytest
import torch

from tsgu_krylov._operator import SparseOperator, col_dot, col_norm
from tsgu_ops.internal import SparsePattern


def _matrix(layout: torch.layout, batch: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    shape = (5, 5) if batch is None else (batch, 5, 5)
    D = torch.randn(*shape, dtype=torch.float64, generator=g)
    D = D * (torch.rand(*shape, generator=g) < 0.5)
    return D.to_sparse_csr() if layout == torch.sparse_csr else D.to_sparse()


@pytest.mark.parametrize("layout", [torch.sparse_csr, torch.sparse_coo])
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("shape", [(5,), (5, 1), (5, 3), (2, 5, 1), (2, 5, 3)])
def test_operator_matches_dense_product(layout, transpose, shape):
    A = _matrix(layout)
    D = A.to_dense().mT if transpose else A.to_dense()
    X = torch.randn(*shape, dtype=torch.float64)
    op = SparseOperator(A, transpose=transpose)
    expected = D @ X
    torch.testing.assert_close(op(X), expected, rtol=1e-12, atol=1e-12)
    assert op.matrix.crow_indices().dtype == torch.int32  # 32-bit indices: the fast CPU kernel
    if X.dim() == 1:
        torch.testing.assert_close(op.mv(X), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3])
def test_batched_operator_matches_dense_product(k):
    A = _matrix(torch.sparse_csr, batch=2)
    X = torch.randn(2, 5, k, dtype=torch.float64)
    torch.testing.assert_close(SparseOperator(A)(X), A.to_dense() @ X, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("transpose", [False, True])
def test_operator_indices_are_32_bit_once_per_pattern(transpose):
    A = _matrix(torch.sparse_csr)
    P = SparsePattern(A)
    first = SparseOperator(A, transpose=transpose, pattern=P).matrix
    second = SparseOperator(A, transpose=transpose, pattern=P).matrix
    assert first.col_indices().dtype == torch.int32
    D = A.to_dense().mT if transpose else A.to_dense()
    assert torch.equal(first.to_dense(), D)
    # converted once: a second operator of the same pattern reuses the 32-bit index tensors
    assert second.col_indices().data_ptr() == first.col_indices().data_ptr()
    assert second.crow_indices().data_ptr() == first.crow_indices().data_ptr()
    if not transpose:  # the values are the input's, not a copy
        assert first.values().data_ptr() == A.values().data_ptr()
    # the input keeps its own 64-bit indices
    assert A.col_indices().dtype == torch.int64


@pytest.mark.parametrize("shape", [(7, 1), (7, 4), (3, 7, 1), (2, 3, 7, 2)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_column_reductions_match_reference(shape, dtype):
    U = torch.randn(*shape, dtype=dtype)
    V = torch.randn(*shape, dtype=dtype)
    torch.testing.assert_close(col_dot(U, V), (U.conj() * V).sum(-2))
    torch.testing.assert_close(col_norm(U), (U.abs() ** 2).sum(-2).sqrt())
    assert col_dot(U, V).shape == shape[:-2] + shape[-1:]
