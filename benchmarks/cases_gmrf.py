"""GMRF log-likelihood (tsgu-distributions, ``precision_matrix=Q``) on 2-D grids, side by side.

The model: a 5-point Laplacian on a ``k × k`` grid plus ``0.1·I`` as the precision ``Q`` of a
Gaussian Markov random field, one observation ``x``.  What is timed is what one step of fitting
``Q``'s values costs: build the distribution (the exact sparse Cholesky factorisation; the symbolic
analysis is cached from the setup call, as in a loop whose values change), ``log_prob(x)``
forward, and backward to ``Q`` (sparse, by selected inversion) and ``loc``.

* ``tsgu SparseMultivariateNormal(precision_matrix=Q)`` at ``k = 100`` (10,000 unknowns; the quick
  suite) and ``k = 640`` (409,600 unknowns; ``--full``);
* ``torch MultivariateNormal(precision_matrix=Q.to_dense())``: what a user would write instead,
  dense (``O(n²)`` memory, ``O(n³)`` time), at the largest grid that runs in a few seconds here
  (``k = DENSE_K``), beside tsgu at the same size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from .cases import Case, Run, Variant

#: The largest grid side at which the dense MultivariateNormal step takes a few seconds (2 shared
#: CPU cores: 48² = 2,304 unknowns).
DENSE_K = 48


@functools.lru_cache(maxsize=3)
def gmrf_precision(k: int) -> torch.Tensor:
    """``Laplacian(k × k) + 0.1·I`` as a coalesced float64 COO tensor."""
    from tsgu_ops.testing import grid_operator

    A = grid_operator((k, k))
    n = k * k
    eye = torch.sparse_coo_tensor(
        torch.arange(n).repeat(2, 1), torch.full((n,), 0.1, dtype=torch.float64), (n, n)
    )
    return (A + eye).coalesce()


def _meta(n: int, nnz: int, note: str) -> dict[str, Any]:
    return {"nnz": nnz, "rows": n, "dtype": "float64", "layout": "csr", "note": note}


def _observation(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, generator=g, dtype=torch.float64)


def tsgu_variant(k: int) -> Callable[[dict[str, Any]], Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        import tsgu_cholesky as tc

        from tsgu_distributions import SparseMultivariateNormal

        Q = gmrf_precision(k).to_sparse_csr().requires_grad_()
        n = Q.shape[0]
        loc = torch.zeros(n, dtype=torch.float64, requires_grad=True)
        x = _observation(n)
        analysis = tc.analyze(Q.detach())  # warms the cache (and the compiled kernel)

        def forward() -> torch.Tensor:
            return SparseMultivariateNormal(loc, precision_matrix=Q).log_prob(x)

        def backward(out: torch.Tensor) -> None:
            Q.grad = loc.grad = None
            out.backward()

        return Run(
            forward, backward, _meta(n, Q._nnz(), f"nnz(L) {analysis.nnz_L}, kernel {tc.kernel_name()}")
        )

    return setup


def dense_variant(k: int) -> Callable[[dict[str, Any]], Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        Qs = gmrf_precision(k)
        n = Qs.shape[0]
        Q = Qs.to_dense().requires_grad_()
        loc = torch.zeros(n, dtype=torch.float64, requires_grad=True)
        x = _observation(n)

        def forward() -> torch.Tensor:
            return torch.distributions.MultivariateNormal(loc, precision_matrix=Q).log_prob(x)

        def backward(out: torch.Tensor) -> None:
            Q.grad = loc.grad = None
            out.backward()

        return Run(forward, backward, _meta(n, Qs._nnz(), "dense n × n precision"))

    return setup


def gmrf_cases(full: bool = False) -> list[Case]:
    cases = [
        Case(
            f"gmrf_logprob_2d_{DENSE_K}",
            "SparseMultivariateNormal(precision_matrix=Q).log_prob",
            f"2-D GMRF {DENSE_K}x{DENSE_K}",
            [
                Variant("tsgu log_prob fwd+bwd", tsgu_variant(DENSE_K)),
                Variant("torch MultivariateNormal (dense) fwd+bwd", dense_variant(DENSE_K), baseline=True),
            ],
        )
    ]
    for k in (100, 640) if full else (100,):
        cases.append(
            Case(
                f"gmrf_logprob_2d_{k}",
                "SparseMultivariateNormal(precision_matrix=Q).log_prob",
                f"2-D GMRF {k}x{k}",
                [Variant("tsgu log_prob fwd+bwd", tsgu_variant(k))],
            )
        )
    return cases


if __name__ == "__main__":  # one process, side by side: python -m benchmarks.cases_gmrf [k ...]
    import statistics
    import sys
    import time

    def _time(setup: Callable[[dict[str, Any]], Run], reps: int) -> tuple[float, float]:
        run = setup({})
        out = run.forward()  # warm-up
        assert run.backward is not None
        run.backward(out)
        fwd, bwd = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = run.forward()
            t1 = time.perf_counter()
            run.backward(out)
            t2 = time.perf_counter()
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
        return statistics.median(fwd), statistics.median(bwd)

    sizes = [int(a) for a in sys.argv[1:]] or [DENSE_K, 100]
    for k in sizes:
        f, b = _time(tsgu_variant(k), 3 if k <= 200 else 1)
        row = f"k={k} n={k * k}: tsgu fwd {f:.3f} s + bwd {b:.3f} s = {f + b:.3f} s"
        if k <= DENSE_K:
            df, db = _time(dense_variant(k), 3)
            row += f" | dense fwd {df:.3f} s + bwd {db:.3f} s = {df + db:.3f} s ({(df + db) / (f + b):.1f}x)"
        print(row, flush=True)
