"""The one boundary where gradient *values* become the sparse gradient of a sparse input.

Every operation of the project computes the gradient of a sparse matrix as values at its stored
entries (dense, accumulated exactly by autograd).  This module turns those values into a sparse
tensor handed back to PyTorch, in a form whose accumulation is exact:

* **Batched CSR is never summed by PyTorch.**  PyTorch's addition of two batched (3-D) CSR tensors
  is wrong (``a + b`` and ``a += b`` flatten the batch and drop values, torch ≤ 2.14), and PyTorch
  adds gradients whenever a tensor is used twice in one graph or ``backward()`` runs twice.  Every
  Function taking a sparse input registers the use (:func:`register_use`); when a backward pass
  reaches a batched CSR input through more than one of them, its gradients travel as 3-D *COO*
  tensors with the same entries (PyTorch accepts a COO gradient for a CSR input and sums COO
  tensors correctly), and a post-accumulate hook on a leaf turns ``.grad`` back into batched CSR
  on the leaf's own ``crow``/``col``.  With a single use the gradient is batched CSR throughout.
  (``torch.autograd.grad`` with respect to a batched CSR tensor used several times in one graph
  receives the COO form: PyTorch gives no hook that could change a captured gradient's layout.)
* **Accumulation into ``.grad`` keeps the input's pattern.**  For a leaf whose ``.grad`` already
  holds a gradient on its own pattern (COO or batched CSR), a pre-hook of its gradient accumulator
  adds the *values* (``old + new`` on identical indices) instead of letting PyTorch concatenate COO
  index lists or corrupt batched CSR; a COO leaf's ``.grad`` keeps the leaf's own index list.

* **Duplicate coordinates mean a sum, for gradients too.**  An uncoalesced COO input stands for
  the sum of its duplicates (PyTorch's meaning).  A loss that depends on the matrix has the same
  derivative ``g = ∂L/∂A[i, j]`` with respect to each of the ``m`` values stored at ``(i, j)``; the
  gradient *tensor* handed back on the input's own index list holds ``g / m`` in each of those
  entries, so that read the way PyTorch reads it (``to_dense()``, ``coalesce()``, the COO
  constructor's backward) it is ``∂L/∂A``, and an SGD step on ``A.values()`` moves the matrix by
  ``-lr·∂L/∂A``.  In the other direction, a gradient arriving for a tensor with duplicates gives
  each stored value the gradient of its coordinate (:func:`_plain_values`).

Everything stays differentiable (``create_graph=True``) and ``O(nnz)``.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.autograd.function import Function

from .pattern import SparsePattern


def _transported(pattern: SparsePattern) -> bool:
    """Whether gradients of this pattern's matrix travel as COO (batched CSR)."""
    return pattern.layout == torch.sparse_csr and pattern.batch is not None


def _transport_indices(pattern: SparsePattern) -> torch.Tensor:
    """3-D COO indices ``(batch, row, col)`` of a batched CSR pattern, in its storage order."""
    return pattern.transport_indices


def _as_transport(pattern: SparsePattern, values: torch.Tensor) -> torch.Tensor:
    """Gradient values of a batched CSR matrix as a coalesced 3-D COO tensor (row-major order)."""
    return torch.sparse_coo_tensor(
        _transport_indices(pattern), values, pattern.shape, is_coalesced=True, check_invariants=False
    )


def _split(pattern: SparsePattern, values: torch.Tensor) -> torch.Tensor:
    """Per-entry derivatives → the values of a gradient tensor on the pattern's index list.

    Where a coordinate is stored ``m`` times each of its entries gets ``1/m`` of the derivative,
    so that the gradient, summed over duplicates as PyTorch reads a sparse tensor, is ``∂L/∂A``.
    The identity for a pattern without duplicates; differentiable (a product with a constant).
    """
    counts = pattern.multiplicity
    if counts is None:
        return values
    return values / counts.to(dtype=values.real.dtype)  # exact small integers: correctly rounded


def _spread(pattern: SparsePattern, values: torch.Tensor) -> torch.Tensor:
    """Values of a sparse tensor on the pattern's index list → each entry the total of its coordinate.

    This is the derivative with respect to each stored value of a tensor with duplicates (whose
    meaning is the sum of its duplicates); the identity without duplicates.
    """
    if pattern.canon is None:
        return values
    return pattern._unsort(pattern._sorted(values))


def _plain_values(pattern: SparsePattern, G: torch.Tensor) -> torch.Tensor:
    """Values of ``G`` at the pattern's entries (original order), without autograd.

    ``G`` is read as PyTorch reads a sparse tensor (duplicates summed); where the pattern itself
    stores a coordinate several times, each of its entries receives that coordinate's value.
    """
    if G.layout == torch.sparse_coo and _transported(pattern):
        gi = G._indices()
        if gi.data_ptr() == _transport_indices(pattern).data_ptr() and gi.shape[1] == pattern.nnz:
            return G._values()
    if G.layout == torch.sparse_coo and pattern.canon is not None:
        # A COO input with duplicate coordinates.  Gradients on its own index list (and several of
        # them added up by PyTorch: the index list repeated) are summed per coordinate without a
        # lookup; anything else is coalesced and looked up by coordinate.
        gi, nnz = G._indices(), pattern.nnz
        k = gi.shape[1] // nnz if nnz else 0
        if k and gi.shape[1] == k * nnz:
            own = pattern.coo_indices
            if (k == 1 and gi.data_ptr() == own.data_ptr()) or torch.equal(gi, own.repeat(1, k)):
                return _spread(pattern, G._values().reshape(k, nnz).sum(0))
        return pattern.gather(G.coalesce())
    return pattern.gather(G)


# id(A) -> (weak reference to A, weak set of the contexts of the Functions that take A); keyed by
# id because tensors compare elementwise (WeakKeyDictionary would call ``A == A``).
_uses: dict[int, tuple[weakref.ref[torch.Tensor], weakref.WeakSet[Any]]] = {}


def register_use(ctx: Any, A: torch.Tensor) -> None:
    """Record that the autograd Function of ``ctx`` (in its forward) takes the sparse input ``A``.

    Only batched CSR inputs that require grad are recorded (the layout PyTorch cannot add); both
    sides are held weakly.  :func:`deliver` counts the uses a backward pass reaches.
    """
    if A.requires_grad and A.layout == torch.sparse_csr and A.dim() == 3:
        key = id(A)
        entry = _uses.get(key)
        if entry is None or entry[0]() is not A:

            def forget(_: object, key: int = key) -> None:
                _uses.pop(key, None)

            entry = (weakref.ref(A, forget), weakref.WeakSet())
            _uses[key] = entry
        entry[1].add(ctx)


def _uses_in_this_backward(A: torch.Tensor | None) -> int:
    entry = _uses.get(id(A)) if A is not None else None
    uses = entry[1] if entry is not None and entry[0]() is A else None
    if not uses:
        return 2  # unknown: take the form that is always safe
    return sum(1 for c in list(uses) if torch._C._will_engine_execute_node(c))


class SparseToValues(Function):
    """The stored values of a sparse tensor; the gradient goes back as a sparse tensor."""

    @staticmethod
    def forward(ctx: Any, A: torch.Tensor, pattern: SparsePattern) -> torch.Tensor:  # type: ignore[override]
        ctx.pattern = pattern
        ctx.source = weakref.ref(A)
        register_use(ctx, A)
        return pattern.values(A).clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        return deliver(ctx, 0, ctx.pattern, g, ctx.source()), None


class ValuesToSparse(Function):
    """A sparse tensor with a fixed pattern holding ``values``; the gradient maps back to values.

    ``ValuesToSparse.apply(values, pattern, transport=False)``: with ``transport`` the result is
    the COO form of a batched CSR pattern (see the module docstring).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, values: torch.Tensor, pattern: SparsePattern, transport: bool = False
    ) -> torch.Tensor:
        ctx.pattern = pattern
        return _as_transport(pattern, values) if transport else pattern.to_sparse(values)

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        pattern = ctx.pattern
        if G.layout != torch.strided and G.requires_grad:
            if pattern.canon is None and pattern.shares_indices(G):
                return SparseToValues.apply(G, pattern), None, None
            return GatherValues.apply(G, pattern), None, None
        return _plain_values(pattern, G), None, None


class GatherValues(Function):
    """Values of a gradient-like tensor ``G`` at a pattern's entries; differentiable in ``G``."""

    @staticmethod
    def forward(ctx: Any, G: torch.Tensor, pattern: SparsePattern) -> torch.Tensor:  # type: ignore[override]
        ctx.pattern = pattern
        ctx.layout, ctx.shape = G.layout, G.shape
        return _plain_values(pattern, G)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        pattern = ctx.pattern
        if ctx.layout == torch.strided:  # a dense G: scatter into its shape (never on the hot path)
            out = torch.zeros(ctx.shape, dtype=g.dtype, device=g.device)
            if pattern.batch is None:
                out = out.index_put((pattern.rows, pattern.cols), g, accumulate=True)
            else:
                idx = _transport_indices(pattern) if _transported(pattern) else pattern.coo_indices
                out = out.index_put(tuple(idx), g, accumulate=True)
            return out, None
        return _differentiable_sparse(pattern, g, _transported(pattern)), None


def _differentiable_sparse(pattern: SparsePattern, values: torch.Tensor, transport: bool) -> torch.Tensor:
    if torch.is_grad_enabled() and values.requires_grad:
        return ValuesToSparse.apply(values, pattern, transport)  # type: ignore[no-any-return]
    return _as_transport(pattern, values) if transport else pattern.to_sparse(values)


def differentiable_values(A: torch.Tensor, pattern: SparsePattern) -> torch.Tensor:
    """``A``'s values in pattern order; differentiable back to ``A`` only when that is needed."""
    if torch.is_grad_enabled() and A.requires_grad:
        return SparseToValues.apply(A, pattern)  # type: ignore[no-any-return]
    return pattern.values(A)


def sparse_grad(pattern: SparsePattern, values: torch.Tensor) -> torch.Tensor:
    """A sparse tensor with the pattern's layout and indices holding ``values``.

    Differentiable when grad mode is on.  This is for results that users see; a gradient handed
    back to autograd for a sparse *input* goes through :func:`deliver`.  ``values`` are one per
    stored entry; where the pattern stores a coordinate ``m`` times, each entry holds ``1/m`` of
    its value, so that the result read as a sum of duplicates has the value at that coordinate.
    """
    return _differentiable_sparse(pattern, _split(pattern, values), False)


# ------------------------------------------------------------------------------------------------
# The accumulator hook: the transport form back to the input's layout, exact accumulation.


def _to_input_layout(pattern: SparsePattern, G: torch.Tensor) -> torch.Tensor:
    """The transport (COO) form of a batched CSR gradient back to CSR on the input's pattern."""
    if G.requires_grad and torch.is_grad_enabled():
        return ValuesToSparse.apply(GatherValues.apply(G, pattern), pattern, False)  # type: ignore[no-any-return]
    return pattern.to_sparse(_plain_values(pattern, G))


def _same_indices(pattern: SparsePattern, G: torch.Tensor) -> bool:
    """Whether sparse ``G`` stores exactly the pattern's entries, in the same order."""
    if pattern.shares_indices(G):
        return True
    if G.layout != pattern.layout or G.shape != torch.Size(pattern.shape):
        return False
    if G.layout == torch.sparse_coo:
        gi = G._indices()
        return gi.shape == pattern.coo_indices.shape and bool(torch.equal(gi, pattern.coo_indices))
    gc, gcol = G.crow_indices(), G.col_indices()
    return (
        gc.shape == pattern.csr_crow.shape
        and gcol.shape == pattern.csr_col.shape
        and bool(torch.equal(gc.to(torch.int64), pattern.csr_crow.to(torch.int64)))
        and bool(torch.equal(gcol.to(torch.int64), pattern.csr_col.to(torch.int64)))
    )


def _values_of(pattern: SparsePattern, G: torch.Tensor) -> torch.Tensor:
    if G.requires_grad and torch.is_grad_enabled():
        return SparseToValues.apply(G, pattern)  # type: ignore[no-any-return]
    return pattern.values(G)


def _merge_hook(leaf: weakref.ref[torch.Tensor], pattern: SparsePattern) -> Any:
    """Pre-hook of a leaf's gradient accumulator: ``old + new`` on the leaf's own pattern.

    It holds the leaf weakly (the accumulator holds the leaf, and the hook lives on the
    accumulator: no reference cycle through C++).  Registered once per use; idempotent, since it
    clears ``.grad`` after merging and does nothing when ``.grad`` is empty.  A pre-hook may not
    change the gradient's layout, so a batched CSR sum is returned in transport (COO) form and the
    post-accumulate hook turns it back.
    """

    def hook(grads: tuple[torch.Tensor | None, ...]) -> tuple[torch.Tensor | None, ...] | None:
        new = grads[0]
        var = leaf()
        old = var.grad if var is not None else None
        if new is None or old is None or old.layout == torch.strided or new.layout == torch.strided:
            return None
        transport = _transported(pattern) and new.layout == torch.sparse_coo
        if new.layout not in (torch.sparse_coo, pattern.layout):
            return None
        new_ok = transport or _same_indices(pattern, new)
        if new_ok and _same_indices(pattern, old):
            if transport:
                new_values = (
                    GatherValues.apply(new, pattern) if new.requires_grad else _plain_values(pattern, new)
                )
            else:
                new_values = _values_of(pattern, new)
            total = _differentiable_sparse(pattern, _values_of(pattern, old) + new_values, transport)
        elif transport:
            # ``.grad`` no longer holds the leaf's pattern (set by hand): sum as COO, where
            # PyTorch is right; the post-accumulate hook converts where the entries allow.
            total = old.to_sparse_coo() + new
        else:
            return None
        var.grad = None  # type: ignore[union-attr]
        return (total, *grads[1:])

    return hook


_post_hooked: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()


def _restore_layout(pattern: SparsePattern) -> Any:
    """Post-accumulate hook of a batched CSR leaf: ``.grad`` from transport (COO) back to CSR."""

    def hook(var: torch.Tensor) -> None:
        G = var.grad
        if G is None or G.layout != torch.sparse_coo:
            return
        entries = G.coalesce()
        if not _covers(pattern, entries):
            raise RuntimeError(
                "the accumulated gradient of a batched CSR tensor has entries outside the tensor's "
                "own pattern, which a batched CSR gradient cannot hold; set .grad to None first"
            )
        var.grad = _to_input_layout(pattern, G)

    return hook


def _covers(pattern: SparsePattern, G: torch.Tensor) -> bool:
    """Whether every stored entry of the coalesced COO ``G`` is an entry of the pattern."""
    if G._nnz() == 0:
        return True
    gi = G._indices()
    key = (gi[0] * pattern.n + gi[1]) * pattern.M + gi[0] * pattern.m + gi[2]
    own = pattern.rows * pattern.M + pattern.cols
    own = torch.sort(own).values
    pos = torch.searchsorted(own, key).clamp_max(own.numel() - 1)
    return bool((own[pos] == key).all()) if own.numel() else False


def deliver(
    ctx: Any, index: int, pattern: SparsePattern, values: torch.Tensor, A: torch.Tensor | None
) -> torch.Tensor:
    """The gradient of a sparse input, from its values: what an autograd Function's backward returns.

    ``ctx`` is the Function's context, ``index`` the position of the sparse input ``A`` (whose
    pattern this is) among the Function's inputs.  Batched CSR gradients travel as COO and get a
    hook on ``A`` that restores the CSR layout; a leaf ``A`` (COO or batched CSR) gets a pre-hook on
    its gradient accumulator that keeps ``A.grad`` on ``A``'s own pattern across accumulations.
    ``values`` are the derivatives with respect to each stored value; with duplicate coordinates
    they are split over the duplicates (:func:`_split`), so that the gradient means ``∂L/∂A``.
    """
    transport = _transported(pattern) and _uses_in_this_backward(A) > 1
    G = _differentiable_sparse(pattern, _split(pattern, values), transport)
    if _transported(pattern) or pattern.layout == torch.sparse_coo:
        node = ctx.next_functions[index][0] if ctx is not None else None
        if node is not None and type(node).__name__ == "AccumulateGrad":
            leaf = node.variable
            node.register_prehook(_merge_hook(weakref.ref(leaf), pattern))
            if transport and _post_hooked.get(id(leaf)) is not leaf:
                leaf.register_post_accumulate_grad_hook(_restore_layout(pattern))
                _post_hooked[id(leaf)] = leaf
    return G
