"""One version for every package: VERSION, each package's version and every internal pin agree."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r'"(tsgu-[a-z]+)(?:\[[a-z,]+\])?==([^"]+)"')
SOURCE_TREE = (ROOT / "packages").is_dir()

pytestmark = pytest.mark.skipif(not SOURCE_TREE, reason="needs the source tree")


def _version() -> str:
    return (ROOT / "VERSION").read_text().strip()


def _check_tree(root: Path) -> list[str]:
    """Every disagreement with VERSION in the tree at ``root`` (empty when consistent)."""
    version = (root / "VERSION").read_text().strip()
    problems = []
    for vf in sorted((root / "packages").glob("*/src/*/_version.py")):
        m = re.search(r'__version__ = "([^"]+)"', vf.read_text())
        if not m or m.group(1) != version:
            problems.append(f"{vf}: {m.group(1) if m else None}")
    for pp in sorted((root / "packages").glob("*/pyproject.toml")):
        for name, pinned in PIN.findall(pp.read_text()):
            if pinned != version:
                problems.append(f"{pp}: {name}=={pinned}")
    return problems


def test_version_is_above_0_2_7() -> None:
    parts = tuple(int(x) for x in re.findall(r"\d+", _version())[:3])
    assert parts > (0, 2, 7)


def test_every_package_version_and_pin_equals_VERSION() -> None:
    assert _check_tree(ROOT) == []
    assert len(list((ROOT / "packages").glob("*/src/*/_version.py"))) == 8  # with tsgu-cholesky


def test_a_hand_edited_pin_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(
        ROOT / "packages", copy / "packages", ignore=shutil.ignore_patterns("tests", "__pycache__")
    )
    shutil.copy(ROOT / "VERSION", copy / "VERSION")
    pp = copy / "packages" / "tsgu-krylov" / "pyproject.toml"
    pp.write_text(pp.read_text().replace(f"tsgu-ops=={_version()}", "tsgu-ops==0.0.1"))
    assert any("tsgu-ops==0.0.1" in p for p in _check_tree(copy))


def test_bump_script_moves_everything_together(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(
        ROOT / "packages", copy / "packages", ignore=shutil.ignore_patterns("tests", "__pycache__")
    )
    shutil.copytree(ROOT / "scripts", copy / "scripts")
    shutil.copy(ROOT / "VERSION", copy / "VERSION")
    subprocess.run([sys.executable, str(copy / "scripts" / "bump_version.py"), "9.8.7"], check=True)
    assert (copy / "VERSION").read_text().strip() == "9.8.7"
    assert _check_tree(copy) == []
    meta = (copy / "packages" / "torchsparsegradutils" / "pyproject.toml").read_text()
    assert meta.count("==9.8.7") >= 6
