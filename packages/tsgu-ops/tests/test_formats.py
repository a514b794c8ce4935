"""Format utilities against PyTorch's own conversions and dense references."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tsgu_ops import (
    convert_coo_to_csr,
    convert_coo_to_csr_indices_values,
    sparse_block_diag,
    sparse_block_diag_split,
    sparse_eye,
    sparse_values,
    stack_csr,
)
from tsgu_ops.formats import _compress_row_indices, _demcompress_crow_indices, _sort_coo_indices
from tsgu_ops.testing import build_case, sparse_matrices


@given(case=sparse_matrices(layouts=[torch.sparse_coo], batch=False))
def test_convert_coo_to_csr_equals_torch(case):
    ours = convert_coo_to_csr(case.sparse)
    ref = case.sparse.coalesce().to_sparse_csr()
    assert torch.equal(ours.crow_indices(), ref.crow_indices())
    assert torch.equal(ours.col_indices(), ref.col_indices())
    torch.testing.assert_close(ours.values(), ref.values())


def test_convert_batched_coo_to_csr_and_unequal_nnz_error():
    case = build_case(0, (3, 4, 5), 0.5, torch.sparse_csr, torch.int64, torch.float64)
    coo = case.dense.to_sparse()
    out = convert_coo_to_csr(coo)
    assert torch.equal(out.crow_indices(), case.sparse.crow_indices())
    torch.testing.assert_close(out.to_dense(), case.dense)
    uneven = torch.zeros(2, 2, 2)
    uneven[0, 0, 0] = 1.0
    with pytest.raises(ValueError, match="same nnz in every batch item"):
        convert_coo_to_csr(uneven.to_sparse())
    with pytest.raises(ValueError, match="Unsupported layout"):
        convert_coo_to_csr(torch.eye(2).to_sparse_csr())


def test_convert_coo_to_csr_is_differentiable_without_densifying():
    v = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    coo = torch.sparse_coo_tensor(torch.tensor([[0, 1, 2], [2, 0, 1]]), v, (3, 3))
    csr = convert_coo_to_csr(coo)
    (sparse_values(csr) * torch.tensor([1.0, 10.0, 100.0])).sum().backward()
    torch.testing.assert_close(v.grad, torch.tensor([1.0, 10.0, 100.0]))


@pytest.mark.parametrize("itype", [torch.int32, torch.int64])
def test_indices_values_sums_duplicates_and_keeps_dtype(itype):
    idx = torch.tensor([[1, 0, 1, 1], [2, 1, 2, 0]], dtype=itype)
    crow, col, vals = convert_coo_to_csr_indices_values(idx, 2, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert crow.dtype == itype and col.dtype == itype
    assert crow.tolist() == [0, 1, 3] and col.tolist() == [1, 0, 2]
    assert vals.tolist() == [2.0, 4.0, 4.0]
    crow, col, perm = convert_coo_to_csr_indices_values(idx, 2)
    assert perm.dtype == torch.int64 and len(perm) == len(col) == 4
    assert perm.tolist() == [1, 3, 0, 2]


def test_indices_values_batched_and_errors():
    idx = torch.tensor([[0, 1, 0, 1], [0, 1, 1, 0], [1, 0, 0, 1]])
    crow, col, vals = convert_coo_to_csr_indices_values(idx, 2, torch.arange(4.0))
    assert crow.shape == (2, 3) and col.shape == (2, 2) and vals.shape == (2, 2)
    assert vals.tolist() == [[0.0, 2.0], [3.0, 1.0]]
    with pytest.raises(ValueError, match="same nnz"):
        convert_coo_to_csr_indices_values(torch.tensor([[0, 0, 1], [0, 1, 0], [0, 0, 0]]), 2)
    with pytest.raises(ValueError, match="at least 2 rows"):
        convert_coo_to_csr_indices_values(torch.tensor([[0, 1]]), 2)
    with pytest.raises(ValueError, match="at most 3 rows"):
        convert_coo_to_csr_indices_values(torch.zeros(4, 1, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        convert_coo_to_csr_indices_values(torch.tensor([[2], [0]]), 2)
    with pytest.raises(ValueError, match="nnz = 1"):
        convert_coo_to_csr_indices_values(torch.tensor([[0], [0]]), 2, torch.ones(2))


def test_private_helpers():
    idx = torch.tensor([[1, 0, 1], [1, 5, 0]])
    s, perm = _sort_coo_indices(idx)
    assert s.tolist() == [[0, 1, 1], [5, 0, 1]] and perm.tolist() == [1, 2, 0]
    crow = _compress_row_indices(torch.tensor([0, 0, 2], dtype=torch.int32), 3)
    assert crow.dtype == torch.int32 and crow.tolist() == [0, 2, 2, 3]
    assert _demcompress_crow_indices(crow, 3).tolist() == [0, 0, 2]
    with pytest.raises(TypeError):
        _compress_row_indices(torch.tensor([0.0]), 1)
    with pytest.raises(ValueError):
        _compress_row_indices(torch.tensor([3]), 2)
    with pytest.raises(ValueError):
        _compress_row_indices(torch.tensor([0]), 0)


@given(
    cases=st.lists(
        sparse_matrices(batch=False, layouts=[torch.sparse_coo], allow_duplicates=False),
        min_size=1,
        max_size=3,
    )
)
def test_block_diag_and_split_roundtrip_coo(cases):
    blocks = [c.sparse.to(torch.float64) for c in cases]
    out = sparse_block_diag(*blocks)
    torch.testing.assert_close(out.to_dense(), torch.block_diag(*[c.dense.double() for c in cases]))
    parts = sparse_block_diag_split(out, *[tuple(b.shape) for b in blocks])
    for part, block in zip(parts, blocks):
        torch.testing.assert_close(part.to_dense(), block.to_dense())


@pytest.mark.parametrize("itype", [torch.int32, torch.int64])
def test_block_diag_csr_keeps_index_dtype_and_roundtrips(itype):
    blocks = [build_case(i, (2 + i, 3), 0.5, torch.sparse_csr, itype, torch.float64).sparse for i in range(3)]
    out = sparse_block_diag(*blocks)
    assert out.layout == torch.sparse_csr and out.crow_indices().dtype == itype
    torch.testing.assert_close(out.to_dense(), torch.block_diag(*[b.to_dense() for b in blocks]))
    parts = sparse_block_diag_split(out, *[tuple(b.shape) for b in blocks])
    for part, block in zip(parts, blocks):
        assert part.crow_indices().dtype == itype
        torch.testing.assert_close(part.to_dense(), block.to_dense())


def test_block_diag_single_tensor_is_returned_and_errors():
    a = torch.eye(2).to_sparse()
    assert sparse_block_diag(a) is a
    with pytest.raises(TypeError):
        sparse_block_diag(a, "b")
    with pytest.raises(ValueError):
        sparse_block_diag()
    with pytest.raises(ValueError):
        sparse_block_diag(a, torch.eye(2).to_sparse_csr())
    with pytest.raises(ValueError):
        sparse_block_diag(a, torch.ones(2, 2, 2).to_sparse())
    with pytest.raises(ValueError):
        sparse_block_diag(a, torch.ones(2, 2, 2).to_sparse(2))


def test_block_diag_split_rejects_off_block_entries_and_bad_shapes():
    full = torch.ones(2, 2).to_sparse()
    with pytest.raises(ValueError, match="outside the diagonal blocks"):
        sparse_block_diag_split(full, (1, 1), (1, 1))
    with pytest.raises(ValueError, match="outside the diagonal blocks"):
        sparse_block_diag_split(full.to_sparse_csr(), (1, 1), (1, 1))
    with pytest.raises(ValueError, match="add up"):
        sparse_block_diag_split(full, (1, 1))
    with pytest.raises(ValueError, match=r"\(rows, cols\)"):
        sparse_block_diag_split(full, (1, 1, 1))
    with pytest.raises(TypeError):
        sparse_block_diag_split("x", (1, 1))
    with pytest.raises(ValueError):
        sparse_block_diag_split(torch.ones(2, 2), (2, 2))


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("size", [(3, 3), (2, 3, 3)])
@pytest.mark.parametrize("itype", [torch.int32, torch.int64])
def test_sparse_eye(layout, size, itype):
    eye = sparse_eye(size, layout=layout, indices_dtype=itype)
    assert eye.dtype == torch.float64 and eye.layout == layout
    torch.testing.assert_close(eye.to_dense(), torch.eye(3, dtype=torch.float64).expand(size))
    if layout == torch.sparse_csr:
        assert eye.crow_indices().dtype == itype
    else:
        assert eye.is_coalesced()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": (3,)},
        {"size": (2, 3)},
        {"size": (3, 3), "values_dtype": torch.int64},
        {"size": (3, 3), "indices_dtype": torch.int16},
        {"size": (3, 3), "layout": torch.strided},
    ],
)
def test_sparse_eye_errors(kwargs):
    with pytest.raises(ValueError):
        sparse_eye(**kwargs)


def test_stack_csr_and_errors():
    a = build_case(0, (3, 3), 0.5, torch.sparse_csr, torch.int32, torch.float64).sparse
    b = torch.sparse_csr_tensor(a.crow_indices(), a.col_indices(), 2 * a.values(), a.shape)
    s = stack_csr([a, b])
    assert s.shape == (2, 3, 3) and s.crow_indices().dtype == torch.int32
    torch.testing.assert_close(s.to_dense(), torch.stack([a.to_dense(), b.to_dense()]))
    with pytest.raises(TypeError):
        stack_csr(a)
    with pytest.raises(ValueError):
        stack_csr([])
    with pytest.raises(ValueError):
        stack_csr([a, torch.eye(4).to_sparse_csr()])
    with pytest.raises(ValueError):
        stack_csr([a, a.to_sparse_coo()])
    with pytest.raises(ValueError, match="only dim=0"):
        stack_csr([a, b], dim=1)
    with pytest.raises(ValueError, match="same nnz"):
        stack_csr([a, torch.eye(3, dtype=torch.float64).to_sparse_csr()])


# ------------------------------------------------------------------------------------------------
# Gradients through sparse_block_diag / sparse_block_diag_split (issue 15 item 3)


def _blocks(layout, dtype, dups):
    from tsgu_ops.testing import build_case

    shapes = [(2, 3), (3, 3), (1, 2)]
    return [
        build_case(
            10 + i, s, 0.6, layout, torch.int32, dtype, duplicates=dups if layout == torch.sparse_coo else 0
        )
        for i, s in enumerate(shapes)
    ]


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("dups", [0, 2])
def test_block_diag_gradients_reach_every_block_sparsely(layout, dtype, dups):
    from tsgu_ops.testing import assert_sparse_grad_matches

    cases = _blocks(layout, dtype, dups)
    blocks = [c.sparse.requires_grad_() for c in cases]
    out = sparse_block_diag(*blocks)
    assert out.requires_grad and out.layout == layout
    dense = [c.dense.clone().requires_grad_() for c in cases]
    ref = torch.block_diag(*dense)
    torch.testing.assert_close(out.to_dense(), ref)
    W = torch.randn(ref.shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    grads = torch.autograd.grad((out.to_dense() * W).sum().real, blocks)
    ref_grads = torch.autograd.grad((ref * W).sum().real, dense)
    for blk, g, gd in zip(blocks, grads, ref_grads):
        assert_sparse_grad_matches(blk, g, gd, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("dups", [0, 2])
def test_block_diag_split_gradients_reach_the_input_sparsely(layout, dtype, dups):
    from tsgu_ops.testing import assert_sparse_grad_matches

    cases = _blocks(layout, dtype, 0)
    whole = torch.block_diag(*[c.dense for c in cases])
    if layout == torch.sparse_coo:
        t = whole.to_sparse()
        if dups:  # an uncoalesced input: split each stored value in two entries
            idx, v = t.indices(), t.values()
            t = torch.sparse_coo_tensor(
                torch.cat([idx, idx], 1), torch.cat([0.25 * v, 0.75 * v]), whole.shape
            )
    else:
        t = whole.to_sparse_csr()
    t = t.requires_grad_()
    shapes = [tuple(c.dense.shape) for c in cases]
    parts = sparse_block_diag_split(t, *shapes)
    assert all(p.requires_grad and p.layout == layout for p in parts)
    D = whole.clone().requires_grad_()
    g = torch.Generator().manual_seed(1)
    Ws = [torch.randn(s, dtype=dtype, generator=g) for s in shapes]
    loss = sum((p.to_dense() * W).sum().real for p, W in zip(parts, Ws))
    (gt,) = torch.autograd.grad(loss, (t,))
    r = c = 0
    ref_loss = 0
    for (nr, nc), W in zip(shapes, Ws):
        ref_loss = ref_loss + (D[r : r + nr, c : c + nc] * W).sum().real
        r, c = r + nr, c + nc
    (gD,) = torch.autograd.grad(ref_loss, (D,))
    assert_sparse_grad_matches(t, gt, gD, rtol=1e-12, atol=1e-12)
