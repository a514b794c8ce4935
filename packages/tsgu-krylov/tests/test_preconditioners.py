"""Jacobi, IC(0) and ILU(0): exact incomplete factors, their use by every solver, errors."""

from __future__ import annotations

import pytest
import torch

from tsgu_krylov import IC0, ILU0, Jacobi, bicgstab, gmres, linear_cg, make_preconditioner, minres
from tsgu_ops.testing import build_case, grid_operator


def reference_ilu0(D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Textbook IKJ ILU(0) on the nonzero pattern of a small dense matrix (unit lower L, U)."""
    n = D.shape[0]
    a = D.clone()
    nz = D != 0
    for i in range(1, n):
        for k in range(i):
            if not nz[i, k]:
                continue
            a[i, k] = a[i, k] / a[k, k]
            for j in range(k + 1, n):
                if nz[i, j]:
                    a[i, j] = a[i, j] - a[i, k] * a[k, j]
    L = torch.tril(a, -1) + torch.eye(n, dtype=D.dtype)
    U = torch.triu(a)
    return L, U


def reference_ic0(D: torch.Tensor) -> torch.Tensor:
    """Textbook IC(0) (lower factor) on the pattern of the lower triangle of ``D``."""
    n = D.shape[0]
    L = torch.zeros_like(D)
    nz = D != 0
    for j in range(n):
        L[j, j] = torch.sqrt(D[j, j] - (L[j, :j] ** 2).sum())
        for i in range(j + 1, n):
            if nz[i, j]:
                L[i, j] = (D[i, j] - (L[i, :j] * L[j, :j]).sum()) / L[j, j]
    return L


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_ilu0_reaches_the_sequential_factors(layout):
    case = build_case(4, (15, 15), 0.25, layout, torch.int64, torch.float64, "dominant")
    L, U = reference_ilu0(case.dense)
    P = ILU0(case.sparse, sweeps=15)  # at most the dependency depth: exact
    torch.testing.assert_close(P.L.to_dense(), L)  # unit diagonal stored
    torch.testing.assert_close(P.U.to_dense(), U)
    R = torch.randn(15, 2, dtype=torch.float64)
    torch.testing.assert_close(P(R), torch.linalg.solve(L @ U, R))
    torch.testing.assert_close(P.T(R), torch.linalg.solve((L @ U).T, R))


def test_ic0_reaches_the_sequential_factor_and_is_symmetric():
    case = build_case(6, (14, 14), 0.3, torch.sparse_csr, torch.int32, torch.float64, "spd")
    Lref = reference_ic0(case.dense)
    P = IC0(case.sparse, sweeps=14)
    torch.testing.assert_close(P.L.to_dense(), Lref)
    R = torch.randn(14, 3, dtype=torch.float64)
    torch.testing.assert_close(P(R), torch.linalg.solve(Lref @ Lref.T, R))
    torch.testing.assert_close(P.T(R), P(R))


def test_ic0_on_a_laplacian_equals_ilu0_symmetrised():
    A = grid_operator((6, 6))
    ic = IC0(A, sweeps=40).L.to_dense()
    ilu = ILU0(A, sweeps=40)
    U = ilu.U.to_dense()
    # U = D Lᵀ with D = diag(U): IC's L = (unit L) D^{1/2}
    torch.testing.assert_close(ic, (U.T / U.diagonal().sqrt()), rtol=1e-10, atol=1e-12)


def test_batched_preconditioners_act_per_item():
    case = build_case(8, (3, 9, 9), 0.3, torch.sparse_coo, torch.int64, torch.float64, "spd")
    R = torch.randn(3, 9, 2, dtype=torch.float64)
    for P in (Jacobi(case.sparse), IC0(case.sparse, sweeps=9), ILU0(case.sparse, sweeps=9)):
        out = P(R)
        for i in range(3):
            single = (
                type(P)(case.dense[i].to_sparse())
                if isinstance(P, Jacobi)
                else type(P)(case.dense[i].to_sparse(), sweeps=9)
            )
            torch.testing.assert_close(out[i], single(R[i]))


def test_jacobi_divides_by_the_diagonal_and_rejects_a_zero_one():
    A = torch.tensor([[2.0, 1.0], [0.0, 4.0]]).to_sparse_csr()
    torch.testing.assert_close(Jacobi(A)(torch.ones(2, 1)), torch.tensor([[0.5], [0.25]]))
    with pytest.raises(ValueError, match="zero or missing diagonal"):
        Jacobi(torch.tensor([[0.0, 1.0], [1.0, 2.0]]).to_sparse())


def test_missing_diagonal_and_indefinite_matrix_are_rejected():
    with pytest.raises(ValueError, match="diagonal entry of A must be stored"):
        ILU0(torch.tensor([[0.0, 1.0], [1.0, 2.0]]).to_sparse())
    with pytest.raises(ValueError, match="IC\\(0\\) breakdown"):
        IC0(torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64).to_sparse())
    with pytest.raises(ValueError, match="preconditioner must be one of"):
        make_preconditioner(grid_operator((2,)), "ssor")
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        ILU0([[1.0]])


@pytest.mark.parametrize("name", ["jacobi", "ic0", "ilu0"])
def test_every_solver_accepts_every_preconditioner(name):
    A = grid_operator((10, 10)).to_sparse_csr()
    B = torch.randn(100, 2, dtype=torch.float64)
    P = make_preconditioner(A, name)
    ref = torch.linalg.solve(A.to_dense(), B)
    its = {}
    for solve in (linear_cg, minres, bicgstab, gmres):
        X, info = solve(A, B, rtol=1e-10, preconditioner=P, return_info=True)
        torch.testing.assert_close(X, ref, rtol=1e-6, atol=1e-8)
        _, plain = solve(A, B, rtol=1e-10, return_info=True)
        its[solve.__name__] = (info.iterations, plain.iterations)
    if name != "jacobi":  # the Laplacian has a constant diagonal: Jacobi changes nothing
        assert all(p < q for p, q in its.values()), its
