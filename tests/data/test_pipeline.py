"""The pipeline: decode once into a cache, then tf.data batches that reshuffle every epoch."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from imgclf.data import load_dataset
from imgclf.data.images import load_image
from imgclf.data.pipeline import check_options, decode_images, decode_key
from imgclf.errors import ConfigError, DataError
from tests.imagefactory import class_colours, make_class_tree, write_broken

pipeline_mod = importlib.import_module("imgclf.data.pipeline")

tf = pytest.importorskip("tensorflow")


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []

    def counting(path, *a, **k):
        calls.append(path)
        return load_image(path, *a, **k)

    monkeypatch.setattr(pipeline_mod, "load_image", counting)
    return calls


@pytest.fixture
def paths(class_tree):
    return sorted((class_tree / "cats").glob("*.png"))[:5] + sorted((class_tree / "dogs").glob("*.png"))[:5]


def _dataset(root, tmp_path, **kw):
    kw.setdefault("image_size", 16)
    return load_dataset(root, cache=tmp_path / "cache", progress=False, **kw)


def _signature(x) -> list[int]:
    """One number per image (the images are all distinct: noise)."""
    return [int(v) for v in np.asarray(x).astype(np.int64).sum(axis=(1, 2, 3))]


# -- the decode cache ------------------------------------------------------------------------


def test_a_decode_whose_temporary_file_another_run_removed_still_returns_every_row(paths, tmp_path, monkeypatch):
    """A run stopped for over an hour may find that another run took its half-written cache
    for a dead run's leftover and removed it: the run goes on, only the cache is lost."""
    from imgclf.io import TMP_PREFIX

    folder = tmp_path / "decoded"
    real = pipeline_mod._decode_into

    def decode_then_swept(*a, **k):
        real(*a, **k)
        for p in folder.glob(f"{TMP_PREFIX}*"):
            p.unlink()

    monkeypatch.setattr(pipeline_mod, "_decode_into", decode_then_swept)
    with pytest.warns(RuntimeWarning, match="could not keep the decoded images"):
        arr = decode_images(paths, 16, cache_folder=folder, progress=False)
    assert np.array_equal(np.asarray(arr), np.stack([load_image(p, 16) for p in paths]))
    assert not list(folder.iterdir())



def test_decode_cache_is_reused(paths, tmp_path, count_decodes):
    folder = tmp_path / "decoded"
    first = decode_images(paths, (16, 20), cache_folder=folder, progress=False)
    assert first.shape == (10, 16, 20, 3) and first.dtype == np.uint8
    assert len(count_decodes) == 10
    [npy] = folder.glob("*.npy")
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary left
    stamp = npy.stat().st_mtime_ns
    second = decode_images(paths, (16, 20), cache_folder=folder, progress=False)
    assert len(count_decodes) == 10  # nothing decoded the second time
    assert npy.stat().st_mtime_ns == stamp
    assert np.array_equal(first, second)
    for i, p in enumerate(paths):
        assert np.array_equal(second[i], load_image(p, (16, 20)))


def test_decode_cache_key_depends_on_options_and_files(paths, tmp_path):
    base = decode_key(paths, 16, "bilinear", "stretch")
    assert decode_key(paths, 16, "bilinear", "stretch") == base
    assert decode_key(paths, 17, "bilinear", "stretch") != base
    assert decode_key(paths, 16, "nearest", "stretch") != base
    assert decode_key(paths, 16, "bilinear", "crop") != base
    assert decode_key(paths[:-1], 16, "bilinear", "stretch") != base
    st = paths[0].stat()
    import os

    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert decode_key(paths, 16, "bilinear", "stretch") != base


def test_changed_file_is_decoded_again(paths, tmp_path, count_decodes):
    import os

    folder = tmp_path / "decoded"
    decode_images(paths, 16, cache_folder=folder, progress=False)
    st = paths[0].stat()
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    decode_images(paths, 16, cache_folder=folder, progress=False)
    assert len(count_decodes) == 20


def test_memory_mode_writes_nothing(paths, tmp_path):
    arr = decode_images(paths, 16, cache_mode="memory", cache_folder=tmp_path / "d", progress=False)
    assert arr.shape == (10, 16, 16, 3)
    assert not (tmp_path / "d").exists()


def test_file_broken_since_scan(paths, tmp_path):
    write_broken(paths[3], "truncated_jpeg")
    with pytest.raises(DataError, match="cannot be decoded any more"):
        decode_images(paths, 16, cache_folder=tmp_path / "d", progress=False)
    assert list((tmp_path / "d").iterdir()) == []  # no half-written cache


@pytest.mark.parametrize("kw, match", [
    (dict(image_size=4), "between 8 and 4096"),
    (dict(interpolation="magic"), "unknown interpolation"),
    (dict(fit="squash"), "unknown fit"),
    (dict(cache_mode="cloud"), "unknown cache"),
])
def test_options_checked(kw, match):
    args = dict(image_size=16, interpolation="bilinear", fit="stretch", cache_mode="disk") | kw
    with pytest.raises(ConfigError, match=match):
        check_options(args["image_size"], args["interpolation"], args["fit"], args["cache_mode"])


# -- tf.data ---------------------------------------------------------------------------------


def test_batches_shapes_and_dtypes(class_tree, tmp_path):
    ds = _dataset(class_tree, tmp_path)
    x, y = next(iter(ds.tf_dataset("train", batch_size=4)))
    assert x.dtype == tf.uint8 and tuple(x.shape) == (4, 16, 16, 3)  # as cached; models cast
    assert y.dtype == tf.int32 and tuple(y.shape) == (4,)
    xf, _ = next(iter(ds.tf_dataset("train", batch_size=4, dtype="float32")))
    assert xf.dtype == tf.float32 and np.array_equal(xf.numpy(), x.numpy().astype(np.float32))
    with pytest.raises(ConfigError, match="uint8 or float32"):
        ds.tf_dataset("train", dtype="float16")
    x, y = next(iter(ds.tf_dataset("train", batch_size=4, one_hot=True)))
    assert y.dtype == tf.float32 and tuple(y.shape) == (4, 2)
    assert np.allclose(y.numpy().sum(axis=1), 1)
    spec = ds.tf_dataset("validation", batch_size=4).element_spec
    assert tuple(spec[0].shape) == (None, 16, 16, 3)
    sizes = [int(b[0].shape[0]) for b in ds.tf_dataset("train", batch_size=4)]
    assert sum(sizes) == len(ds.records("train")) and max(sizes) == 4


def test_unshuffled_order_and_labels(class_tree, tmp_path):
    ds = _dataset(class_tree, tmp_path)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds.tf_dataset("validation", batch_size=4)])
    assert np.array_equal(np.concatenate(xs), ds.images("validation").astype(np.float32))
    assert np.array_equal(np.concatenate(ys), ds.labels("validation"))
    # the classes differ in colour: labels belong to their images
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    for label, colour in enumerate(class_colours(2)):
        assert np.abs(x[y == label].mean(axis=(0, 1, 2)) - colour).max() < 8


def test_shuffle_differs_each_epoch_but_covers_the_same_images(class_tree, tmp_path):
    ds = _dataset(class_tree, tmp_path)
    train = ds.tf_dataset("train", batch_size=5)  # shuffled by default
    epochs = [[s for x, _ in train for s in _signature(x)] for _ in range(3)]
    expected = sorted(_signature(ds.images("train")))
    assert all(sorted(e) == expected for e in epochs)
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
    assert len(set(map(tuple, epochs))) >= 2
    assert epochs[0] != _signature(ds.images("train"))  # shuffled at all


def test_shuffle_seeded(class_tree, tmp_path):
    ds = _dataset(class_tree, tmp_path)

    def first_epoch(seed):
        return [s for x, _ in ds.tf_dataset("train", batch_size=8, seed=seed) for s in _signature(x)]

    assert first_epoch(1) == first_epoch(1)
    assert first_epoch(1) != first_epoch(2)


def test_memory_disk_and_none_give_identical_pixels(class_tree, tmp_path):
    out = {}
    for mode in ("disk", "memory", "none"):
        ds = _dataset(class_tree, tmp_path, cache_mode=mode, fit="crop", interpolation="bicubic")
        out[mode] = {split: np.concatenate([np.concatenate([x.numpy().reshape(len(x), -1), y.numpy()[:, None]], 1)
                                            for x, y in ds.tf_dataset(split, batch_size=7, shuffle=False)])
                     for split in ("train", "validation", "test")}
    for split in out["disk"]:
        assert np.array_equal(out["disk"][split], out["memory"][split])
        assert np.array_equal(out["disk"][split], out["none"][split])
    assert list((tmp_path / "cache" / "decoded").glob("*.npy"))


def test_repeat_and_shard(class_tree, tmp_path):
    ds = _dataset(class_tree, tmp_path)
    n = len(ds.records("train"))
    assert sum(int(x.shape[0]) for x, _ in ds.tf_dataset("train", batch_size=4, shard=(2, 0))) == (n + 1) // 2
    batches = list(ds.tf_dataset("train", batch_size=4, repeat=True).take(20))
    assert len(batches) == 20


def test_natural_class_order_and_labels(tmp_path):
    root = make_class_tree(tmp_path / "d", {"class_10": 4, "class_2": 4, "class_1": 4}, size=(8, 8))
    ds = _dataset(root, tmp_path, validation=0.25, test=0.25)
    assert ds.class_names == ["class_1", "class_2", "class_10"]
    for split in ("train", "validation", "test"):
        names = [ds.class_names[i] for i in ds.labels(split)]
        assert names == [r.label for r in ds.records(split)]


def test_disk_array_rows(tmp_path):
    from imgclf.data.pipeline import DiskArray

    a = np.random.default_rng(0).integers(0, 256, (50, 4, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", a)
    d = DiskArray(tmp_path / "a.npy")
    assert d.shape == a.shape and len(d) == 50
    for rows in ([0], [3, 4, 5, 9, 10, 2, 49], [-1, -2], list(range(50)), [7, 7, 8], [49, 48, 47]):
        assert np.array_equal(d[np.array(rows)], a[rows]), rows
    assert np.array_equal(d[5], a[5])
    assert np.array_equal(d[2:9], a[2:9])
    assert np.array_equal(np.asarray(d), a)
    assert d[np.array([], dtype=np.int64)].shape == (0, 4, 5, 3)
    with pytest.raises(IndexError):
        d[np.array([50])]


def test_disk_array_damaged_file(tmp_path):
    from imgclf.data.pipeline import DiskArray

    np.save(tmp_path / "a.npy", np.zeros((10, 4, 4, 3), np.uint8))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "a.npy").write_bytes(data[: len(data) - 100])  # cut short
    d = DiskArray(tmp_path / "a.npy")
    assert d[np.array([0, 1])].shape == (2, 4, 4, 3)
    with pytest.raises(DataError, match="shorter than its header says"):
        d[np.array([9])]
