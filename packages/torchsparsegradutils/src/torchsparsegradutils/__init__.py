"""torchsparsegradutils: drop-in replacement for torchsparsegradutils 0.2.7, built on the tsgu packages.

This package holds no logic: every name is re-exported from tsgu-ops, tsgu-indexed and the other
tsgu packages under the import paths of 0.2.7.  Importing it loads :mod:`torchsparsegradutils.utils`
but not the optional backends (``cupy``, ``jax``) nor ``encoders`` / ``distributions``.

Examples
--------
>>> import torch
>>> import torchsparsegradutils as tsgu
>>> A = torch.eye(3).to_sparse_csr().requires_grad_()
>>> tsgu.sparse_mm(A, torch.ones(3, 2)).sum().backward()
>>> A.grad.layout
torch.sparse_csr
"""

# Names are imported through their 0.2.7 submodules, so that ``torchsparsegradutils.sparse_logsumexp``
# stays the function (as in 0.2.7) even after ``import torchsparsegradutils.sparse_logsumexp``.
from . import utils as utils
from ._version import __version__ as __version__
from .indexed_matmul import gather_mm, segment_mm
from .sparse_logsumexp import sparse_bidir_logsumexp, sparse_logsumexp
from .sparse_lstsq import sparse_generic_lstsq
from .sparse_matmul import sparse_mm
from .sparse_solve import sparse_generic_solve, sparse_triangular_solve

__all__ = [
    "gather_mm",
    "segment_mm",
    "sparse_bidir_logsumexp",
    "sparse_generic_lstsq",
    "sparse_generic_solve",
    "sparse_logsumexp",
    "sparse_mm",
    "sparse_triangular_solve",
]
