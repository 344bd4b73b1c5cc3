"""benchmarks/model/paper_tables.py in its smoke mode: every model of the cpu plan trained one step
on 1 image per class, the JSON's fields, skipping runs already recorded, and the report
(tables beside the paper's, verdicts from the numbers, Figures 4 and 5)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks" / "model"
FIELDS = {"table", "variant", "alpha", "resolution", "mult_adds", "params", "seed", "epochs", "top1"}
FIELDS |= {"wall_seconds", "machine", "command"}


@pytest.fixture(scope="module")
def paper_tables(shared_data: Path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import paper_tables

        yield paper_tables
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def smoke_results(paper_tables, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Table 4 with two seeds, then every table with seed 0 (Table 4's seed 0 is skipped)."""
    results = tmp_path_factory.mktemp("paper") / "smoke.json"
    common = ["--smoke", "--results", str(results), "--workers", "0", "--device", "cpu"]
    paper_tables.main(["--table", "4", "--seeds", "0", "1", *common])
    paper_tables.main(["--table", "all", "--seeds", "0", *common])
    return results


def test_smoke_runs_every_model_of_the_plan_once(paper_tables, smoke_results: Path) -> None:
    runs = json.loads(smoke_results.read_text())["runs"]
    planned = paper_tables.planned_runs("cpu", ["5", "6", "7"], [0], 1) + paper_tables.planned_runs(
        "cpu", ["4"], [0, 1], 1
    )
    assert sorted(map(paper_tables.run_key, runs)) == sorted(map(paper_tables.run_key, planned))  # each once
    for run in runs:
        assert FIELDS <= run.keys()
        assert run["epochs"] == 1 and run["steps"] == 1  # 10 images, batch 10
        assert 0.0 <= run["top1"] <= 100.0
        assert run["wall_seconds"] > 0 and run["command"].startswith("mobilenet-v1 train --data ")
        assert f"--variant {run['variant']}" in run["command"] and f"--seed {run['seed']}" in run["command"]
    full, separable = (
        next(r for r in runs if r["table"] == "4" and r["variant"] == v) for v in ("full-conv", "standard")
    )
    assert full["mult_adds"] > 5 * separable["mult_adds"] and full["params"] > 5 * separable["params"]
    shallow = next(r for r in runs if r["variant"] == "shallow")
    assert shallow["alpha"] == 0.5 and shallow["resolution"] == 128
    # Tables 6 and 7 take Table 4's 0.25/128 seed 0 (same settings, same weights) instead of training it again.
    reused = [r for r in runs if (r["variant"], r["alpha"], r["resolution"], r["seed"]) == ("standard", 0.25, 128, 0)]
    assert sorted((r["table"], r["trained_for_table"]) for r in reused) == [("4", "4"), ("6", "4"), ("7", "4")]
    assert len({r["command"] for r in reused}) == 1


def test_report_tables_verdicts_and_figures(paper_tables, smoke_results: Path, tmp_path: Path) -> None:
    doc = tmp_path / "paper.md"
    from paper_report import BEGIN, END

    doc.write_text(f"# hand-written\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    paper_tables.main(["--report", "--results", str(smoke_results), "--doc", str(doc)])
    text = doc.read_text()
    assert text.startswith("# hand-written") and text.endswith("after\n") and "\nold\n" not in text
    for table in "4567":
        assert f"#### Table {table}" in text and f"**Table {table}**" in text
    assert "| Conv MobileNet | 71.7 | 4866 | 29.3 | 0.25/128 full conv |" in text
    assert "| Shallow MobileNet | 65.3 | 307 | 2.9 | 0.5/128 shallow |" in text
    assert "reproduced" in text and "**Figure 4**" in text
    for png in ("figure4_cpu.png", "figure5_cpu.png"):
        assert (tmp_path / "paper" / png).read_bytes().startswith(b"\x89PNG")


def test_smoke_refuses_to_overwrite_the_real_results(paper_tables, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        paper_tables.main(["--table", "4", "--smoke"])
    assert exc.value.code == 2
    assert "--smoke would overwrite" in capsys.readouterr().err
