"""CSV, markdown summary and PNG plots of a benchmark run."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

COLUMNS = [
    "case",
    "op",
    "variant",
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
]


def _total(r: dict[str, Any]) -> float | None:
    if r.get("status") != "ok":
        return None
    return r["fwd_s"] + (r.get("bwd_s") or 0.0)


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


def write_reports(rows: list[dict[str, Any]], env: dict[str, Any], out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    by_case: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        r["total_s"] = _total(r)
        r["peak_bytes"] = _peak(r)
        by_case[r["case"]].append(r)
    for case_rows in by_case.values():
        base = next((r for r in case_rows if r.get("baseline")), None)
        for r in case_rows:
            if base and r["total_s"] and base["total_s"]:
                r["time_ratio_vs_alternative"] = round(r["total_s"] / base["total_s"], 3)
            if base and r["peak_bytes"] and base["peak_bytes"]:
                r["memory_ratio_vs_alternative"] = round(r["peak_bytes"] / base["peak_bytes"], 3)
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    lines = [
        f"Run on {env['date']}: torch {env['torch']}, Python {env['python']}, {env['cores']} cores, "
        f"device {env['device']} ({env['threads']} threads). Times are medians after a warm-up (solver-peer "
        "cases: over three rounds, the libraries sharing a process and timed in turns); memory "
        "is the peak above the level before each phase (forward, then backward) in a fresh process. "
        "Ratios compare with the alternative marked *.",
        "",
        "| case | size | variant | forward | backward | fwd+bwd | peak fwd | peak bwd | time ratio | memory ratio | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = r["variant"] + (" *" if r.get("baseline") else "")
        status = r.get("status", "")
        if r.get("note"):
            status += f" ({r['note']})"
        if (r.get("rounds") or 1) > 1 or r.get("in_turns"):
            turns = ", in turns with the others" if r.get("in_turns") else ""
            status += f" [{r.get('runs')} calls in {r.get('rounds') or 1} rounds{turns}]"
        if r.get("error"):
            status += f": {r['error']}"
        lines.append(
            f"| {r['case']} | {r['size']} | {name} | {_fmt_t(r.get('fwd_s'))} | {_fmt_t(r.get('bwd_s'))} | "
            f"{_fmt_t(r['total_s'])} | {_fmt_b(r.get('fwd_peak_bytes'))} | {_fmt_b(r.get('bwd_peak_bytes'))} | "
            f"{r.get('time_ratio_vs_alternative', '–')} | {r.get('memory_ratio_vs_alternative', '–')} | {status} |"
        )
    md_path = out / "summary.md"
    md_path.write_text("\n".join(lines) + "\n")
    paths = {"csv": str(csv_path), "summary": str(md_path)}
    try:
        paths.update(_plots(by_case, out))
    except ImportError:  # pragma: no cover - matplotlib is a dev dependency
        pass
    return paths


README_START = "<!-- benchmark-summary:start (written by python -m benchmarks) -->"
README_END = "<!-- benchmark-summary:end -->"


def update_readme(readme: Path, summary_md: Path) -> bool:
    """Put the summary table of a run between the README's markers; False if they are missing."""
    if not readme.exists():
        return False
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{summary_md.read_text().strip()}\n{README_END}{tail}")
    return True


def _plots(by_case: dict[str, list[dict[str, Any]]], out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in by_case if not c.startswith("sparse_mm_scaling")]
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.55 * sum(len(by_case[c]) for c in cases) + 1.5))
    labels, times, mems, colors = [], [], [], []
    for c in cases:
        for r in by_case[c]:
            labels.append(f"{c}: {r['variant']}")
            times.append(r["total_s"] or 0.0)
            mems.append((r["peak_bytes"] or 0) / 2**20)
            colors.append("tab:blue" if r["variant"] == "tsgu" else "tab:gray")
    y = range(len(labels))
    axes[0].barh(y, times, color=colors)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("forward + backward time (s, log)")
    axes[0].set_yticks(list(y), labels, fontsize=7)
    axes[0].invert_yaxis()
    axes[1].barh(y, [max(m, 1e-3) for m in mems], color=colors)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("peak memory (MiB, log)")
    axes[1].set_yticks(list(y), [""] * len(labels))
    axes[1].invert_yaxis()
    fig.suptitle("tsgu (blue) vs alternatives (grey); missing bars: skipped, unsupported or out of memory")
    fig.tight_layout()
    ops_path = out / "ops.png"
    fig.savefig(ops_path, dpi=110)
    plt.close(fig)
    paths = {"ops_plot": str(ops_path)}
    scaling = sorted(
        (c for c in by_case if c.startswith("sparse_mm_scaling")), key=lambda c: int(c.rsplit("_", 1)[1])
    )
    if scaling:
        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        for variant in sorted({r["variant"] for c in scaling for r in by_case[c]}):
            pts = [
                (r["nnz"], r["total_s"], r["peak_bytes"])
                for c in scaling
                for r in by_case[c]
                if r["variant"] == variant and r.get("status") == "ok"
            ]
            if pts:
                ax[0].loglog([p[0] for p in pts], [p[1] for p in pts], "o-", label=variant)
                ax[1].loglog([p[0] for p in pts], [p[2] / 2**20 for p in pts], "o-", label=variant)
        ax[0].set_xlabel("nnz")
        ax[0].set_ylabel("fwd + bwd time (s)")
        ax[1].set_xlabel("nnz")
        ax[1].set_ylabel("peak memory (MiB)")
        ax[0].legend()
        fig.suptitle("sparse_mm (CSR, p=32) on 3-D Laplacians: scaling with size")
        fig.tight_layout()
        sc_path = out / "scaling.png"
        fig.savefig(sc_path, dpi=110)
        plt.close(fig)
        paths["scaling_plot"] = str(sc_path)
    return paths
