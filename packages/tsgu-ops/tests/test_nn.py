"""SparseParameter against dense autograd: products, solves, checkpoints, optimizers, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tsgu_ops import DtypeMismatchError
from tsgu_ops.nn import SparseParameter
from tsgu_ops.testing import (
    assert_unchanged,
    build_case,
    clone_input,
    dense_like,
    sparse_matrices,
    stored_entries,
)

REAL = (torch.float32, torch.float64)


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-9}


def _dense_of(P: SparseParameter, values: torch.Tensor) -> torch.Tensor:
    """Dense matrix of ``P`` holding ``values`` (a differentiable scatter, the reference)."""
    coords = stored_entries(P().detach())
    return torch.zeros(P.shape, dtype=values.dtype).index_put(tuple(coords), values, accumulate=True)


@given(
    case=sparse_matrices(value_dtypes=REAL),
    p=st.integers(1, 3),
    transpose=st.booleans(),
    rhs=st.sampled_from(["matrix", "vector", "shared"]),
    data=st.data(),
)
def test_mm_and_gradients_equal_dense_autograd(case, p, transpose, rhs, data):
    A = case.sparse
    A0 = clone_input(A)
    P = SparseParameter(A)
    assert_unchanged(A0, A)
    D = _dense_of(P, P.values.detach())
    torch.testing.assert_close(D, case.dense)  # the parameter holds A (duplicates summed)
    k = A.shape[-2] if transpose else A.shape[-1]
    if A.dim() == 3:
        shape: tuple[int, ...] = (A.shape[0], k, p)
    else:
        shape = {"matrix": (k, p), "vector": (k,), "shared": (2, k, p)}[rhs]
    B = data.draw(dense_like(shape, A.dtype)).requires_grad_()
    Y = P.mm(B, transpose=transpose)
    v = P.values.detach().clone().requires_grad_()
    Dv = _dense_of(P, v)
    Dop = Dv.mT if transpose else Dv
    Yd = Dop @ B
    torch.testing.assert_close(Y, Yd, **_tol(A.dtype))
    G = data.draw(dense_like(tuple(Y.shape), A.dtype))
    gv, gB = torch.autograd.grad(Y, (P.values, B), G)
    gvd, gBd = torch.autograd.grad(Yd, (v, B), G)
    torch.testing.assert_close(gv, gvd, **_tol(A.dtype))
    torch.testing.assert_close(gB, gBd, **_tol(A.dtype))


@given(
    case=sparse_matrices(
        value_dtypes=(torch.float64,),
        structures=("lower", "upper", "strict_lower", "strict_upper"),
        allow_duplicates=False,
    ),
    transpose=st.booleans(),
    data=st.data(),
)
def test_triangular_solve_equals_dense_solve(case, transpose, data):
    A = case.sparse
    upper = case.structure in ("upper", "strict_upper")
    unit = case.structure.startswith("strict")
    P = SparseParameter(A)
    B = data.draw(dense_like((*A.shape[:-1], 2), A.dtype)).requires_grad_()
    X = P.triangular_solve(B, upper=upper, unitriangular=unit, transpose=transpose)
    v = P.values.detach().clone().requires_grad_()
    Dv = _dense_of(P, v)
    Xd = torch.linalg.solve_triangular(
        Dv.mT if transpose else Dv, B, upper=upper != transpose, unitriangular=unit
    )
    torch.testing.assert_close(X, Xd, rtol=1e-8, atol=1e-8)
    G = data.draw(dense_like(tuple(X.shape), A.dtype))
    gv, gB = torch.autograd.grad(X, (P.values, B), G)
    gvd, gBd = torch.autograd.grad(Xd, (v, B), G)
    torch.testing.assert_close(gv, gvd, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(gB, gBd, rtol=1e-8, atol=1e-8)


def test_triangular_solve_ignores_the_other_triangle_and_gives_it_zero_gradient():
    D = torch.tensor([[2.0, 5.0, 0.0], [1.0, 3.0, 0.0], [0.0, 4.0, 1.0]], dtype=torch.float64)
    P = SparseParameter(D.to_sparse_csr())
    B = torch.ones(3, 1, dtype=torch.float64)
    X = P.triangular_solve(B, upper=False)
    torch.testing.assert_close(X, torch.linalg.solve_triangular(D.tril(), B, upper=False))
    X.sum().backward()
    assert P.values.grad[1] == 0  # the entry (0, 1) lies above the diagonal


@given(case=sparse_matrices(value_dtypes=REAL))
def test_call_returns_the_sparse_tensor_and_gradients_stay_on_values(case):
    A = case.sparse
    P = SparseParameter(A)
    S = P()
    assert S.layout == A.layout and S.shape == A.shape
    if A.layout == torch.sparse_csr:
        assert S.crow_indices().dtype == A.crow_indices().dtype
        assert torch.equal(S.crow_indices(), A.crow_indices())
        assert torch.equal(S.col_indices(), A.col_indices())
    torch.testing.assert_close(S.detach().to_dense(), case.dense)
    w = torch.arange(P.nnz, dtype=A.dtype)
    S = P()
    stored = S.values() if A.layout == torch.sparse_csr else S.coalesce().values()
    (stored.reshape(-1) * w).sum().backward()
    torch.testing.assert_close(P.values.grad, w)


def test_uncoalesced_coo_is_coalesced_with_duplicates_summed():
    case = build_case(3, (4, 4), 0.5, torch.sparse_coo, torch.int64, torch.float64, duplicates=3)
    assert not case.sparse.is_coalesced()
    P = SparseParameter(case.sparse)
    assert P.nnz == case.sparse.coalesce()._nnz()
    torch.testing.assert_close(P().detach().to_dense(), case.dense)


def _model(
    layout: torch.layout = torch.sparse_csr,
    index_dtype: torch.dtype = torch.int32,
    dtype: torch.dtype = torch.float32,
) -> SparseParameter:
    case = build_case(0, (6, 5), 0.5, layout, index_dtype, dtype)
    return SparseParameter(case.sparse)


def test_state_dict_round_trip_and_deepcopy():
    P = _model()
    sd = P.state_dict()
    assert set(sd) == {"values", "crow_indices", "col_indices"}
    assert sd["crow_indices"].dtype == torch.int32
    Q = copy.deepcopy(P)
    with torch.no_grad():
        Q.values.mul_(2)
    assert not torch.equal(Q.values, P.values)  # independent copies
    Q.load_state_dict(sd)
    torch.testing.assert_close(Q.values, P.values)
    B = torch.randn(5, 2)
    torch.testing.assert_close(Q.mm(B), P.mm(B))


def test_load_state_dict_with_another_pattern_rebuilds_the_kernels():
    P = SparseParameter(torch.tensor([[1.0, 0.0], [0.0, 2.0]]).to_sparse())
    Q = SparseParameter(torch.tensor([[0.0, 3.0], [4.0, 0.0]]).to_sparse())
    P.load_state_dict(Q.state_dict())
    B = torch.tensor([[1.0], [10.0]])
    torch.testing.assert_close(P.mm(B), torch.tensor([[30.0], [4.0]]))
    torch.testing.assert_close(P.mm(B, transpose=True), torch.tensor([[40.0], [3.0]]))


@pytest.mark.parametrize(
    ("key", "value", "error", "match"),
    [
        ("values", torch.zeros(3), ValueError, "state_dict\\['values'\\] has shape"),
        ("values", [1.0], TypeError, "state_dict\\['values'\\] must be a tensor"),
        ("values", None, TypeError, "must be a tensor"),
        ("col_indices", torch.zeros(2, dtype=torch.int32), ValueError, "col_indices"),
        ("col_indices", "bad", TypeError, "col_indices"),
    ],
)
def test_load_state_dict_rejects_bad_entries_and_modifies_nothing(key, value, error, match):
    P = _model()
    before = {k: v.clone() for k, v in P.state_dict().items()}
    sd = dict(P.state_dict())
    sd[key] = value
    with pytest.raises(error, match=match):
        P.load_state_dict(sd)
    for k, v in P.state_dict().items():
        assert torch.equal(v, before[k])


def test_load_state_dict_rejects_out_of_range_indices():
    P = _model()
    sd = {k: v.clone() for k, v in P.state_dict().items()}
    sd["col_indices"][0] = 99
    before = P.col_indices.clone()
    with pytest.raises(ValueError, match="column index out of range"):
        P.load_state_dict(sd)
    assert torch.equal(P.col_indices, before)


def test_to_dtype_keeps_index_dtype_and_results():
    P = _model()
    B = torch.randn(5, 3, dtype=torch.float64)
    Q = copy.deepcopy(P).to(torch.float64)
    assert Q.values.dtype == torch.float64 and Q.index_dtype == torch.int32
    torch.testing.assert_close(Q.mm(B), P().detach().to_dense().double() @ B)


OPTIMIZERS = [
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    (torch.optim.Adam, {"lr": 0.01}),
    (torch.optim.AdamW, {"lr": 0.01}),
    (torch.optim.Adagrad, {"lr": 0.1}),
    (torch.optim.Adadelta, {}),
    (torch.optim.Adamax, {}),
    (torch.optim.NAdam, {}),
    (torch.optim.RAdam, {}),
    (torch.optim.RMSprop, {"lr": 0.01}),
    (torch.optim.Rprop, {}),
    (torch.optim.ASGD, {}),
    (torch.optim.LBFGS, {"max_iter": 3}),
]


@pytest.mark.parametrize(("opt_cls", "kwargs"), OPTIMIZERS, ids=[o[0].__name__ for o in OPTIMIZERS])
def test_every_optimizer_steps_like_on_a_dense_parameter(opt_cls, kwargs):
    P = _model(torch.sparse_coo, dtype=torch.float64)
    mask = P().detach().to_dense() != 0
    W = torch.nn.Parameter(P.values.detach().clone())  # the same numbers as a plain dense parameter
    B = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    target = torch.randn(6, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def dense_matrix() -> torch.Tensor:
        return torch.zeros(6, 5, dtype=torch.float64).masked_scatter(mask, W)

    opt_p, opt_w = opt_cls([P.values], **kwargs), opt_cls([W], **kwargs)
    for _ in range(3):
        for opt, loss_fn in (
            (opt_p, lambda: ((P.mm(B) - target) ** 2).sum()),
            (opt_w, lambda: ((dense_matrix() @ B - target) ** 2).sum()),
        ):

            def closure(opt=opt, loss_fn=loss_fn):
                opt.zero_grad()
                loss = loss_fn()
                loss.backward()
                return loss

            opt.step(closure)
    torch.testing.assert_close(P.values.detach(), W.detach(), rtol=1e-10, atol=1e-12)
    assert not torch.equal(P.values.detach(), _model(torch.sparse_coo, dtype=torch.float64).values)


def test_gradient_clipping_and_grad_scaler():
    P = _model()
    B = torch.randn(5, 4)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt = torch.optim.SGD(P.parameters(), lr=0.1)
    ref = copy.deepcopy(P)
    scaler.scale((P.mm(B) ** 2).sum()).backward()
    scaler.unscale_(opt)
    norm = torch.nn.utils.clip_grad_norm_(P.parameters(), max_norm=0.5)
    scaler.step(opt)
    scaler.update()
    (ref.mm(B) ** 2).sum().backward()
    g = ref.values.grad
    torch.testing.assert_close(norm, g.norm())
    expected = ref.values.detach() - 0.1 * g * min(1.0, 0.5 / float(g.norm()))
    torch.testing.assert_close(P.values.detach(), expected)


def test_autocast_casts_the_right_hand_side_to_the_parameter_dtype():
    P = _model()
    lin = torch.nn.Linear(3, 4)
    x = torch.randn(5, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin(x)
        assert h.dtype == torch.bfloat16
        y = P.mm(h)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, P().detach().to_dense() @ h.float())


# ---------------------------------------------------------------------------------------------------
# bad input: clear errors naming the argument, nothing modified
def test_bad_sources_raise_naming_A():
    with pytest.raises(ValueError, match="A must be a sparse COO or CSR tensor"):
        SparseParameter(torch.eye(3))
    hybrid = torch.sparse_coo_tensor(torch.tensor([[0, 1]]), torch.ones(2, 3), (2, 3))
    with pytest.raises(ValueError, match="A must have no dense dimensions"):
        SparseParameter(hybrid)
    with pytest.raises(TypeError, match=r"A must be a torch\.Tensor"):
        SparseParameter([[1.0]])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="A must have one of the dtypes"):
        SparseParameter(torch.eye(2, dtype=torch.int64).to_sparse())
    with pytest.raises(ValueError, match="2-D"):
        SparseParameter(torch.ones(1, 1, 1, 1).to_sparse())


def test_batched_csr_with_unequal_nnz_per_item_raises():
    crow = torch.tensor([[0, 1, 2], [0, 1, 1]])
    col = torch.tensor([[0, 1], [0, 1]])
    bad = torch.sparse_csr_tensor(crow, col, torch.ones(2, 2), (2, 2, 2), check_invariants=False)
    with pytest.raises(ValueError, match="A has crow_indices whose last entry"):
        SparseParameter(bad)


def test_bad_right_hand_sides_raise_naming_B():
    P = _model()
    with pytest.raises(ValueError, match="B has shape"):
        P.mm(torch.ones(4, 2))
    with pytest.raises(DtypeMismatchError, match="B"):
        P.mm(torch.ones(5, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="B must be a dense"):
        P.mm(torch.eye(5).to_sparse())
    with pytest.raises(TypeError, match=r"B must be a torch\.Tensor"):
        P.mm([1.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="values must have shape"):
        P.mm(torch.ones(5, 2), values=torch.ones(P.nnz + 1))
    with pytest.raises(ValueError, match="square"):
        P.triangular_solve(torch.ones(6, 1))
    Q = SparseParameter(torch.eye(3).to_sparse_csr())
    with pytest.raises(ValueError, match="strictly triangular"):
        Q.triangular_solve(torch.ones(3, 1), unitriangular=True)


def _dense_solver(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(A.to_dense(), B)


def test_solve_differentiates_the_given_solver():
    case = build_case(5, (6, 6), 0.4, torch.sparse_csr, torch.int64, torch.float64, "spd")
    P = SparseParameter(case.sparse)
    B = torch.randn(6, 2, dtype=torch.float64)
    X = P.solve(B, _dense_solver)
    torch.testing.assert_close(X, torch.linalg.solve(case.dense, B), rtol=1e-8, atol=1e-8)
    v = P.values.detach().clone().requires_grad_()
    Xd = torch.linalg.solve(_dense_of(P, v), B)
    X.sum().backward()
    Xd.sum().backward()
    torch.testing.assert_close(P.values.grad, v.grad, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("solver", [None, "cg", 3])
def test_solve_without_a_callable_names_the_route(solver):
    P = SparseParameter(torch.eye(3, dtype=torch.float64).to_sparse_csr())
    with pytest.raises(TypeError, match=r"tsgu_krylov\.sparse_generic_solve"):
        P.solve(torch.ones(3, 1, dtype=torch.float64), solver)


def test_solve_with_a_lone_solver_gets_the_transpose_in_the_backward():
    case = build_case(6, (2, 5, 5), 0.5, torch.sparse_csr, torch.int32, torch.float64, "general")
    P = SparseParameter(case.sparse)
    calls: list[bool] = []

    def solver(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        calls.append(True)
        return torch.linalg.solve(A.to_dense() + 10 * torch.eye(A.shape[0], dtype=B.dtype), B)

    B = torch.randn(2, 5, 3, dtype=torch.float64)
    X = P.solve(B, solver)
    v = P.values.detach().clone().requires_grad_()
    Xd = torch.linalg.solve(_dense_of(P, v) + 10 * torch.eye(5, dtype=torch.float64), B)
    torch.testing.assert_close(X, Xd)
    (X**2).sum().backward()
    (Xd**2).sum().backward()
    torch.testing.assert_close(P.values.grad, v.grad)
    assert len(calls) == 2  # one forward and one transposed solve
