"""0.2.7 path ``torchsparsegradutils.utils.dist_stats_helpers`` (re-exports tsgu-distributions)."""

from tsgu_distributions.dist_stats_helpers import cov_nagao_test, mean_hotelling_t2_test

__all__ = ["mean_hotelling_t2_test", "cov_nagao_test"]
