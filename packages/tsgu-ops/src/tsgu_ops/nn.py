"""Sparse weights as ordinary PyTorch parameters: :class:`SparseParameter`.

A sparse tensor with ``requires_grad`` breaks as soon as training leaves one eager process:
``DistributedDataParallel`` and FSDP do not reduce sparse parameters, ``torch.compile`` rejects
sparse tensors, ``torch.func`` has no batching rule for sparse operations and optimizers, gradient
clipping and ``GradScaler`` treat sparse gradients specially or not at all.  A
:class:`SparseParameter` keeps the sparsity pattern as integer buffers and the stored values as one
dense 1-D :class:`torch.nn.Parameter`; every piece of PyTorch that works with dense parameters then
works unchanged, and :meth:`SparseParameter.mm` / :meth:`SparseParameter.triangular_solve` run the
kernels of :mod:`tsgu_ops._kernels` (the ones every public operation runs) on the values, so that no
sparse tensor enters a compiled graph.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from . import _checks, _kernels
from ._compat import autocast_fp32
from .pattern import COMPUTE_DTYPES, SparsePattern, quiet
from .sampled import raise_no_sparse_under_transforms, sparse_with_values
from .triangular import STRICT_MESSAGE

__all__ = ["SparseParameter"]

_VALUE_DTYPES = COMPUTE_DTYPES


def _autocast_enabled(device_type: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # pragma: no cover - torch < 2.4 takes no device type
        return bool(torch.is_autocast_enabled()) if device_type == "cuda" else False


def _check_source(A: Any) -> None:
    _checks.require_tensor("A", A)
    if A.layout not in _checks.SPARSE_LAYOUTS:
        raise ValueError(
            f"A must be a sparse COO or CSR tensor, got layout {A.layout} (for a dense matrix use "
            "A.to_sparse() or A.to_sparse_csr() first: the stored entries define the pattern)"
        )
    _checks.require_no_dense_dims("A", A)
    if A.dim() not in (2, 3):
        raise ValueError(f"A must be 2-D (n, m) or batched 3-D (b, n, m), got shape {tuple(A.shape)}")
    _checks.require_value_dtype("A", A, _VALUE_DTYPES)
    _checks.check_sparse_indices("A", A)


def _sorted_unique(indices: Tensor, shape: tuple[int, ...]) -> bool:
    """Whether COO ``indices`` are strictly increasing in row-major order (coalesced)."""
    key = torch.zeros(indices.shape[1], dtype=torch.int64, device=indices.device)
    for d, size in enumerate(shape):
        key = key * size + indices[d]
    return bool((key[1:] > key[:-1]).all())


class SparseParameter(nn.Module):
    """A sparse matrix whose stored values are one dense trainable :class:`~torch.nn.Parameter`.

    The pattern (COO ``indices``, or CSR ``crow_indices`` and ``col_indices`` with their int32 or
    int64 dtype) is kept as buffers, the stored values as the parameter ``values`` (1-D, ``nnz``
    entries over the whole batch, in the tensor's storage order).  Because the parameter is dense,
    ``state_dict``/``load_state_dict``, ``.to(device or dtype)``, ``copy.deepcopy``, every
    :mod:`torch.optim` optimizer, gradient clipping, ``GradScaler``, ``DistributedDataParallel``
    and FSDP treat it like any weight.  Gradients stay ``O(nnz)``.

    Calling the module returns the sparse tensor (built by
    :func:`~tsgu_ops.sparse_with_values`, so gradients reach ``values`` without densifying);
    :meth:`mm` and :meth:`triangular_solve` compute on ``values`` directly through custom
    operators, which ``torch.compile`` traces with ``fullgraph=True`` and ``torch.func`` transforms
    (``grad``, ``vjp``, ``jacrev``, ``jacfwd``, ``hessian``, ``vmap`` over a batch of value vectors
    passed as ``values=``).  :meth:`solve` differentiates a black-box solver given as a callable
    (for instance tsgu-krylov's ``sparse_generic_solve``).

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR tensor, 2-D ``(n, m)`` or batched 3-D ``(b, n, m)``, float32, float64,
        complex64 or complex128 (conjugate (Wirtinger) gradients), without dense dimensions.
        An uncoalesced COO tensor is coalesced first (duplicate entries
        summed); its indices are validated.  ``A`` itself is neither kept nor modified.
    requires_grad : bool
        Whether ``values`` is trainable (default ``True``).

    Raises
    ------
    TypeError
        If ``A`` is not a tensor or has an unsupported value dtype.
    ValueError
        If ``A`` is dense or hybrid, not 2-D/3-D, or its indices are malformed (including a
        batched CSR tensor whose items hold different numbers of entries).

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops.nn import SparseParameter
    >>> W = SparseParameter(torch.tensor([[2.0, 0.0], [0.0, 3.0]]).to_sparse_csr())
    >>> W.values
    Parameter containing:
    tensor([2., 3.], requires_grad=True)
    >>> y = W.mm(torch.ones(2, 1))
    >>> y.sum().backward()
    >>> y.detach().flatten(), W.values.grad
    (tensor([2., 3.]), tensor([1., 1.]))
    >>> W().layout
    torch.sparse_csr
    """

    values: nn.Parameter
    indices: Tensor
    crow_indices: Tensor
    col_indices: Tensor
    _pattern: SparsePattern

    def __init__(self, A: Tensor, *, requires_grad: bool = True) -> None:
        super().__init__()
        _check_source(A)
        A = A.detach()
        if A.layout == torch.sparse_coo and not A.is_coalesced():
            A = A.coalesce()
        self._layout = A.layout
        self._shape = tuple(int(s) for s in A.shape)
        if A.layout == torch.sparse_coo:
            self.register_buffer("indices", A._indices().clone())
            values = A._values()
        else:
            self.register_buffer("crow_indices", A.crow_indices().clone())
            self.register_buffer("col_indices", A.col_indices().clone())
            values = A.values()
        self.values = nn.Parameter(values.reshape(-1).clone(), requires_grad=requires_grad)
        self._build_pattern()

    # --------------------------------------------------------------------------------------------
    # description
    @property
    def layout(self) -> torch.layout:
        """``torch.sparse_coo`` or ``torch.sparse_csr``."""
        return self._layout

    @property
    def shape(self) -> torch.Size:
        """``(n, m)`` or ``(b, n, m)``."""
        return torch.Size(self._shape)

    @property
    def nnz(self) -> int:
        """Number of stored entries (over the whole batch)."""
        return int(self.values.shape[0])

    @property
    def index_dtype(self) -> torch.dtype:
        """The dtype of the index buffers (int64 for COO; int32 or int64 for CSR)."""
        return self._index_tensors()[0].dtype

    def extra_repr(self) -> str:
        layout = str(self._layout).replace("torch.", "")
        return (
            f"shape={self._shape}, layout={layout}, nnz={self.nnz}, "
            f"index_dtype={str(self.index_dtype).replace('torch.', '')}"
        )

    def _index_tensors(self) -> tuple[Tensor, ...]:
        if self._layout == torch.sparse_coo:
            return (self.indices,)
        return (self.crow_indices, self.col_indices)

    # --------------------------------------------------------------------------------------------
    # the pattern in kernel form (non-persistent buffers, rebuilt when the indices are loaded)
    def _like(self, indices: tuple[Tensor, ...], values: Tensor) -> Tensor:
        if self._layout == torch.sparse_coo:
            return torch.sparse_coo_tensor(
                indices[0], values, self._shape, is_coalesced=True, check_invariants=False
            )
        v = values.reshape(self._shape[0], -1) if len(self._shape) == 3 else values
        crow, col = indices
        return quiet(lambda: torch.sparse_csr_tensor(crow, col, v, self._shape, check_invariants=False))

    def _build_pattern(self) -> None:
        """The :class:`SparsePattern` of the index buffers, with every piece of index analysis the
        kernels use computed now (so that a compiled graph reads them as constants)."""
        like = self._like(self._index_tensors(), self.values.detach())
        pattern = SparsePattern(like)
        pattern.kernel_indices  # noqa: B018  (computed once, here)
        if pattern.n == pattern.m and not pattern.has_diagonal:
            pattern.unit_diagonal_layout(True)
            pattern.unit_diagonal_layout(False)
        self._pattern = pattern
        self._pattern_of = self._index_tensors()

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        out = super()._apply(fn, recurse)
        if any(a is not b for a, b in zip(self._index_tensors(), self._pattern_of)):
            self._build_pattern()  # the index buffers moved (``.to(device)``, ``.cuda()``, ...)
        return out

    # --------------------------------------------------------------------------------------------
    # the sparse tensor
    def forward(self, values: Tensor | None = None) -> Tensor:
        """The sparse tensor (layout, shape and indices of ``A``) holding ``values``.

        ``values`` defaults to the parameter; gradients reach it with ``O(nnz)`` memory.
        """
        v = self._values_arg(values)
        if _kernels.is_wrapped(v):
            raise_no_sparse_under_transforms("SparseParameter.forward")
        return sparse_with_values(self._like(self._index_tensors(), v.detach()), v)

    def _values_arg(self, values: Tensor | None) -> Tensor:
        if values is None:
            return self.values
        _checks.require_tensor("values", values)
        if values.shape != self.values.shape:
            raise ValueError(
                f"values must have shape {tuple(self.values.shape)} (one per stored entry), got "
                f"{tuple(values.shape)}"
            )
        return values

    # --------------------------------------------------------------------------------------------
    # operations on the values: custom operators, no sparse tensor
    def _check_rhs(self, name: str, B: Any, values: Tensor, rows: int) -> Tensor:
        _checks.require_tensor(name, B)
        if B.layout != torch.strided:
            raise ValueError(f"{name} must be a dense (strided) tensor, got {B.layout}")
        batched = len(self._shape) == 3
        allowed = (3,) if batched else (1, 2, 3)
        if B.dim() not in allowed:
            raise ValueError(
                f"{name} must be {'3-D (b, k, p)' if batched else '1-D (k,), 2-D (k, p) or 3-D (b, k, p)'} "
                f"for a parameter of shape {self._shape}, got shape {tuple(B.shape)}"
            )
        k = B.shape[0] if B.dim() == 1 else B.shape[-2]
        if k != rows or (batched and B.shape[0] != self._shape[0]):
            raise ValueError(
                f"{name} has shape {tuple(B.shape)}, incompatible with the parameter of shape "
                f"{self._shape} (expected {rows} rows"
                f"{' and batch ' + str(self._shape[0]) if batched else ''})"
            )
        if B.dtype != values.dtype:
            if B.is_floating_point() and _autocast_enabled(B.device.type):
                B = B.to(values.dtype)  # sparse kernels run in the parameter's precision
            else:
                _checks.require_same_dtype("values", values, name, B)
        _checks.require_same_device("values", values, name, B)
        return B

    def _apply_flat(self, B: Tensor, rows: int, op: Any) -> Tensor:
        """``op`` on the flattened right-hand side (the pattern's rhs flattening; a vector as one
        column), the result shaped back like ``B``."""
        vector = B.dim() == 1
        Bm = B.unsqueeze(-1) if vector else B
        p = self._pattern
        Y = p.unflat(op(p.flat_rhs(Bm)), Bm, rows)
        return Y.squeeze(-1) if vector else Y

    @autocast_fp32
    def mm(self, B: Tensor, *, transpose: bool = False, values: Tensor | None = None) -> Tensor:
        """``A @ B`` (``Aᵀ @ B`` when ``transpose``) with ``A`` this sparse matrix.

        Shapes as :func:`tsgu_ops.sparse_mm`: ``(n, m) @ (m, p)``, ``(n, m) @ (b, m, p)`` (shared
        matrix), ``(b, n, m) @ (b, m, p)``, and a vector ``(m,)`` for a 2-D parameter.  Gradients
        reach ``values`` (``O(nnz)``) and ``B``.  Under autocast ``B`` is cast to the parameter's
        dtype.

        Parameters
        ----------
        B : Tensor
            Dense right-hand side, same dtype and device as the values.
        transpose : bool
            Multiply by the transpose.
        values : Tensor, optional
            Values to use instead of the parameter (same shape): for ``torch.func`` transforms.

        Returns
        -------
        Tensor
            Dense product.

        Examples
        --------
        >>> import torch
        >>> from tsgu_ops.nn import SparseParameter
        >>> W = SparseParameter(torch.tensor([[1.0, 2.0], [0.0, 3.0]]).to_sparse())
        >>> W.mm(torch.tensor([1.0, 1.0])).detach(), W.mm(torch.tensor([1.0, 1.0]), transpose=True).detach()
        (tensor([3., 3.]), tensor([1., 5.]))
        """
        v = self._values_arg(values)
        n, m = self._shape[-2], self._shape[-1]
        B = self._check_rhs("B", B, v, n if transpose else m)
        return self._apply_flat(
            B, m if transpose else n, lambda X: _kernels.mm(self._pattern, v, X, transpose)
        )

    @autocast_fp32
    def triangular_solve(
        self,
        B: Tensor,
        upper: bool = True,
        unitriangular: bool = False,
        transpose: bool = False,
        *,
        values: Tensor | None = None,
    ) -> Tensor:
        """Solve ``A X = B`` (``Aᵀ X = B`` when ``transpose``) for this triangular matrix.

        As :func:`tsgu_ops.sparse_triangular_solve`: stored entries outside the triangle named by
        ``upper`` are ignored (and get a zero gradient); ``unitriangular=True`` takes the diagonal
        as ones and needs a strictly triangular pattern.  Gradients reach ``values`` and ``B``.

        Raises
        ------
        ValueError
            If the matrix is not square, ``unitriangular=True`` with stored diagonal entries, or
            ``B`` does not fit (``TypeError`` for a different dtype).

        Examples
        --------
        >>> import torch
        >>> from tsgu_ops.nn import SparseParameter
        >>> L = SparseParameter(torch.tensor([[2.0, 0.0], [1.0, 4.0]]).to_sparse_csr())
        >>> L.triangular_solve(torch.tensor([[2.0], [9.0]]), upper=False).detach()
        tensor([[1.],
                [2.]])
        """
        v = self._values_arg(values)
        n, m = self._shape[-2], self._shape[-1]
        if n != m:
            raise ValueError(f"triangular_solve needs a square matrix, the parameter has shape {self._shape}")
        if unitriangular and self._pattern.has_diagonal:
            raise ValueError(STRICT_MESSAGE)
        B = self._check_rhs("B", B, v, n)

        def op(X: Tensor) -> Tensor:
            return _kernels.trisolve(
                self._pattern, v, X, upper=upper, unitriangular=unitriangular, transpose=transpose
            )

        return self._apply_flat(B, n, op)

    @_kernels.eager_under_compile(
        reason=(
            "SparseParameter.solve runs its solver eagerly (a black box to torch.compile): a graph "
            "break, which fullgraph=True forbids; .mm and .triangular_solve compile with fullgraph=True"
        )
    )
    @autocast_fp32
    def solve(
        self,
        B: Tensor,
        solve: Any = None,
        transpose_solve: Any = None,
        *,
        values: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """``A⁻¹ B`` through a black-box solver, differentiated implicitly.

        ``solve(A, B, **kwargs)`` receives this matrix as a detached sparse CSR tensor (a batched
        parameter as one block-diagonal ``(b·n, b·n)`` system) and a dense 2-D right-hand side,
        and returns ``A⁻¹ B``; ``transpose_solve(A, B, **kwargs)`` returns ``A⁻ᵀ B`` (when
        omitted, ``solve`` is called with ``Aᵀ``).  tsgu-ops depends on no solver package: for
        tsgu-krylov's solvers pass ``functools.partial(tsgu_krylov.sparse_generic_solve,
        solve="cg")``.  Gradients reach ``values`` and ``B`` (``dB = A⁻ᵀ G`` by one more solve,
        ``dA = −dB Xᵀ`` at the stored entries), to any order; ``torch.func`` transforms apply
        (``values=``; ``vmap`` solves item by item).  Inside ``torch.compile`` the solve is a
        graph break, not a failure.

        Raises
        ------
        TypeError
            If ``solve`` is not a callable (``None`` or a solver name: tsgu-ops does not pick a
            solver), or ``transpose_solve`` is neither ``None`` nor a callable.
        ValueError
            For a non-square matrix, a right-hand side that does not fit, or a solver returning
            the wrong shape.

        Examples
        --------
        >>> import torch
        >>> from tsgu_ops.nn import SparseParameter
        >>> W = SparseParameter(torch.tensor([[4.0, 1.0], [0.0, 2.0]], dtype=torch.float64).to_sparse_csr())
        >>> dense = lambda A, B: torch.linalg.solve(A.to_dense(), B)
        >>> W.solve(torch.tensor([1.0, 2.0], dtype=torch.float64), dense).detach()
        tensor([0., 1.], dtype=torch.float64)
        """
        if not callable(solve) or (transpose_solve is not None and not callable(transpose_solve)):
            raise TypeError(
                "SparseParameter.solve needs the solver as a callable solve(A, B, **kwargs) -> X "
                f"(and optionally transpose_solve), got solve={solve!r}; tsgu-ops picks no solver "
                "itself. For tsgu-krylov's solvers pass e.g. "
                'functools.partial(tsgu_krylov.sparse_generic_solve, solve="cg")'
            )
        v = self._values_arg(values)
        n, m = self._shape[-2], self._shape[-1]
        if n != m:
            raise ValueError(f"solve needs a square matrix, the parameter has shape {self._shape}")
        B = self._check_rhs("B", B, v, n)
        pattern = self._pattern

        def kernel(_A: Any, vals: Tensor, rhs: Tensor, transposed: bool) -> Tensor:
            flat = pattern.flat_rhs(rhs)
            if transposed and transpose_solve is not None:
                X = transpose_solve(pattern.csr(vals), flat, **kwargs)
            elif transposed:
                X = solve(pattern.csr_t(vals), flat, **kwargs)
            else:
                X = solve(pattern.csr(vals), flat, **kwargs)
            if not isinstance(X, Tensor) or X.numel() != flat.numel():
                got = tuple(X.shape) if isinstance(X, Tensor) else type(X).__name__
                raise ValueError(
                    "the solver must return a tensor of the right-hand side's shape "
                    f"{tuple(flat.shape)}, got {got}"
                )
            return pattern.unflat(X.to(flat.dtype).reshape(flat.shape), rhs, n)

        vector = B.dim() == 1
        Bm = B.unsqueeze(-1) if vector else B
        X = _kernels.SolveFn.apply(v, Bm, _kernels.Source(None), pattern, kernel, False, None)
        return X.squeeze(-1) if vector else X  # type: ignore[no-any-return]

    # --------------------------------------------------------------------------------------------
    # checkpoints: validate before anything is copied, rebuild the kernel pattern afterwards
    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        key = prefix + "values"
        if key in state_dict:
            v = state_dict[key]
            if not isinstance(v, Tensor):
                raise TypeError(f"state_dict[{key!r}] must be a tensor, got {type(v).__name__}")
            if v.shape != self.values.shape:
                raise ValueError(
                    f"state_dict[{key!r}] has shape {tuple(v.shape)}, but this SparseParameter "
                    f"stores {self.nnz} values (shape {tuple(self.values.shape)}); nothing was loaded"
                )
            if not (v.is_floating_point() or v.is_complex()):
                raise TypeError(f"state_dict[{key!r}] must hold floating-point values, got {v.dtype}")
        names = ("indices",) if self._layout == torch.sparse_coo else ("crow_indices", "col_indices")
        mine = self._index_tensors()
        new: list[Tensor] = []
        for name, cur in zip(names, mine):
            k = prefix + name
            t = state_dict.get(k, cur)
            if not isinstance(t, Tensor):
                raise TypeError(f"state_dict[{k!r}] must be a tensor, got {type(t).__name__}")
            if t.shape != cur.shape or t.dtype not in _checks.INDEX_DTYPES:
                raise ValueError(
                    f"state_dict[{k!r}] must be an integer tensor of shape {tuple(cur.shape)} like "
                    f"this SparseParameter's pattern, got {t.dtype} of shape {tuple(t.shape)}; "
                    "nothing was loaded"
                )
            new.append(t.to(device=cur.device, dtype=cur.dtype))
        changed = any(not torch.equal(a, b) for a, b in zip(new, mine))
        if changed:
            zeros = torch.zeros(self.nnz, dtype=self.values.dtype, device=new[0].device)
            like = self._like(tuple(new), zeros)
            _checks.check_sparse_indices(f"state_dict[{prefix!r} + index buffers]", like)
            if self._layout == torch.sparse_coo and not _sorted_unique(new[0], self._shape):
                raise ValueError(
                    f"state_dict[{prefix + 'indices'!r}] must hold sorted, unique (coalesced) COO "
                    "indices; nothing was loaded"
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if changed:
            self._build_pattern()
