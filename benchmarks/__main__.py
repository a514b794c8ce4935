"""``python -m benchmarks``: tsgu against what users would pick instead, with tables and plots.

Every variant runs in a fresh subprocess (so its peak memory is its own), except in interleaved
cases (the solver peers), whose libraries share one per round and are timed in turns; results go to
``benchmarks/results/``: ``results.csv`` (one row per variant), ``summary.md`` (a markdown table,
with each tsgu row's ratio to the alternative of the same case) and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .cases import Case, Variant, all_cases
from .report import update_readme, write_reports

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results"


def _progress(items: list[Any], desc: str) -> Any:
    try:
        from tqdm import tqdm

        return tqdm(items, desc=desc, unit="variant", file=sys.stderr)
    except ImportError:  # pragma: no cover
        return items


def merge_rounds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from a variant's rounds: medians and spreads over every timed call of every round
    that succeeded, the largest peaks, the rest (status, residuals, notes) from the first round.

    Examples
    --------
    >>> row = merge_rounds([{"status": "ok", "fwd_times_s": [1.0, 3.0], "bwd_times_s": None,
    ...                      "fwd_peak_bytes": 5, "bwd_peak_bytes": None, "wall_s": 1.0},
    ...                     {"status": "ok", "fwd_times_s": [2.0], "bwd_times_s": None,
    ...                      "fwd_peak_bytes": 7, "bwd_peak_bytes": None, "wall_s": 2.0}])
    >>> row["fwd_s"], row["fwd_spread_s"], row["runs"], row["fwd_peak_bytes"], row["rounds"]
    (2.0, 2.0, 3, 7, 2)
    """
    ok = [r for r in results if r.get("status") == "ok"]
    if not ok:
        return {k: v for k, v in results[0].items() if not k.endswith("_times_s")}
    row = {k: v for k, v in ok[0].items() if not k.endswith("_times_s")}
    fwd = [t for r in ok for t in r["fwd_times_s"]]
    row.update(fwd_s=statistics.median(fwd), fwd_spread_s=max(fwd) - min(fwd), runs=len(fwd))
    if ok[0].get("bwd_times_s") is not None:
        bwd = [t for r in ok for t in r["bwd_times_s"]]
        row.update(bwd_s=statistics.median(bwd), bwd_spread_s=max(bwd) - min(bwd))
    for key in ("fwd_peak_bytes", "bwd_peak_bytes"):
        peaks = [r[key] for r in ok if r.get(key) is not None]
        row[key] = max(peaks) if peaks else None
    row["rounds"] = len(ok)
    row["wall_s"] = round(sum(r.get("wall_s", 0.0) for r in results), 1)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--full", action="store_true", help="larger problem sizes")
    parser.add_argument("--only", action="append", default=[], help="run cases whose name contains NAME")
    parser.add_argument("--matrix", help="run the matmul and solver cases on this Matrix Market file")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of timing per variant")
    parser.add_argument(
        "--dense-limit-gib", type=float, default=8.0, help="skip dense alternatives above this"
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda needs a GPU")
    cases = all_cases(args.full, args.matrix)
    if args.only:
        cases = [c for c in cases if any(o in c.name for o in args.only)]
    if args.list:
        for c in cases:
            print(f"{c.name:28s} {c.op:28s} {c.size}: " + ", ".join(v.name for v in c.variants))
        return 0
    if not cases:
        parser.error("no case matches --only")
    worker_args = {
        "full": args.full,
        "matrix": args.matrix,
        "device": args.device,
        "repeats": args.repeats,
        "budget_s": args.budget,
        "dense_limit": int(args.dense_limit_gib * 2**30),
    }
    jobs: list[tuple[Case, list[Variant], int]] = []
    for c in cases:
        shared = [v for v in c.variants if c.interleave and not v.alone]
        for r in range(c.rounds):
            if shared:
                jobs.append((c, shared if r % 2 == 0 else shared[::-1], r))
            turn = [v for v in c.variants if v not in shared and (r == 0 or not v.alone)]
            jobs.extend((c, [v], r) for v in (turn if r % 2 == 0 else turn[::-1]))
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    partial = Path(args.out) / "rows.jsonl"
    partial.unlink(missing_ok=True)
    bar = _progress(jobs, "benchmarks")
    for case, group, rnd in bar:
        names = [v.name for v in group]
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{case.name}: {', '.join(names)}" + (f" (round {rnd + 1})" if rnd else ""))
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.worker",
                case.name,
                json.dumps(names),
                json.dumps(worker_args),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT.parent,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        marker = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT@@")]
        if marker:
            by_name = json.loads(marker[-1][len("@@RESULT@@") :])
        elif proc.returncode < 0 or proc.returncode == 137:
            by_name = {n: {"status": "out of memory (killed)"} for n in names}
        else:
            error = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
            by_name = {n: {"status": "error", "error": error} for n in names}
        wall = round(time.perf_counter() - t0, 1)
        partial.parent.mkdir(parents=True, exist_ok=True)
        for name in names:
            result = {**by_name[name], "wall_s": wall}
            results.setdefault((case.name, name), []).append(result)
            with partial.open("a") as f:  # every finished variant, in case the run is stopped
                f.write(json.dumps({"case": case.name, "variant": name, "round": rnd, **result}) + "\n")
    rows = [
        {
            "case": case.name,
            "op": case.op,
            "variant": variant.name,
            "size": case.size,
            "device": args.device,
            "baseline": variant.baseline,
            "in_turns": case.interleave and not variant.alone,
            **merge_rounds(results[(case.name, variant.name)]),
        }
        for case in cases
        for variant in case.variants
        if (case.name, variant.name) in results
    ]
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
    paths = write_reports(rows, env, Path(args.out))
    partial.unlink(missing_ok=True)  # the complete results are written: the running log goes
    if any(c.name.startswith("krylov") for c in cases) and not args.matrix and args.device == "cpu":
        from .iterations import iteration_table

        table = iteration_table()
        (Path(args.out) / "krylov_iterations.md").write_text(table)
        summary = Path(paths["summary"])
        summary.write_text(summary.read_text() + "\n" + table)
        paths["iterations"] = str(Path(args.out) / "krylov_iterations.md")
    # The README shows the quick suite of this machine: only a complete default run rewrites it.
    default_run = (
        not (args.full or args.only or args.matrix) and Path(args.out).resolve() == DEFAULT_OUT.resolve()
    )
    if default_run and update_readme(ROOT.parent / "README.md", Path(paths["summary"])):
        paths["readme"] = str(ROOT.parent / "README.md")
    print(Path(paths["summary"]).read_text())
    for name, path in paths.items():
        print(f"wrote {name}: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
