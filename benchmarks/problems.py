"""Built-in benchmark problems (no download): Laplacians, triangular factors, Matrix Market files."""

from __future__ import annotations

import torch


def laplacian_3d(k: int, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.Tensor:
    """7-point 3-D Laplacian on a ``k³`` grid (Dirichlet), coalesced COO ``(k³, k³)``."""
    n = k**3
    idx = torch.arange(n, device=device).reshape(k, k, k)
    rows = [idx.reshape(-1)]
    cols = [idx.reshape(-1)]
    vals = [torch.full((n,), 6.0, dtype=dtype, device=device)]
    for d in range(3):
        a = idx.narrow(d, 0, k - 1).reshape(-1)
        b = idx.narrow(d, 1, k - 1).reshape(-1)
        rows += [a, b]
        cols += [b, a]
        vals += [torch.full((a.numel(),), -1.0, dtype=dtype, device=device)] * 2
    i = torch.stack([torch.cat(rows), torch.cat(cols)])
    return torch.sparse_coo_tensor(i, torch.cat(vals), (n, n)).coalesce()


def lower_triangle(A: torch.Tensor) -> torch.Tensor:
    """The lower triangle (with diagonal) of a coalesced COO matrix, as coalesced COO."""
    i, v = A.indices(), A.values()
    keep = i[0] >= i[1]
    return torch.sparse_coo_tensor(i[:, keep], v[keep], A.shape).coalesce()


def batched_laplacians(
    b: int, k: int, dtype: torch.dtype = torch.float32, layout=torch.sparse_csr
) -> torch.Tensor:
    """``b`` copies of the ``k³`` Laplacian with different diagonals, batched ``(b, n, n)``."""
    L = laplacian_3d(k, dtype)
    n = L.shape[0]
    i, v = L.indices(), L.values()
    scale = 1.0 + torch.arange(b, dtype=dtype)[:, None] * (i[0] == i[1]).to(dtype)[None, :]
    bi = torch.arange(b).repeat_interleave(i.shape[1])
    idx = torch.cat([bi[None], i.repeat(1, b)])
    coo = torch.sparse_coo_tensor(idx, (v[None, :] * scale).reshape(-1), (b, n, n)).coalesce()
    if layout == torch.sparse_coo:
        return coo
    from tsgu_ops import convert_coo_to_csr

    return convert_coo_to_csr(coo)


def load_mtx(path: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A Matrix Market file (e.g. from the SuiteSparse collection) as a coalesced COO tensor."""
    import scipy.io

    M = scipy.io.mmread(path).tocoo()
    idx = torch.stack([torch.as_tensor(M.row, dtype=torch.int64), torch.as_tensor(M.col, dtype=torch.int64)])
    return torch.sparse_coo_tensor(idx, torch.as_tensor(M.data, dtype=dtype), M.shape).coalesce()
