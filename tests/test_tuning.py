"""``imgclf tune``: the search space, the search on cached features, resuming, the final run."""

import csv
import json

import pytest

import imgclf
import imgclf.training
from imgclf import tuning
from imgclf.errors import ConfigError

pytest.importorskip("optuna")


@pytest.mark.parametrize("space, message", [
    ({"lr": {"low": 1e-4, "high": 1e-2}}, r"unknown parameter 'lr'; tunable: learning_rate, dropout"),
    ({"learning_rate": {"low": 1e-2, "high": 1e-4}}, "low must be below high"),
    ({"weight_decay": {"low": 0.0, "high": 0.1, "log": True}}, "log-scale range needs low > 0"),
    ({"dropout": {"low": 0.1, "high": 1.5}}, r"dropout: 1.5 is outside \[0, 1\)"),
    ({"optimizer": {"choices": ["adam", "lamb"]}}, "unknown choice 'lamb'; choose from: adam, adamw, sgd, rmsprop"),
    ({"optimizer": {"low": 0, "high": 1}}, "takes choices"),
    ({"hidden_units": {"low": 0.5, "high": 64}}, "0.5 is not a whole number"),
    ({"epochs": {"low": 5}}, "needs both low and high"),
    ({"epochs": [5, 10]}, "choices"),
    ({"dropout": {"min": 0, "max": 0.5}}, "unknown key 'max'"),
    ({"learning_rate": "fast"}, "'fast' is not a number"),
    (["learning_rate"], "must be a mapping"),
])
def test_a_bad_space_is_one_line_naming_the_parameter(space, message):
    with pytest.raises(ConfigError, match=message) as e:
        tuning.check_space(space)
    assert "\n" not in str(e.value)


def test_a_space_file_overrides_the_defaults_per_parameter(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("learning_rate: {low: 0.0005, high: 0.005, log: true}\noptimizer: adam\n")
    space = tuning.load_space(f)
    assert space["learning_rate"] == {"low": 5e-4, "high": 5e-3, "log": True}
    assert space["optimizer"] == "adam"  # fixed
    assert space["dropout"] == {"low": 0.0, "high": 0.6, "log": False}  # the default kept
    j = tmp_path / "space.json"
    j.write_text('{"epochs": {"low": 3, "high": 8}}')
    assert tuning.load_space(j)["epochs"] == {"low": 3, "high": 8, "log": False}
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: {low: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML"):
        tuning.load_space(bad)


def test_cli_rejects_a_bad_space_file_before_reading_the_data(cli, tmp_path):
    f = tmp_path / "space.json"
    f.write_text('{"learning_rate": {"low": 0.1, "high": 0.01}}')
    code, out, err = cli("tune", tmp_path / "no-such-data", "--model", "mobilenet_v2", "--space", f)
    assert code == 2 and err.count("\n") == 1
    assert "space.json: learning_rate: low must be below high" in err


def _ds(path):
    return imgclf.load_dataset(path, image_size=32, validation=0.25, test=0.25, progress=False)


TINY = dict(image_size=32, weights=None, alpha=0.35, space={"epochs": {"low": 2, "high": 4}})


@pytest.mark.slow
def test_tune_searches_on_validation_resumes_and_trains_the_best(class_tree, tmp_path, monkeypatch):
    ds = _ds(class_tree)
    out = tmp_path / "run"
    seen = []  # the splits whose labels are read while searching
    searching = [True]
    original = type(ds).labels

    def spy(self, split):
        if searching[0]:
            seen.append(split)
        return original(self, split)
    monkeypatch.setattr(type(ds), "labels", spy)
    real_train = imgclf.training.train

    def final_run(*args, **kwargs):
        searching[0] = False
        return real_train(*args, **kwargs)
    monkeypatch.setattr(imgclf.training, "train", final_run)

    # the second trial is interrupted (Ctrl-C)
    real_fit, calls = tuning._Search._fit, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(self, *args, **kwargs)
    monkeypatch.setattr(tuning._Search, "_fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tuning.tune(ds, "mobilenet_v2", trials=3, output=out, progress=False, **TINY)
    rows = list(csv.DictReader(open(out / "tune" / "trials.csv")))
    assert [r["state"] for r in rows] == ["complete", "fail"]
    assert not (out / "config.json").exists()

    lines = []
    result = tuning.tune(ds, "mobilenet_v2", trials=3, output=out, progress=False, echo=lines.append, **TINY)
    assert any("carrying on the search" in line and "1 of 3" in line for line in lines)
    rows = list(csv.DictReader(open(out / "tune" / "trials.csv")))
    assert [r["state"] for r in rows] == ["complete", "fail", "complete", "complete"]
    assert rows[0]["defaults"] == "1" and rows[0]["learning_rate"] == "0.001" and rows[0]["dropout"] == "0.2"
    assert seen and "test" not in seen  # no trial reads the test split's labels

    search = result.search
    best = max((r for r in rows if r["val_accuracy"]), key=lambda r: float(r["val_accuracy"]))
    assert search["best_validation_accuracy"] == pytest.approx(float(best["val_accuracy"]))
    assert search["best_validation_accuracy"] >= search["default_validation_accuracy"]
    run = result.run
    assert run.complete and (out / "tune" / "tune.png").is_file() and (out / "tune" / "optuna.db").is_file()
    meta = json.loads((out / "config.json").read_text())
    assert meta["tune"]["best_trial"] == search["best_trial"] and meta["tune"]["scored_on"] == "validation"
    cfg = run.config
    for name, value in search["best_params"].items():
        assert getattr(cfg, name) == pytest.approx(value), name
    # the same command again: the run is there, nothing is trained twice
    again = tuning.tune(ds, "mobilenet_v2", trials=3, output=out, progress=False, echo=lines.append, **TINY)
    assert again.run.path == out and "already tuned" in lines[-1]


@pytest.mark.slow
def test_a_model_without_a_frozen_backbone_says_the_cost_of_a_trial(class_tree, tmp_path):
    lines = []
    result = tuning.tune(_ds(class_tree), "cnn", trials=2, output=tmp_path / "run", progress=False,
                         echo=lines.append, image_size=32, space={"epochs": {"low": 1, "high": 2}})
    said = next(line for line in lines if "no frozen backbone" in line)
    assert "end to end" in said and "per trial" in said
    assert "per epoch" in said and "to build and compile" in said
    assert lines.index(said) < next(i for i, line in enumerate(lines) if "trial 0:" in line)
    assert result.search["mode"] == "end to end" and result.run.complete
