"""SparseParameter models under DistributedDataParallel and FSDP2, two processes on 127.0.0.1.

Each test spawns two ranks (``torch.multiprocessing``, gloo on CPU, a free port, bounded time),
trains for a few steps on each rank's half of a global batch, and compares the final parameters
with one process training on the whole batch: data parallelism must give the same parameters.
"""

from __future__ import annotations

import datetime
import importlib
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

HERE = Path(__file__).resolve().parent
STEPS = 3
BATCH = 8
TIMEOUT_S = 240

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo"),
]


def _net() -> torch.nn.Module:
    """A sparse CSR (int32) layer, a dense bias and a batched sparse COO layer; seeded."""
    from tsgu_ops.nn import SparseParameter
    from tsgu_ops.testing import build_case

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w1 = SparseParameter(
                build_case(0, (8, 6), 0.4, torch.sparse_csr, torch.int32, torch.float64).sparse
            )
            self.b1 = torch.nn.Parameter(torch.zeros(8, 1, dtype=torch.float64))
            self.w2 = SparseParameter(
                build_case(1, (2, 3, 8), 0.5, torch.sparse_coo, torch.int64, torch.float64).sparse
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, 6)
            h = torch.tanh(self.w1.mm(x.T) + self.b1)  # (8, batch)
            return self.w2.mm(torch.stack([h, h * h])).sum(0).T  # (batch, 3)

    return Net()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return (
        torch.randn(BATCH, 6, dtype=torch.float64, generator=g),
        torch.randn(BATCH, 3, dtype=torch.float64, generator=g),
    )


def _train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.5)
    for _ in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def _plain_probe() -> torch.nn.Module:
    return torch.nn.Linear(4, 2, dtype=torch.float64)


def _full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in model.state_dict().items():
        full = getattr(v, "full_tensor", None)  # FSDP2 parameters are DTensors
        out[k] = (full() if full is not None else v).detach().clone()
    return out


def _ddp(xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel

    model = DistributedDataParallel(_net())
    _train(model, xs, ys)
    return {"state": _full_state(model.module)}


def _fsdp2(xs: torch.Tensor, ys: torch.Tensor, world: int) -> dict[str, Any]:
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
    except ImportError as exc:
        return {"unsupported": f"no FSDP2 in this torch ({exc})"}
    mesh = init_device_mesh("cpu", (world,))
    try:  # does this torch's FSDP2 train a plain dense layer on CPU with gloo at all?
        probe = fully_shard(_plain_probe(), mesh=mesh)
        probe(torch.ones(2, 4, dtype=torch.float64)).sum().backward()
    except Exception as exc:  # reported as the reason of a skip
        return {"unsupported": f"{type(exc).__name__}: {exc}"}
    model = fully_shard(_net(), mesh=mesh)
    _train(model, xs, ys)
    return {"state": _full_state(model)}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    result: dict[str, Any] = {}
    try:
        dist.init_process_group(
            "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=TIMEOUT_S // 2)
        )
        x, y = _data()
        xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]
        for mode, run in (("ddp", lambda: _ddp(xs, ys)), ("fsdp2", lambda: _fsdp2(xs, ys, world))):
            try:
                result[mode] = run()
            except Exception:
                result[mode] = {"error": traceback.format_exc()}
            dist.barrier()
    except Exception:
        result["error"] = traceback.format_exc()
    finally:
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Run both modes once in two spawned ranks; the result dict of each rank."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ranks")
    # The children unpickle the worker by module name: import this file under its plain name.
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    worker = importlib.import_module("test_distributed")._worker
    ctx = mp.start_processes(
        worker, args=(2, _free_port(), str(out)), nprocs=2, join=False, start_method="spawn"
    )
    try:
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=TIMEOUT_S)
        while not ctx.join(timeout=2):
            if datetime.datetime.now() > deadline:
                pytest.fail(f"the two ranks did not finish within {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    results = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for r, res in enumerate(results):
        assert "error" not in res, f"rank {r} failed:\n{res['error']}"
    return results


def _mode(results: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    out = [res[mode] for res in results]
    for r, res in enumerate(out):
        assert "error" not in res, f"{mode}: rank {r} failed:\n{res['error']}"
    return out


def _single_process_state() -> dict[str, torch.Tensor]:
    model = _net()
    _train(model, *_data())
    return _full_state(model)


def _assert_same_as_single_process(results: list[dict[str, Any]]) -> None:
    expected = _single_process_state()
    start = _full_state(_net())
    for res in results:
        state = res["state"]
        assert set(state) == set(expected)
        for k in expected:
            torch.testing.assert_close(state[k], expected[k], rtol=1e-10, atol=1e-12, msg=k)
    assert not torch.equal(expected["w1.values"], start["w1.values"])  # training moved the weights


def test_ddp_with_sparse_parameters_equals_single_process(two_ranks):
    _assert_same_as_single_process(_mode(two_ranks, "ddp"))


def test_fsdp2_with_sparse_parameters_equals_single_process(two_ranks):
    results = _mode(two_ranks, "fsdp2")
    reasons = [r["unsupported"] for r in results if "unsupported" in r]
    if reasons:
        pytest.skip(f"FSDP2 cannot train even a dense layer on CPU/gloo with this torch: {reasons[0]}")
    _assert_same_as_single_process(results)
