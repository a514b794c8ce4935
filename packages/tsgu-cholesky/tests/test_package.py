"""tsgu-cholesky installs, imports and carries the shared version."""

from __future__ import annotations

import re

import tsgu_cholesky


def test_version_is_a_pep440_release_above_0_2_7():
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+)?", tsgu_cholesky.__version__)
    assert tuple(int(x) for x in tsgu_cholesky.__version__.split(".")[:3]) > (0, 2, 7)


def test_public_names():
    for name in tsgu_cholesky.__all__:
        assert hasattr(tsgu_cholesky, name)
