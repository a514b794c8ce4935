"""The solvers on real matrices (pyamg gallery/examples, scikit-fem assemblies) that no one here wrote.

Every applicable solver (CG on the SPD matrices, MINRES on the symmetric ones, BiCGSTAB and GMRES on
all; no preconditioner) must reach a true relative residual within 10 × ``rtol`` wherever SciPy's
same solver, given the same iteration budget, converges.  ``sparse_generic_solve`` gradients on two
corpus matrices (SPD and non-symmetric) must match dense autograd of ``torch.linalg.solve``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch

from tsgu_krylov import BICGSTABSettings, bicgstab, gmres, linear_cg, minres, sparse_generic_solve
from tsgu_ops.testing import assert_sparse_grad_matches

RTOL = 1e-7
RESTART = 30


@pytest.fixture
def one_thread():
    """One intra-op thread: these solves are many tiny kernels, which extra threads only slow down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _budget(n: int) -> int:
    return 2 * n


def _scipy(name: str, S, b: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    it = _budget(n)
    if name == "cg":
        return sla.cg(S, b, rtol=RTOL, atol=0.0, maxiter=it)
    if name == "minres":
        return sla.minres(S, b, rtol=RTOL, maxiter=it)
    if name == "bicgstab":
        return sla.bicgstab(S, b, rtol=RTOL, atol=0.0, maxiter=it)
    return sla.gmres(S, b, rtol=RTOL, atol=0.0, restart=RESTART, maxiter=-(-it // RESTART))


def _ours(name: str, A: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    it = _budget(n)
    kw = {"return_info": True, "on_failure": "ignore"}
    if name == "cg":
        return linear_cg(A, b, rtol=RTOL, max_iter=it, **kw)
    if name == "minres":
        return minres(A, b, rtol=RTOL, max_iter=it, **kw)
    if name == "bicgstab":  # SciPy's maxiter counts steps of two products each
        return bicgstab(A, b, rtol=RTOL, atol=0.0, settings=BICGSTABSettings(matvec_max=2 * it + 2), **kw)
    return gmres(A, b, rtol=RTOL, restart=RESTART, max_iter=RESTART * -(-it // RESTART), **kw)


def test_every_solver_converges_on_the_real_corpus_where_scipy_does(real_corpus, one_thread):
    checked = []
    for matrix in real_corpus:
        S, n = matrix.matrix, matrix.n
        b = np.random.default_rng(n).standard_normal(n)
        names = ["bicgstab", "gmres"]
        if matrix.symmetric:
            names.append("minres")
        if matrix.spd:
            names.append("cg")
        for layout in (torch.sparse_csr, torch.sparse_coo):
            A = matrix.torch(
                layout, torch.float64, torch.int32 if layout == torch.sparse_csr else torch.int64
            )
            # each solver once per matrix, half of them on CSR (int32 indices), half on COO
            for name in names[::2] if layout == torch.sparse_coo else names[1::2]:
                _, status = _scipy(name, S, b, n)
                if status != 0:  # SciPy did not converge in this budget: nothing to compare
                    continue
                x, info = _ours(name, A, torch.from_numpy(b), n)
                rel = np.linalg.norm(b - S @ x.numpy()) / np.linalg.norm(b)
                assert rel <= 10 * RTOL, (matrix.name, name, rel, info)
                assert not bool(info.non_finite.any())
                checked.append((matrix.name, name))
    assert len(checked) >= 2 * len(real_corpus)  # SciPy converges on most: the test is not vacuous


@pytest.mark.parametrize(
    "name, layout, solve, kw",
    [
        ("skfem:p1-tri-laplace", torch.sparse_csr, None, {}),
        ("pyamg:recirc_flow", torch.sparse_coo, "gmres", {"rtol": 1e-12, "restart": 240}),
    ],
)
def test_generic_solve_gradients_on_corpus_matrices_match_dense_autograd(
    real_corpus, one_thread, name, layout, solve, kw
):
    matrix = next((m for m in real_corpus if m.name == name), None)
    if matrix is None:
        pytest.skip(f"{name} is not in this corpus")
    n = matrix.n
    g = torch.Generator().manual_seed(0)
    B = torch.randn(n, 2, dtype=torch.float64, generator=g)
    W = torch.randn(n, 2, dtype=torch.float64, generator=g)
    A = matrix.torch(layout, torch.float64, torch.int64).requires_grad_()
    Bs = B.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the solve must converge: no ConvergenceWarning
        X = sparse_generic_solve(A, Bs, solve, **kw)
        (X * W).sum().backward()
    D = torch.from_numpy(matrix.matrix.toarray()).requires_grad_()
    Bd = B.clone().requires_grad_()
    Xd = torch.linalg.solve(D, Bd)
    (Xd * W).sum().backward()
    torch.testing.assert_close(X.detach(), Xd.detach(), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(Bs.grad, Bd.grad, rtol=1e-7, atol=1e-9)
    assert A.grad.layout == layout
    assert_sparse_grad_matches(A, A.grad, D.grad, rtol=1e-6, atol=1e-9)
