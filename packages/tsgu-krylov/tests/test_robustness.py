"""Real-world input that is not a textbook system: malformed indices, NaN/Inf, batched vectors, dtypes.

* A sparse matrix with out-of-range or malformed indices is rejected (``ValueError`` naming the
  argument) before any native kernel reads it, by every public function that takes one.
* A NaN or an infinity (in ``A``, ``b``, or an iterate that overflows) is reported by every solver in
  the same way (a ``ConvergenceWarning``, or ``ConvergenceError`` with ``on_failure="raise"``) and
  the affected columns are NaN, never a plausible vector such as zeros.
* A batched ``A`` ``(b, n, n)`` with one vector per item ``(b, n)`` is solved by every solver and by
  ``sparse_generic_solve`` (with gradients), checked against a dense batched solve.
* Unsupported dtypes and ``meta`` tensors give a ``TypeError``/``ValueError`` naming the argument.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from tsgu_krylov import (
    BICGSTABSettings,
    ConvergenceError,
    ConvergenceWarning,
    bicgstab,
    gmres,
    linear_cg,
    lsmr,
    minres,
    sparse_generic_lstsq,
    sparse_generic_solve,
)
from tsgu_ops.testing import assert_sparse_grad_matches, build_case

F64 = torch.float64
SOLVERS = {"cg": linear_cg, "minres": minres, "bicgstab": bicgstab, "gmres": gmres}


def tridiagonal(n: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """The SPD matrix ``tridiag(-1, 2, -1)`` (dense)."""
    off = -torch.ones(n - 1, dtype=dtype)
    return torch.diag(2 * torch.ones(n, dtype=dtype)) + torch.diag(off, 1) + torch.diag(off, -1)


# --- malformed indices ------------------------------------------------------------------------------


def _one_based_coo(n: int = 4) -> torch.Tensor:
    i = torch.arange(1, n + 1)  # 1-based: the last index equals n
    return torch.sparse_coo_tensor(
        torch.stack([i, i]), torch.ones(n, dtype=F64), (n, n), check_invariants=False
    )


def _non_monotone_crow(n: int = 4) -> torch.Tensor:
    crow = torch.tensor([0, 3, 1, 3, 4])
    col = torch.tensor([0, 1, 2, 3])
    return torch.sparse_csr_tensor(crow, col, torch.ones(4, dtype=F64), (n, n), check_invariants=False)


def _column_out_of_range(n: int = 4) -> torch.Tensor:
    crow = torch.arange(n + 1)
    col = torch.tensor([0, 1, 2, n + 3])
    return torch.sparse_csr_tensor(crow, col, torch.ones(n, dtype=F64), (n, n), check_invariants=False)


BAD_INDICES = {
    "1-based COO": _one_based_coo,
    "non-monotone crow": _non_monotone_crow,
    "out-of-range col": _column_out_of_range,
}
TAKES_A_MATRIX = {
    **SOLVERS,
    "lsmr": lambda A, b: lsmr(A, b),
    "sparse_generic_solve": lambda A, b: sparse_generic_solve(A, b),
    "sparse_generic_solve(gmres)": lambda A, b: sparse_generic_solve(A, b, "gmres"),
    "sparse_generic_lstsq": lambda A, b: sparse_generic_lstsq(A, b),
}


@pytest.mark.parametrize("bad", sorted(BAD_INDICES))
@pytest.mark.parametrize("name", sorted(TAKES_A_MATRIX))
def test_malformed_indices_are_rejected_before_any_kernel(name, bad):
    A = BAD_INDICES[bad]()
    with pytest.raises(ValueError, match=r"^(A|matmul_closure) has"):
        TAKES_A_MATRIX[name](A, torch.ones(4, dtype=F64))


@pytest.mark.parametrize("bad", sorted(BAD_INDICES))
def test_malformed_sparse_preconditioners_and_batched_matrices_are_rejected(bad):
    A = tridiagonal(4).to_sparse_csr()
    b = torch.ones(4, dtype=F64)
    M = BAD_INDICES[bad]()
    for name, fn in SOLVERS.items():
        kw = {"settings": BICGSTABSettings(precon=M)} if name == "bicgstab" else {"preconditioner": M}
        with pytest.raises(ValueError, match=r"^(preconditioner|settings\.precon) has"):
            fn(A, b, **kw)
    # a batched COO with a 1-based row index in its second item
    idx = torch.tensor([[0, 0, 1, 1], [0, 1, 2, 4], [0, 1, 2, 3]])
    Ab = torch.sparse_coo_tensor(idx, torch.ones(4, dtype=F64), (2, 4, 4), check_invariants=False)
    with pytest.raises(ValueError, match=r"^A has a row index out of range"):
        sparse_generic_solve(Ab, torch.ones(2, 4, dtype=F64))


# --- NaN and Inf ------------------------------------------------------------------------------------


def _non_finite_case(kind: str, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    T = tridiagonal(n)
    b = torch.ones(n, dtype=F64)
    if kind == "NaN in A":
        T[2, 2] = float("nan")
    elif kind == "Inf in b":
        b[1] = float("inf")
    else:  # the solution, about 1e600, overflows float64 although A and b are finite
        T, b = T * 1e-300, b * 1e300
    return T, b


NON_FINITE = ["NaN in A", "Inf in b", "overflowing iterate"]


@pytest.mark.parametrize("kind", NON_FINITE)
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_non_finite_input_gives_nan_and_a_warning_in_every_solver(name, kind):
    D, b = _non_finite_case(kind)
    fn = SOLVERS[name]
    with pytest.warns(ConvergenceWarning, match="non-finite"):
        x, info = fn(D.to_sparse_csr(), b, return_info=True)
    assert x.shape == b.shape and bool(torch.isnan(x).all()), x
    assert info.reason == "non_finite" and bool(info.non_finite.all()) and not bool(info.converged.any())
    with pytest.raises(ConvergenceError, match="non-finite"):
        fn(D.to_sparse(), b, on_failure="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bool(torch.isnan(fn(D, b, on_failure="ignore")).all())


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_a_non_finite_column_does_not_spoil_the_others(name):
    D = tridiagonal(6)
    B = torch.stack([torch.ones(6, dtype=F64), torch.linspace(-1, 1, 6, dtype=F64)], dim=1)
    B[3, 0] = float("nan")
    with pytest.warns(ConvergenceWarning, match="1 of 2 right-hand sides met a non-finite"):
        X, info = SOLVERS[name](D.to_sparse_csr(), B, rtol=1e-10, return_info=True)
    assert bool(torch.isnan(X[:, 0]).all())
    torch.testing.assert_close(X[:, 1], torch.linalg.solve(D, B[:, 1]))
    assert info.non_finite.tolist() == [True, False] and info.converged.tolist() == [False, True]


@pytest.mark.parametrize("kind", NON_FINITE)
def test_non_finite_input_in_lsmr_and_the_generic_solves(kind):
    D, b = _non_finite_case(kind)
    with pytest.warns(ConvergenceWarning, match="non-finite"):
        x, _ = lsmr(D.to_sparse(), b)
    assert bool(torch.isnan(x).all())
    with pytest.raises(ConvergenceError, match="non-finite"):
        lsmr(D, b, on_failure="raise")
    for solve in (None, "cg", "minres", "bicgstab", "gmres"):
        A = D.to_sparse_csr().requires_grad_()
        with pytest.warns(ConvergenceWarning, match="non-finite"):
            x = sparse_generic_solve(A, b, solve)
        assert bool(torch.isnan(x).all()), (solve, x)
        with pytest.raises(ConvergenceError, match="non-finite"):
            sparse_generic_solve(A, b, solve, on_failure="raise")
    with pytest.warns(ConvergenceWarning, match="non-finite"):
        x = sparse_generic_lstsq(D.to_sparse(), b)
    assert bool(torch.isnan(x).all())


# --- batched A with one vector per item -------------------------------------------------------------


@pytest.mark.parametrize("layout", ["coo", "csr", "dense"])
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_batched_matrix_with_a_batch_of_vectors(name, layout):
    structure = {"cg": "spd", "minres": "symmetric"}.get(name, "dominant")
    case = build_case(7, (3, 8, 8), 0.4, torch.sparse_csr, torch.int64, F64, structure)
    A = {"coo": case.dense.to_sparse(), "csr": case.sparse, "dense": case.dense}[layout]
    b = torch.randn(3, 8, dtype=F64, generator=torch.Generator().manual_seed(3))
    ref = torch.linalg.solve(case.dense, b.unsqueeze(-1)).squeeze(-1)
    x = SOLVERS[name](A, b, rtol=1e-11)
    assert x.shape == (3, 8)
    torch.testing.assert_close(x, ref, rtol=1e-7, atol=1e-9)
    x = SOLVERS[name](A, b, x0=ref + 1e-3, rtol=1e-11)  # an initial guess shaped like b
    torch.testing.assert_close(x, ref, rtol=1e-7, atol=1e-9)
    # b == n: still one vector per item for a batched A
    square = build_case(8, (6, 6, 6), 0.4, torch.sparse_coo, torch.int64, F64, structure)
    bs = torch.randn(6, 6, dtype=F64, generator=torch.Generator().manual_seed(4))
    xs = SOLVERS[name](square.sparse, bs, rtol=1e-11)
    torch.testing.assert_close(xs, torch.linalg.solve(square.dense, bs.unsqueeze(-1)).squeeze(-1))


@pytest.mark.parametrize("solve", [None, "cg", "minres", "bicgstab", "gmres"])
@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_generic_solve_batched_matrix_with_a_batch_of_vectors_and_gradients(layout, solve):
    structure = {"cg": "spd", "minres": "symmetric"}.get(solve or "", "dominant")
    case = build_case(9, (3, 7, 7), 0.4, layout, torch.int32, F64, structure)
    A = case.sparse.detach().clone().requires_grad_()
    b = torch.randn(3, 7, dtype=F64, generator=torch.Generator().manual_seed(5)).requires_grad_()
    kw = {} if solve is None else {"rtol": 1e-12, "atol": 0.0}
    x = sparse_generic_solve(A, b, solve, **kw)
    weight = torch.linspace(-1, 1, 21, dtype=F64).reshape(3, 7)
    (x * weight).sum().backward()
    Ad = case.dense.clone().requires_grad_()
    bd = b.detach().clone().requires_grad_()
    xd = torch.linalg.solve(Ad, bd.unsqueeze(-1)).squeeze(-1)
    (xd * weight).sum().backward()
    assert x.shape == (3, 7)
    torch.testing.assert_close(x.detach(), xd.detach(), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(b.grad, bd.grad, rtol=1e-7, atol=1e-9)
    assert A.grad.layout == layout
    assert_sparse_grad_matches(A, A.grad, Ad.grad, rtol=1e-6, atol=1e-8)


# --- dtypes and meta tensors ------------------------------------------------------------------------

BAD_DTYPES = [torch.float16, torch.bfloat16, torch.int64, torch.complex128]


@pytest.mark.parametrize("dtype", BAD_DTYPES)
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_unsupported_dtypes_name_the_argument_and_the_supported_dtypes(name, dtype):
    D = tridiagonal(4)
    fn = SOLVERS[name]
    with pytest.raises(TypeError, match=r"^rhs .*float32.*float64"):
        fn(D.to_sparse_csr().to(dtype) if dtype.is_floating_point else D.to_sparse_csr(), D[0].to(dtype))
    for A in (D.to(dtype).to_sparse(), D.to(dtype)):  # the operator of a bad dtype, b float64
        with pytest.raises(TypeError, match=r"^matmul_closure .*float32, float64"):
            fn(A, D[0])
    with pytest.raises(TypeError, match=r"^matmul_closure and rhs must have the same dtype"):
        fn(D.float().to_sparse(), D[0])


@pytest.mark.parametrize("dtype", BAD_DTYPES)
def test_unsupported_dtypes_in_lsmr_and_the_generic_solves(dtype):
    D = tridiagonal(4)
    A = D.to(dtype).to_sparse()
    with pytest.raises(TypeError, match=r"^A must have one of the dtypes float32, float64"):
        sparse_generic_solve(A, D[0].to(dtype))
    with pytest.raises(TypeError, match=r"^A must have one of the dtypes float32, float64"):
        sparse_generic_lstsq(A, D[0].to(dtype))
    if dtype.is_complex:  # complex B with a real A: not silently cast to real
        with pytest.raises(TypeError, match=r"^B must have real values"):
            sparse_generic_solve(D.to_sparse(), D[0].to(dtype))
    else:  # LSMR takes complex values (as 0.2.7) but not half precision or integers
        with pytest.raises(TypeError, match=r"^b must have one of the dtypes float32, float64"):
            lsmr(A, D[0].to(dtype))


def test_meta_tensors_are_rejected_by_name():
    D = tridiagonal(4)
    meta_b = torch.ones(4, dtype=F64, device="meta")
    for fn in SOLVERS.values():
        with pytest.raises(ValueError, match=r"^rhs is on the 'meta' device"):
            fn(D.to_sparse(), meta_b)
        with pytest.raises(ValueError, match=r"^matmul_closure is on the 'meta' device"):
            fn(D.to("meta"), torch.ones(4, dtype=F64))
        with pytest.raises(ValueError, match=r"^matmul_closure is on the 'meta' device"):
            fn(D.to_sparse().to("meta"), torch.ones(4, dtype=F64))
    with pytest.raises(ValueError, match=r"^b is on the 'meta' device"):
        lsmr(D.to_sparse(), meta_b)
    with pytest.raises(ValueError, match="'meta' device"):
        sparse_generic_solve(D.to_sparse().to("meta"), meta_b)
    with pytest.raises(ValueError, match=r"^B is on the 'meta' device"):
        sparse_generic_lstsq(D.to_sparse(), meta_b)
