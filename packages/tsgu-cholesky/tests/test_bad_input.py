"""Bad input raises a clear error naming what is wrong; inputs are never modified."""

from __future__ import annotations

import pytest
import torch
import tsgu_cholesky as tc
from hypothesis import given, settings

from tsgu_ops.testing import (
    assert_unchanged,
    clone_input,
    grid_operator,
    malformed_sparse_matrices,
    nonfinite_sparse_matrices,
    with_values,
)

FUNCS = [tc.sparse_logdet, tc.sparse_selected_inverse, tc.sparse_inverse_diagonal, tc.sparse_cholesky]


@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize("shift", [3.3, 4.0])
def test_indefinite_matrix_names_the_failing_column_and_pivot(fn, shift):
    A = grid_operator((4, 4))
    vals = A._values().clone()
    diag = A._indices()[0] == A._indices()[1]
    vals[diag] = vals[diag] - shift  # a shifted Laplacian: indefinite (3.3) or a zero diagonal (4)
    B = with_values(A, vals)
    before = clone_input(B)
    with pytest.raises(
        tc.NotPositiveDefiniteError, match=r"not positive definite: the pivot of column \d+ is"
    ):
        fn(B)
    assert_unchanged(before, B)
    assert issubclass(tc.NotPositiveDefiniteError, ValueError)


def test_negative_definite_batch_item_is_named():
    A = grid_operator((3, 3))
    good = A.to_dense()
    dense = torch.stack([good, -good])
    with pytest.raises(ValueError, match=r"of batch item 1.*diagonal shift"):
        tc.sparse_logdet(dense.to_sparse_coo())


def test_structurally_non_symmetric_raises():
    A = torch.tensor([[2.0, 1.0], [0.0, 2.0]], dtype=torch.float64).to_sparse_csr()
    with pytest.raises(ValueError, match="symmetric sparsity pattern"):
        tc.sparse_logdet(A)


def test_numerically_non_symmetric_raises():
    A = torch.tensor([[2.0, 1.0], [0.5, 2.0]], dtype=torch.float64).to_sparse_coo()
    with pytest.raises(ValueError, match=r"A must be symmetric: A\[i, j\] and A\[j, i\] differ"):
        tc.sparse_logdet(A)


def test_missing_diagonal_raises():
    A = torch.tensor([[0.0, 1.0], [1.0, 2.0]], dtype=torch.float64).to_sparse_coo()
    with pytest.raises(
        ValueError,
        match=r"diagonal entry \(an SPD matrix has a positive diagonal\); entry \(0, 0\) is missing",
    ):
        tc.sparse_logdet(A)


def test_non_square_and_wrong_rank_raise():
    with pytest.raises(ValueError, match="square"):
        tc.sparse_logdet(torch.ones(2, 3, dtype=torch.float64).to_sparse_coo())
    with pytest.raises(ValueError, match="sparse COO or CSR"):
        tc.sparse_logdet(torch.eye(2, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        tc.sparse_logdet([[1.0]])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.complex128, torch.int64])
def test_unsupported_value_dtypes_raise_type_error(dtype):
    A = torch.eye(3).to(dtype).to_sparse_coo()
    with pytest.raises(TypeError, match="float32, float64"):
        tc.sparse_logdet(A)


@settings(max_examples=20)
@given(nonfinite_sparse_matrices(structures=("spd",), square=True))
def test_nan_and_inf_raise(case):
    with pytest.raises(ValueError, match="finite"):
        tc.sparse_logdet(case.sparse)


@settings(max_examples=25)
@given(malformed_sparse_matrices(structure="spd"))
def test_malformed_indices_and_meta_raise_value_error(case):
    with pytest.raises(ValueError, match="A"):
        tc.sparse_logdet(case.sparse)


def test_bad_right_hand_sides():
    A = grid_operator((3,))
    with pytest.raises(ValueError, match="does not fit"):
        tc.sparse_cholesky_solve(A, torch.ones(4, dtype=torch.float64))
    with pytest.raises(TypeError, match="same dtype"):
        tc.sparse_cholesky_solve(A, torch.ones(3, dtype=torch.float32))
    with pytest.raises(ValueError, match="dense"):
        tc.sparse_cholesky_solve(A, torch.ones(3, 1, dtype=torch.float64).to_sparse())


def test_create_graph_through_selected_inverse_is_a_clear_error():
    A = grid_operator((3, 3)).requires_grad_()
    d = tc.sparse_inverse_diagonal(A).sum()
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(d, A, create_graph=True)


def test_inputs_unchanged_by_every_function():
    A = grid_operator((3, 4)).to_sparse_csr()
    B = torch.ones(12, dtype=torch.float64)
    before_a, before_b = clone_input(A), clone_input(B)
    tc.sparse_logdet(A)
    tc.sparse_cholesky_solve(A, B)
    tc.sparse_selected_inverse(A)
    tc.sparse_inverse_diagonal(A)
    assert_unchanged(before_a, A)
    assert_unchanged(before_b, B)
