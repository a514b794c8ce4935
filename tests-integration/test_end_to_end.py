"""Across packages, through the meta-package's 0.2.7 import paths: the workflows users build."""

from __future__ import annotations

import importlib.util

import pytest
import torch

F64 = torch.float64


def test_pairwise_encoder_precision_fitted_by_maximum_likelihood_on_a_3d_volume():
    """PairwiseEncoder (tsgu-encoders) → LDLᵀ precision of a SparseMultivariateNormal (tsgu-distributions)."""
    from torchsparsegradutils.distributions import SparseMultivariateNormal
    from torchsparsegradutils.encoders import PairwiseEncoder

    torch.manual_seed(0)
    shape = (1, 5, 5, 5)
    n = 125
    enc = PairwiseEncoder(1, shape, upper=False, layout=torch.sparse_csr)
    true_vals = torch.full((len(enc.offsets), *shape), -0.4, dtype=F64)
    true = SparseMultivariateNormal(
        torch.zeros(n, dtype=F64), torch.full((n,), 2.0, dtype=F64), precision_tril=enc(true_vals)
    )
    x = true.sample((2000,))
    theta = torch.zeros(len(enc.offsets), *shape, dtype=F64, requires_grad=True)
    log_d = torch.zeros(n, dtype=F64, requires_grad=True)
    opt = torch.optim.Adam([theta, log_d], lr=0.05)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        L = enc(theta)
        dist = SparseMultivariateNormal(torch.zeros(n, dtype=F64), log_d.exp(), precision_tril=L)
        loss = -dist.log_prob(x).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 1.0
    # the fitted interior couplings approach the true value (boundary values never enter the matrix)
    assert abs(float(theta.detach()[:, 0, 2, 2, 2].mean()) + 0.4) < 0.1
    assert theta.grad is not None and theta.grad.layout == torch.strided


def test_training_loop_through_a_preconditioned_generic_solve():
    """Fit the diagonal of a sparse operator so that its solution matches a target (tsgu-krylov)."""
    from torchsparsegradutils import sparse_generic_solve
    from tsgu_ops import sparse_with_values
    from tsgu_ops.testing import grid_operator

    A0 = grid_operator((8, 8)).to_sparse_csr()
    on_diag = torch.zeros(A0.values().shape, dtype=torch.bool)
    rows = torch.repeat_interleave(torch.arange(64), A0.crow_indices().diff())
    on_diag[rows == A0.col_indices()] = True
    target_shift = 0.7
    b = torch.ones(64, dtype=F64)
    x_target = torch.linalg.solve(A0.to_dense() + target_shift * torch.eye(64, dtype=F64), b)
    shift = torch.zeros((), dtype=F64, requires_grad=True)
    opt = torch.optim.Adam([shift], lr=0.05)
    first = None
    for _ in range(300):
        opt.zero_grad()
        A = sparse_with_values(A0, A0.values() + shift * on_diag)
        x = sparse_generic_solve(A, b, "cg", rtol=1e-10, preconditioner="ic0")
        loss = ((x - x_target) ** 2).sum()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    assert float(loss.detach()) < 1e-3 * first
    assert abs(float(shift.detach()) - target_shift) < 0.02


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_scipy_bridge_and_krylov_agree_on_solution_and_gradients(layout):
    from torchsparsegradutils import sparse_generic_solve
    from torchsparsegradutils.cupy import sparse_solve_c4t
    from tsgu_ops.testing import grid_operator

    A = grid_operator((7, 7), convection=0.5)
    A = A if layout == torch.sparse_coo else A.to_sparse_csr()
    B = torch.randn(49, 3, dtype=F64)
    grads = []
    sols = []
    for solve in (
        lambda A: sparse_solve_c4t(A, B),
        lambda A: sparse_generic_solve(A, B, "gmres", rtol=1e-12, preconditioner="ilu0"),
    ):
        Ar = A.detach().clone().requires_grad_()
        X = solve(Ar)
        (X * torch.arange(X.numel(), dtype=F64).reshape(X.shape)).sum().backward()
        sols.append(X.detach())
        grads.append(Ar.grad.to_dense())
    torch.testing.assert_close(sols[0], sols[1], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# The examples of the original README (torchsparsegradutils 0.2.2), corrected where they were broken.
def test_readme_sparse_mm():
    from torchsparsegradutils import sparse_mm

    indices = torch.tensor([[0, 1, 1], [2, 0, 2]], dtype=torch.int64)
    values = torch.tensor([3.0, 4.0, 5.0], requires_grad=True)
    A = torch.sparse_coo_tensor(indices, values, (2, 3))
    B = torch.randn(3, 4, requires_grad=True)
    C = sparse_mm(A, B)
    loss = C.sum()
    loss.backward()
    assert values.grad is not None and B.grad is not None


def test_readme_sparse_linear_system_solving():
    from torchsparsegradutils import sparse_generic_solve, sparse_triangular_solve
    from torchsparsegradutils.cupy import sparse_solve_c4t
    from torchsparsegradutils.utils import linear_cg
    from torchsparsegradutils.utils.random_sparse import make_spd_sparse, rand_sparse_tri

    # corrected: the README used an undefined helper and a 1-D b for the triangular solve
    A = rand_sparse_tri((50, 50), 200, torch.sparse_csr, upper=False, well_conditioned=True)
    b = torch.randn(A.shape[0], 1, requires_grad=True)
    x1 = sparse_triangular_solve(A, b, upper=False)
    torch.testing.assert_close(A.to_dense() @ x1, b, rtol=1e-4, atol=1e-4)
    # corrected: CG needs an SPD matrix; tol= now works with the built-in solvers
    S, _ = make_spd_sparse(50, torch.sparse_csr, torch.float32, torch.int64, "cpu")
    bv = torch.randn(50)
    x2 = sparse_generic_solve(S, bv, solve=linear_cg, tol=1e-6)
    x3 = sparse_solve_c4t(S, bv, solve="cg", tol=1e-6)
    torch.testing.assert_close(x2, x3, rtol=1e-4, atol=1e-4)


def test_readme_sparse_multivariate_normal():
    from torchsparsegradutils.distributions import SparseMultivariateNormal
    from torchsparsegradutils.utils.random_sparse import rand_sparse_tri

    batch_size, event_size = 2, 1000
    loc = torch.zeros(batch_size, event_size)
    # corrected: 0.2.x's unit_triangular=True is strict=True; the factor must require grad
    scale_tril = rand_sparse_tri(
        (batch_size, event_size, event_size), nnz=5000, layout=torch.sparse_csr, upper=False, strict=True
    ).requires_grad_()
    diagonal = torch.ones(batch_size, event_size) * 0.5
    dist_ldlt = SparseMultivariateNormal(loc=loc, diagonal=diagonal, scale_tril=scale_tril)
    scale_tril_chol = rand_sparse_tri(
        (batch_size, event_size, event_size), nnz=5000, layout=torch.sparse_csr, upper=False, strict=False
    )
    dist_chol = SparseMultivariateNormal(loc=loc, scale_tril=scale_tril_chol)
    precision_tril = rand_sparse_tri(
        (batch_size, event_size, event_size), nnz=5000, layout=torch.sparse_csr, upper=False, strict=True
    )
    dist_precision = SparseMultivariateNormal(
        loc=loc, diagonal=torch.ones(batch_size, event_size) * 2.0, precision_tril=precision_tril
    )
    samples = dist_ldlt.rsample((100,))
    samples.sum().backward()
    assert scale_tril.grad.shape == scale_tril.shape
    assert scale_tril.grad._nnz() == scale_tril._nnz()
    assert dist_ldlt.is_ldlt_parameterization
    assert dist_chol.rsample().shape == dist_precision.rsample().shape == (2, 1000)


def test_readme_pairwise_encoding():
    from torchsparsegradutils.distributions import SparseMultivariateNormal
    from torchsparsegradutils.encoders import PairwiseEncoder

    volume_shape = (4, 16, 16, 16)  # corrected: (4, 64, 64, 64) needs several GB; same code
    encoder = PairwiseEncoder(radius=2.0, volume_shape=volume_shape, layout=torch.sparse_csr)
    num_offsets = len(encoder.offsets)
    values = torch.randn(num_offsets, *volume_shape)
    sparse_matrix = encoder(values)
    assert sparse_matrix.shape == (4 * 16**3, 4 * 16**3)
    flat_size = 4 * 16 * 16 * 16
    # corrected: a scale_tril must be lower triangular: upper=False (and a diagonal) for a factor
    tril = PairwiseEncoder(2.0, volume_shape, diag=True, upper=False, layout=torch.sparse_csr)
    v = torch.rand(len(tril.offsets), *volume_shape) * 0.1
    v[0] = 1.0
    dist = SparseMultivariateNormal(loc=torch.zeros(flat_size), scale_tril=tril(v), validate_args=True)
    assert dist.rsample().shape == (flat_size,)


def test_readme_indexed_matrix_operations():
    from torchsparsegradutils import gather_mm, segment_mm

    a = torch.randn(15, 10, requires_grad=True)
    b = torch.randn(3, 10, 5, requires_grad=True)
    seglen_a = torch.tensor([5, 6, 4])
    result = segment_mm(a, b, seglen_a)
    torch.testing.assert_close(result[5:11], a[5:11] @ b[1])
    indices = torch.tensor([0, 0, 1, 1, 2])
    a_gathered = torch.randn(5, 10, requires_grad=True)
    result = gather_mm(a_gathered, b, indices)
    torch.testing.assert_close(result[4], a_gathered[4] @ b[2])


def test_readme_statistical_validation():
    from torch.distributions import MultivariateNormal

    from torchsparsegradutils.utils import cov_nagao_test, mean_hotelling_t2_test

    torch.manual_seed(42)
    true_mean = torch.tensor([[0.0, 0.0]])
    true_cov = torch.eye(2).unsqueeze(0)
    n = 1000
    dist = MultivariateNormal(true_mean.squeeze(0), true_cov.squeeze(0))
    samples = dist.sample((n,)).unsqueeze(1)
    sample_mean = samples.mean(0)
    sample_cov = torch.cov(samples.squeeze(1).T).unsqueeze(0)
    result, _, _ = mean_hotelling_t2_test(sample_mean, true_mean, sample_cov, n, confidence_level=0.95)
    assert bool(result.item())
    result, _, _ = cov_nagao_test(sample_cov, true_cov, n, confidence_level=0.95)
    assert bool(result.item())


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_bridge_agrees_with_scipy_bridge():
    from torchsparsegradutils.cupy import sparse_solve_c4t
    from torchsparsegradutils.jax import sparse_solve_j4t
    from tsgu_ops.testing import grid_operator

    A = grid_operator((5, 5), convection=0.3).requires_grad_()
    B = torch.randn(25, 2, dtype=F64)
    X1 = sparse_solve_c4t(A, B)
    X2 = sparse_solve_j4t(A, B)
    torch.testing.assert_close(X1, X2, rtol=1e-8, atol=1e-10)
