"""Integration: the real cats_and_dogs_filtered folder (3,000 JPEGs) in ../shared/data."""

from __future__ import annotations

import time

import pytest

from imgclf.data.scan import scan
from imgclf.data.sources import resolve_source
from imgclf.data.split import SPLITS, make_splits
from tests.conftest import CATS_AND_DOGS, requires_shared


def _per_class(records):
    out: dict[str, int] = {}
    for r in records:
        out[r.label] = out.get(r.label, 0) + 1
    return out


@requires_shared
@pytest.mark.integration
def test_cats_and_dogs_scan_split_and_cache(tmp_path):
    source = resolve_source(CATS_AND_DOGS)
    assert source.layout == "presplit" and sorted(source.split_dirs) == ["train", "validation"]

    report = scan(source, cache=tmp_path, progress=False)
    assert report.cached == 0
    assert len(report.valid) == 3000 and report.bad == []
    assert report.class_names == ["cats", "dogs"]
    assert report.counts() == {"cats": 1500, "dogs": 1500}
    assert report.counts("train") == {"cats": 1000, "dogs": 1000}
    assert report.counts("validation") == {"cats": 500, "dogs": 500}
    assert report.formats() == {"JPEG": 3000}

    splits = make_splits(report)
    assert _per_class(splits["train"]) == {"cats": 1000, "dogs": 1000}
    assert _per_class(splits["validation"]) == {"cats": 400, "dogs": 400}
    assert _per_class(splits["test"]) == {"cats": 100, "dogs": 100}
    sets = [{r.path for r in splits[s]} for s in SPLITS]
    assert sum(map(len, sets)) == len(set().union(*sets)) == 3000  # no file in two splits

    t0 = time.perf_counter()
    again = scan(source, cache=tmp_path, progress=False)
    took = time.perf_counter() - t0
    assert again.cached >= 0.95 * 3000
    assert len(again.valid) == 3000
    assert took < 5.0, f"the cached scan took {took:.1f} s"
