"""`imgclf audit` end to end without weights, and acting on its CSV without touching a file."""

from __future__ import annotations

import csv
import json

import pytest

from tests.audit.conftest import checksums


@pytest.mark.slow
def test_audit_writes_a_csv_to_fill_and_train_applies_it_and_records_it(planted, tmp_path, cli):
    root, kinds = planted
    before = checksums(root)
    code, out, err = cli("audit", root, "--weights", "none", "--image-size", "32", "-q", "-o", tmp_path / "audit")
    assert code == 0, err
    assert "needed backbone weights" in out and "threshold: grey std < 5" in out
    rows = list(csv.DictReader((tmp_path / "audit" / "issues.csv").open()))
    assert list(rows[0]) == ["path", "issue", "score", "class", "suggested_label", "split", "group", "details", "action"]
    by_path = {r["path"]: r for r in rows}
    assert by_path["train/dogs/copy-of-cats.1.jpg"]["issue"] == "conflicting_labels"
    assert by_path["test/cats/reencoded-cats.2.jpg"]["issue"] == "leak"
    assert all(r["action"] == "" for r in rows)
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert report["counts"]["leaked_test_images"] == 1 and (tmp_path / "audit" / "figures" / "duplicates.png").is_file()

    # a person decides: drop the copy filed under the wrong class, move one dog to cats
    by_path["train/dogs/copy-of-cats.1.jpg"]["action"] = "drop"
    by_path.setdefault("train/dogs/dogs.12.jpg", {k: "" for k in rows[0]} | {"path": "train/dogs/dogs.12.jpg"})
    by_path["train/dogs/dogs.12.jpg"]["action"] = "relabel:cats"
    reviewed = tmp_path / "reviewed.csv"
    with reviewed.open("w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(by_path.values())

    code, out, err = cli("train", root, "-m", "cnn", "--epochs", "1", "--image-size", "32", "-q",
                         "--exclude", reviewed, "--relabel", reviewed, "-o", tmp_path / "run")
    assert code == 0, err
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["data"]["exclude"] == str(reviewed) == config["train"]["data"]["relabel"]
    assert (run / "review" / "exclude.txt").read_text() == "train/dogs/copy-of-cats.1.jpg\n"
    assert "train/dogs/dogs.12.jpg,dogs,relabel:cats" in (run / "review" / "relabel.csv").read_text()
    train = (run / "splits" / "train.txt").read_text()
    assert "copy-of-cats.1.jpg" not in train and "cats\ttrain/dogs/dogs.12.jpg\n" in train
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["leak_free"]["leaked"] == 1
    assert metrics["test"]["leak_free"]["count"] == metrics["test"]["count"] - 1

    code, out, err = cli("evaluate", run, "-q")  # the run's data comes back reviewed as it trained
    assert code == 0, err
    assert "leak-free: " in out and "(1 left out" in out
    assert json.loads((run / "metrics.json").read_text())["evaluation"]["test"]["leak_free"]["leaked"] == 1

    code, out, err = cli("inspect", root, "--exclude", reviewed, "--relabel", reviewed, "-o", tmp_path / "inspect")
    assert code == 0, err
    assert "review    1 file(s) excluded, 1 relabelled" in out
    assert checksums(root) == before  # nothing on disk moved, renamed or rewritten


def test_inspect_prints_the_cheap_duplicate_counts(planted, tmp_path, cli):
    root, _ = planted
    code, out, err = cli("inspect", root, "-o", tmp_path / "inspect")
    assert code == 0, err
    assert ("duplicates 1 exact and 2 near group(s), 1 across classes, 1 across splits "
            "(0 validation and 1 test images training has seen)") in out
    assert "`imgclf audit`" in out


def test_bad_reviewed_list_is_exit_2_and_one_line(planted, tmp_path, cli):
    root, _ = planted
    bad = tmp_path / "bad.csv"
    bad.write_text("path,action\ntrain/cats/cats.1.jpg,remove\n")
    code, out, err = cli("audit", root, "--weights", "none", "--exclude", bad, "-o", tmp_path / "a")
    assert code == 2
    assert err.count("\n") == 1 and "unknown action 'remove'" in err and "Traceback" not in err
