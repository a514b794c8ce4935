#!/usr/bin/env python3
"""Move the one shared version: VERSION, every ``_version.py`` and every internal pin.

Usage: ``python scripts/bump_version.py NEW_VERSION`` (or ``nox -s bump -- NEW_VERSION``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r'((?:tsgu-[a-z]+)(?:\[[a-z,]+\])?==)[0-9A-Za-z.+-]+(")')
VERSION_LINE = re.compile(r'^__version__ = "[^"]*"$', re.M)
VALID = re.compile(r"^\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.post\d+)?(?:\.dev\d+)?$")


def bump(new: str, root: Path = ROOT) -> list[Path]:
    """Rewrite every version and pin under ``root`` to ``new``; return the files changed."""
    if not VALID.match(new):
        raise SystemExit(f"not a PEP 440 release version: {new!r}")
    changed = [root / "VERSION"]
    (root / "VERSION").write_text(new + "\n")
    for pyproject in sorted((root / "packages").glob("*/pyproject.toml")):
        text = pyproject.read_text()
        new_text = PIN.sub(lambda m: f"{m.group(1)}{new}{m.group(2)}", text)
        if new_text != text:
            pyproject.write_text(new_text)
            changed.append(pyproject)
    for version_file in sorted((root / "packages").glob("*/src/*/_version.py")):
        text = version_file.read_text()
        version_file.write_text(VERSION_LINE.sub(f'__version__ = "{new}"', text))
        changed.append(version_file)
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for path in bump(sys.argv[1]):
        print(f"updated {path.relative_to(ROOT)}")
