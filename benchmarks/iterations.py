"""Iterations to a relative residual of 1e-6 for every applicable solver × preconditioner (tsgu-krylov).

Run in the benchmark's main process after the timed cases (each solve once, forward only): a 3-D
Poisson matrix (SPD: every solver) and a convection–diffusion matrix (non-symmetric: GMRES and
BiCGSTAB), with no preconditioner, Jacobi, IC(0) (SPD only) and ILU(0).
"""

from __future__ import annotations

import time
from typing import Any

import torch


def iteration_table(k: int = 40, rtol: float = 1e-6) -> str:
    """A markdown table: iterations and true relative residual per solver and preconditioner."""
    from tsgu_krylov import bicgstab, gmres, linear_cg, make_preconditioner, minres
    from tsgu_ops.testing import grid_operator

    problems = [
        (f"poisson 3d {k}^3", 0.0, {"cg": linear_cg, "minres": minres, "gmres": gmres, "bicgstab": bicgstab}),
        (f"convection-diffusion {k}^3", 1.0, {"gmres": gmres, "bicgstab": bicgstab}),
    ]
    lines = [
        f"Iterations to a true relative residual of {rtol:g} (float64, one right-hand side; time of one "
        "forward solve, preconditioner set-up excluded):",
        "",
        "| matrix | solver | none | Jacobi | IC(0) | ILU(0) |",
        "|---|---|---|---|---|---|",
    ]
    for name, convection, solvers in problems:
        A = grid_operator((k, k, k), convection).to_sparse_csr()
        b = torch.randn(A.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        pcs: dict[str, Any] = {
            "none": None,
            "jacobi": make_preconditioner(A, "jacobi"),
            "ilu0": make_preconditioner(A, "ilu0"),
        }
        if convection == 0.0:
            pcs["ic0"] = make_preconditioner(A, "ic0")
        for sname, fn in solvers.items():
            cells = []
            for pc in ("none", "jacobi", "ic0", "ilu0"):
                if pc not in pcs:
                    cells.append("–")
                    continue
                extra = {"atol": 0.0} if sname == "bicgstab" else {}
                t0 = time.perf_counter()
                x, info = fn(
                    A, b, rtol=rtol, preconditioner=pcs[pc], return_info=True, on_failure="ignore", **extra
                )
                dt = time.perf_counter() - t0
                res = float(torch.linalg.vector_norm(b - A @ x) / torch.linalg.vector_norm(b))
                mark = "" if res <= rtol * 1.01 else " (not converged)"
                cells.append(f"{info.iterations} it, {res:.1e}, {dt * 1e3:.0f} ms{mark}")
            lines.append(f"| {name} | {sname} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
