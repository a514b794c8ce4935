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


def _rebuilt(A: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    # a new tensor on A's own index tensors (what a training step does with fixed indices)
    if A.layout == torch.sparse_csr:
        return torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), values, A.shape)
    return torch.sparse_coo_tensor(A._indices(), values, A.shape, is_coalesced=A.is_coalesced())


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_a_new_tensor_on_the_same_index_tensors_shares_the_pattern(layout):
    A = _matrix(layout)
    if layout == torch.sparse_coo:
        A = A.coalesce()
    first = SparsePattern.of(A)
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=F64, requires_grad=True)
    A2 = _rebuilt(A, values)
    assert A2 is not A and SparsePattern.of(A2) is first
    # equal indices in tensors of their own: a pattern of their own
    assert SparsePattern.of(_matrix(layout)) is not first
    # and the shared pattern gives the right gradient (dense autograd as the reference)
    B = torch.randn(3, 2, dtype=F64)
    sparse_mm(A2, B).pow(2).sum().backward()
    dense_values = values.detach().clone().requires_grad_()
    D = _rebuilt(A, dense_values).to_dense()
    (D @ B).pow(2).sum().backward()
    torch.testing.assert_close(values.grad, dense_values.grad)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_indices_changed_in_place_through_another_tensor_give_a_new_pattern(layout):
    A = _matrix(layout)
    if layout == torch.sparse_coo:
        A = A.coalesce()
    first = SparsePattern.of(A)
    A2 = _rebuilt(A, A.values().clone() if layout == torch.sparse_csr else A._values().clone())
    with torch.no_grad():  # move the entry (0, 1) to (0, 2) in the shared index tensor
        if layout == torch.sparse_csr:
            A2.col_indices()[1] = 2
        else:
            A2._indices()[1, 1] = 2
    A3 = _rebuilt(A, A.values() if layout == torch.sparse_csr else A._values())
    assert SparsePattern.of(A3) is not first
    B = torch.ones(3, 2, dtype=F64)
    torch.testing.assert_close(sparse_mm(A3, B), A3.to_dense() @ B)
    assert float(A3.to_dense()[0, 2]) == 1.0


def test_the_index_keyed_patterns_are_bounded():
    from tsgu_ops import pattern as module

    kept = [_matrix(torch.sparse_csr) for _ in range(module._BY_INDICES_SIZE + 3)]
    for A in kept:
        SparsePattern.of(A)
    assert len(module._BY_INDICES) == module._BY_INDICES_SIZE
    # the oldest went first: a new tensor on the first one's indices gets a new pattern (the
    # first tensor itself keeps its own), one on the last one's indices shares the last's
    first, last = kept[0], kept[-1]
    assert SparsePattern.of(_rebuilt(first, first.values())) is not SparsePattern.of(first)
    assert SparsePattern.of(_rebuilt(last, last.values())) is SparsePattern.of(last)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_the_users_index_tensor_changed_in_place_is_seen(layout):
    # A built on the user's own index tensor: writing that tensor moves no version counter that
    # A reports, yet A's entries move; the cached pattern and validation must not be used
    if layout == torch.sparse_csr:
        crow, col = torch.tensor([0, 2, 4, 6]), torch.tensor([0, 1, 1, 2, 0, 2])
        A = torch.sparse_csr_tensor(crow, col, torch.tensor([4.0, 1, 3, 2, 1, 5], dtype=F64), (3, 3))
        index = col
    else:
        index = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 0, 2]])
        A = torch.sparse_coo_tensor(index, torch.tensor([4.0, 1, 3, 2, 1, 5], dtype=F64), (3, 3))
        A = A._coalesced_(True)
    B = torch.randn(3, 2, dtype=F64)
    before = SparsePattern.of(A)
    torch.testing.assert_close(sparse_mm(A, B), A.to_dense() @ B)
    (index if layout == torch.sparse_csr else index[1])[1] = 2  # entry (0, 1) moves to (0, 2)
    assert float(A.to_dense()[0, 2]) == 1.0
    assert SparsePattern.of(A) is not before
    torch.testing.assert_close(sparse_mm(A, B), A.to_dense() @ B)
    # out of range after validation: caught again, before any native kernel
    (index if layout == torch.sparse_csr else index[1])[1] = 7
    with pytest.raises(ValueError, match="out of range"):
        sparse_mm(A, B)


def test_the_index_keyed_patterns_are_bounded_in_entries_and_released(monkeypatch):
    from tsgu_ops import pattern as module

    SparsePattern.clear_shared()
    monkeypatch.setattr(module, "_BY_INDICES_NNZ", 13)  # room for two 6-entry patterns
    kept = [_matrix(torch.sparse_csr) for _ in range(3)]
    for A in kept:
        SparsePattern.of(A)
    assert [e[1].nnz for e in module._BY_INDICES] == [6, 6]
    big = grid_operator_like(20)
    SparsePattern.of(big)  # alone larger than the budget: not kept
    assert all(e[1].nnz == 6 for e in module._BY_INDICES)
    SparsePattern.clear_shared()
    assert module._BY_INDICES == []
    assert SparsePattern.of(kept[0]) is SparsePattern.of(kept[0])  # its own entry stays


def grid_operator_like(n: int) -> torch.Tensor:
    return (torch.eye(n, dtype=F64) * 2).to_sparse_csr()
