"""A tuned model in the study: the search in results.json, report.html and report.md."""

import json

import pytest

from imgclf.report.tuned import tune_rows, tune_sentence

pytestmark = pytest.mark.slow  # left out of the fast loop (pytest -m 'not slow')

pytest.importorskip("optuna")

SEARCH = {"trials": 50, "pruned": 12, "best_trial": 31, "best_validation_accuracy": 0.981,
          "default_validation_accuracy": 0.970, "sampler": "TPESampler(seed=42)", "mode": "cached features",
          "seconds": 240.0, "best_params": {"learning_rate": 0.0021, "optimizer": "adam", "early_stopping": 5},
          "importances": {"learning_rate": 0.7, "optimizer": 0.3},
          "space": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "optimizer": {"choices": ["adam", "sgd"]},
                    "dropout": {"low": 0.0, "high": 0.5}, "early_stopping": 5}}


def test_the_sentence_and_table_say_what_was_chosen_on_validation():
    text = tune_sentence(SEARCH)
    assert "50 trials (12 stopped early" in text and "validation split only" in text
    assert "trial 31 reached 98.1% against 97.0% for the defaults" in text
    assert tune_rows(SEARCH) == [("learning_rate", "0.0021", "70%"), ("optimizer", "adam", "30%"),
                                 ("early_stopping", "5", "fixed")]
    few = {**SEARCH, "importances": {}, "best_trial": 0, "best_params": {"dropout": 0.2, "early_stopping": 5}}
    assert tune_rows(few) == [("dropout", "0.2", "n/a"), ("early_stopping", "5", "fixed")]
    assert "the defaults (trial 0) stayed best, at 98.1%" in tune_sentence(few)


def test_a_study_with_tune_shows_the_search_of_its_transfer_model(tmp_path):
    from imgclf.report.study import study
    from tests.imagefactory import make_class_tree

    tree = make_class_tree(tmp_path / "data", {"cats": 12, "dogs": 12}, size=(32, 32))
    lines = []
    result = study(tree, models=["mobilenet_v2"], output=tmp_path / "study", epochs=1, image_size=32,
                   weights=None, alpha=0.35, validation=0.25, test=0.25, progress=False, echo=lines.append,
                   tune=True, tune_trials=2)
    models = json.loads((result.output / "results.json").read_text())["models"]
    t = models["mobilenet_v2"]["tune"]
    assert t["trials"] == 2 and t["figure"] == "runs/mobilenet_v2/tune/tune.png"
    assert (result.output / t["figure"]).is_file()
    html = result.html.read_text()
    assert html.count("<h3>The search</h3>") == 1 and "validation split only" in html
    md = result.markdown.read_text()
    assert "### The search" in md and "](runs/mobilenet_v2/tune/tune.png)" in md
    # run again: the run is kept (though it chose its own epochs), nothing is searched again
    lines.clear()
    study(tree, models=["mobilenet_v2"], output=tmp_path / "study", epochs=1, image_size=32, weights=None,
          alpha=0.35, validation=0.25, test=0.25, progress=False, echo=lines.append, tune=True, tune_trials=2)
    assert sum("already trained" in line for line in lines) == 1 and not any("tuning" in line for line in lines)
