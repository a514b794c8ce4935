"""sparse_mm against dense torch: forward, sparse gradients, second derivatives, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tsgu_ops import DtypeMismatchError, SparseMatMul, sparse_mm, sparse_values, sparse_with_values
from tsgu_ops.testing import (
    assert_sparse_grad_matches,
    build_case,
    dense_like,
    sparse_matrices,
)


@given(case=sparse_matrices(), p=st.integers(0, 4), data=st.data())
def test_forward_and_gradients_equal_dense_autograd(case, p, data, assert_mm_matches_dense_autograd):
    A = case.sparse.requires_grad_()
    bshape = (*A.shape[:-2], A.shape[-1], p)
    B = data.draw(dense_like(bshape, A.dtype)).requires_grad_()
    assert_mm_matches_dense_autograd(case, B, lambda shape: data.draw(dense_like(shape, A.dtype)))


@given(case=sparse_matrices(batch=False, value_dtypes=[torch.float64]), b=st.integers(1, 3), data=st.data())
def test_shared_matrix_with_batched_rhs(case, b, data):
    A = case.sparse.requires_grad_()
    B = data.draw(dense_like((b, A.shape[1], 2))).requires_grad_()
    C = sparse_mm(A, B)
    D = case.dense.clone().requires_grad_()
    Cd = D @ B
    torch.testing.assert_close(C, Cd)
    gA, gB = torch.autograd.grad(C.sum(), (A, B))
    gD, gBd = torch.autograd.grad(Cd.sum(), (D, B))
    assert_sparse_grad_matches(A, gA, gD)
    torch.testing.assert_close(gB, gBd)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_gradcheck_and_gradgradcheck_through_values(layout, batched, index_dtype):
    shape = (2, 4, 3) if batched else (4, 3)
    case = build_case(1, shape, 0.5, layout, index_dtype, torch.float64)
    like = case.sparse
    v = sparse_values(like).detach().clone().requires_grad_()
    B = torch.randn(*shape[:-2], 3, 2, dtype=torch.float64, requires_grad=True)

    def f(v, B):
        return sparse_mm(sparse_with_values(like, v), B)

    assert torch.autograd.gradcheck(f, (v, B))
    assert torch.autograd.gradgradcheck(f, (v, B))


def test_hessian_vector_product_in_A_matches_dense():
    torch.manual_seed(0)
    D = torch.randn(4, 4, dtype=torch.float64) * (torch.rand(4, 4) < 0.6)
    A = D.to_sparse_csr().requires_grad_()
    B = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    loss = (sparse_mm(A, B) ** 2).sum()
    (gB,) = torch.autograd.grad(loss, B, create_graph=True)
    (hA,) = torch.autograd.grad(gB.sum(), A)
    Dd = D.clone().requires_grad_()
    loss_d = ((Dd @ B) ** 2).sum()
    (gBd,) = torch.autograd.grad(loss_d, B, create_graph=True)
    (hD,) = torch.autograd.grad(gBd.sum(), Dd)
    assert_sparse_grad_matches(A, hA, hD)


def test_only_requested_gradients_are_computed():
    A = torch.eye(3, dtype=torch.float64).to_sparse().requires_grad_()
    B = torch.ones(3, 2, dtype=torch.float64)
    sparse_mm(A, B).sum().backward()
    assert A.grad is not None and B.grad is None
    A2 = torch.eye(3, dtype=torch.float64).to_sparse()
    B2 = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    sparse_mm(A2, B2).sum().backward()
    assert A2.grad is None and B2.grad is not None


def test_uncoalesced_coo_gradient_keeps_own_indices_and_duplicates_share_the_coordinate_gradient():
    idx = torch.tensor([[0, 1, 0], [1, 0, 1]])
    A = torch.sparse_coo_tensor(
        idx, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), (2, 2)
    ).requires_grad_()
    B = torch.tensor([[1.0], [10.0]], dtype=torch.float64)
    C = sparse_mm(A, B)
    torch.testing.assert_close(C, torch.tensor([[40.0], [2.0]], dtype=torch.float64))
    C.sum().backward()
    assert torch.equal(A.grad._indices(), idx)
    # dL/dA[0, 1] = 10 is split over its two stored copies: the gradient means dL/dA when summed
    torch.testing.assert_close(A.grad._values(), torch.tensor([5.0, 1.0, 5.0], dtype=torch.float64))
    torch.testing.assert_close(
        A.grad.to_dense(), torch.tensor([[0.0, 10.0], [1.0, 0.0]], dtype=torch.float64)
    )


def test_autograd_function_class_is_public():
    A = torch.eye(2).to_sparse()
    torch.testing.assert_close(SparseMatMul.apply(A, torch.ones(2, 1)), torch.ones(2, 1))


@pytest.mark.parametrize(
    ("A", "B", "message"),
    [
        ("x", torch.ones(2, 2), "Both A and B should be instances of torch.Tensor"),
        (torch.eye(2).to_sparse(), torch.ones(2), "Both A and B should be at least 2-dimensional tensors"),
        (
            torch.ones(1, 2, 2, 2).to_sparse(),
            torch.ones(1, 2, 2, 2),
            "A and B must both be 2D or both be 3D tensors",
        ),
        (torch.eye(2).to_sparse_csc(), torch.ones(2, 2), "A should be in either COO or CSR sparse format"),
        (torch.eye(2).to_sparse(), torch.ones(2, 2).to_sparse(), "B must be a dense (strided) tensor"),
        (
            torch.ones(2, 2, 2).to_sparse(),
            torch.ones(3, 2, 2),
            "If batched, A and B must have the same batch size",
        ),
        (torch.eye(2).to_sparse(), torch.ones(3, 2), "Incompatible inner dimensions: A[..., 2] vs B[..., 3]"),
        (torch.ones(2, 2, 2).to_sparse(), torch.ones(2, 2), "A and B must both be 2D or both be 3D tensors"),
    ],
)
def test_bad_input_raises_the_0_2_7_message(A, B, message):
    with pytest.raises(ValueError) as err:
        sparse_mm(A, B)
    assert str(err.value) == message


def test_dtype_mismatch_is_a_clear_type_error_and_a_runtime_error():
    A = torch.eye(2, dtype=torch.float64).to_sparse()
    with pytest.raises(DtypeMismatchError, match="same dtype"):
        sparse_mm(A, torch.ones(2, 2))
    assert issubclass(DtypeMismatchError, TypeError) and issubclass(DtypeMismatchError, RuntimeError)
