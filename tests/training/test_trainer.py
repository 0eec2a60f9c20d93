import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import matplotlib.text
import numpy as np
import pytest

import imgclf
from imgclf.cli import print_metrics
from imgclf.errors import ConfigError, DataError, RunError
from tests.conftest import MOBILENET_WEIGHTS, requires_weights, run_cli_subprocess

# the JAX and PyTorch passes of .ci/run: one test of each stage, precision, seeding and resume
# (with tests/test_backends.py, the files .ci/run names for them)
on_every_backend = pytest.mark.backend_neutral


def _ds(path, size=32, **kw):
    return imgclf.load_dataset(path, image_size=size, validation=0.25, test=0.25, progress=False, **kw)


@on_every_backend
def test_train_writes_the_run_folder(class_tree, tmp_path):
    ds = _ds(class_tree)
    run = imgclf.train(ds, "cnn_aug_pre", output=tmp_path / "run", epochs=2, image_size=32, progress=False)
    for name in ("config.json", "class_names.json", "model.keras", "history.csv", "metrics.json",
                 "splits/train.txt", "splits/validation.txt", "splits/test.txt", "figures/history.png"):
        assert (run.path / name).is_file(), name
    assert json.loads((run.path / "class_names.json").read_text()) == ["cats", "dogs"]
    h = run.history()
    assert h["epoch"] == [1, 2] and h["stage"] == ["train", "train"]
    m = run.metrics()
    assert m["test"]["count"] == len(ds.splits["test"])
    assert m["parameters"]["trainable"] > 0
    # the config is fully resolved and reloads
    assert run.config.image_size == 32 and run.config.data.root == str(ds.root)
    assert imgclf.load(run.path).complete


def test_split_lists_are_disjoint_and_reused(class_tree, tmp_path):
    ds = _ds(class_tree)
    run = imgclf.train(ds, "cnn", output=tmp_path / "run", epochs=1, image_size=32, progress=False)
    lists = {s: set((run.splits_dir / f"{s}.txt").read_text().splitlines()) for s in ("train", "validation", "test")}
    assert not (lists["train"] & lists["test"]) and not (lists["train"] & lists["validation"])
    again = run.dataset(progress=False)
    assert [r.path for r in again.splits["test"]] == [r.path for r in ds.splits["test"]]


@on_every_backend
@pytest.mark.slow
def test_seeded_runs_repeat(class_tree, tmp_path):
    ds = _ds(class_tree)
    a = imgclf.train(ds, "cnn_aug_pre", output=tmp_path / "a", epochs=2, image_size=32, progress=False,
                     deterministic=True, seed=3)
    b = imgclf.train(ds, "cnn_aug_pre", output=tmp_path / "b", epochs=2, image_size=32, progress=False,
                     deterministic=True, seed=3)
    np.testing.assert_allclose(a.history()["loss"], b.history()["loss"], rtol=1e-5)


@on_every_backend
@pytest.mark.slow
def test_transfer_head_then_fine_tune(class_tree, tmp_path):
    ds = _ds(class_tree)
    run = imgclf.train(ds, "mobilenet_v2", output=tmp_path / "run", epochs=2, fine_tune=10, fine_tune_epochs=1,
                       image_size=32, weights=None, progress=False, views=2)
    h = run.history()
    assert h["epoch"] == [1, 2, 3]
    assert h["stage"] == ["head", "head", "fine_tune"]
    assert h["learning_rate"][2] == pytest.approx(h["learning_rate"][0] * run.config.fine_tune_lr_factor)
    assert run.fine_tune_epoch() == 3
    # the cached features were used for the head and the saved model is end to end
    assert list(run.cache_dir.glob("features-*.npy"))
    model = run.model
    assert model.input_shape == (None, 32, 32, 3)
    probs = model.predict(np.zeros((1, 32, 32, 3), np.float32), verbose=0)
    assert probs.shape == (1, 2) and abs(probs.sum() - 1) < 1e-5


@pytest.mark.slow
def test_fine_tuning_is_recorded_against_the_head_stage(class_tree, tmp_path):
    ds = _ds(class_tree)
    run = imgclf.train(ds, "mobilenet_v2", output=tmp_path / "run", epochs=2, fine_tune=10, fine_tune_epochs=1,
                       image_size=32, weights=None, progress=False)
    m = run.metrics()
    val, test = m["fine_tune"]["validation_accuracy"], m["fine_tune"]["test_accuracy"]
    assert m["fine_tune"]["kept"] == (val["fine_tuned"] >= val["head"])
    chosen = "fine_tuned" if m["fine_tune"]["kept"] else "head"
    # the saved model is the one chosen, on both splits
    assert m["validation"]["accuracy"] == pytest.approx(val[chosen], abs=1e-6)
    assert m["test"]["accuracy"] == pytest.approx(test[chosen], abs=1e-6)


@requires_weights
@pytest.mark.integration
def test_fine_tuning_that_lowers_validation_accuracy_is_undone(class_tree, tmp_path, capsys):
    """A fine-tune that wrecks the model (every layer at a huge learning rate) is not kept:
    the saved model is the head stage's, and the run says so."""
    ds = _ds(class_tree, size=64)
    run = imgclf.train(ds, "mobilenet_v2", output=tmp_path / "run", epochs=4, fine_tune=1000, fine_tune_epochs=2,
                       fine_tune_lr_factor=1.0, learning_rate=0.05, image_size=64, weights=str(MOBILENET_WEIGHTS),
                       progress=False, keep="last")  # the verdict on the stages' last epochs
    h, m = run.history(), run.metrics()
    assert h["stage"][-1] == "fine_tune" and h["val_accuracy"][-1] < h["val_accuracy"][3]
    assert m["fine_tune"]["kept"] is False
    images = np.asarray(ds.images("validation"), np.float32)
    head_stage = keras.models.load_model(run.checkpoints_dir / "head.keras")
    np.testing.assert_allclose(imgclf.load(run.path).model.predict(images, verbose=0),
                               head_stage.predict(images, verbose=0), atol=1e-5)
    assert m["validation"]["accuracy"] == pytest.approx(h["val_accuracy"][3])
    print_metrics(run)
    assert "the model keeps the head stage's weights" in capsys.readouterr().out
    legend = [t.get_text() for t in run.plot_history().findobj(matplotlib.text.Text)]
    assert "fine-tuning from epoch 5 (not kept: the model is the head stage's)" in legend


def test_evaluate_writes_metrics_and_figures(class_tree, tmp_path):
    ds = _ds(class_tree)
    run = imgclf.train(ds, "cnn_aug_pre", output=tmp_path / "run", epochs=2, image_size=32, progress=False)
    result = run.evaluate("test", progress=False)
    n = len(ds.splits["test"])
    cm = np.array(result["confusion_matrix"])
    assert cm.sum() == n and cm.shape == (2, 2)
    assert result["accuracy"] == pytest.approx(np.trace(cm) / n)
    assert set(result["per_class"]) == {"cats", "dogs"}
    assert result["baseline_accuracy"] == pytest.approx(0.5)
    assert (run.figures_dir / "confusion_matrix_test.png").is_file()
    assert imgclf.load(run.path).metrics()["evaluation"]["test"]["count"] == n


def test_run_already_exists_is_refused(class_tree, tmp_path):
    ds = _ds(class_tree)
    imgclf.train(ds, "cnn", output=tmp_path / "run", epochs=1, image_size=32, progress=False)
    with pytest.raises(RunError, match="already exists"):
        imgclf.train(ds, "cnn", output=tmp_path / "run", epochs=1, image_size=32, progress=False)


def test_bad_options_are_one_line_errors(class_tree, tmp_path):
    ds = _ds(class_tree)
    with pytest.raises(ConfigError, match="choose one of: cnn"):
        imgclf.train(ds, "resnet9000", output=tmp_path / "r1")
    with pytest.raises(ConfigError, match="epochs"):
        imgclf.train(ds, "cnn", output=tmp_path / "r2", epochs=0)
    with pytest.raises(ConfigError, match="optimizer"):
        imgclf.train(ds, "cnn", output=tmp_path / "r3", optimizer="nadam2")


def test_hand_edited_or_foreign_run_folder(class_tree, tmp_path, cli):
    ds = _ds(class_tree)
    run = imgclf.train(ds, "cnn", output=tmp_path / "run", epochs=1, image_size=32, progress=False)
    meta = json.loads(run.config_file.read_text())
    meta["train"]["colour"] = "blue"
    run.config_file.write_text(json.dumps(meta))
    code, out, err = cli("evaluate", run.path)
    assert code == 2 and "unknown option 'colour'" in err and "Traceback" not in err
    meta["train"].pop("colour")
    meta["format"] = 99
    run.config_file.write_text(json.dumps(meta))
    code, out, err = cli("evaluate", run.path)
    assert code == 2 and "format 99" in err
    code, out, err = cli("evaluate", tmp_path / "nowhere")
    assert code == 2 and "no run folder" in err


# The child trains through the command line and stops itself at a point the test names (just
# after it wrote a checkpoint's temporary file, before renaming it), so the kill lands there
# however fast the machine is.
_PAUSED_CHILD = """
import contextlib, pathlib, sys, time
from imgclf import io
real = io.atomic_path
@contextlib.contextmanager
def paused(path, *a, **k):
    with real(path, *a, **k) as tmp:
        yield tmp
        if pathlib.Path(path).name == sys.argv[2]:
            pathlib.Path(sys.argv[1]).write_text(str(tmp))
            time.sleep(600)
io.atomic_path = paused
from imgclf.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _train_killed_while_saving(tmp_path, checkpoint: str, *args) -> None:
    marker = tmp_path / "paused"
    proc = subprocess.Popen([sys.executable, "-c", _PAUSED_CHILD, marker, checkpoint, *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    try:
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"training ended before it saved {checkpoint}: {proc.stderr.read()[-2000:]}")
            if time.time() > deadline:
                pytest.fail(f"training never reached {checkpoint}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert Path(marker.read_text()).exists()  # the half-written checkpoint it leaves


@pytest.mark.integration
def test_resume_after_kill_has_no_lost_or_doubled_epochs(tmp_path):
    from tests.imagefactory import make_class_tree

    data = make_class_tree(tmp_path / "data", {"a": 24, "b": 24}, size=(32, 32))
    run_dir = tmp_path / "run"
    _train_killed_while_saving(tmp_path, "epoch-0003.keras", "train", data, "--model", "cnn_aug", "--epochs", "5",
                               "--image-size", "32", "--batch-size", "4", "--output", run_dir, "-q")
    state = run_dir / "checkpoints" / "state.json"
    assert json.loads(state.read_text())["epoch"] == 2
    assert not (run_dir / "model.keras").exists()
    best_before = json.loads(state.read_text())["best"]["train"]
    assert (run_dir / "checkpoints" / best_before["checkpoint"]).is_file()  # the best so far survives the kill
    done = run_cli_subprocess("train", "--resume", run_dir, "-q")
    assert done.returncode == 0, done.stderr
    run = imgclf.load(run_dir)
    h = run.history()
    assert h["epoch"] == list(range(1, 6))
    assert run.complete
    # the kept epoch is the best of all five, the two before the kill included
    best = max(range(5), key=lambda i: (h["val_accuracy"][i], -h["val_loss"][i]))
    assert run.metrics()["kept_epoch"] == {"train": h["epoch"][best]}
    # nothing half-written is left behind
    assert not [p for p in run_dir.rglob(".*") if p.is_file()]


@pytest.mark.integration
def test_a_fine_tune_killed_midway_resumes_against_the_head_stage(tmp_path):
    from tests.imagefactory import make_class_tree

    data = make_class_tree(tmp_path / "data", {"a": 24, "b": 24}, size=(48, 48))
    run_dir = tmp_path / "run"
    # killed while saving the second fine-tuning epoch
    _train_killed_while_saving(tmp_path, "epoch-0004.keras", "train", data, "--model", "mobilenet_v2", "--weights",
                               "none", "--epochs", "2", "--fine-tune", "20", "--fine-tune-epochs", "3",
                               "--image-size", "48", "--batch-size", "4", "--output", run_dir, "-q")
    state = run_dir / "checkpoints" / "state.json"
    head_stage = (run_dir / "checkpoints" / "head.keras").read_bytes()
    assert json.loads(state.read_text())["epoch"] == 3 and not (run_dir / "model.keras").exists()
    done = run_cli_subprocess("train", "--resume", run_dir, "-q")
    assert done.returncode == 0, done.stderr
    run = imgclf.load(run_dir)
    assert run.history()["epoch"] == list(range(1, 6))
    # the head stage's model was kept as it was, and the verdict was made against it
    assert (run_dir / "checkpoints" / "head.keras").read_bytes() == head_stage
    assert set(run.metrics()["fine_tune"]) == {"kept", "validation_accuracy", "test_accuracy"}
    assert set(run.metrics()["kept_epoch"]) == {"head", "fine_tune"}


@on_every_backend
@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_float32_probabilities(class_tree, tmp_path, precision):
    import keras

    ds = _ds(class_tree)
    run = imgclf.train(ds, "cnn_aug_pre", output=tmp_path / "run", epochs=1, image_size=32, progress=False,
                       precision=precision, jit=True)
    assert keras.mixed_precision.global_policy().name == "float32"  # the caller's policy is left as it was
    assert run.config.precision == precision and run.config.jit
    assert np.isfinite(run.history()["loss"][0])
    # the saved model computes in float32, whatever the training precision
    assert {layer.dtype_policy.name for layer in run.model._flatten_layers(include_self=False)} == {"float32"}
    fresh = imgclf.build_model("cnn_aug_pre", 2, 32).model
    fresh.set_weights(run.model.get_weights())
    x = ds.images("test").astype(np.float32)
    np.testing.assert_allclose(run.model.predict(x, verbose=0), fresh.predict(x, verbose=0), atol=1e-6)
    probs = run.model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


def test_auto_precision(monkeypatch):
    from imgclf.models import get_spec
    from imgclf.training import trainer

    import tensorflow as tf

    monkeypatch.setattr(trainer, "cpu_has_bfloat16", lambda: True)
    # device-specific: bfloat16 is the choice for a CPU only; with a GPU visible auto stays float32
    on_cpu = not tf.config.list_physical_devices("GPU")
    assert trainer.resolve_precision("auto", get_spec("cnn")) == ("mixed_bfloat16" if on_cpu else "float32")
    assert trainer.resolve_precision("auto", get_spec("mobilenet_v2")) == "float32"  # features stay exact
    assert trainer.resolve_precision("float32", get_spec("cnn")) == "float32"
    monkeypatch.setattr(trainer, "cpu_has_bfloat16", lambda: False)
    assert trainer.resolve_precision("auto", get_spec("cnn")) == "float32"
    assert trainer.resolve_precision("mixed_float16", get_spec("cnn")) == "mixed_float16"


@pytest.mark.slow
def test_mixed_transfer_model_is_saved_in_float32(class_tree, tmp_path):
    import keras

    ds = _ds(class_tree)
    run = imgclf.train(ds, "mobilenet_v2", output=tmp_path / "run", epochs=1, image_size=32, progress=False,
                       weights=None, precision="mixed_bfloat16")  # features in bfloat16, model saved in float32
    model = run.model
    assert run.complete and "feature_parity_max_abs_diff" not in run.metrics()  # scored end to end
    assert {layer.dtype_policy.name for layer in model._flatten_layers(include_self=False)} == {"float32"}
    # the same weights as a model built in float32 from scratch: nothing left of bfloat16
    fresh = imgclf.build_model("mobilenet_v2", 2, 32, weights=None).model
    fresh.set_weights(model.get_weights())
    x = ds.images("test").astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), fresh.predict(x, verbose=0), atol=1e-6)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_overwrite_starts_afresh(class_tree, tmp_path):
    ds = _ds(class_tree)
    imgclf.train(ds, "cnn", output=tmp_path / "run", epochs=2, image_size=32, progress=False)
    run = imgclf.train(ds, "cnn", output=tmp_path / "run", epochs=1, image_size=32, progress=False, overwrite=True,
                       learning_rate=1e-4)
    assert run.history()["epoch"] == [1]
    assert run.history()["learning_rate"][0] == pytest.approx(1e-4)


def test_a_run_reads_its_own_classes_of_data_that_changed(class_tree, tmp_path):
    ds = _ds(class_tree)
    run = imgclf.train(ds, "cnn", output=tmp_path / "run", epochs=1, image_size=32, progress=False)
    extra = class_tree / "birds"
    extra.mkdir()
    for f in list((class_tree / "cats").iterdir())[:3]:
        (extra / f.name).write_bytes(f.read_bytes())
    # a class folder added since is not the run's: left alone
    assert run.evaluate("test", progress=False)["count"] == len(ds.splits["test"])
    (class_tree / "dogs").rename(class_tree / "wolves")
    with pytest.raises(DataError, match="class 'dogs' has no folder"):
        run.evaluate("test", progress=False)


def test_each_stage_keeps_its_best_validation_epoch(class_tree, tmp_path, monkeypatch):
    from imgclf.training import keep

    ds = _ds(class_tree)
    # whatever the scores, let epoch 2 of 4 be the best one
    monkeypatch.setattr(keep, "better", lambda row, best: row["epoch"] == 2)
    run = imgclf.train(ds, "cnn", output=tmp_path / "best", epochs=4, image_size=32, progress=False,
                       precision="float32")
    m, state = run.metrics(), json.loads((run.checkpoints_dir / "state.json").read_text())
    assert m["keep"] == "best" and m["kept_epoch"] == {"train": 2}
    assert state["best"]["train"]["epoch"] == 2
    best = keras.models.load_model(run.checkpoints_dir / state["best"]["train"]["checkpoint"])
    last = keras.models.load_model(run.checkpoints_dir / state["checkpoint"])
    saved = imgclf.load(run.path).model
    for a, b in zip(saved.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)  # the saved model is epoch 2's ...
    assert any(not np.array_equal(a, b) for a, b in zip(saved.get_weights(), last.get_weights()))  # ... not epoch 4's
    run = imgclf.train(ds, "cnn", output=tmp_path / "last", epochs=4, image_size=32, progress=False,
                       precision="float32", keep="last")
    assert run.metrics()["kept_epoch"] == {"train": 4} and not list(run.checkpoints_dir.glob("best-*"))
    with pytest.raises(ConfigError, match="keep must be one of: best, last"):
        imgclf.train(ds, "cnn", output=tmp_path / "x", epochs=1, keep="first")


def test_training_on_a_folder_with_bad_files(class_tree, tmp_path, cli):
    from tests.imagefactory import write_broken, write_image

    write_broken(class_tree / "cats" / "cut.jpg", "truncated_jpeg")
    write_broken(class_tree / "dogs" / "notes.jpg", "text_as_jpg")
    write_broken(class_tree / "dogs" / "empty.png", "zero_bytes")
    write_image(class_tree / "dogs" / "really_png.jpg", "png_as_jpg", size=(32, 32))
    (class_tree / "cats" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    code, out, err = cli("train", class_tree, "--model", "cnn", "--epochs", "1", "--image-size", "32",
                         "--validation", "0.25", "--test", "0.25", "--output", tmp_path / "run", "-q")
    assert code == 0, err
    run = imgclf.load(tmp_path / "run")
    assert run.complete and run.history()["epoch"] == [1]  # the run completes
    problems = json.loads((run.path / "data_problems.json").read_text())  # the run folder lists them
    assert {b["path"]: b["reason"] for b in problems["bad"]} == {
        "cats/cut.jpg": "truncated", "dogs/notes.jpg": "not_image", "dogs/empty.png": "zero_bytes"}
    assert problems["used_with_warning"] == [{"path": "dogs/really_png.jpg",
                                              "warning": "named .jpg but holds PNG; used as PNG"}]
    assert problems["ignored"] == 1
    listed = "".join((run.splits_dir / f"{s}.txt").read_text() for s in ("train", "validation", "test"))
    assert "really_png.jpg" in listed  # used
    assert not any(name in listed for name in ("cut.jpg", "notes.jpg", "empty.png", "Thumbs.db"))  # left out
    assert sum(run.metrics()[s]["count"] for s in ("validation", "test")) + len(
        (run.splits_dir / "train.txt").read_text().splitlines()) == 33


def _calibration_run(tmp_path, **kw):
    from tests.imagefactory import make_class_tree

    data = make_class_tree(tmp_path / "cal-data", {"cats": 40, "dogs": 40}, size=(32, 32))
    ds = imgclf.load_dataset(data, image_size=32, validation=0.4, test=0.2, progress=False)
    kw.setdefault("keep", "last")  # the last checkpoint is then the model that was calibrated
    return ds, imgclf.train(ds, "cnn_aug_pre", output=tmp_path / "cal-run", epochs=2, image_size=32,
                            precision="float32", progress=False, **kw)


def _plain(run, split, ds):
    return np.asarray(run.model.predict(np.asarray(ds.decoded(32)[ds.indices(split)], np.float32), verbose=0))


@on_every_backend
@pytest.mark.slow
def test_the_saved_model_carries_the_temperature_and_resume_does_not_apply_it_twice(tmp_path, capsys):
    from imgclf import calibration

    ds, run = _calibration_run(tmp_path)
    cal = run.metrics()["calibration"]
    assert cal["fitted_on"] == "validation" and cal["bins"] == 15 and cal["validation"]["before"]["count"] == 32
    for split in ("validation", "test"):
        for when in ("before", "after"):
            assert {"ece", "nll", "accuracy"} <= set(cal[split][when])
        assert cal[split]["after"]["accuracy"] == cal[split]["before"]["accuracy"]
    assert (run.path / "figures" / "reliability.png").is_file()
    calibrated = _plain(run, "test", ds)
    # the last checkpoint is the model before calibration: model.keras is it, tempered
    raw = keras.models.load_model(next(run.checkpoints_dir.glob("epoch-*.keras")), compile=False)
    uncalibrated = np.asarray(raw.predict(np.asarray(ds.decoded(32)[ds.indices("test")], np.float32), verbose=0))
    expected = calibration.scale(uncalibrated, cal["temperature"]) if cal["applied"] else uncalibrated
    np.testing.assert_allclose(calibrated, expected, atol=1e-4)
    assert run.metrics()["test"]["loss"] == pytest.approx(cal["test"]["after" if cal["applied"] else "before"]["nll"],
                                                          abs=1e-4)
    print_metrics(run)
    assert "calibration: " in capsys.readouterr().out
    # killed after the last epoch, before the model was saved: resume calibrates once, the same way
    run.model_file.unlink()
    meta = json.loads(run.config_file.read_text())
    meta["complete"] = False
    run.config_file.write_text(json.dumps(meta))
    again = imgclf.resume(run.path, progress=False)
    assert again.metrics()["calibration"]["temperature"] == pytest.approx(cal["temperature"], rel=1e-6)
    np.testing.assert_allclose(_plain(imgclf.load(again.path), "test", ds), calibrated, atol=1e-5)


def test_no_calibrate_leaves_the_model_as_trained(tmp_path, cli):
    ds, run = _calibration_run(tmp_path, calibrate=False)
    assert "calibration" not in run.metrics() and run.config.calibrate is False
    assert not (run.path / "figures" / "reliability.png").exists()


def test_weight_decay_reaches_the_optimizer_and_none_keeps_its_default():
    from imgclf.config import TrainConfig
    from imgclf.training.trainer import _optimizer

    assert _optimizer(TrainConfig(optimizer="adam", weight_decay=0.01), 1e-3).weight_decay == pytest.approx(0.01)
    assert _optimizer(TrainConfig(optimizer="adamw"), 1e-3).weight_decay == pytest.approx(0.004)  # Keras' default
    with pytest.raises(ConfigError, match="weight decay must be a number in"):
        TrainConfig(weight_decay=2.0).validate()
