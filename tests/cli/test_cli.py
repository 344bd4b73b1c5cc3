import json
import subprocess
import sys

import pytest

from mobilenet_v1.cli import main


def test_cost_json(capsys):
    assert main(["cost", "--alpha", "0.5", "--resolution", "160", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mult_adds"] == 76_524_800 and out["params"] == 1_319_648
    assert isinstance(out["mult_adds"], int)


def test_cost_per_layer_table(capsys):
    assert main(["cost", "--per-layer", "--classes", "1001"]) == 0
    out = capsys.readouterr().out
    assert "568,741,376" in out  # 568,740,352 + 1024 for the background class
    assert len([line for line in out.splitlines() if line.startswith("block")]) == 26
    assert main(["cost"]) == 0
    assert "94.86%" in capsys.readouterr().out


def test_cost_variants_and_convention(capsys):
    assert main(["cost", "--variant", "shallow", "--json"]) == 0
    assert round(json.loads(capsys.readouterr().out)["mult_adds"] / 1e6) == 307
    assert main(["cost", "--resolution", "160", "--convention", "paper", "--json"]) == 0
    assert round(json.loads(capsys.readouterr().out)["mult_adds"] / 1e6) == 290


def test_cost_paper_tables(capsys):
    assert main(["cost", "--paper"]) == 0
    out = capsys.readouterr().out
    assert "Shallow MobileNet" in out and "4866" in out and "4867.29" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["cost", "--alpha", "0"], "alpha"),
        (["cost", "--alpha", "nan"], "alpha"),
        (["cost", "--alpha", "abc"], "alpha"),
        (["cost", "--resolution", "31"], "resolution"),
        (["cost", "--resolution", "224.5"], "resolution"),
        (["cost", "--classes", "0"], "classes"),
        (["cost", "--variant", "deep"], "variant"),
        (["cost", "--convention", "approx"], "convention"),
    ],
)
def test_bad_input_one_line_exit_2(argv, needle):
    proc = subprocess.run([sys.executable, "-m", "mobilenet_v1", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_missing_optional_package_is_a_one_line_error(capsys, monkeypatch):
    from mobilenet_v1.cli import cost as cost_cmd

    def missing(args):
        raise ImportError("onnx is needed for export: pip install 'mobilenet-v1[export]'")

    monkeypatch.setattr(cost_cmd, "run", missing)
    assert main(["cost"]) == 2
    assert capsys.readouterr().err.strip() == (
        "mobilenet-v1: error: onnx is needed for export: pip install 'mobilenet-v1[export]'"
    )


def test_other_import_error_is_unexpected(capsys, monkeypatch):
    from mobilenet_v1.cli import cost as cost_cmd

    def broken(args):
        raise ImportError("cannot import name 'x'")

    monkeypatch.setattr(cost_cmd, "run", broken)
    assert main(["cost"]) == 1
    err = capsys.readouterr().err
    assert "unexpected error" in err and "traceback in" in err
