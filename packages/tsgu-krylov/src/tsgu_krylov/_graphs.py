"""Optional CUDA-graph capture of a device loop's blocks (``capture=`` of the Krylov solvers).

A device loop runs ``check_every`` iterations between two host checks.  Written as a *block*, a
function of a fixed list of state tensors that returns their new values (stored back in place,
:func:`store`), with no host read and no data-dependent shape inside, those iterations are the same
sequence of kernels on the same memory every time: on CUDA they can be captured once as a
``torch.cuda.CUDAGraph`` and replayed, one launch instead of a dozen per iteration.

:class:`BlockLoop` runs the blocks.  The code replayed is the code the CPU runs: the eager block
(what every CPU test exercises) is the one captured.  Capture is attempted once, for full blocks
only (a last partial block runs eagerly): a warm-up run on a side stream, then the capture, then the
state restored to what it was before the warm-up.  Anything that fails on the way (an operator or
preconditioner that reads the device on the host, a sparse kernel that cannot be captured) restores
the state, warns once naming the reason, and the loop goes on uncaptured: never a half-updated
state.  Not yet run on a GPU (no CUDA device where this was written); the CPU tests cover the
restructured blocks, the fallback and the replay logic with a stand-in for the capture step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

Block = Callable[[list[torch.Tensor]], list[torch.Tensor]]

#: Whether ``capture=None`` captures on CUDA.  Off until a GPU run has checked the captured solves
#: against the uncaptured ones (``tests/test_capture.py``, ``scripts/device_check.sh``): untested
#: code must not be the default path of a solver; ``capture=True`` asks for it explicitly.
AUTOMATIC = False


def resolve_capture(capture: Any, device: torch.device, device_loop: bool, solver: str) -> bool:
    """Whether a solve captures its device loop's blocks.

    ``None`` (automatic): on CUDA whenever the device loop runs, never elsewhere — while
    :data:`AUTOMATIC` is off (until verified on a GPU), never.  ``True``: on CUDA with the device
    loop, with one warning where it cannot apply (not CUDA, or the host loop).  ``False``: never.
    """
    if capture is not None and not isinstance(capture, bool):
        raise TypeError(f"capture must be a bool or None, got {type(capture).__name__}")
    possible = capture_possible(device)
    if capture is None:
        return AUTOMATIC and device_loop and possible
    if not capture:
        return False
    if not possible:
        warnings.warn(
            f"{solver}: capture=True needs a CUDA device (got {device.type}); the loop runs uncaptured",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    if not device_loop:
        warnings.warn(
            f"{solver}: capture=True applies to the device loop only; the host loop runs uncaptured",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def capture_possible(device: torch.device) -> bool:
    """CUDA graphs need a CUDA tensor (a hook for the tests, which stand in for the capture)."""
    return device.type == "cuda"


def store(state: list[torch.Tensor], new: Sequence[torch.Tensor]) -> None:
    """Write ``new`` into the state tensors in place (one ``_foreach_copy_``).

    A new value that is already its state tensor is skipped; one that is *another* state tensor
    (a rotation of buffers) is cloned first, so that no copy reads what another one writes.
    """
    ptrs = {t.data_ptr() for t in state}
    dst, src = [], []
    for d, s in zip(state, new):
        if s is d or (s.data_ptr() == d.data_ptr() and s.shape == d.shape and s.stride() == d.stride()):
            continue
        dst.append(d)
        src.append(s.clone() if s.data_ptr() in ptrs else s)
    if dst:
        torch._foreach_copy_(dst, src)


def _capture(run: Callable[[], None]) -> Any:
    """Warm ``run`` up on a side stream, then capture it as a CUDA graph (CUDA only)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()  # lazy initialisation and workspaces, outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph


class BlockLoop:
    """Runs a device loop's blocks on a fixed state, eagerly or as a replayed CUDA graph.

    Parameters
    ----------
    make_block : callable
        ``make_block(steps)`` returns the block running ``steps`` iterations: a function of the
        state list returning the new values of its tensors (same shapes and dtypes).
    state : list of Tensor
        The state, updated in place by :meth:`run`.
    every : int
        The iterations of a full block (``check_every``): the only block that is captured.
    capture : bool
        Try to capture the full block (see :func:`resolve_capture`).
    solver : str
        The solver's name, for the warning.
    """

    def __init__(
        self,
        make_block: Callable[[int], Block],
        state: list[torch.Tensor],
        every: int,
        capture: bool,
        solver: str,
    ):
        self.make_block = make_block
        self.state = state
        self.every = every
        self.capture = capture
        self.solver = solver
        self.graph: Any = None
        self._blocks: dict[int, Block] = {}

    def _eager(self, steps: int) -> None:
        block = self._blocks.get(steps)
        if block is None:
            block = self._blocks[steps] = self.make_block(steps)
        store(self.state, block(self.state))

    def run(self, steps: int) -> None:
        """Advance the state by ``steps`` iterations (one block)."""
        if steps == self.every and self.capture:
            if self.graph is None:
                self.graph = self._try_capture()
            if self.graph is not None:
                self.graph.replay()
                return
        self._eager(steps)

    def _try_capture(self) -> Any:
        saved = [t.clone() for t in self.state]
        try:
            graph = _capture(lambda: self._eager(self.every))
        except Exception as exc:  # anything: the eager loop is always right
            graph = None
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        store(self.state, saved)  # the warm-up advanced it; a failed capture may have too
        if graph is None:
            self.capture = False
            warnings.warn(
                f"{self.solver}: CUDA-graph capture of the device loop failed ({reason}); it runs uncaptured",
                RuntimeWarning,
                stacklevel=4,
            )
        return graph


def capture_not_offered(capture: Any, solver: str) -> None:
    """The ``capture=`` keyword of a solver whose device loop is not captured (yet): validated,
    and ``True`` warns once that the loop runs uncaptured (the results are the same)."""
    if capture is not None and not isinstance(capture, bool):
        raise TypeError(f"capture must be a bool or None, got {type(capture).__name__}")
    if capture:
        warnings.warn(
            f"{solver}: CUDA-graph capture of the device loop is not offered for this solver yet; "
            "it runs uncaptured",
            RuntimeWarning,
            stacklevel=3,
        )
