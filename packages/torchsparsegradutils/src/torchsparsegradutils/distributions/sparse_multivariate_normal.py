"""0.2.7 path ``torchsparsegradutils.distributions.sparse_multivariate_normal`` (re-exports)."""

from tsgu_distributions.sparse_multivariate_normal import (
    SparseMultivariateNormal,
    SparseMultivariateNormalNative,
)
from tsgu_distributions.sparse_multivariate_normal import _batch_sparse_mv as _batch_sparse_mv

__all__ = ["SparseMultivariateNormal", "SparseMultivariateNormalNative"]
