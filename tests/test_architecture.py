"""The package's structure and public surface: no import cycles, a torch-only model leaf,
scriptable/traceable models, the builder's weight checks, the written-out registry, the
Classifier, and source hygiene (every writer goes through ``files.py``)."""

from __future__ import annotations

import ast
import io
import itertools
import re
import tokenize
import warnings
from pathlib import Path

import pytest
import torch
from conftest import randomize_batch_norm
from PIL import Image
from torch import nn

import mobilenet_v1 as pkg
from mobilenet_v1 import Classifier, mobilenet_v1
from mobilenet_v1.data.images import load_image
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.weights import MobileNetV1Weights, get_weights, load_safetensors, save_safetensors

SRC = Path(pkg.__file__).resolve().parent  # src/mobilenet_v1
PACKAGE = "mobilenet_v1"
SOURCES = sorted(SRC.rglob("*.py"))


# --------------------------------------------------------------------------------------
# Import graph


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(SRC).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in SOURCES}


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """Every import of ``module`` at any depth: (absolute base, imported names, line)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"), filename=str(MODULES[module]))
    package = module if _is_package(module) else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[: len(parts) - (node.level - 1)]
                assert base_parts, f"{module}:{node.lineno}: relative import beyond the top-level package"
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return found


def _edges(module: str) -> dict[str, int]:
    """The package modules ``module`` imports (target -> first line)."""
    out: dict[str, int] = {}
    for base, names, line in _imports(module):
        targets = []
        if names:
            for name in names:
                full = f"{base}.{name}"
                targets.append(full if full in MODULES else base)
        else:
            targets.append(base)
        for target in targets:
            if target in MODULES and target != module:
                out.setdefault(target, line)
    return out


def _find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for nxt in sorted(graph[node]):
            if color[nxt] == grey:
                return [*stack[stack.index(nxt) :], nxt]
            if color[nxt] == white:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        color[node] = black
        return None

    for start in sorted(graph):
        if color[start] == white:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_import_graph_helpers_see_relative_and_nested_imports():
    # The graph must resolve relative imports and see imports inside functions: a
    # collector that misses either would make the cycle test pass vacuously.
    assert "mobilenet_v1.config" in _edges("mobilenet_v1.cost")
    assert "mobilenet_v1.weights" in _edges("mobilenet_v1.builders")
    assert "mobilenet_v1.files" in _edges("mobilenet_v1.weights.io")
    # imports inside functions (lazy imports of the CLI and measurements)
    assert "mobilenet_v1.measure.plots" in _edges("mobilenet_v1.cli.predict")
    assert "mobilenet_v1.measure.bench" in _edges("mobilenet_v1.measure.tradeoff")
    assert "mobilenet_v1.weights.google_tflite.int8" in _edges("mobilenet_v1.measure.fidelity")
    # an import of a package's attribute goes to the package, of a submodule to the submodule
    assert set(_edges("mobilenet_v1")) == {
        "mobilenet_v1.builders",
        "mobilenet_v1.classify",
        "mobilenet_v1.config",
        "mobilenet_v1.cost",
        "mobilenet_v1.model",
        "mobilenet_v1.weights",
    }
    assert _find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 1}}) is None


def test_no_import_cycle_in_package():
    assert len(MODULES) > 20
    graph = {module: _edges(module) for module in MODULES}
    cycle = _find_cycle(graph)
    if cycle:
        steps = [
            f"{a} -> {b} ({MODULES[a].relative_to(SRC.parent)}:{graph[a][b]})" for a, b in itertools.pairwise(cycle)
        ]
        pytest.fail("import cycle:\n  " + "\n  ".join(steps))


FORBIDDEN_IN_LEAVES = {"ctypes", "subprocess", "urllib", "safetensors"}


def _top_level_imports(module: str) -> set[str]:
    """Absolute names imported by ``module`` (relative ones resolved), at any depth."""
    return {base for base, _, _ in _imports(module)} | {
        f"{base}.{name}" for base, names, _ in _imports(module) for name in names
    }


def test_config_and_model_are_leaves():
    """config.py imports nothing of the package, model.py only config.py: plain torch, no
    native code, downloads, weights or training."""
    for name, allowed in (("mobilenet_v1.config", set()), ("mobilenet_v1.model", {"mobilenet_v1.config"})):
        imported = _top_level_imports(name)
        ours = {base for base, _, _ in _imports(name) if base == PACKAGE or base.startswith(PACKAGE + ".")}
        assert ours <= allowed, (name, ours)
        assert set(_edges(name)) <= allowed, (name, _edges(name))
        roots = {n.split(".")[0] for n in imported}
        assert not roots & FORBIDDEN_IN_LEAVES, roots & FORBIDDEN_IN_LEAVES


def test_cost_imports_only_the_config():
    ours = {base for base, _, _ in _imports("mobilenet_v1.cost") if base == PACKAGE or base.startswith(PACKAGE + ".")}
    assert ours == {"mobilenet_v1.config"}
    assert set(_edges("mobilenet_v1.cost")) == {"mobilenet_v1.config"}
    roots = {n.split(".")[0] for n in _top_level_imports("mobilenet_v1.cost")}
    assert not roots & FORBIDDEN_IN_LEAVES, roots & FORBIDDEN_IN_LEAVES


# --------------------------------------------------------------------------------------
# Scripting, tracing, feature extraction

CONFIGS = {
    "default": {"alpha": 0.25},
    "google": {
        "alpha": 0.25,
        "num_classes": 1001,
        "activation": "relu6",
        "padding": "same",
        "bn_eps": 1e-3,
        "folded_bn": True,
    },
    "full-conv": {"alpha": 0.25, "variant": "full-conv", "num_classes": 10},
    "shallow": {"alpha": 0.5, "variant": "shallow", "num_classes": 10},
}


def _randomized(kwargs: dict) -> nn.Module:
    """An eval-mode model whose BN statistics and biases are not the identity/zero."""
    torch.manual_seed(0)
    model = randomize_batch_norm(mobilenet_v1(**kwargs))
    return model.eval()


@pytest.fixture(scope="module", params=list(CONFIGS))
def model_and_input(request):
    model = _randomized(CONFIGS[request.param])
    x = torch.randn(2, 3, 97, 113, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
    return request.param, model, x, expected


def test_jit_script_matches_eager(model_and_input):
    _, model, x, expected = model_and_input
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    with torch.no_grad():
        out = scripted(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_fx_symbolic_trace_matches_eager(model_and_input):
    _, model, x, expected = model_and_input
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        out = traced(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    # the eager input check leaves nothing in the graph: no call, no read of a parameter
    # outside the layers (a get_attr of the stem's weight broke prepare_fx's fusion)
    assert not [n for n in traced.graph.nodes if "check" in str(n.target)]
    assert not [n for n in traced.graph.nodes if n.op == "get_attr" and not n.users]
    with pytest.raises(ValueError, match="at least"):  # the model itself still checks
        model(torch.randn(1, 3, 16, 64))


def test_prepare_fx_quantizes_a_model_with_batch_norm(model_and_input):
    """PyTorch's FX graph-mode quantization fuses conv + BN + ReLU in every layer, the stem included."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    name, model, x, expected = model_and_input
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's notice that the flow moves to torchao
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (x,))
        with torch.no_grad():
            prepared(x)  # calibrate
        quantized = convert_fx(prepared)
    with torch.no_grad():
        out = quantized(x)
    assert out.shape == expected.shape
    assert (out.argmax(1) == expected.argmax(1)).float().mean() >= 0.5, name


def test_create_feature_extractor_matches_feature_info(model_and_input):
    from torchvision.models.feature_extraction import create_feature_extractor

    name, model, x, expected = model_and_input
    info = model.feature_info
    assert [i["reduction"] for i in info] == [2, 4, 8, 16, 32], name
    nodes = {i["module"]: i["module"] for i in info}
    extractor = create_feature_extractor(model, return_nodes={**nodes, "classifier": "logits"})
    with torch.no_grad():
        feats = extractor(x)
        eager = model.forward_intermediates(x, intermediates_only=True)
    torch.testing.assert_close(feats["logits"], expected, rtol=0, atol=1e-5)
    h, w = x.shape[-2:]
    for entry, tap in zip(info, eager, strict=True):
        out = feats[entry["module"]]
        r = entry["reduction"]
        assert out.shape == (x.shape[0], entry["num_chs"], -(-h // r), -(-w // r)), (name, entry)
        torch.testing.assert_close(out, tap, rtol=0, atol=1e-5)
        # the module path names a real submodule whose output this is
        assert isinstance(model.get_submodule(entry["module"]), nn.Module)
    # the last tap is the backbone's output
    torch.testing.assert_close(feats[info[-1]["module"]], model.forward_features(x), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------
# The builder

CLASSES = ["a", "b", "c"]


def _tiny_checkpoint(path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(3)
    model = mobilenet_v1(alpha=0.25, num_classes=3)
    with torch.no_grad():  # a head with spread-out logits, so rankings are clear
        model.classifier.weight.normal_(0, 2.0)
        model.classifier.bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
    meta = {"resolution": 64, "classes": CLASSES, "preprocessing": Preprocessing(64).to_dict()}
    save_safetensors(model, path, meta)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.safetensors")


@pytest.mark.parametrize(
    ("kwargs", "name", "given", "have"),
    [
        ({"alpha": 0.5}, "alpha", "0.5", "0.25"),
        ({"num_classes": 5}, "num_classes", "5", "3"),
        ({"padding": "same"}, "padding", "'same'", "'symmetric'"),
        ({"activation": "relu6"}, "activation", "'relu6'", "'relu'"),
        ({"folded_bn": True}, "folded_bn", "True", "False"),
    ],
)
def test_builder_rejects_conflicting_architecture(tiny, kwargs, name, given, have):
    path, _ = tiny
    with pytest.raises(ValueError) as excinfo:
        mobilenet_v1(weights=path, **kwargs)
    message = str(excinfo.value)
    assert name in message and given in message and have in message, message


def test_builder_loads_weights_with_matching_arguments(tiny):
    path, state = tiny
    for kwargs in ({}, {"alpha": 0.25}, {"alpha": 0.25, "num_classes": 3}, {"padding": "symmetric"}):
        model = mobilenet_v1(weights=path, **kwargs)
        assert model.config.alpha == 0.25 and model.config.num_classes == 3
        got = model.state_dict()
        assert got.keys() == state.keys()
        for k, v in state.items():
            assert torch.equal(got[k], v), k
    # differs from a fresh build, so the comparison above is meaningful
    fresh = mobilenet_v1(alpha=0.25, num_classes=3).state_dict()
    assert not torch.equal(fresh["classifier.weight"], state["classifier.weight"])


def test_builder_dropout_is_allowed_with_weights(tiny):
    path, state = tiny
    model = mobilenet_v1(weights=path, dropout=0.2)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.2
    assert model.config.dropout == 0.2
    assert model.training  # like any freshly built model
    assert torch.equal(model.state_dict()["classifier.weight"], state["classifier.weight"])
    assert mobilenet_v1(alpha=0.25, dropout=0.3).dropout.p == 0.3


@pytest.mark.parametrize("bad", [123, 1.5, ["x"]])
def test_builder_rejects_bad_weights_spec(bad):
    with pytest.raises(ValueError):
        mobilenet_v1(weights=bad)


# --------------------------------------------------------------------------------------
# The registry

ALPHAS = {"1_0": 1.0, "0_75": 0.75, "0_5": 0.5, "0_25": 0.25}
RESOLUTIONS = (224, 192, 160, 128)
EXPECTED_MEMBERS = [f"ALPHA_{a}_{r}_{kind}" for a in ALPHAS for r in RESOLUTIONS for kind in ("FLOAT", "QUANT")]


def test_registry_is_written_out_member_by_member():
    text = (SRC / "weights" / "registry.py").read_text(encoding="utf-8")
    missing = [m for m in EXPECTED_MEMBERS if not re.search(rf"^    {m} = ", text, re.MULTILINE)]
    assert not missing, missing
    assert len(EXPECTED_MEMBERS) == 32
    assert len(MobileNetV1Weights) == 32
    assert sorted(m.name for m in MobileNetV1Weights) == sorted(EXPECTED_MEMBERS)
    assert MobileNetV1Weights.DEFAULT is MobileNetV1Weights.ALPHA_1_0_224_QUANT  # an alias, not a 33rd member


@pytest.mark.parametrize("member", list(MobileNetV1Weights), ids=lambda m: m.name)
def test_registry_member_agrees_with_its_record(member):
    match = re.fullmatch(r"ALPHA_(\d+_\d+)_(\d+)_(FLOAT|QUANT)", member.name)
    assert match, member.name
    record = member.value
    assert record.alpha == ALPHAS[match[1]]
    assert record.resolution == int(match[2])
    assert record.quantized is (match[3] == "QUANT")
    assert record.name == f"mobilenet_v1_{record.alpha}_{record.resolution}" + ("_quant" if record.quantized else "")
    assert record.config.alpha == record.alpha and record.preprocessing.resolution == record.resolution
    assert get_weights(record.name) is member
    assert get_weights(member.name) is member


def test_get_weights_rejects_unknown_name():
    with pytest.raises(ValueError, match=r"mobilenet_v1_0\.25_128_quant"):
        get_weights("mobilenet_v1_0.25_128_qant")


# --------------------------------------------------------------------------------------
# Classifier


def _write_images(folder: Path) -> list[Path]:
    gen = torch.Generator().manual_seed(5)
    paths = []
    for i, (size, suffix) in enumerate(
        [((80, 60), ".jpg"), ((50, 90), ".png"), ((64, 64), ".jpg"), ((70, 71), ".png")]
    ):
        pixels = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=gen).numpy()
        path = folder / f"img{i}{suffix}"
        Image.fromarray(pixels, "RGB").save(path)
        paths.append(path)
    return paths


def test_classifier_predict_matches_softmax(tiny, tmp_path):
    path, _ = tiny
    images = _write_images(tmp_path)
    clf = Classifier.from_weights(path)
    assert clf.classes == CLASSES and clf.ignore == ()
    preds = clf.predict(images, k=2)
    assert len(preds) == len(images)
    model, _ = load_safetensors(path)
    batch = torch.stack([clf.transform(load_image(p)) for p in images])
    assert batch.shape == (len(images), 3, 64, 64) and batch.dtype == torch.float32
    with torch.no_grad():
        probs = torch.softmax(model.eval()(batch), dim=1)
    for pred, row in zip(preds, probs, strict=True):
        assert len(pred) == 2
        names = [n for n, _ in pred]
        ps = [p for _, p in pred]
        assert all(isinstance(n, str) and n in CLASSES for n in names) and len(set(names)) == 2
        assert all(0.0 <= p <= 1.0 for p in ps)
        assert ps[0] >= ps[1]
        best = row.topk(2)
        assert names == [CLASSES[i] for i in best.indices.tolist()]
        assert ps == pytest.approx(best.values.tolist(), abs=1e-6)


def test_classifier_ignore_never_predicted(tiny, tmp_path):
    path, _ = tiny
    images = _write_images(tmp_path)
    model, loaded = load_safetensors(path)
    # make class 0 the clear favourite, so ignoring it matters
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([50.0, 0.0, 0.0]))
    assert {p[0][0] for p in Classifier(model, loaded.preprocessing, CLASSES).predict(images, k=1)} == {"a"}
    clf = Classifier(model, loaded.preprocessing, CLASSES, ignore=(0,))
    for pred in clf.predict(images, k=2):
        assert [n for n, _ in pred] and "a" not in [n for n, _ in pred], pred
        assert all(0.0 <= p <= 1.0 for _, p in pred), pred


def test_classifier_ignore_never_predicted_when_k_covers_all_classes(tiny, tmp_path):
    path, _ = tiny
    images = _write_images(tmp_path)[:1]
    model, loaded = load_safetensors(path)
    clf = Classifier(model, loaded.preprocessing, CLASSES, ignore=(0,))
    (pred,) = clf.predict(images, k=3)
    assert "a" not in [n for n, _ in pred], pred
    assert all(0.0 <= p <= 1.0 for _, p in pred), pred


def test_classifier_missing_image_fails_before_any_work(tiny, tmp_path):
    path, _ = tiny
    images = _write_images(tmp_path)
    model, loaded = load_safetensors(path)
    calls = []

    def counting(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape)
        return model(batch)

    clf = Classifier(counting, loaded.preprocessing, CLASSES)
    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match=r"nope\.jpg"):
        clf.predict([images[0], missing, images[1]], k=2)
    assert calls == []
    clf.predict(images[:1], k=2)
    assert len(calls) == 1  # the counter works


def test_classifier_google_weights_never_predict_background(shared_data, monkeypatch):
    tflite = shared_data / "pretrained" / "mobilenet_v1_0.25_128_quant.tflite"
    folder = shared_data / "images"
    if not tflite.is_file() or not folder.is_dir():
        pytest.skip("shared data has no mobilenet_v1_0.25_128_quant.tflite or images/")
    monkeypatch.setenv("MOBILENET_V1_DATA", str(shared_data))
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    assert images
    clf = Classifier.from_weights("mobilenet_v1_0.25_128_quant")
    assert len(clf.classes) == 1001 and clf.classes[0] == "background" and clf.ignore == (0,)
    preds = clf.predict(images, k=5)
    assert len(preds) == len(images)
    for image, pred in zip(images, preds, strict=True):
        names = [n for n, _ in pred]
        assert len(names) == 5 and "background" not in names, (image.name, pred)
        assert all(0.0 <= p <= 1.0 for _, p in pred), (image.name, pred)
        assert [p for _, p in pred] == sorted((p for _, p in pred), reverse=True)
    # with k = all but one output, background (ignored) must still be the one left out
    (wide,) = clf.predict(images[:1], k=1000)
    assert "background" not in [n for n, _ in wide]


# --------------------------------------------------------------------------------------
# Source hygiene

ISSUE = re.compile(r"issue\s*#?\d", re.IGNORECASE)


def _comments_and_strings(path: Path) -> list[tuple[int, str]]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    return [(t.start[0], t.string) for t in tokens if t.type in (tokenize.COMMENT, tokenize.STRING)]


def test_no_issue_numbers_in_comments_or_docstrings():
    assert _comments_and_strings(SRC / "model.py")  # the tokenizer sees the docstrings
    hits = [
        f"{p.relative_to(SRC)}:{line}: {text.strip()[:80]}"
        for p in SOURCES
        for line, text in _comments_and_strings(p)
        if ISSUE.search(text)
    ]
    assert not hits, "\n".join(hits)


def test_no_shared_data_paths_in_source():
    hits = [
        f"{p.relative_to(SRC)}:{n}: {line.strip()}"
        for p in SOURCES
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if "shared/data" in line or "../shared" in line or "..\\shared" in line
    ]
    assert not hits, "\n".join(hits)


WRITER_METHODS = {"savefig", "write_text", "write_bytes"}
WRITER_FUNCTIONS = {("os", "replace"), ("tempfile", "mkstemp")}


def _writer_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {  # from os import replace / from tempfile import mkstemp
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and not node.level
        for alias in node.names
        if (node.module, alias.name) in WRITER_FUNCTIONS
    }
    hits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            if func.attr in WRITER_METHODS or (owner, func.attr) in WRITER_FUNCTIONS:
                hits.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)[:100]}")
        elif isinstance(func, ast.Name) and func.id in imported:
            hits.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)[:100]}")
    return hits


def test_writer_scan_sees_files_py():
    found = "\n".join(_writer_calls(SRC / "files.py"))
    for call in ("os.replace(", "tempfile.mkstemp(", ".savefig(", ".write_text("):
        assert call in found, call


def test_every_writer_goes_through_files_py():
    hits = [hit for p in SOURCES if p != SRC / "files.py" for hit in _writer_calls(p)]
    assert not hits, "\n".join(hits)
