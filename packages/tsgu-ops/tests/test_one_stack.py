"""One kernel stack: SparseParameter equals the public functions; autocast; empty shapes; 0.2.7 errors.

* ``SparseParameter.mm`` / ``.triangular_solve`` equal ``sparse_mm`` / ``sparse_triangular_solve``
  and the dense references (values and gradients; real and complex; int32/int64 indices; batched;
  unit diagonal);
* every public operation under CPU bfloat16 autocast equals its float32 result (the project's
  autocast policy: computed in float32);
* valid empty shapes ``(n, 0)``, ``(0, 0)``, ``(0, n)`` and nnz = 0 work, COO and CSR, batched;
* dimension mismatches raise 0.2.7's ``ValueError`` messages.
"""

from __future__ import annotations

import pytest
import torch

from tsgu_ops import (
    implicit_solve,
    sampled_product,
    sparse_bidir_logsumexp,
    sparse_logsumexp,
    sparse_mm,
    sparse_triangular_solve,
)
from tsgu_ops.nn import SparseParameter
from tsgu_ops.testing import build_case, stored_entries

C128, F64 = torch.complex128, torch.float64


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-4, "atol": 1e-5} if dtype in (torch.float32, torch.complex64) else {}


PARITY = [
    (torch.sparse_csr, torch.int32, (6, 6), F64),
    (torch.sparse_csr, torch.int64, (6, 6), C128),
    (torch.sparse_coo, torch.int64, (6, 6), F64),
    (torch.sparse_coo, torch.int64, (6, 6), C128),
    (torch.sparse_csr, torch.int32, (2, 6, 6), C128),
    (torch.sparse_csr, torch.int64, (2, 6, 6), F64),
    (torch.sparse_coo, torch.int64, (2, 6, 6), torch.float32),
]
PARITY_IDS = ["csr32", "csr64-c", "coo", "coo-c", "bcsr32-c", "bcsr64", "bcoo-f32"]


def _dense_of(P: SparseParameter, v: torch.Tensor) -> torch.Tensor:
    coords = stored_entries(P().detach())
    return torch.zeros(P.shape, dtype=v.dtype).index_put(tuple(coords), v, accumulate=True)


def _grads(out: torch.Tensor, inputs: list[torch.Tensor], G: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(out, inputs, G)


@pytest.mark.parametrize(("layout", "index_dtype", "shape", "dtype"), PARITY, ids=PARITY_IDS)
@pytest.mark.parametrize("transpose", [False, True])
def test_sparse_parameter_mm_equals_sparse_mm_and_dense(layout, index_dtype, shape, dtype, transpose):
    case = build_case(0, shape, 0.5, layout, index_dtype, dtype)
    P = SparseParameter(case.sparse)
    g = torch.Generator().manual_seed(1)
    B = torch.randn(*shape[:-2], shape[-2] if transpose else shape[-1], 3, dtype=dtype, generator=g)
    B1, B2, B3 = (B.clone().requires_grad_() for _ in range(3))
    A = P().detach().requires_grad_()
    v = P.values.detach().clone().requires_grad_()
    D = _dense_of(P, v)
    Y1 = P.mm(B1, transpose=transpose)
    Y2 = None if transpose else sparse_mm(A, B2)  # sparse_mm has no transpose argument
    Y3 = (D.mT if transpose else D) @ B3
    G = torch.randn(Y1.shape, dtype=dtype, generator=g)
    torch.testing.assert_close(Y1, Y3, **_tol(dtype))
    dv1, dB1 = _grads(Y1, [P.values, B1], G)
    dv3, dB3 = _grads(Y3, [v, B3], G)
    torch.testing.assert_close(dv1, dv3, **_tol(dtype))
    torch.testing.assert_close(dB1, dB3, **_tol(dtype))
    if Y2 is not None:  # the public function on the same matrix: the same numbers
        torch.testing.assert_close(Y2, Y1, **_tol(dtype))
        dA2, dB2 = _grads(Y2, [A, B2], G)
        torch.testing.assert_close(_values_in_order(dA2), dv1, **_tol(dtype))
        torch.testing.assert_close(dB2, dB1, **_tol(dtype))


def _values_in_order(G: torch.Tensor) -> torch.Tensor:
    return G._values() if G.layout == torch.sparse_coo else G.values().reshape(-1)


@pytest.mark.parametrize(("layout", "index_dtype", "shape", "dtype"), PARITY, ids=PARITY_IDS)
@pytest.mark.parametrize(
    ("upper", "unit", "transpose"),
    [
        (False, False, False),
        (True, False, True),
        (False, True, False),
        (False, True, True),
        (True, True, False),
    ],
    ids=["lower", "upper-T", "unit-lower", "unit-lower-T", "unit-upper"],
)
def test_sparse_parameter_triangular_solve_equals_public_solve_and_dense(
    layout, index_dtype, shape, dtype, upper, unit, transpose
):
    structure = ("strict_upper" if upper else "strict_lower") if unit else ("upper" if upper else "lower")
    case = build_case(2, shape, 0.6, layout, index_dtype, dtype, structure)
    P = SparseParameter(case.sparse)
    g = torch.Generator().manual_seed(3)
    B = torch.randn(*shape[:-1], 2, dtype=dtype, generator=g)
    B1, B2, B3 = (B.clone().requires_grad_() for _ in range(3))
    A = P().detach().requires_grad_()
    v = P.values.detach().clone().requires_grad_()
    D = _dense_of(P, v)
    X1 = P.triangular_solve(B1, upper=upper, unitriangular=unit, transpose=transpose)
    X2 = sparse_triangular_solve(A, B2, upper=upper, unitriangular=unit, transpose=transpose)
    M = D.mT if transpose else D
    X3 = torch.linalg.solve_triangular(M, B3, upper=upper != transpose, unitriangular=unit)
    torch.testing.assert_close(X1, X3, **_tol(dtype))
    torch.testing.assert_close(X2, X1, **_tol(dtype))
    G = torch.randn(X1.shape, dtype=dtype, generator=g)
    dv1, dB1 = _grads(X1, [P.values, B1], G)
    dA2, dB2 = _grads(X2, [A, B2], G)
    dv3, dB3 = _grads(X3, [v, B3], G)
    torch.testing.assert_close(dv1, dv3, **_tol(dtype))
    torch.testing.assert_close(dB1, dB3, **_tol(dtype))
    torch.testing.assert_close(_values_in_order(dA2), dv1, **_tol(dtype))
    torch.testing.assert_close(dB2, dB1, **_tol(dtype))


# ------------------------------------------------------------------------------------------------
# autocast: every public op under CPU bfloat16 autocast equals its float32 result
def _public_ops():  # type: ignore[no-untyped-def]
    case = build_case(4, (5, 5), 0.6, torch.sparse_csr, torch.int32, torch.float32, "lower")
    A, D = case.sparse, case.dense
    coo = A.to_sparse_coo()
    P = SparseParameter(A)
    B = torch.randn(5, 3, generator=torch.Generator().manual_seed(5))

    def solve(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(A.to_dense(), B)

    def tsolve(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(A.to_dense().mT, B)

    return (
        {
            "sparse_mm csr": lambda B: sparse_mm(A, B),
            "sparse_mm coo": lambda B: sparse_mm(coo, B),
            "sparse_mm of an autocast result": lambda B: sparse_mm(A, B @ torch.eye(3)),
            "sampled_product": lambda B: sampled_product(A, B, B).to_dense(),
            "sparse_triangular_solve": lambda B: sparse_triangular_solve(A, B, upper=False),
            "implicit_solve": lambda B: implicit_solve(A, B, solve, tsolve),
            "sparse_logsumexp": lambda B: sparse_logsumexp(coo, dim=1).to_dense() + B.sum(),
            "sparse_bidir_logsumexp": lambda B: sparse_bidir_logsumexp(coo)[0] + B.sum(),
            "SparseParameter.mm": lambda B: P.mm(B),
            "SparseParameter.mm of an autocast result": lambda B: P.mm(B @ torch.eye(3)),
            "SparseParameter.triangular_solve": lambda B: P.triangular_solve(B, upper=False),
            "SparseParameter.solve": lambda B: P.solve(B, solve),
        },
        B,
        D,
    )


def test_every_public_op_under_cpu_bfloat16_autocast_equals_float32():
    ops, B, _ = _public_ops()
    for name, op in ops.items():
        ref = op(B)
        Bg = B.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = op(Bg)
        assert out.dtype == torch.float32, name
        # an operand that an earlier autocast op rounded to bfloat16 carries that rounding
        tol = {"rtol": 2e-2, "atol": 2e-2} if "autocast result" in name else {}
        torch.testing.assert_close(out, ref, msg=name, **tol)
        out.sum().backward()
        Br = B.clone().requires_grad_()
        op(Br).sum().backward()
        torch.testing.assert_close(Bg.grad, Br.grad, msg=name, **tol)


def test_the_kernels_themselves_ignore_autocast():
    from tsgu_ops import SparsePattern, _kernels

    case = build_case(6, (5, 5), 0.6, torch.sparse_csr, torch.int64, torch.float32, "lower")
    pattern = SparsePattern(case.sparse)
    v = case.sparse.values()
    B = torch.randn(5, 2)
    ref_mm = _kernels.mm(pattern, v, B)
    ref_tri = _kernels.trisolve(pattern, v, B, upper=False, unitriangular=False, transpose=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(_kernels.mm(pattern, v, B), ref_mm)
        torch.testing.assert_close(_kernels.mm(pattern, v, B.bfloat16()), ref_mm, rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(
            _kernels.trisolve(pattern, v, B, upper=False, unitriangular=False, transpose=False), ref_tri
        )


# ------------------------------------------------------------------------------------------------
# empty shapes
def _empty(layout: torch.layout, shape: tuple[int, ...], index_dtype: torch.dtype) -> torch.Tensor:
    D = torch.zeros(shape, dtype=F64)
    if layout == torch.sparse_coo:
        return D.to_sparse()
    crow = torch.zeros(*shape[:-2], shape[-2] + 1, dtype=index_dtype)
    col = torch.zeros(*shape[:-2], 0, dtype=index_dtype)
    return torch.sparse_csr_tensor(crow, col, torch.zeros(*shape[:-2], 0, dtype=F64), shape)


EMPTY = [(4, 0), (0, 0), (0, 4), (4, 4), (2, 4, 0), (2, 0, 0), (2, 3, 3)]


@pytest.mark.parametrize("shape", EMPTY, ids=[str(s) for s in EMPTY])
@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr], ids=["coo", "csr"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["int32", "int64"])
def test_valid_empty_shapes_work_and_equal_dense(shape, layout, index_dtype):
    A = _empty(layout, shape, index_dtype).requires_grad_()
    D = torch.zeros(shape, dtype=F64)
    B = torch.randn(*shape[:-2], shape[-1], 2, dtype=F64, requires_grad=True)
    C = sparse_mm(A, B)
    torch.testing.assert_close(C, D @ B)
    C.sum().backward()
    assert A.grad is not None and A.grad.layout == layout
    torch.testing.assert_close(B.grad, torch.zeros_like(B))
    U = torch.randn(*shape[:-1], 2, dtype=F64)
    torch.testing.assert_close(sampled_product(A.detach(), U, B.detach()).to_dense(), D)
    if shape[-1] == shape[-2]:  # square: the unit-triangular solve of an empty pattern is the identity
        Bs = torch.randn(*shape[:-1], 2, dtype=F64)
        X = sparse_triangular_solve(A.detach(), Bs, upper=False, unitriangular=True)
        torch.testing.assert_close(X, Bs)


# ------------------------------------------------------------------------------------------------
# 0.2.7's dimension errors
@pytest.mark.parametrize(
    ("A", "B", "message"),
    [
        (
            torch.rand(4, 6).to_sparse(),
            torch.rand(5, 2),
            r"Incompatible inner dimensions: A\[..., 6\] vs B\[..., 5\]",
        ),
        (
            torch.rand(2, 4, 6).to_sparse(),
            torch.rand(2, 5, 2),
            r"Incompatible inner dimensions: A\[..., 6\] vs B\[..., 5\]",
        ),
        (
            torch.rand(2, 4, 6).to_sparse(),
            torch.rand(1, 6, 2),
            "If batched, A and B must have the same batch size",
        ),
        (torch.rand(2, 4, 6).to_sparse(), torch.rand(6, 2), "A and B must both be 2D or both be 3D tensors"),
        (
            torch.tensor([0.0, 1.0]).to_sparse(),
            torch.rand(6, 2),
            "Both A and B should be at least 2-dimensional",
        ),
    ],
    ids=["inner", "batched-inner", "batch", "3d-2d", "1d"],
)
def test_dimension_mismatches_raise_the_0_2_7_value_errors(A, B, message):
    with pytest.raises(ValueError, match=message):
        sparse_mm(A, B)
