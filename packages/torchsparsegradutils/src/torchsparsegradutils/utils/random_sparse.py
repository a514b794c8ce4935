"""0.2.7 path ``torchsparsegradutils.utils.random_sparse`` (re-exports tsgu-ops generators)."""

from tsgu_ops.random_sparse import (
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
