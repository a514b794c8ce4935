"""0.2.7 path ``torchsparsegradutils.cupy.cupy_bindings`` (re-exports tsgu-bridges)."""

from tsgu_bridges.cupy_bindings import (
    _backend_to_torch,
    _get_array_modules,
    _torch_to_backend,
    c2t_coo,
    c2t_csr,
    have_cupy,
    t2c_coo,
    t2c_csr,
)

__all__ = [
    "_backend_to_torch",
    "_get_array_modules",
    "_torch_to_backend",
    "c2t_coo",
    "c2t_csr",
    "have_cupy",
    "t2c_coo",
    "t2c_csr",
]
