"""Property: every public function of tsgu-ops rejects malformed input with a ValueError/TypeError.

Hypothesis draws a valid call (layout × index dtype × value dtype × batch) and then one corruption of
one argument (a non-tensor, the wrong layout, rank, dtype, device-independent size, or a NaN-free
but wrongly shaped companion).  The call must raise ``ValueError`` or ``TypeError`` — never an
``IndexError``, a crash deep in torch, or a silently wrong result — and must leave its inputs
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tsgu_ops
from tsgu_ops.testing import assert_unchanged, clone_input, sparse_matrices

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


@settings(deadline=None, max_examples=60)
@given(case=square, which=st.sampled_from([0, 1]), data=st.data())
def test_sparse_mm_rejects_malformed_input(case, which, data):
    A = case.sparse
    B = torch.ones(*A.shape[:-1], 2, dtype=A.dtype)
    table = CORRUPT_SPARSE if which == 0 else CORRUPT_DENSE
    name = data.draw(st.sampled_from(sorted(table)))
    _call_rejects(tsgu_ops.sparse_mm, [A, B], which, table[name])


@settings(deadline=None, max_examples=60)
@given(case=square, which=st.sampled_from([0, 1]), data=st.data())
def test_sparse_triangular_solve_rejects_malformed_input(case, which, data):
    A = case.sparse
    B = torch.ones(*A.shape[:-1], 2, dtype=A.dtype)
    table = CORRUPT_SPARSE if which == 0 else CORRUPT_DENSE
    name = data.draw(st.sampled_from(sorted(table)))
    _call_rejects(
        lambda A, B: tsgu_ops.sparse_triangular_solve(A, B, upper=False), [A, B], which, table[name]
    )


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
    A = case.sparse
    B = torch.ones(*A.shape[:-1], 2, dtype=A.dtype)
    table = CORRUPT_SPARSE if which == 0 else CORRUPT_DENSE
    name = data.draw(st.sampled_from(sorted(table)))

    def solve(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return B

    _call_rejects(lambda A, B: tsgu_ops.implicit_solve(A, B, solve, solve), [A, B], which, table[name])


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
