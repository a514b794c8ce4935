"""Property: every public function of tsgu-ops rejects malformed input with a ValueError/TypeError.

Hypothesis draws a valid call (layout × index dtype × value dtype × batch) and then one corruption of
one argument (a non-tensor, the wrong layout, rank, dtype, device-independent size, or a NaN-free
but wrongly shaped companion).  The call must raise ``ValueError`` or ``TypeError`` — never an
``IndexError``, a crash deep in torch, or a silently wrong result — and must leave its inputs
unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tsgu_ops
import tsgu_ops.testing
from tsgu_ops.testing import (
    UNSUPPORTED_VALUE_DTYPES,
    assert_unchanged,
    clone_input,
    corrupt_indices,
    empty_batch_matrices,
    malformed_sparse_matrices,
    nonfinite_sparse_matrices,
    sparse_matrices,
    with_values,
)

OK_ERRORS = (ValueError, TypeError)


def _not_a_tensor(x: torch.Tensor) -> Any:
    return x.tolist() if x.layout == torch.strided else "a sparse matrix"


def _densify(x: torch.Tensor) -> torch.Tensor:
    return x.to_dense() if x.layout != torch.strided else x


def _to_sparse(x: torch.Tensor) -> torch.Tensor:
    return x.to_sparse() if x.layout == torch.strided else x


def _other_dtype(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32 if x.dtype == torch.float64 else torch.float64)


def _int_values(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.int64)


def _add_dim(x: torch.Tensor) -> torch.Tensor:
    return _densify(x).unsqueeze(0).unsqueeze(0)


def _grow_rows(x: torch.Tensor) -> torch.Tensor:
    d = _densify(x)
    return torch.cat([d, d[..., :1, :]], dim=-2)


def _grow_cols(x: torch.Tensor) -> torch.Tensor:
    d = _densify(x)
    return torch.cat([d, d[..., :, :1]], dim=-1)


CORRUPT_SPARSE: dict[str, Callable[[torch.Tensor], Any]] = {
    "not a tensor": _not_a_tensor,
    "dense instead of sparse": _densify,
    "four dimensions": lambda x: _densify(x).reshape(1, 1, *x.shape[-2:]).to_sparse(),
    "integer values": _int_values,
}
CORRUPT_DENSE: dict[str, Callable[[torch.Tensor], Any]] = {
    "not a tensor": _not_a_tensor,
    "sparse instead of dense": _to_sparse,
    "other dtype": _other_dtype,
    "extra rows": _grow_rows,
    "extra dims": _add_dim,
}


def _call_rejects(fn: Callable[..., Any], args: list[Any], index: int, corrupt: Callable[[Any], Any]) -> None:
    args = list(args)
    try:
        args[index] = corrupt(args[index])
    except (RuntimeError, ValueError, TypeError):  # the corruption is not representable: nothing to test
        return
    before = [clone_input(a) for a in args]
    with pytest.raises(OK_ERRORS):
        fn(*args)
    for b, a in zip(before, args):
        assert_unchanged(b, a)


square = sparse_matrices(square=True, value_dtypes=(torch.float64,), allow_empty=False, min_size=2)


def _a_b_call_rejects(fn, case, which, data):
    """``fn(A, B)`` with ``A`` (``which == 0``) or ``B`` (``which == 1``) corrupted."""
    A = case.sparse
    B = torch.ones(*A.shape[:-1], 2, dtype=A.dtype)
    table = CORRUPT_SPARSE if which == 0 else CORRUPT_DENSE
    name = data.draw(st.sampled_from(sorted(table)))
    _call_rejects(fn, [A, B], which, table[name])


@settings(deadline=None, max_examples=60)
@given(case=square, which=st.sampled_from([0, 1]), data=st.data())
def test_sparse_mm_rejects_malformed_input(case, which, data):
    _a_b_call_rejects(tsgu_ops.sparse_mm, case, which, data)


@settings(deadline=None, max_examples=60)
@given(case=square, which=st.sampled_from([0, 1]), data=st.data())
def test_sparse_triangular_solve_rejects_malformed_input(case, which, data):
    _a_b_call_rejects(lambda A, B: tsgu_ops.sparse_triangular_solve(A, B, upper=False), case, which, data)


@settings(deadline=None, max_examples=60)
@given(case=square, which=st.sampled_from([0, 1, 2]), data=st.data())
def test_sampled_product_rejects_malformed_input(case, which, data):
    A = case.sparse
    U = torch.ones(*A.shape[:-1], 3, dtype=A.dtype)
    V = torch.ones(*A.shape[:-2], A.shape[-1], 3, dtype=A.dtype)
    # only A's indices are read (its values' dtype is irrelevant): no "integer values" corruption
    table = (
        {k: v for k, v in CORRUPT_SPARSE.items() if k != "integer values"} if which == 0 else CORRUPT_DENSE
    )
    name = data.draw(st.sampled_from(sorted(table)))
    _call_rejects(tsgu_ops.sampled_product, [A, U, V], which, table[name])


@settings(deadline=None, max_examples=60)
@given(case=square, which=st.sampled_from([0, 1]), data=st.data())
def test_implicit_solve_rejects_malformed_input(case, which, data):
    def solve(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return B

    _a_b_call_rejects(lambda A, B: tsgu_ops.implicit_solve(A, B, solve, solve), case, which, data)


@settings(deadline=None, max_examples=40)
@given(case=square, data=st.data())
def test_sparse_values_and_with_values_reject_malformed_input(case, data):
    A = case.sparse
    name = data.draw(st.sampled_from(["not a tensor", "dense instead of sparse", "four dimensions"]))
    _call_rejects(tsgu_ops.sparse_values, [A], 0, CORRUPT_SPARSE[name])
    values = tsgu_ops.sparse_values(A).detach()
    bad = data.draw(st.sampled_from(["not a tensor", "sparse instead of dense", "longer", "2-D"]))
    corrupt = {
        "not a tensor": _not_a_tensor,
        "sparse instead of dense": _to_sparse,
        "longer": lambda v: torch.cat([v.reshape(-1), v.reshape(-1)[:1] + 1]),
        "2-D": lambda v: v.reshape(-1, 1).expand(-1, 2),
    }[bad]
    _call_rejects(tsgu_ops.sparse_with_values, [A, values], 1, corrupt)


@settings(deadline=None, max_examples=40)
@given(
    case=sparse_matrices(layouts=(torch.sparse_coo, torch.sparse_csr), value_dtypes=(torch.float64,)),
    data=st.data(),
)
def test_logsumexp_rejects_malformed_input(case, data):
    x = case.sparse
    bad = data.draw(
        st.sampled_from(["not a tensor", "dense", "dim out of range", "dim not int", "integer values"])
    )
    if bad == "not a tensor":
        args, kw = [x.to_dense().tolist(), 0], {}
    elif bad == "dense":
        args, kw = [x.to_dense(), 0], {}
    elif bad == "dim out of range":
        args, kw = [x, x.dim() + 1], {}
    elif bad == "dim not int":
        args, kw = [x, 0.5], {}
    else:
        args, kw = [x.to(torch.int64), 0], {}
    # the error types of spec §1.3 (0.2.7's): a dense input is NotImplementedError, a dim out of
    # range IndexError; integer values and bad dim types are TypeErrors
    expected = {"dense": NotImplementedError, "dim out of range": IndexError}.get(bad, TypeError)
    with pytest.raises(expected):
        tsgu_ops.sparse_logsumexp(*args, **kw)


@settings(deadline=None, max_examples=40)
@given(
    n=st.integers(1, 6),
    nnz=st.integers(-3, 60),
    layout=st.sampled_from([torch.sparse_coo, torch.sparse_csr, torch.strided]),
    index_dtype=st.sampled_from([torch.int16, torch.int32, torch.int64, torch.float32]),
    rank=st.sampled_from([1, 2, 3, 4]),
)
def test_random_generators_reject_malformed_arguments(n, nnz, layout, index_dtype, rank):
    size = {1: (n,), 2: (n, n), 3: (2, n, n), 4: (2, n, n, n)}[rank]
    valid = (
        layout in (torch.sparse_coo, torch.sparse_csr)
        and index_dtype in (torch.int32, torch.int64)
        and rank in (2, 3)
        and 0 <= nnz <= n * n
    )
    if valid:
        out = tsgu_ops.rand_sparse(size, nnz, layout, indices_dtype=index_dtype)
        assert out.shape == torch.Size(size)
    else:
        with pytest.raises(OK_ERRORS):
            tsgu_ops.rand_sparse(size, nnz, layout, indices_dtype=index_dtype)


@settings(deadline=None, max_examples=40)
@given(
    case=sparse_matrices(layouts=(torch.sparse_coo,), batch=False),
    bad=st.sampled_from(["rows", "dtype", "rank"]),
)
def test_convert_coo_to_csr_indices_values_rejects_malformed_input(case, bad):
    idx = case.sparse.coalesce().indices()
    n = case.sparse.shape[0]
    if bad == "rows":
        args = [idx, max(int(idx[0].max()) if idx.numel() else 0, 0)]  # a row index >= num_rows
        if idx.numel() == 0:
            args = [torch.zeros(3, 1, 4, dtype=torch.int64), n]
    elif bad == "dtype":
        args = [idx.to(torch.float32), n]
    else:
        args = [idx.reshape(-1), n]
    with pytest.raises(OK_ERRORS):
        tsgu_ops.convert_coo_to_csr_indices_values(*args)


def _coo(n: int = 3) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64).to_sparse()


def _csr(n: int = 3) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64).to_sparse_csr()


GEN = [
    tsgu_ops.generate_random_sparse_coo_matrix,
    tsgu_ops.generate_random_sparse_csr_matrix,
    tsgu_ops.generate_random_sparse_strictly_triangular_coo_matrix,
    tsgu_ops.generate_random_sparse_strictly_triangular_csr_matrix,
    tsgu_ops.generate_random_sparse_triangular_coo_matrix,
    tsgu_ops.generate_random_sparse_triangular_csr_matrix,
]

# function name -> malformed calls (each a thunk); every one must raise ValueError or TypeError
MALFORMED: dict[str, list[Callable[[], Any]]] = {
    "convert_coo_to_csr": [
        lambda: tsgu_ops.convert_coo_to_csr(_csr()),
        lambda: tsgu_ops.convert_coo_to_csr(torch.eye(3)),
        lambda: tsgu_ops.convert_coo_to_csr([[1.0]]),
        lambda: tsgu_ops.convert_coo_to_csr(torch.ones(2, 2, 2, 2).to_sparse()),
    ],
    "sparse_block_diag": [
        lambda: tsgu_ops.sparse_block_diag(),
        lambda: tsgu_ops.sparse_block_diag(_coo(), torch.eye(2)),
        lambda: tsgu_ops.sparse_block_diag(_coo(), _csr()),
        lambda: tsgu_ops.sparse_block_diag(_coo(), "x"),
        lambda: tsgu_ops.sparse_block_diag(_coo(), torch.ones(2, 2, 2).to_sparse()),
    ],
    "sparse_block_diag_split": [
        lambda: tsgu_ops.sparse_block_diag_split(_coo(4), (2, 2), (3, 3)),
        lambda: tsgu_ops.sparse_block_diag_split(torch.eye(4), (2, 2), (2, 2)),
        lambda: tsgu_ops.sparse_block_diag_split(torch.ones(4, 4).to_sparse(), (2, 2), (2, 2)),
        lambda: tsgu_ops.sparse_block_diag_split(_coo(4), (2, -2), (2, 6)),
        lambda: tsgu_ops.sparse_block_diag_split(_coo(4), "2x2"),
    ],
    "sparse_eye": [
        lambda: tsgu_ops.sparse_eye((3,)),
        lambda: tsgu_ops.sparse_eye((2, 3, 4)),
        lambda: tsgu_ops.sparse_eye((3, 3), layout=torch.strided),
        lambda: tsgu_ops.sparse_eye((3, 3), indices_dtype=torch.int16),
        lambda: tsgu_ops.sparse_eye((-1, -1)),
        lambda: tsgu_ops.sparse_eye("3x3"),
    ],
    "stack_csr": [
        lambda: tsgu_ops.stack_csr([]),
        lambda: tsgu_ops.stack_csr([_csr(), _coo()]),
        lambda: tsgu_ops.stack_csr([_csr(3), _csr(4)]),
        lambda: tsgu_ops.stack_csr([_csr(), _csr()], dim=1),
        lambda: tsgu_ops.stack_csr(_csr()),
    ],
    "sparse_bidir_logsumexp": [
        lambda: tsgu_ops.sparse_bidir_logsumexp(_coo(), output_layout="list"),
        lambda: tsgu_ops.sparse_bidir_logsumexp(_coo(), keepdim=True, output_layout="padded"),
        lambda: tsgu_ops.sparse_bidir_logsumexp([[1.0]]),
        lambda: tsgu_ops.sparse_bidir_logsumexp(_coo().to(torch.int64)),
    ],
    "rand_sparse_tri": [
        lambda: tsgu_ops.rand_sparse_tri((3, 4), 3),
        lambda: tsgu_ops.rand_sparse_tri((3, 3), 2),  # fewer than the diagonal
        lambda: tsgu_ops.rand_sparse_tri((3, 3), 7),  # more than the triangle
        lambda: tsgu_ops.rand_sparse_tri((3, 3), 3, torch.strided),
        lambda: tsgu_ops.rand_sparse_tri((3, 3), 4, strict=True),
    ],
    "make_spd_sparse": [
        lambda: tsgu_ops.make_spd_sparse(3, torch.strided, torch.float64, torch.int64, "cpu"),
        lambda: tsgu_ops.make_spd_sparse(-3, torch.sparse_coo, torch.float64, torch.int64, "cpu"),
        lambda: tsgu_ops.make_spd_sparse(3, torch.sparse_coo, torch.float64, torch.int16, "cpu"),
        lambda: tsgu_ops.make_spd_sparse(3, torch.sparse_coo, torch.float64, torch.int64, "cpu", 1.5),
    ],
}
for fn in GEN:
    MALFORMED[fn.__name__] = [
        (lambda fn=fn: fn((3,), 1)),
        (lambda fn=fn: fn((3, 3), -1)),
        (lambda fn=fn: fn((3, 3), 100)),
        (lambda fn=fn: fn((3, 3), 3, indices_dtype=torch.int8)),
        (lambda fn=fn: fn((2, 2, 3, 3), 3)),
        (lambda fn=fn: fn("3x3", 3)),
    ]


def test_bidir_logsumexp_keeps_0_2_7_not_implemented_errors_for_layout_and_rank():
    with pytest.raises(NotImplementedError):
        tsgu_ops.sparse_bidir_logsumexp(torch.eye(3))
    with pytest.raises(NotImplementedError):
        tsgu_ops.sparse_bidir_logsumexp(torch.ones(2, 2, 2, 2).to_sparse())


@settings(deadline=None, max_examples=120)
@given(data=st.data())
def test_remaining_public_functions_reject_malformed_calls(data):
    name = data.draw(st.sampled_from(sorted(MALFORMED)))
    call = data.draw(st.sampled_from(MALFORMED[name]))
    with pytest.raises(OK_ERRORS):
        call()


def test_every_public_function_of_tsgu_ops_is_fed_malformed_input():
    covered = {
        "sparse_mm",
        "sparse_triangular_solve",
        "sampled_product",
        "implicit_solve",
        "sparse_values",
        "sparse_with_values",
        "sparse_logsumexp",
        "rand_sparse",
        "convert_coo_to_csr_indices_values",
        *MALFORMED,
    }
    functions = {n for n in tsgu_ops.__all__ if n[0].islower() and not n.startswith("__")}
    assert functions == covered


# ------------------------------------------------------------------------------------------------
# Malformed index structure, unsupported dtypes, non-finite values and empty batches (issue 14)


def _solve(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return B


def _rhs(A: torch.Tensor, p: int = 2) -> torch.Tensor:
    dev = "cpu" if A.device.type == "meta" else A.device
    return torch.ones(*A.shape[:-1], p, dtype=A.dtype, device=dev)


# function name -> (call taking the sparse tensor, the argument name its errors must mention,
# whether it takes batched input, layouts it takes)
SPARSE_TAKERS: dict[str, tuple[Callable[[torch.Tensor], Any], str, bool, tuple[torch.layout, ...]]] = {
    "sparse_mm": (lambda A: tsgu_ops.sparse_mm(A, _rhs(A)), "A", True, tsgu_ops.testing.LAYOUTS),
    "sparse_triangular_solve": (
        lambda A: tsgu_ops.sparse_triangular_solve(A, _rhs(A), upper=False),
        "A",
        True,
        tsgu_ops.testing.LAYOUTS,
    ),
    "sampled_product": (
        lambda A: tsgu_ops.sampled_product(A, _rhs(A), _rhs(A)),
        "A",
        True,
        tsgu_ops.testing.LAYOUTS,
    ),
    "implicit_solve": (
        lambda A: tsgu_ops.implicit_solve(A, _rhs(A), _solve, _solve),
        "A",
        True,
        tsgu_ops.testing.LAYOUTS,
    ),
    "sparse_values": (tsgu_ops.sparse_values, "A", True, tsgu_ops.testing.LAYOUTS),
    "sparse_with_values": (
        lambda A: tsgu_ops.sparse_with_values(
            A,
            torch.zeros(
                A._nnz() * (A.shape[0] if A.layout == torch.sparse_csr and A.dim() == 3 else 1),
                dtype=A.dtype,
                device=A.device,
            ),
        ),
        "like",
        True,
        tsgu_ops.testing.LAYOUTS,
    ),
    "sparse_logsumexp": (lambda A: tsgu_ops.sparse_logsumexp(A, -1), "input", True, tsgu_ops.testing.LAYOUTS),
    "sparse_bidir_logsumexp": (tsgu_ops.sparse_bidir_logsumexp, "input", True, tsgu_ops.testing.LAYOUTS),
    "convert_coo_to_csr": (tsgu_ops.convert_coo_to_csr, "sparse_coo_tensor", True, (torch.sparse_coo,)),
    "sparse_block_diag": (
        lambda A: tsgu_ops.sparse_block_diag(A, A),
        "sparse_tensors[0]",
        False,
        tsgu_ops.testing.LAYOUTS,
    ),
    "sparse_block_diag_split": (
        lambda A: tsgu_ops.sparse_block_diag_split(A, tuple(A.shape)),
        "t",
        False,
        tsgu_ops.testing.LAYOUTS,
    ),
    "stack_csr": (lambda A: tsgu_ops.stack_csr([A, A]), "tensors[0]", False, (torch.sparse_csr,)),
}


@settings(deadline=None, max_examples=80)
@given(data=st.data())
def test_malformed_indices_raise_value_error_naming_the_argument(data):
    name = data.draw(st.sampled_from(sorted(SPARSE_TAKERS)))
    call, arg, batched_ok, layouts = SPARSE_TAKERS[name]
    case = data.draw(
        malformed_sparse_matrices(
            layouts=layouts,
            batch=None if batched_ok else False,
            structure="lower" if name == "sparse_triangular_solve" else "general",
        )
    )
    with pytest.raises(ValueError, match=re.escape(arg)):
        call(case.sparse)


@pytest.mark.parametrize("kind", tsgu_ops.testing.MALFORMATIONS)
def test_every_malformation_is_caught_by_sparse_mm_for_both_layouts(kind):
    for layout in tsgu_ops.testing.LAYOUTS:
        if kind.startswith("crow") and layout == torch.sparse_coo:
            continue
        A = tsgu_ops.testing.build_case(3, (4, 4), 0.5, layout, torch.int64, torch.float64).sparse
        with pytest.raises(ValueError, match="A "):
            tsgu_ops.sparse_mm(corrupt_indices(A, kind), torch.ones(4, 2, dtype=torch.float64))


def test_one_based_coo_entry_is_not_silently_dropped_by_sparse_mm():
    # issue 14 item 3: a 1-based COO index used to vanish from the product without a word
    A = torch.sparse_coo_tensor(
        torch.tensor([[1, 2], [1, 2]]), torch.tensor([1.0, 2.0]), (2, 2), check_invariants=False
    )
    with pytest.raises(ValueError, match="A has a row index out of range"):
        tsgu_ops.sparse_mm(A, torch.ones(2, 1))


COMPUTE_NAMES = "float32, float64, complex64, complex128"


@settings(deadline=None, max_examples=40)
@given(
    case=sparse_matrices(square=True, value_dtypes=(torch.float64,), allow_duplicates=False),
    dtype=st.sampled_from(UNSUPPORTED_VALUE_DTYPES),
    which=st.sampled_from(
        [
            "sparse_mm",
            "sparse_triangular_solve",
            "implicit_solve",
            "sparse_values",
            "sampled_product",
            "sparse_with_values",
        ]
    ),
)
def test_unsupported_value_dtypes_raise_type_error_naming_the_supported_ones(case, dtype, which):
    A = case.sparse
    vals = tsgu_ops.sparse_values(A).detach()
    Ah = with_values(A, vals.to(dtype))
    Bh = torch.ones(*A.shape[:-1], 2).to(dtype)
    calls = {
        "sparse_mm": lambda: tsgu_ops.sparse_mm(Ah, Bh),
        "sparse_triangular_solve": lambda: tsgu_ops.sparse_triangular_solve(Ah, Bh),
        "implicit_solve": lambda: tsgu_ops.implicit_solve(Ah, Bh, _solve, _solve),
        "sparse_values": lambda: tsgu_ops.sparse_values(Ah),
        "sampled_product": lambda: tsgu_ops.sampled_product(A, Bh, Bh),
        "sparse_with_values": lambda: tsgu_ops.sparse_with_values(A, vals.to(dtype)),
    }
    with pytest.raises(TypeError, match=COMPUTE_NAMES):
        calls[which]()


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128, torch.int64, torch.bool])
def test_logsumexp_rejects_complex_and_integer_values(dtype):
    A = tsgu_ops.testing.build_case(1, (3, 3), 0.6, torch.sparse_csr, torch.int32, torch.float64).sparse
    Ac = with_values(A, A.values().to(dtype))
    with pytest.raises(TypeError, match="float16, bfloat16, float32, float64"):
        tsgu_ops.sparse_logsumexp(Ac, 1)
    with pytest.raises(TypeError, match="float16, bfloat16, float32, float64"):
        tsgu_ops.sparse_bidir_logsumexp(Ac)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_logsumexp_keeps_working_in_half_precision(dtype):
    x = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    out = tsgu_ops.sparse_logsumexp(x.to(dtype).to_sparse_csr(), 1)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), torch.logsumexp(x, 1), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int32, torch.bool])
def test_random_generators_reject_unsupported_value_dtypes(dtype):
    for fn in GEN:
        nnz = 4
        with pytest.raises(TypeError, match="values_dtype"):
            fn((4, 4), nnz, values_dtype=dtype)
    with pytest.raises(TypeError, match="value_dtype"):
        tsgu_ops.make_spd_sparse(3, torch.sparse_coo, dtype, torch.int64, "cpu")
    with pytest.raises(ValueError, match="meta"):
        tsgu_ops.rand_sparse((3, 3), 2, device="meta")


def _finite_pattern_and_values_match(out: torch.Tensor, ref: torch.Tensor) -> None:
    out, ref = out.detach(), ref.detach()
    assert torch.equal(torch.isfinite(out), torch.isfinite(ref))
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    torch.testing.assert_close(out, ref, equal_nan=True)


@settings(deadline=None, max_examples=30)
@given(case=nonfinite_sparse_matrices(square=True, value_dtypes=(torch.float64,)), data=st.data())
def test_nan_and_inf_values_propagate(case, data):
    A = case.sparse
    B = torch.ones(*A.shape[:-1], 2, dtype=A.dtype)
    _finite_pattern_and_values_match(tsgu_ops.sparse_mm(A, B), case.dense @ B)
    _finite_pattern_and_values_match(tsgu_ops.sparse_logsumexp(A, -1), torch.logsumexp(case.dense, -1))
    U = B.clone()
    U[..., 0, 0] = float(data.draw(st.sampled_from(["nan", "inf"])))
    mask = case.dense != 0
    S = tsgu_ops.sampled_product(A, U, B).to_dense()
    ref = torch.where(mask | case.dense.isnan(), U @ B.mT, torch.zeros((), dtype=A.dtype))
    _finite_pattern_and_values_match(S, ref)


@settings(deadline=None, max_examples=20)
@given(case=empty_batch_matrices())
def test_empty_batches_give_empty_results_and_gradients(case):
    A = case.sparse.requires_grad_()
    B = torch.zeros(0, A.shape[1], 2, dtype=A.dtype, requires_grad=True)
    for out in (
        tsgu_ops.sparse_mm(A, B),
        tsgu_ops.sparse_triangular_solve(A, B),
        tsgu_ops.implicit_solve(A, B, _solve, _solve),
    ):
        assert out.shape == (0, A.shape[1], 2)
        gA, gB = torch.autograd.grad(out.sum(), (A, B))
        assert gA.shape == A.shape and gA.layout == A.layout and gB.shape == B.shape
    assert tsgu_ops.sampled_product(A, B, B).shape == A.shape
    assert tsgu_ops.sparse_logsumexp(A, -1).shape == (0, A.shape[1])
    col, row = tsgu_ops.sparse_bidir_logsumexp(A)
    assert col.shape == (0, A.shape[2]) and row.shape == (0, A.shape[1])
