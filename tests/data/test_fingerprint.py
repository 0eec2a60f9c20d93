"""Fingerprints: made by the scan, cached with it; copies hash alike, different images do not."""

from __future__ import annotations

import numpy as np

from imgclf.data.fingerprint import connected, duplicate_counts, fingerprint, near_pairs, pixel_groups
from imgclf.data.scan import scan
from imgclf.data.sources import resolve_source
from tests.imagefactory import write_image, write_photo


def _bits(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def test_copies_hash_alike_and_different_photos_do_not(tmp_path):
    base = fingerprint(write_photo(tmp_path / "a.jpg", 1))
    for variant in ("reencoded", "resized", "jittered"):
        copy = fingerprint(write_photo(tmp_path / f"{variant}.jpg", 1, variant=variant))
        assert _bits(base["phash"], copy["phash"]) <= 8, variant
        assert copy["digest"] != base["digest"]
    cropped = fingerprint(write_photo(tmp_path / "cropped.jpg", 1, variant="cropped"))
    assert _bits(base["phash"], cropped["phash"]) <= 16
    others = [fingerprint(write_photo(tmp_path / f"o{s}.jpg", s))["phash"] for s in range(2, 12)]
    assert min(_bits(base["phash"], o) for o in others) > 16
    same = tmp_path / "same.jpg"
    same.write_bytes((tmp_path / "a.jpg").read_bytes())
    assert fingerprint(same) == base


def test_grey_statistics_tell_flat_dark_and_blurred_images(tmp_path):
    flat = fingerprint(write_image(tmp_path / "flat.png", "png", size=(64, 64), color=(120, 120, 120)))
    dark = fingerprint(write_image(tmp_path / "dark.png", "png", size=(64, 64), color=(10, 10, 10), noise=3))
    sharp = fingerprint(write_image(tmp_path / "sharp.png", "png", size=(128, 128), color=(128, 128, 128), noise=40))
    smooth = fingerprint(write_photo(tmp_path / "smooth.jpg", 3))
    assert flat["gray"][1] < 1 and dark["gray"][0] < 20
    assert sharp["gray"][2] > 10 * smooth["gray"][2]


def test_scan_records_carry_fingerprints_and_the_cache_keeps_them(tmp_path):
    root = tmp_path / "data"
    write_photo(root / "a" / "1.jpg", 1)
    write_photo(root / "b" / "2.jpg", 2)
    cache = tmp_path / "cache"
    first = scan(resolve_source(root), cache=cache, progress=False)
    again = scan(resolve_source(root), cache=cache, progress=False)
    assert again.cached == 2
    for r1, r2 in zip(first.records, again.records):
        assert r1.phash and r1.digest and len(r1.gray) == 3
        assert (r1.phash, r1.digest, r1.gray) == (r2.phash, r2.digest, r2.gray)


def test_pairs_groups_and_counts():
    hexes = ["0" * 16, "0" * 15 + "3", "f" * 16, None]
    pairs = near_pairs(hexes, 2)
    assert pairs.tolist() == [[0, 1, 2]]
    assert connected(5, [(0, 1), (1, 3)]) == [[0, 1, 3]]

    class R:
        def __init__(self, path, label, phash, digest):
            self.path, self.label, self.phash, self.digest, self.ok = path, label, phash, digest, True

    recs = [R("train/a/1", "a", "0" * 16, "x"), R("test/b/1", "b", "0" * 16, "x"),
            R("train/a/2", "a", "f" * 16, "y"), R("validation/a/3", "a", "f" * 15 + "e", "z")]
    assert pixel_groups(recs) == [[0, 1], [2, 3]]
    counts = duplicate_counts(recs, {r.path: r.path.split("/")[0] for r in recs})
    assert counts == {"exact_groups": 1, "near_groups": 1, "conflicting_label_groups": 1, "leak_groups": 2,
                      "leaked_validation_images": 1, "leaked_test_images": 1}
