"""Malformed indices, unsupported dtypes, non-finite values and inaccurate iterative solves.

Every public bridge function rejects a sparse tensor whose indices SciPy/JAX would misread (a 1-based
COO index, a non-monotone CSR ``crow``, an out-of-range column) or that holds no data (``meta``),
before any conversion; an iterative solve whose true residual misses the tolerance warns; a
non-finite ``A`` or ``B`` gives NaN with a warning, never a plausible finite answer.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from tsgu_bridges import (
    ConvergenceWarning,
    SparseSolveC4T,
    sparse_solve_c4t,
    t2c_coo,
    t2c_csr,
    to_scipy,
)

F32, F64 = torch.float32, torch.float64
HAVE_JAX = importlib.util.find_spec("jax") is not None
jax_only = pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed")


def _tridiag(n: int = 4, dtype: torch.dtype = F64) -> torch.Tensor:
    D = 4 * torch.eye(n, dtype=dtype) - torch.diag(torch.ones(n - 1, dtype=dtype), 1)
    return D - torch.diag(torch.ones(n - 1, dtype=dtype), -1)


def _one_based_coo() -> torch.Tensor:
    # what a MATLAB/Fortran export gives: every index one too large
    idx = torch.tensor([[1, 2, 3, 3], [1, 2, 3, 1]])
    return torch.sparse_coo_tensor(
        idx, torch.tensor([4.0, 4.0, 4.0, 1.0], dtype=F64), (3, 3), check_invariants=False
    )


def _non_monotone_crow() -> torch.Tensor:
    crow = torch.tensor([0, 2, 1, 4])
    col = torch.tensor([0, 1, 1, 2])
    return torch.sparse_csr_tensor(crow, col, torch.ones(4, dtype=F64), (3, 3), check_invariants=False)


def _col_out_of_range() -> torch.Tensor:
    crow = torch.tensor([0, 1, 2, 3])
    col = torch.tensor([0, 1, 3])
    return torch.sparse_csr_tensor(crow, col, torch.ones(3, dtype=F64), (3, 3), check_invariants=False)


def _meta() -> torch.Tensor:
    return _tridiag(3).to_sparse().to("meta")


BAD = {
    "1-based COO": (_one_based_coo, "row index out of range"),
    "non-monotone crow": (_non_monotone_crow, "crow_indices that decrease"),
    "column out of range": (_col_out_of_range, "column index out of range"),
    "meta": (_meta, "meta"),
}


def _jax_functions() -> dict[str, tuple[Callable[..., Any], str]]:
    if not HAVE_JAX:
        return {}
    from tsgu_bridges.jax_bindings import spmm_t4j, t2j_coo, t2j_csr
    from tsgu_bridges.jax_sparse_solve import SparseSolveJ4T, sparse_solve_j4t

    def j4t_apply(A: torch.Tensor, B: torch.Tensor) -> Any:
        return SparseSolveJ4T.apply(A, B, None, None, {})

    return {
        "sparse_solve_j4t": (lambda A: sparse_solve_j4t(A, torch.ones(3, dtype=F64, device=A.device)), "A"),
        "SparseSolveJ4T": (lambda A: j4t_apply(A, torch.ones(3, dtype=F64, device=A.device)), "A"),
        "t2j_coo": (t2j_coo, "x"),
        "t2j_csr": (t2j_csr, "x"),
        "spmm_t4j": (spmm_t4j, "A"),
    }


FUNCTIONS: dict[str, tuple[Callable[..., Any], str]] = {
    "sparse_solve_c4t": (lambda A: sparse_solve_c4t(A, torch.ones(3, dtype=F64, device=A.device)), "A"),
    "sparse_solve_c4t cg": (
        lambda A: sparse_solve_c4t(A, torch.ones(3, dtype=F64, device=A.device), solve="cg"),
        "A",
    ),
    "SparseSolveC4T": (
        lambda A: SparseSolveC4T.apply(A, torch.ones(3, dtype=F64, device=A.device), None, None, {}),
        "A",
    ),
    "to_scipy": (to_scipy, "x"),
    "t2c_coo": (t2c_coo, "x"),
    "t2c_csr": (t2c_csr, "x"),
}


JAX_NAMES = ["SparseSolveJ4T", "sparse_solve_j4t", "spmm_t4j", "t2j_coo", "t2j_csr"]


def _layout_fits(fn_name: str, A: torch.Tensor) -> bool:
    if fn_name.endswith("_coo"):
        return A.layout == torch.sparse_coo
    if fn_name.endswith("_csr"):
        return A.layout == torch.sparse_csr
    return True


# ------------------------------------------------------------------------------- item: indices
COMBINATIONS = [
    pytest.param(fn_name, bad, marks=[jax_only] if fn_name in JAX_NAMES else [])
    for fn_name in sorted(FUNCTIONS) + JAX_NAMES
    for bad in sorted(BAD)
    if _layout_fits(fn_name, BAD[bad][0]())
]


@pytest.mark.parametrize(("fn_name", "bad"), COMBINATIONS)
def test_malformed_indices_are_rejected_naming_the_argument(fn_name, bad):
    make, match = BAD[bad]
    A = make()
    fn, arg = {**FUNCTIONS, **_jax_functions()}[fn_name]
    with pytest.raises(ValueError, match=rf"^{arg} .*{match}"):
        fn(A)


def test_one_based_coo_never_reaches_superlu():
    # 0.2.7 (and this bridge before the check) factorised whatever SciPy made of the indices: a
    # "singular" error or an abort, at random.  Now: the ValueError, and the input is untouched.
    A = _one_based_coo()
    before = A._indices().clone()
    with pytest.raises(
        ValueError, match=r"A has a row index out of range: indices\[0\] must lie in \[0, 3\), found 3"
    ):
        sparse_solve_c4t(A, torch.ones(3, dtype=F64))
    assert torch.equal(A._indices(), before)


def test_meta_right_hand_side_is_rejected():
    with pytest.raises(ValueError, match="meta"):
        sparse_solve_c4t(_meta(), torch.ones(3, dtype=F64, device="meta"))


# ------------------------------------------------------------------------ item: residual check
def test_scipy_minres_in_float32_warns_when_its_answer_misses_the_tolerance(real_corpus):
    bar = next(m for m in real_corpus if m.name == "pyamg:bar")
    A = bar.torch(torch.sparse_csr, F32)
    b = torch.ones(bar.n, dtype=F32)
    with pytest.warns(
        ConvergenceWarning,
        match=r"minres did not converge: true relative residual [0-9.e+-]+ in column 0 is above the tolerance 1e-06",
    ):
        x = sparse_solve_c4t(A, b, solve="minres", tol=1e-6)
    # the warning is about a real error: the answer is off by more than a percent
    ref = np.linalg.solve(bar.matrix.toarray(), np.ones(bar.n))
    assert np.linalg.norm(x.double().numpy() - ref) / np.linalg.norm(ref) > 1e-3


def test_scipy_cg_in_float32_is_as_accurate_as_float32_allows_and_does_not_warn(real_corpus):
    bar = next(m for m in real_corpus if m.name == "pyamg:bar")
    A = bar.torch(torch.sparse_csr, F32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        sparse_solve_c4t(A, torch.ones(bar.n, dtype=F32), solve="cg", tol=1e-6)


@pytest.mark.parametrize("solve", ["cg", "cgs", "gmres", "minres"])
def test_converged_float64_iterative_solves_do_not_warn(solve):
    A = _tridiag(30).to_sparse_csr().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X = sparse_solve_c4t(A, torch.linspace(-1, 1, 30, dtype=F64), solve=solve, tol=1e-10)
        X.sum().backward()


def test_residual_check_covers_the_backward_solve_too():
    A = _tridiag(40).to_sparse().requires_grad_()
    with pytest.warns(ConvergenceWarning, match="cg"):
        X = sparse_solve_c4t(A, torch.ones(40, dtype=F64), solve="cg", tol=1e-12, maxiter=2)
    with pytest.warns(ConvergenceWarning, match="cg"):
        X.sum().backward()


@jax_only
def test_jax_default_solver_warns_when_it_misses_the_tolerance():
    from tsgu_bridges.jax_sparse_solve import sparse_solve_j4t

    A = _tridiag(40).to_sparse()
    B = torch.ones(40, 2, dtype=F64)
    with pytest.warns(
        ConvergenceWarning, match=r"bicgstab did not converge: true relative residual .* in column [01]"
    ):
        sparse_solve_j4t(A, B, maxiter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        X = sparse_solve_j4t(A, B)
    torch.testing.assert_close(X, torch.linalg.solve(A.to_dense(), B))


# ------------------------------------------------------------------------- item: non-finite values
def _with_nonfinite(where: str, value: float) -> tuple[torch.Tensor, torch.Tensor]:
    A = _tridiag(5).to_sparse().coalesce()
    B = torch.ones(5, 2, dtype=F64)
    if where == "A":
        A = torch.sparse_coo_tensor(A.indices(), A.values().clone(), A.shape).coalesce()
        A.values()[3] = value
    else:
        B[2, 1] = value
    return A, B


@pytest.mark.parametrize("where", ["A", "B"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("solve", [None, "cg", "gmres", "minres"])
def test_non_finite_input_gives_nan_with_a_warning(where, value, solve):
    A, B = _with_nonfinite(where, value)
    if solve is not None:
        B = B[:, 1]
    A = A.requires_grad_()
    with pytest.warns(RuntimeWarning, match=rf"{where} .*not finite"):
        X = sparse_solve_c4t(A, B, solve=solve)
    assert X.shape == B.shape and torch.isnan(X).all()


@jax_only
@pytest.mark.parametrize("where", ["A", "B"])
def test_jax_non_finite_input_gives_nan_with_a_warning(where):
    from tsgu_bridges.jax_sparse_solve import sparse_solve_j4t

    A, B = _with_nonfinite(where, float("nan"))
    with pytest.warns(RuntimeWarning, match=rf"{where} .*not finite"):
        X = sparse_solve_j4t(A, B)
    assert torch.isnan(X).all()


# -------------------------------------------------------------------------------- item: dtypes
UNSUPPORTED = [torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.complex64, torch.complex128]


@pytest.mark.parametrize("dtype", UNSUPPORTED)
@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_solves_reject_unsupported_value_dtypes_naming_the_supported_ones(dtype, layout):
    A = _tridiag(3).to(dtype)
    A = A.to_sparse() if layout == torch.sparse_coo else A.to_sparse_csr()
    B = torch.ones(3, dtype=dtype)
    msg = r"A must have one of the dtypes float32, float64, got torch\." + str(dtype).split(".")[1]
    with pytest.raises(TypeError, match=msg):
        sparse_solve_c4t(A, B)
    if HAVE_JAX:
        from tsgu_bridges.jax_sparse_solve import sparse_solve_j4t

        with pytest.raises(TypeError, match=msg):
            sparse_solve_j4t(A, B)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("convert", [to_scipy, t2c_coo])
def test_converters_reject_dtypes_scipy_cannot_hold(dtype, convert):
    x = _tridiag(3).to(dtype).to_sparse()
    with pytest.raises(TypeError, match=r"x must have one of the dtypes .*float32, float64.*got torch\."):
        convert(x)


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex128, torch.bool])
def test_converters_keep_dtypes_scipy_holds(dtype):
    x = _tridiag(3).to(dtype)
    m = to_scipy(x.to_sparse_csr())
    np.testing.assert_array_equal(m.toarray(), x.numpy())
