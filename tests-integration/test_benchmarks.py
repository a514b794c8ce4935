"""The benchmark suite's report and runner, on synthetic results (no benchmark is timed here).

The figures: one per family, tsgu's bars in a colour no alternative has, every bar labelled with its
ratio, and the ratio drawn equal to the one computed from the rows by hand; the runner: ``--list``
prints every case with an expected time, a default run writes its own folder and leaves the run of
record and the README alone (``--record`` writes both), Ctrl-C keeps the finished cases.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "benchmarks").is_dir(), reason="needs the source tree")
pytest.importorskip("matplotlib", reason="the figures need matplotlib (requirements-dev.txt)")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import __main__ as runner  # noqa: E402
from benchmarks import report  # noqa: E402
from benchmarks._core import FAMILIES  # noqa: E402

MiB = 2**20


def _row(
    case: str,
    family: str,
    variant: str,
    library: str,
    fwd: float,
    bwd: float | None,
    peak: int,
    baseline: bool = False,
    status: str = "ok",
) -> dict:
    return {
        "case": case,
        "op": case,
        "family": family,
        "variant": variant,
        "library": library,
        "baseline": baseline,
        "size": f"size of {case}",
        "status": status,
        "fwd_s": fwd if status == "ok" else None,
        "bwd_s": bwd if status == "ok" else None,
        "fwd_peak_bytes": peak if status == "ok" else None,
        "bwd_peak_bytes": peak if status == "ok" and bwd is not None else None,
        "nnz": 1000,
    }


def synthetic_rows() -> list[dict]:
    """Two cases per built-in family (and one of a new family, as a new case module declares it),
    with every library and a skipped dense row."""
    rows = []
    alts = [
        ("torch.sparse.mm", "PyTorch"),
        ("scipy thing", "SciPy"),
        ("torch-sla thing", "torch-sla"),
        ("torch dense", "PyTorch dense"),
    ]
    for i, family in enumerate([*FAMILIES, "cholesky"]):
        for j in range(2):
            case = f"{family.replace(' ', '_')}_{j}"
            name, lib = alts[(i + j) % len(alts)]
            other, other_lib = alts[(i + j + 1) % len(alts)]
            rows.append(_row(case, family, "tsgu", "tsgu", 0.01 * (i + 1), 0.02, (10 + i) * MiB))
            rows.append(_row(case, family, "tsgu other", "tsgu", 0.05, None, 30 * MiB))
            rows.append(_row(case, family, name, lib, 0.04 * (j + 1), 0.08, 40 * MiB, baseline=True))
            rows.append(_row(case, family, other, other_lib, 0.5, 0.5, 3 * MiB))
            rows.append(
                _row(
                    case,
                    family,
                    "torch.bmm (dense)",
                    "PyTorch dense",
                    0,
                    0,
                    0,
                    status="skipped: out of memory budget",
                )
            )
    rows.append(
        _row("scaling_a", "products", "tsgu", "tsgu", 0.1, 0.1, 5 * MiB) | {"op": "sparse_mm scaling"}
    )
    return rows


def _rgb(colour: str) -> tuple:
    from matplotlib.colors import to_rgb

    return tuple(round(c, 3) for c in to_rgb(colour))


def test_one_figure_per_family_and_the_scaling_plot(tmp_path: Path) -> None:
    rows = synthetic_rows()
    paths = report.write_reports(rows, {"run": "test", "date": "today"}, tmp_path)
    figures = sorted(p.name for p in tmp_path.glob("family_*.png"))
    expected = sorted(f"family_{report.family_slug(f)}.png" for f in [*FAMILIES, "cholesky"])
    assert figures == expected
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert {"csv", "summary"} <= set(paths)
    with (tmp_path / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert "tsgu other" in (tmp_path / "summary.md").read_text()


def test_tsgu_coloured_apart_and_every_bar_labelled_with_its_ratio() -> None:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = synthetic_rows()
    tsgu = _rgb(report.COLOURS["tsgu"])
    assert all(_rgb(c) != tsgu for lib, c in report.COLOURS.items() if lib != "tsgu")
    by_case = {}
    for r in rows:
        by_case.setdefault(r["case"], []).append(r)
    for family, cases in report.families(rows).items():
        fig = report.family_figure(family, rows, cases)
        axes = fig.axes
        seen_alternative = False
        for i, case in enumerate(cases):
            ref = next(r for r in by_case[case] if r["baseline"])
            others = [r for r in by_case[case] if r is not ref]
            ax_t, ax_m = axes[2 * i], axes[2 * i + 1]
            labels = [t.get_text() for t in ax_t.get_yticklabels()]
            assert labels == [r["variant"] for r in others]
            for ax, kind in ((ax_t, "time"), (ax_m, "memory")):
                bars = [p for p in ax.patches if isinstance(p, Rectangle)]
                for bar in bars:
                    y = round(bar.get_y() + bar.get_height() / 2)
                    r = others[y]
                    colour = _rgb(bar.get_facecolor()[:3])
                    assert colour == _rgb(report.COLOURS[r["library"]])
                    assert (colour == tsgu) == (r["library"] == "tsgu")
                    seen_alternative |= r["library"] != "tsgu"
                    texts = [t.get_text().strip() for t in ax.texts if round(t.get_position()[1]) == y]
                    assert len(texts) == 1
                    # the ratio written on the bar, by hand from the rows
                    if kind == "time":
                        both = r["bwd_s"] is not None and ref["bwd_s"] is not None
                        t_r = r["fwd_s"] + (r["bwd_s"] or 0) if both else r["fwd_s"]
                        t_ref = ref["fwd_s"] + (ref["bwd_s"] or 0) if both else ref["fwd_s"]
                        want = t_ref / t_r
                    else:
                        peak = max(r["fwd_peak_bytes"], r["bwd_peak_bytes"] or 0)
                        want = max(ref["fwd_peak_bytes"], ref["bwd_peak_bytes"] or 0) / peak
                    assert texts[0].startswith(report.fmt_ratio(want))
                    # from the 1x line to the ratio
                    assert bar.get_x() == 1
                    assert math.isclose(bar.get_x() + bar.get_width(), want, rel_tol=1e-9)
                # the skipped row has no bar but its status written at 1x
                skipped = others.index(next(r for r in others if r["status"] != "ok"))
                assert not any(round(b.get_y() + b.get_height() / 2) == skipped for b in bars)
                marks = [t.get_text().strip() for t in ax.texts if round(t.get_position()[1]) == skipped]
                assert marks == (["skipped: out of memory budget"] if kind == "time" else ["–"])
            assert ref["variant"] in ax_t.get_title(loc="left")
            assert f"size of {case}" in ax_t.get_title(loc="left")
        assert seen_alternative
        plt.close(fig)


def test_list_shows_every_case_with_an_expected_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main(["--list"]) == 0
    out = capsys.readouterr().out
    from benchmarks.suite import all_cases

    names = [c.name for c in all_cases(False)]
    lines = out.splitlines()
    for name in names:
        line = next(ln for ln in lines if ln.startswith(name + " "))
        assert " s " in line + " " or " min " in line
    assert "quick" in lines[-1]


def _fake_job(case, names, worker_args, tick=None):  # the result a worker prints, without running anything
    return {
        n: {
            "status": "ok",
            "fwd_s": 0.01,
            "bwd_s": 0.02,
            "fwd_times_s": [0.01],
            "bwd_times_s": [0.02],
            "fwd_peak_bytes": 4 * MiB,
            "bwd_peak_bytes": 8 * MiB,
            "nnz": 100,
        }
        for n in names
    }


README_TEXT = (
    "intro\n<!-- benchmark-summary:start (written by python -m benchmarks) -->\nold\n"
    "<!-- benchmark-summary:end -->\nrest\n"
)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    (results / "results.csv").write_text("the run of record\n")
    (results / "summary.md").write_text("the record's table\n")
    (tmp_path / "README.md").write_text(README_TEXT)
    monkeypatch.setattr(runner, "RESULTS", results)
    monkeypatch.setattr(runner, "README", tmp_path / "README.md")
    monkeypatch.setattr(runner, "_run_job", _fake_job)
    return tmp_path


def test_default_run_leaves_the_record_and_the_readme_alone(sandbox: Path) -> None:
    assert runner.main(["--only", "sparse_mm_c"]) == 0
    assert runner.main([]) == 0
    results = sandbox / "results"
    assert (results / "results.csv").read_text() == "the run of record\n"
    assert (results / "summary.md").read_text() == "the record's table\n"
    assert (sandbox / "README.md").read_text() == README_TEXT
    quick = (results / "quick" / "summary.md").read_text()
    assert "quick run" in quick and "sparse_parameter_step" in quick
    assert (results / "quick" / "family_products.png").exists()
    assert "sparse_mm_csr" in (results / "custom" / "summary.md").read_text()
    # asked for: the quick run becomes the record, README table and all
    assert runner.main(["--record"]) == 0
    assert (results / "results.csv").read_text() != "the run of record\n"
    readme = (sandbox / "README.md").read_text()
    assert readme.startswith("intro\n") and readme.endswith("<!-- benchmark-summary:end -->\nrest\n")
    assert "run of record" in readme and "| sparse_mm_csr |" in readme and "old" not in readme


def test_ctrl_c_keeps_the_finished_cases(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def stop_on_fifth(case, names, worker_args, tick=None):
        calls.append(case.name)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return _fake_job(case, names, worker_args)

    monkeypatch.setattr(runner, "_run_job", stop_on_fifth)
    assert runner.main(["--only", "sparse_mm"]) == 130
    finished = {c for c in calls[:4] if calls[:4].count(c) == 2}  # both variants ran
    with (sandbox / "results" / "custom" / "results.csv").open() as f:
        written = {r["case"] for r in csv.DictReader(f)}
    assert written == finished and finished
    assert "interrupted" in (sandbox / "results" / "custom" / "summary.md").read_text()


def test_another_device_writes_its_own_folder() -> None:
    assert runner.out_dir(True, "cuda", False, False) == runner.RESULTS / "cuda"
    assert runner.out_dir(False, "cuda:0", False, False) == runner.RESULTS / "cuda" / "quick"
    assert runner.out_dir(True, "cpu", False, False) == runner.RESULTS
    assert runner.out_dir(False, "cpu", False, False) == runner.RESULTS / "quick"


def test_a_gpu_run_writes_its_own_table_never_the_readme(
    sandbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner.torch.cuda, "is_available", lambda: True)
    assert runner.main(["--device", "cuda", "--record", "--only", "sparse_mm_csr"]) == 0
    cuda = sandbox / "results" / "cuda"
    with (cuda / "results.csv").open() as f:
        assert {r["device"] for r in csv.DictReader(f)} == {"cuda"}
    assert "run of record on cuda" in (cuda / "summary.md").read_text()
    assert (sandbox / "README.md").read_text() == README_TEXT
    assert (sandbox / "results" / "results.csv").read_text() == "the run of record\n"


def test_a_case_module_registers_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from benchmarks import suite
    from benchmarks.cases import Case, Run, Variant, _backward_sum  # the API the case modules use

    def setup(ctx: dict) -> Run:
        return Run(lambda: None, None)

    module = types.ModuleType("benchmarks.cases_fake")
    module.fake_cases = lambda full: [  # type: ignore[attr-defined]
        Case(
            "fake_logdet",
            "logdet",
            "n=4",
            [Variant("tsgu logdet", setup), Variant("cholmod", setup)],
            family="cholesky",
        )
    ]
    monkeypatch.setitem(sys.modules, "benchmarks.cases_fake", module)
    monkeypatch.setattr(suite, "CASE_MODULES", [*suite.CASE_MODULES, ("benchmarks.cases_fake", "fake_cases")])
    cases = suite.all_cases(False)
    fake = next(c for c in cases if c.name == "fake_logdet")
    assert fake.family == "cholesky"
    assert [v.library for v in fake.variants] == ["tsgu", "other"]
    assert callable(_backward_sum)
    monkeypatch.setattr(suite, "CASE_MODULES", [*suite.CASE_MODULES, ("benchmarks.cases_fake", "fake_cases")])
    with pytest.raises(ValueError, match="fake_logdet"):  # registered twice: two cases of one name
        suite.all_cases(False)
