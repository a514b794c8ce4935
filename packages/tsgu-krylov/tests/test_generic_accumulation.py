"""``sparse_generic_solve`` gradients that PyTorch accumulates: two uses of ``A`` in one graph and a
second ``backward()`` call must give the ``A.grad`` of dense autograd, in every layout × batch, with
``A``'s own layout, indices and index dtype."""

from __future__ import annotations

import pytest
import torch

from tsgu_krylov import sparse_generic_solve
from tsgu_ops.testing import assert_sparse_grad_matches, build_case

F64 = torch.float64


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("batched", [False, True], ids=["unbatched", "batched"])
@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr], ids=["coo", "csr"])
def test_accumulated_grad_of_two_uses_and_two_backwards_equals_dense_autograd(layout, batched, index_dtype):
    shape = (3, 7, 7) if batched else (7, 7)
    case = build_case(11, shape, 0.4, layout, index_dtype, F64, "dominant")
    g = torch.Generator().manual_seed(2)
    rhs = [torch.randn(*shape[:-1], 2, dtype=F64, generator=g) for _ in range(3)]
    weights = [torch.randn(*shape[:-1], 2, dtype=F64, generator=g) for _ in range(3)]

    def run(A, solve):
        # one graph using A twice (two solves), then a second backward() through a third solve
        X1, X2 = solve(A, rhs[0]), solve(A, rhs[1])
        ((X1 * weights[0]).sum() + (X2 * X2 * weights[1]).sum()).backward()
        (solve(A, rhs[2]) * weights[2]).sum().backward()

    A = case.sparse.detach().clone().requires_grad_()
    run(A, lambda M, B: sparse_generic_solve(M, B, "gmres", rtol=1e-13))
    D = case.dense.clone().requires_grad_()
    run(D, torch.linalg.solve)
    assert_sparse_grad_matches(A, A.grad, D.grad, rtol=1e-7, atol=1e-9)
