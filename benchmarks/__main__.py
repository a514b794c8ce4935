"""``python -m benchmarks``: tsgu against what users would pick instead, with tables and figures.

The default run is the quick suite (every package's headline case at small sizes, about five
minutes on 2 cores) and writes ``benchmarks/results/quick/``; ``--full`` is the run of record (the
larger suite) and writes ``benchmarks/results/`` and the README's table.  A run on another device
writes its own folder (``results/cuda/``, ``results/cuda/quick/``), never the README.  ``--only`` and
``--matrix`` runs write ``.../custom/``.  Each folder gets ``results.csv`` (one row per variant),
``summary.md``, ``env.json`` (which run, where, how long), ``durations.json`` and the figures.

Every variant runs in a fresh subprocess (so its peak memory is its own), except in interleaved
cases (the solver peers), whose libraries share one per round and are timed in turns.  Ctrl-C
stops the run and writes the results of the cases that finished.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ._core import Case, Variant
from .report import fill_from_cases, headline_markdown, read_rows, update_readme, write_reports
from .suite import all_cases

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
README = ROOT.parent / "README.md"
DURATIONS = ROOT / "durations.json"  # expected seconds per case, "quick" and "full", from past runs
STARTUP_S = 4.0  # a fresh worker process: python, torch and the packages imported, the problem built


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


Job = tuple[Case, list[Variant], int]


def jobs_of(cases: list[Case]) -> list[Job]:
    """The processes of a run: (case, variants sharing the process, round)."""
    jobs: list[Job] = []
    for c in cases:
        shared = [v for v in c.variants if c.interleave and not v.alone]
        for r in range(c.rounds):
            if shared:
                jobs.append((c, shared if r % 2 == 0 else shared[::-1], r))
            turn = [v for v in c.variants if v not in shared and (r == 0 or not v.alone)]
            jobs.extend((c, [v], r) for v in (turn if r % 2 == 0 else turn[::-1]))
    return jobs


def out_dir(full: bool, device: str, custom: bool, record: bool) -> Path:
    """Where a run writes: the run of record of the CPU in ``results/``, of a GPU in
    ``results/cuda/``; quick runs in ``quick/`` below that, ``--only``/``--matrix`` runs in
    ``custom/``; ``record`` (``--record``) makes any run the record."""
    base = RESULTS if device == "cpu" else RESULTS / device.split(":")[0]
    if record or (full and not custom):
        return base
    return base / ("custom" if custom else "quick")


def expected_durations(cases: list[Case], full: bool, out: Path) -> dict[str, tuple[float, bool]]:
    """Case -> (expected seconds, measured?): the output folder's last run, else
    ``benchmarks/durations.json``, else the case's ``expected_s``, else a guess from its processes."""
    mode = "full" if full else "quick"
    known: dict[str, float] = {}
    for path in (DURATIONS, out / "durations.json"):  # the later one wins
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        known.update(data.get(mode, data) if path == DURATIONS else data)
    est = {}
    for c in cases:
        if c.name in known:
            est[c.name] = (float(known[c.name]), True)
        elif c.expected_s is not None:
            est[c.name] = (float(c.expected_s), True)
        else:
            est[c.name] = (len(jobs_of([c])) * (STARTUP_S + 4.0), False)
    return est


def _children_cpu_s() -> float:
    """CPU seconds of the finished worker processes so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _fmt_s(s: float) -> str:
    s = max(0.0, s)
    return f"{s:.0f} s" if s < 60 else f"{int(s // 60)} min {int(s % 60):02d} s"


def _bar(total: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(
        total=total,
        unit="process",
        file=sys.stderr,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]{postfix}",
        desc="benchmarks",
    )


def _run_job(case: Case, names: list[str], worker_args: dict[str, Any], tick: Any = None) -> dict[str, Any]:
    """Run one worker process; ``tick()`` is called every second while it runs (the progress bar)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.worker", case.name, json.dumps(names), json.dumps(worker_args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT.parent,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if tick is not None:
                    tick()
    except BaseException:  # Ctrl-C: the worker goes too
        proc.kill()
        proc.wait()
        raise
    marker = [ln for ln in stdout.splitlines() if ln.startswith("@@RESULT@@")]
    if marker:
        return json.loads(marker[-1][len("@@RESULT@@") :])  # type: ignore[no-any-return]
    if proc.returncode in (-2, 130):
        raise KeyboardInterrupt
    if proc.returncode < 0 or proc.returncode == 137:
        return {n: {"status": "out of memory (killed)"} for n in names}
    error = (stderr.strip().splitlines() or ["?"])[-1][:200]
    return {n: {"status": "error", "error": error} for n in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="the run of record: the larger suite")
    parser.add_argument(
        "--record", action="store_true", help="write this run as the run of record (and the README's table)"
    )
    parser.add_argument("--only", action="append", default=[], help="run cases whose name contains NAME")
    parser.add_argument("--matrix", help="run the matmul and solver cases on this Matrix Market file")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--repeats", type=int, help="timed calls after the warm-up (quick 3, full 5)")
    parser.add_argument("--budget", type=float, help="seconds of timing per variant (quick 2, full 20)")
    parser.add_argument(
        "--dense-limit-gib", type=float, default=8.0, help="skip dense alternatives above this"
    )
    parser.add_argument("--out", help="output folder (default: see above)")
    parser.add_argument(
        "--list", action="store_true", help="list the cases with their expected time and exit"
    )
    parser.add_argument(
        "--replot",
        action="store_true",
        help="redraw summary.md and the figures from the output folder's results.csv and exit",
    )
    args = parser.parse_args(argv)
    custom = bool(args.only or args.matrix)
    out = Path(args.out) if args.out else out_dir(args.full, args.device, custom, args.record)
    is_record = out.resolve() == out_dir(True, args.device, False, True).resolve() and (
        args.record or not custom
    )
    writes_readme = is_record and args.device == "cpu"  # a GPU run never writes the README
    if args.replot:
        return replot(out, args.full or out.resolve() == RESULTS.resolve(), writes_readme)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda needs a GPU")
    cases = all_cases(args.full, args.matrix)
    if args.only:
        cases = [c for c in cases if any(o in c.name for o in args.only)]
    if not cases:
        parser.error("no case matches --only")
    est = expected_durations(cases, args.full, out)
    if args.list:
        print(f"{'case':40s} {'family':18s} {'expected':>10s}  size: variants")
        for c in cases:
            s, measured = est[c.name]
            when = ("~" if measured else "?") + _fmt_s(s)
            print(
                f"{c.name:40s} {c.family:18s} {when:>10s}  {c.size}: " + ", ".join(v.name for v in c.variants)
            )
        total = sum(s for s, _ in est.values())
        print(f"{len(cases)} cases, about {_fmt_s(total)} in all ('?': a guess, no run has measured it yet)")
        print(f"writes {out}")
        return 0
    worker_args = {
        "full": args.full,
        "matrix": args.matrix,
        "device": args.device,
        "repeats": args.repeats if args.repeats is not None else (5 if args.full else 3),
        "budget_s": args.budget if args.budget is not None else (20.0 if args.full else 2.0),
        "dense_limit": int(args.dense_limit_gib * 2**30),
    }
    jobs = jobs_of(cases)
    job_est = {id(j): est[j[0].name][0] / sum(1 for k in jobs if k[0] is j[0]) for j in jobs}
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "rows.jsonl"
    partial.unlink(missing_ok=True)
    load_start = os.getloadavg()[0]
    if load_start > (os.cpu_count() or 1):
        print(
            f"warning: the host is busy (load average {load_start:.1f} on {os.cpu_count()} cores): "
            "times will be slower and noisier than on an idle machine (env.json records the load)",
            file=sys.stderr,
        )
    t_run = time.perf_counter()
    bar = _bar(len(jobs))
    case_wall: dict[str, float] = {}
    case_cpu: dict[str, float] = {}
    done_cases: list[Case] = []
    interrupted = False
    spent_est = 0.0
    try:
        for i, job in enumerate(jobs):
            case, group, rnd = job
            names = [v.name for v in group]
            elapsed = time.perf_counter() - t_run
            left = sum(job_est[id(j)] for j in jobs[i:])
            if spent_est > 0:  # scale the estimates by how this run has gone so far
                left *= min(max(elapsed / spent_est, 0.5), 3.0)
            what = f"{case.name}: {', '.join(names)}" + (f" (round {rnd + 1})" if rnd else "")
            t0 = time.perf_counter()

            def show(what: str = what, left: float = left, t0: float = t0) -> None:
                status = f"{what} | ~{_fmt_s(left - (time.perf_counter() - t0))} left"
                if bar is not None:
                    bar.set_postfix_str(status)

            show()
            if bar is None:
                print(what, file=sys.stderr)
            cpu0 = _children_cpu_s()
            by_name = _run_job(case, names, worker_args, show)
            wall = round(time.perf_counter() - t0, 1)
            case_cpu[case.name] = case_cpu.get(case.name, 0.0) + _children_cpu_s() - cpu0
            spent_est += job_est[id(job)]
            case_wall[case.name] = case_wall.get(case.name, 0.0) + wall
            for name in names:
                result = {**by_name[name], "wall_s": wall}
                results.setdefault((case.name, name), []).append(result)
                with partial.open("a") as f:  # every finished variant, in case the run is stopped
                    f.write(json.dumps({"case": case.name, "variant": name, "round": rnd, **result}) + "\n")
            if i + 1 == len(jobs) or jobs[i + 1][0] is not case:
                done_cases.append(case)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: writing the results of the cases that finished", file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
    rows = [
        {
            "case": case.name,
            "op": case.op,
            "family": case.family,
            "variant": variant.name,
            "library": variant.library,
            "size": case.size,
            "device": args.device,
            "baseline": variant.baseline,
            "in_turns": case.interleave and not variant.alone,
            **merge_rounds(results[(case.name, variant.name)]),
        }
        for case in done_cases
        for variant in case.variants
        if (case.name, variant.name) in results
    ]
    if not rows:
        print("no case finished: nothing written", file=sys.stderr)
        return 130 if interrupted else 1
    command = "python -m benchmarks" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    env = {
        "run": ("run of record" if is_record else "quick run" if not args.full else "full run")
        + ("" if args.device == "cpu" else f" on {args.device}"),
        "command": command,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_s": round(time.perf_counter() - t_run, 1),
        "cpu_s": round(sum(case_cpu.values()), 1),
        "load": f"{load_start:.1f} / {os.getloadavg()[0]:.1f}",
        "interrupted": interrupted,
        "cases_done": len(done_cases),
        "cases_total": len(cases),
    }
    extra = ""
    if (
        args.full
        and not interrupted
        and not args.matrix
        and args.device == "cpu"
        and any(c.name.startswith("krylov_poisson") for c in cases)
    ):
        from .iterations import iteration_table

        extra = iteration_table()
        (out / "krylov_iterations.md").write_text(extra)
    if not interrupted and not args.matrix and any(c.family == "Krylov vs peers" for c in cases):
        from .counts import counts_markdown

        extra += counts_markdown(args.device)  # the solver cases' aten calls and syncs per iteration
    paths = write_reports(rows, env, out, extra)
    partial.unlink(missing_ok=True)  # the results are written: the running log goes
    if not interrupted and not custom:
        # the next run's estimates: on a busy host the wall time overstates what the case needs,
        # on an idle one two threads make it shorter than the CPU time: the smaller of the two
        expected = {c: round(min(w, max(case_cpu.get(c, w), 1.0)), 1) for c, w in case_wall.items()}
        (out / "durations.json").write_text(json.dumps(expected, indent=1) + "\n")
    if writes_readme and not interrupted and _write_readme(rows, env, paths):
        paths["readme"] = str(README)
    print(Path(paths["summary"]).read_text())
    for name, path in paths.items():
        print(f"wrote {name}: {path}", file=sys.stderr)
    return 130 if interrupted else 0


def _write_readme(rows: list[dict[str, Any]], env: dict[str, Any], paths: dict[str, str]) -> bool:
    figures = [p for k, p in paths.items() if k.startswith("figure ")]
    if "scaling" in paths:
        figures.append(paths["scaling"])
    return update_readme(README, headline_markdown(rows, env, figures))


def replot(out: Path, full: bool, writes_readme: bool) -> int:
    """Redraw ``summary.md`` and the figures of a results folder from its ``results.csv`` (rows of
    an older suite get their family, library and reference from today's case list)."""
    rows = read_rows(out / "results.csv")
    fill_from_cases(rows, all_cases(full))
    try:
        env = json.loads((out / "env.json").read_text())
    except OSError:
        env = {"run": "results", "command": "python -m benchmarks", "date": "?"}
    iterations = out / "krylov_iterations.md"
    extra = iterations.read_text() if iterations.exists() else ""
    paths = write_reports(rows, env, out, extra, write_csv=False)
    if writes_readme and _write_readme(rows, env, paths):
        paths["readme"] = str(README)
    for name, path in paths.items():
        print(f"wrote {name}: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
