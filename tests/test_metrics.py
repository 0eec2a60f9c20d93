"""metrics.json's schema, its one writer, and the scores it is made of."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from imgclf.errors import RunError
from imgclf.metrics import (
    Evaluation, Metrics, Scores, confusion, per_class, read_metrics, scores, top_losses, update_metrics,
    write_metrics,
)

# metrics.json as training writes it (a fine-tuned, calibrated transfer run), then evaluated
TRAINED = {
    "feature_parity_max_abs_diff": 2.1e-07,
    "validation": {"loss": 0.41, "accuracy": 0.875, "count": 8},
    "test": {"loss": 0.52, "accuracy": 0.75, "count": 8,
             "leak_free": {"accuracy": 0.75, "count": 8, "leaked": 0}},
    "calibration": {"temperature": 1.3, "bins": 15, "fitted_on": "validation",
                    "validation": {"before": {"ece": 0.1, "nll": 0.5, "accuracy": 0.875, "count": 8},
                                   "after": {"ece": 0.05, "nll": 0.4, "accuracy": 0.875, "count": 8}},
                    "applied": True, "reason": None, "figure": "runs/x/figures/reliability.png",
                    "parity_max_abs_diff": 1e-6},
    "fine_tune": {"kept": False, "validation_accuracy": {"head": 0.875, "fine_tuned": 0.75},
                  "test_accuracy": {"head": 0.75, "fine_tuned": 0.625}},
    "baseline": {"majority_class": "cats", "test_accuracy": 0.5, "validation_accuracy": 0.5},
    "best_epoch": 3,
    "best_val_accuracy": 0.875,
    "keep": "best",
    "kept_epoch": {"head": 3},
    "epochs": 6,
    "seconds_per_epoch": 1.5,
    "parameters": {"trainable": 2562, "frozen": 410208, "total": 412770},
    "evaluation": {"test": {
        "loss": 0.52, "accuracy": 0.75, "count": 8, "baseline_accuracy": 0.5,
        "leak_free": {"accuracy": 0.75, "count": 8, "leaked": 0}, "majority_class": "cats",
        "per_class": {"cats": {"precision": 0.8, "recall": 1.0, "f1": 0.888, "support": 4},
                      "dogs": {"precision": 1.0, "recall": 0.5, "f1": 0.666, "support": 4}},
        "macro_f1": 0.777, "confusion_matrix": [[4, 0], [2, 2]],
        "top_losses": [{"path": "d/1.png", "true": "dogs", "predicted": "cats", "confidence": 0.9, "loss": 2.3}],
        "figures": {"confusion_matrix": "runs/x/figures/confusion_matrix_test.png"}}},
    "tta": {"validation": {"mode": "flip", "views": 2, "split": "validation", "count": 8, "accuracy": 0.875,
                           "loss": 0.4, "accuracy_without": 0.875, "loss_without": 0.41, "changed": 0}},
}


# -- the scores -----------------------------------------------------------------------------

def test_scores_of_known_probabilities():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]], np.float32)
    labels = np.array([0, 1, 1, 0])
    s = scores(probs, labels)
    assert s["count"] == 4
    assert s["accuracy"] == 0.75  # the tie goes to class 0 (argmax), which is right
    assert s["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.5])), rel=1e-6)


def test_scores_of_an_empty_split():
    assert scores(np.zeros((0, 3)), np.zeros(0, int)) == {"loss": None, "accuracy": None, "count": 0}


def test_a_certain_wrong_answer_costs_a_bounded_loss():
    s = scores(np.array([[1.0, 0.0]]), np.array([1]))
    assert s["accuracy"] == 0.0 and s["loss"] == pytest.approx(-np.log(1e-7))


def test_confusion_counts_true_rows_against_predicted_columns():
    cm = confusion(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 1, 1, 2, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    assert cm.dtype == np.int64


def test_per_class_from_a_confusion_matrix():
    cm = np.array([[3, 1], [2, 4]])
    out = per_class(cm, ["cats", "dogs"])
    assert out["cats"] == {"precision": 3 / 5, "recall": 3 / 4, "f1": pytest.approx(2 / 3), "support": 4}
    assert out["dogs"] == {"precision": 4 / 5, "recall": 4 / 6, "f1": pytest.approx(8 / 11), "support": 6}


def test_per_class_of_a_class_never_predicted_nor_present():
    out = per_class(np.array([[2, 0], [0, 0]]), ["a", "b"])
    assert out["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert out["a"]["f1"] == 1.0


def test_top_losses_are_the_most_confident_mistakes_first():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.05, 0.95]])
    labels = np.array([0, 0, 1, 0])
    out = top_losses(probs, labels, ["a.png", "b.png", "c.png", "d.png"], ["cats", "dogs"], k=2)
    assert [t["path"] for t in out] == ["d.png", "b.png"]
    assert out[0] == {"path": "d.png", "true": "cats", "predicted": "dogs", "confidence": 0.95,
                      "loss": pytest.approx(-np.log(0.05))}


# -- the schema -----------------------------------------------------------------------------

def test_round_trip_gives_the_same_json():
    m = Metrics.from_dict(TRAINED)
    assert json.dumps(m.to_dict(), indent=2) == json.dumps(TRAINED, indent=2)  # same keys, same order


def test_attributes_of_a_trained_run():
    m = Metrics.from_dict(TRAINED)
    assert m.test.accuracy == 0.75 and m.test.leak_free.leaked == 0
    assert m.validation.leak_free is None
    assert m.fine_tune.kept is False and m.fine_tune.validation_accuracy.fine_tuned == 0.75
    assert m.calibration.applied and m.calibration.temperature == 1.3
    assert m.calibration.validation.after["ece"] == 0.05
    assert m.baseline.majority_class == "cats"
    assert m.kept_epoch == {"head": 3} and m.keep == "best"
    assert m.parameters.total == 412770
    ev = m.evaluation["test"]
    assert ev.per_class["dogs"].recall == 0.5 and ev.confusion_matrix == [[4, 0], [2, 2]]
    assert ev.top_losses[0].predicted == "cats"
    assert m.tta["validation"].changed == 0
    assert m.split("test") is m.test and m.split("train") is None


def test_a_file_of_an_earlier_version_reads_with_missing_parts_empty():
    old = {"validation": {"loss": 0.4, "accuracy": 0.8, "count": 5}, "test": {"loss": 0.5, "accuracy": 0.6,
                                                                              "count": 5},
           "baseline": {"majority_class": "a", "test_accuracy": 0.4}, "epochs": 3}
    m = Metrics.from_dict(old)
    assert m.test.leak_free is None and m.calibration is None and m.fine_tune is None
    assert m.kept_epoch == {} and m.evaluation == {} and m.tta == {}
    assert m.keep is None and m.parameters is None and m.best_epoch is None
    assert m.baseline.validation_accuracy is None
    assert m.to_dict() == old  # nothing added that was not there


def test_keys_this_version_does_not_know_are_kept():
    data = {**TRAINED, "gpu": "H100", "test": {**TRAINED["test"], "top5": 1.0}}
    m = Metrics.from_dict(data)
    assert m.extra == {"gpu": "H100"} and m.test.extra == {"top5": 1.0}
    assert m.to_dict() == data


def test_null_sections_read_as_empty():
    m = Metrics.from_dict({"kept_epoch": None, "evaluation": None, "calibration": None})
    assert m.kept_epoch == {} and m.evaluation == {} and m.calibration is None


def test_a_section_of_the_wrong_shape_is_a_run_error():
    with pytest.raises(RunError, match="Metrics expects a JSON object"):
        Metrics.from_dict(["validation"])


def test_a_record_built_in_code_writes_the_keys_training_always_writes():
    m = Metrics(validation=Scores(loss=None, accuracy=None, count=0), epochs=2)
    d = m.to_dict()
    assert d["validation"] == {"loss": None, "accuracy": None, "count": 0}
    assert d["seconds_per_epoch"] is None and d["kept_epoch"] == {}
    assert "calibration" not in d and "best_epoch" not in d and "evaluation" not in d


# -- reading and writing --------------------------------------------------------------------

def test_read_before_training_wrote_it(tmp_path):
    m = read_metrics(tmp_path)
    assert m.test is None and m.evaluation == {} and m.to_dict() == {}
    update_metrics(tmp_path, tta={"validation": {"mode": "flip", "count": 3}})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"tta": {"validation": {"mode": "flip",
                                                                                          "count": 3}}}


def test_written_and_read_back(tmp_path):
    write_metrics(tmp_path, Metrics.from_dict(TRAINED))
    assert json.loads((tmp_path / "metrics.json").read_text()) == TRAINED
    assert read_metrics(tmp_path).evaluation["test"].macro_f1 == 0.777


def test_a_hand_broken_file_is_a_run_error(tmp_path):
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(RunError, match="metrics.json is not valid JSON"):
        read_metrics(tmp_path)


def test_update_replaces_one_split_and_keeps_everything_else(tmp_path):
    write_metrics(tmp_path, Metrics.from_dict(TRAINED))
    validation = {**TRAINED["evaluation"]["test"], "count": 8, "accuracy": 0.5}
    out = update_metrics(tmp_path, evaluation={"validation": Evaluation.from_dict(validation)})
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == {**TRAINED, "evaluation": {"test": TRAINED["evaluation"]["test"], "validation": validation}}
    assert out.to_dict() == on_disk
    # a plain dict does as well as a record, and replaces the split it names
    update_metrics(tmp_path, evaluation={"test": {**validation, "accuracy": 1.0}})
    again = read_metrics(tmp_path)
    assert again.evaluation["test"].accuracy == 1.0 and again.evaluation["validation"].accuracy == 0.5
    assert again.tta["validation"].mode == "flip" and again.calibration.temperature == 1.3


def test_update_sets_a_whole_section(tmp_path):
    write_metrics(tmp_path, Metrics.from_dict(TRAINED))
    update_metrics(tmp_path, calibration={"applied": False, "skipped": "too few images"})
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["calibration"] == {"applied": False, "skipped": "too few images"}
    assert on_disk["test"] == TRAINED["test"]


def test_update_refuses_a_section_metrics_json_does_not_have(tmp_path):
    with pytest.raises(KeyError, match="no section 'scores'"):
        update_metrics(tmp_path, scores={})
    assert not (tmp_path / "metrics.json").exists()


def test_updates_from_threads_lose_no_split(tmp_path):
    write_metrics(tmp_path, Metrics.from_dict(TRAINED))
    splits = [f"part{i}" for i in range(8)]
    threads = [threading.Thread(target=update_metrics, args=(tmp_path,),
                                kwargs={"tta": {s: {"mode": "flip", "count": i}}}) for i, s in enumerate(splits)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tta = read_metrics(tmp_path).tta
    assert set(tta) == {"validation", *splits}
    assert [tta[s].count for s in splits] == list(range(8))
    assert not [p.name for p in tmp_path.iterdir() if p.name != "metrics.json"]  # no temporary file left
