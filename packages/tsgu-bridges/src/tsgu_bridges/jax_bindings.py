"""torch ↔ JAX conversions under torchsparsegradutils 0.2.7's names (needs ``jax``).

Dense arrays cross by DLPack (zero-copy where both sides allow); sparse matrices are rebuilt from their
parts as ``jax.experimental.sparse`` ``CSR`` / ``COO`` and torch CSR / COO.  Importing this module
without JAX raises ``ImportError``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import torch
from jax.experimental import sparse as jsparse

from tsgu_ops.internal import check_sparse_indices

__all__ = ["j2t", "j2t_coo", "j2t_csr", "spmm_t4j", "t2j", "t2j_coo", "t2j_csr"]


def _x64_scope(on: bool) -> Any:
    """A context manager enabling (or disabling) 64-bit JAX types for its body only.

    ``jax.enable_x64`` since JAX 0.7; ``jax.experimental.enable_x64`` before (tsgu-bridges[jax]
    accepts jax >= 0.4.30, and Python 3.10 resolves to jax 0.6).
    """
    scope: Any = getattr(jax, "enable_x64", None)
    if scope is None:  # pragma: no cover - exercised by the Python 3.10 cell of the matrix
        from jax import experimental as jax_experimental

        scope = getattr(jax_experimental, "enable_x64")  # noqa: B009  (absent from newer stubs)
    return scope(on)


def t2j(x: torch.Tensor) -> Any:
    """A dense tensor as a JAX array (DLPack; a float64 tensor needs ``jax_enable_x64``).

    Examples
    --------
    >>> import torch
    >>> from tsgu_bridges.jax_bindings import t2j
    >>> t2j(torch.arange(3.0)).tolist()
    [0.0, 1.0, 2.0]
    """
    return jax.dlpack.from_dlpack(x.detach().contiguous())


def j2t(x: Any) -> torch.Tensor:
    """A JAX array as a tensor (DLPack).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from tsgu_bridges.jax_bindings import j2t
    >>> j2t(jnp.arange(3))
    tensor([0, 1, 2], dtype=torch.int32)
    """
    return torch.utils.dlpack.from_dlpack(x)


def t2j_csr(x: torch.Tensor) -> Any:
    """2-D torch CSR → ``jax.experimental.sparse.CSR``.

    Examples
    --------
    >>> import torch
    >>> from tsgu_bridges.jax_bindings import j2t_csr, t2j_csr
    >>> X = t2j_csr(torch.eye(2).to_sparse_csr())
    >>> X.shape, j2t_csr(X).to_dense().diagonal().tolist()
    ((2, 2), [1.0, 1.0])
    """
    if not isinstance(x, torch.Tensor) or x.layout != torch.sparse_csr or x.dim() != 2:
        raise ValueError("x must be a 2-D torch.sparse_csr tensor")
    check_sparse_indices("x", x)  # JAX trusts the indices it is handed
    x = x.detach()
    return jsparse.CSR((t2j(x.values()), t2j(x.col_indices()), t2j(x.crow_indices())), shape=tuple(x.shape))


def j2t_csr(X: Any) -> torch.Tensor:
    """``jax.experimental.sparse.CSR`` → torch CSR."""
    return torch.sparse_csr_tensor(j2t(X.indptr), j2t(X.indices), j2t(X.data), tuple(X.shape))


def t2j_coo(x: torch.Tensor) -> Any:
    """2-D torch COO → ``jax.experimental.sparse.COO`` (coalesced first, with a warning, if needed).

    Examples
    --------
    >>> import torch
    >>> from tsgu_bridges.jax_bindings import j2t_coo, t2j_coo
    >>> j2t_coo(t2j_coo(torch.eye(2).to_sparse())).coalesce().values().tolist()
    [1.0, 1.0]
    """
    if not isinstance(x, torch.Tensor) or x.layout != torch.sparse_coo or x.dim() != 2:
        raise ValueError("x must be a 2-D torch.sparse_coo tensor")
    check_sparse_indices("x", x)  # JAX trusts the indices it is handed
    x = x.detach()
    if not x.is_coalesced():
        warnings.warn("t2j_coo: non-coalesced tensor -> coalescing implicitly", UserWarning, stacklevel=2)
        x = x.coalesce()
    idx = x.indices()
    return jsparse.COO((t2j(x.values()), t2j(idx[0]), t2j(idx[1])), shape=tuple(x.shape))._sort_indices()


def j2t_coo(X: Any) -> torch.Tensor:
    """``jax.experimental.sparse.COO`` → torch COO (int64 indices)."""
    idx = torch.stack([j2t(X.row), j2t(X.col)]).to(torch.int64)
    return torch.sparse_coo_tensor(idx, j2t(X.data), tuple(X.shape))


def spmm_t4j(A: torch.Tensor) -> Callable[[Any], Any]:
    """``x_jax ↦ A @ x`` computed by torch, for JAX solvers that take a callable operator.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import torch
    >>> from tsgu_bridges.jax_bindings import spmm_t4j
    >>> mv = spmm_t4j(2 * torch.eye(2).to_sparse())
    >>> mv(jnp.ones(2)).tolist()
    [2.0, 2.0]
    """
    if isinstance(A, torch.Tensor) and A.layout in (torch.sparse_coo, torch.sparse_csr):
        check_sparse_indices("A", A)  # torch.sparse.mm trusts the indices
    if A.dtype == torch.float64 and not jax.config.read("jax_enable_x64"):
        raise TypeError("A is float64 but jax_enable_x64 is off: enable it to pass float64 arrays to JAX")
    Ad = A.detach()

    def matvec(x: Any) -> Any:
        return t2j(torch.sparse.mm(Ad, j2t(x)) if j2t(x).dim() == 2 else torch.mv(Ad, j2t(x)))

    return matvec
