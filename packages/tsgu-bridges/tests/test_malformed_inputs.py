"""Property: the bridges reject malformed input with ValueError/TypeError (before any conversion)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tsgu_bridges import sparse_solve_c4t, to_scipy
from tsgu_ops.testing import assert_unchanged, clone_input, sparse_matrices

cases = sparse_matrices(square=True, structures=("dominant",), value_dtypes=(torch.float64,), min_size=2)


@settings(deadline=None, max_examples=60)
@given(
    case=cases,
    bad=st.sampled_from(
        ["A dense", "A list", "B sparse", "B 4-D", "B rows", "dtype", "solver name", "multi-RHS cg", "A 4-D"]
    ),
)
def test_sparse_solve_c4t_rejects_malformed_input(case, bad):
    A = case.sparse
    B = torch.ones(*A.shape[:-1], 2, dtype=A.dtype)
    args: list[object] = [A, B]
    kw: dict[str, object] = {}
    if bad == "A dense":
        args[0] = A.to_dense()
    elif bad == "A list":
        args[0] = A.to_dense().tolist()
    elif bad == "B sparse":
        args[1] = B.to_sparse()
    elif bad == "B 4-D":
        args[1] = B.reshape(1, 1, *B.shape[-2:]) if B.dim() == 2 else B[None, None]
    elif bad == "B rows":
        args[1] = torch.ones(*A.shape[:-2], A.shape[-1] + 1, 2, dtype=A.dtype)
    elif bad == "dtype":
        args[1] = B.to(torch.float32)
    elif bad == "solver name":
        kw = {"solve": "qr"}
    elif bad == "multi-RHS cg":
        kw = {"solve": "cg"}
    else:
        args[0] = (
            A.to_dense().reshape(1, 1, *A.shape[-2:]).to_sparse()
            if A.dim() == 2
            else A.to_dense()[None].to_sparse()
        )
    before = clone_input(A)
    with pytest.raises((ValueError, TypeError)):
        sparse_solve_c4t(*args, **kw)
    assert_unchanged(before, A)


@settings(deadline=None, max_examples=20)
@given(bad=st.sampled_from(["dense", "list", "csc", "hybrid"]))
def test_to_scipy_rejects_malformed_input(bad):
    x = torch.eye(3, dtype=torch.float64)
    arg = {
        "dense": x,
        "list": x.tolist(),
        "csc": x.to_sparse_csc(),
        "hybrid": torch.ones(3, 3, 2).to_sparse(sparse_dim=2),
    }[bad]
    with pytest.raises((ValueError, TypeError)):
        to_scipy(arg)
