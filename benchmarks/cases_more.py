"""Benchmark cases of the solver, bridge, distribution and encoder packages.

Every tsgu variant is paired with what a user would use instead, in the same run: SciPy's solvers
(forward only, at the same relative residual), dense ``torch.distributions.MultivariateNormal`` for
small n, PyTorch's own sparse constructors for the encoder.  Solver variants record the iterations
and the true relative residual of their forward solve in the row's note.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._core import (
    PEER_TARGET,
    Case,
    Run,
    Variant,
    _backward_sum,
    _backward_with,
    _calibrate,
    _col_res,
    _peer_grad,
    _peer_note,
)


def _grid(k: int, convection: float = 0.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    from tsgu_ops.testing import grid_operator

    return grid_operator((k, k, k), convection, dtype).to_sparse_csr()


def _system(ctx: dict[str, Any], k: int, convection: float) -> torch.Tensor:
    """The solver cases' matrix: a built-in grid operator, or the ``--matrix`` file."""
    if ctx.get("matrix"):
        from .problems import load_mtx

        return load_mtx(ctx["matrix"], torch.float64).to_sparse_csr()
    return _grid(k, convection)


def _rel_res(A: torch.Tensor, X: torch.Tensor, B: torch.Tensor) -> float:
    R = B - (A.detach() @ X.detach().reshape(B.shape[0], -1)).reshape(B.shape)
    return float(torch.linalg.vector_norm(R) / torch.linalg.vector_norm(B))


# ----------------------------------------------------------------------------------------------
# tsgu-krylov: sparse_generic_solve (forward + backward) against SciPy (forward)
def krylov_variant(solver: str, pc: str | None, k: int, convection: float, rtol: float) -> Callable[..., Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        from tsgu_krylov import bicgstab, gmres, linear_cg, make_preconditioner, minres, sparse_generic_solve

        dev = ctx["device"]
        A = _system(ctx, k, convection).to(dev).requires_grad_()
        n = A.shape[0]
        b = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(dev)
        fn = {"cg": linear_cg, "minres": minres, "gmres": gmres, "bicgstab": bicgstab}[solver]
        extra: dict[str, Any] = {"atol": 0.0} if solver == "bicgstab" else {}
        P = make_preconditioner(A.detach(), pc)
        x, info = fn(
            A.detach(), b, rtol=rtol, preconditioner=P, return_info=True, on_failure="ignore", **extra
        )
        res = _rel_res(A, x, b)
        meta = {
            "nnz": A._nnz(),
            "rows": n,
            "dtype": "float64",
            "layout": "csr",
            "iterations": info.iterations,
            "residual": res,
            "note": f"{info.iterations} it, rel. residual {res:.1e}",
        }
        kw = dict(rtol=rtol, on_failure="ignore", **extra)
        if pc:
            kw["preconditioner"] = pc
        fwd = lambda: sparse_generic_solve(A, b, solver, **kw)  # noqa: E731
        return Run(fwd, lambda out: _backward_sum(out, A), meta)

    return setup


def scipy_solver_variant(solver: str, k: int, convection: float, rtol: float) -> Callable[..., Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        import numpy as np
        import scipy.sparse.linalg as sla

        from tsgu_bridges import to_scipy

        if ctx["device"] != "cpu":
            raise NotImplementedError("SciPy runs on the CPU only")
        A = _system(ctx, k, convection)
        S = to_scipy(A)
        b = torch.randn(A.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0)).numpy()
        fn = {"cg": sla.cg, "gmres": sla.gmres, "bicgstab": sla.bicgstab, "minres": sla.minres}[solver]
        kw: dict[str, Any] = {"rtol": rtol}
        if solver == "gmres":
            kw["restart"] = 30
        x, _ = fn(S, b, **kw)
        res = float(np.linalg.norm(b - S @ x) / np.linalg.norm(b))
        meta = {"nnz": A._nnz(), "rows": A.shape[0], "dtype": "float64", "layout": "csr", "residual": res}
        meta["note"] = f"forward only, rel. residual {res:.1e}"
        return Run(lambda: fn(S, b, **kw), None, meta)

    return setup


def dense_solve_variant(k: int, convection: float) -> Callable[..., Run]:
    """``torch.linalg.solve`` on the densified matrix: what a user does when it fits in memory."""

    def setup(ctx: dict[str, Any]) -> Run:
        A = _system(ctx, k, convection)
        n = A.shape[0]
        if 3 * n * n * 8 > ctx["dense_limit"]:  # the matrix, its LU and the dense gradient
            raise MemoryError(f"a dense {n} x {n} float64 solve needs {3 * n * n * 8 / 2**30:.1f} GiB")
        dev = ctx["device"]
        D = A.to_dense().to(dev).requires_grad_()
        b = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(dev)
        meta = {"nnz": A._nnz(), "rows": n, "dtype": "float64", "layout": "dense", "residual": 0.0}
        meta["note"] = "dense n x n matrix and gradient"
        return Run(lambda: torch.linalg.solve(D, b), lambda out: _backward_sum(out, D), meta)

    return setup


# ----------------------------------------------------------------------------------------------
# Solvers side by side with torch-sla (the closest modern peer) and SciPy, at equal achieved residual.
# Libraries define their tolerances differently, so each one's ``rtol`` is lowered from the target
# until its *true* residual ``max_j ‖b_j − A x_j‖ / ‖b_j‖`` is at most the target; every row records
# the rtol it needed and the residual it reached (forward, and the backward's adjoint solve).
PEER_PROBLEMS: dict[str, tuple[tuple[int, ...], float]] = {
    "poisson30": ((30, 30, 30), 0.0),
    "poisson40": ((40, 40, 40), 0.0),
    "convdiff200": ((200, 200), 1.0),
}


def _peer_system(problem: str, nrhs: int) -> tuple[torch.Tensor, torch.Tensor]:
    from tsgu_ops.testing import grid_operator

    shape, convection = PEER_PROBLEMS[problem]
    A = grid_operator(shape, convection).to_sparse_csr()
    g = torch.Generator().manual_seed(0)
    n = A.shape[0]
    B = torch.randn(n, nrhs, dtype=torch.float64, generator=g) if nrhs > 1 else torch.randn(n, generator=g)
    return A, B.to(torch.float64)


def _adjoint_res(A: torch.Tensor, B: torch.Tensor, fwd: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """True residual of the backward's transpose solve ``dB = A⁻ᵀ G``, read from ``B.grad``."""
    Bg = B.clone().requires_grad_()
    G = _peer_grad(B)
    fwd(Bg).backward(G)
    assert Bg.grad is not None
    return _col_res(A, Bg.grad, G, transpose=True)


def peer_tsgu_variant(problem: str, solver: str, nrhs: int) -> Callable[..., Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        from tsgu_krylov import sparse_generic_solve

        A0, B = _peer_system(problem, nrhs)
        dev = ctx["device"]
        A = A0.to(dev).requires_grad_()
        B = B.to(dev)
        extra: dict[str, Any] = {"atol": 0.0} if solver == "bicgstab" else {}
        if solver == "gmres":
            extra["restart"] = 30

        def solve(rtol: float, rhs: torch.Tensor = B) -> torch.Tensor:
            return sparse_generic_solve(A, rhs, solver, rtol=rtol, on_failure="ignore", **extra)

        rtol, res = _calibrate(lambda r: solve(r).detach(), lambda X: _col_res(A0, X.cpu(), B.cpu()))
        bres = _adjoint_res(A0, B.cpu(), lambda Bg: solve(rtol, Bg.to(dev)).cpu())
        meta = {"nnz": A._nnz(), "rows": A.shape[0], "dtype": "float64", "layout": "csr", "residual": res}
        meta["note"] = _peer_note(rtol, res, bres)
        G = _peer_grad(B)
        return Run(lambda: solve(rtol), lambda out: _backward_with(out, G, A), meta)

    return setup


def _torch_sla() -> Any:
    try:
        import torch_sla
    except ImportError as exc:  # an optional comparator: see benchmarks/requirements-bench.txt
        raise NotImplementedError(
            "torch-sla is not installed (pip install -r benchmarks/requirements-bench.txt)"
        ) from exc
    return torch_sla


def peer_torch_sla_variant(problem: str, method: str, nrhs: int) -> Callable[..., Run]:
    """torch-sla 0.4.0, ``backend="pytorch"`` (its own iterative solvers; no preconditioner, as ours)
    or ``backend="scipy"`` (``method="lu"``: SuperLU, refactorised for the backward's transpose)."""

    def setup(ctx: dict[str, Any]) -> Run:
        _torch_sla()
        from torch_sla.linear_solve import SparseLinearSolvePyTorch, spsolve

        A0, B = _peer_system(problem, nrhs)
        dev = ctx["device"]
        if method == "lu" and dev != "cpu":
            raise NotImplementedError("torch-sla's SciPy backend runs on the CPU only")
        coo = A0.to_sparse_coo().coalesce()
        row, col = (t.to(dev) for t in coo.indices())
        val = coo.values().to(dev).clone().requires_grad_()
        B = B.to(dev)
        n = A0.shape[0]

        def solve(rtol: float, rhs: torch.Tensor = B) -> torch.Tensor:
            if method == "lu":
                return spsolve(val, row, col, (n, n), rhs, backend="scipy", method="lu")  # type: ignore[no-any-return]
            # torch_sla.spsolve(backend="pytorch") with rtol exposed (spsolve fixes it at 1e-10)
            return SparseLinearSolvePyTorch.apply(  # type: ignore[no-any-return]
                val, row, col, (n, n), rhs, method, 1e-10, rtol, 100000, "none", False
            )

        if method == "lu":
            rtol, res = float("nan"), _col_res(A0, solve(0.0).detach().cpu(), B.cpu())
        else:
            rtol, res = _calibrate(lambda r: solve(r).detach(), lambda X: _col_res(A0, X.cpu(), B.cpu()))
        bres = _adjoint_res(A0, B.cpu(), lambda Bg: solve(rtol, Bg.to(dev)).cpu())
        meta = {"nnz": A0._nnz(), "rows": n, "dtype": "float64", "layout": "coo", "residual": res}
        meta["note"] = (
            f"direct, true residual {res:.1e}, backward {bres:.1e}"
            if method == "lu"
            else _peer_note(rtol, res, bres)
        )
        G = _peer_grad(B)
        return Run(lambda: solve(rtol), lambda out: _backward_with(out, G, val), meta)

    return setup


def peer_scipy_variant(problem: str, solver: str, nrhs: int) -> Callable[..., Run]:
    """SciPy's iterative solver, forward only (one call per right-hand side: it has no block mode)."""

    def setup(ctx: dict[str, Any]) -> Run:
        import numpy as np
        import scipy.sparse.linalg as sla

        from tsgu_bridges import to_scipy

        if ctx["device"] != "cpu":
            raise NotImplementedError("SciPy runs on the CPU only")
        A0, B = _peer_system(problem, nrhs)
        S = to_scipy(A0)
        Bn = B.reshape(A0.shape[0], -1).numpy()
        fn = {"cg": sla.cg, "gmres": sla.gmres, "bicgstab": sla.bicgstab}[solver]
        extra: dict[str, Any] = (
            {"restart": 30, "maxiter": 100000} if solver == "gmres" else {"maxiter": 100000}
        )

        def solve(rtol: float) -> Any:
            return np.stack([fn(S, Bn[:, j], rtol=rtol, atol=0.0, **extra)[0] for j in range(Bn.shape[1])], 1)

        def residual(X: Any) -> float:
            return float((np.linalg.norm(Bn - S @ X, axis=0) / np.linalg.norm(Bn, axis=0)).max())

        rtol, res = _calibrate(solve, residual)
        meta = {"nnz": A0._nnz(), "rows": A0.shape[0], "dtype": "float64", "layout": "csr", "residual": res}
        meta["note"] = "forward only, " + _peer_note(rtol, res, None)
        return Run(lambda: solve(rtol), None, meta)

    return setup


# The libraries of a peer case share a process and alternate call by call, in three rounds (why:
# docs/benchmarks.md, "How they are timed").  The quick run takes one round.
PEER_ROUNDS = 3


def peer_cases(full: bool = True) -> list[Case]:
    """tsgu against torch-sla (``backend="pytorch"`` and its SciPy LU) and SciPy, same matrices."""
    cases: list[Case] = []
    specs = [
        ("poisson30", "cg", 1),
        ("poisson30", "cg", 8),
        ("poisson40", "cg", 1),
        ("poisson40", "cg", 8),
        ("convdiff200", "bicgstab", 1),
        ("convdiff200", "gmres", 1),
    ]
    if not full:  # each library's rtol is calibrated by repeated solves: the quick run takes one case
        specs = [("poisson30", "cg", 1)]
    for problem, solver, nrhs in specs:
        shape, _ = PEER_PROBLEMS[problem]
        size = "x".join(map(str, shape))
        kind = "3-D Poisson" if problem.startswith("poisson") else "2-D convection-diffusion"
        variants = [
            Variant(f"tsgu {solver}", peer_tsgu_variant(problem, solver, nrhs)),
            Variant(
                f"torch-sla pytorch {solver}", peer_torch_sla_variant(problem, solver, nrhs), baseline=True
            ),
            Variant(f"scipy {solver}", peer_scipy_variant(problem, solver, nrhs)),
        ]
        if full and problem != "poisson40" and nrhs == 1:  # 3-D fill: seconds (30³), minutes (40³) a call
            # a direct solve, steady: one round
            lu = Variant("torch-sla scipy LU", peer_torch_sla_variant(problem, "lu", nrhs), alone=True)
            variants.insert(2, lu)
        cases.append(
            Case(
                f"krylov_peer_{problem}_{solver}_{nrhs}rhs",
                "sparse_generic_solve",
                f"{kind} {size}, {nrhs} rhs, true residual <= {PEER_TARGET:g}",
                variants,
                rounds=PEER_ROUNDS if full else 1,
                interleave=True,
                family="Krylov vs peers",
            )
        )
    return cases


# ----------------------------------------------------------------------------------------------
# tsgu-bridges: SciPy direct solve, LU reused by the backward pass
def bridge_variant(impl: str, k: int, nrhs: int) -> Callable[..., Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        dev = ctx["device"]
        A = _grid(k).to(dev).requires_grad_()
        B = torch.randn(A.shape[0], nrhs, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(
            dev
        )
        meta: dict[str, Any] = {"nnz": A._nnz(), "rows": A.shape[0], "dtype": "float64", "layout": "csr"}
        if impl == "scipy":
            from tsgu_bridges import sparse_solve_c4t

            fwd = lambda: sparse_solve_c4t(A, B)  # noqa: E731
        else:
            from tsgu_krylov import sparse_generic_solve

            fwd = lambda: sparse_generic_solve(A, B, "cg", rtol=1e-10, preconditioner="ic0")  # noqa: E731
        res = _rel_res(A, fwd(), B)
        meta["residual"] = res
        meta["note"] = f"rel. residual {res:.1e}"
        return Run(fwd, lambda out: _backward_sum(out, A), meta)

    return setup


# ----------------------------------------------------------------------------------------------
# tsgu-distributions
def _gmrf(k: int, dims: int = 3, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An LDLᵀ precision factor of a radius-1 pairwise GMRF on a kᵈ volume (tsgu-encoders)."""
    from tsgu_encoders import PairwiseEncoder

    enc = PairwiseEncoder(1, (1,) + (k,) * dims, upper=False, layout=torch.sparse_csr, device=device)
    values = torch.full((len(enc.offsets), 1) + (k,) * dims, -0.3, dtype=torch.float64, device=device)
    L = enc(values)
    n = k**dims
    D = torch.full((n,), 2.0, dtype=torch.float64, device=device)
    return L, D, torch.zeros(n, dtype=torch.float64, device=device)


def dist_variant(impl: str, what: str, k: int, samples: int) -> Callable[..., Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        from tsgu_distributions import SparseMultivariateNormal

        L, D, loc = _gmrf(k, device=ctx["device"])
        n = loc.shape[0]
        meta: dict[str, Any] = {"nnz": L._nnz(), "rows": n, "dtype": "float64", "layout": "csr"}
        leaves: list[torch.Tensor]
        if impl == "tsgu":
            Lg = L.detach().requires_grad_()
            Dg = D.clone().requires_grad_()
            locg = loc.clone().requires_grad_()
            leaves = [Lg, Dg, locg]

            def make() -> Any:
                return SparseMultivariateNormal(locg, Dg, precision_tril=Lg)
        else:
            if n * n * 8 * 4 > ctx["dense_limit"]:
                raise MemoryError(f"a dense {n} x {n} precision would need {n * n * 8 / 2**30:.1f} GiB")
            M = L.to_dense() + torch.eye(n, dtype=torch.float64, device=L.device)
            Mg = M.requires_grad_()
            Dg = D.clone().requires_grad_()
            locg = loc.clone().requires_grad_()
            leaves = [Mg, Dg, locg]
            meta["note"] = "dense n x n precision"

            def make() -> Any:
                return torch.distributions.MultivariateNormal(locg, precision_matrix=(Mg * Dg) @ Mg.T)

        x = torch.randn(samples, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(
            loc.device
        )
        if what == "rsample":
            fwd = lambda: make().rsample((samples,))  # noqa: E731
        else:
            fwd = lambda: make().log_prob(x)  # noqa: E731
        return Run(fwd, lambda out: _backward_sum(out, *leaves), meta)

    return setup


# ----------------------------------------------------------------------------------------------
# tsgu-encoders
def encoder_variant(impl: str, layout: str, shape: tuple[int, ...], radius: float) -> Callable[..., Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        from tsgu_encoders import PairwiseEncoder
        from tsgu_ops import sparse_values

        lay = torch.sparse_csr if layout == "csr" else torch.sparse_coo
        dev = ctx["device"]
        enc = PairwiseEncoder(radius, shape, channel_voxel_relation="inter", layout=lay, device=dev)
        v = torch.randn(len(enc.offsets), *shape, device=dev, requires_grad=True)
        V = enc.volume_numel
        meta: dict[str, Any] = {"nnz": enc.nnz, "rows": V, "dtype": "float32", "layout": layout}
        if impl == "tsgu":
            fwd = lambda: sparse_values(enc(v))  # noqa: E731
            return Run(fwd, lambda out: _backward_sum(out, v), meta)
        # what a user writes with PyTorch alone: gather, then PyTorch's constructor every call
        rows, cols, vidx = enc._rows, enc._cols, enc._value_index.to(torch.int64)
        if lay == torch.sparse_csr:
            if V * V * 4 > ctx["dense_limit"]:
                raise MemoryError(f"PyTorch's CSR constructor backward makes a dense {V} x {V} gradient")
            crow, col = enc._crow, enc._col
            meta["note"] = "torch.sparse_csr_tensor: dense V x V gradient"

            def fwd() -> torch.Tensor:
                return torch.sparse_csr_tensor(crow, col, v.reshape(-1)[vidx], (V, V)).values()
        else:
            idx = torch.stack([rows, cols])
            meta["note"] = "torch.sparse_coo_tensor(...).coalesce() every call"

            def fwd() -> torch.Tensor:
                return torch.sparse_coo_tensor(idx, v.reshape(-1)[vidx], (V, V)).coalesce().values()

        return Run(fwd, lambda out: _backward_sum(out, v), meta)

    return setup


def _krylov_variants(k: int, convection: float, specs: list[tuple[str, str | None]]) -> list[Variant]:
    return [
        Variant(f"{s}{' + ' + p if p else ''}", krylov_variant(s, p, k, convection, 1e-6), library="tsgu")
        for s, p in specs
    ]


def more_cases(full: bool = False) -> list[Case]:
    """Krylov solvers (preconditioned, and beside their peers), the SciPy bridge, the distributions
    and the encoder.  Quick (``full=False``): one peer case in one round, the small Poisson case
    beside a dense solve, the bridge on a 20³ grid, the 12³ distributions, 16³ encoder volumes."""
    k = 40
    cases: list[Case] = []
    if full:
        pois = _krylov_variants(
            k,
            0.0,
            [
                ("cg", None),
                ("cg", "jacobi"),
                ("cg", "ic0"),
                ("minres", None),
                ("gmres", None),
                ("gmres", "ilu0"),
                ("bicgstab", None),
                ("bicgstab", "ilu0"),
            ],
        )
        pois.append(Variant("scipy cg", scipy_solver_variant("cg", k, 0.0, 1e-6), baseline=True))
        pois.append(Variant("torch.linalg.solve (dense)", dense_solve_variant(k, 0.0)))
        cases.append(
            Case(
                "krylov_poisson",
                "sparse_generic_solve",
                f"poisson 3d {k}^3, rtol 1e-6",
                pois,
                family="Krylov vs peers",
            )
        )
        cd = _krylov_variants(
            k,
            1.0,
            [
                ("gmres", None),
                ("gmres", "jacobi"),
                ("gmres", "ilu0"),
                ("bicgstab", None),
                ("bicgstab", "ilu0"),
            ],
        )
        cd.append(Variant("scipy gmres", scipy_solver_variant("gmres", k, 1.0, 1e-6), baseline=True))
        cd.append(Variant("scipy bicgstab", scipy_solver_variant("bicgstab", k, 1.0, 1e-6)))
        cases.append(
            Case(
                "krylov_convdiff",
                "sparse_generic_solve",
                f"convection-diffusion {k}^3, rtol 1e-6",
                cd,
                family="Krylov vs peers",
            )
        )
    cases += peer_cases(full)
    ks = 16
    cases.append(
        Case(
            "krylov_small",
            "sparse_generic_solve",
            f"poisson 3d {ks}^3, rtol 1e-6",
            [
                Variant("cg", krylov_variant("cg", None, ks, 0.0, 1e-6), library="tsgu"),
                Variant("scipy cg", scipy_solver_variant("cg", ks, 0.0, 1e-6)),
                Variant("torch.linalg.solve (dense)", dense_solve_variant(ks, 0.0), baseline=True),
            ],
            family="Krylov vs peers",
        )
    )
    kb = k if full else 20
    cases.append(
        Case(
            "scipy_direct",
            "sparse_solve_c4t",
            f"poisson 3d {kb}^3, 4 rhs",
            [
                Variant(
                    "scipy SuperLU (LU reused in backward)", bridge_variant("scipy", kb, 4), library="tsgu"
                ),
                Variant("tsgu cg + ic0, rtol 1e-10", bridge_variant("krylov", kb, 4), baseline=True),
            ],
            family="direct solves",
        )
    )
    kd = 64
    for what in ("rsample", "log_prob"):
        if full:
            cases.append(
                Case(
                    f"smvn_{what}",
                    f"SparseMultivariateNormal.{what}",
                    f"LDLt precision, radius-1 GMRF {kd}^3, 8 samples",
                    [Variant("tsgu", dist_variant("tsgu", what, kd, 8))],
                    family="distributions",
                )
            )
        cases.append(
            Case(
                f"smvn_{what}_small",
                f"SparseMultivariateNormal.{what}",
                "LDLt precision, radius-1 GMRF 12^3, 8 samples",
                [
                    Variant("tsgu", dist_variant("tsgu", what, 12, 8)),
                    Variant("dense MultivariateNormal", dist_variant("dense", what, 12, 8), baseline=True),
                ],
                family="distributions",
            )
        )
    if full:
        big = (4, 64, 64, 64)
        cases.append(
            Case(
                "encoder_large",
                "PairwiseEncoder",
                "(4, 64, 64, 64), radius 2, inter",
                [
                    Variant("tsgu COO", encoder_variant("tsgu", "coo", big, 2), baseline=True),
                    Variant("tsgu CSR", encoder_variant("tsgu", "csr", big, 2)),
                ],
                family="encoders",
            )
        )
    ke = 24 if full else 16
    small = (2, ke, ke, ke)
    for layout in ("coo", "csr"):
        cases.append(
            Case(
                f"encoder_{layout}",
                "PairwiseEncoder",
                f"(2, {ke}, {ke}, {ke}), radius 2, inter",
                [
                    Variant(f"tsgu {layout.upper()}", encoder_variant("tsgu", layout, small, 2)),
                    Variant(
                        f"torch {layout.upper()} constructor",
                        encoder_variant("torch", layout, small, 2),
                        baseline=True,
                    ),
                ],
                family="encoders",
            )
        )
    return cases
