"""Smoke tests of the installed distributions (run by ``nox -s integration`` on the built wheels)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
MODULES = [
    "tsgu_ops",
    "tsgu_indexed",
    "tsgu_krylov",
    "tsgu_bridges",
    "tsgu_distributions",
    "tsgu_encoders",
    "tsgu_cholesky",
    "torchsparsegradutils",
]


@pytest.mark.parametrize("name", MODULES)
def test_each_distribution_imports_with_the_shared_version(name):
    mod = importlib.import_module(name)
    assert mod.__version__ == (ROOT / "VERSION").read_text().strip()
    if os.environ.get("TSGU_DIST"):  # installed from the built files, not the source tree
        assert "site-packages" in str(Path(mod.__file__))
        assert (Path(mod.__file__).parent / "py.typed").exists()


def test_end_to_end_through_the_meta_package():
    from torchsparsegradutils import gather_mm, sparse_mm, sparse_triangular_solve
    from torchsparsegradutils.utils.random_sparse import rand_sparse_tri

    L = rand_sparse_tri(
        (20, 20),
        60,
        torch.sparse_csr,
        upper=False,
        well_conditioned=True,
        values_dtype=torch.float64,
        indices_dtype=torch.int32,
    ).requires_grad_()
    B = torch.randn(20, 3, dtype=torch.float64, requires_grad=True)
    X = sparse_triangular_solve(L, sparse_mm(L, B), upper=False)
    torch.testing.assert_close(X, B)
    X.square().sum().backward()
    assert L.grad.layout == torch.sparse_csr and L.grad.crow_indices().dtype == torch.int32
    out = gather_mm(
        torch.ones(4, 2), torch.stack([torch.eye(2), 2 * torch.eye(2)]), torch.tensor([0, 1, 1, 0])
    )
    assert out[:, 0].tolist() == [1.0, 2.0, 2.0, 1.0]


def test_the_meta_package_pins_every_tsgu_package_exactly_and_they_resolve():
    from importlib.metadata import requires, version

    expected = (ROOT / "VERSION").read_text().strip()
    pins = [
        r for r in requires("torchsparsegradutils") or [] if r.startswith("tsgu-") and "extra ==" not in r
    ]
    names = sorted(r.split("==")[0] for r in pins)
    assert names == sorted(m.replace("_", "-") for m in MODULES if m != "torchsparsegradutils")
    assert all(r.split("==")[1].strip() == expected for r in pins)
    for m in MODULES:
        assert version(m.replace("_", "-")) == expected
