"""factor_inverse_diagonal: diag(A⁻¹) from a given triangular factor, against dense torch.linalg.inv."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tsgu_cholesky as tc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tsgu_cholesky._selinv_adjoint import closed_lower_pattern

from tsgu_ops.testing import (
    assert_sparse_grad_matches,
    assert_unchanged,
    build_case,
    clone_input,
    dense_like,
    sparse_matrices,
)

F64 = torch.float64


def tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-10, "atol": 1e-12} if dtype == F64 else {"rtol": 1e-4, "atol": 1e-5}


def leaf(A: torch.Tensor) -> torch.Tensor:
    return A.detach().clone().requires_grad_()


def dense_llt_variance(Ld: torch.Tensor) -> torch.Tensor:
    return torch.linalg.inv(Ld @ Ld.mT).diagonal(dim1=-2, dim2=-1)


def dense_ldlt_variance(Sd: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    n = Sd.shape[-1]
    M = torch.eye(n, dtype=Sd.dtype) + Sd
    return torch.linalg.inv((M * D.unsqueeze(-2)) @ M.mT).diagonal(dim1=-2, dim2=-1)


lower_factors = sparse_matrices(structures=("lower",), max_size=7, allow_empty=True)
strict_factors = sparse_matrices(structures=("strict_lower",), max_size=7, allow_empty=True)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])  # kernel: an env var
@given(lower_factors, st.data())
def test_llt_inverse_diagonal_and_gradient_match_dense(kernel, case, data):
    L = leaf(case.sparse)
    before = clone_input(case.sparse)
    v = tc.factor_inverse_diagonal(L)
    Ld = case.dense.double().requires_grad_()
    ref = dense_llt_variance(Ld)
    assert v.shape == ref.shape and v.dtype == L.dtype
    torch.testing.assert_close(v.double(), ref.detach(), **tol(L.dtype))
    w = data.draw(dense_like(ref.shape))
    (v * w.to(v.dtype)).sum().backward()
    (ref * w).sum().backward()
    assert_sparse_grad_matches(L, L.grad, Ld.grad.to(L.dtype), **tol(L.dtype))
    assert_unchanged(before, L)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])  # kernel: an env var
@given(strict_factors, st.data(), st.sampled_from([(), (2,), (3, 1)]))
def test_ldlt_inverse_diagonal_and_gradients_match_dense(kernel, case, data, lead):
    S = leaf(case.sparse)
    shape = (*lead, *case.sparse.shape[:-2], case.sparse.shape[-1])
    D = (data.draw(dense_like(shape)) * 0.4 + 1.0).to(S.dtype).requires_grad_()
    before = clone_input(D)
    v = tc.factor_inverse_diagonal(S, D)
    Sd = case.dense.double().requires_grad_()
    Dr = D.detach().double().requires_grad_()
    ref = dense_ldlt_variance(Sd, Dr)
    assert v.shape == ref.shape
    torch.testing.assert_close(v.double(), ref.detach(), **tol(S.dtype))
    w = data.draw(dense_like(ref.shape))
    (v * w.to(v.dtype)).sum().backward()
    (ref * w).sum().backward()
    assert_sparse_grad_matches(S, S.grad, Sd.grad.to(S.dtype), **tol(S.dtype))
    torch.testing.assert_close(D.grad.double(), Dr.grad, **tol(S.dtype))
    assert_unchanged(before, D)


def test_a_factor_whose_pattern_is_not_closed_gets_its_fill():
    # column 0 couples rows 2 and 4 (and 1), which the factor itself does not connect: fill (4, 2), (2, 1), (4, 1)
    n = 5
    Ld = torch.eye(n, dtype=F64) * 2.0
    Ld[1, 0], Ld[2, 0], Ld[4, 0], Ld[3, 2] = 0.7, -0.4, 0.9, 0.3
    v = tc.factor_inverse_diagonal(Ld.to_sparse_csr())
    torch.testing.assert_close(v, dense_llt_variance(Ld), rtol=1e-12, atol=0)
    rows, cols = np.nonzero(np.tril(Ld.numpy(), -1))
    indptr, indices = closed_lower_pattern(rows, cols, n)
    got = {(int(indices[t]), j) for j in range(n) for t in range(indptr[j], indptr[j + 1])}
    # the elimination closure is the pattern of the Cholesky factor of a generic SPD matrix with
    # the pattern of L + Lᵀ (dense reference; L Lᵀ itself would not do: its factor is L)
    g = torch.where(Ld != 0, torch.rand(n, n, dtype=F64) + 1.0, torch.zeros((), dtype=F64)).tril(-1)
    G = g + g.T + torch.eye(n, dtype=F64) * 10.0
    C = torch.linalg.cholesky(G)
    want = {(i, j) for i in range(n) for j in range(n) if abs(float(C[i, j])) > 1e-12}
    assert got == want
    assert {(2, 1), (4, 1), (4, 2)} <= got


def test_identity_factor_and_diagonal_only():
    n = 4
    L = torch.sparse_coo_tensor(
        torch.arange(n).repeat(2, 1), torch.tensor([1.0, -2.0, 0.5, 4.0], dtype=F64), (n, n)
    )
    torch.testing.assert_close(
        tc.factor_inverse_diagonal(L), 1 / torch.tensor([1.0, 4.0, 0.25, 16.0], dtype=F64)
    )
    S = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.int64), torch.zeros(0, dtype=F64), (n, n))
    D = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=F64)
    torch.testing.assert_close(tc.factor_inverse_diagonal(S, D), 1 / D)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("batched", [False, True])
def test_gradient_accumulates_over_two_uses_and_two_backward_calls(layout, batched):
    shape = (2, 5, 5) if batched else (5, 5)
    case = build_case(3, shape, 0.6, layout, torch.int32, F64, "lower")
    L = leaf(case.sparse)
    Ld = case.dense.clone().requires_grad_()
    for _ in range(2):
        (tc.factor_inverse_diagonal(L).sum() + 2.0 * tc.factor_inverse_diagonal(L).pow(2).sum()).backward()
        ref = dense_llt_variance(Ld)
        (ref.sum() + 2.0 * ref.pow(2).sum()).backward()
    assert_sparse_grad_matches(L, L.grad, Ld.grad, rtol=1e-10, atol=1e-12)


def test_second_derivative_raises_clearly():
    L = leaf(build_case(1, (4, 4), 0.5, torch.sparse_coo, torch.int64, F64, "lower").sparse)
    (g,) = torch.autograd.grad(tc.factor_inverse_diagonal(L).sum(), [L], create_graph=False)
    assert g.layout == torch.sparse_coo
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(tc.factor_inverse_diagonal(L).sum(), [L], create_graph=True)


def test_bad_input():
    n = 4
    good = torch.eye(n, dtype=F64)
    with pytest.raises(ValueError, match="L must be a sparse COO or CSR"):
        tc.factor_inverse_diagonal(good)
    with pytest.raises(TypeError, match="L must be"):
        tc.factor_inverse_diagonal("L")  # type: ignore[arg-type]
    upper = good.clone()
    upper[0, 2] = 0.5
    with pytest.raises(
        ValueError, match=r"lower triangular: it stores an entry above the diagonal at \(0, 2\)"
    ):
        tc.factor_inverse_diagonal(upper.to_sparse())
    missing = good.clone()
    missing[2, 2] = 0.0
    missing[3, 1] = 1.0
    with pytest.raises(ValueError, match=r"nonzero diagonal .*\(2, 2\) is missing"):
        tc.factor_inverse_diagonal(missing.to_sparse())
    zero = torch.sparse_coo_tensor(
        torch.arange(n).repeat(2, 1), torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=F64), (n, n)
    )
    with pytest.raises(ValueError, match=r"\(1, 1\) is zero"):
        tc.factor_inverse_diagonal(zero)
    D = torch.ones(n, dtype=F64)
    with pytest.raises(ValueError, match="strictly lower triangular"):
        tc.factor_inverse_diagonal(good.to_sparse(), D)
    strict = torch.zeros(n, n, dtype=F64)
    strict[2, 0] = 1.0
    S = strict.to_sparse()
    with pytest.raises(ValueError, match="positive and finite"):
        tc.factor_inverse_diagonal(S, -D)
    with pytest.raises(ValueError, match=r"diagonal must have shape \(\.\.\., 4\)"):
        tc.factor_inverse_diagonal(S, torch.ones(n + 1, dtype=F64))
    with pytest.raises(TypeError, match="same dtype"):
        tc.factor_inverse_diagonal(S, D.float())
    nan = torch.sparse_coo_tensor(
        torch.arange(n).repeat(2, 1), torch.tensor([1.0, float("nan"), 1.0, 1.0], dtype=F64), (n, n)
    )
    with pytest.raises(ValueError, match="finite"):
        tc.factor_inverse_diagonal(nan)
