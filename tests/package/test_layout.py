"""The package's structure: no import cycles, each package importing only what its "May import:"
line lists, leaves free of native code and downloads, and source hygiene (no issue numbers,
no shared-data paths, every writer through ``files.py``)."""

from __future__ import annotations

import ast
import io
import itertools
import re
import tokenize
from pathlib import Path

import pytest

import mobilenet_v1 as pkg

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
    assert "mobilenet_v1.hub" in _edges("mobilenet_v1.weights.io")
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
        "mobilenet_v1.timm_registry",
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


def _may_import(path: Path) -> list[str] | None:
    """The project names listed on the "May import:" line of a module's docstring
    (``[]`` for "nothing of the project"), or ``None`` where it has no such line."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    match = re.search(r"^May import: (.*?)(?:\n\n|\Z)", doc, re.M | re.S)
    if match is None:
        return None
    return re.findall(r"``([\w.]+)``", match[1])


def _rule(module: str) -> tuple[str, list[str]]:
    """The top-level part of the package ``module`` belongs to, and the names it may import
    from outside that part: the nearest "May import:" line from its package up to the top."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    candidates = [module] if _is_package(module) or len(parts) == 2 else []
    candidates += [".".join(parts[:n]) for n in range(len(parts) - 1, 1, -1)]
    for name in candidates:
        allowed = _may_import(MODULES[name])
        if allowed is not None:
            return top, allowed
    raise AssertionError(f"{module}: no 'May import:' line in it or its packages")


def test_every_top_level_module_and_package_says_what_it_may_import():
    tops = [m for m in MODULES if m.count(".") == 1 or (m.count(".") >= 1 and _is_package(m))] + [PACKAGE]
    missing = [m for m in tops if _may_import(MODULES[m]) is None]
    assert not missing, missing
    assert _may_import(MODULES["mobilenet_v1.config"]) == []
    assert _may_import(MODULES["mobilenet_v1.model"]) == ["config", "hub"]


def test_imports_keep_to_each_packages_may_import_line():
    """Every import of the project's own modules, at any depth (imports inside functions
    too), is of the module's own top-level part or of a name its "May import:" line lists."""
    wrong = []
    for module in MODULES:
        top, allowed = _rule(module)
        for target, line in _edges(module).items():
            name = target.removeprefix(PACKAGE + ".") if target != PACKAGE else ""
            if name.split(".")[0] == top or any(name == a or name.startswith(a + ".") for a in allowed):
                continue
            wrong.append(f"{MODULES[module].relative_to(SRC.parent)}:{line} imports {target} (may import {allowed})")
    assert not wrong, "\n".join(wrong)


def test_the_rule_check_sees_a_violation():
    # the check must be able to fail: the model importing the weights would be refused
    top, allowed = _rule("mobilenet_v1.model")
    assert top == "model" and "weights" not in allowed
    assert _rule("mobilenet_v1.train.accel.native")[1] == ["model", "files", "weights.download"]
    assert _rule("mobilenet_v1.deploy.onnx")[0] == "deploy"


def test_the_leaves_load_no_native_code_downloads_or_weights():
    for name in ("mobilenet_v1.config", "mobilenet_v1.model", "mobilenet_v1.cost"):
        roots = {n.split(".")[0] for n in _top_level_imports(name)}
        assert not roots & FORBIDDEN_IN_LEAVES, (name, roots & FORBIDDEN_IN_LEAVES)


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
