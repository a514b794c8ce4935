"""Every package on a CUDA device, against dense float64 references computed on the CPU.

Nothing here runs without a GPU (the whole module is skipped); it is run on a GPU machine with
``scripts/device_check.sh``, which also runs the CuPy bridge tests and ``python -m benchmarks --device
cuda``.  ``TSGU_TEST_DEVICE=cpu`` runs the same checks on the CPU (used to check the references
themselves on machines without a GPU).

What is checked on the device: values and gradients (layout, pattern, index dtype, device) of every
operation with a sparse gradient, gradient accumulation of batched CSR, the index validation that must
stop malformed input before a CUDA kernel reads it (a device-side assert would poison the process),
the Krylov solvers with each preconditioner, the CuPy and JAX bridges on device tensors, the
distributions, the encoder, the indexed products and ``SparseParameter`` under ``torch.compile``.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

DEV = os.environ.get("TSGU_TEST_DEVICE", "cuda")
F64 = torch.float64

pytestmark = pytest.mark.skipif(
    DEV.startswith("cuda") and not torch.cuda.is_available(), reason="needs a CUDA device"
)

LAYOUTS = [torch.sparse_coo, torch.sparse_csr]
INDEX_DTYPES = [torch.int32, torch.int64]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sparse(dense: torch.Tensor, layout: torch.layout, index_dtype: torch.dtype) -> torch.Tensor:
    """``dense`` (CPU) as a sparse tensor of ``layout`` and ``index_dtype`` on the test device."""
    if layout == torch.sparse_coo:
        S = dense.to_sparse().coalesce()
        S = torch.sparse_coo_tensor(S.indices().to(index_dtype), S.values(), S.shape, is_coalesced=True)
    else:
        S = dense.to_sparse_csr()
        S = torch.sparse_csr_tensor(
            S.crow_indices().to(index_dtype), S.col_indices().to(index_dtype), S.values(), S.shape
        )
    return S.to(DEV)


def _random_pattern(shape: tuple[int, ...], density: float, seed: int, diag: float = 0.0) -> torch.Tensor:
    g = _gen(seed)
    mask = torch.rand(shape[-2:], generator=g) < density  # one pattern per batch (batched CSR needs it)
    D = torch.randn(shape, generator=g, dtype=F64) * mask
    if diag:
        D = D + diag * torch.eye(shape[-1], dtype=F64).expand(shape)
    return D


def _on_pattern(S: torch.Tensor, dense_grad: torch.Tensor) -> torch.Tensor:
    """The dense gradient read at ``S``'s stored entries, in ``S``'s value order (CPU)."""
    if S.layout == torch.sparse_coo:
        idx = S.indices().long().cpu()
        return dense_grad[tuple(idx)]
    crow, col = S.crow_indices().long().cpu(), S.col_indices().long().cpu()
    if S.dim() == 2:
        rows = torch.repeat_interleave(torch.arange(S.shape[0]), crow.diff())
        return dense_grad[rows, col]
    out = []
    for b in range(S.shape[0]):
        rows = torch.repeat_interleave(torch.arange(S.shape[1]), crow[b].diff())
        out.append(dense_grad[b, rows, col[b]])
    return torch.stack(out)


def _values(S: torch.Tensor) -> torch.Tensor:
    return S.coalesce().values() if S.layout == torch.sparse_coo else S.values()


def _check_sparse_grad(A: torch.Tensor, dense_grad: torch.Tensor, atol: float = 1e-9) -> None:
    g = A.grad
    assert g is not None
    assert g.layout == A.layout and g.device == A.device
    if A.layout == torch.sparse_csr:
        assert g.crow_indices().dtype == A.crow_indices().dtype
        assert torch.equal(g.crow_indices(), A.crow_indices()) and torch.equal(
            g.col_indices(), A.col_indices()
        )
    else:
        g = g.coalesce()
        assert g.indices().dtype == A.indices().dtype and torch.equal(g.indices(), A.indices())
    torch.testing.assert_close(_values(g).cpu(), _on_pattern(A, dense_grad), atol=atol, rtol=1e-7)


# ------------------------------------------------------------------------------------------------
# tsgu-ops
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("batch", [None, 3])
def test_sparse_mm_values_and_gradients(layout, index_dtype, batch):
    from tsgu_ops import sparse_mm

    shape = (7, 9) if batch is None else (batch, 7, 9)
    D = _random_pattern(shape, 0.3, 1)
    A = _sparse(D, layout, index_dtype).requires_grad_()
    B0 = torch.randn(*shape[:-2], 9, 4, dtype=F64, generator=_gen(2))
    B = B0.to(DEV, copy=True).requires_grad_()
    C = sparse_mm(A, B)
    assert C.device == A.device
    W = torch.randn(C.shape, dtype=F64, generator=_gen(3))
    (C * W.to(DEV)).sum().backward()

    Dr = D.clone().requires_grad_()
    Br = B0.clone().requires_grad_()
    Cr = Dr @ Br
    (Cr * W).sum().backward()
    torch.testing.assert_close(C.detach().cpu(), Cr.detach())
    torch.testing.assert_close(B.grad.cpu(), Br.grad)
    _check_sparse_grad(A, Dr.grad)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batched_gradient_accumulates_over_two_uses_and_two_backward_calls(layout):
    from tsgu_ops import sparse_mm

    D = _random_pattern((2, 6, 6), 0.4, 4)
    A = _sparse(D, layout, torch.int64).requires_grad_()
    B0 = torch.randn(2, 6, 3, dtype=F64, generator=_gen(5))
    B = B0.to(DEV)
    for _ in range(2):
        (sparse_mm(A, B).sum() + 2.0 * sparse_mm(A, B).pow(2).sum()).backward()
    Dr = D.clone().requires_grad_()
    for _ in range(2):
        ((Dr @ B0).sum() + 2.0 * (Dr @ B0).pow(2).sum()).backward()
    _check_sparse_grad(A, Dr.grad)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("unitriangular", [False, True])
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("batch", [None, 2])
def test_triangular_solve_values_and_gradients(layout, upper, unitriangular, transpose, batch):
    from tsgu_ops import sparse_triangular_solve

    n = 8
    shape = (n, n) if batch is None else (batch, n, n)
    D = _random_pattern(shape, 0.4, 6)
    D = D.triu(1) if upper else D.tril(-1)
    if not unitriangular:
        D = D + 3.0 * torch.eye(n, dtype=F64).expand(shape)
    A = _sparse(D, layout, torch.int32).requires_grad_()
    B0 = torch.randn(*shape[:-2], n, 3, dtype=F64, generator=_gen(7))
    B = B0.to(DEV, copy=True).requires_grad_()
    X = sparse_triangular_solve(A, B, upper=upper, unitriangular=unitriangular, transpose=transpose)
    W = torch.randn(X.shape, dtype=F64, generator=_gen(8))
    (X * W.to(DEV)).sum().backward()

    Dr = D.clone().requires_grad_()
    Br = B0.clone().requires_grad_()
    M = Dr + torch.eye(n, dtype=F64) if unitriangular else Dr
    if transpose:
        M = M.mT
    Xr = torch.linalg.solve_triangular(M, Br, upper=upper != transpose)
    (Xr * W).sum().backward()
    torch.testing.assert_close(X.detach().cpu(), Xr.detach())
    torch.testing.assert_close(B.grad.cpu(), Br.grad)
    _check_sparse_grad(A, Dr.grad)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dim", [0, 1])
def test_logsumexp_values_and_gradients(layout, dim):
    from tsgu_ops import sparse_logsumexp

    D = _random_pattern((6, 8), 0.5, 9)
    A = _sparse(D, layout, torch.int64).requires_grad_()
    out = sparse_logsumexp(A, dim)
    W = torch.randn(out.shape, dtype=F64, generator=_gen(10))
    (out * W.to(DEV)).sum().backward()
    Dr = D.clone().requires_grad_()
    ref = torch.logsumexp(Dr, dim)  # include_zeros=True: unstored entries count as 0
    (ref * W).sum().backward()
    torch.testing.assert_close(out.detach().cpu(), ref.detach())
    _check_sparse_grad(A, Dr.grad)


@pytest.mark.parametrize("dtype", [F64, torch.complex128])
def test_sampled_product_and_complex_sparse_mm(dtype):
    from tsgu_ops import sampled_product, sparse_mm

    D = _random_pattern((6, 5), 0.5, 11).to(dtype)
    if dtype.is_complex:
        D = D + 1j * _random_pattern((6, 5), 1.0, 12) * (D != 0)
    A = _sparse(D, torch.sparse_csr, torch.int64)
    U0 = torch.randn(6, 3, dtype=dtype, generator=_gen(13))
    V0 = torch.randn(5, 3, dtype=dtype, generator=_gen(14))
    S = sampled_product(A, U0.to(DEV), V0.to(DEV))
    torch.testing.assert_close(_values(S).cpu(), _on_pattern(A, U0 @ V0.mT))

    Ag = A.clone().requires_grad_()
    B = V0.to(DEV, copy=True).requires_grad_()
    C = sparse_mm(Ag, B)
    C.abs().pow(2).sum().backward()
    Dr = D.clone().requires_grad_()
    Br = V0.clone().requires_grad_()
    (Dr @ Br).abs().pow(2).sum().backward()
    torch.testing.assert_close(B.grad.cpu(), Br.grad)
    _check_sparse_grad(Ag, Dr.grad)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
def test_random_generators_on_the_device(layout, index_dtype):
    from tsgu_ops import rand_sparse, rand_sparse_tri

    A = rand_sparse((2, 20, 20), 40, layout, indices_dtype=index_dtype, values_dtype=F64, device=DEV)
    assert A.device.type == torch.device(DEV).type and A.layout == layout
    idx = A.indices() if layout == torch.sparse_coo else A.col_indices()
    assert idx.dtype == (torch.int64 if layout == torch.sparse_coo else index_dtype)  # COO is int64 in torch
    assert int((A.to_dense() != 0).sum()) == 80
    T = rand_sparse_tri(
        (20, 20), 60, layout, upper=False, indices_dtype=index_dtype, values_dtype=F64, device=DEV
    )
    Td = T.to_dense().cpu()
    assert torch.equal(Td, Td.tril()) and bool((Td.diagonal() != 0).all())


def _bad_inputs() -> list[tuple[str, torch.Tensor]]:
    vals = torch.ones(3, dtype=F64)
    coo = torch.sparse_coo_tensor(torch.tensor([[0, 1, 4], [0, 1, 2]]), vals, (4, 4), check_invariants=False)
    neg = torch.sparse_coo_tensor(torch.tensor([[0, -1, 2], [0, 1, 2]]), vals, (4, 4), check_invariants=False)
    crow = torch.sparse_csr_tensor(
        torch.tensor([0, 2, 1, 3, 3]), torch.tensor([0, 1, 2]), vals, (4, 4), check_invariants=False
    )
    col = torch.sparse_csr_tensor(
        torch.tensor([0, 1, 2, 3, 3]), torch.tensor([0, 1, 7]), vals, (4, 4), check_invariants=False
    )
    return [
        ("coo row >= n", coo),
        ("negative coo index", neg),
        ("non-monotone crow", crow),
        ("col >= n", col),
    ]


@pytest.mark.parametrize("case", ["coo row >= n", "negative coo index", "non-monotone crow", "col >= n"])
def test_malformed_indices_are_refused_before_any_kernel(case):
    """A CUDA kernel reading an out-of-range index raises a device-side assert that kills the context."""
    from tsgu_krylov import sparse_generic_solve
    from tsgu_ops import sparse_mm, sparse_triangular_solve

    A = dict(_bad_inputs())[case]
    A = A.to(DEV)
    B = torch.ones(4, 2, dtype=F64, device=DEV)
    for call in (
        lambda: sparse_mm(A, B),
        lambda: sparse_triangular_solve(A, B, upper=False),
        lambda: sparse_generic_solve(A, B),
    ):
        with pytest.raises(ValueError, match="A"):
            call()
    # the context is still healthy: a kernel runs and synchronises without error
    assert float((B * 2).sum()) == 16.0
    if DEV.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------
# tsgu-krylov
def _poisson(k: int) -> torch.Tensor:
    n = k * k
    T = (
        2 * torch.eye(k, dtype=F64)
        - torch.diag(torch.ones(k - 1, dtype=F64), 1)
        - torch.diag(torch.ones(k - 1, dtype=F64), -1)
    )
    I = torch.eye(k, dtype=F64)
    return (torch.kron(T, I) + torch.kron(I, T)).reshape(n, n)


def _convdiff(k: int) -> torch.Tensor:
    A = _poisson(k)
    n = k * k
    up = torch.diag(torch.ones(n - 1, dtype=F64), 1)
    return A + 0.3 * (up - up.T) + 0.1 * torch.eye(n, dtype=F64)


@pytest.mark.parametrize(
    ("solve", "preconditioner", "matrix"),
    [
        ("cg", None, "spd"),
        ("cg", "jacobi", "spd"),
        ("cg", "ic0", "spd"),
        ("minres", None, "spd"),
        ("minres", "ilu0", "spd"),
        ("bicgstab", None, "general"),
        ("bicgstab", "ilu0", "general"),
        ("gmres", None, "general"),
        ("gmres", "ilu0", "general"),
        (None, None, "general"),
    ],
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_krylov_solvers_values_and_gradients(solve, preconditioner, matrix, layout):
    from tsgu_krylov import sparse_generic_solve

    D = _poisson(8) if matrix == "spd" else _convdiff(8)
    A = _sparse(D, layout, torch.int32).requires_grad_()
    B0 = torch.randn(64, 2, dtype=F64, generator=_gen(15))
    B = B0.to(DEV, copy=True).requires_grad_()
    kwargs = {"rtol": 1e-12}
    if preconditioner is not None:
        kwargs["preconditioner"] = preconditioner
    X = sparse_generic_solve(A, B, solve, **kwargs)
    assert X.device == B.device
    W = torch.randn(X.shape, dtype=F64, generator=_gen(16))
    (X * W.to(DEV)).sum().backward()
    Dr = D.clone().requires_grad_()
    Br = B0.clone().requires_grad_()
    Xr = torch.linalg.solve(Dr, Br)
    (Xr * W).sum().backward()
    torch.testing.assert_close(X.detach().cpu(), Xr.detach(), atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(B.grad.cpu(), Br.grad, atol=1e-8, rtol=1e-8)
    _check_sparse_grad(A, Dr.grad, atol=1e-8)


def test_krylov_batched_and_vector_right_hand_sides():
    from tsgu_krylov import sparse_generic_solve

    D = torch.stack([_convdiff(6), _convdiff(6) + 0.5 * torch.eye(36, dtype=F64)])
    A = _sparse(D, torch.sparse_csr, torch.int64).requires_grad_()
    B0 = torch.randn(2, 36, dtype=F64, generator=_gen(17))
    X = sparse_generic_solve(A, B0.to(DEV), "bicgstab", rtol=1e-12)
    X.sum().backward()
    Dr = D.clone().requires_grad_()
    Xr = torch.linalg.solve(Dr, B0.unsqueeze(-1)).squeeze(-1)
    Xr.sum().backward()
    torch.testing.assert_close(X.detach().cpu(), Xr.detach(), atol=1e-8, rtol=1e-8)
    _check_sparse_grad(A, Dr.grad, atol=1e-8)


def test_exact_incomplete_factors_on_the_device_match_a_sequential_reference():
    from tsgu_krylov import ILU0

    D = _convdiff(7)
    A = _sparse(D, torch.sparse_csr, torch.int64)
    P = ILU0(A)
    # sequential IKJ ILU(0) on the dense pattern (reference written here, on the CPU)
    n = D.shape[0]
    W = D.clone()
    nz = D != 0
    for i in range(1, n):
        for k in range(i):
            if not nz[i, k]:
                continue
            W[i, k] = W[i, k] / W[k, k]
            for j in range(k + 1, n):
                if nz[i, j]:
                    W[i, j] -= W[i, k] * W[k, j]
    Lr = W.tril(-1) + torch.eye(n, dtype=F64)
    Ur = W.triu()
    r = torch.randn(n, dtype=F64, generator=_gen(18))
    z = P(r.to(DEV).unsqueeze(-1)).squeeze(-1).cpu()
    torch.testing.assert_close(z, torch.linalg.solve(Lr @ Ur, r), atol=1e-10, rtol=1e-10)


def test_lsmr_and_generic_lstsq():
    from tsgu_krylov import sparse_generic_lstsq

    D = _random_pattern((30, 12), 0.3, 19) + torch.eye(30, 12, dtype=F64)
    A = _sparse(D, torch.sparse_csr, torch.int64).requires_grad_()
    B0 = torch.randn(30, 1, dtype=F64, generator=_gen(20))
    X = sparse_generic_lstsq(A, B0.to(DEV))
    X.sum().backward()
    Dr = D.clone().requires_grad_()
    Xr = torch.linalg.lstsq(Dr, B0).solution
    Xr.sum().backward()
    torch.testing.assert_close(X.detach().cpu(), Xr.detach(), atol=1e-6, rtol=1e-6)
    _check_sparse_grad(A, Dr.grad, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# tsgu-bridges
def _cupy_gpu() -> bool:
    if importlib.util.find_spec("cupy") is None or not DEV.startswith("cuda"):
        return False
    import cupy

    return bool(cupy.cuda.is_available())


@pytest.mark.skipif(not _cupy_gpu(), reason="CuPy with a CUDA device is not available")
@pytest.mark.parametrize("solve", ["spsolve", "cg", "minres"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cupy_bridge_on_device_tensors(solve, layout):
    from tsgu_bridges import sparse_solve_c4t

    D = _poisson(6)
    A = _sparse(D, layout, torch.int32).requires_grad_()
    # the iterative CuPy solvers take one right-hand side (0.2.7), SuperLU a block
    B0 = (
        torch.randn(36, 2, dtype=F64, generator=_gen(21))
        if solve == "spsolve"
        else torch.randn(36, dtype=F64, generator=_gen(21))
    )
    B = B0.to(DEV, copy=True).requires_grad_()
    kw = {} if solve == "spsolve" else {"tol": 1e-12}
    X = sparse_solve_c4t(A, B, solve, **kw)
    assert X.device == B.device
    X.sum().backward()
    Dr = D.clone().requires_grad_()
    Br = B0.clone().requires_grad_()
    torch.linalg.solve(Dr, Br).sum().backward()
    torch.testing.assert_close(X.detach().cpu(), torch.linalg.solve(D, B0), atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(B.grad.cpu(), Br.grad, atol=1e-7, rtol=1e-7)
    _check_sparse_grad(A, Dr.grad, atol=1e-7)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_jax_bridge_on_device_tensors():
    import jax

    jax.config.update("jax_enable_x64", True)
    from tsgu_bridges.jax_sparse_solve import sparse_solve_j4t

    D = _convdiff(5)
    A = _sparse(D, torch.sparse_csr, torch.int64).requires_grad_()
    B0 = torch.randn(25, 2, dtype=F64, generator=_gen(22))
    X = sparse_solve_j4t(A, B0.to(DEV), tol=1e-12)
    assert X.device == A.device
    X.sum().backward()
    Dr = D.clone().requires_grad_()
    torch.linalg.solve(Dr, B0).sum().backward()
    torch.testing.assert_close(X.detach().cpu(), torch.linalg.solve(D, B0), atol=1e-7, rtol=1e-7)
    _check_sparse_grad(A, Dr.grad, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# tsgu-distributions, tsgu-encoders, tsgu-indexed
@pytest.mark.parametrize("kind", ["scale_tril", "precision_tril"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_sparse_multivariate_normal_log_prob_and_rsample(kind, layout):
    from tsgu_distributions import SparseMultivariateNormal

    n = 10
    Ld = _random_pattern((n, n), 0.4, 23).tril(-1) * 0.3
    d = torch.rand(n, dtype=F64, generator=_gen(24)) + 0.5
    loc = torch.randn(n, dtype=F64, generator=_gen(25))
    L = _sparse(Ld, layout, torch.int64).requires_grad_()
    dist = SparseMultivariateNormal(loc.to(DEV), d.to(DEV), **{kind: L})
    x = torch.randn(4, n, dtype=F64, generator=_gen(26))
    lp = dist.log_prob(x.to(DEV))
    lp.sum().backward()

    Lr = Ld.clone().requires_grad_()
    U = torch.eye(n, dtype=F64) + Lr
    M = U @ torch.diag(d) @ U.T
    ref = (
        torch.distributions.MultivariateNormal(loc, covariance_matrix=M)
        if kind == "scale_tril"
        else torch.distributions.MultivariateNormal(loc, precision_matrix=M)
    )
    ref.log_prob(x).sum().backward()
    torch.testing.assert_close(lp.detach().cpu(), ref.log_prob(x).detach())
    _check_sparse_grad(L, Lr.grad, atol=1e-8)

    torch.manual_seed(0)
    s = dist.rsample((20000,))
    assert s.device == dist.loc.device and s.shape == (20000, n)
    cov = torch.cov(s.T.cpu())
    target = M if kind == "scale_tril" else torch.linalg.inv(M)
    assert float((cov - target).abs().max()) < 0.1 * float(target.abs().max())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pairwise_encoder_matches_a_brute_force_reference(layout):
    from tsgu_encoders import PairwiseEncoder

    shape = (1, 4, 5)
    enc = PairwiseEncoder(1, shape, layout=layout, device=DEV)
    vals = torch.randn(len(enc.offsets), *shape, dtype=F64, generator=_gen(27))
    A = enc(vals.to(DEV))
    assert A.device.type == torch.device(DEV).type and A.layout == layout
    Ad = A.to_dense().cpu()
    # brute force: entry (p, q) for every voxel p and offset o with q = p - o inside the volume
    ref = torch.zeros(20, 20, dtype=F64)
    for k, off in enumerate(enc.offsets):
        off = [int(o) for o in off]
        for c in range(shape[0]):
            for i in range(shape[1]):
                for j in range(shape[2]):
                    q = (c - off[0], i - off[1], j - off[2])
                    if all(0 <= q[t] < shape[t] for t in range(3)):
                        ref[c * 20 + i * 5 + j, q[0] * 20 + q[1] * 5 + q[2]] = vals[k, c, i, j]
    torch.testing.assert_close(Ad, ref)


@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16])
def test_segment_and_gather_mm(dtype):
    from tsgu_indexed import gather_mm, segment_mm

    g = _gen(28)
    R, D1, D2 = 4, 16, 8
    seglen = torch.tensor([5, 0, 7, 4])
    N = int(seglen.sum())
    a0 = torch.randn(N, D1, dtype=F64, generator=g)
    b0 = torch.randn(R, D1, D2, dtype=F64, generator=g)
    idx = torch.randint(0, R, (N,), generator=g)
    rows = torch.repeat_interleave(torch.arange(R), seglen)
    tol = {"atol": 5e-2, "rtol": 5e-2} if dtype == torch.bfloat16 else {"atol": 1e-4, "rtol": 1e-4}
    for fn, which in ((segment_mm, rows), (gather_mm, idx)):
        a = a0.to(dtype).to(DEV, copy=True).requires_grad_()
        b = b0.to(dtype).to(DEV, copy=True).requires_grad_()
        out = fn(a, b, seglen.to(DEV) if fn is segment_mm else idx.to(DEV))
        out.float().sum().backward()
        ar = a0.to(dtype).double().detach().clone().requires_grad_()
        br = b0.to(dtype).double().detach().clone().requires_grad_()
        ref = torch.bmm(ar.unsqueeze(1), br[which]).squeeze(1)
        ref.sum().backward()
        torch.testing.assert_close(out.detach().double().cpu(), ref.detach(), **tol)
        torch.testing.assert_close(a.grad.double().cpu(), ar.grad, **tol)
        torch.testing.assert_close(b.grad.double().cpu(), br.grad, **tol)


def test_sparse_parameter_under_compile():
    from tsgu_ops.nn import SparseParameter

    D = _random_pattern((12, 12), 0.3, 29, diag=4.0)
    W = SparseParameter(_sparse(D, torch.sparse_csr, torch.int64))
    B0 = torch.randn(12, 3, dtype=F64, generator=_gen(30))
    B = B0.to(DEV)

    def loss(B: torch.Tensor) -> torch.Tensor:
        return W.mm(B).pow(2).sum()

    compiled = torch.compile(loss, fullgraph=True)
    for fn in (loss, compiled):
        W.zero_grad()
        val = fn(B)
        val.backward()
        Dr = D.clone().requires_grad_()
        ref = (Dr @ B0).pow(2).sum()
        ref.backward()
        torch.testing.assert_close(val.detach().cpu(), ref.detach())
        grad = W.values.grad if hasattr(W, "values") else next(W.parameters()).grad
        A_ref = _sparse(D, torch.sparse_csr, torch.int64)
        torch.testing.assert_close(grad.cpu(), _on_pattern(A_ref, Dr.grad))
