"""Property: SparseMultivariateNormal and the statistical helpers reject malformed input clearly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tsgu_distributions import (
    SparseMultivariateNormal,
    SparseMultivariateNormalNative,
    cov_nagao_test,
    mean_hotelling_t2_test,
)

F64 = torch.float64


def _tril(n: int) -> torch.Tensor:
    return (torch.eye(n, dtype=F64) * 2 + torch.tril(torch.ones(n, n, dtype=F64), -1) * 0.1).to_sparse()


@settings(deadline=None, max_examples=60)
@given(
    n=st.integers(2, 5),
    which=st.sampled_from(["scale_tril", "precision_tril"]),
    bad=st.sampled_from(
        [
            "loc 0-d",
            "loc not a tensor",
            "both trils",
            "no tril",
            "dense tril",
            "tril size",
            "tril rank",
            "diagonal size",
            "diagonal 0-d",
            "dtype",
            "batch shapes",
            "not triangular",
            "negative diagonal",
        ]
    ),
)
def test_constructor_rejects_malformed_parameters(n, which, bad):
    loc = torch.zeros(n, dtype=F64)
    kw: dict[str, object] = {which: _tril(n)}
    diagonal = None
    validate = None
    if bad == "loc 0-d":
        loc = torch.tensor(0.0, dtype=F64)
    elif bad == "loc not a tensor":
        loc = [0.0] * n
    elif bad == "both trils":
        kw = {"scale_tril": _tril(n), "precision_tril": _tril(n)}
    elif bad == "no tril":
        kw = {}
    elif bad == "dense tril":
        kw = {which: _tril(n).to_dense()}
    elif bad == "tril size":
        kw = {which: _tril(n + 1)}
    elif bad == "tril rank":
        kw = {which: _tril(n).to_dense()[None, None].to_sparse()}
    elif bad == "diagonal size":
        diagonal = torch.ones(n + 1, dtype=F64)
    elif bad == "diagonal 0-d":
        diagonal = torch.tensor(1.0, dtype=F64)
    elif bad == "dtype":
        loc = loc.to(torch.float32)
    elif bad == "batch shapes":
        loc = torch.zeros(3, n, dtype=F64)
        diagonal = torch.ones(4, n, dtype=F64)
        kw = {which: torch.tril(torch.ones(n, n, dtype=F64), -1).to_sparse()}
    elif bad == "not triangular":
        kw = {which: (torch.eye(n, dtype=F64) + torch.triu(torch.ones(n, n, dtype=F64), 1)).to_sparse()}
        validate = True
    else:
        kw = {which: (-torch.eye(n, dtype=F64)).to_sparse()}
        validate = True
    with pytest.raises((ValueError, TypeError)):
        SparseMultivariateNormal(loc, diagonal, validate_args=validate, **kw)


@settings(deadline=None, max_examples=30)
@given(bad=st.sampled_from(["loc 2-d", "coo", "batched", "rectangular", "size"]))
def test_native_constructor_rejects_malformed_parameters(bad):
    loc = torch.zeros(3, dtype=F64)
    L = _tril(3).to_sparse_csr()
    if bad == "loc 2-d":
        loc = loc[None]
    elif bad == "coo":
        L = _tril(3)
    elif bad == "batched":
        L = torch.stack([_tril(3).to_dense()] * 2).to_sparse_csr()
    elif bad == "rectangular":
        L = torch.ones(3, 2, dtype=F64).to_sparse_csr()
    else:
        loc = torch.zeros(4, dtype=F64)
    with pytest.raises(ValueError):
        SparseMultivariateNormalNative(loc, L)


@settings(deadline=None, max_examples=30)
@given(p=st.integers(2, 4), bad=st.sampled_from(["shapes", "n too small", "n float"]))
def test_statistical_helpers_reject_malformed_input(p, bad):
    mean = torch.zeros(p, dtype=F64)
    cov = torch.eye(p, dtype=F64)
    n = 100
    if bad == "shapes":
        with pytest.raises(ValueError):
            mean_hotelling_t2_test(mean, torch.zeros(p + 1, dtype=F64), cov, n)
        with pytest.raises(ValueError):
            cov_nagao_test(cov, torch.eye(p + 1, dtype=F64), n)
        return
    n = p if bad == "n too small" else 100.0
    with pytest.raises(ValueError):
        mean_hotelling_t2_test(mean, mean, cov, n)
    with pytest.raises(ValueError):
        cov_nagao_test(cov, cov, n)
