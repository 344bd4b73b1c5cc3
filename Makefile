# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The shared data (Google's weights, test photos, Imagenette) for the demo, tests and benchmarks.
export MOBILENET_V1_DATA ?= $(abspath ../shared/data)

.PHONY: install web browser demo test lint bench clean

install: $(STAMP) web browser

# Reinstall only when the project's dependencies change: a second `make` is quick.
# pyproject.toml declares ranges (the package installs into any environment that meets
# them); constraints.txt pins the versions tested here, so the venv is the same everywhere.
# The venv's interpreter also gets MOBILENET_V1_DATA as its default (a .pth line), so the
# commands in README find the shared data from this checkout without an export.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	echo "import os; os.environ.setdefault('MOBILENET_V1_DATA', '$(MOBILENET_V1_DATA)'); os.environ.setdefault('MOBILENET_V1_WEB_RUNTIME', '$(abspath $(ORT_WEB))')" \
		> "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/mobilenet_v1_data.pth"
	touch $(STAMP)

# onnxruntime-web (npm, the version locked in web/package-lock.json) for the served page's
# browser mode: its script and WASM files go to web/ort (never committed, not in the wheel),
# which the venv names to the server as MOBILENET_V1_WEB_RUNTIME (the .pth line above).
ORT_WEB := web/ort
web: $(ORT_WEB)/.installed

$(ORT_WEB)/.installed: web/package.json web/package-lock.json
	npm ci --prefix web --no-audit --no-fund --loglevel=error
	mkdir -p $(ORT_WEB)
	cp web/node_modules/onnxruntime-web/dist/ort.wasm.min.js \
		web/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm \
		web/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.mjs $(ORT_WEB)/
	touch $@

# Debian's chromium for the page's tests (Playwright drives it; no browser download). Where
# it cannot be installed (no apt, no root) the browser tests skip and say why.
browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then APT="apt-get"; else APT="sudo -n apt-get"; fi; \
		$$APT update -qq && $$APT install -y -qq chromium >/dev/null \
		|| echo "chromium could not be installed: the browser tests will be skipped"; }

demo: install
	$(BIN)/python examples/demo.py

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks examples hubconf.py
	$(BIN)/ruff format --check src tests benchmarks examples hubconf.py

# The quick benchmarks; the long ones (fidelity, int8_fidelity, train_*, fuzz, kill) are
# run one by one with the commands recorded in docs/.
bench: install
	$(BIN)/python benchmarks/model/cost_table.py
	$(BIN)/python benchmarks/deploy/latency.py
	$(BIN)/python benchmarks/train/depthwise_backward.py
	$(BIN)/python benchmarks/train/ddp_scaling.py
	$(BIN)/mobilenet-v1 tradeoff --output benchmarks/results/tradeoff

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache web/node_modules $(ORT_WEB)
