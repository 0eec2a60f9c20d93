"""imgclf on every Keras backend: the loader, training, resume, evaluation, predictions, ONNX,
and what a user sees when a backend or a TensorFlow-only path is not there.

These run on whichever backend ``KERAS_BACKEND`` names (.ci/run runs them on TensorFlow, JAX
and PyTorch). The cross-backend check needs another interpreter with another backend:
``IMGCLF_OTHER_PYTHONS="tensorflow=/path/to/python,torch=/path/to/python"``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import imgclf
from imgclf import backend
from imgclf.data import loader
from imgclf.errors import BackendError, RunError

pytestmark = pytest.mark.backend_neutral

REPO_SRC = Path(__file__).resolve().parents[1] / "src"


def _cli(*args, env=None, python=None):
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_SRC), os.environ.get("PYTHONPATH")])),
               **(env or {})}
    return subprocess.run([python or sys.executable, "-m", "imgclf", *map(str, args)], capture_output=True, text=True,
                          env=environ, timeout=600)


def _ds(path):
    return imgclf.load_dataset(path, image_size=32, validation=0.25, test=0.25, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(dataset, run)``: one small CNN trained on this backend, shared by the tests that only read it."""
    from tests.imagefactory import make_class_tree

    root = tmp_path_factory.mktemp("backends")
    ds = _ds(make_class_tree(root / "data", {"cats": 16, "dogs": 16}, size=(32, 32)))
    run = imgclf.train(ds, "cnn_aug_pre", output=root / "run", epochs=2, image_size=32, progress=False,
                       calibrate=False)
    return ds, run


def _copy(run, tmp_path):
    """A copy of ``run``'s folder, for a test that changes it."""
    shutil.copytree(run.path, tmp_path / "run")
    return imgclf.load(tmp_path / "run")


def _test_images(ds):
    return np.asarray(ds.decoded(32)[ds.indices("test")], np.float32)


def _other_pythons() -> dict[str, str]:
    raw = os.environ.get("IMGCLF_OTHER_PYTHONS", "")
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {name.strip(): python.strip() for name, python in pairs if name.strip() != backend.name()}


# -- the loader ---------------------------------------------------------------------------------

def test_row_batches_shuffle_every_row_once_per_epoch_and_repeat_with_the_seed():
    rows = np.arange(10, 33)

    def gather(batch, epoch):
        return batch.copy(), batch.copy()

    def epochs(seed, n=3):
        data = loader.row_batches(rows, gather, batch_size=4, shuffle=True, seed=seed, workers=1)
        out = []
        for _ in range(n):
            out.append(np.concatenate([data[i][0] for i in range(len(data))]))
            data.on_epoch_end()
        return out

    first = epochs(7)
    for order in first:
        assert sorted(order.tolist()) == rows.tolist()  # every row, once
    assert not np.array_equal(first[0], first[1])  # a fresh order each epoch
    for a, b in zip(first, epochs(7)):
        np.testing.assert_array_equal(a, b)  # the same orders with the same seed
    assert not np.array_equal(first[0], epochs(8)[0])
    plain = loader.row_batches(rows, gather, batch_size=4, shuffle=False, workers=1)
    np.testing.assert_array_equal(np.concatenate([plain[i][0] for i in range(len(plain))]), rows)
    assert len(plain.take(2)) == 2 and len(plain) == 6


def test_feature_batches_draw_plain_or_augmented_views_with_matching_labels():
    n, d = 12, 3
    plain = np.repeat(np.arange(n, dtype=np.float32)[:, None], d, axis=1)
    augmented = plain[None] + 1000.0  # one augmented view, told apart by +1000
    labels = np.arange(n) % 2
    rows = np.arange(n)
    data = loader.feature_batches(plain, augmented, labels, rows, batch_size=5, shuffle=True, seed=3, one_hot=False,
                                  num_classes=2, aug_pos={r: r for r in range(n)})
    views = set()
    for _ in range(4):
        for i in range(len(data)):
            x, y = data[i]
            row = (x[:, 0] % 1000).astype(int)
            np.testing.assert_array_equal(y, labels[row])
            views.update((x[:, 0] >= 1000).tolist())
        data.on_epoch_end()
    assert views == {True, False}


def test_the_pipeline_of_this_backend_gives_the_cached_rows_and_labels(class_tree):
    ds = _ds(class_tree)
    data = ds.tf_dataset("test", batch_size=5, shuffle=False, image_size=32)
    xs, ys = [], []
    for x, y in (data.as_numpy_iterator() if backend.is_tensorflow() else (data[i] for i in range(len(data)))):
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    np.testing.assert_array_equal(np.concatenate(xs), np.asarray(ds.decoded(32))[ds.indices("test")])
    np.testing.assert_array_equal(np.concatenate(ys), ds.labels("test"))


# -- training, resume, evaluation -------------------------------------------------------------

def test_a_run_records_its_backend_and_evaluates_to_what_it_recorded(trained):
    ds, run = trained
    meta = json.loads(run.config_file.read_text())
    assert meta["keras_backend"].split(" ")[0] == backend.name()
    assert meta["keras_backend"].split(" ")[1] == backend.version()
    recorded = run.metrics()["test"]["accuracy"]
    again = imgclf.load(run.path).evaluate("test", progress=False)
    assert again["accuracy"] == pytest.approx(recorded)
    assert len(run.history()["epoch"]) == 2


def test_resume_after_the_last_epoch_saves_the_same_model(trained, tmp_path):
    ds, run = trained
    run = _copy(run, tmp_path)
    before = np.asarray(run.model.predict(_test_images(ds), verbose=0))
    run.model_file.unlink()  # killed after the last epoch, before the model was saved
    meta = json.loads(run.config_file.read_text())
    meta["complete"] = False
    run.config_file.write_text(json.dumps(meta))
    again = imgclf.resume(run.path, progress=False)
    assert again.history()["epoch"] == [1, 2]  # no epoch lost or done twice
    after = np.asarray(imgclf.load(again.path).model.predict(_test_images(ds), verbose=0))
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_predict_and_grad_cam_on_this_backend(trained):
    ds, run = trained
    from imgclf.explain import GradCAM

    images = _test_images(ds)
    probs = np.asarray(run.model.predict(images, verbose=0))
    cam = GradCAM(run.model)  # checks its layer-by-layer pass against the model
    heat, cam_probs = cam(images[:3])
    np.testing.assert_allclose(cam_probs, probs[:3], atol=1e-4)
    assert heat.shape == (3, 32, 32) and float(heat.min()) >= 0.0 and float(heat.max()) <= 1.0


# -- ONNX, and the exports this backend cannot write ---------------------------------------------

def test_onnx_export_predicts_what_the_keras_model_does(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    ds, run = trained
    from imgclf.inference.export import export, load_exported

    result = export(run, "onnx", output=tmp_path / "onnx")
    assert result.parity["passed"] and result.parity["count"] == len(ds.indices("test"))
    images = _test_images(ds)
    np.testing.assert_allclose(load_exported("onnx", result.path)(images),
                               run.model.predict(images, verbose=0), atol=1e-4)


def test_an_export_this_install_cannot_write_is_one_line_naming_what_to_do(trained, tmp_path):
    if backend.installed("tensorflow"):
        pytest.skip("with TensorFlow installed every format is written (the test below)")
    _copy(trained[1], tmp_path)
    done = _cli("export", tmp_path / "run", "--format", "savedmodel")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "savedmodel" in lines[0] and "KERAS_BACKEND=tensorflow" in lines[0]


def test_a_tensorflow_format_is_written_from_this_backend_when_tensorflow_is_installed(trained, tmp_path):
    if backend.is_tensorflow() or not backend.installed("tensorflow"):
        pytest.skip("needs another backend with TensorFlow installed beside it")
    from imgclf.inference.export import export, load_exported

    ds, run = trained
    run = _copy(run, tmp_path)
    images = _test_images(ds)
    for fmt in ("savedmodel", "tflite"):
        result = export(run, fmt)  # on the TensorFlow backend, from the same run folder
        assert result.parity["passed"] and result.parity["count"] == len(ds.indices("test"))
        assert json.loads(result.metadata_file.read_text())["class_names"] == run.class_names
        np.testing.assert_allclose(load_exported(fmt, result.path)(images), run.model.predict(images, verbose=0),
                                   atol=1e-4)


# -- across backends -------------------------------------------------------------------------

def test_a_model_trained_here_predicts_the_same_on_every_other_backend(trained, tmp_path):
    others = _other_pythons()
    if not others:
        pytest.skip("IMGCLF_OTHER_PYTHONS names no interpreter with another backend")
    ds, run = trained
    images = _test_images(ds)
    np.save(tmp_path / "x.npy", images)
    here = np.asarray(run.model.predict(images, verbose=0))
    script = ("import sys, numpy as np, imgclf; run = imgclf.load(sys.argv[1]); "
              "np.save(sys.argv[3], run.model.predict(np.load(sys.argv[2]), verbose=0))")
    for name, python in others.items():
        out = tmp_path / f"{name}.npy"
        done = subprocess.run([python, "-c", script, run.path, tmp_path / "x.npy", out], capture_output=True,
                              text=True, timeout=600, env={**os.environ, "KERAS_BACKEND": name,
                                                           "PYTHONPATH": str(REPO_SRC)})
        assert done.returncode == 0, done.stderr[-2000:]
        np.testing.assert_allclose(np.load(out), here, atol=1e-4, err_msg=f"trained on {backend.name()}, on {name}")


def test_a_run_that_does_not_load_says_which_backend_trained_it(trained, tmp_path):
    run = _copy(trained[1], tmp_path)
    other = "torch" if backend.name() != "torch" else "jax"
    meta = json.loads(run.config_file.read_text())
    meta["keras_backend"] = f"{other} 9.9"
    run.config_file.write_text(json.dumps(meta))
    run.model_file.write_bytes(b"not a model")
    with pytest.raises(RunError, match=f"trained on {other} 9.9, loaded on {backend.name()}"):
        imgclf.load(run.path).model


# -- the command line ----------------------------------------------------------------------------

def test_version_names_the_backend_and_its_version():
    done = _cli("--version")
    assert done.returncode == 0
    assert f"backend {backend.name()} {backend.version()}" in done.stdout


@pytest.mark.parametrize("value", ["nonsense", "missing"])
def test_a_backend_that_is_not_there_is_one_line_exit_2_naming_what_to_install(class_tree, value):
    if value == "missing":
        absent = [b for b in backend.BACKENDS if not backend.installed(b)]
        if not absent:
            pytest.skip("every backend is installed here")
        value = absent[0]
    done = _cli("train", class_tree, "--epochs", "1", env={"KERAS_BACKEND": value})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    if value == "nonsense":
        assert "'nonsense'" in lines[0] and "tensorflow, jax, torch" in lines[0]
    else:
        assert f"pip install 'imgclf[{value}]'" in lines[0]


def test_tensorflow_only_paths_name_what_to_install_when_tensorflow_is_absent(monkeypatch):
    monkeypatch.setattr(backend, "has_tensorflow", lambda: False)
    with pytest.raises(BackendError, match=r"--track tensorboard needs TensorFlow.*pip install 'imgclf\[tensorflow\]'"):
        backend.require_tensorflow("--track tensorboard")
    if not backend.is_tensorflow():
        from imgclf.training.distribute import choose

        with pytest.raises(BackendError, match="multi-worker.*KERAS_BACKEND=tensorflow"):
            choose("multi-worker")


# -- scale -----------------------------------------------------------------------------------------

def test_jax_splits_batches_over_its_devices_and_the_run_evaluates_to_what_it_recorded(class_tree, tmp_path):
    if backend.name() != "jax":
        pytest.skip("keras.distribution.DataParallel: the JAX backend")
    script = """
import sys, imgclf
from imgclf.training.distribute import choose
d = choose("auto")
ds = imgclf.load_dataset(sys.argv[1], image_size=32, validation=0.25, test=0.25, progress=False)
run = imgclf.train(ds, "cnn", output=sys.argv[2], epochs=2, image_size=32, progress=False, calibrate=False, batch_size=4)
print(d.name, d.replicas, run.metrics()["test"]["accuracy"], imgclf.load(run.path).evaluate("test", progress=False)["accuracy"])
"""
    done = subprocess.run([sys.executable, "-c", script, class_tree, tmp_path / "run"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(REPO_SRC),
                                            "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert done.returncode == 0, done.stderr[-2000:]
    name, replicas, recorded, again = done.stdout.split()[-4:]
    assert (name, replicas) == ("mirrored", "2")
    assert float(again) == pytest.approx(float(recorded))
