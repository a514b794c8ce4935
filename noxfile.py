"""Every repeatable job of the tsgu monorepo.

Default sessions (``nox`` with no arguments; what CI runs): ``lint``, ``tests``, ``isolated``,
``integration``, ``docs``.  On request: ``torch_matrix`` (torch 2.5.1 / 2.9.1 / 2.13.0 / 2.14.1; all but
2.13.0 are multi-GB CUDA builds), ``fuzz``, ``bench``, ``bump -- NEW_VERSION``.

Virtual environments are made with uv when it is installed (much faster than pip).  uv does not read
pip's configuration, so a ``find-links`` folder configured for pip (where a CPU build of torch may
lie) is handed to uv through ``UV_FIND_LINKS``; torch is always pinned.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import nox

ROOT = Path(__file__).parent
VERSION = (ROOT / "VERSION").read_text().strip()
TORCH = os.environ.get("TSGU_TORCH", "2.13.0")
TORCH_MATRIX = ["2.5.1", "2.9.1", "2.13.0", "2.14.1"]
TEST_TOOLS = ["pytest>=8", "hypothesis>=6.100"]

# package -> (import name, extras needed by its tests)
PACKAGES = {
    "tsgu-ops": ("tsgu_ops", "[testing,corpus]"),
    "tsgu-indexed": ("tsgu_indexed", ""),
    "tsgu-krylov": ("tsgu_krylov", "[test]"),
    "tsgu-bridges": ("tsgu_bridges", "[jax,test]"),
    "tsgu-distributions": ("tsgu_distributions", "[test]"),
    "tsgu-encoders": ("tsgu_encoders", "[test]"),
    "torchsparsegradutils": ("torchsparsegradutils", ""),
}
# internal dependencies, for installing one package from local paths without an index
INTERNAL = {
    "tsgu-ops": [],
    "tsgu-indexed": [],
    "tsgu-krylov": ["tsgu-ops"],
    "tsgu-bridges": ["tsgu-ops"],
    "tsgu-distributions": ["tsgu-ops"],
    "tsgu-encoders": ["tsgu-ops"],
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
    session.run("pytest", "packages", "tests-integration/test_versions.py", *session.posargs, env=env)


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
    session.install(*TEST_TOOLS, *local, _local(pkg, extras))
    tests_dir = ROOT / "packages" / pkg / "tests"
    env = {"TSGU_HYPOTHESIS_PROFILE": os.environ.get("TSGU_HYPOTHESIS_PROFILE", "dev")}
    _pytest_outside_tree(session, tests_dir, env)
    session.run("python", "-c", f"import {module}; assert {module}.__version__ == '{VERSION}'")


@nox.session
@nox.parametrize("pkg", list(PACKAGES))
def isolated(session: nox.Session, pkg: str) -> None:
    """Each package alone: an import it does not declare fails here."""
    _isolated_run(session, pkg, TORCH)


@nox.session
@nox.parametrize("torch_version", TORCH_MATRIX)
def torch_matrix(session: nox.Session, torch_version: str) -> None:
    """tsgu-ops and tsgu-indexed against one torch release (all but 2.13.0 are CUDA builds)."""
    for pkg in ("tsgu-ops", "tsgu-indexed"):
        _isolated_run(session, pkg, torch_version)


@nox.session(reuse_venv=False)  # the wheels keep one version number: never reuse stale installs
def integration(session: nox.Session) -> None:
    """Build wheel + sdist of all seven (hatchling); install from those files only; run tests-integration."""
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
    """The benchmark suite on its built-in problems (``nox -s bench -- --full`` for larger sizes)."""
    _install_torch(session)
    session.install("-r", "requirements-dev.txt")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(venv_backend="none")
def bump(session: nox.Session) -> None:
    """Move VERSION, every package's version and every internal pin: ``nox -s bump -- 0.3.1``."""
    if len(session.posargs) != 1:
        session.error("usage: nox -s bump -- NEW_VERSION")
    session.run("python3", str(ROOT / "scripts" / "bump_version.py"), session.posargs[0])
