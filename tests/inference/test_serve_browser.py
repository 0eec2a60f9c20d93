"""The web page at ``/``, end to end in headless Chromium (Debian's ``chromium`` package + Playwright).

CI installs it with ``apt-get install -y chromium``; ``playwright install`` is never run: the
browser is launched from /usr/bin/chromium. Set ``IMGCLF_SCREENSHOTS=DIR`` to keep the
screenshots (laptop and phone sizes) in DIR.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="headless browser test needs Debian's chromium at "
                                                      "/usr/bin/chromium (apt-get install -y chromium)"),
    pytest.mark.integration,
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(trained_run):
    pytest.importorskip("fastapi")
    from imgclf.inference.serve import background_server

    with background_server(trained_run) as url:
        yield url


def _keep(shot: Path) -> None:
    target = os.environ.get("IMGCLF_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / shot.name)


@pytest.mark.parametrize("viewport", [{"width": 1200, "height": 760}, {"width": 390, "height": 844}],
                         ids=["laptop", "phone"])
def test_upload_an_image_and_read_the_answer(browser, server, trained_run, tmp_path, viewport):
    from imgclf.inference.predict import predict
    from tests.imagefactory import class_colours, write_image

    # A larger photo-like image of the "dogs" colour, as a person would pick.
    colour = class_colours(2)[1]
    image = write_image(tmp_path / "my_dog.jpg", "jpeg", size=(640, 480), color=colour, noise=6.0, seed=3)
    expected = predict(trained_run, [image], top_k=2)[0]

    page = browser.new_page(viewport=viewport, device_scale_factor=2 if viewport["width"] < 500 else 1)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('classes')")
    assert "cnn_aug_pre" in page.text_content("#model")
    assert page.text_content("#classes") == "Classes: " + ", ".join(trained_run.class_names)

    page.set_input_files("#file", str(image))
    page.wait_for_selector("#result.show", timeout=30_000)
    assert page.text_content("#label") == expected.label
    shown = page.text_content("#probability")
    assert shown.endswith("%") and abs(float(shown[:-1]) - expected.probability * 100) <= 0.051
    names = page.eval_on_selector_all("#bars li", "els => els.map(e => e.dataset.class)")
    assert names == [c for c, _ in expected.top_k]
    assert page.is_visible("#preview") and not page.is_visible("#error")
    page.wait_for_timeout(600)  # let the bars finish growing
    shot = tmp_path / f"serve_page_{'phone' if viewport['width'] < 500 else 'laptop'}.png"
    page.screenshot(path=str(shot), full_page=True)
    _keep(shot)
    assert shot.stat().st_size > 10_000
    assert not errors, errors
    assert all(u.startswith(server) or u.startswith("blob:") or u.startswith("data:") for u in requests), requests
    page.close()


def test_a_file_that_is_not_an_image_shows_the_reason(browser, server, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error.show", timeout=30_000)
    assert "not an image" in page.text_content("#error")
    assert not page.is_visible("#result")
    shot = tmp_path / "serve_page_error.png"
    page.screenshot(path=str(shot))
    _keep(shot)
    page.close()


def test_the_heatmap_toggle_swaps_the_picture_for_its_grad_cam_overlay(browser, server, tmp_path):
    from PIL import Image

    from tests.imagefactory import class_colours, write_image

    image = write_image(tmp_path / "my_cat.jpg", "jpeg", size=(480, 360), color=class_colours(2)[0], noise=6.0, seed=4)
    page = browser.new_page(viewport={"width": 1200, "height": 760})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    explained = []
    page.on("request", lambda r: explained.append("explain=1" in r.url) if "/predict" in r.url else None)
    page.goto(server + "/")
    page.set_input_files("#file", str(image))
    page.wait_for_selector("#result.show", timeout=30_000)
    assert explained == [False] and page.get_attribute("#preview", "src").startswith("blob:")
    # switching it on asks again with ?explain=1 and shows the overlay; off shows the photo again
    page.click("label.switch")
    page.wait_for_selector("body[data-heatmap='shown']", state="attached", timeout=30_000)
    assert explained == [False, True]
    src = page.get_attribute("#preview", "src")
    assert src.startswith("data:image/png;base64,")
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
        assert im.size == (32, 32)
    assert "pushed the model most towards" in page.text_content("#explain-note")
    shot = tmp_path / "serve_page_heatmap.png"
    page.screenshot(path=str(shot), full_page=True)
    _keep(shot)
    page.click("label.switch")
    page.wait_for_selector("body[data-heatmap='hidden']", state="attached")
    assert page.get_attribute("#preview", "src").startswith("blob:") and len(explained) == 2
    assert not errors, errors
    page.close()
