"""SolverPair: the one adapter from a (solve, transpose_solve) pair to an implicit-solve kernel."""

from __future__ import annotations

import torch

from tsgu_ops.internal import SolverPair, solve_sparse

F64 = torch.float64


class DenseSolvePair(SolverPair):
    """A test backend: dense matrices, counting how often each is built."""

    built: list[bool]

    def build(self, A, values, transposed):  # type: ignore[no-untyped-def]
        self.built.append(transposed)
        S = super().build(A, values, transposed)
        return S.to_dense()

    def __call__(self, A, values, B, transposed):  # type: ignore[no-untyped-def]
        fn, on_transpose = self.pick(transposed)
        return fn(self.matrix(A, values, on_transpose), B)


def _pair(solve, transpose_solve=None) -> DenseSolvePair:  # type: ignore[no-untyped-def]
    p = DenseSolvePair(solve, transpose_solve)
    p.built = []
    return p


def test_pick_hands_a_lone_solve_the_transpose_and_a_given_transpose_solve_the_matrix() -> None:
    f, g = object(), object()
    assert _pair(f).pick(False) == (f, False) and _pair(f).pick(True) == (f, True)
    assert _pair(f, f).pick(True) == (f, True)
    assert _pair(f, g).pick(False) == (f, False) and _pair(f, g).pick(True) == (g, False)


def test_gradients_through_a_pair_equal_dense_autograd_and_each_matrix_is_built_once() -> None:
    g = torch.Generator().manual_seed(0)
    D = torch.randn(5, 5, dtype=F64, generator=g) + 5 * torch.eye(5, dtype=F64)
    A = D.to_sparse_csr().requires_grad_()
    B = torch.randn(5, 2, dtype=F64, generator=g, requires_grad=True)
    pair = _pair(torch.linalg.solve)
    X = solve_sparse(A, B, pair)
    (X**2).sum().backward()
    assert sorted(pair.built) == [False, True]  # forward: A; backward: Aᵀ for the lone solve
    Dr, Br = D.clone().requires_grad_(), B.detach().clone().requires_grad_()
    (torch.linalg.solve(Dr, Br) ** 2).sum().backward()
    torch.testing.assert_close(X, torch.linalg.solve(D, B.detach()))
    torch.testing.assert_close(B.grad, Br.grad)
    torch.testing.assert_close(A.grad.to_dense(), Dr.grad * (D != 0))
