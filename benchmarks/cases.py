"""Benchmark cases of tsgu-ops and tsgu-indexed: products, triangular solves, indexed products.

Each tsgu variant is measured beside what a user would use instead (PyTorch's own kernels, a
Python loop, a dense equivalent), in the same run.  The benchmark types live in
:mod:`benchmarks._core`; they are re-exported here (``from benchmarks.cases import Case, Variant,
Run``) for the case modules written against this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from ._core import (
    FAMILIES,
    LIBRARIES,
    Case,
    Run,
    Variant,
    _backward_sum,
    as_layout,
    backward_sum,
    family_of,
    library_of,
    matrix_for,
)
from .problems import batched_laplacians, lower_triangle

__all__ = [
    "FAMILIES",
    "LIBRARIES",
    "Case",
    "Run",
    "Variant",
    "as_layout",
    "backward_sum",
    "family_of",
    "library_of",
    "matrix_for",
    "product_cases",
]

_matrix = matrix_for  # the names the case modules have always used
_layout = as_layout


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


def _pair(name: str, op: str, size: str, tsgu: Any, torch_: Any, family: str, **kw: Any) -> Case:
    return Case(
        name,
        op,
        size,
        [Variant("tsgu", tsgu), Variant("torch.sparse.mm", torch_, baseline=True)],
        family=family,
        **kw,
    )


def product_cases(full: bool = False) -> list[Case]:
    """The products (COO, CSR, random, large p, scaling, batched), the triangular solve and the
    indexed products.  Quick (``full=False``): 30³ products, a 24³ COO one (PyTorch's dense
    gradient), a 20³ triangular solve, indexed products at N = 50 000; full: the run of record's
    sizes (40³, N = 200 000) plus the 60³ scaling point."""
    k_mm = 40 if full else 30
    cases: list[Case] = []
    for layout in ("csr", "coo"):
        k = k_mm if full or layout == "csr" else 24  # quick: PyTorch's dense COO gradient, smaller
        cases.append(
            _pair(
                f"sparse_mm_{layout}",
                "sparse_mm",
                f"lap3d {k}^3, p=32",
                mm_variant("tsgu", layout, k, 32),
                mm_variant("torch", layout, k, 32),
                "products",
                params={"layout": layout},
            )
        )
    if full:
        cases.append(
            _pair(
                "sparse_mm_random",
                "sparse_mm",
                f"random {k_mm**3}x{k_mm**3}, nnz={7 * k_mm**3}, p=32",
                mm_variant("tsgu", "csr", -k_mm, 32),
                mm_variant("torch", "csr", -k_mm, 32),
                "products",
            )
        )
        cases.append(
            _pair(
                "sparse_mm_grad_memory",
                "sparse_mm",
                f"lap3d {k_mm}^3, p=256",
                mm_variant("tsgu", "csr", k_mm, 256),
                mm_variant("torch", "csr", k_mm, 256),
                "products",
            )
        )
    for k in (20, 30, 40, 60) if full else (20, 40):  # quick: sparse_mm_csr is the 30³ point
        cases.append(
            _pair(
                f"sparse_mm_scaling_{k}",
                "sparse_mm scaling",
                f"lap3d {k}^3, p=32",
                mm_variant("tsgu", "csr", k, 32),
                mm_variant("torch", "csr", k, 32),
                "products",
                params={"k": k},
            )
        )
    b, kb, pb = (16, 20, 16) if full else (8, 16, 16)
    batched = [
        Variant("tsgu", mm_batched_variant("tsgu", b, kb, pb)),
        Variant("loop of torch.sparse.mm", mm_batched_variant("loop", b, kb, pb), baseline=True),
    ]
    if full:  # the dense bmm: seconds and GiB, the run of record only
        batched.append(Variant("torch.bmm (dense)", mm_batched_variant("bmm", b, kb, pb)))
    cases.append(
        Case(
            "sparse_mm_batched",
            "sparse_mm batched",
            f"{b} x lap3d {kb}^3, p={pb}",
            batched,
            family="products",
        )
    )
    kt = 30 if full else 20
    cases.append(
        Case(
            "triangular_solve",
            "sparse_triangular_solve",
            f"tril(lap3d {kt}^3), p=8",
            [
                Variant("tsgu", tri_variant("tsgu", kt, 8)),
                Variant("torch.triangular_solve", tri_variant("torch", kt, 8), baseline=True),
            ],
            family="triangular solves",
        )
    )
    N, R, D = (200_000, 64, 64) if full else (50_000, 32, 32)
    size = f"N={N}, R={R}, D1=D2={D}"
    for op in ("gather", "segment"):
        cases.append(
            Case(
                f"{op}_mm",
                f"{op}_mm",
                size,
                [
                    Variant("tsgu", indexed_variant(op, "tsgu", N, R, D)),
                    Variant("python loop", indexed_variant(op, "loop", N, R, D), baseline=True),
                    Variant("torch.bmm(a[:, None], b[idx])", indexed_variant(op, "bmm", N, R, D)),
                ],
                family="indexed",
            )
        )
    return cases
