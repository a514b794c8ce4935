"""Pictures of an encoder: its offsets and the sparsity pattern it produces (needs matplotlib).

Install with ``pip install tsgu-encoders[plot]``.
"""

from __future__ import annotations

from typing import Any

import torch

from .pairwise_encoder import PairwiseEncoder

__all__ = ["plot_encoder"]


def plot_encoder(encoder: PairwiseEncoder, axes: Any = None, max_entries: int = 200_000) -> Any:
    """Draw ``encoder``'s spatial offsets (left) and the sparsity pattern of its matrix (right).

    Offsets are drawn over the first two spatial axes (one axis: on a line), coloured by channel
    shift; the pattern shows at most ``max_entries`` stored entries (evenly subsampled).

    Parameters
    ----------
    encoder : PairwiseEncoder
    axes : pair of matplotlib Axes, optional
        Where to draw; a new figure with two panels by default.
    max_entries : int
        Cap on the number of entries drawn in the pattern panel.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from tsgu_encoders import PairwiseEncoder
    >>> from tsgu_encoders.plot import plot_encoder
    >>> fig = plot_encoder(PairwiseEncoder(2, (1, 8, 8), diag=True))
    >>> len(fig.axes)
    2
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plot_encoder needs matplotlib: pip install tsgu-encoders[plot]") from exc
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    else:
        fig = axes[0].figure
    ax_o, ax_p = axes
    offs = torch.tensor(encoder.offsets, dtype=torch.float64)
    c = offs[:, 0]
    x = offs[:, 1]
    y = offs[:, 2] if offs.shape[1] > 2 else torch.zeros_like(x)
    sc = ax_o.scatter(x.numpy(), y.numpy(), c=c.numpy(), cmap="viridis", s=60, edgecolors="k")
    for i, (xi, yi) in enumerate(zip(x.tolist(), y.tolist())):
        ax_o.annotate(str(i), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax_o.set_title(f"{len(encoder.offsets)} offsets (r={encoder.radius}, upper={encoder.upper})")
    ax_o.set_xlabel("s₁")
    ax_o.set_ylabel("s₂" if offs.shape[1] > 2 else "")
    ax_o.set_aspect("equal")
    if c.max() > 0 or c.min() < 0:
        fig.colorbar(sc, ax=ax_o, label="channel shift c")
    rows, cols = encoder._rows, encoder._cols
    step = max(1, rows.numel() // max_entries)
    ax_p.scatter(cols[::step].cpu().numpy(), rows[::step].cpu().numpy(), s=0.5, marker="s", c="k")
    V = encoder.volume_numel
    ax_p.set_xlim(-0.5, V - 0.5)
    ax_p.set_ylim(V - 0.5, -0.5)
    ax_p.set_aspect("equal")
    ax_p.set_title(f"pattern: {V}×{V}, nnz={encoder.nnz}")
    fig.tight_layout()
    return fig
