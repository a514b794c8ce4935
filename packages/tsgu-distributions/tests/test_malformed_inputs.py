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


def _bad_factor(kind: str, n: int = 4) -> torch.Tensor:
    """A lower factor with a malformed index structure or an unsupported dtype / device."""
    if kind == "coo index out of range":
        idx = torch.tensor([[0, 1, 2, n], [0, 1, 2, 0]])
        return torch.sparse_coo_tensor(idx, torch.ones(4, dtype=F64), (n, n), check_invariants=False)
    if kind == "coo negative index":
        idx = torch.tensor([[0, 1, 2, 3], [0, -1, 2, 3]])
        return torch.sparse_coo_tensor(idx, torch.ones(4, dtype=F64), (n, n), check_invariants=False)
    if kind in ("csr crow decreasing", "csr col out of range", "csr crow end"):
        crow = torch.tensor([0, 1, 2, 3, 4])
        col = torch.tensor([0, 1, 2, 3])
        if kind == "csr crow decreasing":
            crow = torch.tensor([0, 2, 1, 3, 4])
        elif kind == "csr col out of range":
            col = torch.tensor([0, 1, 2, n + 3])
        else:
            crow = torch.tensor([0, 1, 2, 3, 3])
        return torch.sparse_csr_tensor(crow, col, torch.ones(4, dtype=F64), (n, n), check_invariants=False)
    base = torch.eye(n, dtype=F64).to_sparse()
    if kind == "meta":
        return base.to("meta")
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64}[kind]
    return base.to(dtype)


@pytest.mark.parametrize(
    "kind",
    [
        "coo index out of range",
        "coo negative index",
        "csr crow decreasing",
        "csr col out of range",
        "csr crow end",
        "meta",
        "float16",
        "bfloat16",
        "int64",
    ],
)
@pytest.mark.parametrize("which", ["scale_tril", "precision_tril"])
def test_malformed_or_unsupported_factors_are_rejected_naming_the_argument(kind, which):
    n = 4
    L = _bad_factor(kind, n)
    loc = torch.zeros(n, dtype=F64)
    err = TypeError if kind in ("float16", "bfloat16", "int64") else ValueError
    with pytest.raises(err, match=which):
        SparseMultivariateNormal(loc, **{which: L})
    if which == "scale_tril" and kind not in ("coo index out of range", "coo negative index"):
        csr = L if L.layout == torch.sparse_csr else L.to_sparse_csr() if kind != "meta" else None
        if csr is not None:
            with pytest.raises(err, match="scale_tril"):
                SparseMultivariateNormalNative(loc, csr)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64, torch.complex128])
def test_dense_parameters_with_unsupported_dtypes_are_type_errors(dtype):
    n = 3
    L = _tril(n)
    bad = torch.zeros(n, dtype=dtype)
    with pytest.raises(TypeError, match=r"loc must have one of the dtypes float32, float64"):
        SparseMultivariateNormal(bad, scale_tril=L)
    with pytest.raises(TypeError, match=r"diagonal must have one of the dtypes float32, float64"):
        SparseMultivariateNormal(
            torch.zeros(n, dtype=F64), bad, scale_tril=torch.tril(L.to_dense(), -1).to_sparse()
        )
    with pytest.raises(TypeError, match="loc"):
        SparseMultivariateNormalNative(bad, L.to_sparse_csr())
    with pytest.raises(ValueError, match="loc is on the 'meta' device"):
        SparseMultivariateNormal(torch.zeros(n, dtype=F64, device="meta"), scale_tril=L)


def test_validate_args_follows_torch_default_as_documented():
    """``validate_args=None`` means torch's global default (on), as the docstring says."""
    from torch.distributions import Distribution

    assert "set_default_validate_args" in SparseMultivariateNormal.__doc__
    n = 4
    upper = (torch.eye(n, dtype=F64) + torch.triu(torch.ones(n, n, dtype=F64), 1)).to_sparse()
    loc = torch.zeros(n, dtype=F64)
    with pytest.raises(ValueError, match="lower triangular"):
        SparseMultivariateNormal(loc, scale_tril=upper)  # default: validation on
    SparseMultivariateNormal(loc, scale_tril=upper, validate_args=False)
    old = Distribution._validate_args
    try:
        Distribution.set_default_validate_args(False)
        d = SparseMultivariateNormal(loc, scale_tril=upper)
        assert not d._validate_args
    finally:
        Distribution.set_default_validate_args(old)
    # a positive diagonal is required of LLᵀ factors and of `diagonal` only when validating
    with pytest.raises(ValueError, match="positive diagonal"):
        SparseMultivariateNormal(loc, scale_tril=(-torch.eye(n, dtype=F64)).to_sparse(), validate_args=True)
    with pytest.raises(ValueError, match="diagonal"):
        SparseMultivariateNormal(
            loc, -torch.ones(n, dtype=F64), scale_tril=torch.zeros(n, n, dtype=F64).to_sparse()
        )
    # log_prob checks its value's shape when validating
    d = SparseMultivariateNormal(loc, scale_tril=torch.eye(n, dtype=F64).to_sparse(), validate_args=True)
    with pytest.raises(ValueError):
        d.log_prob(torch.zeros(n + 1, dtype=F64))
    # a stored diagonal in an LDLᵀ factor is 0.2.7's documented meaning: accepted even when validating
    import tsgu_distributions.sparse_multivariate_normal as m

    m._WARNED_STORED_DIAGONAL.discard("scale_tril")
    with pytest.warns(UserWarning, match="stores diagonal entries"):
        SparseMultivariateNormal(
            loc, torch.ones(n, dtype=F64), scale_tril=torch.eye(n, dtype=F64).to_sparse(), validate_args=True
        )


@pytest.mark.parametrize("validate", [None, False])
@pytest.mark.parametrize("bad", ["sparse", "complex", "size", "meta", "list", "batch"])
def test_log_prob_rejects_bad_values_whatever_validate_args_says(bad, validate):
    n = 3
    loc = torch.zeros(2, n, dtype=F64)
    for dist in (
        SparseMultivariateNormal(loc, scale_tril=_tril(n), validate_args=validate),
        SparseMultivariateNormalNative(loc[0], _tril(n).to_sparse_csr(), validate_args=validate),
    ):
        value: object = {
            "sparse": torch.zeros(n, dtype=F64).to_sparse(),
            "complex": torch.zeros(n, dtype=torch.complex128),
            "size": torch.zeros(n + 1, dtype=F64),
            "meta": torch.zeros(n, dtype=F64, device="meta"),
            "list": [0.0] * n,
            "batch": torch.zeros(3, n, dtype=F64),
        }[bad]
        if bad == "batch" and isinstance(dist, SparseMultivariateNormalNative):
            continue  # an unbatched distribution takes any leading shape
        with pytest.raises((TypeError, ValueError), match="value"):
            dist.log_prob(value)
