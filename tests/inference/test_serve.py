"""imgclf.inference.serve: the HTTP API, its limits, the batching worker, ``imgclf serve``."""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette 1.x: "install httpx2" (httpx still works)
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient  # noqa: E402

from imgclf.inference.predict import predict  # noqa: E402
from imgclf.inference.serve import Batcher, Busy, background_server, create_app, is_loopback  # noqa: E402
from tests.imagefactory import write_broken, write_image  # noqa: E402


@pytest.fixture(scope="module")
def client(trained_run):
    with TestClient(create_app(trained_run)) as c:
        yield c


def _check_answer(body, run, k):
    assert body["label"] in run.class_names
    assert [t["class"] for t in body["top_k"]][0] == body["label"]
    probs = [t["probability"] for t in body["top_k"]]
    assert len(probs) == k and probs == sorted(probs, reverse=True) and probs[0] == body["probability"]


@pytest.mark.backend_neutral
def test_health_classes_and_page(client, trained_run):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["classes"] == 2 and h["image_size"] == 32 and h["model"] == "cnn_aug_pre"
    assert client.get("/classes").json() == {"class_names": trained_run.class_names}
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="file"' in r.text and "predict" in r.text
    # one self-contained page: no CDN, no external resource
    import re

    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", r.text)
    assert "@import" not in r.text and "https://" not in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.backend_neutral
def test_predict_multipart_and_raw_body_agree_with_predict(client, trained_run, test_images):
    path = test_images[0]
    expected = predict(trained_run, [path], top_k=2)[0]
    with open(path, "rb") as fh:
        r = client.post("/predict", files={"file": (path.name, fh, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    _check_answer(body, trained_run, 2)
    assert body["filename"] == path.name
    assert body["label"] == expected.label and body["probability"] == pytest.approx(expected.probability, abs=1e-5)

    r = client.post("/predict?top_k=1", content=path.read_bytes(), headers={"content-type": "image/png"})
    assert r.status_code == 200
    _check_answer(r.json(), trained_run, 1)
    assert r.json()["probability"] == pytest.approx(expected.probability, abs=1e-5)


def test_bad_uploads_get_400_with_a_reason(client, tmp_path):
    text = write_broken(tmp_path / "t.jpg", "text_as_jpg").read_bytes()
    r = client.post("/predict", files={"file": ("t.jpg", text, "image/jpeg")})
    assert r.status_code == 400 and "not an image" in r.json()["detail"]
    corrupt = write_broken(tmp_path / "c.jpg", "truncated_jpeg").read_bytes()
    r = client.post("/predict", content=corrupt)
    assert r.status_code == 400 and "corrupt or truncated" in r.json()["detail"]
    r = client.post("/predict", content=b"")
    assert r.status_code == 400 and "empty upload" in r.json()["detail"]
    r = client.post("/predict", files={"image": ("x.png", b"123", "image/png")})
    assert r.status_code == 400 and "field named 'file'" in r.json()["detail"]
    r = client.post("/predict?top_k=0", content=text)
    assert r.status_code == 400 and "top_k" in r.json()["detail"]


def test_upload_limit_413_declared_and_streamed(trained_run, test_images):
    data = test_images[0].read_bytes() + b"\0" * 5000
    with TestClient(create_app(trained_run, max_upload_bytes=4000)) as c:
        r = c.post("/predict", content=data)
        assert r.status_code == 413 and "upload too large" in r.json()["detail"] and "limit is 0.004 MB" in r.json()["detail"]
        r = c.post("/predict", files={"file": ("a.png", data, "image/png")})
        assert r.status_code == 413

        def chunks():  # no Content-Length: counted while it streams in
            for i in range(0, len(data), 500):
                yield data[i:i + 500]

        r = c.post("/predict", content=chunks())
        assert r.status_code == 413
        small = test_images[0].read_bytes()
        assert len(small) < 4000 and c.post("/predict", content=small).status_code == 200


def test_decompression_bomb_refused_before_decoding(client):
    # 12000 x 12000 = 144 M pixels in a ~20 kB PNG: refused from the header, never decoded.
    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, format="PNG", optimize=True)
    assert len(buf.getvalue()) < 100_000
    r = client.post("/predict", content=buf.getvalue())
    assert r.status_code == 413 and "144,000,000 pixels, over the limit of 40,000,000" in r.json()["detail"]


def test_pixel_limit_is_an_option(trained_run, tmp_path):
    img = write_image(tmp_path / "big.png", "png", size=(200, 100)).read_bytes()
    with TestClient(create_app(trained_run, max_pixels=10_000)) as c:
        r = c.post("/predict", content=img)
        assert r.status_code == 413 and "200x100" in r.json()["detail"]


class _SlowModel:
    """Records the batch sizes it is called with; each call takes 0.15 s."""

    output_shape = (None, 2)

    def __init__(self):
        self.calls = []

    def predict_on_batch(self, x):
        self.calls.append(len(x))
        time.sleep(0.15)
        return np.tile(np.array([[0.25, 0.75]], np.float32), (len(x), 1))


def test_batcher_takes_waiting_requests_together_and_bounds_the_queue():
    model = _SlowModel()

    async def scenario():
        b = Batcher(model, max_batch=4, max_queue=6)
        await b.start()
        try:
            x = np.zeros((32, 32, 3), np.uint8)
            first = asyncio.ensure_future(b.submit(x))
            await asyncio.sleep(0.05)  # the model is now busy with the first image
            rest = [asyncio.ensure_future(b.submit(x)) for _ in range(6)]
            await asyncio.sleep(0)
            with pytest.raises(Busy):  # 6 waiting: the queue is full
                await b.submit(x)
            out = await asyncio.gather(first, *rest)
            return out, dict(b.stats)
        finally:
            await b.stop()

    out, stats = asyncio.run(scenario())
    assert all(np.allclose(o, [0.25, 0.75]) for o in out)
    assert model.calls == [1, 4, 2]  # 6 waiting images in batches of at most 4
    assert stats == {"requests": 7, "batches": 3, "largest_batch": 4}


def test_concurrent_requests_on_a_real_server(trained_run, test_images):
    import httpx

    with background_server(trained_run) as url:
        assert url.startswith("http://127.0.0.1:")
        data = [p.read_bytes() for p in test_images]
        results, errors = [], []

        def worker(i):
            try:
                with httpx.Client(base_url=url, timeout=30) as c:
                    for j in range(4):
                        r = c.post("/predict", content=data[(i + j) % len(data)])
                        results.append(r.status_code)
            except Exception as e:  # pragma: no cover
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and results == [200] * 32
        health = httpx.get(url + "/health").json()
        assert health["requests"] >= 32 and health["batches"] <= health["requests"]


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("example.com")


def test_cli_serve_defaults_and_help(capsys):
    from imgclf.cli import build_parser

    args = build_parser().parse_args(["serve", "some/run"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.max_upload_mb == 10
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    out = capsys.readouterr().out
    assert "POST /predict" in out and "127.0.0.1" in out


def test_serve_refuses_a_busy_port_before_loading_the_model(cli, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, out, err = cli("serve", tmp_path / "no-run-needed", "--port", port)
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_imgclf_serve_command_end_to_end(trained_run, test_images):
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "imgclf.cli", "serve", str(trained_run.path), "--port", str(port),
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.3)
        r = httpx.post(url + "/predict", files={"file": ("x.png", test_images[0].read_bytes(), "image/png")})
        assert r.status_code == 200 and r.json()["label"] in trained_run.class_names
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert f"serving {trained_run.path} on http://127.0.0.1:{port}/" in out


def test_limits_hold_on_the_real_server(trained_run, test_images, monkeypatch):
    """413 on a large body, 413 over the pixel limit, 400 on garbage, through uvicorn itself;
    and a bomb is refused from its header: the decoder is never called for it."""
    import httpx

    from imgclf.inference import inputs as predict_module

    calls = []
    real_decode = predict_module.decode_opened  # what turns an opened image into pixels

    def counting_decode(img, *args, **kwargs):
        calls.append(img.size)
        return real_decode(img, *args, **kwargs)

    monkeypatch.setattr(predict_module, "decode_opened", counting_decode)
    small = test_images[0].read_bytes()
    bomb = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, format="PNG", optimize=True)
    with background_server(trained_run, max_upload_bytes=50_000, max_pixels=1_000_000) as url, \
            httpx.Client(base_url=url, timeout=30) as c:
        assert c.post("/predict", content=small).status_code == 200 and len(calls) == 1
        r = c.post("/predict", content=b"\0" * 60_000)
        assert r.status_code == 413 and "upload too large" in r.json()["detail"]
        r = c.post("/predict", files={"file": ("big.bin", b"\0" * 60_000)})
        assert r.status_code == 413
        r = c.post("/predict", content=bomb.getvalue())
        assert r.status_code == 413 and "144,000,000 pixels, over the limit of 1,000,000" in r.json()["detail"]
        r = c.post("/predict", content=b"this is not an image at all")
        assert r.status_code == 400 and "not an image" in r.json()["detail"]
        assert c.post("/predict", content=small).status_code == 200  # the server is still fine
    assert len(calls) == 2  # neither the bomb nor the garbage reached the decoder
def test_explain_returns_the_overlay_as_a_png_of_the_input_size(client, trained_run, test_images):
    import base64

    data = test_images[0].read_bytes()
    plain = client.post("/predict", content=data).json()
    r = client.post("/predict?explain=1", content=data)
    assert r.status_code == 200
    body = r.json()
    assert body["label"] == plain["label"] and body["probability"] == pytest.approx(plain["probability"], abs=1e-6)
    ex = body["explanation"]
    assert ex["class"] == body["label"] and ex["method"] == "grad-cam" and ex["format"] == "png"
    with Image.open(io.BytesIO(base64.b64decode(ex["png_base64"]))) as im:
        assert im.format == "PNG" and im.size == (32, 32) == (ex["width"], ex["height"])
    assert "explanation" not in plain


def test_explain_on_a_broken_image_or_a_model_without_convolutions(client, dense_run, test_images, tmp_path):
    r = client.post("/predict?explain=1", content=b"plain text, no picture")
    assert r.status_code == 400 and "not an image" in r.json()["detail"]
    with TestClient(create_app(dense_run)) as dense:
        r = dense.post("/predict?explain=1", content=test_images[0].read_bytes())
    body = r.json()
    assert r.status_code == 422 and "no convolutional layer" in body["detail"]
    assert body["label"] in dense_run.class_names and "explanation" not in body  # the prediction stands
