"""Reviewed lists: what they change, and one clear line for every mistake in them."""

from __future__ import annotations

import pytest

import imgclf
from imgclf.errors import ConfigError
from tests.imagefactory import make_class_tree


@pytest.fixture
def tree(tmp_path):
    return make_class_tree(tmp_path / "data", {"cats": 8, "dogs": 8}, size=(16, 16))


def _load(root, **kw):
    return imgclf.load_dataset(root, image_size=16, validation=0.25, test=0.25, progress=False, **kw)


def _all(ds):
    return {r.path: r.label for s in ("train", "validation", "test") for r in ds.splits[s]}


def test_a_reviewed_csv_drops_and_relabels_and_a_plain_list_does_too(tree, tmp_path):
    csv = tmp_path / "issues.csv"
    csv.write_text("path,issue,score,action\n"
                   "cats/cats_0.png,label,0.1,drop\n"
                   "cats/cats_1.png,label,0.1,relabel:dogs\n"
                   "cats/cats_2.png,leak,1.0,keep\n"
                   "dogs/dogs_0.png,blurry,0.0,\n")
    ds = _load(tree, exclude=csv, relabel=csv)
    seen = _all(ds)
    assert "cats/cats_0.png" not in seen and seen["cats/cats_1.png"] == "dogs"
    assert seen["cats/cats_2.png"] == "cats" and seen["dogs/dogs_0.png"] == "dogs"
    assert len(seen) == 15 and ds.review.excluded == ["cats/cats_0.png"]
    assert ds.review.relabelled == {"cats/cats_1.png": ("cats", "dogs")}
    assert ds.counts() == {"cats": 6, "dogs": 9}

    plain = tmp_path / "drop.txt"
    plain.write_text("# two files\ncats/cats_3.png\n" + str(tree / "dogs" / "dogs_5.png") + "\n")
    moves = tmp_path / "moves.tsv"
    moves.write_text("dogs/dogs_1.png\tcats\n")
    ds = _load(tree, exclude=plain, relabel=moves)
    seen = _all(ds)
    assert "cats/cats_3.png" not in seen and "dogs/dogs_5.png" not in seen and seen["dogs/dogs_1.png"] == "cats"


def test_the_applied_lists_are_saved_in_a_form_read_back_the_same(tree, tmp_path):
    csv = tmp_path / "issues.csv"
    csv.write_text("path,action\ncats/cats_0.png,drop\ndogs/dogs_2.png,relabel:cats\n")
    ds = _load(tree, exclude=csv, relabel=csv)
    saved = ds.review.save(tmp_path / "review")
    again = _load(tree, exclude=saved["exclude"], relabel=saved["relabel"])
    assert _all(again) == _all(ds)
    assert again.review.to_dict()["excluded"] == 1 and again.review.to_dict()["relabelled"] == 1


@pytest.mark.parametrize("text, message", [
    ("path,action\ncats/nope.png,drop\n", r"issues.csv:2 names 'cats/nope.png', which is not an image of"),
    ("path,action\ncats/cats_0.png,relabel:horses\n", r"issues.csv:2: unknown class 'horses'; the classes are: cats, dogs"),
    ("path,action\ncats/cats_0.png,delete\n", r"issues.csv:2: unknown action 'delete'; use one of: keep, drop, relabel:CLASS"),
])
def test_a_bad_reviewed_csv_is_one_clear_line(tree, tmp_path, text, message):
    csv = tmp_path / "issues.csv"
    csv.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        _load(tree, exclude=csv, relabel=csv)
    assert "\n" not in str(e.value)


def test_a_missing_list_or_a_plain_relabel_without_class_is_a_clear_error(tree, tmp_path):
    with pytest.raises(ConfigError, match="reviewed list .*missing.csv does not exist"):
        _load(tree, exclude=tmp_path / "missing.csv")
    bare = tmp_path / "bare.txt"
    bare.write_text("cats/cats_0.png\n")
    with pytest.raises(ConfigError, match=r"bare.txt:1: no class for 'cats/cats_0.png'"):
        _load(tree, relabel=bare)


def test_a_list_naming_files_of_classes_not_read_leaves_them_and_says_so(tmp_path):
    root = make_class_tree(tmp_path / "data", {"cats": 8, "dogs": 8, "birds": 8}, size=(16, 16))
    csv = tmp_path / "issues.csv"  # written by an audit of every class
    csv.write_text("path,issue,score,action\n"
                   "birds/birds_0.png,label,0.1,drop\n"
                   "cats/cats_0.png,label,0.1,drop\n")
    ds = _load(root, classes="cats,dogs", exclude=csv)
    assert ds.class_names == ["cats", "dogs"] and "cats/cats_0.png" not in _all(ds)
    assert ds.review.excluded == ["cats/cats_0.png"]
    assert any("1 row(s) of the reviewed lists name files of classes not read" in w for w in ds.report.warnings)


def test_a_file_relabelled_into_a_class_left_out_is_left_out_and_not_saved_as_relabelled(tmp_path):
    root = make_class_tree(tmp_path / "data", {"cats": 8, "dogs": 8, "birds": 2}, size=(16, 16))
    plain = tmp_path / "moves.txt"
    plain.write_text("cats/cats_0.png,birds\n")
    ds = _load(root, relabel=plain, min_images=4)  # birds (3 images with the move) is left out
    assert ds.class_names == ["cats", "dogs"] and "cats/cats_0.png" not in _all(ds)
    assert ds.review.relabelled == {}
