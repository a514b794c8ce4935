"""Kernel-call and host-sync budgets of the generic solve's wrapper, counted on the CPU (DESIGN rule 8).

``sparse_generic_solve(A, b, "cg", loop="device")`` on a pattern seen before must cost what its
solver loops cost and hardly more: validation and index analysis are done once per pattern
(``check_sparse_indices``' stamp, ``SparsePattern.of``), never per call.  The wrapper's own share is
the count of the whole call minus the count of the bare ``linear_cg`` loops it runs (the same
operator, tolerance and loop), forward and transposed.  Counted with
``tsgu_ops.testing.count_kernels``.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest
import torch

from tsgu_krylov import linear_cg, sparse_generic_solve
from tsgu_krylov._device_loop import DEVICE_CHECK_EVERY
from tsgu_krylov._operator import SparseOperator
from tsgu_krylov.generic_solve import default_rtol
from tsgu_ops.testing import KernelCount, count_kernels, grid_operator

F64 = torch.float64


@pytest.fixture(params=["csr", "coo"])
def matrix(request: pytest.FixtureRequest) -> torch.Tensor:
    A = grid_operator((8, 8, 8))
    return A.to_sparse_csr() if request.param == "csr" else A


def _loop(A: torch.Tensor, B: torch.Tensor, transpose: bool = False) -> tuple[Any, KernelCount]:
    """The bare device CG loop the generic solve runs (its operator built outside the count)."""
    op = SparseOperator(A, transpose=transpose)
    B = B if B.dim() == 2 else B.unsqueeze(-1)
    return count_kernels(linear_cg, op, B, rtol=default_rtol(F64), loop="device", return_info=True)


def _extra(total: KernelCount, *loops: KernelCount) -> dict[str, int]:
    ops = collections.Counter(total.ops)
    for c in loops:
        ops.subtract(c.ops)
    return {k: v for k, v in ops.items() if v}


@pytest.mark.parametrize("k", [None, 3])
def test_generic_cg_forward_on_a_seen_pattern_costs_the_loop_and_at_most_4_kernels(
    matrix: torch.Tensor, k: int | None
) -> None:
    n = matrix.shape[0]
    B = torch.randn(n, dtype=F64) if k is None else torch.randn(n, k, dtype=F64)
    sparse_generic_solve(matrix, B, "cg", loop="device")  # first call: validation, index analysis
    X, total = count_kernels(sparse_generic_solve, matrix, B, "cg", loop="device")
    (_, info), loop = _loop(matrix, B)
    assert info.reason == "converged"
    extra = _extra(total, loop)
    assert total.syncs == loop.syncs, (total, loop)
    assert total.syncs <= info.iterations / DEVICE_CHECK_EVERY + 5, str(total)
    assert total.kernels - loop.kernels <= 4, extra
    torch.testing.assert_close(X, torch.linalg.solve(matrix.to_dense(), B), rtol=1e-8, atol=1e-8)


def test_generic_cg_forward_and_backward_on_a_seen_pattern_costs_the_loops_and_at_most_12_kernels(
    matrix: torch.Tensor,
) -> None:
    n = matrix.shape[0]
    A = matrix.detach().requires_grad_()
    B = torch.randn(n, dtype=F64, requires_grad=True)
    G = torch.randn(n, dtype=F64)

    def step() -> None:
        sparse_generic_solve(A, B, "cg", loop="device").backward(G)

    step()
    A.grad = B.grad = None
    _, total = count_kernels(step)
    (_, info), fwd = _loop(matrix, B.detach())
    (_, info_t), bwd = _loop(matrix, G, transpose=True)
    extra = _extra(total, fwd, bwd)
    # (the wrapper's share: the gradient at the stored entries, dB, and autograd's accumulation)
    assert total.syncs == fwd.syncs + bwd.syncs, (total, fwd, bwd)
    iterations = info.iterations + info_t.iterations
    assert total.syncs <= iterations / DEVICE_CHECK_EVERY + 2 * 5, str(total)  # two solves
    assert total.kernels - fwd.kernels - bwd.kernels <= 12, extra
    # the gradient itself: dB = A⁻ᵀ G, dA = −dB xᵀ at the stored entries
    Ad = matrix.to_dense()
    gb = torch.linalg.solve(Ad.T, G)
    x = torch.linalg.solve(Ad, B.detach())
    torch.testing.assert_close(B.grad, gb, rtol=1e-8, atol=1e-8)
    grad = A.grad.to_dense()
    mask = Ad != 0
    torch.testing.assert_close(grad[mask], -torch.outer(gb, x)[mask], rtol=1e-7, atol=1e-8)
    assert bool((grad[~mask] == 0).all())


def test_generic_cg_on_a_new_pattern_syncs_at_most_once_more_than_its_loop() -> None:
    A = grid_operator((6, 6, 6)).to_sparse_csr()
    B = torch.randn(A.shape[0], 2, dtype=F64)
    _, total = count_kernels(sparse_generic_solve, A, B, "cg", loop="device")
    _, loop = _loop(A, B)
    assert total.syncs <= loop.syncs + 1, (total, loop)
