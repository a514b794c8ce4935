"""Jacobi, IC(0) and ILU(0): exact incomplete factors, breakdown errors, the sweeps option, the
symmetric choice for CG/MINRES, and their use by every solver.

Every test runs with both kernels of the CPU factorisations and triangular solves: the compiled
loops (numba) and the PyTorch path (the level schedule, the native triangular solve).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from tsgu_krylov import (
    IC0,
    ILU0,
    Jacobi,
    bicgstab,
    gmres,
    linear_cg,
    make_preconditioner,
    minres,
    sparse_generic_solve,
)
from tsgu_ops.testing import build_case, grid_operator, sparse_matrices


@pytest.fixture(autouse=True, params=["numba", "torch"])
def kernel(request, monkeypatch):
    from tsgu_krylov import _compiled, _levels

    monkeypatch.setenv(_compiled.KERNEL_ENV, request.param)
    _levels.clear_cache()
    yield request.param
    _levels.clear_cache()


def stored_mask(A: torch.Tensor) -> torch.Tensor:
    """Where ``A`` stores an entry (explicit zeros included), as a dense bool ``(…, n, n)``."""
    C = A.to_sparse_coo().coalesce() if A.layout != torch.sparse_coo else A.coalesce()
    mask = torch.zeros(C.shape, dtype=torch.bool)
    mask[tuple(C.indices())] = True
    return mask


def reference_ilu0(D: torch.Tensor, nz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Textbook IKJ ILU(0) of a small dense matrix on the pattern ``nz`` (unit lower L, U)."""
    n = D.shape[0]
    a, mask = D.tolist(), nz.tolist()
    for i in range(1, n):
        for k in range(i):
            if not mask[i][k]:
                continue
            a[i][k] = a[i][k] / a[k][k]
            for j in range(k + 1, n):
                if mask[i][j] and mask[k][j]:
                    a[i][j] = a[i][j] - a[i][k] * a[k][j]
    F = torch.tensor(a, dtype=D.dtype) * nz
    return torch.tril(F, -1) + torch.eye(n, dtype=D.dtype), torch.triu(F)


def reference_ic0(D: torch.Tensor, nz: torch.Tensor) -> torch.Tensor:
    """Textbook IC(0) (lower factor) on the lower triangle of the pattern ``nz``."""
    n = D.shape[0]
    L = torch.zeros_like(D)
    for j in range(n):
        L[j, j] = torch.sqrt(D[j, j] - (L[j, :j] ** 2).sum())
        for i in range(j + 1, n):
            if nz[i, j]:
                L[i, j] = (D[i, j] - (L[i, :j] * L[j, :j]).sum()) / L[j, j]
    return L


def items(t: torch.Tensor) -> list[torch.Tensor]:
    return list(t) if t.dim() == 3 else [t]


@settings(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=sparse_matrices(
        square=True,
        structures=("dominant", "spd"),
        value_dtypes=(torch.float64,),
        min_size=1,
        max_size=9,
    )
)
def test_ilu0_equals_the_sequential_factors(case):
    """Any layout, index dtype, batch, duplicate COO entries: the IKJ factors, item by item."""
    P = ILU0(case.sparse)
    b = case.sparse.shape[0] if case.sparse.dim() == 3 else 1
    n = case.sparse.shape[-1]
    L_all, U_all = P.L.to_dense(), P.U.to_dense()
    for i, (D, nz) in enumerate(zip(items(case.dense), items(stored_mask(case.sparse)))):
        L, U = reference_ilu0(D, nz | torch.eye(n, dtype=torch.bool))
        block = slice(i * n, (i + 1) * n)
        torch.testing.assert_close(L_all[block, block], L)  # unit diagonal stored
        torch.testing.assert_close(U_all[block, block], U)
    assert b * n == P.L.shape[0]
    R = torch.randn(*case.sparse.shape[:-1], 2, dtype=torch.float64)
    for i, (D, nz) in enumerate(zip(items(case.dense), items(stored_mask(case.sparse)))):
        L, U = reference_ilu0(D, nz | torch.eye(n, dtype=torch.bool))
        r = items(R)[i]
        torch.testing.assert_close(items(P(R))[i], torch.linalg.solve(L @ U, r))
        torch.testing.assert_close(items(P.T(R))[i], torch.linalg.solve((L @ U).T, r))
        # one column: the vector loops (on the CPU, the chain layout of the prepared factors)
        torch.testing.assert_close(items(P(R[..., :1]))[i], torch.linalg.solve(L @ U, r[:, :1]))
        torch.testing.assert_close(items(P.T(R[..., :1]))[i], torch.linalg.solve((L @ U).T, r[:, :1]))


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("seed", [0, 1])
def test_ic0_equals_the_sequential_factor_and_is_symmetric(layout, seed):
    case = build_case(seed, (14, 14), 0.3, layout, torch.int32, torch.float64, "spd")
    nz = stored_mask(case.sparse)
    Lref = reference_ic0(case.dense, nz)
    P = IC0(case.sparse)
    torch.testing.assert_close(P.L.to_dense(), Lref)
    R = torch.randn(14, 3, dtype=torch.float64)
    torch.testing.assert_close(P(R), torch.linalg.solve(Lref @ Lref.T, R))
    torch.testing.assert_close(P.T(R), P(R))


def test_ic0_is_ilu0_scaled_on_a_symmetric_matrix():
    """Exact factors: for a symmetric A, U = D Lᵀ and IC(0)'s factor is L D^½ (no sweeps needed)."""
    A = grid_operator((7, 6))
    ic = IC0(A).L.to_dense()
    U = ILU0(A).U.to_dense()
    torch.testing.assert_close(ic, U.T / U.diagonal().sqrt(), rtol=1e-12, atol=1e-14)


def test_batched_preconditioners_act_per_item():
    case = build_case(8, (3, 9, 9), 0.3, torch.sparse_coo, torch.int64, torch.float64, "spd")
    R = torch.randn(3, 9, 2, dtype=torch.float64)
    for P in (Jacobi(case.sparse), IC0(case.sparse), ILU0(case.sparse)):
        out = P(R)
        for i in range(3):
            torch.testing.assert_close(out[i], type(P)(case.dense[i].to_sparse())(R[i]))


def test_unsorted_csr_and_uncoalesced_coo_give_the_factors_of_the_summed_matrix():
    D = torch.tensor([[4.0, 1.0, 0.0, 1.0], [1.0, 5.0, 2.0, 0.0], [0.0, 2.0, 6.0, 1.0], [1.0, 0.0, 1.0, 7.0]])
    D = D.double()
    ref = ILU0(D.to_sparse_csr())
    # the same matrix with (0, 0) split in two entries and the entries shuffled
    C = D.to_sparse().coalesce()
    idx = torch.cat([C.indices(), torch.tensor([[0], [0]])], 1)
    vals = torch.cat([C.values(), torch.tensor([-1.0], dtype=torch.float64)])
    vals[0] += 1.0
    perm = torch.randperm(vals.numel(), generator=torch.Generator().manual_seed(0))
    coo = torch.sparse_coo_tensor(idx[:, perm], vals[perm], (4, 4))
    before = coo._values().clone()
    P = ILU0(coo)
    torch.testing.assert_close(P.U.to_dense(), ref.U.to_dense())
    torch.testing.assert_close(P.L.to_dense(), ref.L.to_dense())
    assert torch.equal(coo._values(), before)  # the input is not modified
    # a CSR tensor whose columns are not sorted within each row
    crow = torch.tensor([0, 3, 6, 9, 12])
    col = torch.tensor([3, 0, 1, 2, 1, 0, 3, 1, 2, 0, 3, 2])
    val = D[torch.repeat_interleave(torch.arange(4), 3), col]
    csr = torch.sparse_csr_tensor(crow, col, val, (4, 4))
    torch.testing.assert_close(ILU0(csr).U.to_dense(), ref.U.to_dense())
    torch.testing.assert_close(IC0(csr).L.to_dense(), IC0(D.to_sparse()).L.to_dense())


def test_jacobi_divides_by_the_diagonal_and_rejects_a_zero_one():
    A = torch.tensor([[2.0, 1.0], [0.0, 4.0]]).to_sparse_csr()
    torch.testing.assert_close(Jacobi(A)(torch.ones(2, 1)), torch.tensor([[0.5], [0.25]]))
    with pytest.raises(ValueError, match="zero or missing diagonal"):
        Jacobi(torch.tensor([[0.0, 1.0], [1.0, 2.0]]).to_sparse())


def test_ilu0_zero_pivot_names_the_row_and_the_pivot():
    # rows 0 and 1 equal on their pattern: u_11 = 2 − 1·2 = 0 exactly, row 2 is fine
    D = torch.tensor([[1.0, 2.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"ILU\(0\) breakdown at row 1: zero pivot 0;"):
        ILU0(D.to_sparse_csr())
    # a pivot that is zero up to rounding counts as zero (dividing by it only amplifies noise):
    # u_11 = 0.3/7 − (1/7)·0.3 is 7e-18 in floating point, not 0
    E = torch.tensor([[7.0, 0.3], [1.0, 0.3 / 7.0]], dtype=torch.float64)
    assert float(E[1, 1] - (E[1, 0] / E[0, 0]) * E[0, 1]) != 0.0
    with pytest.raises(ValueError, match=r"ILU\(0\) breakdown at row 1: zero pivot 6.9"):
        ILU0(E.to_sparse())
    batch = torch.stack([torch.eye(3, dtype=torch.float64) * 2 + 0.5 * D, D]).to_sparse()
    with pytest.raises(ValueError, match=r"breakdown at batch item 1, row 1: zero pivot"):
        ILU0(batch)


def test_ic0_non_positive_pivot_names_the_row_and_the_pivot():
    D = torch.tensor([[4.0, 2.0, 0.0], [2.0, 2.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    # l11² = 2 − 1 = 1, then row 2: 1 − 1 = 0: not positive
    with pytest.raises(ValueError, match=r"IC\(0\) breakdown at row 2: non-positive pivot 0;"):
        IC0(D.to_sparse())
    with pytest.raises(ValueError, match=r"IC\(0\) breakdown at row 1: non-positive pivot -3;"):
        IC0(torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64).to_sparse())


def test_factors_are_never_silently_non_finite():
    with pytest.raises(ValueError, match="non-finite"):
        ILU0(torch.tensor([[1.0, float("nan")], [1.0, 2.0]], dtype=torch.float64).to_sparse())
    with pytest.raises(ValueError, match="non-finite"):
        IC0(torch.tensor([[float("inf"), 1.0], [1.0, 2.0]], dtype=torch.float64).to_sparse())
    # float32 overflow of a factor entry
    D = torch.tensor([[1.0, 1e30], [1e30, 1.0]], dtype=torch.float32)
    with pytest.raises(ValueError, match=r"breakdown at row 1: non-finite pivot -inf"):
        ILU0(D.to_sparse())


def test_sweeps_are_an_explicit_checked_option():
    A = grid_operator((8, 8))
    exact = ILU0(A)
    many = ILU0(A, method="sweeps", sweeps=40)  # depth of the 8×8 grid's dependencies < 40
    torch.testing.assert_close(many.U.to_dense(), exact.U.to_dense(), rtol=1e-10, atol=1e-12)
    few = ILU0(A, method="sweeps")  # 5 sweeps: an approximation, accepted (residual < 1)
    assert few.sweeps == 5 and few.method == "sweeps"
    assert not torch.allclose(few.U.to_dense(), exact.U.to_dense())
    ic = IC0(A, method="sweeps", sweeps=40)
    torch.testing.assert_close(ic.L.to_dense(), IC0(A).L.to_dense(), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"did not converge.*max_residual"):
        ILU0(A, method="sweeps", sweeps=1, max_residual=1e-3)
    with pytest.raises(ValueError, match="did not converge"):
        IC0(A, method="sweeps", sweeps=1, max_residual=1e-3)
    with pytest.raises(ValueError, match="method must be one of"):
        ILU0(A, method="chow")
    with pytest.raises(ValueError, match="sweeps is an option of method='sweeps'"):
        IC0(A, sweeps=5)
    with pytest.raises(ValueError, match="sweeps must be a positive int"):
        ILU0(A, method="sweeps", sweeps=0)
    with pytest.raises(ValueError, match="max_residual must be a positive number"):
        ILU0(A, method="sweeps", max_residual=float("nan"))


def test_make_preconditioner_gives_a_symmetric_one_when_asked():
    A = build_case(3, (12, 12), 0.4, torch.sparse_csr, torch.int64, torch.float64, "spd").sparse
    P = make_preconditioner(A, "ilu0", symmetric=True)
    assert isinstance(P, IC0)
    x, y = torch.randn(12, 1, dtype=torch.float64), torch.randn(12, 1, dtype=torch.float64)
    torch.testing.assert_close((x * P(y)).sum(), (y * P(x)).sum())
    assert float((x * P(x)).sum()) > 0
    assert isinstance(make_preconditioner(A, "ilu0"), ILU0)  # a non-symmetric solver: plain ILU(0)
    N = build_case(3, (12, 12), 0.4, torch.sparse_csr, torch.int64, torch.float64, "dominant").sparse
    with pytest.raises(ValueError, match="needs a symmetric preconditioner, but A is not symmetric"):
        make_preconditioner(N, "ilu0", symmetric=True)
    S = build_case(3, (12, 12), 0.4, torch.sparse_coo, torch.int64, torch.float64, "symmetric").sparse
    with pytest.raises(ValueError, match=r"applied symmetrically, as IC\(0\), which broke down"):
        make_preconditioner(S, "ilu0", symmetric=True)
    with pytest.raises(TypeError, match="symmetric must be a bool"):
        make_preconditioner(A, "ilu0", symmetric="yes")


def test_generic_solve_passes_the_symmetric_choice_to_the_preconditioner():
    """MINRES (the default for a symmetric A) and CG with "ilu0" run with IC(0): SPD and exact."""
    A = build_case(5, (20, 20), 0.3, torch.sparse_csr, torch.int64, torch.float64, "spd").sparse
    B = torch.randn(20, 2, dtype=torch.float64)
    ref = torch.linalg.solve(A.to_dense(), B)
    for solve in (None, "cg", "gmres"):
        X = sparse_generic_solve(A, B, solve, preconditioner="ilu0", rtol=1e-12)
        torch.testing.assert_close(X, ref, rtol=1e-8, atol=1e-10)
    N = build_case(5, (20, 20), 0.3, torch.sparse_csr, torch.int64, torch.float64, "dominant").sparse
    with pytest.raises(ValueError, match="needs a symmetric preconditioner"):
        sparse_generic_solve(N, B, "minres", preconditioner="ilu0")


def test_missing_diagonal_and_malformed_input_are_rejected():
    with pytest.raises(ValueError, match="diagonal entry of A must be stored"):
        ILU0(torch.tensor([[0.0, 1.0], [1.0, 2.0]]).to_sparse())
    with pytest.raises(ValueError, match="diagonal entry of A must be stored"):
        IC0(torch.tensor([[0.0, 1.0], [1.0, 2.0]]).to_sparse())
    with pytest.raises(ValueError, match="preconditioner must be one of"):
        make_preconditioner(grid_operator((2,)), "ssor")
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        ILU0([[1.0]])
    bad = torch.sparse_coo_tensor(
        torch.tensor([[0, 5], [0, 1]]), torch.ones(2), (2, 2), check_invariants=False
    )
    with pytest.raises(ValueError, match="out of range"):
        IC0(bad)


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


def test_the_level_schedule_without_numpy_is_the_same(monkeypatch):
    """The dependency levels come from NumPy when installed, else from PyTorch: same factors."""
    import sys

    import tsgu_krylov._levels as pc
    from tsgu_krylov import _compiled

    monkeypatch.setenv(_compiled.KERNEL_ENV, "torch")  # the level schedule is the PyTorch path
    A = build_case(2, (2, 16, 16), 0.3, torch.sparse_csr, torch.int64, torch.float64, "dominant").sparse
    S = grid_operator((5, 4))
    with_numpy = (ILU0(A), IC0(S))
    calls = []
    original = pc._levels_torch

    def spy(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(pc, "_levels_torch", spy)
    monkeypatch.setitem(sys.modules, "numpy", None)  # `import numpy` now raises ImportError
    pc.clear_cache()  # the analysis is cached per pattern: redo it
    without = (ILU0(A), IC0(S))
    assert len(calls) == 2
    torch.testing.assert_close(without[0].U.to_dense(), with_numpy[0].U.to_dense(), rtol=0, atol=0)
    torch.testing.assert_close(without[0].L.to_dense(), with_numpy[0].L.to_dense(), rtol=0, atol=0)
    torch.testing.assert_close(without[1].L.to_dense(), with_numpy[1].L.to_dense(), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_two_kernels_give_the_same_factors_and_solves(kernel, monkeypatch, dtype):
    """Compiled loops and PyTorch path side by side (batched, non-symmetric, both dtypes)."""
    from tsgu_krylov import _compiled, _levels

    A = build_case(5, (2, 30, 30), 0.2, torch.sparse_csr, torch.int64, dtype, "dominant").sparse
    S = grid_operator((6, 5)).to(dtype)
    R = torch.randn(2, 30, 3, dtype=dtype)
    r = torch.randn(30, dtype=dtype)
    out = {}
    for name in ("numba", "torch"):
        monkeypatch.setenv(_compiled.KERNEL_ENV, name)
        _levels.clear_cache()
        ilu, ic = ILU0(A), IC0(S)
        out[name] = (ilu.L.to_dense(), ilu.U.to_dense(), ic.L.to_dense(), ilu(R), ilu.T(R), ic(r))
        # the compiled solves are prepared at the first application
        assert bool(ilu._tri.compiled) == (name == "numba") and bool(ic._tri.compiled) == (name == "numba")
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-13}
    for a, b in zip(out["numba"], out["torch"]):
        torch.testing.assert_close(a, b, **tol)


def test_the_kernel_switch_is_checked(monkeypatch):
    from tsgu_krylov import _compiled

    monkeypatch.setenv(_compiled.KERNEL_ENV, "fortran")
    with pytest.raises(ValueError, match="TSGU_KRYLOV_KERNEL must be 'numba' or 'torch', got 'fortran'"):
        IC0(grid_operator((3, 3)))
    monkeypatch.setenv(_compiled.KERNEL_ENV, "numba")
    monkeypatch.setattr(_compiled, "numba_available", lambda: False)
    with pytest.raises(ImportError, match=r"tsgu-krylov\[fast\]"):
        IC0(grid_operator((3, 3)))


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_ic0_of_a_csr_matrix_checks_its_entries(index_dtype):
    """The CSR route of IC(0) (read straight from the CSR arrays when compiled): non-finite values
    and a missing diagonal entry are errors, and the factor equals the reference."""
    D = grid_operator((4, 3)).to_dense()
    S = D.to_sparse_csr()
    csr = torch.sparse_csr_tensor(
        S.crow_indices().to(index_dtype), S.col_indices().to(index_dtype), S.values(), S.shape
    )
    torch.testing.assert_close(IC0(csr).L.to_dense(), reference_ic0(D, D != 0))
    bad = csr.values().clone()
    bad[5] = float("nan")
    nan = torch.sparse_csr_tensor(csr.crow_indices(), csr.col_indices(), bad, csr.shape)
    with pytest.raises(ValueError, match=r"IC\(0\): A has non-finite"):
        IC0(nan)
    holes = D.clone()
    holes[7, 7] = 0.0
    with pytest.raises(ValueError, match="every diagonal entry of A must be stored"):
        IC0(holes.to_sparse_csr())
