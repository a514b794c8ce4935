"""Random sparse matrices from torch's random number generator.

Coordinates are drawn without replacement by vectorised sampling (oversample, de-duplicate, keep a
random subset), so every matrix has exactly the requested nnz per batch item, results follow
``torch.manual_seed`` (or an explicit ``generator=``), and ``rand_sparse((100_000, 100_000),
1_000_000)`` takes a fraction of a second.  COO results are coalesced; CSR results keep the requested
index dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _checks
from .pattern import compress_rows, quiet

__all__ = [
    "rand_sparse",
    "rand_sparse_tri",
    "make_spd_sparse",
    "generate_random_sparse_coo_matrix",
    "generate_random_sparse_csr_matrix",
    "generate_random_sparse_strictly_triangular_coo_matrix",
    "generate_random_sparse_strictly_triangular_csr_matrix",
    "generate_random_sparse_triangular_coo_matrix",
    "generate_random_sparse_triangular_csr_matrix",
]

Device = torch.device | str


def _sample_unique(
    batch: int, space: int, k: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``(batch, k)`` sorted distinct integers of ``[0, space)`` per row, uniformly at random."""
    if k == 0 or batch == 0:
        return torch.zeros(batch, k, dtype=torch.int64, device=device)
    if 2 * k >= space:  # dense: a random permutation per item is cheap (space < 2k)
        keys = torch.rand(batch, space, generator=generator, device=device).argsort(dim=1)[:, :k]
        return keys.sort(dim=1).values
    out = torch.empty(batch, k, dtype=torch.int64, device=device)
    todo = torch.arange(batch, device=device)
    draw = int(k * (1 + k / space) * 1.05) + 16
    while todo.numel():
        cand = torch.randint(0, space, (todo.numel(), draw), generator=generator, device=device)
        flat = torch.unique(cand + todo[:, None] * space)  # sorted, per-item blocks in order
        item = torch.div(flat, space, rounding_mode="floor")
        counts = torch.bincount(item, minlength=todo.numel() * 0 + int(todo.max()) + 1)[todo]
        ok = counts >= k
        # keep a uniformly random subset of k among each item's distinct candidates
        score = torch.rand(flat.numel(), generator=generator, device=device)
        order = torch.argsort(item.to(torch.float64) * 2 + score.to(torch.float64), stable=True)
        flat, item = flat[order], item[order]
        start = torch.cumsum(counts, 0) - counts
        lookup = torch.zeros(int(todo.max()) + 1, dtype=torch.int64, device=device)
        lookup[todo] = torch.arange(todo.numel(), device=device)
        pos = lookup[item]
        rank = torch.arange(flat.numel(), device=device) - start[pos]
        keep = (rank < k) & ok[pos]
        chosen = (flat[keep] - item[keep] * space).reshape(-1, k)
        out[todo[ok]] = chosen.sort(dim=1).values
        todo = todo[~ok]
        draw *= 2
    return out


#: Value dtypes of the random generators (values are drawn uniformly, so complex is not offered).
VALUE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_values_dtype(name: str, dtype: object, device: Device) -> torch.device:
    """TypeError unless ``dtype`` is a generator value dtype; ValueError for the meta device."""
    if dtype not in VALUE_DTYPES:
        names = ", ".join(str(d).replace("torch.", "") for d in VALUE_DTYPES)
        raise TypeError(f"{name} must be one of the dtypes {names}, got {dtype}")
    dev = torch.device(device)
    if dev.type == "meta":
        raise ValueError("device must hold data; random sparse matrices cannot be drawn on 'meta'")
    return dev


def _check_common(
    size: Sequence[int], nnz: int, indices_dtype: torch.dtype, values_dtype: torch.dtype, device: Device
) -> tuple[int | None, int, int]:
    size = _checks.require_size("size", size, (2, 3))
    if isinstance(nnz, bool) or not isinstance(nnz, int):
        raise ValueError(f"nnz must be an int, got {type(nnz).__name__}")
    if nnz < 0:
        raise ValueError(f"nnz must be non-negative, got {nnz}")
    if indices_dtype not in _checks.INDEX_DTYPES:
        raise ValueError(f"indices_dtype must be torch.int32 or torch.int64, got {indices_dtype}")
    _check_values_dtype("values_dtype", values_dtype, device)
    b = size[0] if len(size) == 3 else None
    return b, size[-2], size[-1]


def _assemble(
    rows: torch.Tensor,
    cols: torch.Tensor,
    values: torch.Tensor,
    size: tuple[int, ...],
    layout: torch.layout,
    indices_dtype: torch.dtype,
) -> torch.Tensor:
    """Build COO/CSR from ``(b, k)`` row-major sorted rows/cols/values (``b`` = 1 if unbatched)."""
    b, k = rows.shape
    batched = len(size) == 3
    if layout == torch.sparse_coo:
        if batched:
            bi = torch.arange(b, device=rows.device).repeat_interleave(k)
            idx = torch.stack([bi, rows.reshape(-1), cols.reshape(-1)])
        else:
            idx = torch.stack([rows[0], cols[0]])
        return torch.sparse_coo_tensor(
            idx, values.reshape(-1), size, is_coalesced=True, check_invariants=False
        )
    n = size[-2]
    flat_rows = (rows + torch.arange(b, device=rows.device)[:, None] * n).reshape(-1)
    crow_flat = compress_rows(flat_rows, b * n)
    crow = crow_flat[:-1].reshape(b, n)
    crow = torch.cat([crow - crow[:, :1], torch.full((b, 1), k, device=rows.device, dtype=crow.dtype)], 1)
    crow, col = crow.to(indices_dtype), cols.to(indices_dtype)
    if not batched:
        crow, col, values = crow[0], col[0], values[0]
    return quiet(lambda: torch.sparse_csr_tensor(crow, col, values, size))


def _uniform(
    shape: tuple[int, ...],
    lo: float,
    hi: float,
    dtype: torch.dtype,
    device: Device,
    generator: torch.Generator | None,
) -> torch.Tensor:
    u = torch.rand(
        shape, generator=generator, device=device, dtype=torch.float64 if dtype == torch.float16 else dtype
    )
    return (u * (hi - lo) + lo).to(dtype)


def _check_value_range(value_range: Sequence[float]) -> tuple[float, float]:
    if len(value_range) != 2 or not value_range[0] <= value_range[1]:
        raise ValueError(f"value_range must be (low, high) with low <= high, got {tuple(value_range)}")
    return float(value_range[0]), float(value_range[1])


def _general(
    size: Sequence[int],
    nnz: int,
    layout: torch.layout,
    *,
    indices_dtype: torch.dtype,
    values_dtype: torch.dtype,
    device: Device,
    well_conditioned: bool,
    min_diag_value: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    b, r, c = _check_common(size, nnz, indices_dtype, values_dtype, device)
    if nnz > r * c:
        raise ValueError(f"nnz must be at most rows * cols = {r * c}, got {nnz}")
    dev = torch.device(device)
    keys = _sample_unique(b or 1, r * c, nnz, generator, dev)
    rows, cols = torch.div(keys, c, rounding_mode="floor"), keys % c
    values = _uniform(tuple(keys.shape), 0.0, 1.0, values_dtype, dev, generator)
    if well_conditioned and r == c:
        on_diag = rows == cols
        diag = _uniform(tuple(keys.shape), 0.0, 0.5, values_dtype, dev, generator) + min_diag_value
        values = torch.where(on_diag, diag.to(values_dtype), values)
    return _assemble(rows, cols, values, tuple(size), layout, indices_dtype)


def generate_random_sparse_coo_matrix(
    size: Sequence[int],
    nnz: int,
    *,
    indices_dtype: torch.dtype = torch.int64,
    values_dtype: torch.dtype = torch.float32,
    device: Device = torch.device("cpu"),
    well_conditioned: bool = False,
    min_diag_value: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random coalesced COO matrix ``(r, c)`` or ``(b, r, c)`` with exactly ``nnz`` entries per item.

    Values are U[0, 1); with ``well_conditioned`` (square only) sampled diagonal entries become
    U[0, 0.5) + ``min_diag_value``.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import generate_random_sparse_coo_matrix
    >>> A = generate_random_sparse_coo_matrix((2, 4, 5), 6)
    >>> A.shape, A._nnz(), A.is_coalesced()
    (torch.Size([2, 4, 5]), 12, True)
    """
    return _general(
        size,
        nnz,
        torch.sparse_coo,
        indices_dtype=indices_dtype,
        values_dtype=values_dtype,
        device=device,
        well_conditioned=well_conditioned,
        min_diag_value=min_diag_value,
        generator=generator,
    )


def generate_random_sparse_csr_matrix(
    size: Sequence[int],
    nnz: int,
    *,
    indices_dtype: torch.dtype = torch.int64,
    values_dtype: torch.dtype = torch.float32,
    device: Device = torch.device("cpu"),
    well_conditioned: bool = False,
    min_diag_value: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random CSR matrix like :func:`generate_random_sparse_coo_matrix`, keeping ``indices_dtype``.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import generate_random_sparse_csr_matrix
    >>> A = generate_random_sparse_csr_matrix((4, 4), 5, indices_dtype=torch.int32)
    >>> A.crow_indices().dtype, A._nnz()
    (torch.int32, 5)
    """
    return _general(
        size,
        nnz,
        torch.sparse_csr,
        indices_dtype=indices_dtype,
        values_dtype=values_dtype,
        device=device,
        well_conditioned=well_conditioned,
        min_diag_value=min_diag_value,
        generator=generator,
    )


def _strict_keys(
    b: int, n: int, k: int, upper: bool, generator: torch.Generator | None, dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` distinct strictly triangular coordinates per item, row-major sorted."""
    t = _sample_unique(b, n * (n - 1) // 2, k, generator, dev)
    # strictly lower: t = row (row - 1) / 2 + col with 0 <= col < row
    row = torch.floor((1 + torch.sqrt(1 + 8 * t.to(torch.float64))) / 2).to(torch.int64)
    row = row - (row * (row - 1) // 2 > t).to(torch.int64)
    row = row + ((row + 1) * row // 2 <= t).to(torch.int64)
    col = t - row * (row - 1) // 2
    if upper:
        row, col = col, row
        order = torch.argsort(row * n + col, dim=1)
        row, col = row.gather(1, order), col.gather(1, order)
    return row, col


def _triangular(
    size: Sequence[int],
    nnz: int,
    layout: torch.layout,
    *,
    strict: bool,
    upper: bool,
    indices_dtype: torch.dtype,
    values_dtype: torch.dtype,
    device: Device,
    value_range: Sequence[float],
    well_conditioned: bool | None,
    min_diag_value: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    b, r, c = _check_common(size, nnz, indices_dtype, values_dtype, device)
    if r != c:
        raise ValueError(f"size must be square, got {tuple(size)}")
    lo, hi = _check_value_range(value_range)
    n = r
    dev = torch.device(device)
    bb = b or 1
    if strict:
        if nnz > n * (n - 1) // 2:
            raise ValueError(
                f"nnz must be at most n(n-1)/2 = {n * (n - 1) // 2} for a strictly triangular matrix, "
                f"got {nnz}"
            )
        rows, cols = _strict_keys(bb, n, nnz, upper, generator, dev)
        values = _uniform(tuple(rows.shape), lo, hi, values_dtype, dev, generator)
        return _assemble(rows, cols, values, tuple(size), layout, indices_dtype)
    if not n <= nnz <= n * (n + 1) // 2:
        raise ValueError(
            f"nnz must lie in [n, n(n+1)/2] = [{n}, {n * (n + 1) // 2}] for a triangular matrix "
            f"with its diagonal, got {nnz}"
        )
    orows, ocols = _strict_keys(bb, n, nnz - n, upper, generator, dev)
    diag = torch.arange(n, device=dev).expand(bb, n)
    rows, cols = torch.cat([orows, diag], 1), torch.cat([ocols, diag], 1)
    values = _uniform(tuple(rows.shape), lo, hi, values_dtype, dev, generator)
    if well_conditioned is None or well_conditioned:  # the default: see _DIAGONAL_DOC
        shift = max(float(min_diag_value), lo)
        dvals = _uniform((bb, n), shift, shift + 0.5, values_dtype, dev, generator)
        values = torch.cat([values[:, : nnz - n], dvals], 1)
    order = torch.argsort(rows * n + cols, dim=1)
    rows, cols, values = rows.gather(1, order), cols.gather(1, order), values.gather(1, order)
    return _assemble(rows, cols, values, tuple(size), layout, indices_dtype)


def generate_random_sparse_strictly_triangular_coo_matrix(
    size: Sequence[int],
    nnz: int,
    *,
    upper: bool = True,
    indices_dtype: torch.dtype = torch.int64,
    values_dtype: torch.dtype = torch.float32,
    device: Device = torch.device("cpu"),
    value_range: Sequence[float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random strictly upper (``row < col``) or lower triangular COO matrix, values U[lo, hi).

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import generate_random_sparse_strictly_triangular_coo_matrix as gen
    >>> A = gen((5, 5), 4, upper=False).to_dense()
    >>> bool((A.triu() == 0).all())
    True
    """
    return _triangular(
        size,
        nnz,
        torch.sparse_coo,
        strict=True,
        upper=upper,
        indices_dtype=indices_dtype,
        values_dtype=values_dtype,
        device=device,
        value_range=value_range,
        well_conditioned=False,
        min_diag_value=1.0,
        generator=generator,
    )


def generate_random_sparse_strictly_triangular_csr_matrix(
    size: Sequence[int],
    nnz: int,
    *,
    upper: bool = True,
    indices_dtype: torch.dtype = torch.int64,
    values_dtype: torch.dtype = torch.float32,
    device: Device = torch.device("cpu"),
    value_range: Sequence[float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """CSR version of :func:`generate_random_sparse_strictly_triangular_coo_matrix`.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import generate_random_sparse_strictly_triangular_csr_matrix as gen
    >>> gen((4, 4), 3, indices_dtype=torch.int32).col_indices().dtype
    torch.int32
    """
    return _triangular(
        size,
        nnz,
        torch.sparse_csr,
        strict=True,
        upper=upper,
        indices_dtype=indices_dtype,
        values_dtype=values_dtype,
        device=device,
        value_range=value_range,
        well_conditioned=False,
        min_diag_value=1.0,
        generator=generator,
    )


def generate_random_sparse_triangular_coo_matrix(
    size: Sequence[int],
    nnz: int,
    *,
    upper: bool = True,
    indices_dtype: torch.dtype = torch.int64,
    values_dtype: torch.dtype = torch.float32,
    device: Device = torch.device("cpu"),
    value_range: Sequence[float] = (0.0, 1.0),
    well_conditioned: bool | None = None,
    min_diag_value: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random triangular COO matrix: the whole diagonal plus ``nnz − n`` off-diagonal entries.

    Off-diagonal values are U[lo, hi) with ``(lo, hi) = value_range`` (honoured on every path).
    Diagonal values (always all ``n`` present): by default (``well_conditioned=None``) and with
    ``well_conditioned=True``, U[s, s + 0.5) with ``s = max(min_diag_value, lo)``, so every
    diagonal value is at least ``min_diag_value`` (and within ``value_range`` when
    ``hi − s ≥ 0.5``) and the factor stays well conditioned: for 16 × 16 float32 factors ``L Lᵀ``
    has a condition number in the tens to hundreds.  ``well_conditioned=False`` draws the diagonal
    like the other entries, U[lo, hi) — 0.2.7's default, whose near-zero diagonal values make
    triangular factors badly conditioned (condition numbers of ``L Lᵀ`` up to ~1e9 for 16 × 16).

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import generate_random_sparse_triangular_coo_matrix as gen
    >>> A = gen((4, 4), 6, well_conditioned=True, min_diag_value=2.0).to_dense()
    >>> bool((A.diagonal() >= 2.0).all()), bool((A.tril(-1) == 0).all())
    (True, True)
    """
    return _triangular(
        size,
        nnz,
        torch.sparse_coo,
        strict=False,
        upper=upper,
        indices_dtype=indices_dtype,
        values_dtype=values_dtype,
        device=device,
        value_range=value_range,
        well_conditioned=well_conditioned,
        min_diag_value=min_diag_value,
        generator=generator,
    )


def generate_random_sparse_triangular_csr_matrix(
    size: Sequence[int],
    nnz: int,
    *,
    upper: bool = True,
    indices_dtype: torch.dtype = torch.int64,
    values_dtype: torch.dtype = torch.float32,
    device: Device = torch.device("cpu"),
    value_range: Sequence[float] = (0.0, 1.0),
    well_conditioned: bool | None = None,
    min_diag_value: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random triangular CSR matrix: the whole diagonal plus ``nnz − n`` off-diagonal entries.

    The CSR version of :func:`generate_random_sparse_triangular_coo_matrix` (``indices_dtype`` is
    kept).  Off-diagonal values are U[lo, hi) with ``(lo, hi) = value_range``.
    Diagonal values (always all ``n`` present): by default (``well_conditioned=None``) and with
    ``well_conditioned=True``, U[s, s + 0.5) with ``s = max(min_diag_value, lo)``, so every
    diagonal value is at least ``min_diag_value`` (and within ``value_range`` when
    ``hi − s ≥ 0.5``) and the factor stays well conditioned: for 16 × 16 float32 factors ``L Lᵀ``
    has a condition number in the tens to hundreds.  ``well_conditioned=False`` draws the diagonal
    like the other entries, U[lo, hi) — 0.2.7's default, whose near-zero diagonal values make
    triangular factors badly conditioned (condition numbers of ``L Lᵀ`` up to ~1e9 for 16 × 16).

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import generate_random_sparse_triangular_csr_matrix as gen
    >>> gen((3, 2, 2), 3, upper=False).shape
    torch.Size([3, 2, 2])
    """
    return _triangular(
        size,
        nnz,
        torch.sparse_csr,
        strict=False,
        upper=upper,
        indices_dtype=indices_dtype,
        values_dtype=values_dtype,
        device=device,
        value_range=value_range,
        well_conditioned=well_conditioned,
        min_diag_value=min_diag_value,
        generator=generator,
    )


def _check_layout(layout: torch.layout) -> None:
    if layout not in _checks.SPARSE_LAYOUTS:
        raise ValueError("Unsupported layout type. It should be either torch.sparse_coo or torch.sparse_csr")


def rand_sparse(
    size: Sequence[int],
    nnz: int,
    layout: torch.layout = torch.sparse_coo,
    *,
    indices_dtype: torch.dtype = torch.int64,
    values_dtype: torch.dtype = torch.float32,
    device: Device = torch.device("cpu"),
    well_conditioned: bool = False,
    min_diag_value: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random sparse matrix with exactly ``nnz`` entries per batch item, COO or CSR.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import rand_sparse
    >>> A = rand_sparse((100_000, 100_000), 1_000_000, torch.sparse_csr)
    >>> A._nnz()
    1000000
    """
    _check_layout(layout)
    return _general(
        size,
        nnz,
        layout,
        indices_dtype=indices_dtype,
        values_dtype=values_dtype,
        device=device,
        well_conditioned=well_conditioned,
        min_diag_value=min_diag_value,
        generator=generator,
    )


def rand_sparse_tri(
    size: Sequence[int],
    nnz: int,
    layout: torch.layout = torch.sparse_coo,
    *,
    upper: bool = True,
    strict: bool = False,
    indices_dtype: torch.dtype = torch.int64,
    values_dtype: torch.dtype = torch.float32,
    device: Device = torch.device("cpu"),
    value_range: Sequence[float] = (0.0, 1.0),
    well_conditioned: bool | None = None,
    min_diag_value: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random triangular matrix: strictly triangular (``strict=True``) or with its full diagonal.

    Off-diagonal values are U[lo, hi) with ``(lo, hi) = value_range``.  ``strict=True`` stores no
    diagonal (``well_conditioned`` and ``min_diag_value`` are ignored).  With ``strict=False``:
    Diagonal values (always all ``n`` present): by default (``well_conditioned=None``) and with
    ``well_conditioned=True``, U[s, s + 0.5) with ``s = max(min_diag_value, lo)``, so every
    diagonal value is at least ``min_diag_value`` (and within ``value_range`` when
    ``hi − s ≥ 0.5``) and the factor stays well conditioned: for 16 × 16 float32 factors ``L Lᵀ``
    has a condition number in the tens to hundreds.  ``well_conditioned=False`` draws the diagonal
    like the other entries, U[lo, hi) — 0.2.7's default, whose near-zero diagonal values make
    triangular factors badly conditioned (condition numbers of ``L Lᵀ`` up to ~1e9 for 16 × 16).

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import rand_sparse_tri
    >>> A = rand_sparse_tri((4, 4), 6, torch.sparse_csr, upper=False, well_conditioned=True)
    >>> A._nnz()
    6
    """
    _check_layout(layout)
    return _triangular(
        size,
        nnz,
        layout,
        strict=strict,
        upper=upper,
        indices_dtype=indices_dtype,
        values_dtype=values_dtype,
        device=device,
        value_range=value_range,
        well_conditioned=None if strict else well_conditioned,
        min_diag_value=min_diag_value,
        generator=generator,
    )


def make_spd_sparse(
    n: int,
    layout: torch.layout,
    value_dtype: torch.dtype,
    index_dtype: torch.dtype,
    device: Device,
    sparsity_ratio: float = 0.5,
    nz: int | None = None,
    *,
    return_dense: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random sparse symmetric positive definite ``(n, n)`` matrix and (optionally) its dense copy.

    Off-diagonal entries come in symmetric pairs with N(0, 1) values; the diagonal is each row's
    absolute sum plus one, so the matrix is strictly diagonally dominant with a positive diagonal,
    hence SPD by construction.  Of the ``n(n−1)/2`` off-diagonal pairs, a fraction
    ``sparsity_ratio`` is left empty; or, with ``nz``, ``nz // 2`` pairs (``nz`` off-diagonal
    entries) are left empty, as in 0.2.7.  Memory is ``O(nnz)`` unless ``return_dense`` (the
    default, as in 0.2.7) asks for the dense copy; with ``return_dense=False`` the second element
    is ``None``.  CSR keeps ``index_dtype`` (COO indices are int64, a PyTorch rule).

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import make_spd_sparse
    >>> A, D = make_spd_sparse(5, torch.sparse_csr, torch.float64, torch.int32, "cpu", 0.5)
    >>> bool(torch.linalg.eigvalsh(D).min() > 0), A.crow_indices().dtype
    (True, torch.int32)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if layout not in _checks.SPARSE_LAYOUTS:
        raise ValueError(f"Unsupported layout: {layout}. Use torch.sparse_coo or torch.sparse_csr")
    if index_dtype not in _checks.INDEX_DTYPES:
        raise ValueError(f"index_dtype must be torch.int32 or torch.int64, got {index_dtype}")
    _check_values_dtype("value_dtype", value_dtype, device)
    if not 0.0 <= float(sparsity_ratio) <= 1.0:
        raise ValueError(f"sparsity_ratio must lie in [0, 1], got {sparsity_ratio}")
    pairs = n * (n - 1) // 2
    if nz is not None:
        if isinstance(nz, bool) or not isinstance(nz, int) or nz < 0:
            raise ValueError(f"nz must be a non-negative int, got {nz!r}")
        empty = min(nz // 2, pairs)
    else:
        empty = int(sparsity_ratio * pairs)
    keep = pairs - empty
    dev = torch.device(device)
    lrow, lcol = _strict_keys(1, n, keep, False, generator, dev)
    lrow, lcol = lrow[0], lcol[0]
    work = torch.float64 if value_dtype == torch.float16 else value_dtype
    off = torch.randn(keep, generator=generator, device=dev, dtype=work)
    diag = torch.ones(n, dtype=work, device=dev)
    diag = diag.index_add(0, lrow, off.abs()).index_add(0, lcol, off.abs())
    ar = torch.arange(n, device=dev)
    rows = torch.cat([lrow, lcol, ar])
    cols = torch.cat([lcol, lrow, ar])
    vals = torch.cat([off, off, diag]).to(value_dtype)
    order = torch.argsort(rows * n + cols)
    rows, cols, vals = rows[order], cols[order], vals[order]
    A = _assemble(rows[None], cols[None], vals[None], (n, n), layout, index_dtype)
    dense = A.to_dense() if return_dense else None
    return A, dense
