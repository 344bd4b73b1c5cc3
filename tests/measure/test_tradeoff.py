import json

import pytest

from mobilenet_v1.cli import main
from mobilenet_v1.cost import model_cost
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
    best, left_out = best_under_budget(pts, acc, budget_ms=budget)
    assert best.latency_ms <= budget and left_out == []
    assert all(acc(p) <= acc(best) for p in pts if p.latency_ms <= budget)
    by_ma, _ = best_under_budget(pts, acc, budget_mult_adds=200e6)
    assert by_ma.mult_adds <= 200e6
    with pytest.raises(ValueError, match="no configuration fits"):
        best_under_budget(pts, acc, budget_ms=0.001)


def test_the_budget_pick_leaves_out_noisy_rows_and_says_so():
    """A row measured under noise (p90/median over 1.5, or a load above the cores) is not
    chosen from; when only noisy rows fit, the pick is refused."""
    from dataclasses import replace

    pts = _points()
    acc = lambda p: p.google_top1_quant  # noqa: E731
    budget = sorted(p.latency_ms for p in pts)[5]
    honest, _ = best_under_budget(pts, acc, budget_ms=budget)
    noisy = [replace(p, flags=("p90/median 9.0",)) if p == honest else p for p in pts]
    best, left_out = best_under_budget(noisy, acc, budget_ms=budget)
    assert best != honest and best.latency_ms <= budget and honest.label in {p.label for p in left_out}
    all_noisy = [replace(p, flags=("load 5.5 > 2 cores",)) for p in pts]
    with pytest.raises(ValueError, match="every configuration within the budget was measured under noise"):
        best_under_budget(all_noisy, acc, budget_ms=budget)


def test_a_timing_under_load_or_with_a_long_tail_is_flagged(monkeypatch):
    from mobilenet_v1.measure import bench

    slow = iter([0.001] * 20 + [0.001] * 8 + [0.01] * 2)  # warm-up, then a 10x tail in 2 of 10 runs
    clock = iter(range(10_000))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock) * next(slow, 0.001))
    monkeypatch.setattr(bench, "load_average", lambda: 0.2)
    quiet = bench.measure({"x": lambda: None}, runs=10, warmup=0, rounds=1)["x"]
    assert quiet.load_before == 0.2
    monkeypatch.setattr(bench, "load_average", lambda: 64.0)
    busy = bench.measure({"x": lambda: None}, runs=10, warmup=0, rounds=1)["x"]
    assert any(f.startswith("load 64.0 >") for f in busy.flags)


def test_noise_reasons():
    from mobilenet_v1.measure.conditions import noise

    assert noise(1.0, 1.4, 0.5, cores=2) == []
    assert noise(1.0, 9.25, 0.5, cores=2) == ["p90/median 9.2"]
    assert noise(1.0, 1.0, 5.5, cores=2) == ["load 5.5 > 2 cores"]


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
    # force, or another machine (the cache is keyed by it), measures again
    measured = []
    monkeypatch.setattr(tradeoff, "_measure_one", lambda a, r, *_: measured.append((a, r)) or p)
    measure_grid(runtime="onnx", threads=1, runs=5, cache_file=cache, progress=False, grid=grid, force=True)
    real = tradeoff.machine
    monkeypatch.setattr(tradeoff, "machine", lambda threads: {**real(threads), "cpu": "another CPU"})
    measure_grid(runtime="onnx", threads=1, runs=5, cache_file=cache, progress=False, grid=grid)
    assert measured == [(0.25, 128), (0.25, 128)]


def test_cli_bad_input(capsys, tmp_path):
    assert main(["tradeoff", "--data", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    assert "--data folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["tradeoff", "--runtime", "tensorrt"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["tradeoff", "--threads", "0"])


def test_cli_budget_pick_never_silently_picks_a_noisy_row(tmp_path, monkeypatch, capsys):
    """End to end on a fake timer: latency proportional to mult-adds, a 10x tail in 3 of
    10 runs of 0.75/128 (the best model within 0.6 ms). The table flags it, the pick goes
    to the best quiet row and names the one left out; with every row under a load above
    the cores, the pick is refused (exit code 2) with a pointer to --force."""
    from mobilenet_v1.measure import bench

    now = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(bench, "load_average", lambda: 0.1)

    def predictor(model, preset, *_):
        key, base, calls = (model.config.alpha, preset.resolution), model_cost(model.config, preset.resolution), [0]

        def run(x):
            calls[0] += 1
            tail = key == (0.75, 128) and calls[0] % 10 < 3
            now[0] += base.mult_adds / 2e11 * (10 if tail else 1)  # seconds: 0.5 ms per 100 M mult-adds

        return run

    monkeypatch.setattr(tradeoff, "_predictor", predictor)
    args = ["tradeoff", "--runtime", "onnx", "--runs", "20", "--budget-ms", "0.6", "--output", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| 0.75 | 128 |"))
    assert "p90/median" in row
    assert "best within budget: alpha 0.5, resolution 192" in out  # 0.75/128 is better but noisy
    assert "not chosen from, their latency unreliable: 0.75/128 (p90/median" in out
    monkeypatch.setattr(bench, "load_average", lambda: 64.0)
    assert main([*args, "--force"]) == 2
    err = capsys.readouterr().err
    assert "every configuration within the budget was measured under noise" in err and "with --force" in err
