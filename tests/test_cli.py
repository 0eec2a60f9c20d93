"""The ``imgclf`` command line: ``models``, ``augment-preview``, ``evaluate``, ``train`` errors, ``demo``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.conftest import MOBILENET_WEIGHTS, requires_weights


def _one_line_error(code, out, err, *fragments):
    assert code == 2, (out, err)
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgclf: error: "), err
    for f in fragments:
        assert f in lines[0], lines[0]


def test_models_lists_the_registry(cli):
    from imgclf.models import list_models

    code, out, err = cli("models")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["name", "kind", "size", "description"]
    names = [line.split()[0] for line in lines[1:]]
    assert names == [s.name for s in list_models()] and len(names) == 9
    assert {"cnn", "cnn_aug", "cnn_aug_pre", "mobilenet_v2", "efficientnet_b0"} <= set(names)


def test_augment_preview_writes_three_grids(cli, class_tree, tmp_path):
    code, out, err = cli("augment-preview", class_tree, "--image-size", "32", "-o", tmp_path / "aug",
                         "--cache-dir", tmp_path / "cache", "-q")
    assert code == 0, err
    for name in ("flip", "rotation", "stack"):
        path = tmp_path / "aug" / f"augment_{name}.png"
        assert f"figure    {path}" in out
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) > 200
            assert np.asarray(im.convert("L")).std() > 10  # a grid of images, not a blank page


def test_evaluate_success_path(cli, class_tree, tmp_path):
    code, out, err = cli("train", class_tree, "--model", "cnn", "--epochs", "1", "--image-size", "32",
                         "--validation", "0.25", "--test", "0.25", "--output", tmp_path / "run", "-q")
    assert code == 0, err
    assert f"run folder: {tmp_path / 'run'}" in out and "kept      train stage: epoch 1" in out
    code, out, err = cli("evaluate", tmp_path / "run", "--split", "validation", "-q")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("validation: 8 images, accuracy ") and "majority baseline 50.0%" in lines[0]
    assert lines[2].split() == ["class", "precision", "recall", "f1", "support"]
    assert [line.split()[0] for line in lines[3:5]] == ["cats", "dogs"]
    assert lines[3].split()[-1] == lines[4].split()[-1] == "4"  # support per class
    assert "confusion matrix (rows: true, columns: predicted)" in out
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert f"accuracy {m['validation']['accuracy']:.1%}" in lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["--model", "resnet9000"], ["unknown model", "resnet9000"]),
    (["--model", "cnn", "--epochs", "0"], ["epochs must be an integer >= 1"]),
    (["--model", "cnn", "--classes", "cats"], ["--classes needs at least two class names"]),
    (["--model", "cnn", "--classes", "cats,wolves"], ["class 'wolves' has no folder"]),
    (["--model", "cnn", "--keep", "best", "--validation", "0.9", "--test", "0.2"], ["validation + test"]),
])
def test_train_errors_are_one_line(cli, class_tree, tmp_path, args, fragments):
    result = cli("train", class_tree, *args, "--image-size", "32", "--output", tmp_path / "run", "-q")
    _one_line_error(*result, *fragments)
    assert not (tmp_path / "run" / "model.keras").exists()


def test_train_on_missing_data_is_one_line(cli, tmp_path):
    _one_line_error(*cli("train", tmp_path / "nowhere", "--model", "cnn", "-q"), "no such file or folder")


@requires_weights
@pytest.mark.integration
def test_demo_trains_the_transfer_model_when_its_weights_download(cli, tmp_path, monkeypatch):
    """``imgclf demo`` without a browser: the small ImageNet file is fetched (here: copied from
    ../shared, as a download would) and the transfer model is part of the study."""
    from imgclf.models import weights

    fetched = []

    def download(fname, origin, cache_dir, file_hash):
        fetched.append(fname)
        target = cache_dir / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MOBILENET_WEIGHTS, target)
        return str(target)

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # nothing cached
    monkeypatch.setattr(weights, "_download", download)
    code, out, err = cli("demo", "--data-dir", tmp_path / "synthetic", "-o", tmp_path / "demo", "--epochs", "1",
                         "--image-size", "32", "--models", "cnn,mobilenet_v2", "-q")
    assert code == 0, err
    assert len(fetched) == 1 and fetched[0].startswith("mobilenet_v2_weights")
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [m["status"] for m in res["models"].values()] == ["complete", "complete"]
    assert (tmp_path / "demo" / "runs" / "mobilenet_v2" / "model.keras").is_file()
    assert (tmp_path / "demo" / "report.html").is_file() and "mobilenet_v2" in out
