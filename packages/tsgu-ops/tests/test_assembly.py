"""Uncoalesced COO assembly: a matrix built from element contributions with duplicate coordinates.

To PyTorch an uncoalesced COO tensor is the *sum* of its duplicates.  The textbook finite-element
assembly (and a multigraph's adjacency) builds ``A = torch.sparse_coo_tensor(idx, w)`` from values
``w`` that need grad, one entry per element and local pair, without ``coalesce()``.  For every
tsgu-ops operation with a sparse gradient:

* the gradient reaching ``w`` through PyTorch's COO constructor equals dense autograd's (the dense
  matrix assembled with ``index_put(..., accumulate=True)``);
* a leaf ``A``'s gradient keeps ``A``'s own index list and, read as PyTorch reads it
  (``to_dense()``, ``coalesce()``), equals ``dL/dA`` on ``A``'s pattern;
* an SGD step on ``A.values()`` moves ``A``'s dense meaning by ``-lr·dL/dA``;
* all of it survives accumulation (two uses in one graph, two ``backward()`` calls).

The mesh comes from scikit-fem (a P1 triangulation nobody here wrote), through
:func:`tsgu_ops.testing.p1_element_entries`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tsgu_ops import implicit_solve, sampled_product, sparse_mm, sparse_triangular_solve, sparse_values
from tsgu_ops.testing import assert_sparse_grad_matches, p1_element_entries, stored_entries

F64 = torch.float64


def p1_assembly(refine: int = 2, lower: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    return p1_element_entries(refine, lower=lower)


def _weights(local: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (local * (0.5 + torch.rand(local.shape, generator=g, dtype=F64))).requires_grad_()


def _dense(idx: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, n, dtype=w.dtype).index_put((idx[0], idx[1]), w, accumulate=True)


def _mask(A: torch.Tensor) -> torch.Tensor:
    coords = tuple(stored_entries(A))
    return torch.zeros(A.shape, dtype=F64).index_put(coords, torch.ones(coords[0].numel(), dtype=F64))


def _dense_solve(S: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(S.to_dense(), R)


def _dense_tsolve(S: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(S.to_dense().mT, R)


# name -> (sparse op (A, B), dense op (D, B), lower-triangular assembly?)
OPS: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor], bool]] = {
    "sparse_mm": (sparse_mm, torch.matmul, False),
    "sparse_triangular_solve": (
        lambda A, B: sparse_triangular_solve(A, B, upper=False),
        lambda D, B: torch.linalg.solve_triangular(D, B, upper=False),
        True,
    ),
    "sparse_triangular_solve_transpose": (
        lambda A, B: sparse_triangular_solve(A, B, upper=False, transpose=True),
        lambda D, B: torch.linalg.solve_triangular(D.mT, B, upper=True),
        True,
    ),
    "implicit_solve": (
        lambda A, B: implicit_solve(A, B, _dense_solve, _dense_tsolve),
        lambda D, B: torch.linalg.solve(D, B),
        False,
    ),
    "sparse_values": (
        lambda A, B: (sparse_values(A) ** 2).sum() * B[:1, :1],
        None,  # not a function of the dense matrix per entry: checked against the entries below
        False,
    ),
}


def _loss(op: Callable[..., torch.Tensor], A: torch.Tensor, B: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    X = op(A, B)
    return (X * G[: X.shape[0], : X.shape[1]]).sum() + 0.5 * (X**2).sum()


@pytest.mark.parametrize("name", [k for k, v in OPS.items() if v[1] is not None])
def test_constructor_values_gradient_equals_dense_autograd(name: str) -> None:
    op, dense_op, lower = OPS[name]
    idx, local, n = p1_assembly(lower=lower)
    assert idx.shape[1] > 3 * n  # heavily duplicated
    w = _weights(local, 0)
    B = torch.randn(n, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    G = torch.randn(n, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    A = torch.sparse_coo_tensor(idx, w, (n, n))
    assert not A.is_coalesced()
    _loss(op, A, B, G).backward()
    w_ref = w.detach().clone().requires_grad_()
    _loss(dense_op, _dense(idx, w_ref, n), B, G).backward()
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", [k for k, v in OPS.items() if v[1] is not None])
def test_leaf_gradient_means_dl_da_and_an_sgd_step_moves_the_matrix_by_it(name: str) -> None:
    op, dense_op, lower = OPS[name]
    idx, local, n = p1_assembly(refine=1, lower=lower)
    w = _weights(local, 3).detach()
    B = torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    G = torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(5))
    A = torch.sparse_coo_tensor(idx, w.clone(), (n, n)).requires_grad_()
    _loss(op, A, B, G).backward()
    D = _dense(idx, w, n).requires_grad_()
    _loss(dense_op, D, B, G).backward()
    dLdA = D.grad * _mask(A)
    assert torch.equal(A.grad._indices(), idx)  # the input's own (uncoalesced) index list
    torch.testing.assert_close(A.grad.to_dense(), dLdA, rtol=1e-10, atol=1e-12)
    C = A.grad.coalesce()
    torch.testing.assert_close(C._values(), dLdA[tuple(C._indices())], rtol=1e-10, atol=1e-12)
    assert_sparse_grad_matches(A, A.grad, D.grad, rtol=1e-10, atol=1e-12)
    before = A.detach().to_dense()
    lr = 0.1
    with torch.no_grad():
        A._values().sub_(lr * A.grad._values())
    torch.testing.assert_close(A.detach().to_dense() - before, -lr * dLdA, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", [k for k, v in OPS.items() if v[1] is not None])
@pytest.mark.parametrize("leaf", [True, False])
def test_accumulation_two_uses_and_two_backward_calls(name: str, leaf: bool) -> None:
    op, dense_op, lower = OPS[name]
    idx, local, n = p1_assembly(refine=1, lower=lower)
    w = _weights(local, 6)
    B = torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(7))
    G = torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(8))

    def losses(f: Callable[..., torch.Tensor], M: torch.Tensor) -> list[torch.Tensor]:
        return [_loss(f, M, B, G) + _loss(f, M, 2 * B + 1, G), _loss(f, M, B - 1, G)]

    w_ref = w.detach().clone().requires_grad_()
    D = _dense(idx, w_ref, n)
    if leaf:
        D = D.detach().requires_grad_()
        A = torch.sparse_coo_tensor(idx, w.detach(), (n, n)).requires_grad_()
    else:
        A = torch.sparse_coo_tensor(idx, w, (n, n))
    first, second = losses(op, A)
    first.backward(retain_graph=not leaf)
    second.backward()
    d_first, d_second = losses(dense_op, D)
    d_first.backward(retain_graph=not leaf)
    d_second.backward()
    if leaf:
        assert torch.equal(A.grad._indices(), idx)
        torch.testing.assert_close(A.grad.to_dense(), D.grad * _mask(A), rtol=1e-10, atol=1e-11)
    else:
        torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-10, atol=1e-11)


def test_sparse_values_of_an_uncoalesced_leaf_means_the_gradient_of_the_summed_matrix() -> None:
    # sum(values) is the sum of the matrix: dL/dA = 1 at every stored coordinate, whatever the
    # multiplicity; the gradient's dense meaning is exactly that mask
    idx, local, n = p1_assembly(refine=1)
    A = torch.sparse_coo_tensor(idx, local.clone(), (n, n)).requires_grad_()
    sparse_values(A).sum().backward()
    torch.testing.assert_close(A.grad.to_dense(), _mask(A))


def test_sampled_product_on_an_uncoalesced_pattern_means_u_vt_on_the_pattern() -> None:
    idx, local, n = p1_assembly(refine=1)
    A = torch.sparse_coo_tensor(idx, local, (n, n))
    U = torch.randn(n, 3, dtype=F64, requires_grad=True)
    V = torch.randn(n, 3, dtype=F64, requires_grad=True)
    S = sampled_product(A, U, V)
    assert torch.equal(S._indices(), idx)
    M = _mask(A)
    torch.testing.assert_close(S.to_dense(), (U @ V.T).detach() * M)
    W = torch.randn(n, n, dtype=F64)
    (S.to_dense() * W).sum().backward()
    U2, V2 = U.detach().clone().requires_grad_(), V.detach().clone().requires_grad_()
    ((U2 @ V2.T) * M * W).sum().backward()
    torch.testing.assert_close(U.grad, U2.grad)
    torch.testing.assert_close(V.grad, V2.grad)


@given(
    seed=st.integers(0, 2**16),
    copies=st.integers(2, 4),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    batch=st.sampled_from([None, 2]),
)
def test_any_multiplicity_any_dtype_batched_or_not(
    seed: int, copies: int, dtype: torch.dtype, batch: int | None
) -> None:
    """Random coordinates stored up to ``copies`` times in shuffled order: sparse_mm's gradients
    (constructor values and leaf) equal dense autograd for 2-D and batched COO."""
    g = torch.Generator().manual_seed(seed)
    n, base = 5, 7
    shape = (n, n) if batch is None else (batch, n, n)
    coords = torch.stack([torch.randint(0, s, (base,), generator=g) for s in shape])
    reps = torch.randint(1, copies + 1, (base,), generator=g)
    idx = coords.repeat_interleave(reps, dim=1)
    idx = idx[:, torch.randperm(idx.shape[1], generator=g)]
    w = torch.randn(idx.shape[1], generator=g, dtype=dtype).requires_grad_()
    B = torch.randn(*shape[:-2], n, 2, generator=g, dtype=dtype)
    A = torch.sparse_coo_tensor(idx, w, shape)
    (sparse_mm(A, B) ** 2).sum().backward()
    w_ref = w.detach().clone().requires_grad_()
    D = torch.zeros(shape, dtype=dtype).index_put(tuple(idx), w_ref, accumulate=True)
    ((D @ B) ** 2).sum().backward()
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=tol, atol=tol)
