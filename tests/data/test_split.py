"""Splits: file-level, seeded, stratified, disjoint, written to disk and reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgclf.data.scan import ImageRecord, ScanReport, natural_key, scan
from imgclf.data.sources import resolve_source
from imgclf.data.split import (
    PRESPLIT_TEST_FRACTION, SPLITS, apply_split_lists, assert_disjoint, make_splits, read_split_lists, write_splits,
)
from imgclf.errors import ConfigError, DataError


def _report(counts: dict[str, int], *, split: str | None = None, layout: str = "class_folders",
            bad: int = 0) -> ScanReport:
    """A scan report without files: ``counts[class]`` valid records (and ``bad`` bad ones) per class."""
    records = []
    for label, n in counts.items():
        prefix = f"{split}/{label}" if split else label
        records += [ImageRecord(path=f"{prefix}/{label}.{i}.jpg", label=label, split=split) for i in range(n)]
        records += [ImageRecord(path=f"{prefix}/broken.{i}.jpg", label=label, split=split, ok=False,
                                reason="corrupt") for i in range(bad)]
    return ScanReport(root=Path("/data"), layout=layout, class_names=sorted(counts, key=natural_key),
                      records=records)


def _presplit_report(train: dict[str, int], validation: dict[str, int], test: dict[str, int] | None = None):
    parts = [_report(train, split="train"), _report(validation, split="validation")]
    if test:
        parts.append(_report(test, split="test"))
    return ScanReport(root=Path("/data"), layout="presplit", class_names=parts[0].class_names,
                      records=[r for p in parts for r in p.records])


def _paths(splits) -> dict[str, list[str]]:
    return {s: [r.path for r in splits[s]] for s in SPLITS}


def _per_class(records) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        out[r.label] = out.get(r.label, 0) + 1
    return out


def test_disjoint_and_complete():
    report = _report({"a": 97, "b": 55, "c": 3}, bad=2)
    splits = make_splits(report, validation=0.2, test=0.1, seed=1)
    sets = {s: {r.path for r in splits[s]} for s in SPLITS}
    assert not sets["train"] & sets["validation"]
    assert not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]
    assert set().union(*sets.values()) == {r.path for r in report.valid}  # every valid file, once
    assert all(r.ok for s in SPLITS for r in splits[s])  # bad files nowhere
    assert sum(len(v) for v in splits.values()) == len(report.valid)


def test_stratified_proportions():
    report = _report({"a": 1000, "b": 300})
    splits = make_splits(report, validation=0.2, test=0.1, seed=0)
    assert _per_class(splits["test"]) == {"a": 100, "b": 30}
    assert _per_class(splits["validation"]) == {"a": 200, "b": 60}
    assert _per_class(splits["train"]) == {"a": 700, "b": 210}


@pytest.mark.parametrize("validation, test", [(0.3, 0.0), (0.15, 0.15), (0.0, 0.5)])
def test_configurable_fractions(validation, test):
    splits = make_splits(_report({"a": 200, "b": 100}), validation=validation, test=test)
    assert _per_class(splits["validation"]) == ({"a": round(200 * validation), "b": round(100 * validation)}
                                                if validation else {})
    assert len(splits["test"]) == round(200 * test) + round(100 * test)


@pytest.mark.parametrize("validation, test", [(-0.1, 0.1), (1.0, 0.0), (0.6, 0.4), (0.2, 1.2)])
def test_bad_fractions(validation, test):
    with pytest.raises(ConfigError, match="fraction"):
        make_splits(_report({"a": 10, "b": 10}), validation=validation, test=test)


def test_small_classes_keep_training_images():
    splits = make_splits(_report({"a": 1, "b": 3}), validation=0.2, test=0.1)
    assert _per_class(splits["train"]) == {"a": 1, "b": 2}


def test_seeded_repeatable_and_seeds_differ():
    report = _report({"a": 60, "b": 40})
    one = _paths(make_splits(report, seed=7))
    assert _paths(make_splits(report, seed=7)) == one
    assert _paths(make_splits(report, seed=8))["test"] != one["test"]


def test_independent_of_scan_order():
    report = _report({"a": 60, "b": 40})
    shuffled = ScanReport(root=report.root, layout=report.layout, class_names=report.class_names,
                          records=list(reversed(report.records)))
    assert _paths(make_splits(shuffled, seed=3)) == _paths(make_splits(report, seed=3))


def test_presplit_keeps_folders_and_takes_a_fifth_of_validation_for_test():
    report = _presplit_report({"cats": 1000, "dogs": 1000}, {"cats": 500, "dogs": 500})
    splits = make_splits(report, validation=0.5, test=0.5)  # fractions do not apply
    assert _per_class(splits["train"]) == {"cats": 1000, "dogs": 1000}
    assert _per_class(splits["validation"]) == {"cats": 400, "dogs": 400}
    assert _per_class(splits["test"]) == {"cats": 100, "dogs": 100}
    assert all(r.split == "train" for r in splits["train"])
    assert all(r.split == "validation" for r in splits["validation"] + splits["test"])
    assert_disjoint(splits)
    # fixed: the same test images every time
    assert _paths(make_splits(report)) == _paths(splits)


def test_presplit_fifth_is_stratified():
    report = _presplit_report({"cats": 10, "dogs": 10}, {"cats": 250, "dogs": 50})
    splits = make_splits(report)
    assert PRESPLIT_TEST_FRACTION == 0.2
    assert _per_class(splits["test"]) == {"cats": 50, "dogs": 10}
    assert _per_class(splits["validation"]) == {"cats": 200, "dogs": 40}


def test_presplit_with_test_folder_is_kept():
    report = _presplit_report({"a": 10, "b": 10}, {"a": 5, "b": 5}, {"a": 3, "b": 2})
    splits = make_splits(report)
    assert _per_class(splits["test"]) == {"a": 3, "b": 2}
    assert _per_class(splits["validation"]) == {"a": 5, "b": 5}


def test_presplit_without_validation_images():
    report = _presplit_report({"a": 3, "b": 3}, {})
    with pytest.raises(DataError, match="no validation/ images"):
        make_splits(report)


def test_assert_disjoint_catches_overlap():
    r = ImageRecord(path="a/1.jpg", label="a")
    with pytest.raises(DataError, match="a/1.jpg is in both"):
        assert_disjoint({"train": [r], "validation": [], "test": [r]})


def test_write_read_round_trip(tmp_path):
    report = _report({"a": 20, "b": 10})
    splits = make_splits(report, seed=5)
    folder = write_splits(tmp_path / "splits", splits)
    assert sorted(p.name for p in folder.iterdir()) == ["test.txt", "train.txt", "validation.txt"]
    first = (folder / "test.txt").read_text(encoding="utf-8").splitlines()[0]
    assert first.count("\t") == 1
    lists = read_split_lists(folder)
    assert {s: [p for _, p in rows] for s, rows in lists.items()} == _paths(splits)
    assert _paths(apply_split_lists(report, lists)) == _paths(splits)


def test_names_with_spaces_and_unicode_round_trip(tmp_path):
    report = ScanReport(root=Path("/d"), layout="class_folders", class_names=["chat noir", "chien"],
                        records=[ImageRecord(path="chat noir/été 1.jpg", label="chat noir"),
                                 ImageRecord(path="chien/🐕.png", label="chien")])
    splits = {"train": report.records, "validation": [], "test": []}
    lists = read_split_lists(write_splits(tmp_path, splits))
    assert lists["train"] == [("chat noir", "chat noir/été 1.jpg"), ("chien", "chien/🐕.png")]


def test_missing_test_list_is_empty_but_train_list_is_required(tmp_path):
    write_splits(tmp_path, {"train": [], "validation": []})
    assert read_split_lists(tmp_path)["test"] == []
    (tmp_path / "train.txt").unlink()
    with pytest.raises(DataError, match="train.txt is missing"):
        read_split_lists(tmp_path)


def test_damaged_list(tmp_path):
    write_splits(tmp_path, {"train": [], "validation": [], "test": []})
    (tmp_path / "train.txt").write_text("no tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match="train.txt:1 is not 'class<TAB>path'"):
        read_split_lists(tmp_path)


def test_stale_lists_on_real_files(tmp_path):
    from tests.imagefactory import make_class_tree, write_broken

    root = make_class_tree(tmp_path / "d", {"a": 6, "b": 6}, size=(8, 8))
    report = scan(resolve_source(root), cache=tmp_path / "cache", progress=False)
    splits = make_splits(report, validation=0.3, test=0.2, seed=0)
    folder = write_splits(tmp_path / "splits", splits)
    gone = splits["validation"][0]
    (root / gone.path).unlink()  # removed after the lists were written
    damaged = splits["train"][0]
    write_broken(root / damaged.path, "zero_bytes")  # now bad
    fresh = scan(resolve_source(root), cache=tmp_path / "cache", progress=False)
    reused = apply_split_lists(fresh, read_split_lists(folder))
    assert gone.path not in {r.path for r in reused["validation"]}
    assert damaged.path not in {r.path for r in reused["train"]}
    assert len(reused["validation"]) == len(splits["validation"]) - 1
    assert len(reused["train"]) == len(splits["train"]) - 1
    assert _paths(reused)["test"] == _paths(splits)["test"]


def test_stale_list_with_changed_class_raises(tmp_path):
    report = _report({"a": 5, "b": 5})
    folder = write_splits(tmp_path, make_splits(report, validation=0.2, test=0.2))
    text = (folder / "train.txt").read_text(encoding="utf-8")
    label, path = text.splitlines()[0].split("\t")
    (folder / "train.txt").write_text(text.replace(f"{label}\t{path}", f"b_old\t{path}", 1), encoding="utf-8")
    with pytest.raises(DataError, match=f"{path} was class 'b_old' in the saved splits"):
        apply_split_lists(report, read_split_lists(folder))


def test_lists_of_other_data_raise(tmp_path):
    folder = write_splits(tmp_path, make_splits(_report({"a": 5, "b": 5})))
    with pytest.raises(DataError, match="is this the same data"):
        apply_split_lists(_report({"x": 5, "y": 5}), read_split_lists(folder))


def test_overlapping_lists_raise(tmp_path):
    report = _report({"a": 5, "b": 5})
    folder = write_splits(tmp_path, make_splits(report))
    train = (folder / "train.txt").read_text(encoding="utf-8")
    (folder / "test.txt").write_text(train.splitlines()[0] + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="is in both"):
        apply_split_lists(report, read_split_lists(folder))


# -- duplicate groups go to one split ------------------------------------------------------------

def _old_stratified(records, fractions, seed):
    """The per-class split as it was before duplicate groups (one image, one unit)."""
    import random

    out = {name: [] for name in fractions}
    by_class = {}
    for r in records:
        by_class.setdefault(r.label, []).append(r)
    names = list(fractions)
    for label in sorted(by_class, key=natural_key):
        items = sorted(by_class[label], key=lambda r: natural_key(r.path))
        random.Random(f"{seed}:{label}").shuffle(items)
        n, start = len(items), 0
        for i, name in enumerate(names):
            take = n - start if i == len(names) - 1 else min(int(round(n * fractions[name])), n - start)
            out[name] += items[start: start + take]
            start += take
    return out


def test_without_duplicates_the_split_is_the_one_made_before_groups():
    report = _report({"a": 37, "b": 23, "c": 5})
    for r in report.records:  # distinct fingerprints: no groups
        r.digest, r.phash = r.path, f"{hash(r.path) & (2**64 - 1):016x}"
    fractions = {"test": 0.1, "validation": 0.2, "train": 0.7}
    old = _old_stratified(report.valid, fractions, 42)
    new = make_splits(report, validation=0.2, test=0.1, seed=42)
    assert {s: sorted(r.path for r in old[s]) for s in SPLITS} == {s: sorted(r.path for r in new[s]) for s in SPLITS}


def test_every_duplicate_group_lands_in_one_split():
    report = _report({"a": 60, "b": 60})
    for k, r in enumerate(report.records):
        r.digest = f"d{k}"
        r.phash = f"{(k * 0x9E3779B97F4A7C15) & (2**64 - 1):016x}"
    groups = []
    for g in range(12):  # exact copies, near copies, and a group across classes
        a, b, c = report.records[g * 3], report.records[g * 3 + 1], report.records[60 + g]
        b.digest = a.digest
        c.phash = f"{int(a.phash, 16) ^ 0b101:016x}"
        groups.append({a.path, b.path, c.path})
    for seed in (0, 1, 2):
        splits = make_splits(report, validation=0.2, test=0.2, seed=seed)
        where = {r.path: s for s in SPLITS for r in splits[s]}
        for g in groups:
            assert len({where[p] for p in g}) == 1, (seed, g)
        assert sum(map(len, splits.values())) == 120
        for s, f in (("validation", 0.2), ("test", 0.2)):
            assert abs(len(splits[s]) - 120 * f) <= 6


def test_saved_splits_with_a_class_now_left_out_use_only_the_classes_kept(tmp_path):
    import imgclf
    from tests.imagefactory import make_class_tree

    root = make_class_tree(tmp_path / "data", {"a": 8, "b": 8, "c": 3}, size=(16, 16))
    first = imgclf.load_dataset(root, image_size=16, validation=0.25, test=0.25, progress=False)
    first.save_splits(tmp_path / "splits")
    ds = imgclf.load_dataset(root, image_size=16, splits=tmp_path / "splits", min_images=4, progress=False)
    assert ds.class_names == ["a", "b"]
    assert {r.label for s in ("train", "validation", "test") for r in ds.splits[s]} == {"a", "b"}
    assert sorted(ds.counts().values()) == [8, 8] and len(ds.labels("train")) == len(ds.splits["train"])
    assert any("belong to classes left out now" in w for w in ds.report.warnings)
