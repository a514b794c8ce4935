"""mean_hotelling_t2_test and cov_nagao_test against NumPy/SciPy formulas, with 0.2.7's broadcasting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from tsgu_distributions import cov_nagao_test, mean_hotelling_t2_test

F64 = torch.float64


def _samples(B: int, p: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, B, p, dtype=F64, generator=g) * torch.linspace(0.5, 2.0, p, dtype=F64)


def test_hotelling_broadcasts_an_unbatched_true_mean_over_a_batched_sample():
    B, p, n = 4, 3, 200
    x = _samples(B, p, n, 0)
    mean = x.mean(0)
    cov = torch.stack([x[:, b].T.cov() for b in range(B)])
    mu0 = torch.tensor([0.05, -0.1, 0.0], dtype=F64)
    accept, t2, thr = mean_hotelling_t2_test(mean, mu0, cov, n, 0.9)
    assert accept.shape == (B,) and t2.shape == (B,) and accept.dtype == torch.bool
    for b in range(B):  # NumPy reference of T² = n dᵀ S⁻¹ d
        d = (mean[b] - mu0).numpy()
        ref = n * d @ np.linalg.inv(cov[b].numpy()) @ d
        np.testing.assert_allclose(float(t2[b]), ref, rtol=1e-10)
    assert thr == pytest.approx(p * (n - 1) / (n - p) * stats.f.ppf(0.9, p, n - p))
    assert torch.equal(accept, t2 <= thr)
    # a shared (p, p) covariance broadcasts too
    _, t2_shared, _ = mean_hotelling_t2_test(mean, mu0, cov[0], n, 0.9)
    d = (mean - mu0).numpy()
    ref = n * np.einsum("bi,ij,bj->b", d, np.linalg.inv(cov[0].numpy()), d)
    np.testing.assert_allclose(t2_shared.numpy(), ref, rtol=1e-10)


def test_nagao_broadcasts_an_unbatched_reference_covariance_over_a_batched_sample():
    B, p, n = 3, 4, 300
    x = _samples(B, p, n, 1)
    emp = torch.stack([x[:, b].T.cov() for b in range(B)])
    ref_cov = torch.diag(torch.linspace(0.5, 2.0, p, dtype=F64) ** 2)
    accept, tn, thr = cov_nagao_test(emp, ref_cov, n, 0.95)
    assert accept.shape == (B,) and tn.shape == (B,)
    Linv = np.linalg.inv(np.linalg.cholesky(ref_cov.numpy()))
    for b in range(B):
        W = Linv @ emp[b].numpy() @ Linv.T
        np.testing.assert_allclose(float(tn[b]), 0.5 * n * ((W - np.eye(p)) ** 2).sum(), rtol=1e-10)
    assert thr == pytest.approx(stats.chi2.ppf(0.95, p * (p + 1) / 2))
    assert torch.equal(accept, tn <= thr)


@pytest.mark.parametrize(
    "bad",
    [
        "float16",
        "int",
        "complex",
        "meta",
        "sparse",
        "level",
        "batch",
        "not SPD",
        "dtypes differ",
        "p differs",
    ],
)
def test_helpers_reject_bad_input_naming_the_argument(bad):
    p = 3
    mean = torch.zeros(2, p, dtype=F64)
    ref = torch.zeros(p, dtype=F64)
    cov = torch.eye(p, dtype=F64).expand(2, p, p)
    level = 0.95
    err: type[Exception] = ValueError
    if bad in ("float16", "int", "complex"):
        dtype = {"float16": torch.float16, "int": torch.int64, "complex": torch.complex128}[bad]
        mean, err = mean.to(dtype), TypeError
    elif bad == "meta":
        mean = mean.to("meta")
    elif bad == "sparse":
        mean = mean.to_sparse()
    elif bad == "level":
        level = 1.5
    elif bad == "batch":
        cov = torch.eye(p, dtype=F64).expand(3, p, p)
    elif bad == "not SPD":
        cov = -cov
    elif bad == "dtypes differ":
        ref, err = ref.float(), TypeError
    else:
        ref = torch.zeros(p + 1, dtype=F64)
    name = {"level": "confidence_level", "not SPD": "sample_cov", "batch": "batch shapes"}.get(
        bad, "sample_mean"
    )
    with pytest.raises(err, match=name):
        mean_hotelling_t2_test(mean, ref, cov, 100, level)
    if bad in ("float16", "int", "complex", "meta", "sparse"):
        with pytest.raises(err, match="emp_cov"):
            cov_nagao_test(
                cov.to(mean.dtype).to(mean.device) if bad != "sparse" else cov.to_sparse(), cov, 100
            )


def test_sample_size_accepts_numpy_integers():
    x = _samples(1, 2, 100, 2)[:, 0]
    a = mean_hotelling_t2_test(x.mean(0), torch.zeros(2, dtype=F64), x.T.cov(), np.int64(100))
    b = mean_hotelling_t2_test(x.mean(0), torch.zeros(2, dtype=F64), x.T.cov(), 100)
    assert torch.equal(a[1], b[1]) and a[2] == b[2]
