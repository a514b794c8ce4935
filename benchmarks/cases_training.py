"""Benchmark case of a training step with sparse weights: ``SparseParameter.mm`` eager vs compiled.

One step is ``loss = mean(tanh(W @ X)²)`` forward and ``loss.backward()``, with ``W`` a sparse
matrix whose values are trained.  Variants: :class:`tsgu_ops.nn.SparseParameter` in eager mode
(the reference), the same step under ``torch.compile(fullgraph=True)`` (default backend, inductor;
the first call, which compiles, is the untimed warm-up, so the table shows steady-state time), and
a sparse CSR tensor with ``requires_grad`` through :func:`tsgu_ops.sparse_mm`, and what a user
would write with PyTorch alone: the same tensor through ``torch.sparse.mm`` (the alternative).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._core import Case, Run, Variant
from .problems import laplacian_3d


def step_variant(impl: str, k: int, p: int) -> Callable[[dict[str, Any]], Run]:
    def setup(ctx: dict[str, Any]) -> Run:
        from tsgu_ops import sparse_mm
        from tsgu_ops.nn import SparseParameter

        dev = ctx["device"]
        A = laplacian_3d(k).to_sparse_csr().to(dev)
        X = torch.randn(A.shape[1], p, generator=torch.Generator().manual_seed(0)).to(dev)
        meta = {"nnz": A._nnz(), "rows": A.shape[0], "dtype": "float32", "layout": "csr"}
        if impl in ("sparse tensor", "torch"):
            W = A.detach().clone().requires_grad_()
            mm = sparse_mm if impl == "sparse tensor" else torch.sparse.mm

            def forward() -> torch.Tensor:
                return (torch.tanh(mm(W, X)) ** 2).mean()

            def backward(loss: torch.Tensor) -> None:
                W.grad = None
                loss.backward()

            return Run(forward, backward, meta)
        P = SparseParameter(A).to(dev)

        def step() -> torch.Tensor:
            return (torch.tanh(P.mm(X)) ** 2).mean()

        fn = torch.compile(step, fullgraph=True) if impl == "compiled" else step

        def backward_p(loss: torch.Tensor) -> None:
            P.values.grad = None
            loss.backward()

        return Run(fn, backward_p, meta)

    return setup


def _step_case(name: str, k: int, p: int) -> Case:
    return Case(
        name,
        "SparseParameter.mm training step",
        f"laplacian 3d {k}^3, p={p}",
        [
            Variant("SparseParameter eager", step_variant("eager", k, p), library="tsgu"),
            Variant(
                "SparseParameter torch.compile(fullgraph)", step_variant("compiled", k, p), library="tsgu"
            ),
            Variant(
                "sparse CSR tensor + sparse_mm (eager)", step_variant("sparse tensor", k, p), library="tsgu"
            ),
            Variant("torch.sparse.mm on a CSR tensor (eager)", step_variant("torch", k, p), baseline=True),
        ],
        family="training step",
    )


def training_cases(full: bool = False) -> list[Case]:
    """The 24³ step (quick and full) and, in the full run, a 40³ one with p = 64."""
    cases = [_step_case("sparse_parameter_step", 24, 32)]
    if full:
        cases.append(_step_case("sparse_parameter_step_large", 40, 64))
    return cases
