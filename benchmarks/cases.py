"""Benchmark cases: each tsgu variant beside what a user would use instead, in the same run.

A *variant* is a function ``setup(ctx) -> Run`` building its inputs and returning the forward and
backward closures; it runs in a fresh subprocess (see :mod:`benchmarks.worker`) so that its peak
memory can be read from the operating system.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .problems import batched_laplacians, laplacian_3d, load_mtx, lower_triangle


@dataclass
class Run:
    forward: Callable[[], Any]
    backward: Callable[[Any], None] | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Variant:
    name: str
    setup: Callable[[dict[str, Any]], Run]
    baseline: bool = False  # the alternative a user would pick instead
    note: str = ""
    alone: bool = False  # in an interleaved case: in a process of its own, one round (a slow one)


@dataclass
class Case:
    name: str  # unique key for --only
    op: str
    size: str
    variants: list[Variant]
    params: dict[str, Any] = field(default_factory=dict)
    # Rounds of fresh processes, the variants in turns (forward order, then reversed, ...); the
    # figures are medians over every round's timed calls.  ``interleave``: the variants share one
    # process per round and alternate call by call, so that a slow spell of a shared host (they
    # last seconds) falls on every library of the case, not on whichever ran during it.
    rounds: int = 1
    interleave: bool = False


def _matrix(ctx: dict[str, Any], k: int) -> torch.Tensor:
    if ctx.get("matrix"):
        return load_mtx(ctx["matrix"], torch.float32)
    if k < 0:  # a random sparse matrix with the nnz of the -k³ Laplacian, unstructured
        from tsgu_ops import rand_sparse

        n = k**3 * -1
        g = torch.Generator().manual_seed(0)
        return rand_sparse((n, n), 7 * n, torch.sparse_coo, generator=g)
    return laplacian_3d(k)


def _layout(A: torch.Tensor, layout: str) -> torch.Tensor:
    return A.to_sparse_csr() if layout == "csr" else A


def _backward_sum(out: Any, *leaves: torch.Tensor) -> None:
    for t in leaves:
        t.grad = None
    out.backward(torch.ones_like(out))


# ----------------------------------------------------------------------------------------------
# sparse_mm
def mm_variant(impl: str, layout: str, k: int, p: int) -> Callable[[dict[str, Any]], Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        from tsgu_ops import sparse_mm

        dev = ctx["device"]
        A = _layout(_matrix(ctx, k), layout).to(dev).requires_grad_()
        B = torch.randn(A.shape[1], p, device=dev, requires_grad=True)
        fn = sparse_mm if impl == "tsgu" else torch.sparse.mm
        meta = {
            "nnz": A._nnz(),
            "rows": A.shape[0],
            "dtype": "float32",
            "layout": layout,
            "bytes_B_plus_out": 2 * B.numel() * 4,
        }
        return Run(lambda: fn(A, B), lambda out: _backward_sum(out, A, B), meta)

    return setup


def mm_batched_variant(impl: str, b: int, k: int, p: int) -> Callable[[dict[str, Any]], Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        from tsgu_ops import sparse_mm

        dev = ctx["device"]
        A = batched_laplacians(b, k).to(dev)
        n = A.shape[1]
        meta = {"nnz": A._nnz() * b, "rows": n, "dtype": "float32", "layout": "csr", "batch": b}
        B = torch.randn(b, n, p, device=dev, requires_grad=True)
        if impl == "tsgu":
            A.requires_grad_()
            return Run(lambda: sparse_mm(A, B), lambda out: _backward_sum(out, A, B), meta)
        if impl == "loop":
            items = [
                torch.sparse_csr_tensor(
                    A.crow_indices()[i], A.col_indices()[i], A.values()[i], (n, n)
                ).requires_grad_()
                for i in range(b)
            ]
            fwd = lambda: torch.stack([torch.sparse.mm(items[i], B[i]) for i in range(b)])  # noqa: E731
            return Run(fwd, lambda out: _backward_sum(out, B, *items), meta)
        dense_bytes = b * n * n * 4
        if dense_bytes > ctx["dense_limit"]:
            raise MemoryError(f"dense A would need {dense_bytes / 2**30:.1f} GiB")
        D = A.to_dense().requires_grad_()
        meta["note"] = "dense gradient (b x n x n)"
        return Run(lambda: torch.bmm(D, B), lambda out: _backward_sum(out, D, B), meta)

    return setup


# ----------------------------------------------------------------------------------------------
# triangular solve
def tri_variant(impl: str, k: int, p: int) -> Callable[[dict[str, Any]], Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        from tsgu_ops import sparse_triangular_solve

        dev = ctx["device"]
        L = lower_triangle(_matrix(ctx, k)).to_sparse_csr().to(dev).requires_grad_()
        n = L.shape[0]
        B = torch.randn(n, p, device=dev, requires_grad=True)
        meta = {"nnz": L._nnz(), "rows": n, "dtype": "float32", "layout": "csr"}
        if impl == "tsgu":
            fwd = lambda: sparse_triangular_solve(L, B, upper=False)  # noqa: E731
        else:
            if n * n * 4 > ctx["dense_limit"]:
                raise MemoryError(f"its dense n x n gradient would need {n * n * 4 / 2**30:.1f} GiB")
            meta["note"] = "dense n x n gradient"

            def fwd() -> torch.Tensor:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return torch.triangular_solve(B, L, upper=False).solution

        return Run(fwd, lambda out: _backward_sum(out, L, B), meta)

    return setup


# ----------------------------------------------------------------------------------------------
# indexed matmul
def indexed_variant(op: str, impl: str, N: int, R: int, D: int) -> Callable[[dict[str, Any]], Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        from tsgu_indexed import gather_mm, segment_mm

        dev = ctx["device"]
        g = torch.Generator().manual_seed(0)
        a = torch.randn(N, D, generator=g).to(dev).requires_grad_()
        b = torch.randn(R, D, D, generator=g).to(dev).requires_grad_()
        meta = {"rows": N, "dtype": "float32", "layout": "dense", "relations": R}
        if op == "gather":
            idx = torch.randint(0, R, (N,), generator=g).to(dev)
        else:
            idx = torch.sort(torch.randint(0, R, (N,), generator=g)).values.to(dev)
            seglen = torch.bincount(idx, minlength=R)
        if impl == "tsgu":
            fwd = (lambda: gather_mm(a, b, idx)) if op == "gather" else (lambda: segment_mm(a, b, seglen))
        elif impl == "loop":
            masks = [idx == r for r in range(R)]

            def fwd() -> torch.Tensor:
                out = a.new_zeros(N, D)
                for r in range(R):
                    out = out.index_put((masks[r],), a[masks[r]] @ b[r])
                return out
        else:
            if N * D * D * 4 * 2 > ctx["dense_limit"]:
                raise MemoryError(f"b[idx] would need {N * D * D * 4 / 2**30:.1f} GiB")
            fwd = lambda: torch.bmm(a[:, None], b[idx])[:, 0]  # noqa: E731
        return Run(fwd, lambda out: _backward_sum(out, a, b), meta)

    return setup


def all_cases(full: bool = False, matrix: str | None = None) -> list[Case]:
    k_mm = 60 if full else 40
    cases: list[Case] = []
    for layout in ("csr", "coo"):
        cases.append(
            Case(
                f"sparse_mm_{layout}",
                "sparse_mm",
                f"lap3d {k_mm}^3, p=32",
                [
                    Variant("tsgu", mm_variant("tsgu", layout, k_mm, 32)),
                    Variant("torch.sparse.mm", mm_variant("torch", layout, k_mm, 32), baseline=True),
                ],
                {"layout": layout},
            )
        )
    cases.append(
        Case(
            "sparse_mm_random",
            "sparse_mm",
            f"random {k_mm**3}x{k_mm**3}, nnz={7 * k_mm**3}, p=32",
            [
                Variant("tsgu", mm_variant("tsgu", "csr", -k_mm, 32)),
                Variant("torch.sparse.mm", mm_variant("torch", "csr", -k_mm, 32), baseline=True),
            ],
        )
    )
    cases.append(
        Case(
            "sparse_mm_grad_memory",
            "sparse_mm",
            f"lap3d {k_mm}^3, p=256",
            [
                Variant("tsgu", mm_variant("tsgu", "csr", k_mm, 256)),
                Variant("torch.sparse.mm", mm_variant("torch", "csr", k_mm, 256), baseline=True),
            ],
        )
    )
    for k in (20, 30, 40, 60) if full else (20, 30, 40):
        cases.append(
            Case(
                f"sparse_mm_scaling_{k}",
                "sparse_mm scaling",
                f"lap3d {k}^3, p=32",
                [
                    Variant("tsgu", mm_variant("tsgu", "csr", k, 32)),
                    Variant("torch.sparse.mm", mm_variant("torch", "csr", k, 32), baseline=True),
                ],
                {"k": k},
            )
        )
    cases.append(
        Case(
            "sparse_mm_batched",
            "sparse_mm batched",
            "16 x lap3d 20^3, p=16",
            [
                Variant("tsgu", mm_batched_variant("tsgu", 16, 20, 16)),
                Variant("loop of torch.sparse.mm", mm_batched_variant("loop", 16, 20, 16), baseline=True),
                Variant("torch.bmm (dense)", mm_batched_variant("bmm", 16, 20, 16)),
            ],
        )
    )
    cases.append(
        Case(
            "triangular_solve",
            "sparse_triangular_solve",
            "tril(lap3d 30^3), p=8",
            [
                Variant("tsgu", tri_variant("tsgu", 30, 8)),
                Variant("torch.triangular_solve", tri_variant("torch", 30, 8), baseline=True),
            ],
        )
    )
    N = 200_000
    for op in ("gather", "segment"):
        cases.append(
            Case(
                f"{op}_mm",
                f"{op}_mm",
                f"N={N}, R=64, D1=D2=64",
                [
                    Variant("tsgu", indexed_variant(op, "tsgu", N, 64, 64)),
                    Variant("python loop", indexed_variant(op, "loop", N, 64, 64), baseline=True),
                    Variant("torch.bmm(a[:, None], b[idx])", indexed_variant(op, "bmm", N, 64, 64)),
                ],
            )
        )
    from .cases_more import more_cases

    cases += more_cases(full)
    from .cases_factor import factor_cases

    cases += factor_cases(full)
    if matrix:
        name = os.path.basename(matrix)
        keep = ("sparse_mm_csr", "sparse_mm_coo", "triangular_solve", "krylov_poisson", "krylov_convdiff")
        cases = [c for c in cases if c.name in keep]
        for c in cases:
            c.size = f"{name} ({c.size.split(',')[-1].strip()})"
    return cases
