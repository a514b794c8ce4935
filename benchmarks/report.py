"""CSV, markdown summary and figures of a benchmark run.

The figures: one PNG per family (``family_<name>.png``), one panel row per case, the left panel
the time of each variant as a speed-up over the case's reference (the alternative a user would pick,
marked ``*`` in the tables), the right one its peak memory the same way (reference ÷ variant, so
right of the 1× line is better on both), on log axes with the ratio written at the end of each bar;
tsgu variants in one colour, each alternative library in its own.  Plus ``scaling.png``
(``sparse_mm`` time and memory against nnz).  Everything is drawn from the rows alone, so a results
CSV can be redrawn later (``python -m benchmarks --replot``).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from ._core import FAMILIES, library_of

COLUMNS = [
    "case",
    "op",
    "family",
    "variant",
    "library",
    "baseline",
    "size",
    "nnz",
    "rows",
    "dtype",
    "layout",
    "device",
    "status",
    "fwd_s",
    "fwd_spread_s",
    "bwd_s",
    "bwd_spread_s",
    "total_s",
    "runs",
    "rounds",
    "fwd_peak_bytes",
    "bwd_peak_bytes",
    "peak_bytes",
    "time_ratio_vs_alternative",
    "memory_ratio_vs_alternative",
    "iterations",
    "residual",
    "note",
    "error",
    "wall_s",
]
_FLOATS = {"fwd_s", "fwd_spread_s", "bwd_s", "bwd_spread_s", "total_s", "residual", "wall_s"}
_FLOATS |= {"time_ratio_vs_alternative", "memory_ratio_vs_alternative"}
_INTS = {"nnz", "rows", "runs", "rounds", "fwd_peak_bytes", "bwd_peak_bytes", "peak_bytes", "iterations"}

COLOURS = {
    "tsgu": "#1f5fbf",
    "PyTorch": "#f28e2b",
    "PyTorch dense": "#d62728",
    "SciPy": "#2ca02c",
    "torch-sla": "#9467bd",
    "other": "#8c8c8c",
}
MIN_MEMORY = 2**20  # peaks under 1 MiB are noise of the RSS reading: no memory ratio from them


def _total(r: dict[str, Any]) -> float | None:
    if r.get("status") != "ok" or r.get("fwd_s") is None:
        return None
    return float(r["fwd_s"]) + float(r.get("bwd_s") or 0.0)


def _peak(r: dict[str, Any]) -> int | None:
    if r.get("status") != "ok":
        return None
    return max(r.get("fwd_peak_bytes") or 0, r.get("bwd_peak_bytes") or 0)


def _fmt_t(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_b(b: int | None) -> str:
    if b is None:
        return "–"
    return f"{b / 2**20:.1f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"


def fmt_ratio(x: float) -> str:
    """A ratio as the figures write it.

    Examples
    --------
    >>> [fmt_ratio(x) for x in (1234.5, 47.2, 1.84, 0.356, 0.00123)]
    ['1234×', '47×', '1.8×', '0.36×', '0.0012×']
    """
    if x >= 10:
        return f"{x:.0f}×"
    if x >= 1:
        return f"{x:.1f}×"
    return f"{x:.2g}×"


# ----------------------------------------------------------------------------------------------
# comparisons
def reference(case_rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row the others of a case are compared with: the one marked ``baseline``; failing that
    (a CSV of an older suite), the first row of another library than tsgu."""
    marked = [r for r in case_rows if _truthy(r.get("baseline"))]
    if marked:
        return marked[0]
    others = [r for r in case_rows if r.get("library") != "tsgu"]
    return others[0] if others else None


def speedup(row: dict[str, Any], ref: dict[str, Any]) -> tuple[float | None, str]:
    """``ref``'s time ÷ ``row``'s (above 1: ``row`` is faster) and what was compared: forward and
    backward, or the forward alone when either side has no backward (SciPy's solvers)."""
    if row.get("status") != "ok" or ref.get("status") != "ok":
        return None, ""
    both = row.get("bwd_s") is not None and ref.get("bwd_s") is not None
    t_row = _total(row) if both else row.get("fwd_s")
    t_ref = _total(ref) if both else ref.get("fwd_s")
    if not t_row or not t_ref:
        return None, ""
    return float(t_ref) / float(t_row), "fwd+bwd" if both else "fwd"


def memory_saving(row: dict[str, Any], ref: dict[str, Any]) -> float | None:
    """``ref``'s peak memory ÷ ``row``'s (above 1: ``row`` needs less); ``None`` when either peak is
    under 1 MiB (below what the RSS reading resolves) or a side did not run."""
    a, b = _peak(row), _peak(ref)
    if a is None or b is None or a < MIN_MEMORY or b < MIN_MEMORY:
        return None
    return b / a


def _truthy(v: Any) -> bool:
    return v is True or str(v).lower() in ("true", "1", "yes")


def _status_text(r: dict[str, Any], width: int = 60) -> str:
    s = str(r.get("status") or "not run")
    return s if len(s) <= width else s[: width - 1] + "…"


# ----------------------------------------------------------------------------------------------
# rows in and out
def read_rows(csv_path: Path) -> list[dict[str, Any]]:
    """The rows of a ``results.csv``, numbers as numbers and empty cells as ``None``."""
    rows = []
    with csv_path.open(newline="") as f:
        for raw in csv.DictReader(f):
            r: dict[str, Any] = {}
            for k, v in raw.items():
                if v in ("", None):
                    r[k] = None
                elif k in _INTS:
                    r[k] = int(float(v))
                elif k in _FLOATS:
                    r[k] = float(v)
                elif k == "baseline":
                    r[k] = _truthy(v)
                else:
                    r[k] = v
            rows.append(r)
    return rows


def fill_from_cases(rows: list[dict[str, Any]], cases: list[Any]) -> None:
    """Give rows of an older CSV the family, library and baseline flag their case declares now."""
    by_key = {(c.name, v.name): (c, v) for c in cases for v in c.variants}
    family_by_case = {c.name: c.family for c in cases}
    for r in rows:
        c_v = by_key.get((r["case"], r["variant"]))
        if not r.get("family"):
            r["family"] = family_by_case.get(r["case"]) or "other"
        if c_v is not None:
            if not r.get("library"):
                r["library"] = c_v[1].library
            if r.get("baseline") is None:
                r["baseline"] = c_v[1].baseline
        r.setdefault("library", None)
        if not r.get("library"):
            r["library"] = library_of(r["variant"])
    # an older CSV with a case whose declared baseline is not among its rows: its ratio-1 row
    by_case: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_case[r["case"]].append(r)
    for case_rows in by_case.values():
        if not any(_truthy(r.get("baseline")) for r in case_rows):
            ones = [r for r in case_rows if r.get("time_ratio_vs_alternative") == 1.0]
            if len(ones) == 1:
                ones[0]["baseline"] = True


def _by_case(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_case: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_case[r["case"]].append(r)
    return by_case


def _run_line(env: dict[str, Any]) -> str:
    what = env.get("run", "run")
    parts = [f"**{what}** (`{env.get('command', 'python -m benchmarks')}`), {env.get('date', '?')}"]
    if env.get("wall_s") is not None:
        m, s = divmod(round(float(env["wall_s"])), 60)
        parts.append(f"wall time {m} min {s:02d} s")
    if env.get("cpu_s") is not None:
        parts.append(f"CPU time of its processes {round(float(env['cpu_s']))} s")
    if env.get("load") is not None:
        parts.append(f"load average {env['load']} (1 min, at the start and at the end)")
    if env.get("interrupted"):
        parts.append(f"**interrupted** after {env.get('cases_done')} of {env.get('cases_total')} cases")
    return ", ".join(parts) + "."


def write_reports(
    rows: list[dict[str, Any]], env: dict[str, Any], out: Path, extra_md: str = "", write_csv: bool = True
) -> dict[str, str]:
    """Write ``results.csv`` (unless ``write_csv`` is false: a redraw keeps the measured file as it
    is), ``summary.md``, ``env.json`` and the figures into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    by_case = _by_case(rows)
    for r in rows:
        r["total_s"] = _total(r)
        r["peak_bytes"] = _peak(r)
    for case_rows in by_case.values():
        base = reference(case_rows)
        for r in case_rows:
            r.pop("time_ratio_vs_alternative", None)
            r.pop("memory_ratio_vs_alternative", None)
            if base and r["total_s"] and base["total_s"]:
                r["time_ratio_vs_alternative"] = round(r["total_s"] / base["total_s"], 3)
            if base and r["peak_bytes"] and base["peak_bytes"]:
                r["memory_ratio_vs_alternative"] = round(r["peak_bytes"] / base["peak_bytes"], 3)
    csv_path = out / "results.csv"
    if write_csv:
        with csv_path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow(r)
    (out / "env.json").write_text(json.dumps(env, indent=1) + "\n")
    md_path = out / "summary.md"
    md_path.write_text(summary_markdown(rows, env) + (("\n" + extra_md) if extra_md else ""))
    paths = {"csv": str(csv_path), "summary": str(md_path)}
    try:
        paths.update(write_figures(rows, out))
    except ImportError:  # pragma: no cover - matplotlib is a dev dependency
        pass
    return paths


def summary_markdown(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    """The full table: every variant of every case, ratios against the alternative marked *."""
    lines = [
        _run_line(env),
        "",
        f"torch {env.get('torch')}, Python {env.get('python')}, {env.get('cores')} cores, "
        f"device {env.get('device')} ({env.get('threads')} threads). Times are medians after a warm-up "
        "(solver-peer cases: the libraries sharing a process and timed in turns); memory is the peak above "
        "the level before each phase (forward, then backward). Ratios: this row ÷ the alternative marked * "
        "(below 1: less time or memory).",
        "",
        "| case | size | variant | forward | backward | fwd+bwd | peak fwd | peak bwd | time ratio | "
        "memory ratio | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = r["variant"] + (" *" if _truthy(r.get("baseline")) else "")
        status = str(r.get("status") or "")
        if r.get("note"):
            status += f" ({r['note']})"
        if (r.get("rounds") or 1) > 1 or r.get("in_turns"):
            turns = ", in turns with the others" if r.get("in_turns") else ""
            status += f" [{r.get('runs')} calls in {r.get('rounds') or 1} rounds{turns}]"
        if r.get("error"):
            status += f": {r['error']}"
        lines.append(
            f"| {r['case']} | {r['size']} | {name} | {_fmt_t(r.get('fwd_s'))} | {_fmt_t(r.get('bwd_s'))} | "
            f"{_fmt_t(r.get('total_s'))} | {_fmt_b(r.get('fwd_peak_bytes'))} | "
            f"{_fmt_b(r.get('bwd_peak_bytes'))} | {r.get('time_ratio_vs_alternative') or '–'} | "
            f"{r.get('memory_ratio_vs_alternative') or '–'} | {status} |"
        )
    return "\n".join(lines) + "\n"


def headline_markdown(rows: list[dict[str, Any]], env: dict[str, Any], figures: list[str]) -> str:
    """The README's block: which run, one line per case (its first tsgu variant against the
    alternative marked *), and the figures."""
    lines = [
        _run_line(env),
        f"torch {env.get('torch')}, {env.get('cores')} cores, device {env.get('device')}. "
        "Speed-up and memory saving: the alternative's time or peak ÷ tsgu's (above 1×: tsgu is faster "
        "or smaller); fwd: forward only (the alternative has no backward). Every variant, with its "
        "forward, backward and status: [summary.md](benchmarks/results/summary.md).",
        "",
        "| case | size | tsgu | alternative | tsgu time | alternative time | speed-up | memory saving |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, case_rows in _by_case(rows).items():
        ref = reference(case_rows)
        mine = [r for r in case_rows if r.get("library") == "tsgu" and r is not ref]
        if ref is None or not mine or ref.get("library") == "tsgu":
            continue
        t = mine[0]
        s, basis = speedup(t, ref)
        m = memory_saving(t, ref)
        if s:
            s_txt = fmt_ratio(s) + (" (fwd)" if basis == "fwd" else "")
        else:
            s_txt = _status_text(t if t.get("status") != "ok" else ref)
        lines.append(
            f"| {case} | {t['size']} | {t['variant']} | {ref['variant']} | {_fmt_t(_total(t))} | "
            f"{_fmt_t(_total(ref)) if ref.get('status') == 'ok' else _status_text(ref)} | {s_txt} | "
            f"{fmt_ratio(m) if m else '–'} |"
        )
    lines.append("")
    lines += [f"![{Path(p).stem.replace('_', ' ')}](benchmarks/results/{Path(p).name})" for p in figures]
    return "\n".join(lines) + "\n"


README_START = "<!-- benchmark-summary:start (written by python -m benchmarks --full) -->"
README_END = "<!-- benchmark-summary:end -->"
_START_RE = re.compile(r"<!-- benchmark-summary:start[^>]*-->")


def update_readme(readme: Path, block: str) -> bool:
    """Put ``block`` between the README's markers; False if they are missing."""
    if not readme.exists():
        return False
    text = readme.read_text()
    m = _START_RE.search(text)
    if m is None or README_END not in text[m.end() :]:
        return False
    tail = text[m.end() :].split(README_END, 1)[1]
    readme.write_text(f"{text[: m.start()]}{README_START}\n{block.strip()}\n{README_END}{tail}")
    return True


# ----------------------------------------------------------------------------------------------
# figures
def family_slug(family: str) -> str:
    """The file name part of a family: ``"Krylov vs peers"`` -> ``"krylov_vs_peers"``."""
    return re.sub(r"[^a-z0-9]+", "_", family.lower()).strip("_")


def _is_scaling(case_rows: list[dict[str, Any]]) -> bool:
    return (case_rows[0].get("op") or "") == "sparse_mm scaling"


def families(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Family -> its cases that have something to compare (two variants or more), in the order of
    :data:`FAMILIES`, then the others in the order met.  The scaling cases go to ``scaling.png``."""
    found: dict[str, list[str]] = {}
    for case, case_rows in _by_case(rows).items():
        if len(case_rows) < 2 or _is_scaling(case_rows) or reference(case_rows) is None:
            continue
        found.setdefault(case_rows[0].get("family") or "other", []).append(case)
    order = [f for f in FAMILIES if f in found] + [f for f in found if f not in FAMILIES]
    return {f: found[f] for f in order}


def _bars(case_rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ref = reference(case_rows)
    assert ref is not None
    return ref, [r for r in case_rows if r is not ref]


def family_figure(family: str, rows: list[dict[str, Any]], cases: list[str]) -> Any:
    """The figure of one family (a matplotlib ``Figure``): per case, speed-up and memory saving of
    every variant over the case's reference, bars from the 1× line on log axes, each labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    by_case = _by_case(rows)
    heights = [max(len(by_case[c]) - 1, 1) * 0.34 + 0.75 for c in cases]
    fig, axes = plt.subplots(
        len(cases),
        2,
        figsize=(10, sum(heights) + 1.3),
        gridspec_kw={"height_ratios": heights, "width_ratios": [1.25, 1]},
        squeeze=False,
    )
    values: list[list[float]] = [[], []]
    libraries: set[str] = set()
    for i, case in enumerate(cases):
        ref, others = _bars(by_case[case])
        ax_t, ax_m = axes[i]
        ys = list(range(len(others)))
        for y, r in zip(ys, others):
            lib = r.get("library") or "other"
            colour = COLOURS.get(lib, COLOURS["other"])
            s, basis = speedup(r, ref)
            m = memory_saving(r, ref)
            for ax, val, k, suffix in ((ax_t, s, 0, " (fwd)" if basis == "fwd" else ""), (ax_m, m, 1, "")):
                if val is None:
                    if r.get("status") != "ok":
                        text = _status_text(r, 30) if k == 0 else "–"
                    elif ref.get("status") != "ok":
                        text = "reference " + _status_text(ref, 20)
                    else:
                        text = "n/a (< 1 MiB)" if k == 1 else "n/a"
                    ax.text(
                        1, y, "  " + text, va="center", ha="left", fontsize=8, color="#555555", style="italic"
                    )
                    continue
                values[k].append(val)
                libraries.add(lib)
                ax.barh(y, val - 1, left=1, height=0.62, color=colour, edgecolor="none")
                ha = "left" if val >= 1 else "right"
                weight = "bold" if lib == "tsgu" else "normal"
                label = f" {fmt_ratio(val)}{suffix} "
                ax.text(val, y, label, va="center", ha=ha, fontsize=8.5, fontweight=weight)
        ax_t.set_yticks(ys, [_short(r["variant"]) for r in others], fontsize=8)
        ax_m.set_yticks(ys, [""] * len(ys))
        for ax in (ax_t, ax_m):
            ax.set_ylim(len(others) - 0.5, -0.5)
            ax.axvline(1, color="black", lw=1)
            ax.set_xscale("log")
            ax.grid(axis="x", which="major", color="#dddddd", lw=0.6)
            ax.set_axisbelow(True)
            ax.tick_params(axis="x", labelsize=8)
        size = by_case[case][0].get("size") or ""
        ax_t.set_title(
            f"{case}: {size}\nreference (1×): {ref['variant']} [{ref.get('library') or 'other'}]",
            loc="left",
            fontsize=9,
            pad=4,
        )
    for k in range(2):
        vals = values[k] + [1.0]
        lo, hi = min(vals), max(vals)
        span = math.log10(max(hi, 1 / lo, 2.0))
        lo_lim, hi_lim = (
            10 ** (math.log10(lo) - 0.35 * span - 0.3),
            10 ** (math.log10(hi) + 0.35 * span + 0.3),
        )
        for i in range(len(cases)):
            axes[i][k].set_xlim(min(lo_lim, 0.5), max(hi_lim, 2.0))
            ax = axes[i][k]
            decades = math.log10(ax.get_xlim()[1] / ax.get_xlim()[0])
            subs = (1.0,) if decades > 2.5 else (1.0, 2.0, 5.0)
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=subs))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}×"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[-1][0].set_xlabel("speed-up: reference time ÷ variant time", fontsize=9)
    axes[-1][1].set_xlabel("memory saving: reference peak ÷ variant peak", fontsize=9)
    total = sum(heights) + 1.3
    order = [lib for lib in COLOURS if lib in libraries]
    fig.legend(
        handles=[Patch(color=COLOURS[lib], label=lib) for lib in order],
        loc="upper right",
        ncol=max(1, len(order)),  # every variant of the family failed: no bar, no colour
        fontsize=9,
        frameon=False,
        bbox_to_anchor=(0.99, 1 - 0.28 / total),
    )
    fig.suptitle(
        f"{family}: tsgu against the alternatives (right of the 1× line: faster, smaller)",
        x=0.01,
        y=1 - 0.06 / total,
        ha="left",
        va="top",
        fontsize=11,
        fontweight="bold",
    )
    fig.tight_layout(h_pad=0.6)
    fig.subplots_adjust(top=1 - 0.75 / total)  # room for the title line and the legend
    return fig


def _short(name: str, width: int = 42) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def write_figures(rows: list[dict[str, Any]], out: Path) -> dict[str, str]:
    """One ``family_<name>.png`` per family and ``scaling.png``; returns their paths by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: dict[str, str] = {}
    for old in out.glob("family_*.png"):  # a family that has gone must not leave its figure
        old.unlink()
    for family, cases in families(rows).items():
        fig = family_figure(family, rows, cases)
        path = out / f"family_{family_slug(family)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths[f"figure {family}"] = str(path)
    sc = scaling_figure(rows)
    if sc is not None:
        path = out / "scaling.png"
        sc.savefig(path, dpi=100)
        plt.close(sc)
        paths["scaling"] = str(path)
    return paths


def scaling_figure(rows: list[dict[str, Any]]) -> Any:
    """``sparse_mm`` (CSR, p = 32) time and peak memory against nnz, tsgu beside PyTorch: the
    scaling cases plus ``sparse_mm_csr`` (another size of the same problem)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts: dict[str, dict[int, tuple[float, int]]] = defaultdict(dict)
    libs: dict[str, str] = {}
    for r in rows:
        scaling = (r.get("op") or "") == "sparse_mm scaling" or (
            r["case"] == "sparse_mm_csr" and str(r.get("size", "")).endswith("p=32")
        )
        if not scaling or r.get("status") != "ok" or not r.get("nnz"):
            continue
        pts[r["variant"]].setdefault(int(r["nnz"]), (float(r["total_s"] or _total(r) or 0), _peak(r) or 0))
        libs[r["variant"]] = r.get("library") or "other"
    if not pts:
        return None
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for variant, by_nnz in pts.items():
        xs = sorted(by_nnz)
        c = COLOURS.get(libs[variant], COLOURS["other"])
        ax[0].loglog(xs, [by_nnz[x][0] for x in xs], "o-", color=c, label=variant)
        ax[1].loglog(xs, [by_nnz[x][1] / 2**20 for x in xs], "o-", color=c, label=variant)
    ax[0].set_xlabel("nnz")
    ax[0].set_ylabel("forward + backward time (s)")
    ax[1].set_xlabel("nnz")
    ax[1].set_ylabel("peak memory (MiB)")
    for a in ax:
        a.grid(which="major", color="#dddddd", lw=0.6)
    ax[0].legend(fontsize=9)
    fig.suptitle("sparse_mm (CSR, p=32) on 3-D Laplacians: scaling with size", fontsize=11)
    fig.tight_layout()
    return fig
