"""predict and serve on ONNX Runtime: the same answers as Keras within the export's parity tolerance."""

from __future__ import annotations

import shutil
import sys
import warnings

import pytest

import imgclf
from imgclf.inference.export import FLOAT_TOLERANCE
from imgclf.inference.predict import predict
from imgclf.models import runtime

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")


@pytest.fixture
def own_run(trained_run, tmp_path):
    """A copy of the shared run, so that its cache/ starts empty."""
    folder = tmp_path / "run"
    shutil.copytree(trained_run.path, folder, ignore=shutil.ignore_patterns("checkpoints", "exports", "cache"))
    return imgclf.load(folder)


def test_predict_on_onnxruntime_matches_keras(own_run, test_images):
    on_keras = predict(own_run, test_images, top_k=2, runtime="keras")
    on_ort = predict(own_run, test_images, top_k=2, batch_size=3, runtime="onnxruntime")
    assert on_keras.runtime["runtime"] == "keras"
    assert on_ort.runtime["runtime"] == "onnxruntime" and on_ort.runtime["converted"] is True
    assert on_ort.runtime["parity_max_abs_diff"] <= FLOAT_TOLERANCE
    for a, b in zip(on_keras, on_ort):
        assert a.label == b.label
        for (ca, pa), (cb, pb) in zip(a.top_k, b.top_k):
            assert ca == cb and pb == pytest.approx(pa, abs=FLOAT_TOLERANCE)
    # converted once into the run's cache; auto then uses it, even for one image
    assert len(list(own_run.cache_dir.glob("onnx-*.onnx"))) == 1
    again = predict(own_run, test_images[:1], runtime="auto")
    assert again.runtime["runtime"] == "onnxruntime" and again.runtime["converted"] is False


def test_predict_auto_keeps_keras_for_a_few_images(own_run, test_images):
    results = predict(own_run, test_images[:2], runtime="auto")
    assert results.runtime["runtime"] == "keras" and "too little work" in results.runtime["reason"]
    assert not own_run.cache_dir.exists() or not list(own_run.cache_dir.glob("onnx-*.onnx"))


def test_predict_cli_runtime_onnxruntime_missing_is_one_line(cli, own_run, test_images, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, out, err = cli("predict", own_run.path, test_images[0], "--runtime", "onnxruntime", "-q")
    assert code == 2 and "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--runtime onnxruntime needs onnxruntime" in lines[0] and "pip install" in lines[0]


def test_serve_on_onnxruntime_answers_as_keras(own_run, test_images):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from fastapi.testclient import TestClient

    from imgclf.inference.serve import create_app

    expected = predict(own_run, test_images[:3], top_k=2, runtime="keras")
    with TestClient(create_app(own_run, runtime="onnxruntime")) as client:
        assert client.get("/health").json()["runtime"] == "onnxruntime"
        for path, want in zip(test_images[:3], expected):
            body = client.post("/predict?top_k=2", content=path.read_bytes()).json()
            assert body["label"] == want.label
            assert body["probability"] == pytest.approx(want.probability, abs=FLOAT_TOLERANCE)


def test_serve_falls_back_to_keras_with_one_warning_when_onnxruntime_is_missing(own_run, monkeypatch):
    pytest.importorskip("fastapi")
    from imgclf.errors import RuntimeFallbackWarning
    from imgclf.inference.serve import create_app

    monkeypatch.setattr(runtime, "_warned", set())
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.warns(RuntimeFallbackWarning, match="onnxruntime is not installed"):
        app = create_app(own_run)
    assert app.state.runtime["runtime"] == "keras" and app.state.runtime["requested"] == "auto"
