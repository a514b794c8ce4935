"""CUDA-graph capture of the device loops (``capture=``), tested on the CPU with stand-ins.

The block a graph would replay is the eager block every device-loop test runs; here: the keyword
(validation, the CPU warning, identical results), the capture helper's fallback (a capture step
that fails halfway leaves the state as it was, warns once, and the loop runs eagerly) and its replay
path (a stand-in graph whose replay runs the block), against the uncaptured solve.  The GPU test
compares captured and uncaptured solves on CUDA.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import pytest
import torch

from tsgu_krylov import _graphs, bicgstab, gmres, linear_cg, lsmr, minres, sparse_generic_solve
from tsgu_ops.testing import grid_operator

F64 = torch.float64


def _problem(k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    A = grid_operator((6, 7)).to_sparse_csr()
    B = torch.randn(A.shape[0], k, dtype=F64, generator=torch.Generator().manual_seed(0))
    return A, B


def _same(a: Any, b: Any) -> None:
    xa, ia = a
    xb, ib = b
    assert torch.equal(xa, xb)
    for f in dataclasses.fields(ia):
        va, vb = getattr(ia, f.name), getattr(ib, f.name)
        if isinstance(va, torch.Tensor):
            assert torch.equal(va.nan_to_num(), vb.nan_to_num()), f.name
        else:
            assert va == vb, f.name


SOLVERS = [(linear_cg, {"rtol": 1e-10}), (minres, {"rtol": 1e-10})]


@pytest.mark.parametrize("solver,kw", SOLVERS)
def test_capture_true_on_the_cpu_warns_once_and_changes_nothing(solver: Any, kw: dict[str, Any]) -> None:
    A, B = _problem()
    ref = solver(A, B, loop="device", return_info=True, check_every=5, **kw)
    with pytest.warns(RuntimeWarning, match="capture=True needs a CUDA device") as rec:
        out = solver(A, B, loop="device", return_info=True, check_every=5, capture=True, **kw)
    assert sum("capture" in str(w.message) for w in rec) == 1
    _same(out, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # automatic and False: silent on the CPU
        _same(solver(A, B, loop="device", return_info=True, check_every=5, capture=None, **kw), ref)
        _same(solver(A, B, loop="device", return_info=True, check_every=5, capture=False, **kw), ref)


@pytest.mark.parametrize("solver", [linear_cg, minres, bicgstab, gmres])
def test_capture_keyword_is_checked(solver: Any) -> None:
    A, B = _problem()
    with pytest.raises(TypeError, match="capture must be a bool or None, got str"):
        solver(A, B, capture="yes")
    with pytest.raises(TypeError, match="capture must be a bool or None, got int"):
        solver(A, B, capture=1)


def test_capture_keyword_is_checked_by_lsmr_and_not_offered() -> None:
    A, B = _problem()
    with pytest.raises(TypeError, match="capture must be a bool or None"):
        lsmr(A, B, capture="yes")
    for solver in (bicgstab, gmres, lsmr):
        with pytest.warns(RuntimeWarning, match="not offered"):
            solver(A, B, capture=True)


def test_capture_travels_through_the_generic_solve() -> None:
    A, B = _problem()
    with pytest.warns(RuntimeWarning, match="capture=True needs a CUDA device"):
        X = sparse_generic_solve(A, B, "cg", loop="device", capture=True)
    torch.testing.assert_close(X, torch.linalg.solve(A.to_dense(), B), rtol=1e-8, atol=1e-8)
    with pytest.raises(TypeError, match="capture must be a bool"):
        sparse_generic_solve(A, B, "minres", capture="on")


class _FakeGraph:
    """A stand-in for a captured graph: replaying it runs the eager block."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        self.run()


@pytest.mark.parametrize("solver,kw", SOLVERS)
@pytest.mark.parametrize("max_iter", [23, 40])  # a last partial block, and the tolerance first
@pytest.mark.parametrize("precondition", [False, True])
def test_replayed_blocks_give_the_uncaptured_solve(
    monkeypatch: pytest.MonkeyPatch, solver: Any, kw: dict[str, Any], max_iter: int, precondition: bool
) -> None:
    A, B = _problem()
    if precondition:
        d = 1.0 / A.to_dense().diagonal().unsqueeze(-1)
        kw = {**kw, "preconditioner": lambda R: d * R}
    kw = {**kw, "max_iter": max_iter, "on_failure": "ignore", "check_every": 5, "return_info": True}
    ref = solver(A, B, loop="device", **kw)
    graphs: list[_FakeGraph] = []

    def fake_capture(run: Any) -> _FakeGraph:
        run()  # the warm-up advances the state, as on CUDA: the helper must restore it
        graphs.append(_FakeGraph(run))
        return graphs[-1]

    monkeypatch.setattr(_graphs, "capture_possible", lambda device: True)
    monkeypatch.setattr(_graphs, "AUTOMATIC", True)
    monkeypatch.setattr(_graphs, "_capture", fake_capture)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = solver(A, B, loop="device", capture=None, **kw)  # automatic: on
    assert graphs and sum(g.replays for g in graphs) >= 2
    _same(out, ref)


@pytest.mark.parametrize("solver,kw", SOLVERS)
def test_a_capture_that_fails_halfway_warns_once_and_runs_eagerly(
    monkeypatch: pytest.MonkeyPatch, solver: Any, kw: dict[str, Any]
) -> None:
    A, B = _problem()
    ref = solver(A, B, loop="device", return_info=True, check_every=5, **kw)
    calls = []

    def failing_capture(run: Any) -> Any:
        calls.append(1)
        run()  # the warm-up ran, then the capture met a host sync
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(_graphs, "capture_possible", lambda device: True)
    monkeypatch.setattr(_graphs, "AUTOMATIC", True)
    monkeypatch.setattr(_graphs, "_capture", failing_capture)
    with pytest.warns(RuntimeWarning, match="capture of the device loop failed .*stream is capturing") as rec:
        out = solver(A, B, loop="device", return_info=True, check_every=5, capture=True, **kw)
    assert len(calls) == 1 and sum("capture" in str(w.message) for w in rec) == 1
    _same(out, ref)


def test_block_loop_restores_its_state_after_a_failed_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.arange(4.0, dtype=F64)
    y = torch.ones(2, dtype=F64)
    state = [x, y]

    def make_block(steps: int) -> Any:
        return lambda st: [st[0] * 2 + steps, st[1] + 1]

    def failing_capture(run: Any) -> Any:
        run()
        run()
        raise ValueError("cannot capture this")

    monkeypatch.setattr(_graphs, "_capture", failing_capture)
    loop = _graphs.BlockLoop(make_block, state, 3, True, "test")
    with pytest.warns(RuntimeWarning, match="ValueError: cannot capture this"):
        loop.run(3)
    # the failed attempt left no trace: exactly one eager block from the original state
    assert torch.equal(x, torch.arange(4.0, dtype=F64) * 2 + 3) and torch.equal(
        y, torch.full((2,), 2.0, dtype=F64)
    )
    assert state[0] is x and not loop.capture
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second attempt, no second warning
        loop.run(3)
        loop.run(1)
    assert torch.equal(y, torch.full((2,), 4.0, dtype=F64))


def test_store_handles_rotated_buffers() -> None:
    a, b = torch.tensor([1.0]), torch.tensor([2.0])
    _graphs.store([a, b], [b, a])  # a swap: neither copy may read what the other wrote
    assert a.item() == 2.0 and b.item() == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-graph capture needs a CUDA device")
@pytest.mark.parametrize("solver,kw", SOLVERS)
@pytest.mark.parametrize("k", [1, 4])
def test_captured_solve_matches_uncaptured_on_cuda(solver: Any, kw: dict[str, Any], k: int) -> None:
    A = grid_operator((10, 10, 10)).to_sparse_csr().cuda()
    B = torch.randn(A.shape[0], k, dtype=F64, device="cuda", generator=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the capture must succeed: no fallback warning
        x_c, i_c = solver(A, B, loop="device", return_info=True, capture=True, **kw)
    x_u, i_u = solver(A, B, loop="device", return_info=True, capture=False, **kw)
    assert i_c.iterations == i_u.iterations and i_c.reason == i_u.reason
    torch.testing.assert_close(x_c, x_u, rtol=1e-12, atol=1e-12)
    ref = torch.linalg.solve(A.to_dense(), B)
    torch.testing.assert_close(x_c, ref, rtol=1e-7, atol=1e-7)


def test_automatic_capture_is_off_until_verified_on_a_gpu() -> None:
    """``capture=None`` captures nothing while ``AUTOMATIC`` is off, even on a CUDA device."""
    cuda = torch.device("cuda")  # resolve_capture only reads the device type
    assert _graphs.AUTOMATIC is False
    assert _graphs.resolve_capture(None, cuda, True, "linear_cg") is False
    assert _graphs.resolve_capture(True, cuda, True, "linear_cg") is True
    assert _graphs.resolve_capture(False, cuda, True, "linear_cg") is False
