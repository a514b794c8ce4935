"""Preconditioned solves (issue 28): every solver × preconditioner beside SciPy, PyAMG and torch-sla.

Rows are forward + backward through ``sparse_generic_solve`` at the same *true* relative residual
as the peers (each library's tolerance is lowered until it reaches ``PEER_TARGET``, as in
:mod:`benchmarks.cases_more`).  A tsgu row builds its preconditioner inside every timed call
(caches cleared: the total a first solve pays); its note gives the setup alone.  The
``hierarchy reused`` rows keep the per-pattern caches (a training loop's second step).  SciPy
(``spilu``-preconditioned) and PyAMG's own ``solve(accel="cg")`` are forward only, setup included.

``python -m benchmarks.cases_precond`` measures the issue's targets side by side in one process
(medians of 5 interleaved calls) and prints them; ``python -m benchmarks.cases_precond
elasticity [elasticityM]`` only PyAMG's 2-D linear elasticity (default 350 × 350), where AMG and
PyAMG are given the rigid-body modes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ._core import Case, Run, Variant, _backward_with, _calibrate, _col_res, _peer_grad, _peer_note

ROUNDS = 3
#: SciPy's iteration limit: where it does not converge (plain CG on the high-contrast problem,
#: ``spilu``-preconditioned CG on Poisson 40³) each calibrating and timed call would otherwise
#: run 20,000 iterations, minutes per case; its residual stands in the note.
PEER_MAXITER = 5000


def _problem(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    from tsgu_ops.testing import diffusion_operator, grid_operator

    if name == "poisson40":
        A = grid_operator((40, 40, 40))
    elif name == "poisson20":  # the quick run's size
        A = grid_operator((20, 20, 20))
    elif name == "diffusion40":
        A = diffusion_operator((40, 40, 40))
    elif name == "convdiff200":
        A = grid_operator((200, 200), 1.0)
    elif name.startswith("elasticity"):  # PyAMG's 2-D linear elasticity, m x m: 2 m² unknowns
        A = _elasticity(int(name[len("elasticity") :]))[0]
    else:
        raise ValueError(name)
    b = torch.randn(A.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return A.to_sparse_csr(), b


def _elasticity(m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PyAMG's 2-D linear elasticity (COO) and its rigid-body modes, the AMG candidates."""
    import numpy as np
    import pyamg
    import scipy.sparse as sp

    E, B = pyamg.gallery.linear_elasticity((m, m))
    C = sp.coo_matrix(E)
    A = torch.sparse_coo_tensor(np.vstack([C.row, C.col]), C.data, C.shape).coalesce()
    return A, torch.from_numpy(np.ascontiguousarray(B, dtype=np.float64))


def _candidates(problem: str) -> torch.Tensor | None:
    """The near-null space AMG is given for a problem (``None``: the constant vector)."""
    return _elasticity(int(problem[len("elasticity") :]))[1] if problem.startswith("elasticity") else None


def _clear() -> None:
    from tsgu_krylov import _levels

    _levels.clear_cache()


def _meta(A: torch.Tensor, res: float, note: str, layout: str = "csr") -> dict[str, Any]:
    return {
        "nnz": A._nnz(),
        "rows": A.shape[0],
        "dtype": "float64",
        "layout": layout,
        "residual": res,
        "note": note,
    }


def tsgu_variant(problem: str, solver: str, pc: str | None, reuse: bool = False) -> Callable[..., Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        from tsgu_krylov import make_preconditioner, sparse_generic_solve

        A0, b = _problem(problem)
        dev = ctx["device"]
        A = A0.to(dev).requires_grad_()
        b = b.to(dev)
        extra: dict[str, Any] = {"atol": 0.0} if solver == "bicgstab" else {}
        if solver == "gmres":
            extra["restart"] = 30
        candidates = _candidates(problem) if pc == "amg" else None

        def preconditioner() -> Any:
            if candidates is None:
                return pc
            from tsgu_krylov import AMG

            return AMG(A.detach(), near_null_space=candidates)

        def solve(rtol: float, rhs: torch.Tensor = b) -> torch.Tensor:
            if not reuse:
                _clear()
            if pc:
                extra["preconditioner"] = preconditioner()
            return sparse_generic_solve(
                A, rhs, solver, rtol=rtol, maxiter=20000, on_failure="ignore", **extra
            )

        rtol, res = _calibrate(lambda r: solve(r).detach(), lambda X: _col_res(A0, X.cpu(), b.cpu()))
        setup_s = float("nan")
        if pc:
            _clear()
            t = time.perf_counter()
            if candidates is None:
                make_preconditioner(A.detach(), pc, symmetric=solver in ("cg", "minres"))
            else:
                preconditioner()
            setup_s = time.perf_counter() - t
        note = _peer_note(rtol, res, None, f", setup {setup_s * 1e3:.1f} ms" if pc else "")
        meta = _meta(A0, res, note)
        meta["setup_s"] = setup_s
        G = _peer_grad(b)
        return Run(lambda: solve(rtol), lambda out: _backward_with(out, G, A), meta)

    return setup


def scipy_variant(problem: str, solver: str, pc: str | None) -> Callable[..., Run]:
    """SciPy's solver with ``spilu`` (or nothing), setup inside the timed call; forward only."""

    def setup(ctx: dict[str, Any]) -> Run:
        import numpy as np
        import scipy.sparse as sp
        import scipy.sparse.linalg as sla

        if ctx["device"] != "cpu":
            raise NotImplementedError("SciPy runs on the CPU only")
        A0, b0 = _problem(problem)
        C = A0.to_sparse_coo().coalesce()
        S = sp.csr_matrix((C.values().numpy(), tuple(C.indices().numpy())), shape=A0.shape)
        b = b0.numpy()
        fn = {"cg": sla.cg, "gmres": sla.gmres, "bicgstab": sla.bicgstab, "minres": sla.minres}[solver]
        extra: dict[str, Any] = {"restart": 30} if solver == "gmres" else {}

        def solve(rtol: float) -> Any:
            M = None
            if pc == "spilu":
                ilu = sla.spilu(S.tocsc(), drop_tol=0.0, fill_factor=1)
                M = sla.LinearOperator(S.shape, matvec=ilu.solve)
            return fn(S, b, M=M, rtol=rtol, maxiter=PEER_MAXITER, **extra)[0]

        def residual(x: Any) -> float:
            return float(np.linalg.norm(b - S @ x) / np.linalg.norm(b))

        rtol, res = _calibrate(solve, residual)
        return Run(
            lambda: solve(rtol),
            None,
            _meta(A0, res, "forward only, setup included, " + _peer_note(rtol, res, None)),
        )

    return setup


def pyamg_variant(problem: str) -> Callable[..., Run]:
    """PyAMG's smoothed aggregation, its own ``solve(accel="cg")``: setup + solve, forward only."""

    def setup(ctx: dict[str, Any]) -> Run:
        import numpy as np
        import pyamg
        import scipy.sparse as sp

        if ctx["device"] != "cpu":
            raise NotImplementedError("PyAMG runs on the CPU only")
        A0, b0 = _problem(problem)
        C = A0.to_sparse_coo().coalesce()
        S = sp.csr_matrix((C.values().numpy(), tuple(C.indices().numpy())), shape=A0.shape)
        b = b0.numpy()
        candidates = _candidates(problem)
        B = None if candidates is None else candidates.numpy()

        def solve(rtol: float) -> Any:
            ml = pyamg.smoothed_aggregation_solver(S, B=B)
            return ml.solve(b, tol=rtol, accel="cg", maxiter=2000)

        def residual(x: Any) -> float:
            return float(np.linalg.norm(b - S @ x) / np.linalg.norm(b))

        rtol, res = _calibrate(solve, residual)
        return Run(
            lambda: solve(rtol),
            None,
            _meta(A0, res, "forward only, setup included, " + _peer_note(rtol, res, None)),
        )

    return setup


def torch_sla_variant(problem: str, kind: str) -> Callable[..., Run]:
    """torch-sla 0.4.0: CG + Jacobi (its PyTorch backend) or its PyAMG backend (smoothed
    aggregation; it takes an absolute tolerance, calibrated like the others)."""

    def setup(ctx: dict[str, Any]) -> Run:
        from .cases_more import _torch_sla

        _torch_sla()
        from torch_sla.linear_solve import SparseLinearSolvePyAMG, SparseLinearSolvePyTorch

        A0, b = _problem(problem)
        dev = ctx["device"]
        coo = A0.to_sparse_coo().coalesce()
        row, col = (t.to(dev) for t in coo.indices())
        val = coo.values().to(dev).clone().requires_grad_()
        b = b.to(dev)
        n = A0.shape[0]
        bn = float(torch.linalg.vector_norm(b))

        def solve(rtol: float) -> torch.Tensor:
            if kind == "pyamg":
                return SparseLinearSolvePyAMG.apply(
                    val, row, col, (n, n), b, rtol * bn, 20000, "smoothed_aggregation"
                )  # type: ignore[no-any-return]
            return SparseLinearSolvePyTorch.apply(  # type: ignore[no-any-return]
                val, row, col, (n, n), b, "cg", 1e-300, rtol, 20000, "jacobi", False
            )

        rtol, res = _calibrate(lambda r: solve(r).detach(), lambda X: _col_res(A0, X.cpu(), b.cpu()))
        G = _peer_grad(b)
        meta = _meta(A0, res, _peer_note(rtol, res, None), "coo")
        return Run(lambda: solve(rtol), lambda out: _backward_with(out, G, val), meta)

    return setup


#: The quick run's preconditioner case: CG on Poisson 20³ with each preconditioner (SciPy's spilu-CG,
#: which needs several seconds to calibrate, and the peers are in the run of record).
QUICK_VARIANTS = ("tsgu cg", "tsgu cg + jacobi", "tsgu cg + ic0", "tsgu cg + amg")


def precond_cases(full: bool = False) -> list[Case]:
    if not full:
        case = _precond_cases(("poisson20",))[0]
        case.size = "poisson 3d 20^3, true residual 1e-10"
        case.name = "precond_poisson20"
        case.variants = [v for v in case.variants if v.name in QUICK_VARIANTS]
        case.variants[0].baseline = True  # plain CG: what a preconditioner must beat
        for v in case.variants[1:]:
            v.baseline = False
        case.rounds = 1
        return [case]
    return _precond_cases()


def _precond_cases(problems: tuple[str, ...] = ("poisson40", "diffusion40")) -> list[Case]:
    cases: list[Case] = []
    for problem in problems:
        vs = [
            Variant(
                f"tsgu {s}{' + ' + p if p else ''}",
                tsgu_variant(problem, s, p),
                baseline=(s, p) == ("cg", "jacobi"),
            )
            for s in ("cg", "minres")
            for p in (None, "jacobi", "ic0", "amg")
            if not (problem == "diffusion40" and p is None)  # does not converge in 20,000 iterations
        ]
        vs += [
            Variant(f"tsgu {s} + amg, hierarchy reused", tsgu_variant(problem, s, "amg", True))
            for s in ("cg", "minres")
        ]
        vs += [
            # the two slow peers (10-60 s a call here) run once, alone, not in every round
            Variant("scipy cg + spilu", scipy_variant(problem, "cg", "spilu"), alone=True),
            Variant("scipy cg", scipy_variant(problem, "cg", None)),
            Variant("pyamg solve(accel='cg')", pyamg_variant(problem)),
            Variant("torch-sla cg + jacobi", torch_sla_variant(problem, "jacobi")),
            Variant("torch-sla pyamg", torch_sla_variant(problem, "pyamg"), alone=True),
        ]
        size = "poisson 3d 40^3" if problem == "poisson40" else "diffusion 3d 40^3, log-normal blocks sigma 3"
        cases.append(
            Case(
                f"precond_{problem}",
                "sparse_generic_solve",
                f"{size}, true residual 1e-10",
                vs,
                rounds=ROUNDS,
                interleave=True,
                family="preconditioners",
            )
        )
    vs = [
        Variant(
            f"tsgu {s}{' + ' + p if p else ''}",
            tsgu_variant("convdiff200", s, p),
            baseline=p is None and s == "gmres",
        )
        for s in ("gmres", "bicgstab")
        for p in (None, "jacobi", "ilu0")
    ]
    vs += [
        Variant(f"scipy {s}{' + spilu' if p else ''}", scipy_variant("convdiff200", s, p))
        for s in ("gmres", "bicgstab")
        for p in (None, "spilu")
    ]
    cases.append(
        Case(
            "precond_convdiff200",
            "sparse_generic_solve",
            "convection-diffusion 2d 200^2, true residual 1e-10",
            vs,
            rounds=ROUNDS,
            interleave=True,
            family="preconditioners",
        )
    )
    return cases


# ----------------------------------------------------------------------------------------------
# the targets, measured side by side in one process
def _median(fn: Callable[[], Any], backward: Callable[[Any], None] | None) -> float:
    t = time.perf_counter()
    out = fn()
    if backward is not None:
        backward(out)
    return time.perf_counter() - t


def measure(names: dict[str, Callable[..., Run]], repeats: int = 5) -> dict[str, float]:
    """Median seconds of forward (+ backward) per variant, the variants interleaved call by call."""
    ctx = {"device": "cpu", "dense_limit": 0}
    runs = {k: v(ctx) for k, v in names.items()}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in runs.values():  # warm-up
        _median(r.forward, r.backward)
    for i in range(repeats):
        order = list(runs) if i % 2 == 0 else list(reversed(runs))
        for k in order:
            times[k].append(_median(runs[k].forward, runs[k].backward))
            time.sleep(0.05)
    return {k: statistics.median(v) for k, v in times.items()}


def targets() -> None:  # pragma: no cover - a measurement script
    from tsgu_krylov import IC0

    A, _ = _problem("poisson40")
    t = measure(
        {
            "cg": tsgu_variant("poisson40", "cg", None),
            "cg+jacobi": tsgu_variant("poisson40", "cg", "jacobi"),
            "cg+ic0": tsgu_variant("poisson40", "cg", "ic0"),
            "cg fwd": lambda ctx: Run(tsgu_variant("poisson40", "cg", None)(ctx).forward, None),
        }
    )
    print({k: round(v * 1e3, 1) for k, v in t.items()})
    print(f"poisson40: cg+jacobi / cg = {t['cg+jacobi'] / t['cg']:.3f} (target <= 1.05)")
    print(f"poisson40: cg+ic0 / cg = {t['cg+ic0'] / t['cg']:.3f} (target <= 0.8)")
    S = torch.sparse_csr_tensor(A.crow_indices().int(), A.col_indices().int(), A.values(), A.shape)
    P = IC0(A)
    r = torch.randn(A.shape[0], 1, dtype=torch.float64)
    apply, spmv, fact, refact = [], [], [], []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(20):
            P(r)
        apply.append((time.perf_counter() - t0) / 20)
        t0 = time.perf_counter()
        for _ in range(20):
            torch.mv(S, r.view(-1))
        spmv.append((time.perf_counter() - t0) / 20)
        _clear()
        t0 = time.perf_counter()
        IC0(A)
        fact.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        IC0(A)
        refact.append(time.perf_counter() - t0)
    a, s = statistics.median(apply), statistics.median(spmv)
    print(f"poisson40: one IC(0) application = {a / s:.2f} SpMVs (target <= 2.5)")
    print(
        f"poisson40: IC(0) factorisation (first / same pattern) = {statistics.median(fact) / t['cg fwd']:.3f} / "
        f"{statistics.median(refact) / t['cg fwd']:.3f} x an unpreconditioned CG solve (target <= 0.25)"
    )
    t = measure(
        {
            "cg+jacobi": tsgu_variant("diffusion40", "cg", "jacobi"),
            "cg+amg": tsgu_variant("diffusion40", "cg", "amg"),
            "cg+amg reused": tsgu_variant("diffusion40", "cg", "amg", True),
            "pyamg": pyamg_variant("diffusion40"),
        }
    )
    print({k: round(v * 1e3, 1) for k, v in t.items()})
    print(f"diffusion40: cg+amg / cg+jacobi = {t['cg+amg'] / t['cg+jacobi']:.3f} (target <= 0.4)")
    print(f"diffusion40: cg+amg / pyamg solve = {t['cg+amg'] / t['pyamg']:.3f} (target <= 0.5)")
    print(
        f"diffusion40: cg+amg reused / cg+jacobi = {t['cg+amg reused'] / t['cg+jacobi']:.3f} (target <= 0.25)"
    )
    t = measure(
        {
            "gmres": tsgu_variant("convdiff200", "gmres", None),
            "gmres+ilu0": tsgu_variant("convdiff200", "gmres", "ilu0"),
            "bicgstab": tsgu_variant("convdiff200", "bicgstab", None),
            "bicgstab+ilu0": tsgu_variant("convdiff200", "bicgstab", "ilu0"),
        }
    )
    print({k: round(v * 1e3, 1) for k, v in t.items()})
    print(f"convdiff200: gmres+ilu0 / gmres = {t['gmres+ilu0'] / t['gmres']:.3f} (target <= 0.8)")
    print(f"convdiff200: bicgstab+ilu0 / bicgstab = {t['bicgstab+ilu0'] / t['bicgstab']:.3f} (target <= 0.8)")
    elasticity_targets()


def elasticity_targets(problem: str = "elasticity350") -> None:  # pragma: no cover - a measurement
    """PyAMG's 2-D linear elasticity (350 × 350: 245,000 unknowns), AMG given the rigid-body
    modes, PyAMG too; three interleaved calls (CG + Jacobi takes seconds)."""
    t = measure(
        {
            "cg+jacobi": tsgu_variant(problem, "cg", "jacobi"),
            "cg+amg": tsgu_variant(problem, "cg", "amg"),
            "cg+amg reused": tsgu_variant(problem, "cg", "amg", True),
            "pyamg": pyamg_variant(problem),
        },
        repeats=3,
    )
    print({k: round(v * 1e3, 1) for k, v in t.items()})
    print(f"{problem}: cg+amg / cg+jacobi = {t['cg+amg'] / t['cg+jacobi']:.3f} (target <= 0.4)")
    print(f"{problem}: cg+amg / pyamg solve = {t['cg+amg'] / t['pyamg']:.3f} (target <= 0.5)")
    print(
        f"{problem}: cg+amg reused / cg+jacobi = {t['cg+amg reused'] / t['cg+jacobi']:.3f} (target <= 0.25)"
    )


if __name__ == "__main__":  # pragma: no cover
    import sys

    torch.set_num_threads(2)
    elasticity_targets(*sys.argv[2:]) if sys.argv[1:2] == ["elasticity"] else targets()
