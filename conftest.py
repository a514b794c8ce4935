"""Repository-wide pytest configuration: the hypothesis profiles (dev, ci, fuzz).

The profile is chosen with the environment variable ``TSGU_HYPOTHESIS_PROFILE`` (default ``dev``).
Registered here once, from :func:`tsgu_ops.testing.register_profiles` when tsgu-ops is installed,
or with the same settings when a package that does not depend on tsgu-ops is tested alone.
"""

from __future__ import annotations

import os

try:
    from tsgu_ops.testing import register_profiles
except ImportError:  # e.g. tsgu-indexed tested in a venv that holds only it and torch
    from hypothesis import HealthCheck, settings

    def register_profiles() -> None:
        common = {
            "deadline": None,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
        }
        settings.register_profile("dev", max_examples=15, **common)
        settings.register_profile("ci", max_examples=40, derandomize=True, **common)
        settings.register_profile("fuzz", max_examples=3000, **common)
        settings.load_profile(os.environ.get("TSGU_HYPOTHESIS_PROFILE", "dev"))


register_profiles()


def _jax_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("jax") is None


# Modules that import JAX at the top cannot be collected for doctests without it (the JAX bridge is
# an optional extra); their tests skip on their own.
collect_ignore_glob = (
    [
        "packages/tsgu-bridges/src/tsgu_bridges/jax_*.py",
        "packages/torchsparsegradutils/src/torchsparsegradutils/jax/jax_*.py",
    ]
    if _jax_missing()
    else []
)


try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def real_corpus():  # type: ignore[no-untyped-def]
        """The real-matrix corpus (pyamg gallery/examples, scikit-fem assemblies), built once.

        ``TSGU_CORPUS_SIZE=large`` (the ``fuzz`` session) refines the generated matrices up to
        ~25k unknowns; the default ``small`` keeps CI fast.  Skips where tsgu-ops' ``[corpus]``
        extra is not installed (a package that does not depend on tsgu-ops, tested alone).
        """
        testing = pytest.importorskip("tsgu_ops.testing")
        pytest.importorskip("pyamg")
        pytest.importorskip("skfem")
        return testing.real_matrices(os.environ.get("TSGU_CORPUS_SIZE", "small"))
