"""Statistical tests for samples of a multivariate normal (use SciPy for the F and χ² quantiles).

* :func:`mean_hotelling_t2_test`: is the sample mean compatible with a reference mean?
  ``T² = n dᵀ S⁻¹ d`` with ``d = x̄ − μ₀``, against ``p (n−1)/(n−p) · F⁻¹(α; p, n−p)``.
* :func:`cov_nagao_test`: is the sample covariance compatible with a reference covariance?
  ``T_N = (n/2) ‖W − I‖²_F`` with ``W = L⁻¹ Σ̂ L⁻ᵀ`` (``Σ₀ = L Lᵀ``), against ``χ²⁻¹(α; p(p+1)/2)``.

Both accept a batch ``(B, p)`` / ``(B, p, p)`` or single ``(p,)`` / ``(p, p)`` inputs, whose batch
shapes broadcast (as in torchsparsegradutils 0.2.7, an unbatched reference mean or covariance
applies to every item of a batched sample), and return ``(accept, statistic, threshold)``: a bool
tensor and the statistic on the CPU (shaped like the broadcast batch) and the threshold as a float.
Linear systems are solved (Cholesky), not inverted.
"""

from __future__ import annotations

import numbers
import operator
from typing import Any

import torch
from scipy import stats

from tsgu_ops import _checks
from tsgu_ops.internal import autocast_fp32

__all__ = ["cov_nagao_test", "mean_hotelling_t2_test"]


def _check_n(n: int, p: int, name: str) -> int:
    if isinstance(n, bool):
        n = -1
    try:
        n = operator.index(n)
    except TypeError:
        n = -1
    if n <= p:
        raise ValueError(
            f"{name}: the sample size n must be an int larger than the dimension p={p}, got {n!r}"
        )
    return n


def _check_tensor(fn: str, name: str, t: Any, min_dim: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    _checks.require_not_meta(name, t)
    if t.layout != torch.strided:
        raise ValueError(f"{fn}: {name} must be a dense (strided) tensor, got {t.layout}")
    _checks.require_value_dtype(name, t, _checks.FLOAT_DTYPES)
    if t.dim() < min_dim:
        raise ValueError(f"{fn}: {name} must have at least {min_dim} dimensions, got shape {tuple(t.shape)}")
    return t


def _check_level(fn: str, confidence_level: float) -> float:
    if isinstance(confidence_level, bool) or not isinstance(confidence_level, numbers.Real):
        raise TypeError(f"{fn}: confidence_level must be a number in (0, 1), got {confidence_level!r}")
    if not 0 < float(confidence_level) < 1:
        raise ValueError(f"{fn}: confidence_level must lie in (0, 1), got {confidence_level!r}")
    return float(confidence_level)


def _cholesky(fn: str, name: str, S: torch.Tensor) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(S)
    if bool((info != 0).any()):
        raise ValueError(
            f"{fn}: {name} must be symmetric positive definite (its Cholesky factorisation failed)"
        )
    return L


def _batch_shape(fn: str, shapes: dict[str, torch.Size]) -> torch.Size:
    try:
        return torch.broadcast_shapes(*shapes.values())
    except RuntimeError as exc:
        got = ", ".join(f"{k}: {tuple(v)}" for k, v in shapes.items())
        raise ValueError(f"{fn}: the batch shapes do not broadcast ({got})") from exc


@autocast_fp32
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
    fn = "mean_hotelling_t2_test"
    _check_tensor(fn, "sample_mean", sample_mean, 1)
    _check_tensor(fn, "true_mean", true_mean, 1)
    _check_tensor(fn, "sample_cov", sample_cov, 2)
    p = sample_mean.shape[-1]
    if true_mean.shape[-1] != p or sample_cov.shape[-2:] != (p, p):
        raise ValueError(
            f"{fn}: sample_mean and true_mean must be (..., p) and sample_cov (..., p, p) with the "
            f"same p, got {tuple(sample_mean.shape)}, {tuple(true_mean.shape)}, {tuple(sample_cov.shape)}"
        )
    batch = _batch_shape(
        fn,
        {
            "sample_mean": sample_mean.shape[:-1],
            "true_mean": true_mean.shape[:-1],
            "sample_cov": sample_cov.shape[:-2],
        },
    )
    n = _check_n(n, p, fn)
    confidence_level = _check_level(fn, confidence_level)
    sample_cov = sample_cov.expand(*batch, p, p)
    d = (sample_mean - true_mean).expand(*batch, p).unsqueeze(-1)
    _checks.require_same_dtype("sample_mean", sample_mean, "true_mean", true_mean)
    _checks.require_same_dtype("sample_mean", sample_mean, "sample_cov", sample_cov)
    sol = torch.cholesky_solve(d, _cholesky(fn, "sample_cov", sample_cov))
    t2 = (n * (d * sol).sum((-2, -1))).detach().cpu()
    threshold = float(p * (n - 1) / (n - p) * stats.f.ppf(confidence_level, p, n - p))
    return t2 <= threshold, t2, threshold


@autocast_fp32
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
    fn = "cov_nagao_test"
    _check_tensor(fn, "emp_cov", emp_cov, 2)
    _check_tensor(fn, "ref_cov", ref_cov, 2)
    p = emp_cov.shape[-1]
    if emp_cov.shape[-2] != p or ref_cov.shape[-2:] != (p, p):
        raise ValueError(
            f"{fn}: emp_cov and ref_cov must both be (..., p, p) with the same p, got "
            f"{tuple(emp_cov.shape)}, {tuple(ref_cov.shape)}"
        )
    batch = _batch_shape(fn, {"emp_cov": emp_cov.shape[:-2], "ref_cov": ref_cov.shape[:-2]})
    n = _check_n(n, p, fn)
    confidence_level = _check_level(fn, confidence_level)
    emp_cov, ref_cov = emp_cov.expand(*batch, p, p), ref_cov.expand(*batch, p, p)
    _checks.require_same_dtype("emp_cov", emp_cov, "ref_cov", ref_cov)
    L = _cholesky(fn, "ref_cov", ref_cov)
    Y = torch.linalg.solve_triangular(L, emp_cov, upper=False)
    W = torch.linalg.solve_triangular(L, Y.mT, upper=False)
    eye = torch.eye(p, dtype=W.dtype, device=W.device)
    tn = (0.5 * n * ((W - eye) ** 2).sum((-2, -1))).detach().cpu()
    threshold = float(stats.chi2.ppf(confidence_level, p * (p + 1) / 2))
    return tn <= threshold, tn, threshold
