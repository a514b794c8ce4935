"""Gradient accumulation: two uses of ``A`` in one graph, and two ``backward()`` calls.

PyTorch adds the gradients of a tensor used twice, and adds a new gradient to ``.grad``; its addition
of batched CSR tensors is wrong (it flattens the batch and loses values), and its addition of COO
tensors concatenates their index lists.  Every op with a sparse gradient must still end with
``A.grad`` equal to dense autograd at the stored entries, on ``A``'s own layout, indices and index
dtype, for every layout × batch × index dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tsgu_ops import (
    SparseMatMul,
    implicit_solve,
    sparse_mm,
    sparse_triangular_solve,
    sparse_values,
    sparse_with_values,
)
from tsgu_ops.testing import assert_sparse_grad_matches, sparse_matrices, stored_entries

F64 = torch.float64


def _dense_tri(A: torch.Tensor) -> torch.Tensor:
    return A.detach().to_dense()


def _solve_dense(M: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(M, B)


def _implicit(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    solve = lambda S, R: torch.linalg.solve(S.to_dense(), R)  # noqa: E731
    tsolve = lambda S, R: torch.linalg.solve(S.to_dense().mT, R)  # noqa: E731
    return implicit_solve(A, B, solve, tsolve)


# op name -> (sparse op (A, B) -> X, dense op (Ad, B) -> X, hypothesis structure)
OPS: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor], str]] = {
    "sparse_mm": (sparse_mm, torch.matmul, "general"),
    "SparseMatMul.apply": (SparseMatMul.apply, torch.matmul, "general"),
    "sparse_triangular_solve": (
        lambda A, B: sparse_triangular_solve(A, B, upper=False),
        lambda M, B: torch.linalg.solve_triangular(M, B, upper=False),
        "lower",
    ),
    "implicit_solve": (_implicit, _solve_dense, "spd"),
}


def _rhs(A: torch.Tensor, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (*A.shape[:-1], 2) if A.dim() == 2 else (A.shape[0], A.shape[-1], 2)
    return scale * torch.rand(shape, generator=g, dtype=F64)


def _losses(op: Callable[..., torch.Tensor], A: torch.Tensor, B: torch.Tensor) -> list[torch.Tensor]:
    """Three scalar losses: the first two share one graph (A used twice), the third is separate."""
    X1 = op(A, B)
    X2 = op(A, 2 * B + 1)
    return [(X1 * X1).sum() + X2.sum(), op(A, B).sum()]


@pytest.mark.parametrize("name", list(OPS))
@given(data=st.data())
def test_accumulated_grad_equals_dense_autograd(name: str, data: st.DataObject) -> None:
    op, dense_op, structure = OPS[name]
    case = data.draw(
        sparse_matrices(
            value_dtypes=(F64,),
            square=True,
            structures=(structure,),
            allow_empty=structure == "general",
            max_size=5,
        )
    )
    A = case.sparse.detach().clone().requires_grad_()
    B = _rhs(A, data.draw(st.integers(0, 2**16)))
    first, second = _losses(op, A, B)
    first.backward()
    second.backward()

    Ad = _dense_tri(A).requires_grad_()
    d_first, d_second = _losses(dense_op, Ad, B)
    d_first.backward()
    d_second.backward()
    assert_sparse_grad_matches(A, A.grad, Ad.grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("layout", "index_dtype"),
    [(torch.sparse_coo, torch.int64), (torch.sparse_csr, torch.int32), (torch.sparse_csr, torch.int64)],
)
def test_batched_two_uses_keep_the_input_pattern(layout: torch.layout, index_dtype: torch.dtype) -> None:
    """The issue's repro: ``col_indices`` of shape (3,) instead of (2, 5) before the fix."""
    L = torch.tensor([[1.0, 0, 0], [2, 3, 0], [0, 4, 5]], dtype=F64)
    dense = torch.stack([L, 2 * L])
    if layout == torch.sparse_csr:
        A = dense.to_sparse_csr()
        A = torch.sparse_csr_tensor(
            A.crow_indices().to(index_dtype), A.col_indices().to(index_dtype), A.values(), A.shape
        ).requires_grad_()
    else:
        A = dense.to_sparse().requires_grad_()
    B = torch.randn(2, 3, 2, dtype=F64)
    (sparse_mm(A, B).sum() + sparse_mm(A, 2 * B).sum()).backward()
    sparse_mm(A, B).sum().backward()
    expected = (4 * B.sum(-1)).unsqueeze(-2).expand(2, 3, 3)
    assert_sparse_grad_matches(A, A.grad, expected, rtol=1e-12, atol=1e-12)
    if layout == torch.sparse_csr:
        assert A.grad.col_indices().shape == (2, 5)


def test_uncoalesced_coo_grad_keeps_the_input_index_list_after_accumulation() -> None:
    idx = torch.tensor([[0, 1, 0, 2, 1], [0, 1, 0, 2, 0]])  # (0, 0) stored twice
    A = torch.sparse_coo_tensor(idx, torch.arange(1.0, 6.0, dtype=F64), (3, 3)).requires_grad_()
    B = torch.randn(3, 2, dtype=F64)
    for _ in range(3):
        (sparse_mm(A, B) ** 2).sum().backward()
    assert A.grad._indices().shape == (2, 5)
    assert torch.equal(A.grad._indices(), idx)
    Ad = A.detach().to_dense().requires_grad_()
    for _ in range(3):
        ((Ad @ B) ** 2).sum().backward()
    # (0, 0) is stored twice: each copy holds half of its gradient, so the sum means dL/dA
    assert_sparse_grad_matches(A, A.grad, Ad.grad, rtol=1e-12, atol=1e-12)
    mask = torch.zeros(3, 3, dtype=F64).index_put(tuple(stored_entries(A)), torch.ones(5, dtype=F64))
    torch.testing.assert_close(A.grad.to_dense(), Ad.grad * mask)


def test_sparse_values_batched_csr_accumulates() -> None:
    A = torch.stack([torch.eye(3), 2 * torch.eye(3)]).to(F64).to_sparse_csr().requires_grad_()
    w = torch.arange(6.0, dtype=F64)
    ((sparse_values(A) * w).sum() + sparse_values(A).sum()).backward()
    (sparse_values(A) * 2).sum().backward()
    assert A.grad.layout == torch.sparse_csr
    torch.testing.assert_close(A.grad.values().reshape(-1), w + 3)


def test_double_backward_accumulates_on_batched_csr() -> None:
    """``create_graph=True``: a Hessian-vector product reaches A through the accumulated graph."""
    L = torch.tensor([[2.0, 0, 0], [1, 3, 0], [0, 1, 4]], dtype=F64)
    A = torch.stack([L, 2 * L]).to_sparse_csr().requires_grad_()
    B = torch.randn(2, 3, 2, dtype=F64, requires_grad=True)
    loss = (sparse_mm(A, B) ** 2).sum() + sparse_mm(A, B).sum()
    (gB,) = torch.autograd.grad(loss, B, create_graph=True)
    (gB**2).sum().backward()
    Ad = A.detach().to_dense().requires_grad_()
    Bd = B.detach().clone().requires_grad_()
    dloss = ((Ad @ Bd) ** 2).sum() + (Ad @ Bd).sum()
    (dgB,) = torch.autograd.grad(dloss, Bd, create_graph=True)
    (dgB**2).sum().backward()
    assert_sparse_grad_matches(A, A.grad, Ad.grad, rtol=1e-9, atol=1e-9)


def test_autograd_grad_of_batched_csr_has_the_stored_entries() -> None:
    """``torch.autograd.grad`` cannot be given a batched CSR gradient safely (PyTorch would add
    it wrongly if A had two uses): it receives the same entries as a 3-D COO tensor."""
    L = torch.tensor([[1.0, 0], [2, 3]], dtype=F64)
    A = torch.stack([L, L]).to_sparse_csr().requires_grad_()
    B = torch.randn(2, 2, 1, dtype=F64)
    (g,) = torch.autograd.grad(sparse_mm(A, B).sum() + sparse_mm(A, B).sum(), A)
    assert g.layout in (torch.sparse_coo, torch.sparse_csr)
    expected = 2 * B.sum(-1).unsqueeze(-2).expand(2, 2, 2) * (A.detach().to_dense() != 0)
    torch.testing.assert_close(g.to_dense(), expected)
    assert A.grad is None


def test_values_of_an_uncoalesced_coo_with_duplicates_accumulate_per_entry() -> None:
    """``sparse_with_values`` on a COO pattern with a duplicate coordinate, used twice: each stored
    value gets the derivative with respect to itself, twice (was ``[2, 4, 4]``)."""
    like = torch.sparse_coo_tensor(torch.tensor([[0, 1, 1], [0, 0, 0]]), torch.ones(3), (2, 2))
    v = torch.ones(3, dtype=F64, requires_grad=True)
    S = sparse_with_values(like.to(F64), v)
    B = torch.tensor([[1.0], [1.0]], dtype=F64)
    (sparse_mm(S, B).sum() + sparse_mm(S, B).sum()).backward()
    torch.testing.assert_close(v.grad, torch.full((3,), 2.0, dtype=F64))
