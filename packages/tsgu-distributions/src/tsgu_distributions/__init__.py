"""tsgu-distributions: multivariate normals with sparse Cholesky/LDLᵀ factors, and statistical tests.

:class:`SparseMultivariateNormal` (covariance or precision, LLᵀ or LDLᵀ, COO/CSR factors, batches;
or a sparse SPD precision matrix itself, a Gaussian Markov random field, through tsgu-cholesky):
``rsample``/``sample`` for any sample shape, ``log_prob`` and ``entropy`` in ``O(nnz + n)`` without
densifying, sparse gradients for the factor.  :class:`SparseMultivariateNormalNative` is the
0.2.7 CSR-only variant.  :func:`mean_hotelling_t2_test` and :func:`cov_nagao_test` test samples.
"""

from ._version import __version__
from .dist_stats_helpers import cov_nagao_test, mean_hotelling_t2_test
from .sparse_multivariate_normal import SparseMultivariateNormal, SparseMultivariateNormalNative

__all__ = [
    "SparseMultivariateNormal",
    "SparseMultivariateNormalNative",
    "__version__",
    "cov_nagao_test",
    "mean_hotelling_t2_test",
]
