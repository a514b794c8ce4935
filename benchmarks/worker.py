"""Run benchmark variants of one case in this (fresh) process and print one JSON line.

Usually one variant per process; the variants of an *interleaved* case share a process and are
timed in turns (see :func:`run`).

Memory (CPU): the peak resident set size of this process above its level before each phase, read
from ``/proc/self/status`` (``VmHWM``) after resetting the high-water mark through
``/proc/self/clear_refs``.  CUDA: ``torch.cuda.max_memory_allocated`` above the level before.
Time: median of repeated calls after one warm-up call.  In a shared process, memory is each phase's
peak above the level before it, which already holds the other variants' inputs.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from typing import Any

import torch

from .suite import all_cases


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


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MemoryError):
        return {"status": "skipped: out of memory budget", "error": str(exc)}
    if isinstance(exc, torch.OutOfMemoryError):  # CUDA
        return {"status": "out of memory", "error": str(exc).splitlines()[0]}
    return {"status": "unsupported", "error": str(exc).splitlines()[0][:200]}


# Between the calls of variants sharing a process: a library's worker threads keep spinning for a
# while after its call (SciPy's OpenBLAS pool), and the pause lets them go idle before the next
# library is timed (the measurement behind it: docs/benchmarks.md, "How they are timed").
TURN_PAUSE_S = 0.25

_FAILURES = (MemoryError, RuntimeError, NotImplementedError)  # torch.OutOfMemoryError is a RuntimeError


def _memory(run_: Any, meter: Meter) -> dict[str, Any]:
    """Peaks of the forward alone, then of the backward alone (the forward's output alive, as in
    training)."""
    meter.start()
    out = run_.forward()
    meter.sync()
    fwd_peak = meter.peak()
    bwd_peak = None
    if run_.backward is not None:
        meter.start()
        run_.backward(out)
        bwd_peak = meter.peak()
    return {"fwd_peak_bytes": fwd_peak, "bwd_peak_bytes": bwd_peak}


def _timed_call(run_: Any, meter: Meter, fwd_t: list[float], bwd_t: list[float]) -> None:
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
    fwd_t.append(t1 - t0)
    bwd_t.append(t2 - t1)


def run(case_name: str, variant_names: list[str], args: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Set up the named variants of a case in this process, measure each one's memory, then time
    them in turns: call ``i`` of every variant, then call ``i + 1`` in the reverse order, and so on
    (after one warm-up call each), so that all of them see the same state of the host.  One
    variant's failure leaves the others running."""
    case = next(c for c in all_cases(args["full"], args.get("matrix")) if c.name == case_name)
    ctx = {"device": args["device"], "matrix": args.get("matrix"), "dense_limit": args["dense_limit"]}
    meter = Meter(args["device"])
    runs: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for name in variant_names:
        variant = next(v for v in case.variants if v.name == name)
        torch.manual_seed(0)
        try:
            runs[name] = variant.setup(ctx)
            results[name] = _memory(runs[name], meter)
        except _FAILURES as exc:
            runs.pop(name, None)
            results[name] = _error(exc)
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in runs}
    budget = args["budget_s"] * max(1, len(runs))
    t_start = time.perf_counter()
    for i in range(args["repeats"] + 1):
        order = list(runs) if i % 2 == 0 else list(runs)[::-1]
        for name in order:
            fwd_t, bwd_t = times[name]
            if len(runs) > 1:
                time.sleep(TURN_PAUSE_S)
            try:
                _timed_call(runs[name], meter, fwd_t, bwd_t)
            except _FAILURES as exc:
                results[name] = _error(exc)
                del runs[name]
                continue
            if i == 0:  # the first call is the warm-up
                fwd_t.clear()
                bwd_t.clear()
        if i >= 2 and time.perf_counter() - t_start > budget:
            break
    for name, run_ in runs.items():
        fwd_t, bwd_t = times[name]
        has_bwd = run_.backward is not None
        results[name] = {
            "status": "ok",
            "fwd_s": statistics.median(fwd_t),
            "bwd_s": statistics.median(bwd_t) if has_bwd else None,
            "fwd_spread_s": (max(fwd_t) - min(fwd_t)),
            "bwd_spread_s": (max(bwd_t) - min(bwd_t)) if has_bwd else None,
            "runs": len(fwd_t),
            "fwd_times_s": fwd_t,
            "bwd_times_s": bwd_t if has_bwd else None,
            **results[name],
            **run_.meta,
        }
    return results


def main() -> None:
    """``python -m benchmarks.worker CASE NAMES_JSON ARGS_JSON`` (``NAMES_JSON``: a JSON list of
    variant names): one result line, a JSON object from variant name to its result."""
    case_name, names_json, args_json = sys.argv[1], sys.argv[2], sys.argv[3]
    args = json.loads(args_json)
    torch.set_num_threads(args.get("threads") or torch.get_num_threads())
    results = run(case_name, json.loads(names_json), args)
    print("@@RESULT@@" + json.dumps(results))


if __name__ == "__main__":
    main()
