"""The shared sampled product and the sparse-preserving constructors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tsgu_ops.pattern as pattern_module
from tsgu_ops import SparsePattern, sampled_product, sparse_values, sparse_with_values
from tsgu_ops.testing import (
    assert_sparse_grad_matches,
    build_case,
    dense_like,
    sparse_matrices,
    stored_entries,
)


@given(case=sparse_matrices(), p=st.integers(0, 3), data=st.data())
def test_sampled_product_equals_dense_product_at_stored_entries(case, p, data):
    A = case.sparse
    batch = A.shape[:-2]
    U = data.draw(dense_like((*batch, A.shape[-2], p), A.dtype))
    V = data.draw(dense_like((*batch, A.shape[-1], p), A.dtype))
    S = sampled_product(A, U, V)
    assert S.layout == A.layout and S.shape == A.shape
    full = U @ V.mT
    coords = tuple(stored_entries(A))
    mask = torch.zeros(A.shape, dtype=torch.float64).index_put(
        coords, torch.ones(coords[0].numel(), dtype=torch.float64)
    )
    # read as PyTorch reads a sparse tensor (an uncoalesced COO: duplicates summed), S is U Vᴴ on A's pattern
    torch.testing.assert_close(S.to_dense(), full * mask.to(full.dtype))
    if A.layout == torch.sparse_csr or A.is_coalesced():
        values = S.values().reshape(-1) if A.layout == torch.sparse_csr else S._values()
        torch.testing.assert_close(values, full[coords])


def test_gather_path_is_chunked_and_equal(monkeypatch):
    case = build_case(0, (7, 5), 1.0, torch.sparse_coo, torch.int64, torch.float64)
    U, V = torch.randn(7, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    pat = SparsePattern(case.sparse)
    expected = pat.sampled(U, V)
    monkeypatch.setattr(pattern_module, "SAMPLED_CHUNK_ELEMENTS", 4)
    # float16 forces the gather path; a chunk of 4 elements holds one row of p = 3
    got = pat.sampled(U.half(), V.half())
    torch.testing.assert_close(got.double(), expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_sampled_product_gradcheck_and_gradgradcheck(layout):
    A = build_case(2, (2, 4, 3), 0.6, layout, torch.int32, torch.float64).sparse
    U = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    V = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)

    def f(U, V):
        return sparse_values(sampled_product(A, U, V))

    assert torch.autograd.gradcheck(f, (U, V))
    assert torch.autograd.gradgradcheck(f, (U, V))


@given(case=sparse_matrices(), data=st.data())
def test_sparse_with_values_gradient_is_values_only(case, data):
    like = case.sparse
    v = sparse_values(like).detach().clone().requires_grad_()
    S = sparse_with_values(like, v)
    assert S.layout == like.layout
    W = data.draw(dense_like((*like.shape[:-2], like.shape[-1], 2), like.dtype))
    G = data.draw(dense_like((*like.shape[:-1], 2), like.dtype))
    from tsgu_ops import sparse_mm

    (sparse_mm(S, W) * G).sum().backward()
    tol = {"rtol": 1e-4, "atol": 1e-5} if like.dtype == torch.float32 else {}
    torch.testing.assert_close(v.grad, (G @ W.mT)[tuple(stored_entries(like))], **tol)


def test_dense_gradient_reaching_a_constructed_tensor_is_read_at_the_entries():
    like = build_case(1, (3, 4), 0.5, torch.sparse_coo, torch.int64, torch.float64).sparse
    v = sparse_values(like).detach().clone().requires_grad_()
    W = torch.randn(3, 4, dtype=torch.float64)
    (sparse_with_values(like, v).to_dense() * W).sum().backward()
    torch.testing.assert_close(v.grad, W[tuple(stored_entries(like))])


def test_sparse_values_gives_input_layout_gradient():
    A = build_case(4, (3, 3), 0.6, torch.sparse_csr, torch.int32, torch.float64).sparse.requires_grad_()
    (sparse_values(A) * 2).sum().backward()
    assert_sparse_grad_matches(A, A.grad, torch.full((3, 3), 2.0, dtype=torch.float64))


def test_bad_arguments():
    A = torch.eye(2).to_sparse()
    with pytest.raises(ValueError, match="U has shape"):
        sampled_product(A, torch.ones(3, 1), torch.ones(2, 1))
    with pytest.raises(TypeError, match="same dtype"):
        sampled_product(A, torch.ones(2, 1), torch.ones(2, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="layout"):
        sampled_product(torch.eye(2), torch.ones(2, 1), torch.ones(2, 1))
    with pytest.raises(ValueError, match="2 elements"):
        sparse_with_values(A, torch.ones(3))
    with pytest.raises(TypeError):
        sparse_values("A")


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_pattern_symmetry_of_structure_and_values(layout):
    from tsgu_ops import SparsePattern

    def pattern(D):
        A = D.to_sparse() if layout == torch.sparse_coo else D.to_sparse_csr()
        return SparsePattern(A), A

    sym = torch.tensor([[2.0, 1.0, 0.0], [1.0, 3.0, 4.0], [0.0, 4.0, 1.0]], dtype=torch.float64)
    p, A = pattern(sym)
    assert p.symmetric() and p.symmetric(p.values(A))
    skew = sym.clone()
    skew[0, 1] = 5.0  # same structure, other values
    p, A = pattern(skew)
    assert p.symmetric() and not p.symmetric(p.values(A))
    tri = torch.triu(sym)
    p, A = pattern(tri)
    assert not p.symmetric()
    assert not SparsePattern(torch.ones(2, 3).to_sparse()).symmetric()
