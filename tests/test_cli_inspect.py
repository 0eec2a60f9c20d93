"""`imgclf inspect DATA`: the summary, both figures, summary.json; one clear line on bad input."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from tests.imagefactory import deny_open, make_class_tree, write_broken, write_image


@pytest.fixture
def inspect(cli, tmp_path):
    def run(data, *extra):
        return cli("inspect", data, "-o", tmp_path / "out", "--cache-dir", tmp_path / "cache", "-q", *extra)

    return run


def _assert_one_line_error(code, out, err, *fragments):
    assert code == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("imgclf: error: ")
    for f in fragments:
        assert f in lines[0], lines[0]


def test_inspect_summary_and_figures(inspect, class_tree, tmp_path):
    code, out, err = inspect(class_tree)
    assert code == 0, err
    assert "Traceback" not in err
    assert f"data      {class_tree}" in out
    assert "classes   2: cats, dogs" in out
    assert "images    32 valid, 0 bad, 0 ignored" in out
    assert "formats   PNG 32" in out
    assert "cats: width 32-32" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("class "))
    assert lines[header].split() == ["class", "train", "validation", "test", "total"]
    assert lines[header + 1].split() == ["cats", "11", "3", "2", "16"]
    assert lines[header + 2].split() == ["dogs", "11", "3", "2", "16"]
    assert "majority baseline: 50.0% on validation" in out
    figures = tmp_path / "out" / "figures"
    for name in ("samples.png", "label_frequencies.png"):
        assert f"figure    {figures / name}" in out
        with Image.open(figures / name) as im:
            assert im.format == "PNG" and min(im.size) > 100
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["class_names"] == ["cats", "dogs"]
    assert summary["counts"]["train"] == {"cats": 11, "dogs": 11}
    assert summary["total"] == 32 and summary["bad"] == []
    assert summary["baseline_accuracy"] == 0.5
    assert summary["formats"] == {"PNG": 32}


def test_inspect_presplit(inspect, tmp_path):
    root = tmp_path / "cd"
    make_class_tree(root / "train", {"cats": 4, "dogs": 6}, size=(16, 16))
    make_class_tree(root / "validation", {"cats": 5, "dogs": 5}, size=(16, 16))
    code, out, err = inspect(root)
    assert code == 0, err
    assert "(presplit)" in out
    lines = [line.split() for line in out.splitlines()]
    assert ["cats", "4", "4", "1", "9"] in lines
    assert ["dogs", "6", "4", "1", "11"] in lines


def test_inspect_lists_bad_files_and_goes_on(inspect, class_tree, tmp_path):
    write_broken(class_tree / "cats" / "cut.jpg", "truncated_jpeg")
    write_broken(class_tree / "cats" / "empty.jpg", "zero_bytes")
    write_broken(class_tree / "dogs" / "notes.jpg", "text_as_jpg")
    write_image(class_tree / "dogs" / "really_png.jpg", "png_as_jpg")  # used, with a warning
    write_image(class_tree / "dogs" / "scan.tif", "tiff16")  # read
    write_broken(class_tree / "dogs" / "photo.ppm", "ppm")
    write_broken(class_tree / "dogs" / "garbage.jpg", "corrupt_jpeg")
    code, out, err = inspect(class_tree)
    assert code == 0, err
    assert "images    34 valid, 5 bad" in out
    assert "6 problem(s) (bad files are left out of training; nothing was moved or deleted):" in out
    problems = out.split("problem(s)")[1]  # every problem after the whole report
    for name, words in [("cats/cut.jpg", "truncated"), ("cats/empty.jpg", "empty file"),
                        ("dogs/notes.jpg", "not an image"), ("dogs/really_png.jpg", "holds PNG; used as PNG"),
                        ("dogs/photo.ppm", "unsupported image format: PPM"), ("dogs/garbage.jpg", "corrupt")]:
        line = next(line for line in problems.splitlines() if name in line)
        assert words in line
        assert (class_tree / name).exists()  # never deleted or moved
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {b["path"]: b["reason"] for b in summary["bad"]} == {
        "cats/cut.jpg": "truncated", "cats/empty.jpg": "zero_bytes", "dogs/notes.jpg": "not_image",
        "dogs/photo.ppm": "unsupported", "dogs/garbage.jpg": "corrupt"}
    assert summary["renamed"] == [{"path": "dogs/really_png.jpg", "warning": "named .jpg but holds PNG; used as PNG"}]
    assert summary["formats"] == {"PNG": 33, "TIFF": 1}


def test_inspect_unreadable_and_badly_named_files_are_listed(inspect, class_tree, monkeypatch):
    victim = class_tree / "dogs" / "dogs_1.png"
    write_image(os.fsdecode(os.fsencode(class_tree / "cats") + b"/na\xefve.png"), "png")
    if os.geteuid() == 0:
        deny_open(monkeypatch, victim)
    else:
        victim.chmod(0)
    try:
        code, out, err = inspect(class_tree)
    finally:
        victim.chmod(0o644)
    assert code == 0, err
    assert "images    31 valid, 2 bad" in out
    assert "dogs/dogs_1.png: cannot be read" in out
    assert "cats/na\\xefve.png: file name is not valid UTF-8" in out


def test_inspect_non_utf8_data_folder(inspect, tmp_path):
    root = os.fsdecode(os.fsencode(tmp_path) + b"/d\xe9j\xe0")
    make_class_tree(root, {"a": 3, "b": 3}, size=(16, 16))
    code, out, err = inspect(root)
    assert code == 0, err
    assert "d\\xe9j\\xe0" in out


# -- bad input: one line, exit status 2 -------------------------------------------------------


def test_wrong_path(inspect, tmp_path):
    _assert_one_line_error(*inspect(tmp_path / "nowhere"), "no such file or folder", "nowhere")


def test_plain_file(inspect, tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    _assert_one_line_error(*inspect(tmp_path / "x.txt"), "is a file, not a folder")


def test_empty_folder(inspect, tmp_path):
    (tmp_path / "empty").mkdir()
    _assert_one_line_error(*inspect(tmp_path / "empty"), "no images found in", "empty")
    assert not (tmp_path / "out").exists()


def test_images_without_class_folders(inspect, tmp_path):
    write_image(tmp_path / "flat" / "a.png", "png")
    _assert_one_line_error(*inspect(tmp_path / "flat"), "no images found", "one sub-folder of images per class")


def test_single_class(inspect, tmp_path):
    make_class_tree(tmp_path / "one", {"cats": 3}, size=(8, 8))
    _assert_one_line_error(*inspect(tmp_path / "one"), "only one class ('cats')")


def test_class_without_valid_image(inspect, tmp_path):
    root = make_class_tree(tmp_path / "d", {"cats": 3}, size=(8, 8))
    write_broken(root / "dogs" / "a.jpg", "zero_bytes")
    write_broken(root / "dogs" / "b.jpg", "truncated_jpeg")
    code, out, err = inspect(root)
    _assert_one_line_error(code, out, err, "only one class ('cats') with usable images")
    # the whole report came first, then every problem
    assert "classes   1: cats" in out and "3 problem(s)" in out
    assert f"class 'dogs' left out: no usable image (folder {root / 'dogs'})" in out
    assert "dogs/a.jpg: empty file" in out and "dogs/b.jpg: truncated" in out


def test_empty_class_is_left_out_and_the_rest_is_used(inspect, class_tree):
    (class_tree / "birds").mkdir()
    code, out, err = inspect(class_tree)
    assert code == 0, err
    assert "classes   2: cats, dogs" in out
    assert f"class 'birds' left out: no usable image (folder {class_tree / 'birds'})" in out
    # unless the user asked for it
    _assert_one_line_error(*inspect(class_tree, "--classes", "dogs,birds"), "class 'birds' has no usable image")


def test_classes_and_min_images(inspect, class_tree, tmp_path):
    make_class_tree(class_tree, {"class_10": 5, "class_2": 2}, size=(16, 16))
    code, out, err = inspect(class_tree, "--classes", "dogs,class_10,cats")
    assert code == 0, err
    assert "classes   3: dogs, class_10, cats" in out  # in the order given
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["class_names"] == ["dogs", "class_10", "cats"]
    code, out, err = inspect(class_tree, "--min-images", "4")
    assert code == 0, err
    assert "classes   3: cats, class_10, dogs" in out
    assert "class 'class_2' left out: only 2 usable images" in out and "--min-images 4" in out
    _assert_one_line_error(*inspect(class_tree, "--classes", "cats,wolves"), "class 'wolves' has no folder")
    _assert_one_line_error(*inspect(class_tree, "--min-images", "0"), "--min-images must be")


def test_system_clutter_is_ignored_and_counted(inspect, class_tree):
    (class_tree / "cats" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 not an image")
    (class_tree / "dogs" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (class_tree / "dogs" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (class_tree / "dogs" / "._dogs_1.png").write_bytes(b"\0\5\26\7 AppleDouble")
    write_image(class_tree / "__MACOSX" / "cats" / "._x.png", "png")
    write_image(class_tree / "cats" / ".ipynb_checkpoints" / "x-checkpoint.png", "png")
    code, out, err = inspect(class_tree)
    assert code == 0, err
    assert "classes   2: cats, dogs" in out  # __MACOSX is no class
    assert "images    32 valid, 0 bad, 6 ignored (6 system or hidden files)" in out
    assert "problem" not in out


def test_no_valid_image_at_all(inspect, tmp_path):
    write_broken(tmp_path / "d" / "cats" / "a.jpg", "zero_bytes")
    write_broken(tmp_path / "d" / "dogs" / "b.jpg", "text_as_jpg")
    _assert_one_line_error(*inspect(tmp_path / "d"), "none of the 2 files")


def test_unreadable_folder(inspect, class_tree, monkeypatch):
    if os.geteuid() == 0:  # root reads everything: simulate a folder we may not list
        real = os.scandir

        def guarded(path="."):
            if Path(path) == class_tree / "dogs":
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", guarded)
    else:
        (class_tree / "dogs").chmod(0)
    try:
        result = inspect(class_tree)
    finally:
        (class_tree / "dogs").chmod(0o755)
    _assert_one_line_error(*result, "cannot read folder", "dogs", "permission denied")


def test_unreadable_data_root(inspect, class_tree, monkeypatch):
    import importlib

    sources = importlib.import_module("imgclf.data.sources")
    real = os.access
    monkeypatch.setattr(sources.os, "access",
                        lambda p, m, **k: False if Path(p) == class_tree else real(p, m, **k))
    _assert_one_line_error(*inspect(class_tree), "cannot read folder", "permission denied")


def test_symlink_loop_is_skipped_with_a_warning(inspect, class_tree):
    os.symlink(class_tree / "dogs", class_tree / "dogs" / "loop")
    code, out, err = inspect(class_tree)
    assert code == 0, err
    assert "images    32 valid, 0 bad" in out
    assert f"symbolic link loop skipped: {class_tree / 'dogs' / 'loop'} leads back to {class_tree / 'dogs'}" in out


def test_non_utf8_class_folder(inspect, class_tree):
    write_image(os.fsdecode(os.fsencode(class_tree) + b"/ch\xe8vres/x.png"), "png")
    _assert_one_line_error(*inspect(class_tree), "class folder name is not valid UTF-8", "ch\\xe8vres")


def test_non_utf8_missing_path(inspect, tmp_path):
    _assert_one_line_error(*inspect(os.fsdecode(os.fsencode(tmp_path) + b"/gone\xff")),
                           "no such file or folder", "gone\\xff")


def test_offline_known_name(inspect, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.chdir(tmp_path)
    _assert_one_line_error(*inspect("cats_and_dogs_filtered"), "cannot be downloaded",
                           str(tmp_path / "keras" / "datasets"))

