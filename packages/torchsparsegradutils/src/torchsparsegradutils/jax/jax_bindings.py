"""0.2.7 path ``torchsparsegradutils.jax.jax_bindings`` (re-exports tsgu-bridges; needs jax)."""

from tsgu_bridges.jax_bindings import j2t, j2t_coo, j2t_csr, spmm_t4j, t2j, t2j_coo, t2j_csr

__all__ = ["j2t", "j2t_coo", "j2t_csr", "spmm_t4j", "t2j", "t2j_coo", "t2j_csr"]
