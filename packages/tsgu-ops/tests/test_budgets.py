"""Kernel-call and host-sync budgets of the hot paths, counted on the CPU (DESIGN rule 8).

On a GPU every aten call is a launch and every host read a wait: with a pattern seen before,
sparse_mm must cost a handful of kernels and no synchronisation (validation and index analysis are
done once per pattern).  Counted with ``tsgu_ops.testing.count_kernels``.
"""

from __future__ import annotations

import pytest
import torch

from tsgu_ops import sampled_product, sparse_mm, sparse_triangular_solve
from tsgu_ops.testing import count_kernels, grid_operator

F64 = torch.float64


@pytest.fixture(params=["csr", "coo"])
def matrix(request: pytest.FixtureRequest) -> torch.Tensor:
    A = grid_operator((8, 8, 8))
    return A.to_sparse_csr() if request.param == "csr" else A


def test_sparse_mm_forward_on_a_seen_pattern_is_at_most_3_kernels_and_no_sync(matrix: torch.Tensor) -> None:
    B = torch.randn(matrix.shape[0], 4, dtype=F64)
    sparse_mm(matrix, B)  # first call: validation and index analysis
    out, c = count_kernels(sparse_mm, matrix, B)
    assert c.kernels <= 3 and c.syncs == 0, str(c)
    torch.testing.assert_close(out, matrix.to_dense() @ B)


def test_sparse_mm_forward_and_backward_is_at_most_12_kernels_and_no_sync(matrix: torch.Tensor) -> None:
    A = matrix.detach().requires_grad_()
    B = torch.randn(matrix.shape[0], 4, dtype=F64, requires_grad=True)
    G = torch.randn(matrix.shape[0], 4, dtype=F64)
    sparse_mm(A, B).backward(G)

    def step() -> None:
        sparse_mm(A, B).backward(G)

    _, c = count_kernels(step)
    assert c.kernels <= 12 and c.syncs == 0, str(c)


def test_a_new_pattern_costs_at_most_one_sync_for_validation() -> None:
    A = grid_operator((6, 6)).to_sparse_csr()
    B = torch.randn(36, 2, dtype=F64)
    _, c = count_kernels(sparse_mm, A, B)
    assert c.syncs <= 1, str(c)


def test_triangular_solve_and_sampled_product_on_a_seen_pattern_do_not_sync() -> None:
    A = grid_operator((6, 6, 6)).coalesce()
    i = A.indices()
    keep = i[0] >= i[1]
    L = torch.sparse_coo_tensor(i[:, keep], A.values()[keep], A.shape).to_sparse_csr()
    B = torch.randn(L.shape[0], 3, dtype=F64)
    sparse_triangular_solve(L, B, upper=False)
    X, c = count_kernels(sparse_triangular_solve, L, B, upper=False)
    assert c.syncs == 0 and c.kernels <= 4, str(c)
    torch.testing.assert_close(L.to_dense() @ X, B)
    sampled_product(L, B, B)
    _, c = count_kernels(sampled_product, L, B, B)
    assert c.syncs == 0 and c.kernels <= 4, str(c)


def test_indices_changed_in_place_are_validated_again() -> None:
    A = torch.eye(3, dtype=F64).to_sparse_csr()
    B = torch.ones(3, 1, dtype=F64)
    sparse_mm(A, B)
    A.col_indices()[0] = 7  # the cached validation must not hide this
    with pytest.raises(ValueError, match="column index out of range"):
        sparse_mm(A, B)
