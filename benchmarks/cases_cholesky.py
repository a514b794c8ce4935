"""Exact sparse log-determinant (tsgu-cholesky) on 2-D and 3-D GMRF precisions, side by side.

The model: a 5-point Laplacian on a ``k × k`` grid (7-point on ``k × k × k``) plus ``0.1·I`` (a
Gaussian Markov random field precision, SPD).  Variants of one case, in one process:

* ``sparse_logdet fwd+bwd``: forward (numeric factorisation; the symbolic analysis is cached from
  the setup call, as in a training loop whose values change) and backward (selected inversion);
* ``sparse_logdet fwd+bwd, cold``: the same with the analysis cache cleared before every call
  (symbolic + numeric phases);
* ``SuperLU factorisation (MMD, symmetric mode)``: one ``scipy.sparse.linalg.splu`` of the same
  matrix, the yardstick of the issue's target (fwd+bwd ≤ 3× this);
* ``torch-sla 0.4 logdet fwd+bwd``: its differentiable route (Hutchinson estimate for large SPD
  matrices; stochastic, not exact), one round alone (tens of seconds at 640²).

The quick suite runs 100 × 100 (10,000 unknowns) and 12³ (1,728); ``--full`` adds 640 × 640
(409,600 unknowns) and 30³ (27,000).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from .cases import Case, Run, Variant


@functools.lru_cache(maxsize=2)
def gmrf_precision(k: int, dim: int = 2) -> torch.Tensor:
    """``Laplacian(k × … × k) + 0.1·I`` (``dim`` axes) as a coalesced float64 COO tensor."""
    from tsgu_ops.testing import grid_operator

    A = grid_operator((k,) * dim)
    n = k**dim
    eye = torch.sparse_coo_tensor(
        torch.arange(n).repeat(2, 1), torch.full((n,), 0.1, dtype=torch.float64), (n, n)
    )
    return (A + eye).coalesce()


def _meta(A: torch.Tensor, note: str) -> dict[str, Any]:
    return {"nnz": A._nnz(), "rows": A.shape[0], "dtype": "float64", "layout": "csr", "note": note}


def logdet_variant(k: int, cold: bool, dim: int = 2) -> Callable[[dict[str, Any]], Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        import tsgu_cholesky as tc

        A = gmrf_precision(k, dim).to_sparse_csr().requires_grad_()
        analysis = tc.analyze(A.detach())  # warms the cache (and the compiled kernel)
        note = f"nnz(L) {analysis.nnz_L}, symbolic {analysis.seconds:.2f} s, kernel {tc.kernel_name()}"

        def forward() -> torch.Tensor:
            if cold:
                tc.clear_cache()
            return tc.sparse_logdet(A)

        def backward(out: torch.Tensor) -> None:
            A.grad = None
            out.backward()

        return Run(forward, backward, _meta(A, note))

    return setup


def superlu_variant(k: int, dim: int = 2) -> Callable[[dict[str, Any]], Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        import scipy.sparse as sp
        import scipy.sparse.linalg as sla

        A = gmrf_precision(k, dim)
        idx = A.indices().numpy()
        M = sp.csc_matrix((A.values().numpy(), (idx[0], idx[1])), shape=tuple(A.shape))
        opts = {"permc_spec": "MMD_AT_PLUS_A", "diag_pivot_thresh": 0.0, "options": {"SymmetricMode": True}}
        return Run(lambda: sla.splu(M, **opts), None, _meta(A, "factor only"))

    return setup


def torch_sla_variant(k: int, dim: int = 2) -> Callable[[dict[str, Any]], Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        try:
            from torch_sla import SparseTensor
        except ImportError as exc:  # optional comparator: benchmarks/requirements-bench.txt
            raise NotImplementedError("torch-sla is not installed") from exc
        A = gmrf_precision(k, dim)
        row, col = A.indices()
        val = A.values().clone().requires_grad_()

        def forward() -> torch.Tensor:
            return SparseTensor(val, row, col, tuple(A.shape)).logdet()  # type: ignore[no-any-return]

        def backward(out: torch.Tensor) -> None:
            val.grad = None
            out.backward()

        return Run(forward, backward, _meta(A, "default method (Hutchinson for large SPD)"))

    return setup


def cholesky_cases(full: bool = False) -> list[Case]:
    cases = []
    sizes = [(100, 2), (12, 3)] + ([(640, 2), (30, 3)] if full else [])
    for k, dim in sizes:
        big = k**dim > 10_000
        variants = [
            Variant("tsgu sparse_logdet fwd+bwd", logdet_variant(k, cold=False, dim=dim)),
            Variant(
                "tsgu sparse_logdet fwd+bwd, cold (symbolic + numeric)", logdet_variant(k, cold=True, dim=dim)
            ),
            Variant("SuperLU factorisation (MMD, symmetric mode)", superlu_variant(k, dim), baseline=True),
            Variant("torch-sla 0.4 logdet fwd+bwd", torch_sla_variant(k, dim), alone=big),
        ]
        grid = "x".join([str(k)] * dim)
        cases.append(
            Case(f"cholesky_logdet_gmrf{dim}d_{k}", "sparse_logdet", f"{dim}-D GMRF {grid}", variants)
        )
    return cases
