"""Round 3 of the catalogue (docs/robustness.md): runtimes' own log lines, model outputs
that are not scores, inputs small on disk but unbounded in cost, outputs that would
overwrite their inputs, surprises in training and resume, names that are not UTF-8, rare
image modes, arguments that do not fit, and a machine without a home or enough memory.
The ``.pt2`` cases (packages that run code, archives that climb out) are in
tests/deploy/test_pt2_package.py, the LiteRT wrapper from 8 threads in tests/deploy/test_litert.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_main
from PIL import Image

from mobilenet_v1 import Classifier, mobilenet_v1
from mobilenet_v1.data.folders import ImageFolder, find_classes, load_splits
from mobilenet_v1.data.images import MAX_JPEG_SCANS, load_image
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.deploy.formats import export_as, load_exported
from mobilenet_v1.files import atomic_write
from mobilenet_v1.train.config import TrainConfig
from mobilenet_v1.train.setup import check_memory

SMALL = "mobilenet_v1_0.25_128_quant"
CLASSES = ["a", "b", "c"]


def _cli(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``mobilenet-v1 ARGS`` in a fresh process (runtimes log once per process)."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "mobilenet_v1", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=full, cwd=cwd)


def _photo(path: Path, color=(200, 30, 30), size=(48, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny 3-class model as ONNX and LiteRT files."""
    folder = tmp_path_factory.mktemp("exports")
    torch.manual_seed(0)
    model = mobilenet_v1(alpha=0.25, num_classes=3, padding="same").eval()
    files = {"onnx": folder / "m.onnx", "tflite": folder / "m.tflite"}
    for fmt, path in files.items():
        export_as(fmt, model, path, Preprocessing(32), labels=CLASSES)
    return files


# --------------------------------------------------------------------------------------
# Runtimes' own log lines


def test_litert_says_nothing_on_success_and_one_line_on_failure(exports, tmp_path):
    image = _photo(tmp_path / "x.png")
    ok = _cli("predict", image, "--model", exports["tflite"], "--topk", "1")
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr  # no "INFO: Created TensorFlow Lite XNNPACK delegate"
    broken = tmp_path / "broken.tflite"
    data = bytearray(exports["tflite"].read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    broken.write_bytes(bytes(data))
    bad = _cli("predict", image, "--model", broken)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_onnx_runtime_error_is_one_plain_line(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07" + os.urandom(300))
    out = _cli("predict", _photo(tmp_path / "x.png"), "--model", broken)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "\x1b[" not in out.stderr  # no ANSI-coloured log line from ONNX Runtime


def test_plots_without_a_usable_home_say_nothing(shared_data, tmp_path):
    image = shared_data / "images" / "cat.bmp"
    env = {"HOME": str(tmp_path / "no-such-home"), "MPLCONFIGDIR": "", "XDG_CACHE_HOME": "", "XDG_CONFIG_HOME": ""}
    env["MOBILENET_V1_CACHE"] = str(tmp_path / "cache")
    out = _cli("predict", image, "--weights", SMALL, "--topk", "1", "--plot", tmp_path / "plot.png", env=env)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert (tmp_path / "plot.png").is_file()


# --------------------------------------------------------------------------------------
# Model outputs are checked before they are ranked


@pytest.mark.parametrize(
    ("output", "needle"),
    [
        (lambda x: torch.zeros(len(x), 1, 3), r"shape \(2, 1, 3\) for 2 image\(s\); expected \(2, 3\)"),
        (lambda x: torch.zeros(1, 3), r"shape \(1, 3\) for 2 image\(s\)"),  # an output fixed at batch 1
        (lambda x: torch.full((len(x), 3), float("nan")), "NaN or infinite scores for 2 of 2 image"),
        (lambda x: [0.1, 0.2, 0.7], "returned a list, not a tensor"),
    ],
)
def test_outputs_that_are_not_one_score_per_class_are_one_line(output, needle):
    classifier = Classifier(output, Preprocessing(32), CLASSES, source="m.onnx")
    images = [torch.zeros(3, 40, 40, dtype=torch.uint8)] * 2
    with pytest.raises(ValueError, match=needle):
        classifier.predict(images)


def test_litert_failing_to_run_is_one_line(exports):
    from mobilenet_v1.deploy.litert import LiteRTModel

    model = LiteRTModel(exports["tflite"])

    class Failing:
        def get_input_details(self):
            return [{"index": 0}]

        def set_tensor(self, index, value):
            raise RuntimeError("Input tensor 22 lacks data\nmore detail")

    model.stages = [Failing()]
    with pytest.raises(ValueError, match=r"m\.tflite: LiteRT cannot run this model: Input tensor 22 lacks data$"):
        model(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize(
    ("classes", "ignore", "needle"),
    [
        ([], (), "non-empty list"),
        (CLASSES, (3,), r"ignore must hold class indices in \[0, 3\), got 3"),
        (CLASSES, (-1,), "got -1"),
        (CLASSES, (0, 1, 2), "leaves no class"),
    ],
)
def test_class_lists_and_ignore_that_do_not_fit(classes, ignore, needle):
    with pytest.raises(ValueError, match=needle):
        Classifier(lambda x: x, Preprocessing(32), classes, ignore)


# --------------------------------------------------------------------------------------
# Small inputs, unbounded cost


def test_a_jpeg_of_a_thousand_scans_is_refused_before_decoding(tmp_path):
    path = tmp_path / "scans.jpg"
    Image.new("RGB", (64, 48), (10, 200, 10)).save(path, progressive=True)
    data = path.read_bytes()
    path.write_bytes(data[:-2] + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" * 1000 + data[-2:])
    with pytest.raises(ValueError, match=rf"1\d\d\d scans, more than the {MAX_JPEG_SCANS} a JPEG needs"):
        load_image(path)
    assert load_image(_progressive(tmp_path)).shape == (3, 64, 80)  # an ordinary progressive JPEG is read


def _progressive(tmp_path: Path) -> Path:
    path = tmp_path / "progressive.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(
        path, progressive=True, quality=90
    )
    return path


def test_an_onnx_graph_with_a_loop_is_refused(exports, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(exports["onnx"]))
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info(n, t, []) for n, t in (("i", TensorProto.INT64), ("cond", TensorProto.BOOL))],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])],
    )
    trip = helper.make_tensor("trip", TensorProto.INT64, [], [2**62])
    keep = helper.make_tensor("keep", TensorProto.BOOL, [], [True])
    model.graph.initializer.extend([trip, keep])
    model.graph.node.insert(0, helper.make_node("Loop", ["trip", "keep"], [], body=body, name="forever"))
    looping = tmp_path / "loop.onnx"
    onnx.save(model, str(looping))
    with pytest.raises(ValueError, match=r"a Loop node \(forever\): control flow is refused"):
        load_exported(looping)


def test_predict_decodes_a_batch_at_a_time(tmp_path, tiny, capsys, monkeypatch):
    from mobilenet_v1.cli import predict

    images = [_photo(tmp_path / f"{i}.png", (i * 6, 100, 50)) for i in range(40)]
    sizes: list[int] = []
    real_top = Classifier.top
    monkeypatch.setattr(
        Classifier, "top", lambda self, batch, k=5: sizes.append(len(batch)) or real_top(self, batch, k)
    )
    code, err = run_main(["predict", *map(str, images), "--weights", str(tiny[0]), "--json"], capsys)
    assert code == 0, err
    assert sizes == [predict.BATCH, predict.BATCH, 40 - 2 * predict.BATCH]


# --------------------------------------------------------------------------------------
# Outputs never overwrite inputs


def test_export_over_its_own_weights_is_refused(shared_data, tmp_path, capsys):
    weights = tmp_path / "g.tflite"
    shutil.copy(shared_data / "pretrained" / f"{SMALL}.tflite", weights)
    before = weights.read_bytes()
    code, err = run_main(["export", "--weights", str(weights), "--format", "tflite", "-o", str(weights)], capsys)
    assert code == 2 and "is the input" in err and weights.read_bytes() == before, err


def test_predict_plot_over_a_photo_is_refused(tmp_path, tiny, capsys):
    photo = _photo(tmp_path / "owl.png")
    before = photo.read_bytes()
    code, err = run_main(["predict", str(photo), "--weights", str(tiny[0]), "--plot", str(photo)], capsys)
    assert code == 2 and "is the input" in err and photo.read_bytes() == before, err


def test_eval_confusion_inside_the_data_is_refused(tmp_path, tiny, capsys):
    for name in CLASSES:
        _photo(tmp_path / "data" / name / "0.png")
    listing = sorted(str(p) for p in (tmp_path / "data").rglob("*"))
    argv = ["eval", str(tmp_path / "data"), "--weights", str(tiny[0]), "--workers", "0"]
    code, err = run_main([*argv, "--confusion", str(tmp_path / "data" / "a" / "cm.png")], capsys)
    assert code == 2 and "inside the input folder" in err, err
    assert sorted(str(p) for p in (tmp_path / "data").rglob("*")) == listing


def test_tradeoff_output_inside_its_data_is_refused(tmp_path, capsys):
    data = tmp_path / "val"
    _photo(data / "n01440764" / "0.png")
    code, err = run_main(["tradeoff", "--data", str(data), "--output", str(data / "report")], capsys)
    assert code == 2 and "inside the input folder" in err and not (data / "report").exists(), err


def test_tradeoff_checks_its_output_before_measuring(tmp_path, capsys, monkeypatch):
    from mobilenet_v1.measure import tradeoff

    monkeypatch.setattr(tradeoff, "measure_grid", lambda **_: pytest.fail("measured before checking --output"))
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if "ro" in str(p) else real(p, mode, **kw))
    code, err = run_main(["tradeoff", "--output", str(tmp_path / "ro")], capsys)
    assert code == 2 and "not writable" in err, err


# --------------------------------------------------------------------------------------
# Training and resume


def test_heic_and_avif_photos_are_read(tmp_path):
    for name, ext in (("phone", ".heic"), ("web", ".avif"), ("camera", ".jpg")):
        for i in range(2):
            path = tmp_path / "data" / name / f"{i}{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 30), (40 * i, 120, 200)).save(path)
    classes = find_classes(tmp_path / "data")
    assert sorted(classes) == ["camera", "phone", "web"]
    assert load_image(classes["phone"][0]).shape == (3, 30, 40) and load_image(classes["web"][0]).shape == (3, 30, 40)


def test_heic_claiming_a_huge_size_is_refused(tmp_path, monkeypatch):
    from mobilenet_v1.data import images

    path = tmp_path / "big.heic"
    Image.new("RGB", (60, 40)).save(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ValueError, match="60x40 is 2400 pixels, more than the 1000 allowed"):
        load_image(path)


def test_a_class_of_files_no_reader_takes_is_named(tmp_path):
    _photo(tmp_path / "data" / "cat" / "0.png")
    _photo(tmp_path / "data" / "dog" / "0.png")
    (tmp_path / "data" / "raw").mkdir()
    for i in range(3):
        (tmp_path / "data" / "raw" / f"{i}.dng").write_bytes(b"raw")
    with pytest.raises(ValueError, match=r"class folder .*raw has no images this project reads, only \.dng \(3\)"):
        find_classes(tmp_path / "data")


def test_other_files_beside_images_are_counted_and_said(tmp_path):
    for name in ("cat", "dog"):
        for i in range(3):
            _photo(tmp_path / "data" / name / f"{i}.png")
        (tmp_path / "data" / name / "clip.mov").write_bytes(b"mov")
    split = load_splits(tmp_path / "data", val_fraction=0.3)
    assert split.left_out == {".mov": 2}


def test_a_large_val_fraction_leaves_every_class_an_image_to_train_on(tmp_path):
    for name, count in (("cat", 2), ("dog", 5), ("owl", 1)):
        for i in range(count):
            _photo(tmp_path / "data" / name / f"{i}.png")
    split = load_splits(tmp_path / "data", val_fraction=0.9)
    assert {label for _, label in split.train} == {0, 1, 2}


def test_a_class_folder_linked_to_the_data_root_is_refused(tmp_path):
    for name in ("cat", "dog"):
        _photo(tmp_path / "data" / name / "0.png")
    (tmp_path / "data" / "all").symlink_to(tmp_path / "data")
    with pytest.raises(ValueError, match="is a link to the data folder itself"):
        find_classes(tmp_path / "data")
    (tmp_path / "data" / "all").unlink()
    (tmp_path / "data" / "kitten").symlink_to(tmp_path / "data" / "cat")
    with pytest.raises(ValueError, match="'cat' and 'kitten' are one folder"):
        find_classes(tmp_path / "data")


def _train_folder(root: Path) -> Path:
    for c, name in enumerate(("ant", "bee")):
        for split, count in (("train", 8), ("val", 2)):
            for i in range(count):
                _photo(root / split / name / f"{i}.png", (c * 200, 20 * i, 90))
    return root


TINY_TRAIN = ["--scratch", "--alpha", "0.25", "--resolution", "32", "--batch-size", "4", "--workers", "0"]


def test_a_teacher_swapped_before_resume_is_refused(tmp_path, tiny):
    data = _train_folder(tmp_path / "data")
    teacher = tmp_path / "teacher.safetensors"
    shutil.copy(tiny[0], teacher)
    for name in ("ant", "bee"):  # the teacher's classes are a, b, c: name the data's by them
        (data / "train" / name).rename(data / "train" / {"ant": "a", "bee": "b"}[name])
        (data / "val" / name).rename(data / "val" / {"ant": "a", "bee": "b"}[name])
    run = tmp_path / "run"
    first = _cli("train", "--data", data, "--output", run, *TINY_TRAIN, "--epochs", "2", "--teacher", teacher,
                 env={"MOBILENET_V1_TEST_SIGNAL": "2@2"})  # fmt: skip
    assert first.returncode == 130, first.stderr  # Ctrl-C after step 2: a checkpoint
    other = mobilenet_v1(alpha=0.25, num_classes=3)
    from mobilenet_v1.weights import save_safetensors

    save_safetensors(
        other, teacher, {"resolution": 64, "classes": CLASSES, "preprocessing": Preprocessing(64).to_dict()}
    )
    resumed = _cli("train", "--resume", run)
    assert resumed.returncode == 2 and len(resumed.stderr.strip().splitlines()) == 1, resumed.stderr
    assert "is not the file the run" in resumed.stderr and "started with" in resumed.stderr


def test_resume_from_another_folder_reads_the_same_data(tmp_path):
    _train_folder(tmp_path / "here" / "data")
    run = tmp_path / "run"
    first = _cli("train", "--data", "data", "--output", run, *TINY_TRAIN, "--epochs", "2", cwd=tmp_path / "here",
                 env={"MOBILENET_V1_TEST_SIGNAL": "2@2"})  # fmt: skip
    assert first.returncode == 130, first.stderr
    assert json.loads((run / "config.json").read_text())["data"] == str(tmp_path / "here" / "data")
    (tmp_path / "elsewhere" / "data").mkdir(parents=True)  # a folder of the same name here must not be read
    resumed = _cli("train", "--resume", run, cwd=tmp_path / "elsewhere")
    assert resumed.returncode == 0, resumed.stderr


# --------------------------------------------------------------------------------------
# Names that are not UTF-8, printed and matched


def test_skipping_an_unreadable_image_names_it_on_one_line(tmp_path):
    bad = tmp_path / "bad\n\x1b[31mname.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    dataset = ImageFolder([(bad, 0)], lambda x: x, skip_unreadable=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert dataset[0] is None
    (message,) = [str(w.message) for w in caught]
    assert "\n" not in message and "\x1b" not in message and "skipping unreadable image" in message


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes in names")
def test_latin1_names_predict_on_a_strict_utf8_stdout_and_train_then_eval(tmp_path, tiny):
    folder = os.fsencode(tmp_path / "data")
    for c, name in enumerate((b"caf\xe9", b"the")):
        for split, count in (("train", 8), ("val", 2)):
            target = os.path.join(folder, split.encode(), name)
            os.makedirs(target, exist_ok=True)
            for i in range(count):
                Image.new("RGB", (40, 40), (c * 200, 20 * i, 90)).save(os.fsdecode(os.path.join(target, b"%d.png" % i)))
    photo = os.fsdecode(os.path.join(folder, b"train", b"caf\xe9", b"0.png"))
    strict = {"PYTHONIOENCODING": "utf-8:strict"}
    out = _cli("predict", photo, "--weights", tiny[0], "--topk", "1", env=strict)
    assert out.returncode == 0 and "caf" in out.stdout, out.stderr
    run = tmp_path / "run"
    trained = _cli("train", "--data", tmp_path / "data", "--output", run, *TINY_TRAIN, "--epochs", "1", env=strict)
    assert trained.returncode == 0, trained.stderr
    evaluated = _cli("eval", tmp_path / "data" / "val", "--weights", run / "model-final.safetensors", "--workers", "0",
                     "--json", env=strict)  # fmt: skip
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["count"] == 4, evaluated.stderr


# --------------------------------------------------------------------------------------
# Rare image modes


def test_rare_pixel_modes_give_their_pixels_or_one_line(tmp_path):
    ramp = np.linspace(0, 1, 40 * 30, dtype=np.float32).reshape(30, 40)
    Image.fromarray(ramp, mode="F").save(tmp_path / "float.tif")
    Image.fromarray((ramp.astype(np.float64) * (2**31 - 1)).astype(np.int32), mode="I").save(tmp_path / "int32.tif")
    Image.fromarray(ramp * 1000, mode="F").save(tmp_path / "wide.tif")
    Image.new("LAB", (40, 30), (255, 128, 128)).save(tmp_path / "lab.tif")  # L 100, a 0, b 0: white
    floats, int32s = load_image(tmp_path / "float.tif"), load_image(tmp_path / "int32.tif")
    assert floats.max() == 255 and floats[0, -1, -1] == 255 and floats[0, 0, 0] == 0  # not black
    assert int32s.max() >= 254 and 100 < int(int32s[0, 15, 20]) < 160  # not saturated at the middle
    assert load_image(tmp_path / "lab.tif").min() >= 250  # white, not LAB bytes read as RGB
    with pytest.raises(ValueError, match="float pixels from 0 to 1000"):
        load_image(tmp_path / "wide.tif")


# --------------------------------------------------------------------------------------
# Arguments that do not fit


@pytest.mark.parametrize("fpn", ["no", 1, None])
def test_detection_backbone_flags_must_be_booleans(fpn):
    from mobilenet_v1.detection import mobilenet_v1_backbone

    with pytest.raises(ValueError, match="fpn must be True or False"):
        mobilenet_v1_backbone(alpha=0.25, fpn=fpn)


def test_detection_backbone_refuses_an_input_below_32_px():
    from mobilenet_v1.detection import mobilenet_v1_backbone

    backbone = mobilenet_v1_backbone(alpha=0.25, fpn=True).eval()
    with pytest.raises(ValueError, match="at least 32x32 pixels, got 16x16"):
        backbone(torch.zeros(1, 3, 16, 16))


@pytest.mark.parametrize("fmt", ["onnx", "executorch"])
def test_a_model_without_a_classifier_is_not_exported(fmt, tmp_path):
    model = mobilenet_v1(alpha=0.25)
    model.reset_classifier(0)
    with pytest.raises(ValueError, match=r"no classifier \(num_classes=0\)"):
        export_as(fmt, model, tmp_path / f"m.{'pte' if fmt == 'executorch' else 'onnx'}", Preprocessing(32))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------
# Resources and environment


def test_no_home_directory_is_one_line_and_the_data_folder_still_serves(shared_data, monkeypatch):
    from mobilenet_v1.weights import load_weights
    from mobilenet_v1.weights.download import cache_dir

    for name in ("MOBILENET_V1_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    with pytest.raises(ValueError, match=r"no home directory for the cache .* set MOBILENET_V1_CACHE"):
        cache_dir()
    model, _ = load_weights(SMALL)  # verifiable: converted from the data folder's file, nothing cached
    assert model.num_classes == 1001


def test_a_run_that_cannot_fit_in_memory_is_refused_before_its_folder(tmp_path):
    config = TrainConfig(data=str(tmp_path), output=str(tmp_path / "run"), scratch=True, alpha=4, resolution=8192)
    with pytest.raises(ValueError, match=r"keeps about \d+\.\d GB of activations, more than the 8\.0 GB"):
        check_memory(config, available=8 << 30)
    check_memory(TrainConfig(data=str(tmp_path), output=str(tmp_path / "run"), scratch=True), available=8 << 30)
    assert not (tmp_path / "run").exists()


def test_cpu_allocation_failure_is_out_of_memory_exit_2(capsys, monkeypatch):
    from mobilenet_v1.cli import cost

    def fail(args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(cost, "run", fail)
    code, err = run_main(["cost"], capsys)
    assert code == 2 and err.startswith("mobilenet-v1: error: out of memory"), err


def test_a_damaged_paper_tables_file_is_one_line_naming_it(tmp_path):
    script = ROOT / "benchmarks" / "model" / "paper_tables.py"
    for name, text in (
        ("missing_key.json", '{"runs": [{"table": "6"}]}'),
        ("wrong_type.json", '{"runs": "many"}'),
        ("deep.json", "[" * 100_000 + "]" * 100_000),
    ):
        (tmp_path / name).write_text(text)
        cmd = [
            sys.executable,
            str(script),
            "--report",
            "--results",
            str(tmp_path / name),
            "--doc",
            str(tmp_path / "p.md"),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert name in out.stderr


def test_an_output_name_of_245_bytes_is_written(tmp_path):
    path = tmp_path / ("m" * 240 + ".onnx")
    with atomic_write(path) as tmp:
        tmp.write_bytes(b"x")
    assert path.read_bytes() == b"x"
