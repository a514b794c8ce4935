"""tsgu-encoders installs, imports and carries the shared version."""

from __future__ import annotations

import re

import tsgu_encoders


def test_version_is_a_pep440_release_above_0_2_7():
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+)?", tsgu_encoders.__version__)
    assert tuple(int(x) for x in tsgu_encoders.__version__.split(".")[:3]) > (0, 2, 7)
