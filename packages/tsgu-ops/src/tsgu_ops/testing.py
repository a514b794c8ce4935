"""Hypothesis strategies and checks for sparse matrices (install ``tsgu-ops[testing]``).

Like ``hypothesis.extra.numpy``, this module gives property-based tests sparse inputs that cover the
cases that break sparse code: both layouts, int32/int64 indices, float32/float64 (and, on request,
complex64/complex128) values, batched and unbatched, ``nnz = 0``, empty rows and columns, duplicate
COO entries, triangular (strict, unit, non-unit) and symmetric positive definite matrices.  Every
such strategy draws a :class:`SparseCase`: the sparse tensor and its dense reference.

Malformed inputs, for tests that every public function rejects or survives them (stable names,
used by every package of the project):

* :func:`malformed_sparse_matrices` — :class:`MalformedCase` with out-of-range, negative or
  1-based indices, a CSR ``crow`` that decreases, does not start at 0 or end at nnz, or a ``meta``
  tensor (:data:`MALFORMATIONS`; :func:`corrupt_indices` does one corruption directly);
* :func:`nonfinite_sparse_matrices` — stored values that are NaN/Inf (to be propagated);
* :func:`empty_batch_matrices` — batched ``(0, n, m)`` tensors;
* :data:`UNSUPPORTED_VALUE_DTYPES` with :func:`with_values` — half-precision, integer and bool
  values on a valid pattern; complex values come from ``sparse_matrices(value_dtypes=COMPLEX_DTYPES)``.

Hot-path budgets: :func:`count_kernels` / :func:`counting` count the kernel calls and host
synchronisations of a callable on any device (what a GPU pays for), for tests that pin them.

Examples
--------
>>> from hypothesis import given, settings
>>> from tsgu_ops.testing import sparse_matrices
>>> @settings(max_examples=5)
... @given(sparse_matrices())
... def test_dense_roundtrip(case):
...     assert (case.sparse.to_dense() == case.dense).all()
>>> test_dense_roundtrip()
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

try:
    from hypothesis import HealthCheck, settings
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover
    raise ImportError("tsgu_ops.testing needs hypothesis: pip install 'tsgu-ops[testing]'") from exc

from ._corpus import RealMatrix as RealMatrix  # the real-matrix corpus (extra [corpus])
from ._corpus import real_matrices as real_matrices
from ._counting import KernelCount as KernelCount  # kernel calls and host syncs of a callable
from ._counting import count_kernels as count_kernels
from ._counting import counting as counting
from .pattern import quiet

LAYOUTS = (torch.sparse_coo, torch.sparse_csr)
INDEX_DTYPES = (torch.int32, torch.int64)
VALUE_DTYPES = (torch.float32, torch.float64)
#: Complex value dtypes supported by the products and solves (conjugate gradients); opt in with
#: ``sparse_matrices(value_dtypes=COMPLEX_DTYPES)``.
COMPLEX_DTYPES = (torch.complex64, torch.complex128)
STRUCTURES = ("general", "lower", "upper", "strict_lower", "strict_upper", "spd")

PROFILE_ENV = "TSGU_HYPOTHESIS_PROFILE"


def register_profiles() -> None:
    """Register the ``dev`` (fast), ``ci`` and ``fuzz`` (thousands of examples) profiles.

    The profile named by the environment variable ``TSGU_HYPOTHESIS_PROFILE`` (default ``dev``)
    is loaded.
    """
    common: dict[str, Any] = {
        "deadline": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    }
    settings.register_profile("dev", max_examples=15, **common)
    settings.register_profile("ci", max_examples=40, derandomize=True, print_blob=True, **common)
    settings.register_profile("fuzz", max_examples=3000, **common)
    settings.load_profile(os.environ.get(PROFILE_ENV, "dev"))


@dataclass(frozen=True)
class SparseCase:
    """A sparse tensor and its dense reference (duplicates of an uncoalesced COO summed)."""

    sparse: torch.Tensor
    dense: torch.Tensor
    structure: str = "general"

    @property
    def layout(self) -> torch.layout:
        return self.sparse.layout

    @property
    def batched(self) -> bool:
        return self.sparse.dim() == 3


def _allowed(n: int, m: int, structure: str) -> torch.Tensor:
    r = torch.arange(n)[:, None]
    c = torch.arange(m)[None, :]
    return {
        "general": torch.ones(n, m, dtype=torch.bool),
        "spd": torch.ones(n, m, dtype=torch.bool),
        "symmetric": torch.ones(n, m, dtype=torch.bool),
        "dominant": torch.ones(n, m, dtype=torch.bool),
        "lower": r >= c,
        "upper": r <= c,
        "strict_lower": r > c,
        "strict_upper": r < c,
    }[structure]


def build_case(
    seed: int,
    shape: Sequence[int],
    density: float,
    layout: torch.layout,
    index_dtype: torch.dtype,
    value_dtype: torch.dtype,
    structure: str = "general",
    duplicates: int = 0,
) -> SparseCase:
    """Deterministically build a :class:`SparseCase` (the engine behind the strategies).

    The same number of entries is stored in every batch item (a CSR rule).  A complex
    ``value_dtype`` gives values with random real and imaginary parts in ``[-1, 1)`` (``"spd"`` and
    ``"symmetric"`` are then Hermitian).  Triangular structures
    with a diagonal get a well-conditioned diagonal (``|d|`` in ``[1, 2]``) so that solves are stable;
    ``"spd"`` is symmetric and strictly diagonally dominant, ``"symmetric"`` symmetric indefinite
    (dominant diagonal of alternating sign) and ``"dominant"`` non-symmetric and strictly
    diagonally dominant (so every one of them is well conditioned and invertible).
    """
    g = torch.Generator().manual_seed(seed)
    b = shape[0] if len(shape) == 3 else 1
    n, m = shape[-2], shape[-1]
    allowed = _allowed(n, m, structure)
    diag_needed = structure in ("lower", "upper", "spd", "symmetric", "dominant")
    if diag_needed:
        allowed = allowed & ~torch.eye(n, m, dtype=torch.bool)
    cells = allowed.nonzero()
    k = round(density * cells.shape[0])
    if structure in ("spd", "symmetric"):
        k = k // 2
        cells = (torch.arange(n)[:, None] > torch.arange(m)[None, :]).nonzero()
        k = min(k, cells.shape[0])
    cplx = value_dtype.is_complex
    dense = torch.zeros(b, n, m, dtype=torch.complex128 if cplx else torch.float64)
    for item in range(b):  # test data only: tiny sizes
        pick = cells[torch.randperm(cells.shape[0], generator=g)[:k]]
        vals = torch.rand(k, generator=g, dtype=torch.float64) * 2 - 1
        vals = torch.where(vals == 0, 0.5, vals)
        if cplx:
            vals = vals + 1j * (torch.rand(k, generator=g, dtype=torch.float64) * 2 - 1)
        dense[item, pick[:, 0], pick[:, 1]] = vals.to(dense.dtype)
        if structure == "spd":  # Hermitian for complex values
            dense[item] = dense[item] + dense[item].T.conj()
            dense[item] += torch.diag(dense[item].abs().sum(1) + 1.0)
        elif structure == "symmetric":  # indefinite: diagonal of both signs, dominant
            dense[item] = dense[item] + dense[item].T.conj()
            sign = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0).double()
            dense[item] += torch.diag(sign * (dense[item].abs().sum(1) + 1.0))
        elif structure == "dominant":  # non-symmetric, strictly diagonally dominant by rows
            dense[item] += torch.diag(dense[item].abs().sum(1) + 1.0)
        elif diag_needed:
            sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
            dense[item] += torch.diag(sign * (1 + torch.rand(n, generator=g, dtype=torch.float64)))
    dense = dense.to(value_dtype)
    ref = dense if len(shape) == 3 else dense[0]
    if layout == torch.sparse_csr:
        if len(shape) == 3:
            parts = [ref[i].to_sparse_csr() for i in range(b)]
            crow = torch.stack([p.crow_indices() for p in parts]).to(index_dtype)
            col = torch.stack([p.col_indices() for p in parts]).to(index_dtype)
            vals = torch.stack([p.values() for p in parts])
            sp = quiet(lambda: torch.sparse_csr_tensor(crow, col, vals, tuple(shape)))
        else:
            p = ref.to_sparse_csr()
            sp = quiet(
                lambda: torch.sparse_csr_tensor(
                    p.crow_indices().to(index_dtype),
                    p.col_indices().to(index_dtype),
                    p.values(),
                    tuple(shape),
                )
            )
        return SparseCase(sp, ref, structure)
    coo = ref.to_sparse()
    idx, vals = coo.indices().to(index_dtype), coo.values()
    if duplicates and vals.numel():
        which = torch.randint(0, vals.numel(), (duplicates,), generator=g)
        part = (torch.rand(duplicates, generator=g, dtype=torch.float64) - 0.5).to(value_dtype)
        vals = vals.index_add(0, which, -part)
        idx = torch.cat([idx, idx[:, which]], 1)
        vals = torch.cat([vals, part])
        perm = torch.randperm(vals.numel(), generator=g)
        idx, vals = idx[:, perm], vals[perm]
        ref = torch.sparse_coo_tensor(idx, vals, tuple(shape)).to_dense()
    sp = torch.sparse_coo_tensor(idx, vals, tuple(shape), is_coalesced=not duplicates)
    return SparseCase(sp, ref, structure)


@st.composite
def sparse_matrices(
    draw: Any,
    *,
    layouts: Sequence[torch.layout] = LAYOUTS,
    index_dtypes: Sequence[torch.dtype] = INDEX_DTYPES,
    value_dtypes: Sequence[torch.dtype] = VALUE_DTYPES,
    batch: bool | None = None,
    max_batch: int = 3,
    min_size: int = 1,
    max_size: int = 6,
    square: bool = False,
    structures: Sequence[str] = ("general",),
    allow_duplicates: bool = True,
    allow_empty: bool = True,
) -> SparseCase:
    """Strategy for :class:`SparseCase` values.

    Parameters
    ----------
    layouts, index_dtypes, value_dtypes : sequences
        Choices drawn from.
    batch : bool or None
        ``True`` only batched ``(b, n, m)``, ``False`` only 2-D, ``None`` either.
    max_batch, min_size, max_size : int
        Size bounds.
    square : bool
        Draw ``n == m`` (forced by every structure other than ``"general"``).
    structures : sequence of str
        Any of ``"general"``, ``"lower"``, ``"upper"``, ``"strict_lower"``, ``"strict_upper"``,
        ``"spd"``.
    allow_duplicates : bool
        Let uncoalesced COO tensors with duplicate coordinates be drawn.
    allow_empty : bool
        Let ``nnz = 0`` be drawn.
    """
    layout = draw(st.sampled_from(list(layouts)))
    index_dtype = draw(st.sampled_from(list(index_dtypes)))
    value_dtype = draw(st.sampled_from(list(value_dtypes)))
    structure = draw(st.sampled_from(list(structures)))
    batched = draw(st.booleans()) if batch is None else batch
    n = draw(st.integers(min_size, max_size))
    m = n if (square or structure != "general") else draw(st.integers(min_size, max_size))
    shape = (draw(st.integers(1, max_batch)), n, m) if batched else (n, m)
    density = draw(st.sampled_from([0.0, 0.2, 0.5, 1.0] if allow_empty else [0.2, 0.5, 1.0]))
    dups = 0
    if layout == torch.sparse_coo and allow_duplicates and density > 0:
        dups = draw(st.sampled_from([0, 0, 2]))
    seed = draw(st.integers(0, 2**31 - 1))
    return build_case(seed, shape, density, layout, index_dtype, value_dtype, structure, dups)


#: Kinds of malformed index structure drawn by :func:`malformed_sparse_matrices`.  Every public
#: function that takes a sparse tensor must raise ``ValueError`` naming the argument for each.
MALFORMATIONS = (
    "index_out_of_range",  # COO row/column (or batch) index >= its size; CSR column >= m
    "negative_index",  # an index of -1
    "one_based",  # COO indices + 1 (Fortran/Matlab style); CSR crow and col + 1
    "crow_decreasing",  # CSR only: crow not non-decreasing
    "crow_end",  # CSR only: crow[-1] != nnz
    "crow_start",  # CSR only: crow[0] != 0
    "meta",  # a tensor on the meta device (no data)
)
#: Value dtypes that the products and solves reject with a ``TypeError`` naming the supported ones.
UNSUPPORTED_VALUE_DTYPES = (torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.bool)


@dataclass(frozen=True)
class MalformedCase:
    """A sparse tensor whose index structure is broken in the way named by ``kind``."""

    sparse: torch.Tensor
    kind: str


def _coo(idx: torch.Tensor, values: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    return torch.sparse_coo_tensor(idx, values, tuple(shape), check_invariants=False)


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    return quiet(lambda: torch.sparse_csr_tensor(crow, col, values, tuple(shape), check_invariants=False))


def corrupt_indices(A: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """A copy of the valid COO/CSR tensor ``A`` (at least one stored entry) malformed by ``kind``.

    ``kind`` is one of :data:`MALFORMATIONS`; the ``crow_*`` kinds need a CSR ``A``.  The result is
    built with ``check_invariants=False`` (PyTorch would refuse it otherwise); its values are
    ``A``'s.  Used by :func:`malformed_sparse_matrices`; exposed for targeted tests.
    """
    g = torch.Generator().manual_seed(seed)
    if kind == "meta":
        return A.detach().to("meta")
    shape = tuple(A.shape)
    if A.layout == torch.sparse_coo:
        idx, vals = A._indices().clone(), A._values().detach().clone()
        k = int(torch.randint(0, idx.shape[1], (1,), generator=g))
        d = int(torch.randint(0, idx.shape[0], (1,), generator=g))
        if kind == "index_out_of_range":
            idx[d, k] = shape[d]
        elif kind == "negative_index":
            idx[d, k] = -1
        elif kind == "one_based":
            idx[:, k] = torch.tensor(shape[: idx.shape[0]]) - 1  # some entry reaches the last cell
            idx = idx + 1
        else:
            raise ValueError(f"kind {kind!r} does not apply to a COO tensor")
        return _coo(idx, vals, shape)
    crow, col = A.crow_indices().clone(), A.col_indices().clone()
    vals = A.values().detach().clone()
    c0, k0 = (crow, col) if A.dim() == 2 else (crow[0], col[0])
    if kind == "index_out_of_range":
        k0[int(torch.randint(0, k0.numel(), (1,), generator=g))] = shape[-1]
    elif kind == "negative_index":
        k0[int(torch.randint(0, k0.numel(), (1,), generator=g))] = -1
    elif kind == "one_based":
        crow, col = crow + 1, col + 1
    elif kind == "crow_decreasing":
        i = int(torch.argmax((c0[1:] - c0[:-1]).to(torch.int64)))  # a row holding entries
        c0[i + 1] = c0[i] - 1 if int(c0[i]) > 0 else -1
    elif kind == "crow_end":
        c0[-1] = c0[-1] + 1
    elif kind == "crow_start":
        c0[0] = 1
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return _csr(crow, col, vals, shape)


@st.composite
def malformed_sparse_matrices(
    draw: Any,
    *,
    kinds: Sequence[str] = MALFORMATIONS,
    layouts: Sequence[torch.layout] = LAYOUTS,
    index_dtypes: Sequence[torch.dtype] = INDEX_DTYPES,
    value_dtypes: Sequence[torch.dtype] = (torch.float64,),
    batch: bool | None = None,
    min_size: int = 2,
    max_size: int = 5,
    structure: str = "general",
) -> MalformedCase:
    """Strategy for :class:`MalformedCase`: a square matrix with at least one entry, broken by one of
    ``kinds`` (:data:`MALFORMATIONS`; CSR-only kinds are drawn only with CSR).

    ``structure`` is that of the valid matrix before the corruption (e.g. ``"lower"`` for solves).
    """
    layout = draw(st.sampled_from(list(layouts)))
    usable = [k for k in kinds if layout == torch.sparse_csr or not k.startswith("crow")]
    kind = draw(st.sampled_from(usable))
    batched = draw(st.booleans()) if batch is None else batch
    n = draw(st.integers(min_size, max_size))
    shape = (draw(st.integers(1, 3)), n, n) if batched else (n, n)
    case = build_case(
        draw(st.integers(0, 2**31 - 1)),
        shape,
        1.0 if structure.startswith("strict") else 0.6,
        layout,
        draw(st.sampled_from(list(index_dtypes))),
        draw(st.sampled_from(list(value_dtypes))),
        structure,
    )
    return MalformedCase(corrupt_indices(case.sparse, kind, draw(st.integers(0, 2**16))), kind)


def with_values(A: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A sparse tensor with ``A``'s layout, shape and indices holding ``values`` (storage order).

    Not differentiable; for building test inputs of other dtypes or with non-finite values.
    """
    if A.layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(
            A._indices(), values, tuple(A.shape), is_coalesced=A.is_coalesced(), check_invariants=False
        )
    return _csr(A.crow_indices(), A.col_indices(), values.reshape(A.col_indices().shape), A.shape)


@st.composite
def nonfinite_sparse_matrices(draw: Any, **kwargs: Any) -> SparseCase:
    """Strategy: a :class:`SparseCase` (keyword arguments as :func:`sparse_matrices`, at least one
    stored entry) with some stored values replaced by ``nan``, ``inf`` or ``-inf``; the dense
    reference holds the same values.  Operations must propagate them (NaN/Inf in the result where
    the dense computation has them), never crash or return a finite-looking answer."""
    kwargs.setdefault("allow_empty", False)
    kwargs.setdefault("allow_duplicates", False)
    case = draw(sparse_matrices(**kwargs))
    A = case.sparse
    vals = (A._values() if A.layout == torch.sparse_coo else A.values().reshape(-1)).detach().clone()
    if vals.numel() == 0:
        return case
    count = draw(st.integers(1, max(1, vals.numel() // 2)))
    pos = draw(st.lists(st.integers(0, vals.numel() - 1), min_size=count, max_size=count, unique=True))
    bad = draw(
        st.lists(st.sampled_from([float("nan"), float("inf"), float("-inf")]), min_size=count, max_size=count)
    )
    vals[torch.tensor(pos)] = torch.tensor(bad, dtype=vals.real.dtype).to(vals.dtype)
    S = with_values(A, vals)
    return SparseCase(S, S.to_dense(), case.structure)


@st.composite
def empty_batch_matrices(
    draw: Any,
    *,
    layouts: Sequence[torch.layout] = LAYOUTS,
    index_dtypes: Sequence[torch.dtype] = INDEX_DTYPES,
    value_dtypes: Sequence[torch.dtype] = (torch.float64,),
    square: bool = True,
) -> SparseCase:
    """Strategy: a batched :class:`SparseCase` with an empty batch, shape ``(0, n, m)``."""
    layout = draw(st.sampled_from(list(layouts)))
    index_dtype = draw(st.sampled_from(list(index_dtypes)))
    dtype = draw(st.sampled_from(list(value_dtypes)))
    n = draw(st.integers(1, 4))
    m = n if square else draw(st.integers(1, 4))
    dense = torch.zeros(0, n, m, dtype=dtype)
    if layout == torch.sparse_coo:
        sp = torch.sparse_coo_tensor(
            torch.zeros(3, 0, dtype=torch.int64), torch.zeros(0, dtype=dtype), (0, n, m)
        )
    else:
        sp = _csr(
            torch.zeros(0, n + 1, dtype=index_dtype),
            torch.zeros(0, 0, dtype=index_dtype),
            torch.zeros(0, 0, dtype=dtype),
            (0, n, m),
        )
    return SparseCase(sp, dense)


@st.composite
def dense_like(draw: Any, case_or_shape: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Strategy for a dense float tensor of a given shape (values in [-1, 1))."""
    shape = tuple(case_or_shape)
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).to(dtype or torch.float64)


def stored_entries(A: torch.Tensor) -> torch.Tensor:
    """``(ndim, nnz)`` int64 coordinates of the stored entries of COO/CSR ``A`` (storage order)."""
    if A.layout == torch.sparse_coo:
        return A._indices()
    if A.dim() == 2:
        crow, col = A.crow_indices(), A.col_indices()
        rows = torch.repeat_interleave(torch.arange(A.shape[0]), (crow[1:] - crow[:-1]).long())
        return torch.stack([rows, col.long()])
    out = []
    for i in range(A.shape[0]):
        crow, col = A.crow_indices()[i], A.col_indices()[i]
        rows = torch.repeat_interleave(torch.arange(A.shape[1]), (crow[1:] - crow[:-1]).long())
        out.append(torch.stack([torch.full_like(rows, i), rows, col.long()]))
    return torch.cat(out, 1)


def assert_sparse_grad_matches(
    A: torch.Tensor,
    grad: torch.Tensor | None,
    dense_grad: torch.Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    """Assert that ``grad`` is a sparse gradient of ``A`` equal to ``dense_grad`` at the stored entries.

    Checks: same layout, shape and indices as ``A`` (and, for CSR, the same index dtype), and each
    stored entry's value equal to the dense reference gradient at that coordinate.  A coordinate
    that an uncoalesced COO ``A`` stores ``m`` times must hold ``1/m`` of it in each entry, so that
    the gradient read as PyTorch reads a sparse tensor (duplicates summed) is ``dense_grad``.
    """
    assert grad is not None, "no gradient was computed"
    assert grad.layout == A.layout, f"gradient layout {grad.layout} != input layout {A.layout}"
    assert grad.shape == A.shape, f"gradient shape {tuple(grad.shape)} != {tuple(A.shape)}"
    if A.layout == torch.sparse_csr:
        assert grad.crow_indices().dtype == A.crow_indices().dtype, "index dtype changed"
        assert torch.equal(grad.crow_indices(), A.crow_indices()), "crow_indices changed"
        assert torch.equal(grad.col_indices(), A.col_indices()), "col_indices changed"
        values = grad.values().reshape(-1)
    else:
        assert torch.equal(grad._indices(), A._indices()), "COO indices changed"
        values = grad._values()
    coords = stored_entries(A)
    expected = dense_grad[tuple(coords)]
    if A.layout == torch.sparse_coo and coords.shape[1]:
        key = torch.zeros_like(coords[0])
        for d, size in enumerate(A.shape[: coords.shape[0]]):
            key = key * size + coords[d]
        _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
        expected = expected / counts[inverse].to(expected.real.dtype)
    torch.testing.assert_close(values, expected.to(values.dtype), rtol=rtol, atol=atol)


def clone_input(x: Any) -> Any:
    """A deep copy of a tensor (sparse included) to check later that a call left it unchanged."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    return x


def assert_unchanged(before: Any, after: Any) -> None:
    """Assert that a tensor equals the copy taken by :func:`clone_input` (values and indices)."""
    if not isinstance(before, torch.Tensor):
        return
    assert before.layout == after.layout and before.shape == after.shape and before.dtype == after.dtype
    if before.layout == torch.sparse_coo:
        assert torch.equal(before._indices(), after._indices())
        assert torch.equal(before._values(), after._values().detach())
    elif before.layout == torch.sparse_csr:
        assert torch.equal(before.crow_indices(), after.crow_indices())
        assert torch.equal(before.col_indices(), after.col_indices())
        assert torch.equal(before.values(), after.values().detach())
    else:
        assert torch.equal(before, after.detach())


def grid_operator(
    shape: Sequence[int],
    convection: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Finite-difference Laplacian on a grid of ``shape`` (Dirichlet), with upwind convection.

    ``(2 + c)·d`` on the diagonal (``d`` axes), ``−1`` towards the upper neighbour and ``−1 − c``
    towards the lower one along every axis (``c = convection``, first-order upwind): SPD for
    ``c = 0`` (the 5-/7-point Laplacian), non-symmetric for ``c > 0`` (a convection–diffusion
    operator); weakly diagonally dominant by rows and an M-matrix, so it is invertible.
    Returns a coalesced COO tensor ``(N, N)`` with ``N = prod(shape)``.

    Examples
    --------
    >>> grid_operator((3,)).to_dense()
    tensor([[ 2., -1.,  0.],
            [-1.,  2., -1.],
            [ 0., -1.,  2.]], dtype=torch.float64)
    """
    shape = tuple(int(s) for s in shape)
    n = 1
    for s in shape:
        n *= s
    idx = torch.arange(n).reshape(shape)
    rows, cols = [idx.reshape(-1)], [idx.reshape(-1)]
    vals = [torch.full((n,), (2.0 + convection) * len(shape), dtype=dtype)]
    for d in range(len(shape)):
        if shape[d] < 2:
            continue
        a = idx.narrow(d, 0, shape[d] - 1).reshape(-1)
        b = idx.narrow(d, 1, shape[d] - 1).reshape(-1)
        rows += [a, b]
        cols += [b, a]
        vals += [
            torch.full((a.numel(),), -1.0, dtype=dtype),
            torch.full((a.numel(),), -1.0 - convection, dtype=dtype),
        ]
    i = torch.stack([torch.cat(rows), torch.cat(cols)])
    return torch.sparse_coo_tensor(i, torch.cat(vals), (n, n)).coalesce()


def p1_element_entries(
    refine: int = 2, *, shift: float = 0.5, lower: bool = False, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The finite-element assembly of a P1 stiffness matrix, entry by entry, *not* coalesced.

    The mesh is scikit-fem's unit-square triangulation refined ``refine`` times (a mesh nobody on
    this project wrote; extra ``tsgu-ops[corpus]``); the element matrices ``K_e = |T|·∇λ ∇λᵀ`` are
    computed from the vertex coordinates.  Returns ``(idx, local, n)``: the ``(2, 9·ne + n)``
    coordinates of every element-matrix entry followed by a diagonal ``shift`` per vertex (so the
    assembled matrix is SPD), their unit-conductivity values, and the number of vertices.  Every
    interior coordinate appears several times: ``torch.sparse_coo_tensor(idx, w)`` with per-element
    weights ``w`` is the textbook uncoalesced assembly.  ``lower`` keeps the entries with
    ``row ≥ col`` (a lower-triangular assembly).

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops.testing import p1_element_entries
    >>> idx, local, n = p1_element_entries(1)
    >>> A = torch.sparse_coo_tensor(idx, local, (n, n))
    >>> A.is_coalesced(), idx.shape[1] > A.coalesce()._nnz()
    (False, True)
    >>> bool(torch.linalg.eigvalsh(A.to_dense()).min() > 0)
    True
    """
    try:
        import skfem
    except ImportError as exc:  # pragma: no cover
        raise ImportError("p1_element_entries needs scikit-fem: pip install 'tsgu-ops[corpus]'") from exc
    mesh = skfem.MeshTri().refined(int(refine))
    p = torch.as_tensor(mesh.p.T, dtype=torch.float64)
    t = torch.as_tensor(mesh.t.T, dtype=torch.int64)
    x = p[t]  # (ne, 3, 2)
    d1, d2 = x[:, 1] - x[:, 0], x[:, 2] - x[:, 0]
    det = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    # gradients of the barycentric coordinates λ1, λ2 (rows of J⁻ᵀ) and λ0 = 1 − λ1 − λ2
    grad12 = (
        torch.stack([torch.stack([d2[:, 1], -d2[:, 0]], -1), torch.stack([-d1[:, 1], d1[:, 0]], -1)], 1)
        / det[:, None, None]
    )
    grads = torch.cat([-(grad12[:, 0] + grad12[:, 1])[:, None], grad12], 1)  # (ne, 3, 2)
    K = (det.abs() / 2)[:, None, None] * (grads @ grads.mT)
    rows = t[:, :, None].expand(-1, 3, 3).reshape(-1)
    cols = t[:, None, :].expand(-1, 3, 3).reshape(-1)
    n = int(p.shape[0])
    diag = torch.arange(n)
    idx = torch.stack([torch.cat([rows, diag]), torch.cat([cols, diag])])
    local = torch.cat([K.reshape(-1), torch.full((n,), float(shift), dtype=torch.float64)])
    if lower:
        keep = idx[0] >= idx[1]
        idx, local = idx[:, keep], local[keep]
    return idx, local.to(dtype), n


def diffusion_operator(
    shape: tuple[int, ...],
    sigma: float = 3.0,
    block: int = 5,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """``−∇·(κ∇u)`` on a cell grid with Dirichlet faces, ``κ`` log-normal (``exp(σ ξ)``), constant
    on blocks of ``block`` cells per axis; face coefficients are harmonic means.  SPD; with
    ``σ = 3`` neighbouring blocks differ by up to ~1e4 (the high-contrast problem where
    preconditioning, and algebraic multigrid above all, is the point).  Coalesced COO ``(N, N)``.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops.testing import diffusion_operator
    >>> A = diffusion_operator((4, 4), sigma=1.0, block=2).to_dense()
    >>> bool(torch.allclose(A, A.T)), bool(torch.linalg.eigvalsh(A).min() > 0)
    (True, True)
    """
    g = torch.Generator().manual_seed(seed)
    nb = [-(-s // block) for s in shape]
    kb = torch.exp(sigma * torch.randn(*nb, generator=g, dtype=dtype))
    kappa = kb[torch.meshgrid(*[torch.arange(s) // block for s in shape], indexing="ij")]
    n = kappa.numel()
    ids = torch.arange(n).reshape(shape)
    diag = torch.zeros(n, dtype=dtype)
    rows, cols, vals = [], [], []
    for d in range(len(shape)):
        a, b = ids.narrow(d, 0, shape[d] - 1).reshape(-1), ids.narrow(d, 1, shape[d] - 1).reshape(-1)
        ka = kappa.narrow(d, 0, shape[d] - 1).reshape(-1)
        kc = kappa.narrow(d, 1, shape[d] - 1).reshape(-1)
        w = 2 * ka * kc / (ka + kc)
        rows += [a, b]
        cols += [b, a]
        vals += [-w, -w]
        diag.index_add_(0, a, w).index_add_(0, b, w)
        for end in (0, shape[d] - 1):
            diag.index_add_(0, ids.select(d, end).reshape(-1), 2 * kappa.select(d, end).reshape(-1))
    rows.append(ids.reshape(-1))
    cols.append(ids.reshape(-1))
    vals.append(diag)
    i = torch.stack([torch.cat(rows), torch.cat(cols)])
    return torch.sparse_coo_tensor(i, torch.cat(vals), (n, n)).coalesce()
