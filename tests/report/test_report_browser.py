"""The study report in a real browser: headless Chromium (Debian's ``chromium``) via Playwright.

Runs ``imgclf demo`` with tiny settings, an empty Keras cache and no network, so the transfer model is
left out with a note, then opens report.html from disk at a laptop and a phone width: every
image decodes, the comparison table is there, nothing is wider than the screen. The
screenshots are kept in the test's tmp folder (full page, one per width).
"""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
WIDTHS = {"laptop": (1366, 900, 1, False), "phone": (390, 844, 2, True)}

pytestmark = [pytest.mark.skipif(not CHROMIUM.is_file(), reason="no /usr/bin/chromium (apt-get install chromium)"),
              pytest.mark.integration]


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    """`imgclf demo` on 32x32 images, 1 epoch, cnn + mobilenet_v2 without cached weights."""
    import contextlib
    import io

    from imgclf.cli import main

    tmp = tmp_path_factory.mktemp("demo")
    saved = os.environ.get("KERAS_HOME")
    os.environ["KERAS_HOME"] = str(tmp / "empty-keras-home")  # no weights cached ...
    from imgclf.models import weights

    real_download = weights._download

    def offline(*args, **kwargs):  # ... and none to download
        raise OSError("no network")

    weights._download = offline
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = main(["demo", "--data-dir", str(tmp / "synthetic"), "-o", str(tmp / "demo"), "--epochs", "1",
                         "--image-size", "32", "--models", "cnn,mobilenet_v2", "-q"])
    finally:
        weights._download = real_download
        if saved is None:
            os.environ.pop("KERAS_HOME", None)
        else:
            os.environ["KERAS_HOME"] = saved
    assert code == 0, out.getvalue()
    return tmp / "demo", out.getvalue()


def test_demo_leaves_out_the_transfer_model_with_a_note(demo_report):
    folder, printed = demo_report
    assert "mobilenet_v2" in printed and "Keras cache" in printed  # said on the terminal ...
    page = (folder / "report.html").read_text()
    assert "not trained" in page and "Keras cache" in page  # ... and in the report
    assert not (folder / "runs" / "mobilenet_v2").exists()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.mark.parametrize("device", list(WIDTHS))
def test_report_opens_from_disk_with_every_figure(demo_report, browser, device, tmp_path):
    folder, _ = demo_report
    # opened from a copy elsewhere: nothing may point back into the study folder
    page_file = tmp_path / "report.html"
    shutil.copy(folder / "report.html", page_file)
    width, height, scale, mobile = WIDTHS[device]
    page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=scale,
                            is_mobile=mobile, has_touch=mobile)
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_file.as_uri())
    page.wait_for_load_state("load")
    images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert len(images) >= 7, images  # samples, frequencies, 3 augmentation, cnn history + confusion, comparison
    broken = [alt for alt, complete, w in images if not (complete and w > 0)]
    assert not broken, f"figures that did not load: {broken}"
    assert page.locator("table.comparison").count() == 1
    rows = page.locator("table.comparison tbody tr")
    assert rows.count() == 2
    assert "not trained" in rows.nth(1).inner_text()
    assert page.locator("#comparison img").count() == 1
    # nothing wider than the screen: wide tables scroll inside their own box
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    shot = tmp_path / f"report-{device}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    # a figure opens full size on click and closes again
    page.locator("#comparison figure img").click()
    assert page.locator("#zoom.open img").count() == 1
    page.locator("#zoom").click()
    assert page.locator("#zoom.open").count() == 0
    page.close()
