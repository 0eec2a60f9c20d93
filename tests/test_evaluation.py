"""evaluate_run on the shared tiny trained run (a copy of it, so the shared one stays as trained)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import imgclf
from imgclf.errors import ConfigError
from imgclf.evaluation import evaluate_run


@pytest.fixture(scope="module")
def evaluated(trained_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluation") / "run"
    shutil.copytree(trained_run.path, folder, ignore=shutil.ignore_patterns("checkpoints", "exports", "cache"))
    run = imgclf.load(folder)
    before = run.metrics()
    return run, before, evaluate_run(run, "test", progress=False)


def test_per_class_numbers_agree_with_the_confusion_matrix(evaluated):
    run, _, result = evaluated
    cm = np.array(result["confusion_matrix"])
    names = run.class_names
    assert cm.shape == (2, 2) and cm.sum() == result["count"] == len(run.dataset(progress=False).paths("test"))
    for i, name in enumerate(names):
        scores = result["per_class"][name]
        assert scores["support"] == cm[i].sum()
        assert scores["recall"] == pytest.approx(cm[i, i] / cm[i].sum())
        if cm[:, i].sum():
            assert scores["precision"] == pytest.approx(cm[i, i] / cm[:, i].sum())
    assert result["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert result["macro_f1"] == pytest.approx(np.mean([result["per_class"][n]["f1"] for n in names]))
    assert len(result["top_losses"]) == cm.sum() - np.trace(cm)  # fewer than 9 mistakes: all of them


def test_the_scores_are_the_ones_training_recorded(evaluated):
    _, before, result = evaluated
    assert result["accuracy"] == pytest.approx(before["test"]["accuracy"])
    assert result["loss"] == pytest.approx(before["test"]["loss"], rel=1e-4)
    assert result["baseline_accuracy"] == before["baseline"]["test_accuracy"]
    assert result["leak_free"]["count"] + result["leak_free"]["leaked"] == result["count"]


def test_metrics_json_gains_the_evaluation_and_keeps_the_rest(evaluated):
    run, before, result = evaluated
    on_disk = json.loads((run.path / "metrics.json").read_text())
    assert on_disk["evaluation"]["test"] == json.loads(json.dumps(result))
    assert {k: v for k, v in on_disk.items() if k != "evaluation"} == \
        {k: v for k, v in before.items() if k != "evaluation"}
    typed = run.metrics_record().evaluation["test"]
    assert typed.count == result["count"] and typed.confusion_matrix == result["confusion_matrix"]


def test_the_confusion_matrix_figure_is_written(evaluated):
    run, _, result = evaluated
    figure = run.figures_dir / "confusion_matrix_test.png"
    assert result["figures"]["confusion_matrix"] == str(figure)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_another_split_is_added_beside_the_first(evaluated):
    run, _, first = evaluated
    validation = evaluate_run(run, "validation", progress=False)
    evaluation = run.metrics()["evaluation"]
    assert set(evaluation) >= {"test", "validation"}
    assert evaluation["test"] == json.loads(json.dumps(first))
    assert evaluation["validation"]["count"] == validation["count"] == len(run.dataset(progress=False).paths("validation"))


def test_an_unknown_split_is_a_config_error(evaluated):
    run = evaluated[0]
    with pytest.raises(ConfigError, match="unknown split 'holdout'; choose one of: train, validation, test"):
        evaluate_run(run, "holdout", progress=False)
