"""Kernel calls and host syncs per Krylov iteration, counted on any device (issue 25).

On a GPU a Krylov iteration costs what it launches and how often the host waits for the device;
both are counted with :func:`tsgu_ops.testing.count_kernels` (a ``TorchDispatchMode``), so the
figures are the same on the CPU and on CUDA.  Kernel calls per iteration are marginal: the count
of a solve with ``max_iter = 2T`` minus that with ``T`` (tolerance unreachable), divided by ``T``,
so that the set-up and the final report do not enter.  Host syncs are those of a whole solve to
``rtol`` (set-up, checks and report included), next to its iteration count.

``python -m benchmarks.counts`` prints the table.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from tsgu_krylov import bicgstab, gmres, linear_cg, lsmr, minres
from tsgu_ops.testing import count_kernels, grid_operator

__all__ = ["solver_counts"]


def _marginal(solve: Callable[[int], Any], T: int) -> float:
    _, c1 = count_kernels(solve, T)
    _, c2 = count_kernels(solve, 2 * T)
    return (c2.kernels - c1.kernels) / T


def solver_counts(
    shape: tuple[int, ...] = (20, 20, 20),
    k: int = 8,
    rtol: float = 1e-10,
    device: str | torch.device = "cpu",
    T: int = 16,
) -> list[dict[str, Any]]:
    """Rows ``{solver, loop, kernels_per_iteration, syncs_per_solve, iterations}``.

    CG and MINRES on the 3-D Poisson matrix of ``shape`` (SPD), BiCGSTAB and GMRES on the same grid
    with upwind convection 0.3 (non-symmetric; also LSMR, with ``atol = btol = rtol``), float64
    CSR, ``k`` right-hand sides, each with ``loop="device"`` and ``loop="host"``.  GMRES
    iterations are Arnoldi steps.
    """
    dev = torch.device(device)
    spd = grid_operator(shape).to_sparse_csr().to(dev)
    nonsym = grid_operator(shape, convection=0.3).to_sparse_csr().to(dev)
    n = spd.shape[0]
    B = torch.randn(n, k, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(dev)
    cases: list[tuple[str, Callable[..., Any], torch.Tensor, dict[str, Any], list[str]]] = [
        ("cg", linear_cg, spd, {}, ["device", "host"]),
        ("bicgstab", bicgstab, nonsym, {"atol": 0.0}, ["device", "host"]),
        ("minres", minres, spd, {}, ["device", "host"]),
        ("gmres", gmres, nonsym, {"restart": 4 * T}, ["device", "host"]),
    ]
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, solver, A, extra, loops in cases:
            for loop in loops:
                kw = dict(extra, loop=loop)

                def capped(t: int, solver: Any = solver, A: Any = A, kw: Any = kw) -> Any:
                    return solver(A, B, rtol=1e-30, max_iter=t, on_failure="ignore", **kw)

                per_iter = _marginal(capped, T)
                (_, info), count = count_kernels(
                    solver, A, B, rtol=rtol, return_info=True, on_failure="ignore", **kw
                )
                rows.append(
                    {
                        "solver": name,
                        "loop": loop,
                        "kernels_per_iteration": per_iter,
                        "syncs_per_solve": count.syncs,
                        "iterations": info.iterations,
                    }
                )
    # LSMR (its own keywords): least squares on the non-symmetric matrix, iterations to 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for loop in ("device", "host"):

            def capped_lsmr(t: int, loop: str = loop) -> Any:
                return lsmr(nonsym, B, atol=0.0, btol=0.0, conlim=0.0, maxiter=t, loop=loop)

            per_iter = _marginal(capped_lsmr, T)
            (_, itn), count = count_kernels(lsmr, nonsym, B, atol=rtol, btol=rtol, loop=loop)
            rows.append(
                {
                    "solver": "lsmr",
                    "loop": loop,
                    "kernels_per_iteration": per_iter,
                    "syncs_per_solve": count.syncs,
                    "iterations": itn,
                }
            )
    return rows


def counts_markdown(device: str | torch.device = "cpu", shape: tuple[int, ...] = (12, 12, 12)) -> str:
    """The counts of :func:`solver_counts` as a Markdown section of the benchmark summary (the
    per-iteration counts do not depend on the grid size; a small grid keeps it to seconds)."""
    rows = solver_counts(shape=shape, device=device)
    lines = [
        "",
        f"## Kernel calls and host syncs per solver iteration ({torch.device(device).type}, counted)",
        "",
        f"float64 CSR, 3-D grid {'x'.join(map(str, shape))}, 8 right-hand sides, rtol 1e-10; kernel calls",
        "per iteration are marginal (check cost included); on a GPU each is a launch and each sync a wait",
        "(see docs/gpu.md).",
        "",
        "| solver | loop | kernel calls / iteration | host syncs / solve | iterations |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['solver']} | {r['loop']} | {r['kernels_per_iteration']:.1f} | {r['syncs_per_solve']} "
            f"| {r['iterations']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(f"{'solver':10} {'loop':7} {'kernels/it':>10} {'syncs/solve':>11} {'iterations':>10}")
    for row in solver_counts():
        print(
            f"{row['solver']:10} {row['loop']:7} {row['kernels_per_iteration']:10.1f} "
            f"{row['syncs_per_solve']:11d} {row['iterations']:10d}"
        )
