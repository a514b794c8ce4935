"""0.2.7 path ``torchsparsegradutils.distributions`` (re-exports tsgu-distributions)."""

from tsgu_distributions.sparse_multivariate_normal import (
    SparseMultivariateNormal,
    SparseMultivariateNormalNative,
)

__all__ = ["SparseMultivariateNormal", "SparseMultivariateNormalNative"]
