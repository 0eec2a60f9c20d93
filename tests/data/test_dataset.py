"""load_dataset: the one call from a folder to a scanned, split ImageDataset."""

from __future__ import annotations

import os

import numpy as np
import pytest

from imgclf.data import ImageDataset, load_dataset
from imgclf.data.split import SPLITS
from imgclf.errors import ConfigError, DataError
from tests.imagefactory import make_class_tree, write_broken


def _load(root, tmp_path, **kw):
    kw.setdefault("image_size", 16)
    return load_dataset(root, cache=tmp_path / "cache", progress=False, **kw)


def test_class_tree(class_tree, tmp_path):
    ds = _load(class_tree, tmp_path)
    assert isinstance(ds, ImageDataset)
    assert ds.class_names == ["cats", "dogs"] and ds.num_classes == 2
    assert ds.source.layout == "class_folders"
    assert ds.counts() == {"cats": 16, "dogs": 16}
    # 16 per class: test round(1.6) = 2, validation round(3.2) = 3, train the rest
    assert ds.counts("test") == {"cats": 2, "dogs": 2}
    assert ds.counts("validation") == {"cats": 3, "dogs": 3}
    assert ds.counts("train") == {"cats": 11, "dogs": 11}
    paths = [p for s in SPLITS for p in ds.paths(s)]
    assert len(paths) == len(set(paths)) == 32 and all(p.is_file() for p in paths)
    assert ds.baseline("test") == ("cats", 0.5)
    assert "train=22" in repr(ds)


def test_unbalanced_baseline(tmp_path):
    root = make_class_tree(tmp_path / "d", {"a": 30, "b": 10}, size=(8, 8))
    ds = _load(root, tmp_path, validation=0.2, test=0.2)
    assert ds.baseline("test") == ("a", 0.75)
    s = ds.summary()
    assert s["majority_class"] == "a" and s["baseline_accuracy"] == 0.75
    assert s["baseline_split"] == "validation"
    assert s["total"] == 40 and s["bad_files"] == 0
    assert s["counts"]["train"] == {"a": 18, "b": 6}


def test_presplit(tmp_path):
    root = tmp_path / "cd"
    make_class_tree(root / "train", {"cats": 6, "dogs": 4}, size=(8, 8))
    make_class_tree(root / "validation", {"cats": 5, "dogs": 5}, size=(8, 8))
    ds = _load(root, tmp_path)
    assert ds.source.layout == "presplit"
    assert ds.counts("train") == {"cats": 6, "dogs": 4}
    assert ds.counts("validation") == {"cats": 4, "dogs": 4}
    assert ds.counts("test") == {"cats": 1, "dogs": 1}
    assert ds.baseline("validation") == ("cats", 0.5)


def test_bad_files_are_left_out(class_tree, tmp_path):
    write_broken(class_tree / "cats" / "broken.jpg", "truncated_jpeg")
    write_broken(class_tree / "dogs" / "empty.jpg", "zero_bytes")
    ds = _load(class_tree, tmp_path)
    assert ds.counts() == {"cats": 16, "dogs": 16}
    assert {r.path for r in ds.report.bad} == {"cats/broken.jpg", "dogs/empty.jpg"}
    assert ds.summary()["bad_files"] == 2
    bad_rows = [i for i, r in enumerate(ds.report.records) if not r.ok]
    used = np.concatenate([ds.indices(s) for s in SPLITS])
    assert len(used) == 32 and not set(bad_rows) & set(used.tolist())  # no bad file reaches the pipeline
    assert sum(int(x.shape[0]) for s in SPLITS for x, _ in ds.tf_dataset(s, batch_size=8)) == 32
    uncached = _load(class_tree, tmp_path, cache_mode="none")  # decoded on the fly: bad files skipped too
    assert sum(int(x.shape[0]) for s in SPLITS for x, _ in uncached.tf_dataset(s, batch_size=8)) == 32
    assert (class_tree / "cats" / "broken.jpg").exists()


def test_splits_saved_and_reused(class_tree, tmp_path):
    ds = _load(class_tree, tmp_path, seed=3)
    folder = ds.save_splits(tmp_path / "run" / "splits")
    again = _load(class_tree, tmp_path, seed=99, splits=folder)  # the lists win over the seed
    for s in SPLITS:
        assert [r.path for r in again.records(s)] == [r.path for r in ds.records(s)]


def test_images_match_records(class_tree, tmp_path):
    from imgclf.data.images import load_image

    ds = _load(class_tree, tmp_path, image_size=(12, 20))
    imgs = ds.images("validation")
    assert imgs.shape == (6, 12, 20, 3)
    assert np.array_equal(imgs[2], load_image(ds.paths("validation")[2], (12, 20)))
    assert ds.decoded(8)[ds.indices("validation")].shape == (6, 8, 8, 3)


def test_sample_keeps_aspect_ratio(tmp_path):
    root = make_class_tree(tmp_path / "d", {"a": 4, "b": 4}, size=(600, 300))
    ds = _load(root, tmp_path)
    sample = ds.sample(2, max_side=100)
    assert sorted(sample) == ["a", "b"]
    assert all(img.shape == (50, 100, 3) for imgs in sample.values() for img in imgs)


def test_unknown_split(class_tree, tmp_path):
    ds = _load(class_tree, tmp_path)
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        ds.records("val")


def test_unusable_data(tmp_path):
    root = make_class_tree(tmp_path / "d", {"only": 3}, size=(8, 8))
    with pytest.raises(DataError, match="only one class"):
        _load(root, tmp_path)


def test_options_checked_before_scanning(tmp_path):
    with pytest.raises(ConfigError, match="unknown fit"):
        _load(tmp_path / "does-not-matter", tmp_path, fit="squash")


def test_first_pass_decodes_each_file_once(tmp_path, monkeypatch):
    import importlib

    from tests.imagefactory import write_image

    pipeline = importlib.import_module("imgclf.data.pipeline")
    root = make_class_tree(tmp_path / "d", {"a": 5, "b": 5}, size=(40, 30), fmt=["jpeg", "png", "jpeg_exif_rotated"])
    write_image(root / "a" / "cmyk.jpg", "jpeg_cmyk")
    write_broken(root / "b" / "cut.jpg", "truncated_jpeg")
    calls = []
    real = pipeline.load_image
    monkeypatch.setattr(pipeline, "load_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))

    fused = load_dataset(root, image_size=16, fit="pad", cache=tmp_path / "c1", progress=False)
    assert fused.report.pixels is not None
    pixels = np.asarray(fused.decoded())
    assert calls == []  # every image came from the scan
    assert fused.report.pixels is None  # taken and closed
    # the scan's pixels became the decode cache (named behind the run's back): a later load
    # in the same process reads them at once, decoding nothing
    again = load_dataset(root, image_size=16, fit="pad", cache=tmp_path / "c1", progress=False)
    assert again.report.pixels is None and np.array_equal(np.asarray(again.decoded()), pixels)
    assert calls == []
    assert len(list((tmp_path / "c1" / "decoded").glob("*.npy"))) == 1
    assert not [p for p in (tmp_path / "c1" / "decoded").iterdir() if p.name.startswith(".")]
    for split in SPLITS:
        rows = fused.indices(split)
        expected = [real(p, 16, fit="pad") for p in fused.paths(split)]
        assert np.array_equal(pixels[rows], np.array(expected).reshape(len(rows), 16, 16, 3)), split

    plain = load_dataset(root, image_size=16, fit="pad", cache=tmp_path / "c2", progress=False, predecode=False)
    assert plain.report.pixels is None
    assert np.array_equal(np.asarray(plain.decoded()), pixels)
    assert len(calls) == 11
    # another size than the one scanned for is decoded the usual way
    calls.clear()
    other = load_dataset(root, image_size=16, fit="pad", cache=tmp_path / "c3", progress=False)
    assert other.decoded(12).shape == (12, 12, 12, 3)  # a row per file found; the bad one stays black
    assert len(calls) == 11


def test_files_added_after_a_scan(tmp_path, monkeypatch):
    """The scan decodes only the new file; the cache is built from its pixels and the old ones."""
    import importlib

    from tests.imagefactory import write_image

    pipeline = importlib.import_module("imgclf.data.pipeline")
    root = make_class_tree(tmp_path / "d", {"a": 4, "b": 4}, size=(40, 30))
    load_dataset(root, image_size=16, cache=tmp_path / "c", progress=False).decoded()
    write_image(root / "a" / "new.png", "png")
    calls = []
    real = pipeline.load_image
    monkeypatch.setattr(pipeline, "load_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    ds = load_dataset(root, image_size=16, cache=tmp_path / "c", progress=False)
    assert ds.report.cached == 8 and ds.report.pixels is not None
    pixels = np.asarray(ds.decoded())
    assert len(calls) == 8  # the old files, decoded for the new cache; the new one came from the scan
    for split in SPLITS:
        for row, path in zip(ds.indices(split), ds.paths(split)):
            assert np.array_equal(pixels[row], real(path, 16)), path


def test_no_predecode_without_a_decode_cache(class_tree, tmp_path):
    ds = _load(class_tree, tmp_path, cache_mode="none")
    assert ds.report.pixels is None


def test_a_row_the_scan_could_not_write_is_decoded_again(tmp_path, monkeypatch):
    """A scratch row lost to a full disk never becomes a black image in the cache."""
    import importlib

    scan = importlib.import_module("imgclf.data.scan")
    root = make_class_tree(tmp_path / "d", {"a": 4, "b": 4}, size=(40, 30))
    real_write = scan.ScanPixels.write

    def write(self, row, pixels):
        if row == 2:
            raise OSError(28, "No space left on device")
        return real_write(self, row, pixels)

    monkeypatch.setattr(scan.ScanPixels, "write", write)
    ds = load_dataset(root, image_size=16, cache=tmp_path / "c", progress=False)
    assert ds.report.pixels is not None and not ds.report.pixels.complete
    pixels = np.asarray(ds.decoded())
    from imgclf.data.images import load_image

    for split in SPLITS:
        for row, path in zip(ds.indices(split), ds.paths(split)):
            assert np.array_equal(pixels[row], load_image(path, 16)), path


def test_a_cache_that_cannot_be_named_is_said_and_the_run_goes_on(tmp_path, monkeypatch):
    from imgclf import io
    from imgclf.data.images import load_image

    root = make_class_tree(tmp_path / "d", {"a": 4, "b": 4}, size=(40, 30))
    real_link = os.link

    def link(src, dst, *a, **k):
        if str(src).startswith("/proc/self/fd/"):
            raise OSError(31, "Too many links")
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(os, "link", link)
    ds = load_dataset(root, image_size=16, cache=tmp_path / "c", progress=False)
    with pytest.warns(RuntimeWarning, match="could not keep the decoded images"):
        pixels = np.asarray(ds.decoded())
        io.wait_for()
    for split in SPLITS:
        for row, path in zip(ds.indices(split), ds.paths(split)):
            assert np.array_equal(pixels[row], load_image(path, 16)), path
    assert not list((tmp_path / "c" / "decoded").iterdir())  # nothing half-named left behind


def test_what_killed_runs_left_in_the_shared_cache_is_swept(tmp_path):
    import time

    from imgclf.io import TMP_PREFIX

    root = make_class_tree(tmp_path / "d", {"a": 4, "b": 4}, size=(40, 30))
    decoded = tmp_path / "c" / "decoded"
    decoded.mkdir(parents=True)
    left = [decoded / f"{TMP_PREFIX}decoding.x1.npy", decoded / f"{TMP_PREFIX}9999.0123abcd.npy"]
    busy = decoded / f"{TMP_PREFIX}decoding.y2.npy"  # another run writing right now
    for p in (*left, busy):
        p.write_bytes(b"\0" * 1000)
    yesterday = time.time() - 86400
    for p in left:
        os.utime(p, (yesterday, yesterday))
    load_dataset(root, image_size=16, cache=tmp_path / "c", progress=False).decoded()  # scans: decodes into the cache
    load_dataset(root, image_size=12, cache=tmp_path / "c", progress=False).decoded(12)
    assert not any(p.exists() for p in left)
    assert busy.exists()


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="O_TMPFILE is Linux only")
def test_a_scan_named_hours_later_is_not_taken_for_a_leftover(tmp_path, monkeypatch):
    """decoded() called long after the scan: the name given to the scan's file must not look
    like a dead run's leftover to a sweep by another run at that very moment."""
    import time

    from imgclf import io

    root = make_class_tree(tmp_path / "d", {"a": 4, "b": 4}, size=(40, 30))
    ds = load_dataset(root, image_size=16, cache=tmp_path / "c", progress=False)
    hours_ago = time.time() - 3 * 3600
    os.utime(ds.report.pixels.reader_path, (hours_ago, hours_ago))  # the scan, hours ago
    real_replace = os.replace

    def replace_after_a_sweep(src, dst, *a, **k):
        io.remove_partial(os.path.dirname(os.fspath(dst)), io.STALE_AFTER_S)  # another run sweeps the shared cache now
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace_after_a_sweep)
    ds.decoded()
    io.wait_for()
    assert len(list((tmp_path / "c" / "decoded").glob("*.npy"))) == 1
