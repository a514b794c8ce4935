"""Random generators: exact nnz, structure, dtypes, reproducibility, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tsgu_ops import (
    generate_random_sparse_coo_matrix,
    generate_random_sparse_csr_matrix,
    generate_random_sparse_strictly_triangular_coo_matrix,
    generate_random_sparse_strictly_triangular_csr_matrix,
    generate_random_sparse_triangular_coo_matrix,
    generate_random_sparse_triangular_csr_matrix,
    make_spd_sparse,
    rand_sparse,
    rand_sparse_tri,
)

LAYOUT_GEN = {
    torch.sparse_coo: generate_random_sparse_coo_matrix,
    torch.sparse_csr: generate_random_sparse_csr_matrix,
}


def _nnz_per_item(A):
    D = A.to_dense()
    return (D != 0).reshape(-1, *D.shape[-2:]).sum((1, 2)).tolist()


@given(
    layout=st.sampled_from(list(LAYOUT_GEN)),
    itype=st.sampled_from([torch.int32, torch.int64]),
    b=st.sampled_from([None, 1, 3]),
    r=st.integers(1, 7),
    c=st.integers(1, 7),
    frac=st.floats(0, 1, allow_subnormal=False),  # torch 2.5's compiled kernels may set flush-to-zero
)
def test_general_generator_has_exact_nnz_and_dtypes(layout, itype, b, r, c, frac):
    nnz = int(frac * r * c)
    size = (r, c) if b is None else (b, r, c)
    A = LAYOUT_GEN[layout](size, nnz, indices_dtype=itype)
    assert A.shape == size and A.layout == layout
    assert _nnz_per_item(A) == [nnz] * (b or 1)
    if layout == torch.sparse_csr:
        assert A.crow_indices().dtype == itype and A._nnz() == nnz
    else:
        assert A.is_coalesced() and A._nnz() == nnz * (b or 1)
    vals = A.values()
    assert bool(((vals > 0) & (vals < 1)).all())


@given(
    upper=st.booleans(),
    strict=st.booleans(),
    layout=st.sampled_from([torch.sparse_coo, torch.sparse_csr]),
    n=st.integers(1, 7),
    b=st.sampled_from([None, 2]),
    frac=st.floats(0, 1, allow_subnormal=False),  # torch 2.5's compiled kernels may set flush-to-zero
)
def test_triangular_generators_structure_and_value_range(upper, strict, layout, n, b, frac):
    size = (n, n) if b is None else (b, n, n)
    lo_nnz, hi_nnz = (0, n * (n - 1) // 2) if strict else (n, n * (n + 1) // 2)
    nnz = lo_nnz + int(frac * (hi_nnz - lo_nnz))
    A = rand_sparse_tri(size, nnz, layout, upper=upper, strict=strict, value_range=(2.0, 3.0))
    D = A.to_dense()
    other = D.tril(-1) if upper else D.triu(1)
    assert bool((other == 0).all())
    if strict:
        assert bool((D.diagonal(dim1=-2, dim2=-1) == 0).all())
    else:
        assert bool((D.diagonal(dim1=-2, dim2=-1) != 0).all())
    assert _nnz_per_item(A) == [nnz] * (b or 1)
    assert bool(((A.values() >= 2.0) & (A.values() < 3.0)).all())


def test_well_conditioned_diagonal():
    A = generate_random_sparse_triangular_coo_matrix((5, 5), 8, well_conditioned=True, min_diag_value=4.0)
    assert bool((A.to_dense().diagonal() >= 4.0).all())
    B = generate_random_sparse_coo_matrix((6, 6), 36, well_conditioned=True, min_diag_value=3.0)
    assert bool((B.to_dense().diagonal() >= 3.0).all())


def test_reproducible_from_torch_seed_and_generator():
    torch.manual_seed(7)
    a = rand_sparse((20, 20), 30)
    torch.manual_seed(7)
    b = rand_sparse((20, 20), 30)
    assert torch.equal(a.indices(), b.indices()) and torch.equal(a.values(), b.values())
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    c = generate_random_sparse_strictly_triangular_csr_matrix((9, 9), 10, generator=g1)
    d = generate_random_sparse_strictly_triangular_csr_matrix((9, 9), 10, generator=g2)
    assert torch.equal(c.col_indices(), d.col_indices())


def test_large_generator_gives_exact_nnz():
    A = rand_sparse((100_000, 100_000), 1_000_000, torch.sparse_csr, indices_dtype=torch.int32)
    assert A._nnz() == 1_000_000 and A.col_indices().dtype == torch.int32


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("itype", [torch.int32, torch.int64])
def test_make_spd_sparse_is_spd_and_honours_index_dtype(layout, itype):
    A, D = make_spd_sparse(12, layout, torch.float64, itype, "cpu", sparsity_ratio=0.7)
    torch.testing.assert_close(A.to_dense(), D)
    torch.testing.assert_close(D, D.T)
    assert torch.linalg.eigvalsh(D).min() > 0
    if layout == torch.sparse_csr:
        assert A.crow_indices().dtype == itype
    offdiag_pairs = int(((D != 0).sum() - 12) // 2)
    assert offdiag_pairs == 66 - int(0.7 * 66)
    A2, none = make_spd_sparse(30, layout, torch.float32, itype, "cpu", nz=100, return_dense=False)
    assert none is None and A2._nnz() == 30 + 2 * (435 - 50)


@pytest.mark.parametrize(
    ("fn", "args", "kwargs"),
    [
        (generate_random_sparse_coo_matrix, ((2,), 1), {}),
        (generate_random_sparse_coo_matrix, ((2, 2), -1), {}),
        (generate_random_sparse_coo_matrix, ((2, 2), 5), {}),
        (generate_random_sparse_csr_matrix, ((2, 2), 1), {"indices_dtype": torch.int16}),
        (generate_random_sparse_strictly_triangular_coo_matrix, ((3, 4), 1), {}),
        (generate_random_sparse_strictly_triangular_coo_matrix, ((3, 3), 4), {}),
        (generate_random_sparse_triangular_csr_matrix, ((3, 3), 2), {}),
        (generate_random_sparse_triangular_csr_matrix, ((3, 3), 7), {}),
        (rand_sparse, ((2, 2), 1, torch.strided), {}),
        (rand_sparse_tri, ((2, 2), 2, torch.sparse_csc), {}),
        (make_spd_sparse, (3, torch.strided, torch.float32, torch.int64, "cpu"), {}),
    ],
)
def test_bad_arguments_raise_value_error(fn, args, kwargs):
    with pytest.raises(ValueError):
        fn(*args, **kwargs)


# ------------------------------------------------------------------------------------------------
# The diagonal of the non-strict triangular generators (issue 15 item 7)

NON_STRICT = [
    lambda size, nnz, **kw: generate_random_sparse_triangular_coo_matrix(size, nnz, **kw),
    lambda size, nnz, **kw: generate_random_sparse_triangular_csr_matrix(size, nnz, **kw),
    lambda size, nnz, **kw: rand_sparse_tri(size, nnz, torch.sparse_coo, **kw),
    lambda size, nnz, **kw: rand_sparse_tri(size, nnz, torch.sparse_csr, **kw),
]


@pytest.mark.parametrize("gen", range(len(NON_STRICT)))
@pytest.mark.parametrize("size", [(6, 6), (3, 6, 6)])
@pytest.mark.parametrize(
    ("kw", "lo", "hi"),
    [
        ({}, 1.0, 1.5),  # the default: U[0, 0.5) + min_diag_value
        ({"well_conditioned": True, "min_diag_value": 3.0}, 3.0, 3.5),
        ({"value_range": (2.0, 3.0)}, 2.0, 2.5),  # shifted to max(min_diag_value, lo)
        ({"value_range": (-1.0, 1.0)}, 1.0, 1.5),
        ({"well_conditioned": False, "value_range": (-1.0, 1.0)}, -1.0, 1.0),  # 0.2.7's default
    ],
)
def test_non_strict_diagonal_lies_in_the_documented_range(gen, size, kw, lo, hi):
    g = torch.Generator().manual_seed(gen)
    A = NON_STRICT[gen](size, 15, upper=False, generator=g, values_dtype=torch.float64, **kw)
    D = A.to_dense()
    d = D.diagonal(dim1=-2, dim2=-1)
    assert bool(((d >= lo) & (d < hi)).all()), d
    off = D.tril(-1)
    vlo, vhi = kw.get("value_range", (0.0, 1.0))
    stored_off = off[off != 0]
    assert bool(((stored_off >= vlo) & (stored_off < vhi)).all())


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("nnz", [16, 40, 80])
def test_default_16x16_float32_factor_is_well_conditioned(layout, nnz):
    # 0.2.7 users' covariance tests sample from N(0, L Lᵀ) with such factors; a near-zero diagonal
    # (U[0, 1)) gave condition numbers up to ~1e9 and failing sample-covariance tests
    worst = 0.0
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        L = rand_sparse_tri((16, 16), nnz, layout, upper=False, generator=g).to_dense().double()
        worst = max(worst, float(torch.linalg.cond(L @ L.T)))
    assert worst < 1e3, worst
