"""Every example of docs/training.md runs (the DDP script on a one-process gloo group)."""

from __future__ import annotations

import re
import socket
import sys
import types
from pathlib import Path

import pytest
import torch

from tsgu_ops import _compat

PAGE = Path(__file__).resolve().parents[1] / "docs" / "training.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def test_the_page_has_one_example_per_section():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index, monkeypatch):
    code = BLOCKS[index]
    # an importable module, as a user's script is: torch 2.5's dynamo imports a function's module by name
    module = types.ModuleType("training_docs_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace: dict[str, object] = module.__dict__
    if "hessian(" in code and _compat.TORCH_VERSION < _compat.NESTED_VMAP_TORCH:
        # torch 2.5's functorch bug: a clear error instead (docs/installation.md, tsgu_ops._compat)
        with pytest.raises(NotImplementedError, match="forward-over-reverse"):
            exec(compile(code, f"{PAGE.name}[{index}]", "exec"), namespace)
        return
    exec(compile(code, f"{PAGE.name}[{index}]", "exec"), namespace)
    if "def train(rank, world_size, port)" in code:  # the DDP script: run one rank of it here
        import datetime
        import functools

        import torch.distributed as dist

        if not dist.is_available() or not dist.is_gloo_available():
            pytest.skip("needs gloo")
        # gloo connects through the interface the host name resolves to; on a CI VM that route
        # once hung the whole session (30 min, gloo's default timeout): use the loopback
        # interface, and fail within a minute rather than hang
        loopback = next((name for _, name in socket.if_nameindex() if name.startswith("lo")), None)
        if loopback is not None:
            monkeypatch.setenv("GLOO_SOCKET_IFNAME", loopback)
        monkeypatch.setattr(
            dist,
            "init_process_group",
            functools.partial(dist.init_process_group, timeout=datetime.timedelta(seconds=60)),
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        namespace["train"](0, 1, port)  # type: ignore[operator]
        assert not dist.is_initialized()
    torch._dynamo.reset()
