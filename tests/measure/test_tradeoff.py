import json

import pytest

from mobilenet_v1.cli import main
from mobilenet_v1.measure import tradeoff
from mobilenet_v1.measure.report import latency_fit, markdown_table, write_report
from mobilenet_v1.measure.tradeoff import GRID, Point, best_under_budget, measure_grid, pareto_front


def _points() -> list[Point]:
    # Synthetic points: latency proportional to mult-adds, plus one slow outlier.
    pts = []
    for i, (alpha, res) in enumerate(GRID):
        ma = int(1e6 * (alpha * 100 + res))
        pts.append(
            Point(
                alpha,
                res,
                ma,
                int(alpha * 4e6),
                ma / 1e7 + (5.0 if i == 3 else 0.0),
                ma / 9e6,
                50 + alpha * 20 + res / 20,
                48 + alpha * 20 + res / 20,
            )
        )
    return pts


def test_pareto_front_is_monotone_and_undominated():
    pts = _points()
    acc = lambda p: p.google_top1_float  # noqa: E731
    front = pareto_front(pts, acc)
    assert [p.latency_ms for p in front] == sorted(p.latency_ms for p in front)
    assert [acc(p) for p in front] == sorted(acc(p) for p in front)
    for p in pts:
        dominated = any(q.latency_ms <= p.latency_ms and acc(q) > acc(p) for q in pts)
        assert (p in front) != dominated
    assert pts[3] not in front  # the slow outlier


def test_best_under_budget():
    pts = _points()
    acc = lambda p: p.google_top1_quant  # noqa: E731
    budget = sorted(p.latency_ms for p in pts)[5]
    best = best_under_budget(pts, acc, budget_ms=budget)
    assert best.latency_ms <= budget
    assert all(acc(p) <= acc(best) for p in pts if p.latency_ms <= budget)
    by_ma = best_under_budget(pts, acc, budget_mult_adds=200e6)
    assert by_ma.mult_adds <= 200e6
    with pytest.raises(ValueError, match="no configuration fits"):
        best_under_budget(pts, acc, budget_ms=0.001)


def test_report_files(tmp_path):
    pts = _points()
    paths = write_report(pts, "onnx", 2, tmp_path)
    assert {p.name for p in paths} >= {"accuracy_vs_mult_adds.png", "accuracy_vs_latency.png", "tradeoff.json"}
    for p in paths:
        assert p.stat().st_size > 0
    data = json.loads((tmp_path / "tradeoff.json").read_text())
    assert len(data["points"]) == 16 and sum(r["pareto"] for r in data["points"]) >= 1
    assert 0.5 < data["latency_fit"]["r2"] <= 1.0
    assert markdown_table(pts, "onnx").count("\n") == 17


def test_latency_fit_exact_line():
    pts = [Point(1.0, 224, m * 1_000_000, 1, 0.5 * m + 2, 1, 1, 1) for m in (10, 20, 40)]
    fit = latency_fit(pts)
    assert fit["ms_per_million_mult_adds"] == pytest.approx(0.5) and fit["r2"] == pytest.approx(1.0)


def test_measure_and_cache(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    cache = tmp_path / "cache.json"
    grid = ((0.25, 128),)
    first = measure_grid(runtime="onnx", threads=1, runs=5, cache_file=cache, progress=False, grid=grid)
    (p,) = first
    assert p.mult_adds == 13_570_048 + 256 and p.latency_ms > 0  # 1001 outputs, as Google's models
    assert (p.google_top1_float, p.google_top1_quant) == (41.5, 39.5)  # paper.md's release table
    monkeypatch.setattr(tradeoff, "_measure_one", lambda *a, **k: pytest.fail("cache not used"))
    assert measure_grid(runtime="onnx", threads=1, runs=5, cache_file=cache, progress=False, grid=grid) == first


def test_cli_bad_input(capsys, tmp_path):
    assert main(["tradeoff", "--data", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    assert "--data folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["tradeoff", "--runtime", "tensorrt"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["tradeoff", "--threads", "0"])
