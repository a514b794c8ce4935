"""Both selected-inversion kernels are tested: ``kernel`` runs a test once per kernel."""

from __future__ import annotations

import pytest
from tsgu_cholesky._selinv import ENGINE_ENV, numba_available

KERNELS = ["numpy"] + (["numba"] if numba_available() else [])


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, request.param)
    return request.param
