"""``segment_mm`` and ``gather_mm``: many small matrix products selected by segment or index.

Both reduce to one grouped product: the rows of ``a`` that use the same matrix ``b[r]`` are
contiguous (segments; ``gather_mm`` sorts its rows by relation once to get there).

* Where PyTorch's native grouped product (``F.grouped_mm``; ``torch._grouped_mm`` before it)
  applies (float32 on the CPU; float32/bfloat16/float16 on CUDA; rows of 16-byte multiples) it is
  used, with both gradients as grouped products too (differentiable again); a torch, build or device
  without the kernel falls back (:func:`_native_grouped_mm` is that one version check).
* Otherwise the portable path is a *tiled grouped product*: each segment is cut into tiles of at
  most ``T`` rows, the tiles are zero-padded into one ``(tiles, T, D1)`` tensor and multiplied by
  their matrices with a single ``torch.bmm``; the only copies of ``b`` are one per tile
  (``(N/T + R) · D1 · D2`` elements).

No Python loop over segments or relations, and never the ``N × D1 × D2`` tensor that
``torch.bmm(a[:, None], b[idx])`` builds, in forward or backward.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch.autograd.function import Function

#: Whether DGL is importable.  Kept for compatibility with torchsparsegradutils 0.2.7; the tiled
#: path is used either way (it is vectorised and supports every float dtype).
dgl_installed = importlib.util.find_spec("dgl") is not None

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MAX_TILE = 256


def _check_torch_version() -> None:
    parts = torch.__version__.split("+")[0].split(".")
    major, minor = int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    if (major, minor) < (2, 4):
        raise NotImplementedError("PyTorch version is too old for nested tensors")


def _check_operands(a: Any, b: Any) -> None:
    if a.dim() != 2 or b.dim() != 3:
        raise ValueError("Input tensors have unexpected dimensions")
    if a.shape[1] != b.shape[1]:
        raise ValueError("Incompatible size for inputs")
    if a.layout != torch.strided or b.layout != torch.strided:
        raise ValueError(f"a and b must be dense (strided) tensors, got {a.layout} and {b.layout}")
    if a.dtype not in _FLOATS or a.dtype != b.dtype:
        raise TypeError(
            f"a and b must share one floating dtype (float16, bfloat16, float32, float64), "
            f"got a: {a.dtype}, b: {b.dtype}"
        )
    if a.device != b.device:
        raise ValueError(f"a and b must be on the same device, got a: {a.device}, b: {b.device}")
    if a.device.type == "meta":
        raise ValueError("a and b are on the 'meta' device: they hold no data to multiply")


def _check_index(name: str, idx: Any) -> None:
    if not isinstance(idx, torch.Tensor):
        raise ValueError("Inputs should be instances of torch.Tensor")
    if idx.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name} must have dtype torch.int32 or torch.int64, got {idx.dtype}")
    if idx.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(idx.shape)}")
    if idx.device.type == "meta":
        raise ValueError(f"{name} is on the 'meta' device: it holds no indices")


def _validate(a: Any, b: Any, name: str, index: Any, expected_len: int) -> None:
    """The checks shared by both functions, in the order (and with the messages) of 0.2.7."""
    _check_torch_version()
    if not all(isinstance(x, torch.Tensor) for x in (a, b, index)):
        raise ValueError("Inputs should be instances of torch.Tensor")
    _check_operands(a, b)
    _check_index(name, index)
    if index.shape[0] != expected_len:
        raise ValueError("Incompatible size for inputs")


class _NativeGroupedMM(Function):
    """PyTorch's grouped product ``torch._grouped_mm`` per segment (``offs``: segment ends).

    ``apply(a, b, offs, False)``: ``out_i = a_i b[r(i)]``; ``apply(a, b, offs, True)``: the weight
    form ``W[r] = a_rᵀ b_r`` (the rows of each segment contracted).  The gradients are grouped
    products again — of ``out``: ``dA = G b[r]ᵀ``, ``db[r] = a_rᵀ G_r`` (the weight form); of ``W``:
    ``dA_r = b_r G_rᵀ``, ``db_r = a_r G_r`` — so none materialises ``b[idx]``, and each backward is
    itself differentiable (any order).
    """

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor, weight: bool) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(a, b, offs)
        ctx.weight = weight
        return _native_grouped_mm()(a.t() if weight else a, b, offs=offs)

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        a, b, offs = ctx.saved_tensors
        G = G.contiguous()
        left, right = (b, G) if ctx.weight else (G, b)
        da = (
            _NativeGroupedMM.apply(left, right.transpose(1, 2).contiguous(), offs, False)
            if ctx.needs_input_grad[0]
            else None
        )
        db = _NativeGroupedMM.apply(a, G, offs, not ctx.weight) if ctx.needs_input_grad[1] else None
        return da, db, None, None


def _native_grouped_mm() -> Any:
    """PyTorch's grouped product, or ``None``: tsgu-indexed's one torch-version fallback.

    ``torch.nn.functional.grouped_mm`` (public, newer torch) where it exists, else the private
    ``torch._grouped_mm`` it replaced, else ``None`` (older torch: the tiled path).  Both take
    ``(a, b, offs=segment_ends)`` with int32 ``offs``.
    """
    public = getattr(torch.nn.functional, "grouped_mm", None)
    return public if public is not None else getattr(torch, "_grouped_mm", None)


def _native_grouped_applies(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the native grouped product takes these operands (dtype, device, 16-byte aligned rows)."""
    if _native_grouped_mm() is None or a.shape[0] == 0 or b.shape[0] == 0:
        return False
    ok_dtypes = (torch.float32,) if a.device.type == "cpu" else (torch.float32, torch.bfloat16, torch.float16)
    if a.dtype not in ok_dtypes:
        return False
    size = a.element_size()
    return (a.shape[1] * size) % 16 == 0 and (b.shape[2] * size) % 16 == 0


def _grouped_mm(a: torch.Tensor, b: torch.Tensor, seglen: torch.Tensor) -> torch.Tensor:
    """Rows of ``a`` in contiguous segments (``seglen``, int64 on ``a``'s device) times ``b[r]``."""
    if _native_grouped_applies(a, b):
        offs = torch.cumsum(seglen, 0).to(torch.int32)
        try:
            return _NativeGroupedMM.apply(a.contiguous(), b.contiguous(), offs, False)  # type: ignore[no-any-return]
        except (RuntimeError, NotImplementedError):  # a build or device without the kernel
            pass
    return _tiled_mm(a, b, seglen)


def _tiled_mm(a: torch.Tensor, b: torch.Tensor, seglen: torch.Tensor) -> torch.Tensor:
    """The portable path: segments cut into tiles, zero-padded, one ``torch.bmm``."""
    N, D1 = a.shape
    R, _, D2 = b.shape
    if N == 0 or R == 0:  # (0, D2), still connected to a and b for autograd
        return a @ b.sum(0)
    T = int(min(_MAX_TILE, max(8, -(-N // R))))
    tiles_per_seg = torch.div(seglen + T - 1, T, rounding_mode="floor")
    num_tiles = int(tiles_per_seg.sum())
    tile_seg = torch.repeat_interleave(torch.arange(R, device=a.device), tiles_per_seg, output_size=num_tiles)
    seg_start = torch.cumsum(seglen, 0) - seglen
    tile_first = torch.cumsum(tiles_per_seg, 0) - tiles_per_seg
    row_seg = torch.repeat_interleave(torch.arange(R, device=a.device), seglen, output_size=N)
    pos = torch.arange(N, device=a.device) - seg_start[row_seg]
    slot = (tile_first[row_seg] + torch.div(pos, T, rounding_mode="floor")) * T + pos % T
    padded = a.new_zeros(num_tiles * T, D1).index_copy(0, slot, a).reshape(num_tiles, T, D1)
    out = torch.bmm(padded, b.index_select(0, tile_seg))
    return out.reshape(num_tiles * T, D2).index_select(0, slot)


def segment_mm(a: torch.Tensor, b: torch.Tensor, seglen_a: torch.Tensor) -> torch.Tensor:
    """Multiply contiguous segments of rows of ``a`` by one matrix each.

    The rows of ``a`` are split, in order, into ``R`` segments of lengths ``seglen_a``; segment
    ``r`` is multiplied by ``b[r]``.  Zero-length segments are allowed.

    Parameters
    ----------
    a : Tensor
        ``(N, D1)``, float16/bfloat16/float32/float64, CPU or CUDA.
    b : Tensor
        ``(R, D1, D2)``, same dtype and device as ``a``.
    seglen_a : Tensor
        ``(R,)`` int32 or int64 on any device, non-negative, summing to ``N``.

    Returns
    -------
    Tensor
        ``(N, D2)``, differentiable with respect to ``a`` and ``b``.

    Raises
    ------
    NotImplementedError
        "PyTorch version is too old for nested tensors" below torch 2.4 (checked at call time).
    ValueError
        "Input tensors have unexpected dimensions" (ranks), "Incompatible size for inputs"
        (``D1`` or ``R`` mismatch), negative lengths, or lengths not summing to ``N`` (0.2.7 did
        not check this).
    TypeError
        Non-float or mismatched dtypes, or a non-integer ``seglen_a``.

    Examples
    --------
    >>> import torch
    >>> from tsgu_indexed import segment_mm
    >>> a = torch.ones(3, 2)
    >>> b = torch.stack([torch.eye(2), 2 * torch.eye(2)])
    >>> segment_mm(a, b, torch.tensor([1, 2]))
    tensor([[1., 1.],
            [2., 2.],
            [2., 2.]])
    """
    _validate(a, b, "seglen_a", seglen_a, b.shape[0] if isinstance(b, torch.Tensor) else -1)
    seglen = seglen_a.to(device=a.device, dtype=torch.int64)
    if seglen.numel() and int(seglen.min()) < 0:
        raise ValueError("seglen_a must be non-negative")
    total = int(seglen.sum())
    if total != a.shape[0]:
        raise ValueError(f"seglen_a must sum to the number of rows of a ({a.shape[0]}), got {total}")
    return _grouped_mm(a, b, seglen)


def gather_mm(a: torch.Tensor, b: torch.Tensor, idx_b: torch.Tensor) -> torch.Tensor:
    """Row-wise product with a gathered matrix: ``out[i] = a[i] @ b[idx_b[i]]``.

    Rows are sorted by ``idx_b`` once and handed to the segment path, so the work is one batched
    product whatever the number of relations ``R``; ``b[idx_b]`` is never materialised.

    Parameters
    ----------
    a : Tensor
        ``(N, D1)``, float16/bfloat16/float32/float64.
    b : Tensor
        ``(R, D1, D2)``, same dtype and device.
    idx_b : Tensor
        ``(N,)`` int32/int64 on any device, each in ``[0, R)``.

    Returns
    -------
    Tensor
        ``(N, D2)``, differentiable with respect to ``a`` and ``b``.

    Raises
    ------
    ValueError
        "Inputs should be instances of torch.Tensor", "Input tensors have unexpected
        dimensions", "Incompatible size for inputs" (``N`` or ``D1`` mismatch), and indices out of
        range (0.2.7 left those rows uninitialised).
    TypeError
        Non-float or mismatched dtypes, or a non-integer ``idx_b``.

    Examples
    --------
    >>> import torch
    >>> from tsgu_indexed import gather_mm
    >>> b = torch.stack([torch.eye(2), 3 * torch.eye(2)])
    >>> gather_mm(torch.ones(2, 2), b, torch.tensor([1, 0]))
    tensor([[3., 3.],
            [1., 1.]])
    """
    _validate(a, b, "idx_b", idx_b, a.shape[0] if isinstance(a, torch.Tensor) else -1)
    idx = idx_b.to(device=a.device, dtype=torch.int64)
    R = b.shape[0]
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= R):
        raise ValueError(f"idx_b must lie in [0, {R}) (the number of matrices in b)")
    order = torch.argsort(idx, stable=True)
    seglen = torch.bincount(idx, minlength=R)
    out_sorted = _grouped_mm(a.index_select(0, order), b, seglen)
    return out_sorted.new_empty(out_sorted.shape).index_copy(0, order, out_sorted)
