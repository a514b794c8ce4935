"""Run one benchmark variant in this (fresh) process and print one JSON line.

Memory (CPU): the peak resident set size of this process above its level before each phase, read
from ``/proc/self/status`` (``VmHWM``) after resetting the high-water mark through
``/proc/self/clear_refs``.  CUDA: ``torch.cuda.max_memory_allocated`` above the level before.
Time: median of repeated calls after one warm-up call.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from typing import Any

import torch

from .cases import all_cases


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class Meter:
    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def start(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            _reset_peak()
            self.base = _rss_kib("VmRSS") * 1024

    def peak(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated() - self.base)
        return max(0, _rss_kib("VmHWM") * 1024 - self.base)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def run(case_name: str, variant_name: str, args: dict[str, Any]) -> dict[str, Any]:
    case = next(c for c in all_cases(args["full"], args.get("matrix")) if c.name == case_name)
    variant = next(v for v in case.variants if v.name == variant_name)
    ctx = {"device": args["device"], "matrix": args.get("matrix"), "dense_limit": args["dense_limit"]}
    torch.manual_seed(0)
    meter = Meter(args["device"])
    run_ = variant.setup(ctx)
    # memory: forward alone, then backward alone (the forward's output alive, as in training)
    meter.start()
    out = run_.forward()
    meter.sync()
    fwd_peak = meter.peak()
    bwd_peak = None
    if run_.backward is not None:
        meter.start()
        run_.backward(out)
        bwd_peak = meter.peak()
    del out
    # time
    fwd_t: list[float] = []
    bwd_t: list[float] = []
    budget = args["budget_s"]
    t_start = time.perf_counter()
    for i in range(args["repeats"] + 1):
        meter.sync()
        t0 = time.perf_counter()
        out = run_.forward()
        meter.sync()
        t1 = time.perf_counter()
        if run_.backward is not None:
            run_.backward(out)
            meter.sync()
        t2 = time.perf_counter()
        del out
        if i > 0:  # the first call is the warm-up
            fwd_t.append(t1 - t0)
            bwd_t.append(t2 - t1)
        if i >= 2 and time.perf_counter() - t_start > budget:
            break
    return {
        "fwd_s": statistics.median(fwd_t),
        "bwd_s": statistics.median(bwd_t) if run_.backward is not None else None,
        "fwd_spread_s": (max(fwd_t) - min(fwd_t)),
        "bwd_spread_s": (max(bwd_t) - min(bwd_t)) if run_.backward is not None else None,
        "runs": len(fwd_t),
        "fwd_peak_bytes": fwd_peak,
        "bwd_peak_bytes": bwd_peak,
        **run_.meta,
    }


def main() -> None:
    case_name, variant_name, args_json = sys.argv[1], sys.argv[2], sys.argv[3]
    args = json.loads(args_json)
    torch.set_num_threads(args.get("threads") or torch.get_num_threads())
    try:
        result = {"status": "ok", **run(case_name, variant_name, args)}
    except MemoryError as exc:
        result = {"status": "skipped: out of memory budget", "error": str(exc)}
    except torch.OutOfMemoryError as exc:  # CUDA
        result = {"status": "out of memory", "error": str(exc).splitlines()[0]}
    except (RuntimeError, NotImplementedError) as exc:
        result = {"status": "unsupported", "error": str(exc).splitlines()[0][:200]}
    print("@@RESULT@@" + json.dumps(result))


if __name__ == "__main__":
    main()
