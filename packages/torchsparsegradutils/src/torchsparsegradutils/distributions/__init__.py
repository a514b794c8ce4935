"""0.2.7 path ``torchsparsegradutils.distributions`` (re-exports tsgu-distributions)."""

# through the 0.2.7 submodule, which thereby is an attribute of this package (as in 0.2.7)
from . import sparse_multivariate_normal as sparse_multivariate_normal
from .sparse_multivariate_normal import SparseMultivariateNormal, SparseMultivariateNormalNative

__all__ = ["SparseMultivariateNormal", "SparseMultivariateNormalNative"]
