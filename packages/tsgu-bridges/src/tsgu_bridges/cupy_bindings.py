"""torch ↔ CuPy (CUDA) / NumPy-SciPy (CPU) conversions under torchsparsegradutils 0.2.7's names.

The backend follows the tensor: a CPU tensor goes to NumPy/SciPy (zero-copy, see
:mod:`tsgu_bridges.scipy_bridge`), a CUDA tensor to CuPy through DLPack (zero-copy).  CuPy is imported
only when a CUDA tensor or a CuPy array arrives, never at import time; without CuPy a CUDA tensor gets
a clear error (0.2.7 sent it to NumPy and crashed).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg  # a submodule, used as ``xsp.linalg``
import torch

from ._checks import EXPORT_DTYPES, check_matrix
from .scipy_bridge import _coalesced, _coo_to_scipy, _csr_to_scipy

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

#: Whether CuPy is installed (checked without importing it).
have_cupy: bool = importlib.util.find_spec("cupy") is not None


def _cupy() -> tuple[Any, Any]:
    if not have_cupy:
        raise RuntimeError(
            "a CUDA tensor needs CuPy for this bridge, and CuPy is not installed: "
            "pip install tsgu-bridges[cupy] (or move the tensor to the CPU for SciPy)"
        )
    import cupy
    import cupyx.scipy.sparse
    import cupyx.scipy.sparse.linalg  # a submodule, not imported by ``cupyx.scipy.sparse``

    return cupy, cupyx.scipy.sparse


def _is_cupy_array(x: Any) -> bool:
    return type(x).__module__.startswith("cupy")


def _get_array_modules(x: Any) -> tuple[Any, Any]:
    """``(xp, xsp)``: NumPy/SciPy for CPU tensors and host arrays, CuPy/cupyx for CUDA ones."""
    if isinstance(x, torch.Tensor):
        return _cupy() if x.device.type == "cuda" else (np, scipy.sparse)
    if _is_cupy_array(x):
        return _cupy()
    return np, scipy.sparse


def _torch_to_backend(t: torch.Tensor, xp: Any = None) -> Any:
    """A dense tensor as a NumPy (CPU, shared memory) or CuPy (CUDA, DLPack) array."""
    t = t.detach()
    if t.device.type == "cuda":
        cupy, _ = _cupy()
        return cupy.from_dlpack(t.contiguous())
    return t.numpy() if xp is None or xp is np else xp.asarray(t.numpy())


def _backend_to_torch(a: Any) -> torch.Tensor:
    """A NumPy or CuPy array as a tensor (shared memory)."""
    if _is_cupy_array(a):
        return torch.from_dlpack(a)
    return torch.as_tensor(np.asarray(a))


def _check2d(x: Any, layout: torch.layout, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.layout != layout or x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D {layout} tensor, got a {x.dim()}-D {x.layout} tensor")
    # the backend shares the tensor's index arrays and trusts them: validate first
    check_matrix(name, x, EXPORT_DTYPES)
    return x.detach()


def t2c_csr(x: torch.Tensor) -> Any:
    """2-D torch CSR → ``csr_matrix`` (SciPy on CPU, cupyx on CUDA), sharing memory.

    Examples
    --------
    >>> import torch
    >>> from tsgu_bridges import t2c_csr
    >>> t2c_csr(torch.eye(2).to_sparse_csr()).toarray()
    array([[1., 0.],
           [0., 1.]], dtype=float32)
    """
    x = _check2d(x, torch.sparse_csr, "x")
    if x.device.type == "cuda":
        cupy, xsp = _cupy()
        parts = (
            cupy.from_dlpack(x.values()),
            cupy.from_dlpack(x.col_indices()),
            cupy.from_dlpack(x.crow_indices()),
        )
        return xsp.csr_matrix(parts, shape=tuple(x.shape))
    return _csr_to_scipy(x.crow_indices(), x.col_indices(), x.values(), tuple(x.shape))


def c2t_csr(X: Any) -> torch.Tensor:
    """Anything with ``.data/.indices/.indptr/.shape`` → torch CSR (shared memory).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from tsgu_bridges import c2t_csr
    >>> c2t_csr(sp.eye(2, format="csr")).to_dense()
    tensor([[1., 0.],
            [0., 1.]], dtype=torch.float64)
    """
    return torch.sparse_csr_tensor(
        _backend_to_torch(X.indptr), _backend_to_torch(X.indices), _backend_to_torch(X.data), tuple(X.shape)
    )


def t2c_coo(x: torch.Tensor) -> Any:
    """2-D torch COO → ``coo_matrix`` (coalesced first, with a warning, when needed).

    Examples
    --------
    >>> import torch
    >>> from tsgu_bridges import t2c_coo
    >>> t2c_coo(torch.eye(2).to_sparse()).nnz
    2
    """
    x = _coalesced(_check2d(x, torch.sparse_coo, "x"))
    if x.device.type == "cuda":
        cupy, xsp = _cupy()
        idx = x.indices()
        return xsp.coo_matrix(
            (cupy.from_dlpack(x.values()), (cupy.from_dlpack(idx[0]), cupy.from_dlpack(idx[1]))),
            shape=tuple(x.shape),
        )
    return _coo_to_scipy(x.indices(), x.values(), tuple(x.shape))


def c2t_coo(X: Any) -> torch.Tensor:
    """Anything with ``.data/.row/.col/.shape`` → torch COO (int64 indices, not marked coalesced).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from tsgu_bridges import c2t_coo
    >>> c2t_coo(sp.eye(2, format="coo"))._indices()
    tensor([[0, 1],
            [0, 1]])
    """
    idx = torch.stack([_backend_to_torch(X.row), _backend_to_torch(X.col)]).to(torch.int64)
    return torch.sparse_coo_tensor(idx, _backend_to_torch(X.data), tuple(X.shape))
