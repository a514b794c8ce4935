"""Compatibility shims around PyTorch APIs that changed between versions."""

from __future__ import annotations

import torch

from .pattern import quiet


def linalg_solve_triangular_compat(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    upper: bool,
    unitriangular: bool = False,
    transpose: bool = False,
) -> torch.Tensor:
    """Triangular solve for a dense or sparse CSR ``A`` without deprecation warnings.

    A strided ``A`` goes to :func:`torch.linalg.solve_triangular` (``transpose`` transposes ``A``
    and flips ``upper``); a sparse ``A`` to one call of the sparse triangular kernel with PyTorch's
    deprecation warning silenced.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops._compat import linalg_solve_triangular_compat
    >>> A = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    >>> linalg_solve_triangular_compat(A, torch.tensor([[2.0], [2.0]]), upper=False)
    tensor([[1.],
            [1.]])
    """
    if A.layout == torch.strided:
        M = A.mT if transpose else A
        return torch.linalg.solve_triangular(M, B, upper=upper != transpose, unitriangular=unitriangular)
    return quiet(
        lambda: (
            torch.triangular_solve(
                B, A, upper=upper, transpose=transpose, unitriangular=unitriangular
            ).solution
        )
    )
