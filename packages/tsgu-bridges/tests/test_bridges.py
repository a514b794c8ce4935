"""SciPy, CuPy and JAX bridges: conversions round-trip, solves and sparse gradients equal dense autograd."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tsgu_bridges import (
    SparseSolveC4T,
    c2t_coo,
    c2t_csr,
    from_scipy,
    sparse_solve_c4t,
    t2c_coo,
    t2c_csr,
    to_scipy,
)
from tsgu_ops.testing import assert_sparse_grad_matches, assert_unchanged, build_case, clone_input

F64 = torch.float64
HAVE_JAX = importlib.util.find_spec("jax") is not None


def _cuda_cupy() -> bool:
    if importlib.util.find_spec("cupy") is None or not torch.cuda.is_available():
        return False
    import cupy

    return bool(cupy.cuda.is_available())


def _check(fn, case, B, **kw):
    A = case.sparse.detach().clone().requires_grad_()
    before = clone_input(case.sparse)
    Bs = B.clone().requires_grad_()
    X = fn(A, Bs, **kw)
    assert X.shape == B.shape and X.dtype == A.dtype
    w = torch.linspace(-1, 1, X.numel(), dtype=F64).reshape(X.shape)
    (X * w).sum().backward()
    vec = B.dim() < case.dense.dim()
    blk = (lambda t: t.unsqueeze(-1)) if vec else (lambda t: t)
    D = case.dense.clone().requires_grad_()
    Bd = blk(B).clone().requires_grad_()
    Xd = torch.linalg.solve(D, Bd)
    (Xd * blk(w)).sum().backward()
    torch.testing.assert_close(blk(X.detach()), Xd, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(blk(Bs.grad), Bd.grad, rtol=1e-6, atol=1e-8)
    assert_sparse_grad_matches(A, A.grad, D.grad, rtol=1e-5, atol=1e-8)
    assert_unchanged(before, case.sparse)


# ---------------------------------------------------------------------------------------- scipy
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_csr_round_trip_keeps_values_shape_index_dtype_and_memory(index_dtype):
    case = build_case(1, (6, 5), 0.4, torch.sparse_csr, index_dtype, F64)
    m = to_scipy(case.sparse)
    assert m.shape == (6, 5) and m.indices.dtype == np.dtype(str(index_dtype).split(".")[1])
    assert np.shares_memory(m.data, case.sparse.values().numpy())
    back = from_scipy(m)
    assert back.crow_indices().dtype == index_dtype
    torch.testing.assert_close(back.to_dense(), case.dense)
    assert back.values().data_ptr() == case.sparse.values().data_ptr()
    torch.testing.assert_close(c2t_csr(t2c_csr(case.sparse)).to_dense(), case.dense)


def test_coo_round_trip_coalesces_once_with_a_warning_and_batches_become_lists():
    case = build_case(2, (5, 5), 0.5, torch.sparse_coo, torch.int64, F64, duplicates=2)
    with pytest.warns(UserWarning, match="coalescing implicitly"):
        m = t2c_coo(case.sparse)
    np.testing.assert_allclose(m.toarray(), case.dense.numpy())
    torch.testing.assert_close(c2t_coo(m).to_dense(), case.dense)
    batch = build_case(3, (3, 4, 4), 0.5, torch.sparse_coo, torch.int64, F64)
    mats = to_scipy(batch.sparse)
    assert len(mats) == 3
    for m, d in zip(mats, batch.dense):
        np.testing.assert_allclose(m.toarray(), d.numpy())
    torch.testing.assert_close(from_scipy(mats).to_dense(), batch.dense)
    bcsr = build_case(4, (2, 4, 4), 0.5, torch.sparse_csr, torch.int32, F64)
    torch.testing.assert_close(from_scipy(to_scipy(bcsr.sparse)).to_dense(), bcsr.dense)


def test_requires_grad_tensors_are_exported_detached_and_bad_inputs_rejected():
    A = torch.eye(3, dtype=F64).to_sparse_csr().requires_grad_()
    assert to_scipy(A).shape == (3, 3)
    with pytest.raises(ValueError, match="sparse COO or CSR"):
        to_scipy(torch.eye(2))
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        to_scipy(np.eye(2))
    with pytest.raises(TypeError, match=r"scipy\.sparse matrix"):
        from_scipy(np.eye(2))


@pytest.mark.parametrize("structure", ["spd", "dominant"])
@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("solve", [None, "spsolve", "gmres", "cgs", "callable"])
def test_scipy_solves_give_dense_gradients_at_the_stored_entries(structure, layout, solve):
    if solve == "callable":
        import scipy.sparse.linalg as sla

        solve = lambda A, B: sla.spsolve(A.tocsc(), B)  # noqa: E731
    case = build_case(5, (9, 9), 0.4, layout, torch.int64, F64, structure)
    B = torch.randn(9, dtype=F64)
    kw = {"tol": 1e-12} if solve in ("gmres", "cgs") else {}
    _check(sparse_solve_c4t, case, B, solve=solve, **kw)
    if solve in (None, "spsolve"):
        _check(sparse_solve_c4t, case, torch.randn(9, 3, dtype=F64), solve=solve)


def test_cg_and_minres_for_spd_and_user_transpose_convention():
    case = build_case(6, (8, 8), 0.4, torch.sparse_csr, torch.int32, F64, "spd")
    _check(sparse_solve_c4t, case, torch.randn(8, dtype=F64), solve="cg", tol=1e-12)
    _check(sparse_solve_c4t, case, torch.randn(8, dtype=F64), solve="minres", tol=1e-12)
    ns = build_case(7, (8, 8), 0.4, torch.sparse_coo, torch.int64, F64, "dominant")

    def tsolve(A, G):  # receives A itself: the project's convention
        return np.linalg.solve(A.toarray().T, G)

    _check(sparse_solve_c4t, ns, torch.randn(8, 2, dtype=F64), transpose_solve=tsolve)


@settings(deadline=None, max_examples=25)
@given(
    seed=st.integers(0, 2**20),
    n=st.integers(1, 8),
    k=st.integers(1, 3),
    layout=st.sampled_from([torch.sparse_coo, torch.sparse_csr]),
    index_dtype=st.sampled_from([torch.int32, torch.int64]),
    batch=st.sampled_from([None, 2]),
    duplicates=st.integers(0, 2),
)
def test_property_direct_solve_with_reused_factorisation(seed, n, k, layout, index_dtype, batch, duplicates):
    shape = (n, n) if batch is None else (batch, n, n)
    dup = duplicates if (layout == torch.sparse_coo and batch is None) else 0
    case = build_case(seed, shape, 0.4, layout, index_dtype, F64, "dominant", duplicates=dup)
    _check(
        sparse_solve_c4t,
        case,
        torch.randn(*shape[:-1], k, dtype=F64, generator=torch.Generator().manual_seed(seed)),
    )


def test_backward_reuses_the_lu_factorisation():
    import scipy.sparse.linalg as sla

    calls = []
    orig = sla.splu

    def counting(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    case = build_case(8, (10, 10), 0.3, torch.sparse_csr, torch.int64, F64, "dominant")
    A = case.sparse.clone().requires_grad_()
    try:
        sla.splu = counting
        sparse_solve_c4t(A, torch.ones(10, 2, dtype=F64)).sum().backward()
    finally:
        sla.splu = orig
    assert len(calls) == 1


def test_validation_messages():
    A = torch.eye(3, dtype=F64).to_sparse_csr()
    with pytest.raises(ValueError, match="Both A and B should be instances"):
        sparse_solve_c4t(A, [1.0])
    with pytest.raises(TypeError, match="Unsupported sparse layout"):
        sparse_solve_c4t(torch.eye(3), torch.ones(3))
    with pytest.raises(ValueError, match="A must be square"):
        sparse_solve_c4t(torch.ones(3, 2, dtype=F64).to_sparse(), torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="Incompatible dimensions"):
        sparse_solve_c4t(A, torch.ones(4, dtype=F64))
    with pytest.raises(ValueError, match=r"Unknown solver: lu\. Supported solvers"):
        sparse_solve_c4t(A, torch.ones(3, dtype=F64), solve="lu")
    with pytest.raises(ValueError, match="Solver 'cg' does not support multi-RHS"):
        sparse_solve_c4t(A, torch.ones(3, 2, dtype=F64), solve="cg")
    with pytest.raises(ValueError, match="Transpose solver 'gmres' does not support multi-RHS"):
        sparse_solve_c4t(A, torch.ones(3, 2, dtype=F64), transpose_solve="gmres")
    with pytest.raises(TypeError, match="same dtype"):
        sparse_solve_c4t(A, torch.ones(3))


def test_autograd_class_and_non_convergence_warning():
    case = build_case(9, (6, 6), 0.5, torch.sparse_coo, torch.int64, F64, "dominant")
    A = case.sparse.clone().requires_grad_()
    X = SparseSolveC4T.apply(A, torch.ones(6, 2, dtype=F64), None, None, {})
    torch.testing.assert_close(X, torch.linalg.solve(case.dense, torch.ones(6, 2, dtype=F64)))
    X.sum().backward()
    with pytest.warns(UserWarning, match="did not converge"):
        sparse_solve_c4t(
            case.sparse, torch.ones(6, dtype=F64), solve="gmres", maxiter=1, restart=1, tol=1e-14
        )


@pytest.mark.skipif(not _cuda_cupy(), reason="CuPy with a CUDA device is not available")
def test_cupy_solve_on_cuda():
    case = build_case(10, (8, 8), 0.4, torch.sparse_csr, torch.int32, F64, "dominant")
    A = case.sparse.cuda().requires_grad_()
    X = sparse_solve_c4t(A, torch.ones(8, 2, dtype=F64, device="cuda"))
    torch.testing.assert_close(X.cpu(), torch.linalg.solve(case.dense, torch.ones(8, 2, dtype=F64)))
    X.sum().backward()
    assert A.grad.layout == torch.sparse_csr


def test_cuda_tensor_without_cupy_fails_clearly(monkeypatch):
    import tsgu_bridges.cupy_bindings as cb

    monkeypatch.setattr(cb, "have_cupy", False)
    with pytest.raises(RuntimeError, match="needs CuPy"):
        cb._cupy()


# ------------------------------------------------------------------------------------------ jax
jax_only = pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed")


@jax_only
@pytest.mark.parametrize("structure", ["spd", "dominant"])
@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_jax_default_solver_gradients_and_x64_flag_restored(structure, layout):
    import jax

    from tsgu_bridges.jax_sparse_solve import sparse_solve_j4t

    before = jax.config.jax_enable_x64
    case = build_case(11, (9, 9), 0.4, layout, torch.int64, F64, structure)
    _check(sparse_solve_j4t, case, torch.randn(9, 3, dtype=F64))
    _check(sparse_solve_j4t, case, torch.randn(9, dtype=F64))
    assert jax.config.jax_enable_x64 == before


@jax_only
def test_jax_user_solvers_follow_the_convention_and_batches_work():
    import jax.numpy as jnp

    from tsgu_bridges.jax_sparse_solve import SparseSolveJ4T, sparse_solve_j4t

    case = build_case(12, (7, 7), 0.5, torch.sparse_coo, torch.int64, F64, "dominant")

    def solve(A, B):
        return jnp.linalg.solve(A.todense(), B), 0

    def tsolve(A, G):
        return jnp.linalg.solve(A.todense().T, G)

    _check(sparse_solve_j4t, case, torch.randn(7, 2, dtype=F64), solve=solve, transpose_solve=tsolve)
    batch = build_case(13, (2, 5, 5), 0.5, torch.sparse_csr, torch.int32, F64, "dominant")
    _check(sparse_solve_j4t, batch, torch.randn(2, 5, 2, dtype=F64))
    X = SparseSolveJ4T.apply(case.sparse, torch.ones(7, 1, dtype=F64), solve, tsolve, {})
    torch.testing.assert_close(X, torch.linalg.solve(case.dense, torch.ones(7, 1, dtype=F64)))
    with pytest.raises(ValueError, match=r"A and B must have the same dtype\. Got A"):
        sparse_solve_j4t(case.sparse, torch.ones(7))


@jax_only
def test_jax_conversions_round_trip():
    import jax

    from tsgu_bridges.jax_bindings import j2t, j2t_coo, j2t_csr, spmm_t4j, t2j, t2j_coo, t2j_csr

    x = torch.randn(4, 3)
    torch.testing.assert_close(j2t(t2j(x)), x)
    csr = build_case(14, (5, 4), 0.5, torch.sparse_csr, torch.int32, torch.float32)
    back = j2t_csr(t2j_csr(csr.sparse))
    assert back.crow_indices().dtype == torch.int32
    torch.testing.assert_close(back.to_dense(), csr.dense)
    coo = build_case(15, (4, 4), 0.5, torch.sparse_coo, torch.int64, torch.float32, duplicates=1)
    with pytest.warns(UserWarning, match="coalescing"):
        J = t2j_coo(coo.sparse)
    torch.testing.assert_close(j2t_coo(J).to_dense(), coo.dense)
    mv = spmm_t4j(csr.sparse.to_sparse_coo())
    np.testing.assert_allclose(
        np.asarray(mv(jax.numpy.ones((4, 2)))), (csr.dense @ torch.ones(4, 2)).numpy(), rtol=1e-6
    )
    with pytest.raises(TypeError, match="jax_enable_x64"):
        spmm_t4j(torch.eye(2, dtype=F64).to_sparse())


def test_package_import_does_not_import_cupy_or_jax():
    import subprocess
    import sys

    code = "import sys, tsgu_bridges; assert 'jax' not in sys.modules and 'cupy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
