"""Duplicates without backbone weights: each planted kind found; splits keep groups whole."""

from __future__ import annotations

import shutil

import imgclf
from imgclf.audit import audit
from tests.audit.conftest import TINT
from tests.imagefactory import write_photo


def test_each_planted_kind_is_found_from_the_pixels_alone(planted, tmp_path):
    root, kinds = planted
    ds = imgclf.load_dataset(root, image_size=32, progress=False)
    a = audit(ds, weights=None, progress=False)
    found = {g["kind"]: {f["path"] for f in g["files"]} for g in a.groups}
    assert found == kinds
    exact = {g["kind"]: g["exact"] for g in a.groups}
    assert exact == {"conflicting_labels": True, "leak": False, "redundant": False}
    assert a.leaks == {"validation": 0, "test": 1}
    c = a.counts()
    assert (c["exact_groups"], c["near_groups"], c["conflicting_label_groups"], c["leak_groups"]) == (1, 2, 1, 1)
    # checks that need weights say so, and did not run
    assert not a.checks["label"]["ran"] and "weights" in a.checks["label"]["note"]
    assert not a.checks["outlier"]["ran"]
    assert "hash within 8 bits" in a.checks["near_duplicates"]["threshold"]
    text = a.format()
    assert "needed backbone weights: label, outlier" in text and "1 test images training has seen" in text


def test_drawn_splits_keep_every_duplicate_group_in_one_split(tmp_path):
    root = tmp_path / "data"
    groups = []
    for cls in TINT:
        for i in range(20):
            seed = i + (100 if cls == "dogs" else 0)
            write_photo(root / cls / f"{i}.jpg", seed, tint=TINT[cls])
            if i < 6:
                write_photo(root / cls / f"{i}-reencoded.jpg", seed, tint=TINT[cls], variant="reencoded")
                shutil.copyfile(root / cls / f"{i}.jpg", root / cls / f"{i}-copy.jpg")
                groups.append({f"{cls}/{i}.jpg", f"{cls}/{i}-reencoded.jpg", f"{cls}/{i}-copy.jpg"})
    for seed in (1, 2, 3):
        ds = imgclf.load_dataset(root, image_size=32, seed=seed, validation=0.25, test=0.25, progress=False)
        where = {r.path: s for s in ("train", "validation", "test") for r in ds.splits[s]}
        for g in groups:
            assert len({where[p] for p in g}) == 1
        assert all(len(ds.splits[s]) >= 10 for s in ("validation", "test"))
        assert audit(ds, weights=None, progress=False).leaks == {"validation": 0, "test": 0}
