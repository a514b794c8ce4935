"""An FEM inverse problem across the packages: learnable per-element conductivities, assembled as an
uncoalesced COO matrix (the textbook assembly), solved by every solver and bridge.

``A(κ) = Σ_e κ_e K_e + shift·I`` is built with ``torch.sparse_coo_tensor(idx, w(κ))`` and no
``coalesce()``: every interior coordinate is stored several times, and PyTorch reads the tensor as the
sum of its duplicates.  The gradient of a loss of ``X = A⁻¹ B`` with respect to ``κ`` must equal
dense autograd's (the same matrix assembled densely with ``index_put(..., accumulate=True)``), for
every solver of tsgu-krylov, the SciPy and JAX bridges, least squares, and the distributions'
factor forms; and a leaf ``A``'s gradient, read as PyTorch reads it, must be ``dL/dA`` on its pattern.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from tsgu_ops.testing import p1_element_entries, stored_entries

F64 = torch.float64


def _problem(refine: int = 2, lower: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    idx, local, n = p1_element_entries(refine, lower=lower)
    ne = (idx.shape[1] - n) // 9 if not lower else None
    g = torch.Generator().manual_seed(0)
    if ne is not None:
        kappa = (0.5 + torch.rand(ne, generator=g, dtype=F64)).requires_grad_()
    else:
        kappa = (0.5 + torch.rand(idx.shape[1], generator=g, dtype=F64)).requires_grad_()
    return idx, local, kappa, n


def _values(local: torch.Tensor, kappa: torch.Tensor, n: int) -> torch.Tensor:
    """Element entries times the element's conductivity; the diagonal shift is not learnable."""
    if kappa.numel() == local.numel():
        return local * kappa
    per_entry = kappa.repeat_interleave(9)
    return torch.cat([local[:-n] * per_entry, local[-n:]])


def _dense(idx: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, n, dtype=w.dtype).index_put((idx[0], idx[1]), w, accumulate=True)


def _krylov(name: str | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from tsgu_krylov import sparse_generic_solve

    if name is None:
        return lambda A, B: sparse_generic_solve(A, B)
    return lambda A, B: sparse_generic_solve(A, B, name, rtol=1e-12, maxiter=10_000)


def _scipy(name: str | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from tsgu_bridges import sparse_solve_c4t

    if name is None:
        return lambda A, B: sparse_solve_c4t(A, B)
    return lambda A, B: torch.stack(
        [sparse_solve_c4t(A, B[:, j], name, rtol=1e-12, atol=0.0, maxiter=10_000) for j in range(B.shape[1])],
        1,
    )


def _jax(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    pytest.importorskip("jax")
    from tsgu_bridges.jax_sparse_solve import sparse_solve_j4t

    return sparse_solve_j4t(A, B)


SOLVERS: dict[str, Any] = {
    "generic_default": lambda: _krylov(None),
    "generic_cg": lambda: _krylov("cg"),
    "generic_minres": lambda: _krylov("minres"),
    "generic_bicgstab": lambda: _krylov("bicgstab"),
    "generic_gmres": lambda: _krylov("gmres"),
    "scipy_spsolve": lambda: _scipy(None),
    "scipy_cg": lambda: _scipy("cg"),
    "jax_default": lambda: _jax,
}


def _loss(X: torch.Tensor) -> torch.Tensor:
    target = torch.linspace(-1.0, 1.0, X.numel(), dtype=F64).reshape(X.shape)
    return ((X - target) ** 2).sum()


@pytest.mark.parametrize("name", list(SOLVERS))
def test_conductivity_gradient_through_an_uncoalesced_assembly_equals_dense_autograd(name: str) -> None:
    solve = SOLVERS[name]()
    idx, local, kappa, n = _problem()
    B = torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    A = torch.sparse_coo_tensor(idx, _values(local, kappa, n), (n, n))
    assert not A.is_coalesced() and idx.shape[1] > 3 * n
    _loss(solve(A, B)).backward()
    kappa_ref = kappa.detach().clone().requires_grad_()
    _loss(torch.linalg.solve(_dense(idx, _values(local, kappa_ref, n), n), B)).backward()
    torch.testing.assert_close(kappa.grad, kappa_ref.grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["generic_default", "scipy_spsolve"])
def test_leaf_gradient_of_an_uncoalesced_assembly_means_dl_da(name: str) -> None:
    solve = SOLVERS[name]()
    idx, local, _, n = _problem(refine=1)
    A = torch.sparse_coo_tensor(idx, local.clone(), (n, n)).requires_grad_()
    B = torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    _loss(solve(A, B)).backward()
    _loss(solve(A, 2 * B)).backward()  # accumulated into .grad
    D = _dense(idx, local, n).requires_grad_()
    _loss(torch.linalg.solve(D, B)).backward()
    _loss(torch.linalg.solve(D, 2 * B)).backward()
    coords = tuple(stored_entries(A))
    mask = torch.zeros(n, n, dtype=F64).index_put(coords, torch.ones(coords[0].numel(), dtype=F64))
    assert torch.equal(A.grad._indices(), idx)
    torch.testing.assert_close(A.grad.to_dense(), D.grad * mask, rtol=1e-7, atol=1e-10)


def test_least_squares_through_an_uncoalesced_assembly_equals_dense_autograd() -> None:
    from tsgu_krylov import sparse_generic_lstsq

    idx, local, kappa, n = _problem(refine=1)
    # a tall system: the assembled matrix on top of a scaled identity (more duplicates of nothing)
    eye = torch.arange(n)
    tall_idx = torch.cat([idx, torch.stack([eye + n, eye])], 1)

    def tall_values(k: torch.Tensor) -> torch.Tensor:
        return torch.cat([_values(local, k, n), torch.full((n,), 0.3, dtype=F64)])

    B = torch.randn(2 * n, dtype=F64, generator=torch.Generator().manual_seed(3))
    A = torch.sparse_coo_tensor(tall_idx, tall_values(kappa), (2 * n, n))
    _loss(sparse_generic_lstsq(A, B)).backward()
    kappa_ref = kappa.detach().clone().requires_grad_()
    D = torch.zeros(2 * n, n, dtype=F64).index_put(
        (tall_idx[0], tall_idx[1]), tall_values(kappa_ref), accumulate=True
    )
    _loss(torch.linalg.lstsq(D, B[:, None]).solution[:, 0]).backward()
    torch.testing.assert_close(kappa.grad, kappa_ref.grad, rtol=1e-6, atol=1e-9)


def test_gmrf_log_prob_with_an_uncoalesced_precision_factor_equals_dense() -> None:
    from tsgu_distributions import SparseMultivariateNormal

    idx, local, w, n = _problem(refine=1, lower=True)
    # a lower-triangular factor assembled from entries with duplicates (w per stored entry)
    values = local * w
    diag_boost = torch.stack([torch.arange(n), torch.arange(n)])
    L_idx = torch.cat([idx, diag_boost], 1)

    def factor_values(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([v, torch.full((n,), 2.0, dtype=F64)])

    L = torch.sparse_coo_tensor(L_idx, factor_values(values), (n, n))
    x = torch.randn(3, n, dtype=F64, generator=torch.Generator().manual_seed(4))
    loc = torch.zeros(n, dtype=F64)
    SparseMultivariateNormal(loc, precision_tril=L).log_prob(x).sum().backward()
    w_ref = w.detach().clone().requires_grad_()
    Ld = torch.zeros(n, n, dtype=F64).index_put(
        (L_idx[0], L_idx[1]), factor_values(local * w_ref), accumulate=True
    )
    ref = torch.distributions.MultivariateNormal(loc, precision_matrix=Ld @ Ld.T)
    ref.log_prob(x).sum().backward()
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-8, atol=1e-10)
