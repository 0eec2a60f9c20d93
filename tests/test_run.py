"""The run folder: opening it, what config.json and history.csv give, metrics.json typed."""

from __future__ import annotations

import json
import shutil

import pytest

import imgclf
from imgclf.errors import RunError
from imgclf.metrics import Metrics
from imgclf.run import HISTORY_FIELDS, Run, read_history, resolve_run, write_history


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """The shared trained run's files without its model (nothing here needs the model)."""
    folder = tmp_path / "run"
    shutil.copytree(trained_run.path, folder,
                    ignore=shutil.ignore_patterns("checkpoints", "exports", "cache", "model.keras", "figures"))
    return folder


def _meta(folder):
    return json.loads((folder / "config.json").read_text())


def _write_meta(folder, meta):
    (folder / "config.json").write_text(json.dumps(meta))


def test_a_missing_folder(tmp_path):
    with pytest.raises(RunError, match="no run folder at .*nowhere"):
        imgclf.load(tmp_path / "nowhere")


def test_a_folder_without_config_json(tmp_path):
    with pytest.raises(RunError, match="is not an imgclf run folder \\(no config.json\\)"):
        imgclf.load(tmp_path)


def test_config_json_that_is_not_json(run_copy):
    (run_copy / "config.json").write_text("{\"format\": 1,")
    with pytest.raises(RunError, match="config.json is not valid JSON .*edited by hand"):
        imgclf.load(run_copy)


@pytest.mark.parametrize("found", [0, None, 99])
def test_config_json_of_another_format(run_copy, found):
    meta = _meta(run_copy)
    if found is None:
        del meta["format"]
    else:
        meta["format"] = found
    _write_meta(run_copy, meta)
    with pytest.raises(RunError, match=f"has format {found!r}, this imgclf .* reads format 1; train the run again"):
        imgclf.load(run_copy)


@pytest.mark.parametrize("key", ["train", "class_names", "image_size"])
def test_config_json_lacking_a_key(run_copy, key):
    meta = _meta(run_copy)
    del meta[key]
    _write_meta(run_copy, meta)
    with pytest.raises(RunError, match=f"lacks {key!r}"):
        imgclf.load(run_copy)


def test_no_model_yet(run_copy):
    with pytest.raises(RunError, match="has no model.keras yet; finish it with: imgclf train --resume"):
        imgclf.load(run_copy).model


def test_class_names_image_size_and_preprocessing(run_copy):
    run = imgclf.load(run_copy)
    assert run.class_names == ["cats", "dogs"]
    assert run.image_size == 32
    data = _meta(run_copy)["train"]["data"]
    assert run.preprocessing == {
        "image_size": [32, 32], "fit": data["fit"], "interpolation": data["interpolation"], "color": "RGB",
        "input_range": [0, 255], "input_dtype": "float32",
        "model_preprocessing": _meta(run_copy).get("model_preprocessing", ""),
    }
    assert run.complete is False  # config.json says complete, but model.keras is not here


def test_reload_reads_config_json_again(run_copy):
    run = imgclf.load(run_copy)
    meta = _meta(run_copy)
    meta["class_names"] = ["a", "b"]
    _write_meta(run_copy, meta)
    assert run.class_names == ["cats", "dogs"]  # read once, kept
    run.reload()
    assert run.class_names == ["a", "b"]


def test_resolve_run_takes_a_run_or_a_path(run_copy):
    run = imgclf.load(run_copy)
    assert resolve_run(run) is run
    opened = resolve_run(str(run_copy))
    assert isinstance(opened, Run) and opened.path == run_copy and opened.class_names == run.class_names


def test_history_round_trip(tmp_path):
    rows = [{"epoch": 1, "stage": "head", "loss": 0.9, "accuracy": 0.5, "val_loss": 0.8, "val_accuracy": 0.6,
             "learning_rate": 0.001, "seconds": 2.5},
            {"epoch": 2, "stage": "fine_tune", "loss": 0.7, "accuracy": 0.75, "val_loss": None,
             "val_accuracy": None, "learning_rate": 1e-4, "seconds": 3.0}]
    write_history(tmp_path / "history.csv", rows)
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == ",".join(HISTORY_FIELDS)
    assert read_history(tmp_path / "history.csv") == rows
    h = Run(tmp_path).history()
    assert h["epoch"] == [1, 2] and h["stage"] == ["head", "fine_tune"] and h["val_accuracy"] == [0.6, None]
    assert Run(tmp_path).fine_tune_epoch() == 2


def test_no_history_yet(tmp_path):
    assert read_history(tmp_path / "history.csv") == []
    assert Run(tmp_path).history() == {k: [] for k in HISTORY_FIELDS}
    assert Run(tmp_path).fine_tune_epoch() is None


def test_metrics_of_an_earlier_layout(tmp_path):
    old = {"validation": {"loss": 0.4, "accuracy": 0.8, "count": 5},
           "test": {"loss": 0.5, "accuracy": 0.6, "count": 5},
           "baseline": {"majority_class": "cats", "test_accuracy": 0.4}, "epochs": 3}
    (tmp_path / "metrics.json").write_text(json.dumps(old))
    run = Run(tmp_path)
    assert run.metrics() == old  # the file as it is
    m = run.metrics_record()
    assert isinstance(m, Metrics)
    assert m.test.accuracy == 0.6 and m.test.leak_free is None
    assert m.baseline.validation_accuracy is None and m.calibration is None
    assert m.kept_epoch == {} and m.evaluation == {}


def test_no_metrics_yet(tmp_path):
    assert Run(tmp_path).metrics() == {}
    assert Run(tmp_path).metrics_record().test is None
