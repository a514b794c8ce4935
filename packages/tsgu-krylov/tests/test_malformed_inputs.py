"""Property: solvers, preconditioners and the generic solves reject malformed input clearly.

Hypothesis draws a valid system and one corruption; the call must raise ``ValueError`` or
``TypeError`` (or the ``RuntimeError`` that torchsparsegradutils 0.2.7 documents for an operator that
is neither a tensor nor a callable) and leave its inputs unchanged.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tsgu_krylov import (
    IC0,
    ILU0,
    Jacobi,
    bicgstab,
    gmres,
    linear_cg,
    lsmr,
    minres,
    sparse_generic_lstsq,
    sparse_generic_solve,
)
from tsgu_ops.testing import assert_unchanged, clone_input, sparse_matrices

SOLVERS = {"cg": linear_cg, "minres": minres, "bicgstab": bicgstab, "gmres": gmres}
spd = sparse_matrices(
    square=True, structures=("spd",), value_dtypes=(torch.float64,), batch=False, min_size=2
)

RHS_CORRUPTIONS = {
    "integer rhs": lambda b: b.to(torch.int64),
    "0-d rhs": lambda b: b[0, 0],
    "list rhs": lambda b: b.tolist(),
    "complex rhs": lambda b: b.to(torch.complex128),
}
KW_CORRUPTIONS = {
    "negative tolerance": {"rtol": -1.0},
    "nan tolerance": {"rtol": float("nan")},
    "tol and rtol disagree": {"rtol": 1e-3, "tol": 1e-4},
    "negative max_iter": {"max_iter": -1},
    "bad on_failure": {"on_failure": "shout"},
    "x0 of the wrong shape": "x0",
    "x0 of another dtype": "x0-dtype",
}


@settings(deadline=None, max_examples=60)
@given(case=spd, solver=st.sampled_from(sorted(SOLVERS)), data=st.data())
def test_solvers_reject_malformed_right_hand_sides_and_keywords(case, solver, data):
    A = case.sparse
    n = A.shape[0]
    b = torch.ones(n, 2, dtype=A.dtype)
    fn = SOLVERS[solver]
    before = clone_input(A)
    if data.draw(st.booleans()):
        corrupt = RHS_CORRUPTIONS[data.draw(st.sampled_from(sorted(RHS_CORRUPTIONS)))]
        with pytest.raises((TypeError, ValueError)):
            fn(A, corrupt(b))
    else:
        name = data.draw(st.sampled_from(sorted(KW_CORRUPTIONS)))
        kw = KW_CORRUPTIONS[name]
        if kw == "x0":
            kw = {"x0": torch.zeros(n + 1, 2, dtype=A.dtype)}
        elif kw == "x0-dtype":
            kw = {"x0": torch.zeros(n, 2, dtype=torch.float32)}
        if solver == "bicgstab" and "max_iter" in kw:
            return  # bicgstab's cap is settings.matvec_max (checked below)
        with pytest.raises((TypeError, ValueError)):
            fn(A, b, **kw)
    assert_unchanged(before, A)


def test_operators_that_are_not_tensors_or_callables_raise_the_0_2_7_runtime_error():
    b = torch.ones(3, dtype=torch.float64)
    for fn in SOLVERS.values():
        with pytest.raises(RuntimeError, match="matmul_closure must be a tensor, or a callable object!"):
            fn(42, b)
    with pytest.raises(RuntimeError, match="matmul_closure must be a tensor"):
        lsmr("A", b)
    from tsgu_krylov import BICGSTABSettings

    with pytest.raises(ValueError, match="matvec_max must be nonnegative"):
        bicgstab(torch.eye(3, dtype=torch.float64), b, settings=BICGSTABSettings(matvec_max=-1))


@settings(deadline=None, max_examples=40)
@given(
    case=sparse_matrices(square=True, structures=("spd",), value_dtypes=(torch.float64,), min_size=2),
    bad=st.sampled_from(["not a tensor", "integer", "rectangular", "missing diagonal"]),
    kind=st.sampled_from([Jacobi, IC0, ILU0]),
)
def test_preconditioners_reject_malformed_matrices(case, bad, kind):
    A = case.sparse
    if bad == "not a tensor":
        A = A.to_dense().tolist()
    elif bad == "integer":
        A = A.to(torch.int64)
    elif bad == "rectangular":
        D = A.to_dense()
        A = torch.cat([D, D[..., :1, :]], dim=-2).to_sparse()
    else:
        D = A.to_dense()
        D = D - torch.diag_embed(torch.diagonal(D, dim1=-2, dim2=-1))
        A = D.to_sparse()
    with pytest.raises((TypeError, ValueError)):
        kind(A)


@settings(deadline=None, max_examples=60)
@given(case=spd, data=st.data())
def test_generic_solve_and_lstsq_reject_malformed_input(case, data):
    A = case.sparse
    n = A.shape[0]
    B = torch.ones(n, 2, dtype=A.dtype)
    bad = data.draw(
        st.sampled_from(
            ["A dense", "A list", "B sparse", "B 3-D", "B rows", "A 4-D", "solver name", "A rectangular"]
        )
    )
    args = [A, B]
    kw: dict[str, object] = {}
    if bad == "A dense":
        args[0] = A.to_dense()
    elif bad == "A list":
        args[0] = A.to_dense().tolist()
    elif bad == "B sparse":
        args[1] = B.to_sparse()
    elif bad == "B 3-D":
        args[1] = B[None, None]
    elif bad == "B rows":
        args[1] = torch.ones(n + 1, 2, dtype=A.dtype)
    elif bad == "A 4-D":
        args[0] = A.to_dense()[None, None].to_sparse()
    elif bad == "solver name":
        kw = {"solve": "lu"}
    else:
        args[0] = torch.cat([A.to_dense(), A.to_dense()[:1]], 0).to_sparse()
    before = clone_input(A)
    with pytest.raises((TypeError, ValueError)):
        sparse_generic_solve(*args, **kw)
    if bad not in ("solver name", "A rectangular"):
        with pytest.raises((TypeError, ValueError)):
            sparse_generic_lstsq(*args)
    assert_unchanged(before, A)
