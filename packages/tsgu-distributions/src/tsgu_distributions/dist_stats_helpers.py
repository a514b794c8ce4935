"""Statistical tests for samples of a multivariate normal (use SciPy for the F and χ² quantiles).

* :func:`mean_hotelling_t2_test`: is the sample mean compatible with a reference mean?
  ``T² = n dᵀ S⁻¹ d`` with ``d = x̄ − μ₀``, against ``p (n−1)/(n−p) · F⁻¹(α; p, n−p)``.
* :func:`cov_nagao_test`: is the sample covariance compatible with a reference covariance?
  ``T_N = (n/2) ‖W − I‖²_F`` with ``W = L⁻¹ Σ̂ L⁻ᵀ`` (``Σ₀ = L Lᵀ``), against ``χ²⁻¹(α; p(p+1)/2)``.

Both accept a batch ``(B, p)`` / ``(B, p, p)`` or single ``(p,)`` / ``(p, p)`` inputs and return
``(accept, statistic, threshold)``: a bool tensor and the statistic on the CPU (shape ``(B,)`` or
``()``) and the threshold as a float.  Linear systems are solved (Cholesky), not inverted.
"""

from __future__ import annotations

import torch
from scipy import stats

__all__ = ["cov_nagao_test", "mean_hotelling_t2_test"]


def _check_n(n: int, p: int, name: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n <= p:
        raise ValueError(
            f"{name}: the sample size n must be an int larger than the dimension p={p}, got {n!r}"
        )


def mean_hotelling_t2_test(
    sample_mean: torch.Tensor,
    true_mean: torch.Tensor,
    sample_cov: torch.Tensor,
    n: int,
    confidence_level: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Hotelling's T² test of ``H₀: E[x] = true_mean`` from ``n`` samples.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(500, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> mu0 = torch.zeros(3, dtype=torch.float64)
    >>> accept, t2, thr = mean_hotelling_t2_test(x.mean(0), mu0, x.T.cov(), 500)
    >>> bool(accept)
    True
    """
    if sample_mean.shape != true_mean.shape or sample_cov.shape != sample_mean.shape + sample_mean.shape[-1:]:
        raise ValueError(
            "sample_mean and true_mean must be (B, p) or (p,) and sample_cov (B, p, p) or (p, p), got "
            f"{tuple(sample_mean.shape)}, {tuple(true_mean.shape)}, {tuple(sample_cov.shape)}"
        )
    p = sample_mean.shape[-1]
    _check_n(n, p, "mean_hotelling_t2_test")
    d = (sample_mean - true_mean).unsqueeze(-1)
    sol = torch.cholesky_solve(d, torch.linalg.cholesky(sample_cov))
    t2 = (n * (d * sol).sum((-2, -1))).detach().cpu()
    threshold = float(p * (n - 1) / (n - p) * stats.f.ppf(confidence_level, p, n - p))
    return t2 <= threshold, t2, threshold


def cov_nagao_test(
    emp_cov: torch.Tensor, ref_cov: torch.Tensor, n: int, confidence_level: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Nagao's test of ``H₀: Cov[x] = ref_cov`` from an empirical covariance of ``n`` samples.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(2000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> accept, tn, thr = cov_nagao_test(x.T.cov(), torch.eye(3, dtype=torch.float64), 2000)
    >>> bool(accept)
    True
    """
    if emp_cov.shape != ref_cov.shape or emp_cov.dim() < 2 or emp_cov.shape[-1] != emp_cov.shape[-2]:
        raise ValueError(
            "emp_cov and ref_cov must both be (B, p, p) or (p, p), got "
            f"{tuple(emp_cov.shape)}, {tuple(ref_cov.shape)}"
        )
    p = emp_cov.shape[-1]
    _check_n(n, p, "cov_nagao_test")
    L = torch.linalg.cholesky(ref_cov)
    Y = torch.linalg.solve_triangular(L, emp_cov, upper=False)
    W = torch.linalg.solve_triangular(L, Y.mT, upper=False)
    eye = torch.eye(p, dtype=W.dtype, device=W.device)
    tn = (0.5 * n * ((W - eye) ** 2).sum((-2, -1))).detach().cpu()
    threshold = float(stats.chi2.ppf(confidence_level, p * (p + 1) / 2))
    return tn <= threshold, tn, threshold
