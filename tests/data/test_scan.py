"""Scan: every file decoded once, good formats accepted, bad files listed with their reason."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclf.data.scan import REASONS, ImageRecord, ScanReport, check_file, natural_key, scan
from imgclf.data.sources import resolve_source
from imgclf.errors import DataError
from tests.imagefactory import (
    deny_open,
    ALL_BROKEN_KINDS, ALL_GOOD_FORMATS, BROKEN_EXTENSIONS, EXTENSIONS, FORMAT_INFO, FRAMES, make_class_tree,
    write_broken, write_image,
)

scan_mod = importlib.import_module("imgclf.data.scan")  # imgclf.data.scan is also a function

BROKEN_REASON = {
    "truncated_jpeg": "truncated",
    "zero_bytes": "zero_bytes",
    "text_as_jpg": "not_image",
    "corrupt_jpeg": "corrupt",
    "ppm": "unsupported",
}


def _scan(root, tmp_path, **kw) -> ScanReport:
    return scan(resolve_source(root), cache=tmp_path / "cache", progress=False, **kw)


def _fs(path: bytes) -> str:
    """A str path for raw (maybe non-UTF-8) bytes, as os.listdir would give it."""
    return os.fsdecode(path)


@pytest.fixture(scope="module")
def every_format(tmp_path_factory):
    """good/<fmt>.<ext> for every good format, bad/<kind>.<ext> for every broken kind, other/ ok."""
    root = tmp_path_factory.mktemp("formats")
    for fmt in ALL_GOOD_FORMATS:
        write_image(root / "good" / f"{fmt}{EXTENSIONS[fmt]}", fmt)
    for kind in ALL_BROKEN_KINDS:
        write_broken(root / "bad" / f"{kind}{BROKEN_EXTENSIONS[kind]}", kind)
    # another truncated format, and a WebP cut short
    full = write_image(root / "tmp.png", "png", size=(64, 48), noise=40).read_bytes()
    (root / "bad" / "truncated_png.png").write_bytes(full[: len(full) * 6 // 10])
    full = write_image(root / "tmp.webp", "webp", size=(64, 48), noise=40).read_bytes()
    (root / "bad" / "truncated_webp.webp").write_bytes(full[: len(full) * 6 // 10])
    (root / "tmp.png").unlink()
    (root / "tmp.webp").unlink()
    write_image(root / "bad" / "fine.png", "png")  # keeps the class usable
    write_image(root / "other" / "x.png", "png")
    return root


@pytest.mark.parametrize("fmt", ALL_GOOD_FORMATS)
def test_check_file_every_good_format(every_format, fmt):
    res = check_file(every_format / "good" / f"{fmt}{EXTENSIONS[fmt]}")
    assert res["ok"], res
    assert res["format"] == FORMAT_INFO[fmt][0]
    assert res["mode"] == FORMAT_INFO[fmt][1]
    # displayed size: 40x30, or 30x40 once the EXIF rotation (orientation 6) is applied
    expected = (30, 40) if fmt == "jpeg_exif_rotated" else (40, 30)
    assert (res["width"], res["height"]) == expected
    assert res["frames"] == FRAMES.get(fmt, 1)
    assert (res.get("warning") is not None) == (fmt == "png_as_jpg")  # used, with a warning


@pytest.mark.parametrize("kind", ALL_BROKEN_KINDS)
def test_check_file_every_broken_kind(every_format, kind):
    res = check_file(every_format / "bad" / f"{kind}{BROKEN_EXTENSIONS[kind]}")
    assert not res["ok"]
    assert res["reason"] == BROKEN_REASON[kind], res


@pytest.mark.parametrize("name", ["truncated_png.png", "truncated_webp.webp"])
def test_other_truncated_formats(every_format, name):
    assert check_file(every_format / "bad" / name)["reason"] == "truncated"


def test_extension_mismatch_is_used_and_says_what_it_holds(every_format):
    res = check_file(every_format / "good" / "png_as_jpg.jpg")
    assert res["ok"] and res["warning"] == "named .jpg but holds PNG; used as PNG"


def test_scan_reports_everything_and_deletes_nothing(every_format, tmp_path):
    before = sorted(p for p in every_format.rglob("*"))
    report = _scan(every_format, tmp_path)
    assert sorted(p for p in every_format.rglob("*")) == before  # nothing moved or deleted
    assert report.class_names == ["bad", "good", "other"]
    assert report.counts() == {"bad": 1, "good": len(ALL_GOOD_FORMATS), "other": 1}
    bad = {Path(r.path).name: r.reason for r in report.bad}
    assert bad == {**{f"{k}{BROKEN_EXTENSIONS[k]}": v for k, v in BROKEN_REASON.items()},
                   "truncated_png.png": "truncated", "truncated_webp.webp": "truncated"}
    assert not any(r.path in {b.path for b in report.bad} for r in report.valid)
    for r in report.bad:
        msg = r.message(report.root)
        assert r.path in msg and REASONS[r.reason] in msg and "\n" not in msg
    d = report.to_dict()
    assert d["valid"] == len(ALL_GOOD_FORMATS) + 2
    assert len(d["bad"]) == len(bad)
    assert d["formats"]["PNG"] >= 1 and d["formats"]["JPEG"] == 5
    sizes = report.size_summary()["good"]
    assert (sizes["min_w"], sizes["max_w"], sizes["min_h"], sizes["max_h"]) == (30, 40, 30, 40)


def test_second_scan_answers_from_cache(class_tree, tmp_path, monkeypatch):
    first = _scan(class_tree, tmp_path)
    assert first.cached == 0
    calls = []
    real = scan_mod.check_file
    monkeypatch.setattr(scan_mod, "check_file", lambda p: calls.append(p) or real(p))
    second = _scan(class_tree, tmp_path)
    assert second.cached == len(second.records) == 32
    assert calls == []
    assert [(r.path, r.ok, r.width) for r in second.records] == [(r.path, r.ok, r.width) for r in first.records]


def test_changed_file_is_scanned_again(class_tree, tmp_path):
    _scan(class_tree, tmp_path)
    victim = class_tree / "cats" / "cats_3.png"
    st = victim.stat()
    write_broken(victim, "text_as_jpg")  # now not an image
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    report = _scan(class_tree, tmp_path)
    assert report.cached == 31
    assert [(r.path, r.reason) for r in report.bad] == [("cats/cats_3.png", "not_image")]
    # only the mtime changes: still looked at again
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 9_000_000_000))
    assert _scan(class_tree, tmp_path).cached == 31


def test_no_cache(class_tree, tmp_path):
    _scan(class_tree, tmp_path)
    assert _scan(class_tree, tmp_path, use_cache=False).cached == 0


def test_unreadable_file_is_listed_and_looked_at_again(class_tree, tmp_path, monkeypatch):
    victim = class_tree / "dogs" / "dogs_0.png"
    with monkeypatch.context() as denied:
        deny_open(denied, victim)
        report = _scan(class_tree, tmp_path)
    assert [(r.path, r.reason) for r in report.bad] == [("dogs/dogs_0.png", "unreadable")]
    assert report.counts() == {"cats": 16, "dogs": 15}
    # permissions fixed (the mtime does not change): the file is looked at again
    again = _scan(class_tree, tmp_path)
    assert again.bad == [] and again.cached == 31


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_real_permissions(class_tree, tmp_path):
    victim = class_tree / "dogs" / "dogs_0.png"
    victim.chmod(0)
    try:
        report = _scan(class_tree, tmp_path)
    finally:
        victim.chmod(0o644)
    assert [(r.path, r.reason) for r in report.bad] == [("dogs/dogs_0.png", "unreadable")]


def test_symlink_loop_is_skipped_with_a_warning(class_tree, tmp_path):
    os.symlink(class_tree / "cats", class_tree / "cats" / "again")
    report = _scan(class_tree, tmp_path)
    assert report.counts() == {"cats": 16, "dogs": 16} and not report.bad
    assert report.warnings == [f"symbolic link loop skipped: {class_tree / 'cats' / 'again'} leads back to "
                               f"{class_tree / 'cats'}"]


def test_symlink_to_parent_loop(class_tree, tmp_path):
    os.symlink(class_tree, class_tree / "dogs" / "up")
    report = _scan(class_tree, tmp_path)
    assert report.counts() == {"cats": 16, "dogs": 16}  # no cat walked in as a dog
    assert len(report.warnings) == 1 and "dogs/up leads back to" in report.warnings[0]


def test_dangling_link_is_a_bad_file(class_tree, tmp_path):
    os.symlink(class_tree / "gone.png", class_tree / "cats" / "dangling.png")
    report = _scan(class_tree, tmp_path)
    assert [(r.path, r.reason) for r in report.bad] == [("cats/dangling.png", "unreadable")]


def test_non_utf8_file_name_is_a_bad_file(class_tree, tmp_path):
    name = _fs(os.fsencode(class_tree / "cats") + b"/caf\xe9.png")
    write_image(name, "png")
    report = _scan(class_tree, tmp_path)
    assert len(report.valid) == 32
    [bad] = report.bad
    assert bad.reason == "bad_name"
    assert "caf\\xe9.png" in bad.message(report.root)
    # and the cache copes with it on the next scan
    assert len(_scan(class_tree, tmp_path).valid) == 32


def test_non_utf8_sub_folder_is_a_bad_file(class_tree, tmp_path):
    write_image(_fs(os.fsencode(class_tree / "dogs") + b"/sub\xff/x.png"), "png")
    report = _scan(class_tree, tmp_path)
    assert [r.reason for r in report.bad] == ["bad_name"]


def test_non_utf8_class_folder(class_tree, tmp_path):
    write_image(_fs(os.fsencode(class_tree) + b"/bir\xf0s/x.png"), "png")
    with pytest.raises(DataError, match=r"class folder name is not valid UTF-8: .*bir\\xf0s"):
        _scan(class_tree, tmp_path)


def test_non_utf8_root_is_fine(tmp_path):
    root = Path(_fs(os.fsencode(tmp_path) + b"/d\xe9ta"))
    make_class_tree(root, {"a": 2, "b": 2}, size=(8, 8))
    report = _scan(root, tmp_path)
    assert len(report.valid) == 4 and report.bad == []


def test_natural_class_order(tmp_path):
    root = make_class_tree(tmp_path / "d", {"class_10": 1, "class_2": 1, "Class_1": 1, "class_1b": 1}, size=(8, 8))
    report = _scan(root, tmp_path)
    assert report.class_names == ["Class_1", "class_1b", "class_2", "class_10"]
    assert natural_key("img_9.png") < natural_key("img_10.png")


def test_hidden_and_stray_files(class_tree, tmp_path):
    (class_tree / "cats" / ".DS_Store").write_bytes(b"junk")
    (class_tree / "README.txt").write_text("about the data")
    (class_tree / ".hidden").mkdir()
    write_image(class_tree / ".hidden" / "x.png", "png")
    report = _scan(class_tree, tmp_path)
    assert report.class_names == ["cats", "dogs"]
    assert len(report.records) == 32
    assert report.ignored == ["README.txt"]


def test_nested_folders_belong_to_their_class(class_tree, tmp_path):
    write_image(class_tree / "cats" / "more" / "deeper" / "x.jpg", "jpeg")
    report = _scan(class_tree, tmp_path)
    assert report.counts() == {"cats": 17, "dogs": 16}
    assert "cats/more/deeper/x.jpg" in {r.path for r in report.valid}


def test_presplit_scan(tmp_path):
    root = tmp_path / "cd"
    make_class_tree(root / "train", {"cats": 3, "dogs": 2}, size=(8, 8))
    make_class_tree(root / "validation", {"cats": 1, "dogs": 2}, size=(8, 8))
    report = _scan(root, tmp_path)
    assert report.layout == "presplit"
    assert report.counts("train") == {"cats": 3, "dogs": 2}
    assert report.counts("validation") == {"cats": 1, "dogs": 2}
    assert report.baseline("train") == ("cats", 0.6)


def test_presplit_class_missing_from_train(tmp_path):
    root = tmp_path / "cd"
    make_class_tree(root / "train", {"cats": 1, "dogs": 1}, size=(8, 8))
    make_class_tree(root / "validation", {"cats": 1, "birds": 1}, size=(8, 8))
    with pytest.raises(DataError, match="'birds' appears in another split"):
        _scan(root, tmp_path)


@pytest.mark.parametrize("case, match", [
    ("empty", "no images found"),
    ("one_class", "only one class"),
    ("no_valid", "none of the"),
    ("empty_class", r"only one class \('cats'\) with usable images"),
])
def test_check_usable(tmp_path, case, match):
    root = tmp_path / "d"
    root.mkdir()
    if case == "one_class":
        make_class_tree(root, {"cats": 2}, size=(8, 8))
    elif case == "no_valid":
        write_broken(root / "cats" / "a.jpg", "zero_bytes")
        write_broken(root / "dogs" / "b.jpg", "text_as_jpg")
    elif case == "empty_class":
        make_class_tree(root, {"cats": 2}, size=(8, 8))
        write_broken(root / "dogs" / "b.jpg", "truncated_jpeg")
    report = _scan(root, tmp_path).keep_classes()
    with pytest.raises(DataError, match=match):
        report.check_usable()
    if case == "empty_class":
        assert report.class_names == ["cats"] and report.warnings == [
            f"class 'dogs' left out: no usable image (folder {root / 'dogs'})"]


def test_parallel_and_serial_agree(every_format, tmp_path):
    a = scan(resolve_source(every_format), use_cache=False, workers=1, progress=False)
    b = scan(resolve_source(every_format), use_cache=False, workers=4, progress=False)
    assert [(r.path, r.ok, r.reason, r.width) for r in a.records] == [(r.path, r.ok, r.reason, r.width) for r in b.records]


# -- decoding for the pipeline while checking ------------------------------------------------


@pytest.mark.parametrize("fit", ["stretch", "crop", "pad"])
def test_check_and_decode_gives_load_image_pixels(every_format, fit):
    from imgclf.data.images import load_image
    from imgclf.data.scan import check_and_decode

    for fmt in ALL_GOOD_FORMATS:
        path = every_format / "good" / f"{fmt}{EXTENSIONS[fmt]}"
        res, pixels = check_and_decode(path, (24, 20), interpolation="bicubic", fit=fit)
        assert res == check_file(path), fmt
        assert np.array_equal(pixels, load_image(path, (24, 20), interpolation="bicubic", fit=fit)), fmt


@pytest.mark.parametrize("kind", ALL_BROKEN_KINDS)
def test_check_and_decode_finds_the_same_faults(every_format, kind):
    from imgclf.data.scan import check_and_decode

    path = every_format / "bad" / f"{kind}{BROKEN_EXTENSIONS[kind]}"
    res, pixels = check_and_decode(path, 16)
    assert pixels is None
    assert res["reason"] == check_file(path)["reason"] == BROKEN_REASON[kind]


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="O_TMPFILE is Linux only")
def test_scan_pixels_become_a_file_without_a_copy(every_format, tmp_path):
    from imgclf.data.images import load_image
    from imgclf.data.pipeline import DiskArray

    report = _scan(every_format, tmp_path, decode=(16, "bilinear", "stretch"))
    target = tmp_path / "cache" / "decoded" / "all.npy"
    assert report.pixels.save_as(target)
    arr = DiskArray(target)
    assert arr.shape == (len(report.records), 16, 16, 3)
    for i, r in enumerate(report.records):
        if r.ok:
            assert np.array_equal(arr[i], load_image(report.root / r.path, 16, fit="stretch")), r.path
        else:
            assert not arr[i].any()  # a bad file's row stays black
    assert sorted(p.name for p in target.parent.iterdir()) == ["all.npy"]


def test_scan_keeps_decoded_pixels_off_memory(every_format, tmp_path):
    from imgclf.data.images import load_image

    report = _scan(every_format, tmp_path, decode=(16, "bilinear", "crop"))
    px = report.pixels
    assert px is not None and px.options == ((16, 16), "bilinear", "crop")
    assert set(px.rows) == {r.path for r in report.valid}  # bad files have none
    for r in report.valid:
        assert np.array_equal(px.get(r.path), load_image(report.root / r.path, 16, fit="crop"))
    assert px.get(report.bad[0].path) is None
    # the scratch file has no name: nothing is left in the cache folder
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.parent.name == "decoded"]
    assert px.complete  # every file was decoded now: row i is record i
    px.close()
    assert px.get(report.valid[0].path) is None
    # answered from the scan cache: nothing decoded, no pixels
    again = _scan(every_format, tmp_path, decode=(16, "bilinear", "crop"))
    assert again.pixels is None and again.cached == len(again.records)


def test_a_decompression_bomb_is_one_clean_sentence(tmp_path):
    from PIL import Image

    path = tmp_path / "bomb.png"
    Image.new("1", (12000, 16000)).save(path, optimize=True)  # 192 M pixels in a small file
    res = check_file(path)
    assert res["reason"] == "too_large"
    assert res["detail"] == "192,000,000 pixels, over the limit of 178,956,970"
    message = ImageRecord(path="cats/bomb.png", label="cats", **res).message()
    assert message == ("cats/bomb.png: too many pixels (possible decompression bomb): 192,000,000 pixels, "
                       "over the limit of 178,956,970; resize it")
