"""The web page in a real browser: Debian's chromium, headless, driven by Playwright.
Server mode classifies through ``/v1/classify``; ``?run=browser`` runs the same ONNX file
with onnxruntime-web and sends no photo to the server."""

import os
import shutil
from pathlib import Path

import pytest

from mobilenet_v1.classify import Classifier

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is installed by `make` (the dev extra)")
CHROMIUM = shutil.which("chromium")
ORT_WEB = Path(os.environ.get("MOBILENET_V1_WEB_RUNTIME", "web/ort"))  # `make web` fills it and sets the variable
WEIGHTS = "mobilenet_v1_0.25_128_quant"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make browser)")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def photo(shared_data) -> Path:
    path = shared_data / "images" / "owl.jpg"  # a clear photo: one class well ahead of the rest
    if not path.is_file():
        pytest.skip(f"test photo not found: {path}")
    return path


def _classify_on_page(browser, url: str, photo: Path) -> tuple[str, list[str], str]:
    page = browser.new_page()
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    page.set_input_files("input[type=file]", str(photo))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    label = page.text_content("#top-label")
    timing = page.text_content("#timing")
    error = page.text_content("#error")
    page.close()
    assert not error, error
    return label, requests, timing


def test_server_and_browser_modes_agree(server_factory, browser, photo):
    if not (ORT_WEB / "ort.wasm.min.js").is_file():
        pytest.skip(f"onnxruntime-web is not in {ORT_WEB}: run `make web`")
    server = server_factory("--weights", WEIGHTS, "--threads", "1")
    label, requests, timing = _classify_on_page(browser, f"{server.url}/", photo)
    expected = Classifier.from_weights(WEIGHTS).predict(photo, k=1)[0][0][0]
    assert label == expected and "on the server" in timing
    assert any(r.endswith("/v1/classify?topk=5") for r in requests)
    in_browser, requests, timing = _classify_on_page(browser, f"{server.url}/?run=browser", photo)
    assert in_browser == label and "in this browser" in timing
    assert not any("/v1/classify" in r for r in requests)  # the photo never left the page
    assert any(r.endswith("/v1/model.onnx") for r in requests)


def test_browser_mode_without_the_runtime_says_how_to_get_it(server_factory, browser, tmp_path, tiny_onnx):
    empty = tmp_path / "no-ort"
    empty.mkdir()
    server = server_factory("--model", str(tiny_onnx), "--web-runtime", str(empty), "--threads", "1")
    page = browser.new_page()
    page.goto(f"{server.url}/?run=browser")
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    assert "make web" in page.text_content("#notice")
    page.click("input[value=server]")  # the visible switch: server mode still works
    assert "run=browser" not in page.url
    page.close()
