"""The benchmark types: a :class:`Case` holds :class:`Variant` s, each of which builds a :class:`Run`.

This module imports no case module, so every ``cases*.py`` can import it (and nothing imports a
case module except :mod:`benchmarks.suite`, which lists them).  ``from benchmarks.cases import
Case, Variant, Run`` keeps working: :mod:`benchmarks.cases` re-exports these names.

A *variant* is a function ``setup(ctx) -> Run`` building its inputs and returning the forward and
backward closures; it runs in a fresh subprocess (see :mod:`benchmarks.worker`) so that its peak
memory can be read from the operating system.  ``ctx`` holds ``device``, ``matrix`` (a Matrix Market
path or ``None``) and ``dense_limit`` (bytes a dense alternative may use; raise ``MemoryError`` above
it, and the row is recorded as skipped).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .problems import laplacian_3d, load_mtx

# The figure families, in the order the report draws them (a case module may declare others: they
# follow these, in the order they are first met).
FAMILIES = (
    "products",
    "triangular solves",
    "Krylov vs peers",
    "direct solves",
    "distributions",
    "encoders",
    "indexed",
    "training step",
)

# The libraries a variant can belong to; each has its own colour in the figures ("other": grey).
LIBRARIES = ("tsgu", "PyTorch", "PyTorch dense", "SciPy", "torch-sla", "other")


@dataclass
class Run:
    """What a variant's ``setup`` returns: the forward call, the backward of its output (``None``:
    forward only) and facts about the problem (``nnz``, ``rows``, ``note``, ``residual``, ...)."""

    forward: Callable[[], Any]
    backward: Callable[[Any], None] | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Variant:
    """One implementation in a case.

    ``baseline``: the alternative a user would pick instead (ratios are taken against it; one per
    case).  ``library``: "tsgu", "PyTorch", "PyTorch dense", "SciPy", "torch-sla" or "other"; left
    empty it is read from the name (see :func:`library_of`).  ``alone``: in an interleaved case, run
    in a process of its own, one round (a slow one).
    """

    name: str
    setup: Callable[[dict[str, Any]], Run]
    baseline: bool = False
    note: str = ""
    alone: bool = False
    library: str = ""

    def __post_init__(self) -> None:
        if not self.library:
            self.library = library_of(self.name)
        if self.library not in LIBRARIES:
            raise ValueError(
                f"Variant {self.name!r}: library must be one of {LIBRARIES}, got {self.library!r}"
            )


@dataclass
class Case:
    """A problem and the variants measured on it.

    ``name`` is unique (the key of ``--only``); ``size`` is shown in the tables and figure titles;
    ``family`` picks the figure (one of :data:`FAMILIES` or a new one; empty: read from the name and
    op, see :func:`family_of`).  ``rounds``: rounds of fresh processes, the variants in turns
    (forward order, then reversed, ...); the figures are medians over every round's timed calls.
    ``interleave``: the variants share one process per round and alternate call by call, so that a
    slow spell of a shared host falls on every library of the case.  ``expected_s``: the expected
    wall time of the whole case (every round and variant), shown by ``--list`` and used by the
    progress bar until a run has measured it (see ``benchmarks/durations.json``).
    """

    name: str
    op: str
    size: str
    variants: list[Variant]
    params: dict[str, Any] = field(default_factory=dict)
    rounds: int = 1
    interleave: bool = False
    family: str = ""
    expected_s: float | None = None

    def __post_init__(self) -> None:
        if not self.family:
            self.family = family_of(self.name, self.op)


def library_of(variant_name: str) -> str:
    """The library of a variant, read from its name when a case does not say.

    Examples
    --------
    >>> [library_of(n) for n in ("tsgu cg", "torch.sparse.mm", "torch.bmm (dense)", "scipy cg",
    ...                          "torch-sla pytorch cg", "python loop", "cholmod")]
    ['tsgu', 'PyTorch', 'PyTorch dense', 'SciPy', 'torch-sla', 'PyTorch', 'other']
    """
    n = variant_name.lower()
    if n.startswith("tsgu"):
        return "tsgu"
    if n.startswith("torch-sla"):
        return "torch-sla"
    if n.startswith("scipy"):
        return "SciPy"
    if "dense" in n and ("torch" in n or n.startswith("dense")):
        return "PyTorch dense"
    if n.startswith(("torch", "loop of torch", "python loop")):
        return "PyTorch"
    return "other"


def family_of(case_name: str, op: str = "") -> str:
    """The figure family of a case that does not declare one, read from its name and op.

    Examples
    --------
    >>> family_of("sparse_mm_csr"), family_of("cholesky_logdet"), family_of("amg_setup", "precond")
    ('products', 'direct solves', 'Krylov vs peers')
    """
    text = f"{case_name} {op}".lower()
    rules = [
        (r"triangular", "triangular solves"),
        (r"sparse_mm|matmul", "products"),
        (r"gather_mm|segment_mm", "indexed"),
        (r"cholesky|logdet|superlu|direct|splu|lu_", "direct solves"),
        (r"krylov|precond|amg|generic_solve|\bcg\b", "Krylov vs peers"),
        (r"smvn|distribution|normal", "distributions"),
        (r"encoder", "encoders"),
        (r"training|sparse_parameter", "training step"),
    ]
    for pattern, family in rules:
        if re.search(pattern, text):
            return family
    return "other"


# ----------------------------------------------------------------------------------------------
# helpers shared by the case modules
def backward_sum(out: Any, *leaves: torch.Tensor) -> None:
    """The backward of ``out.sum()``, the leaves' gradients cleared first."""
    for t in leaves:
        t.grad = None
    out.backward(torch.ones_like(out))


_backward_sum = backward_sum  # the name the case modules have always used


def matrix_for(ctx: dict[str, Any], k: int) -> torch.Tensor:
    """The ``--matrix`` file if given; else the ``k³`` 3-D Laplacian, or for ``k < 0`` a random
    unstructured matrix with the nnz of the ``(-k)³`` Laplacian (float32 COO)."""
    if ctx.get("matrix"):
        return load_mtx(ctx["matrix"], torch.float32)
    if k < 0:
        from tsgu_ops import rand_sparse

        n = -(k**3)
        g = torch.Generator().manual_seed(0)
        return rand_sparse((n, n), 7 * n, torch.sparse_coo, generator=g)
    return laplacian_3d(k)


def as_layout(A: torch.Tensor, layout: str) -> torch.Tensor:
    """``A`` (COO) in ``layout`` ("csr" or "coo")."""
    return A.to_sparse_csr() if layout == "csr" else A


# ------------------------------------------------------------------------------------------------
# Helpers of the solver cases at equal achieved residual (shared by cases_more and cases_precond)

#: The true relative residual every solver of a peer case must reach, forward and backward.
PEER_TARGET = 1e-10


def _col_res(A: torch.Tensor, X: torch.Tensor, B: torch.Tensor, transpose: bool = False) -> float:
    """Largest per-column true relative residual ``‖B − op(A) X‖ / ‖B‖``."""
    op = A.detach().to_sparse_coo().t().coalesce() if transpose else A.detach()
    X2, B2 = X.detach().reshape(B.shape[0], -1), B.detach().reshape(B.shape[0], -1)
    R = B2 - op @ X2
    return float((torch.linalg.vector_norm(R, dim=0) / torch.linalg.vector_norm(B2, dim=0)).max())


def _calibrate(solve_at: Callable[[float], Any], residual: Callable[[Any], float]) -> tuple[float, float]:
    """The largest ``rtol`` (target, target/2, …) whose solve reaches the target true residual.

    Stops early when halving ``rtol`` no longer lowers the residual by a tenth (a solver that
    stalls, e.g. at its iteration limit: ten more solves would not reach the target, and each of
    them may take minutes); the residual it reached stands in the variant's note.
    """
    rtol = PEER_TARGET
    res = float("inf")
    for _ in range(10):
        previous, res = res, residual(solve_at(rtol))
        if res <= PEER_TARGET or res > 0.9 * previous:
            break
        rtol /= 2
    return rtol, res


def _peer_grad(B: torch.Tensor) -> torch.Tensor:
    """The upstream gradient of the peer cases' backward: random like ``B`` (another seed), so the
    backward's transpose solve is as hard as the forward's (with ``ones`` it is a smoother,
    different problem, and the backward/forward ratio would measure the right-hand side)."""
    return torch.randn(B.shape, dtype=B.dtype, generator=torch.Generator().manual_seed(1)).to(B.device)


def _backward_with(out: torch.Tensor, G: torch.Tensor, leaf: torch.Tensor) -> None:
    leaf.grad = None
    out.backward(G)


def _peer_note(rtol: float, res: float, bres: float | None, extra: str = "") -> str:
    note = f"rtol {rtol:.1e}: true residual {res:.1e}"
    if bres is not None:
        note += f", backward {bres:.1e}"
    return note + extra
