"""``sparse_triangular_solve``: triangular solves with a sparse matrix and a sparse gradient."""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import Function

from . import _checks
from .implicit import Kernel, solve_grad_values, solve_sparse
from .pattern import COMPUTE_DTYPES, SparsePattern, conj, quiet
from .sampled import deliver, register_use


def _check(A: Any, B: Any) -> None:
    """The 0.2.7 validation of ``sparse_triangular_solve`` (messages and order kept)."""
    if not isinstance(A, torch.Tensor) or not isinstance(B, torch.Tensor):
        raise ValueError("Both A and B should be instances of torch.Tensor")
    if A.dim() < 2 or B.dim() < 2:
        raise ValueError("Both A and B should be at least 2-dimensional tensors")
    if A.dim() != B.dim() or A.dim() not in (2, 3):
        raise ValueError("A and B must both be 2D or both be 3D tensors")
    if A.layout not in (torch.sparse_coo, torch.sparse_csr):
        raise ValueError("A should be in either COO or CSR sparse format")
    if B.layout != torch.strided:
        raise ValueError("B must be a dense (strided) tensor")
    if A.size(-1) != A.size(-2):
        raise ValueError("A must be square on its last two dimensions")
    if A.size(-2) != B.size(-2):
        raise ValueError(f"Incompatible inner dimensions: A[..., {A.size(-1)}] vs B[..., {B.size(-2)}]")
    if A.dim() == 3 and A.size(0) != B.size(0):
        raise ValueError("If batched, A and B must have the same batch size")
    _checks.require_no_dense_dims("A", A)
    _checks.require_value_dtype("A", A, COMPUTE_DTYPES)
    _checks.require_same_dtype("A", A, "B", B)
    _checks.require_same_device("A", A, "B", B)
    _checks.check_sparse_indices("A", A)


def _triangle_mask(pattern: SparsePattern, upper: bool) -> torch.Tensor:
    """Entries inside the triangle that the solve reads (the other triangle is ignored)."""
    return pattern.cols >= pattern.rows if upper else pattern.cols <= pattern.rows


def csr_triangular_solve(
    S: torch.Tensor, B: torch.Tensor, *, upper: bool, unitriangular: bool = False, transpose: bool = False
) -> torch.Tensor:
    """``op(S)⁻¹ B`` for a 2-D CSR triangular ``S`` (sorted columns) and a dense ``(n, p)`` ``B``.

    The bare native kernel, without validation or autograd: what the differentiable solve and
    tsgu-krylov's incomplete-factorisation preconditioners run.
    """
    if S._nnz() == 0:  # no stored entry: the identity, or a zero (singular) diagonal
        return B.clone() if unitriangular else B / torch.zeros((), dtype=B.dtype, device=B.device)
    Bc = B.resolve_conj().contiguous()
    return quiet(
        lambda: (
            torch.triangular_solve(
                Bc, S, upper=upper, transpose=transpose, unitriangular=unitriangular
            ).solution
        )
    )


def _unit_diagonal_layout(
    pattern: SparsePattern, upper: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """CSR indices ``(crow, col)`` of the pattern plus an explicit diagonal, and where the stored
    entries go among them; ``None`` when an entry lies outside the strict triangle.

    PyTorch's CSR triangular solve is an order of magnitude slower with ``unitriangular=True``
    than with a stored unit diagonal, so unit-triangular solves store the ones (built once per
    pattern).  Within a row the diagonal follows every entry of a strictly lower row and precedes
    every entry of a strictly upper one, so the positions are index arithmetic, not a sort.
    """
    cache = pattern.__dict__.setdefault("_unit_layouts", {})
    if upper in cache:
        return cache[upper]  # type: ignore[no-any-return]
    rows, cols = pattern.sorted_rows, pattern.sorted_cols.to(torch.int64)
    strict = bool((cols > rows).all()) if upper else bool((cols < rows).all())
    layout = None
    if strict:
        N, nc = pattern.N, pattern.n_canonical
        dev = rows.device
        crow = pattern.crow.to(torch.int64) + torch.arange(N + 1, device=dev)
        old = torch.arange(nc, device=dev) + rows + (1 if upper else 0)
        diag = crow[:-1] if upper else crow[1:] - 1
        col = torch.empty(nc + N, dtype=torch.int64, device=dev)
        col[old] = cols
        col[diag] = torch.arange(N, device=dev)
        layout = (crow, col, old)
    cache[upper] = layout
    return layout


def _triangular_kernel(pattern: SparsePattern, upper: bool, unitriangular: bool) -> Kernel:
    def kernel(A: torch.Tensor, values: torch.Tensor, B: torch.Tensor, transposed: bool) -> torch.Tensor:
        layout = _unit_diagonal_layout(pattern, upper) if unitriangular else None
        if layout is not None:
            crow, col, old = layout
            v = values.new_ones(col.numel())
            v[old] = pattern._sorted(values)
            S = quiet(
                lambda: torch.sparse_csr_tensor(crow, col, v, (pattern.N, pattern.M), check_invariants=False)
            )
            X = csr_triangular_solve(S, pattern.flat_rhs(B), upper=upper, transpose=transposed)
        else:
            S = pattern.csr(values)
            X = csr_triangular_solve(
                S, pattern.flat_rhs(B), upper=upper, unitriangular=unitriangular, transpose=transposed
            )
        return pattern.unflat(X, B, pattern.n)

    return kernel


def _pattern_for(A: torch.Tensor, unitriangular: bool) -> SparsePattern:
    pattern = SparsePattern.of(A)
    if unitriangular and pattern.nnz and bool((pattern.rows == pattern.cols).any()):
        raise ValueError("First input should be strictly triangular (i.e. unit diagonals is implicit)")
    return pattern


class SparseTriangularSolve(Function):
    """Autograd Function behind :func:`sparse_triangular_solve`.

    ``SparseTriangularSolve.apply(A, B, upper, unitriangular, transpose)``.  Backward: with
    ``Gb = op(A)⁻ᴴ G`` (a differentiable solve), ``dB = Gb`` and ``dA[i, j] = −Gb[i] · conj(X[j])``
    (``−conj(X[i]) · Gb[j]`` when ``transpose``) at the stored entries of the triangle that the
    solve reads (``conj`` is a no-op for real dtypes).  :func:`sparse_triangular_solve` runs the
    same computation on ``A``'s values (:class:`~tsgu_ops.implicit.SolveOnValues`).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        A: torch.Tensor,
        B: torch.Tensor,
        upper: bool = True,
        unitriangular: bool = False,
        transpose: bool = False,
    ) -> torch.Tensor:
        pattern = _pattern_for(A, unitriangular)
        kernel = _triangular_kernel(pattern, upper, unitriangular)
        X = kernel(A, pattern.values(A), B, transpose)
        ctx.pattern, ctx.kernel, ctx.flags = pattern, kernel, (upper, transpose)
        register_use(ctx, A)
        ctx.save_for_backward(A, X)
        return X

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        A, X = ctx.saved_tensors
        upper, transpose = ctx.flags
        pattern: SparsePattern = ctx.pattern
        mask = _triangle_mask(pattern, upper)
        # op(A)⁻ᴴ G = conj(op(A)⁻ᵀ conj(G)); conj is a no-op for real dtypes
        Gb = conj(solve_sparse(A, conj(G), ctx.kernel, transposed=not transpose, mask=mask, pattern=pattern))
        dA = None
        if ctx.needs_input_grad[0]:
            dA = deliver(ctx, 0, pattern, solve_grad_values(pattern, Gb, X, transpose, mask), A)
        dB = Gb if ctx.needs_input_grad[1] else None
        return dA, dB, None, None, None


def sparse_triangular_solve(
    A: torch.Tensor,
    B: torch.Tensor,
    upper: bool = True,
    unitriangular: bool = False,
    transpose: bool = False,
) -> torch.Tensor:
    """Solve ``A X = B`` (or ``Aᵀ X = B``) for a sparse triangular ``A``, with a sparse gradient.

    ``upper`` says which triangle of ``A`` itself holds the matrix (entries in the other triangle
    are ignored, as in :func:`torch.linalg.solve_triangular`); ``unitriangular=True`` means the
    diagonal is implicitly 1 and ``A`` must store strictly triangular entries only.  A batch is
    solved as one block-diagonal system (no loop over the batch); a COO ``A`` is converted to CSR
    once per call (forward and backward share it).

    Gradients, with ``Gb = A⁻ᴴ G`` (``conj(A)⁻¹ G`` when ``transpose``): ``dB = Gb`` and, at the
    stored entries, ``dA[i, j] = −Gb[i] · conj(X[j])`` (``−conj(X[i]) · Gb[j]`` when
    ``transpose``), with ``A``'s layout, indices and index dtype.  For real dtypes ``conj`` is a
    no-op (``A⁻ᴴ = A⁻ᵀ``); for complex dtypes these are the conjugate (Wirtinger) gradients that
    PyTorch's autograd uses.  Second derivatives are supported.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, ``(n, n)`` or ``(b, n, n)``; float32, float64, complex64 or complex128
        values; int32/int64 indices.
    B : Tensor
        Dense ``(n, p)`` or ``(b, n, p)`` (a 1-D ``B`` is rejected, as in 0.2.7).
    upper : bool
        ``A`` is upper triangular (default) or lower triangular.
    unitriangular : bool
        The diagonal is implicit ones; a stored diagonal entry raises ``ValueError``.
    transpose : bool
        Solve with ``Aᵀ`` instead of ``A``.

    Returns
    -------
    Tensor
        ``X`` with ``B``'s shape.

    Raises
    ------
    ValueError
        The 0.2.7 messages (non-tensors, ranks, layouts, non-square ``A``, inner dimensions, batch
        size), and "First input should be strictly triangular (i.e. unit diagonals is implicit)"
        for ``unitriangular=True`` with a stored diagonal, now raised in the forward pass; and for
        malformed indices of ``A`` or a ``meta`` tensor.
    TypeError
        If ``A`` has a dtype other than float32, float64, complex64, complex128, or ``A`` and
        ``B`` have different dtypes.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops import sparse_triangular_solve
    >>> L = torch.tensor([[2.0, 0.0], [1.0, 4.0]]).to_sparse_csr()
    >>> sparse_triangular_solve(L, torch.tensor([[2.0], [9.0]]), upper=False)
    tensor([[1.],
            [2.]])
    """
    _check(A, B)
    pattern = _pattern_for(A, unitriangular)
    kernel = _triangular_kernel(pattern, upper, unitriangular)
    return solve_sparse(
        A, B, kernel, transposed=transpose, mask=_triangle_mask(pattern, upper), pattern=pattern
    )
