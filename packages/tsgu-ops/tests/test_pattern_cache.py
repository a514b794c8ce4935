"""``SparsePattern.of``: the index analysis is shared by calls on the same, unchanged tensor only."""

from __future__ import annotations

import gc

import pytest
import torch

from tsgu_ops import sparse_mm, sparse_triangular_solve
from tsgu_ops.pattern import _PATTERNS, SparsePattern

F64 = torch.float64


def _matrix(layout: torch.layout) -> torch.Tensor:
    D = torch.tensor([[4.0, 1.0, 0.0], [0.0, 3.0, 2.0], [1.0, 0.0, 5.0]], dtype=F64)
    return D.to_sparse_csr() if layout == torch.sparse_csr else D.to_sparse()


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_same_tensor_shares_its_pattern_and_another_tensor_does_not(layout):
    A = _matrix(layout)
    assert SparsePattern.of(A) is SparsePattern.of(A)
    assert SparsePattern.of(A) is not SparsePattern.of(_matrix(layout))
    assert SparsePattern.of(A) is not SparsePattern.of(A.clone())


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_an_index_changed_in_place_gives_a_new_pattern_and_correct_results(layout):
    A = _matrix(layout).requires_grad_()
    B = torch.ones(3, 2, dtype=F64)
    before = SparsePattern.of(A)
    sparse_mm(A, B).sum().backward()
    with torch.no_grad():  # move the entry (0, 1) to (0, 2): same nnz, new pattern
        if layout == torch.sparse_csr:
            A.col_indices()[1] = 2
        else:
            A._indices()[1, 1] = 2
    after = SparsePattern.of(A)
    assert after is not before
    dense = A.detach().to_dense()
    assert float(dense[0, 2]) == 1.0 and float(dense[0, 1]) == 0.0
    torch.testing.assert_close(sparse_mm(A.detach(), B), dense @ B)


def test_values_changed_in_place_are_used_by_the_next_call():
    A = _matrix(torch.sparse_csr)
    B = torch.ones(3, 1, dtype=F64)
    first = sparse_triangular_solve(A, B, upper=True)
    A.values().mul_(2.0)  # the pattern holds no values
    second = sparse_triangular_solve(A, B, upper=True)
    torch.testing.assert_close(second, first / 2.0)
    torch.testing.assert_close(second, torch.linalg.solve_triangular(A.to_dense().triu(), B, upper=True))


def test_the_entry_disappears_with_the_tensor():
    A = _matrix(torch.sparse_csr)
    SparsePattern.of(A)
    key = id(A)
    assert key in _PATTERNS
    del A
    gc.collect()
    assert key not in _PATTERNS


def test_tensors_without_a_version_counter_are_not_cached():
    with torch.inference_mode():
        A = _matrix(torch.sparse_csr)
        assert SparsePattern.of(A) is not SparsePattern.of(A)
