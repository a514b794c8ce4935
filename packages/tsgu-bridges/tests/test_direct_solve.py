"""The SciPy bridge's default direct solve: SuperLU options, gradients PyTorch accumulates, real matrices."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch

from tsgu_bridges import sparse_solve_c4t
from tsgu_ops.testing import assert_sparse_grad_matches, build_case

F64 = torch.float64


class _SpluSpy:
    """Records the keywords of every ``splu`` call (and may hand back a spoiled factor)."""

    def __init__(self, spoil_symmetric_mode: bool = False) -> None:
        self.calls: list[dict[str, object]] = []
        self.spoil = spoil_symmetric_mode
        self.orig = sla.splu

    def __call__(self, A, **kw):  # type: ignore[no-untyped-def]
        self.calls.append(kw)
        if self.spoil and kw.get("options", {}).get("SymmetricMode"):
            # a factor of another matrix: what an unstable pivot sequence amounts to
            B = A.copy()
            B.data = B.data * np.linspace(0.5, 1.5, B.nnz)
            return self.orig(B, **kw)
        return self.orig(A, **kw)


@pytest.fixture
def splu_spy(monkeypatch):
    spy = _SpluSpy()
    monkeypatch.setattr(sla, "splu", spy)
    return spy


def _laplace_2d(k: int) -> torch.Tensor:
    T = 2 * torch.eye(k, dtype=F64) - torch.diag(torch.ones(k - 1, dtype=F64), 1)
    T = T - torch.diag(torch.ones(k - 1, dtype=F64), -1)
    return torch.kron(T, torch.eye(k, dtype=F64)) + torch.kron(torch.eye(k, dtype=F64), T)


# ----------------------------------------------------------------------------- SuperLU options
def test_structurally_symmetric_matrices_use_minimum_degree_in_symmetric_mode(splu_spy):
    # The former default (MMD_AT_PLUS_A without symmetric mode) took 10 s on the corpus's 16k
    # P2 triangle Laplacian, 6x COLAMD; in symmetric mode it is the fastest ordering measured.
    A = _laplace_2d(6)
    sparse_solve_c4t(A.to_sparse_csr(), torch.ones(36, dtype=F64))
    assert splu_spy.calls == [
        {"permc_spec": "MMD_AT_PLUS_A", "diag_pivot_thresh": 0.01, "options": {"SymmetricMode": True}}
    ]


def test_unsymmetric_patterns_use_scipys_default_colamd(splu_spy):
    A = _laplace_2d(5)
    A[0, 7] = 0.5  # one entry without its mirror
    sparse_solve_c4t(A.to_sparse(), torch.ones(25, dtype=F64))
    assert splu_spy.calls == [{"permc_spec": "COLAMD"}]


def test_callers_superlu_keywords_are_passed_as_given(splu_spy):
    A = _laplace_2d(4).to_sparse_csr()
    X = sparse_solve_c4t(A, torch.ones(16, dtype=F64), permc_spec="NATURAL")
    assert splu_spy.calls == [{"permc_spec": "NATURAL"}]
    torch.testing.assert_close(X, torch.linalg.solve(A.to_dense(), torch.ones(16, dtype=F64)))


def test_a_bad_symmetric_mode_factor_is_caught_and_replaced(monkeypatch):
    spy = _SpluSpy(spoil_symmetric_mode=True)
    monkeypatch.setattr(sla, "splu", spy)
    D = _laplace_2d(5) + torch.diag(torch.linspace(0, 1, 25, dtype=F64))
    A = D.to_sparse_csr().requires_grad_()
    B = torch.linspace(-1, 2, 50, dtype=F64).reshape(25, 2)
    X = sparse_solve_c4t(A, B)
    assert [c.get("permc_spec") for c in spy.calls] == ["MMD_AT_PLUS_A", "COLAMD"]
    torch.testing.assert_close(X, torch.linalg.solve(D, B))
    X.sum().backward()  # the backward pass reuses the good factor
    Dd = D.clone().requires_grad_()
    torch.linalg.solve(Dd, B).sum().backward()
    assert_sparse_grad_matches(A, A.grad, Dd.grad, rtol=1e-8, atol=1e-10)


def test_indefinite_structurally_symmetric_matrix_with_zero_diagonal_block():
    # a saddle-point matrix [[K, Cᵀ], [C, 0]]: diagonal pivots fail on the zero block
    g = torch.Generator().manual_seed(3)
    K = _laplace_2d(3)
    C = torch.zeros(3, 9, dtype=F64)
    C[0, 0], C[1, 4], C[2, 8] = 1.0, 1.0, 1.0
    C = C + 0.1 * torch.rand(3, 9, dtype=F64, generator=g) * (C != 0)
    D = torch.cat([torch.cat([K, C.T], 1), torch.cat([C, torch.zeros(3, 3, dtype=F64)], 1)])
    B = torch.randn(12, 2, dtype=F64, generator=g)
    X = sparse_solve_c4t(D.to_sparse(), B)
    torch.testing.assert_close(X, torch.linalg.solve(D, B), rtol=1e-10, atol=1e-12)


# -------------------------------------------------------------------- gradient accumulation
@pytest.mark.parametrize(
    ("layout", "index_dtype"),
    [(torch.sparse_coo, torch.int64), (torch.sparse_csr, torch.int32), (torch.sparse_csr, torch.int64)],
)
def test_two_uses_of_A_and_two_backward_calls_accumulate_like_dense_autograd(layout, index_dtype):
    case = build_case(21, (8, 8), 0.4, layout, index_dtype, F64, "dominant")
    g = torch.Generator().manual_seed(21)
    B1, B2 = torch.randn(8, 2, dtype=F64, generator=g), torch.randn(8, dtype=F64, generator=g)
    w = torch.randn(8, 2, dtype=F64, generator=g)

    def loss(solve, A):  # type: ignore[no-untyped-def]
        return (solve(A, B1) * w).sum() + solve(A, B2).square().sum()

    A = case.sparse.detach().clone().requires_grad_()
    loss(sparse_solve_c4t, A).backward()
    loss(sparse_solve_c4t, A).backward()
    D = case.dense.clone().requires_grad_()
    loss(torch.linalg.solve, D).backward()
    loss(torch.linalg.solve, D).backward()
    grad = A.grad
    assert grad is not None and grad.layout == layout
    if layout == torch.sparse_coo:  # PyTorch adds COO gradients by concatenating their entries
        grad = grad.coalesce()
        torch.testing.assert_close(grad.indices(), A.detach().coalesce().indices())
        torch.testing.assert_close(grad.values(), D.grad[tuple(grad.indices())], rtol=1e-8, atol=1e-10)
    else:
        assert_sparse_grad_matches(A, grad, D.grad, rtol=1e-8, atol=1e-10)


# -------------------------------------------------------------------------- real matrices
def test_default_direct_solve_equals_spsolve_on_every_corpus_matrix(real_corpus):
    for i, m in enumerate(real_corpus):
        layout = (torch.sparse_csr, torch.sparse_coo)[i % 2]
        index_dtype = torch.int32 if layout == torch.sparse_csr and i % 4 == 0 else torch.int64
        A = m.torch(layout, F64, index_dtype)
        B = torch.from_numpy(np.random.default_rng(i).standard_normal((m.n, 2)))
        X = sparse_solve_c4t(A, B)
        ref = sla.spsolve(m.matrix.tocsc(), B.numpy())
        err = np.linalg.norm(X.numpy() - ref) / np.linalg.norm(ref)
        assert err < 1e-9, f"{m.name}: relative difference {err:.1e} from spsolve"


@pytest.mark.parametrize("name", ["pyamg:recirc_flow", "skfem:p1-tri-laplace"])
def test_gradient_on_small_corpus_matrices_equals_dense_autograd(real_corpus, name):
    m = next(x for x in real_corpus if x.name == name)
    A = m.torch(torch.sparse_csr, F64, torch.int32).requires_grad_()
    g = torch.Generator().manual_seed(5)
    B = torch.randn(m.n, 3, dtype=F64, generator=g).requires_grad_()
    w = torch.randn(m.n, 3, dtype=F64, generator=g)
    (sparse_solve_c4t(A, B) * w).sum().backward()
    D = torch.from_numpy(m.matrix.toarray()).requires_grad_()
    Bd = B.detach().clone().requires_grad_()
    (torch.linalg.solve(D, Bd) * w).sum().backward()
    scale = float(D.grad.abs().max())
    assert_sparse_grad_matches(A, A.grad, D.grad, rtol=1e-7, atol=1e-9 * scale)
    torch.testing.assert_close(B.grad, Bd.grad, rtol=1e-7, atol=1e-9 * float(Bd.grad.abs().max()))
