"""The list of case modules, and the suite they make.

To add a case module, write ``benchmarks/cases_<topic>.py`` with a function ``f(full: bool) ->
list[Case]`` (``full=False``: the quick default run, about ten seconds a case; ``full=True``: the run
of record) and add ONE line to :data:`CASE_MODULES` below: ``("benchmarks.cases_<topic>", "f")``.
A case module imports its types from :mod:`benchmarks._core` (or ``benchmarks.cases``, which
re-exports them) and never another case module, so there is no import circle.  Give each
:class:`~benchmarks._core.Case` a ``family`` (one of ``_core.FAMILIES`` or a new name: a new name
gets its own figure) and mark the alternative a user would pick with ``baseline=True``.
"""

from __future__ import annotations

import importlib
import os

from ._core import Case

# (module, function returning its cases for full=False / full=True), in the order of the report
CASE_MODULES: list[tuple[str, str]] = [
    ("benchmarks.cases", "product_cases"),  # products, triangular solves, indexed
    ("benchmarks.cases_more", "more_cases"),  # Krylov, bridges, distributions, encoders
    ("benchmarks.cases_training", "training_cases"),  # SparseParameter training step
    ("benchmarks.cases_factor", "factor_cases"),  # SuperLU orderings on real matrices
    ("benchmarks.cases_cholesky", "cholesky_cases"),  # exact logdet, selected inverse
    ("benchmarks.cases_precond", "precond_cases"),  # preconditioners and AMG beside SciPy, PyAMG, torch-sla
    ("benchmarks.cases_gmrf", "gmrf_cases"),  # GMRF log_prob + backward beside dense MultivariateNormal
]

# The cases that ``--matrix FILE.mtx`` runs on the file instead of their built-in problem.
MATRIX_CASES = ("sparse_mm_csr", "sparse_mm_coo", "triangular_solve", "krylov_poisson", "krylov_convdiff")


def all_cases(full: bool = False, matrix: str | None = None) -> list[Case]:
    """Every case of every module in :data:`CASE_MODULES` (``matrix``: only :data:`MATRIX_CASES`,
    on that Matrix Market file).  Raises ``ValueError`` if two cases share a name."""
    cases: list[Case] = []
    for module, function in CASE_MODULES:
        cases += getattr(importlib.import_module(module), function)(full)
    seen: set[str] = set()
    for c in cases:
        if c.name in seen:
            raise ValueError(f"two benchmark cases are named {c.name!r}: case names must be unique")
        seen.add(c.name)
    if matrix:
        name = os.path.basename(matrix)
        cases = [c for c in cases if c.name in MATRIX_CASES]
        for c in cases:
            c.size = f"{name} ({c.size.split(',')[-1].strip()})"
    return cases
