"""0.2.7 path ``torchsparsegradutils.sparse_lstsq`` (re-exports tsgu-krylov)."""

from tsgu_krylov.generic_lstsq import SparseGenericLstsq, sparse_generic_lstsq

__all__ = ["SparseGenericLstsq", "sparse_generic_lstsq"]
