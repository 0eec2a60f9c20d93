"""TensorBoard and MLflow tracking, read back with each library's own reader."""

import builtins
import json
import os

import pytest

import imgclf
from imgclf import tracking
from imgclf.errors import ConfigError

pytestmark = pytest.mark.slow  # left out of the fast loop (pytest -m 'not slow')

# MLflow's usage reporting runs on a thread whose warnings.catch_warnings() would drop the
# warnings these tests look for (and there is no network to send it to)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


def _ds(path):
    from imgclf import io

    ds = imgclf.load_dataset(path, image_size=32, validation=0.25, test=0.25, progress=False)
    # the scan's threads enter warnings.catch_warnings(), which is not thread-safe: let them finish
    # before pytest.warns records
    io.wait_for()
    return ds


def _tiny_transfer(ds, out, **kw):
    return imgclf.train(ds, "mobilenet_v2", output=out, epochs=3, image_size=32, weights=None, alpha=0.35,
                        progress=False, **kw)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def _accumulators(folder):
    from tensorboard.backend.event_processing import event_accumulator

    out = {}
    for sub in ("train", "validation", "run"):
        acc = event_accumulator.EventAccumulator(str(folder / sub), size_guidance={"tensors": 0, "images": 0})
        acc.Reload()
        out[sub] = acc
    return out


def test_tensorboard_and_mlflow_record_a_run_trained_on_cached_features(class_tree, tmp_path, mlflow_store):
    import mlflow

    run = _tiny_transfer(_ds(class_tree), tmp_path / "run", track=["tensorboard", "mlflow"])
    # TensorBoard: per-epoch scalars of the head trained on cached features, epochs 0..2
    acc = _accumulators(run.path / "tensorboard")
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate"):
        assert [e.step for e in acc["train"].Tensors(tag)] == [0, 1, 2], tag
    assert [e.step for e in acc["validation"].Tensors("epoch_accuracy")] == [0, 1, 2]
    rates = [float(tb_value(e)) for e in acc["train"].Tensors("epoch_learning_rate")]
    assert rates == pytest.approx([1e-3] * 3)
    losses = [float(tb_value(e)) for e in acc["train"].Tensors("epoch_loss")]
    assert losses == pytest.approx(run.history()["loss"], rel=1e-5)
    tags = acc["run"].Tags()["tensors"]
    assert "config" in tags and "final/test_accuracy" in tags
    images = acc["run"].Tags()["tensors"]
    assert "history" in images and "confusion_matrix/validation" in images
    config_text = acc["run"].Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert '"model": "mobilenet_v2"' in config_text

    # MLflow: one run, params, a metric per epoch, the final metrics, artifacts and the model
    client = mlflow.tracking.MlflowClient(tracking_uri=mlflow_store)
    run_id = json.loads((run.path / "tracking.json").read_text())["mlflow_run_id"]
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params["model"] == "mobilenet_v2" and logged.data.params["epochs"] == "3"
    history = client.get_metric_history(run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [1, 2, 3]
    metrics = run.metrics()
    assert logged.data.metrics["final_test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.json", "history.csv", "config.json", "figures"} <= artifacts
    model = mlflow.keras.load_model(f"runs:/{run_id}/model")
    assert model.output_shape == (None, 2)


def tb_value(event):
    import numpy as np
    from tensorboard.util import tensor_util

    return np.asarray(tensor_util.make_ndarray(event.tensor_proto))


def test_a_study_is_a_parent_run_with_a_child_per_model(class_tree, tmp_path, mlflow_store):
    import mlflow

    from imgclf.report.study import study

    study(class_tree, models=["cnn", "cnn_aug"], output=tmp_path / "study", epochs=1, image_size=32,
          progress=False, validation=0.25, test=0.25, track=["mlflow"])
    client = mlflow.tracking.MlflowClient(tracking_uri=mlflow_store)
    parent_id = json.loads((tmp_path / "study" / "tracking.json").read_text())["mlflow_run_id"]
    exp = client.get_experiment_by_name("imgclf")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(c.data.tags["imgclf.model"] for c in children) == ["cnn", "cnn_aug"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert "report.html" in {a.path for a in client.list_artifacts(parent_id)}
    assert "cnn_aug/validation_accuracy" in parent.data.metrics


def test_an_unreachable_server_warns_and_the_run_finishes(class_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    ds = _ds(class_tree)
    with pytest.warns(tracking.TrackingWarning, match=r"MLflow at http://127.0.0.1:9 cannot be used"):
        run = imgclf.train(ds, "cnn", output=tmp_path / "run", epochs=1, image_size=32,
                           progress=False, track="mlflow")
    assert run.complete and run.metrics()["test"]["accuracy"] is not None


def test_a_tracker_failing_mid_run_warns_once_and_training_goes_on(class_tree, tmp_path, mlflow_store, monkeypatch):
    calls = []

    def broken(self, row):
        calls.append(row["epoch"])
        raise OSError("disk full")

    monkeypatch.setattr(tracking.MlflowTracker, "log_row", broken)
    ds = _ds(class_tree)
    with pytest.warns(tracking.TrackingWarning, match="disk full") as record:
        run = imgclf.train(ds, "cnn", output=tmp_path / "run", epochs=3, image_size=32,
                           progress=False, track="mlflow")
    assert run.complete and len(run.history()["epoch"]) == 3
    assert calls == [1] and len([w for w in record if w.category is tracking.TrackingWarning]) == 1


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch, cli, class_tree):
    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    monkeypatch.delitem(__import__("sys").modules, "mlflow", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'imgclf\[mlflow\]'"):
        tracking.check(["mlflow"])
    code, out, err = cli("train", class_tree, "--model", "cnn", "--image-size", "32", "--track", "mlflow", "-q")
    assert code == 2 and err.count("\n") == 1 and "imgclf[mlflow]" in err


def test_unknown_tracker_names_the_choices():
    with pytest.raises(ConfigError, match="choose from: tensorboard, mlflow"):
        tracking.check("wandb")
