"""``export --val``: the export's cost in top-1 on a folder, next to what ``eval`` says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CLASSES, run_main
from PIL import Image

import mobilenet_v1.cli.export as export_cli
from mobilenet_v1.cli import main
from mobilenet_v1.measure.evaluate import EvalResult, ExportDrop


@pytest.fixture(scope="module")
def val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three photos per class of the tiny checkpoint, each a different noise pattern."""
    root = tmp_path_factory.mktemp("val")
    rng = np.random.default_rng(0)
    for name in TINY_CLASSES:
        (root / name).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _eval_top1(capsys: pytest.CaptureFixture[str], *argv: str) -> float:
    assert main(["eval", *argv, "--json", "--workers", "0"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top1_ties_split"]


def test_int8_export_reports_both_top1s_as_eval_measures_them(tiny, val, tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    argv = ["export", "--weights", str(tiny[0]), "--format", "onnx-int8", "--calibration", str(val)]
    assert main([*argv, "--val", str(val), "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["val"]
    assert report["count"] == 9 and report["dir"] == str(val)
    assert report["reference_top1"] == pytest.approx(_eval_top1(capsys, str(val), "--weights", str(tiny[0])))
    assert report["top1"] == pytest.approx(_eval_top1(capsys, str(val), "--model", str(out)))
    assert report["drop"] == pytest.approx(report["reference_top1"] - report["top1"])
    assert 0 <= report["top1_agreement"] <= 1


def test_float_export_costs_nothing_and_says_so(tiny, val, tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(tiny[0]), "--val", str(val), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    line = captured.out.splitlines()[-1]
    assert line.startswith(f"{val}: top-1 ") and "drop +0.00 pt" in line and "agreement 100.00% on 9 images" in line
    assert "warning" not in captured.err


def _result(top1: float, predictions: list[int]) -> EvalResult:
    n = len(predictions)
    return EvalResult(
        top1=top1,
        top5=100.0,
        count=n,
        per_class={},
        confusion=np.zeros((1, 2)),
        classes=["a"],
        predictions=np.array([[p] * 5 for p in predictions]),
        targets=np.zeros(n, dtype=int),
        top1_ties_split=top1,
    )


def test_a_drop_over_max_drop_is_a_warning_with_what_to_try(tiny, val, tmp_path, capsys, monkeypatch) -> None:
    cost = ExportDrop(_result(90.0, [0, 1, 2, 0]), _result(87.5, [0, 1, 0, 0]))
    monkeypatch.setattr(export_cli, "compare_folder", lambda *args, **kwargs: cost)
    out = tmp_path / "m.onnx"
    argv = ["export", "--weights", str(tiny[0]), "--format", "onnx-int8", "--calibration", str(val)]
    assert main([*argv, "--val", str(val), "--max-drop", "2", "-o", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)["val"]
    assert report["drop"] == pytest.approx(2.5) and report["top1_agreement"] == pytest.approx(0.75)
    warning = captured.err.strip().splitlines()[-1]
    assert warning.startswith("warning: the onnx-int8 export loses 2.50 top-1 points against the weights, more than")
    assert "--qat-steps" in warning and "--float-layers" in warning
    assert main([*argv, "--val", str(val), "--max-drop", "3", "-o", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    gain = ExportDrop(_result(87.5, [0, 1, 0, 0]), _result(90.0, [0, 1, 2, 0]))
    monkeypatch.setattr(export_cli, "compare_folder", lambda *args, **kwargs: gain)
    assert main([*argv, "--val", str(val), "--max-drop", "2", "-o", str(out)]) == 0
    assert "export gains 2.50 top-1 points against the weights" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--max-drop", "-1"], "--max-drop must be >= 0"),
        (["--max-drop", "nan"], "--max-drop must be >= 0"),
        (["--wnids", "w.txt"], "--wnids only applies with --val"),
        (["--format", "triton", "--val", "{val}"], "--val applies to the file formats"),
        (["--val", "{val}/a"], "one sub-folder of images per class"),
        (["--val", "{val}/missing"], "missing"),
    ],
)
def test_val_options_out_of_place_are_one_line(tiny, val, tmp_path, capsys, extra, needle) -> None:
    out = tmp_path / ("repo" if "triton" in extra else "m.onnx")
    argv = ["export", "--weights", str(tiny[0]), *(a.format(val=val) for a in extra), "-o", str(out)]
    code, err = run_main(argv, capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
