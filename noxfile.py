"""Every repeatable job of the tsgu monorepo.

Default sessions (``nox`` with no arguments; what CI runs): ``lint``, ``tests``, ``isolated``,
``integration``, ``docs``.  On request: ``torch_matrix`` and ``python_matrix`` (below), ``fuzz``,
``bench``, ``bump -- NEW_VERSION``.

The compatibility matrix: ``nox -s torch_matrix`` runs every package's tests, each package alone in a
venv of its own, then the integration tests and each built wheel alone, against torch 2.5.1, 2.9.1,
2.13.0 and 2.14.1 on the Python that runs nox; ``nox -s python_matrix`` does the same with torch
``TSGU_TORCH`` (2.13.0) on Python 3.10, 3.11, 3.12 and 3.13.  Pick one cell with
``nox -s "torch_matrix(torch_version='2.5.1')"`` or ``nox -s python_matrix-3.13``.  They are not
default sessions: every torch but the CPU 2.13.0 build is a multi-GB CUDA wheel from PyPI.  Each cell
writes its counts to ``.nox/matrix-results/``; ``nox -s matrix_report`` prints them as one table.

Virtual environments are made with uv when it is installed (much faster than pip).  uv does not read
pip's configuration, so a ``find-links`` folder configured for pip (where a CPU build of torch may
lie) is handed to uv through ``UV_FIND_LINKS``; torch is always pinned.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import nox

ROOT = Path(__file__).parent
VERSION = (ROOT / "VERSION").read_text().strip()
TORCH = os.environ.get("TSGU_TORCH", "2.13.0")
TORCH_MATRIX = ["2.5.1", "2.9.1", "2.13.0", "2.14.1"]
PYTHON_MATRIX = ["3.10", "3.11", "3.12", "3.13"]
MATRIX_RESULTS = ROOT / ".nox" / "matrix-results"
# a matrix cell runs the quick test suites first, so that a stopped cell has covered the most packages
MATRIX_ORDER = [
    "tsgu-indexed",
    "torchsparsegradutils",
    "tsgu-encoders",
    "tsgu-cholesky",
    "tsgu-distributions",
    "tsgu-bridges",
    "tsgu-krylov",
    "tsgu-ops",
]
TEST_TOOLS = ["pytest>=8", "hypothesis>=6.100"]
# torch.compile's inductor imports setuptools, which torch 2.5.1 and 2.9.1 declare only for Python >= 3.12
# (docs/installation.md tells users the same): the matrix venvs hold it so that the compile tests run
MATRIX_TOOLS = [*TEST_TOOLS, "setuptools"]

# package -> (import name, extras needed by its tests)
PACKAGES = {
    "tsgu-ops": ("tsgu_ops", "[testing,corpus]"),
    "tsgu-indexed": ("tsgu_indexed", ""),
    "tsgu-krylov": ("tsgu_krylov", "[test]"),
    "tsgu-bridges": ("tsgu_bridges", "[jax,test]"),
    "tsgu-distributions": ("tsgu_distributions", "[test]"),
    "tsgu-encoders": ("tsgu_encoders", "[test]"),
    "tsgu-cholesky": ("tsgu_cholesky", "[test]"),
    "torchsparsegradutils": ("torchsparsegradutils", ""),
}
# internal dependencies, for installing one package from local paths without an index
INTERNAL = {
    "tsgu-ops": [],
    "tsgu-indexed": [],
    "tsgu-krylov": ["tsgu-ops"],
    "tsgu-bridges": ["tsgu-ops"],
    "tsgu-distributions": ["tsgu-ops", "tsgu-cholesky"],
    "tsgu-encoders": ["tsgu-ops"],
    "tsgu-cholesky": ["tsgu-ops"],
    "torchsparsegradutils": [p for p in PACKAGES if p != "torchsparsegradutils"],
}

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests", "isolated", "integration", "docs"]
nox.options.reuse_existing_virtualenvs = True


def _pip_find_links() -> str | None:
    """The find-links folder configured for pip, if any (uv ignores pip's config)."""
    if os.environ.get("UV_FIND_LINKS"):
        return os.environ["UV_FIND_LINKS"]
    try:
        out = subprocess.run(
            ["python3", "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        m = re.match(r"^[\w:.]*find-links='?([^']+)'?$", line.strip())
        if m and Path(m.group(1).split()[0]).is_dir():
            return m.group(1).split()[0]
    return None


def _expose_pyenv_pythons() -> None:
    """Let nox find the matrix Pythons that pyenv holds, by adding them to ``PYENV_VERSION``.

    pyenv's shims answer only for the versions ``PYENV_VERSION`` names; the user's own choice stays first.
    """
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if not root.is_dir():
        return
    named = [v for v in os.environ.get("PYENV_VERSION", "").split(":") if v]
    for minor in PYTHON_MATRIX:
        found = sorted(
            (p.name for p in root.glob(f"{minor}.*") if re.fullmatch(r"\d+\.\d+\.\d+", p.name)),
            key=lambda v: tuple(int(x) for x in v.split(".")),
        )
        if found and not any(v == minor or v.startswith(minor + ".") for v in named):
            named.append(found[-1])
    if named:
        os.environ["PYENV_VERSION"] = ":".join(named)


_expose_pyenv_pythons()
FIND_LINKS = _pip_find_links()
if FIND_LINKS:
    os.environ.setdefault("UV_FIND_LINKS", FIND_LINKS)
    os.environ.setdefault("PIP_FIND_LINKS", FIND_LINKS)


def _install_torch(session: nox.Session, version: str = TORCH) -> None:
    session.install(f"torch=={version}")


def _local(pkg: str, extras: str = "") -> str:
    return f"{ROOT / 'packages' / pkg}{extras}"


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) on everything, mypy on every package's src/."""
    _install_torch(session)
    session.install("ruff>=0.6", "mypy>=1.10", "numpy", "scipy", "hypothesis>=6.100")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    srcs = [str(p / "src") for p in sorted((ROOT / "packages").iterdir()) if (p / "src").is_dir()]
    for src in srcs:
        session.run("mypy", src, env={"MYPYPATH": os.pathsep.join(srcs)})


@nox.session
def tests(session: nox.Session) -> None:
    """Every package's tests and doctests, with all packages installed editable."""
    _install_torch(session)
    session.install("-r", "requirements-dev.txt")
    env = {"TSGU_HYPOTHESIS_PROFILE": os.environ.get("TSGU_HYPOTHESIS_PROFILE", "ci")}
    # the cross-package assembly tests need the test extras (scikit-fem, JAX) that only this venv
    # has; the benchmark tests need matplotlib
    session.run(
        "pytest",
        "packages",
        "tests-integration/test_versions.py",
        "tests-integration/test_assembly.py",
        "tests-integration/test_benchmarks.py",
        *session.posargs,
        env=env,
    )


def _pytest_outside_tree(session: nox.Session, tests: Path, env: dict[str, str]) -> None:
    """Run pytest from a scratch folder, so the installed packages are tested, not the source tree."""
    session.chdir(session.create_tmp())
    session.run(
        "python",
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(ROOT),
        "-c",
        str(ROOT / "pyproject.toml"),
        str(tests),
        *session.posargs,
        env=env,
    )


def _isolated_run(session: nox.Session, pkg: str, torch_version: str) -> None:
    """A venv holding only ``pkg``, its declared dependencies, pytest and hypothesis."""
    module, extras = PACKAGES[pkg]
    _install_torch(session, torch_version)
    local = [_local(dep) for dep in INTERNAL[pkg]]
    # a reused venv already holds ``pkg`` at this version: uv would keep the stale build of the sources
    fresh = [a for p in PACKAGES for a in ("--reinstall-package", p)] if session.venv_backend == "uv" else []
    session.install(*TEST_TOOLS, *fresh, *local, _local(pkg, extras))
    tests_dir = ROOT / "packages" / pkg / "tests"
    env = {"TSGU_HYPOTHESIS_PROFILE": os.environ.get("TSGU_HYPOTHESIS_PROFILE", "dev")}
    _pytest_outside_tree(session, tests_dir, env)
    session.run("python", "-c", f"import {module}; assert {module}.__version__ == '{VERSION}'")


@nox.session
@nox.parametrize("pkg", list(PACKAGES))
def isolated(session: nox.Session, pkg: str) -> None:
    """Each package alone: an import it does not declare fails here."""
    _isolated_run(session, pkg, TORCH)


def _uv() -> str:
    """The uv executable (the matrix sessions make one venv per package with it)."""
    found = shutil.which("uv")
    if found is None:
        try:
            from uv import find_uv_bin  # the ``uv`` package from PyPI ships the binary

            found = find_uv_bin()
        except (ImportError, FileNotFoundError):
            pass
    if found is None:
        raise RuntimeError("the matrix sessions need uv: pip install uv")
    return found


def _fresh_venv(session: nox.Session, venv: Path, python: str) -> str:
    """An empty venv at ``venv`` on the interpreter ``python``; returns its python."""
    shutil.rmtree(venv, ignore_errors=True)
    session.run(_uv(), "venv", "--quiet", "--python", python, str(venv), external=True)
    return str(venv / "bin" / "python")


def _uv_install(session: nox.Session, py: str, *args: str) -> None:
    # uv caches a wheel built from a local folder until its pyproject.toml changes: rebuild ours
    refresh = [a for p in PACKAGES for a in ("--refresh-package", p)]
    session.run(_uv(), "pip", "install", "--quiet", "--python", py, *refresh, *args, external=True)


def _counted_pytest(session: nox.Session, py: str, tests: Path, env: dict[str, str], report: Path) -> dict:
    """pytest from a scratch folder on ``tests``; the counts from its JUnit report (never raises)."""
    report.unlink(missing_ok=True)
    with session.chdir(session.create_tmp()):
        args = [
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(ROOT),
            "-c",
            str(ROOT / "pyproject.toml"),
            # one module that fails to import is counted as an error; the others still run
            "--continue-on-collection-errors",
        ]
        try:
            session.run(
                py, *args, f"--junitxml={report}", str(tests), *session.posargs, env=env, external=True
            )
            rc = 0
        except nox.command.CommandFailed:
            rc = 1
    counts = {"passed": 0, "failed": 0, "skipped": 0, "ok": rc == 0}
    if report.exists():
        suites = ET.parse(report).getroot()
        for suite in suites.iter("testsuite"):
            tests_n, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
            bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            counts["failed"] += bad
            counts["skipped"] += skipped
            counts["passed"] += tests_n - bad - skipped
        counts["failures"] = [
            f"{case.get('classname', '')}::{case.get('name', '')}"
            for case in suites.iter("testcase")
            if case.find("failure") is not None or case.find("error") is not None
        ]
    return counts


def _torch_build(session: nox.Session, tmp: Path) -> str:
    """The torch version string (with its build label) installed in the cell's venvs."""
    for venv in [tmp / "integration", *(tmp / f"pkg-{pkg}" for pkg in PACKAGES)]:
        if not (venv / "bin" / "python").exists():
            continue
        try:
            out = session.run(
                str(venv / "bin" / "python"),
                "-c",
                "import torch; print(torch.__version__)",
                silent=True,
                external=True,
            )
            return str(out).strip().splitlines()[-1]
        except (nox.command.CommandFailed, IndexError):
            continue
    return "?"


def _save_cell(path: Path, pyver: str, torch_version: str, results: dict, build: str) -> dict:
    cell = {"python": pyver, "torch": torch_version, "torch_build": build, "results": results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cell, indent=1) + "\n")
    return cell


def _matrix_cell(session: nox.Session, torch_version: str) -> None:
    """The built wheels, then every package alone, against torch ``torch_version`` on this session's Python.

    The eight wheels are built and installed together from those files for ``tests-integration``; then
    each package gets a venv holding only it, its declared dependencies (internal ones from the local
    paths), its test extras, pytest and hypothesis (as ``isolated`` does).  Every step runs even
    when an earlier one failed; the counts go to ``.nox/matrix-results/`` and the session fails if any
    step failed.  ``TSGU_MATRIX_ONLY=tsgu-ops,integration`` reruns only those steps of the cell (the
    other rows of its results are kept).
    """
    python = session.run("python", "-c", "import sys; print(sys.executable)", silent=True).strip()
    pyver = session.run(
        "python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])", silent=True
    ).strip()
    tmp = Path(session.create_tmp()).resolve()
    env = {"TSGU_HYPOTHESIS_PROFILE": os.environ.get("TSGU_HYPOTHESIS_PROFILE", "dev")}
    only = [x.strip() for x in os.environ.get("TSGU_MATRIX_ONLY", "").split(",") if x.strip()]
    unknown = sorted(set(only) - {*PACKAGES, "integration"})
    if unknown:
        session.error(f"TSGU_MATRIX_ONLY names no step: {unknown}; steps: {[*PACKAGES, 'integration']}")
    result_file = MATRIX_RESULTS / f"py{pyver}-torch{torch_version}.json"
    results: dict[str, dict] = {}
    if only and result_file.exists():
        results = json.loads(result_file.read_text())["results"]
    if not only or "integration" in only:  # first: all eight packages together, built as released
        results["integration"] = _matrix_integration(session, python, torch_version, tmp, env)
        _save_cell(result_file, pyver, torch_version, results, "?")
    for pkg in MATRIX_ORDER:
        module, extras = PACKAGES[pkg]
        if only and pkg not in only:
            continue
        try:
            py = _fresh_venv(session, tmp / f"pkg-{pkg}", python)
            local = [_local(dep) for dep in INTERNAL[pkg]]
            _uv_install(session, py, f"torch=={torch_version}", *MATRIX_TOOLS, *local, _local(pkg, extras))
        except nox.command.CommandFailed:
            results[pkg] = {"passed": 0, "failed": 0, "skipped": 0, "ok": False, "note": "install failed"}
            continue
        results[pkg] = _counted_pytest(
            session, py, ROOT / "packages" / pkg / "tests", env, tmp / f"{pkg}.xml"
        )
        try:
            session.run(
                py, "-c", f"import {module}; assert {module}.__version__ == '{VERSION}'", external=True
            )
        except nox.command.CommandFailed:
            results[pkg].update(ok=False, note="version check failed")
        _save_cell(result_file, pyver, torch_version, results, "?")  # partial, in case the cell is stopped
    cell = _save_cell(result_file, pyver, torch_version, results, _torch_build(session, tmp))
    session.log(_matrix_table([cell]))
    failed = [name for name, r in results.items() if not r["ok"]]
    if failed:
        session.error(f"torch {torch_version} on Python {pyver}: failed: {', '.join(failed)}")


def _matrix_integration(session: nox.Session, python: str, torch_version: str, tmp: Path, env: dict) -> dict:
    """Build the eight wheels and run tests-integration on all of them installed from those files.

    (Each package alone on this torch is the per-package step of the cell, so the one-line smoke call
    of every wheel alone that ``integration`` makes adds nothing here.)
    """
    dist = tmp / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    dist.mkdir()
    try:
        session.install("hatchling>=1.27")
        for pkg in PACKAGES:
            with session.chdir(ROOT / "packages" / pkg):
                session.run("python", "-m", "hatchling", "build", "-t", "wheel", "-d", str(dist), silent=True)
        py = _fresh_venv(session, tmp / "integration", python)
        _uv_install(
            session,
            py,
            *MATRIX_TOOLS,
            "--find-links",
            str(dist),
            f"torch=={torch_version}",
            f"torchsparsegradutils=={VERSION}",
        )
    except nox.command.CommandFailed:
        return {"passed": 0, "failed": 0, "skipped": 0, "ok": False, "note": "build or install failed"}
    counts = _counted_pytest(
        session, py, ROOT / "tests-integration", {**env, "TSGU_DIST": str(dist)}, tmp / "integration.xml"
    )
    return counts


def _matrix_table(cells: list[dict]) -> str:
    """Markdown: one row per (Python, torch), one column per package; ``passed/failed/skipped``."""
    cols = [*PACKAGES, "integration"]
    lines = ["| Python | torch | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for cell in cells:
        row = []
        for col in cols:
            r = cell["results"].get(col)
            if r is None:
                row.append("–")
                continue
            mark = "✅" if r["ok"] else "❌"
            row.append(
                f"{mark} {r['passed']}/{r['failed']}/{r['skipped']}"
                + (f" ({r['note']})" if r.get("note") else "")
            )
        build = cell["torch"] if cell.get("torch_build") in (None, "?") else cell["torch_build"]
        lines.append(f"| {cell['python']} | {build} | " + " | ".join(row) + " |")
    return "\n".join(lines)


@nox.session
@nox.parametrize("torch_version", TORCH_MATRIX)
def torch_matrix(session: nox.Session, torch_version: str) -> None:
    """Every package alone + the built wheels, against one torch release (all but 2.13.0: CUDA builds)."""
    _matrix_cell(session, torch_version)


@nox.session(python=PYTHON_MATRIX)
def python_matrix(session: nox.Session) -> None:
    """Every package alone + the built wheels, with torch ``TSGU_TORCH`` (2.13.0), on one Python."""
    _matrix_cell(session, TORCH)


@nox.session(venv_backend="none")
def matrix_report(session: nox.Session) -> None:
    """The counts of every matrix cell run so far, as one markdown table (passed/failed/skipped)."""
    cells = [json.loads(p.read_text()) for p in sorted(MATRIX_RESULTS.glob("*.json"))]
    if not cells:
        session.error("no matrix results yet: run nox -s torch_matrix or nox -s python_matrix")
    cells.sort(
        key=lambda c: (
            tuple(int(x) for x in c["python"].split(".")),
            tuple(int(x) for x in c["torch"].split(".")),
        )
    )
    print(_matrix_table(cells))


@nox.session(reuse_venv=False)  # the wheels keep one version number: never reuse stale installs
def integration(session: nox.Session) -> None:
    """Build wheel + sdist of all eight (hatchling); install from those files only; run tests-integration."""
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    dist.mkdir()
    # hatchling is hatch's build backend; calling it directly builds without hatch's own env manager
    session.install("hatchling>=1.27")
    for pkg in PACKAGES:
        with session.chdir(ROOT / "packages" / pkg):
            session.run("python", "-m", "hatchling", "build", "-t", "wheel", "-t", "sdist", "-d", str(dist))
    built = sorted(p.name for p in dist.iterdir())
    session.log(f"built: {built}")
    _install_torch(session)
    # uv caches wheels by name and version: make it read the freshly built files again
    refresh = [a for p in PACKAGES for a in ("--refresh-package", p)] if session.venv_backend == "uv" else []
    session.install(*TEST_TOOLS, *refresh, "--find-links", str(dist), f"torchsparsegradutils=={VERSION}")
    env = {"TSGU_HYPOTHESIS_PROFILE": os.environ.get("TSGU_HYPOTHESIS_PROFILE", "ci"), "TSGU_DIST": str(dist)}
    # the FEM assembly tests read a scikit-fem mesh (a test dependency, never a runtime one)
    session.install("scikit-fem>=9")
    _pytest_outside_tree(session, ROOT / "tests-integration", env)
    _each_wheel_alone(session, dist)


def _each_wheel_alone(session: nox.Session, dist: Path) -> None:
    """Each tsgu-* wheel in a venv of its own with only its declared dependencies; import it and use it."""
    f64 = "dtype=torch.float64"
    smoke = {
        "tsgu-ops": "import torch, tsgu_ops as m; m.sparse_mm(torch.eye(2).to_sparse(), torch.ones(2, 1))",
        "tsgu-indexed": (
            "import torch, tsgu_indexed as m; "
            "m.segment_mm(torch.ones(2, 2), torch.ones(1, 2, 2), torch.tensor([2]))"
        ),
        "tsgu-krylov": (
            f"import torch, tsgu_krylov as m; m.linear_cg(torch.eye(2, {f64}), torch.ones(2, {f64}))"
        ),
        "tsgu-bridges": (
            "import torch, tsgu_bridges as m; "
            f"m.sparse_solve_c4t(torch.eye(2, {f64}).to_sparse(), torch.ones(2, {f64}))"
        ),
        "tsgu-distributions": (
            "import torch, tsgu_distributions as m; "
            "m.SparseMultivariateNormal(torch.zeros(2), scale_tril=torch.eye(2).to_sparse()).rsample()"
        ),
        "tsgu-encoders": (
            "import torch, tsgu_encoders as m; m.PairwiseEncoder(1, (1, 3))(torch.ones(2, 1, 3))"
        ),
        "tsgu-cholesky": (
            f"import torch, tsgu_cholesky as m; m.sparse_logdet((2 * torch.eye(3, {f64})).to_sparse())"
        ),
    }
    if session.venv_backend != "uv":
        session.log("each-wheel-alone check needs uv; skipped")
        return
    refresh = [a for p in PACKAGES for a in ("--refresh-package", p)]
    for pkg, code in smoke.items():
        venv = Path(session.create_tmp()).resolve() / f"alone-{pkg}"
        shutil.rmtree(venv, ignore_errors=True)
        session.run("uv", "venv", "--quiet", str(venv), external=True)
        py = str(venv / "bin" / "python")
        session.run(
            "uv",
            "pip",
            "install",
            "--quiet",
            "--python",
            py,
            *refresh,
            "--find-links",
            str(dist),
            f"torch=={TORCH}",
            f"{pkg}=={VERSION}",
            external=True,
        )
        session.run(py, "-c", f"{code}; assert m.__version__ == '{VERSION}'", external=True)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (Sphinx + MyST) with warnings as errors.

    The docstring examples it shows are doctests run by ``nox -s tests`` (pytest --doctest-modules).
    """
    _install_torch(session)
    session.install("-r", "requirements-dev.txt", "sphinx>=7", "myst-parser>=2")
    build = ROOT / "docs" / "_build"
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", str(build / "html"))


@nox.session
def fuzz(session: nox.Session) -> None:
    """The property-based tests with the hypothesis ``fuzz`` profile (thousands of examples)."""
    _install_torch(session)
    session.install("-r", "requirements-dev.txt")
    session.run(
        "pytest",
        "packages",
        "-p",
        "no:doctest",
        *session.posargs,
        env={"TSGU_HYPOTHESIS_PROFILE": "fuzz", "TSGU_CORPUS_SIZE": "large"},
    )


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite: the quick run (``nox -s bench``), the run of record (``-- --full``).

    The solver cases compare with torch-sla (``benchmarks/requirements-bench.txt``), installed here
    without its dependencies so the pinned torch stays; it is never a dependency of a package.
    """
    _install_torch(session)
    session.install("-r", "requirements-dev.txt")
    session.install("--no-deps", "-r", "benchmarks/requirements-bench.txt")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(venv_backend="none")
def bump(session: nox.Session) -> None:
    """Move VERSION, every package's version and every internal pin: ``nox -s bump -- 0.3.1``."""
    if len(session.posargs) != 1:
        session.error("usage: nox -s bump -- NEW_VERSION")
    session.run("python3", str(ROOT / "scripts" / "bump_version.py"), session.posargs[0])
