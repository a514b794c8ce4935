"""Checks shared by several test modules of tsgu-ops (as session fixtures: hypothesis tests can use them)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from tsgu_ops import sparse_mm
from tsgu_ops.testing import SparseCase, assert_sparse_grad_matches, assert_unchanged, clone_input

SINGLE_PRECISION = (torch.float32, torch.complex64)


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-4, "atol": 1e-4} if dtype in SINGLE_PRECISION else {"rtol": 1e-10, "atol": 1e-10}


@pytest.fixture(scope="session")
def assert_mm_matches_dense_autograd() -> Callable[..., None]:
    """``check(case, B, upstream)``: ``sparse_mm(A, B)`` and its gradients for the upstream gradient
    ``upstream(shape)`` equal dense autograd's (``case.dense @ B``), and the inputs are unchanged."""

    def check(case: SparseCase, B: torch.Tensor, upstream: Callable[[tuple[int, ...]], torch.Tensor]) -> None:
        A = case.sparse
        A0, B0 = clone_input(A), clone_input(B)
        C = sparse_mm(A, B)
        D = case.dense.clone().requires_grad_()
        Cd = D @ B
        torch.testing.assert_close(C, Cd, **_tol(A.dtype))
        G = upstream(tuple(C.shape))
        gA, gB = torch.autograd.grad(C, (A, B), G)
        gD, gBd = torch.autograd.grad(Cd, (D, B), G)
        assert_sparse_grad_matches(A, gA, gD, **_tol(A.dtype))
        torch.testing.assert_close(gB, gBd, **_tol(A.dtype))
        assert_unchanged(A0, A)
        assert_unchanged(B0, B)

    return check
