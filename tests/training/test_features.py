"""The feature pipeline that trains a frozen backbone's head."""

import numpy as np
import pytest

from imgclf.training import features


def _arrays():
    rng = np.random.default_rng(0)
    plain = rng.normal(size=(10, 4)).astype(np.float32)  # rows 0..9 of the dataset
    train_rows = np.array([1, 3, 5, 7, 9])
    augmented = rng.normal(size=(2, 5, 4)).astype(np.float32)  # 2 augmented views of the train rows
    labels = np.arange(10, dtype=np.int32) % 3
    return plain, augmented, labels, train_rows


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_validation_batches_are_the_plain_features_in_order():
    plain, augmented, labels, train_rows = _arrays()
    rows = np.array([0, 2, 4, 6])
    ds = features.feature_dataset(plain, augmented, labels, rows, batch_size=3, shuffle=False, seed=0,
                                  one_hot=False, num_classes=3)
    x, y = _collect(ds)
    assert np.array_equal(x, plain[rows]) and np.array_equal(y, labels[rows])


def test_training_draws_a_view_per_image_afresh_each_epoch():
    plain, augmented, labels, train_rows = _arrays()
    ds = features.feature_dataset(plain, augmented, labels, train_rows, batch_size=2, shuffle=True, seed=1,
                                  one_hot=True, num_classes=3, train_rows=train_rows)
    seen = []
    for _ in range(6):
        x, y = _collect(ds)
        assert len(x) == len(train_rows)
        draw = {}
        for feats, onehot in zip(x, y):
            # each element is one of its own image's views, with that image's label
            (k, v), = [(k, v) for k, r in enumerate(train_rows)
                       for v, cand in enumerate([plain[r], augmented[0, k], augmented[1, k]])
                       if np.array_equal(feats, cand)]
            assert onehot.argmax() == labels[train_rows[k]]
            draw[k] = v
        assert sorted(draw) == list(range(len(train_rows)))
        seen.append(tuple(draw[k] for k in range(len(train_rows))))
    assert len(set(seen)) > 1  # not the same views every epoch
    assert {v for s in seen for v in s} == {0, 1, 2}  # every view is used


def test_the_shares_of_the_workers_partition_the_rows():
    for n in range(0, 30):
        for workers in range(1, 6):
            shares = [features.shard_of(n, i, workers) for i in range(workers)]
            covered = [p for s in shares for p in range(n)[s]]
            assert covered == list(range(n))  # every row once, in order
            sizes = [s.stop - s.start for s in shares]
            assert max(sizes) - min(sizes) <= 1


class _Built:
    """What extract_features needs of a built model: the "backbone" averages the pixels, the
    "augmentation" adds one to them (deterministic, so every view is known)."""

    def __init__(self):
        import keras

        self.feature_extractor = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D()])
        self.model = self.feature_extractor
        self.augmentation = lambda x, training=False: x + 1.0
        self.spec, self.alpha, self.weights_path, self.augment, self.feature_dim = _Named("fake"), None, None, None, 3


class _Named:
    def __init__(self, name):
        self.name = name


class _Data:
    """Eleven images; row 10 belongs to no split (a file that could not be read)."""

    images = np.random.default_rng(0).integers(0, 256, size=(11, 8, 8, 3), dtype=np.uint8)
    splits = {"train": np.array([0, 2, 3, 5, 7, 8]), "validation": np.array([1, 4]), "test": np.array([6, 9])}

    def decoded(self, image_size):
        return self.images

    def indices(self, split):
        return self.splits[split]

    def decode_key(self, image_size):
        return "eleven"


def _extract(folder, shard=(0, 1), timeout=60.0):
    return features.extract_features(_Built(), _Data(), 8, views=3, seed=0, folder=folder, batch_size=4,
                                     progress=False, shard=shard, timeout=timeout)


def _counting_batches(monkeypatch):
    """Count the images that go through the backbone."""
    seen = []
    original = features._batches

    def batches(images, indices, batch_size):
        seen.extend(int(i) for i in indices)
        yield from original(images, indices, batch_size)

    monkeypatch.setattr(features, "_batches", batches)
    return seen


def test_two_workers_compute_their_shares_once_and_get_the_whole_arrays(tmp_path, monkeypatch):
    import threading

    single = _extract(tmp_path / "single")
    seen = _counting_batches(monkeypatch)
    folder = tmp_path / "shared"
    out = {}
    other = threading.Thread(target=lambda: out.setdefault(1, _extract(folder, shard=(1, 2))))
    other.start()
    out[0] = _extract(folder, shard=(0, 2))
    other.join(60)
    for plain, augmented in out.values():  # the same arrays as one process, on every worker
        np.testing.assert_allclose(plain, single[0], atol=1e-5)
        np.testing.assert_allclose(augmented, single[1], atol=1e-5)
    assert not plain[10].any()  # the unread file's row stays 0
    records = features.shard_records(folder)
    assert [r["worker"] for r in records] == [0, 1]
    used, train = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [0, 2, 3, 5, 7, 8]
    assert sorted(r for rec in records for r in rec["rows"]) == used  # every row once
    assert sorted(r for rec in records for r in rec["view_rows"]) == train
    for rec in records:  # a worker's count: its plain rows and 2 augmented views of its training rows
        assert rec["images"] == len(rec["rows"]) + 2 * len(rec["view_rows"]) == 11
    assert len(seen) == 22  # no image went through the backbone twice
    # the shards' arrays are gone once assembled, their records stay; a resume computes nothing
    assert not list(folder.glob("features-*/*.npy"))
    seen.clear()
    for i in (1, 0):
        np.testing.assert_array_equal(_extract(folder, shard=(i, 2))[0], single[0])
    assert seen == [] and features.shard_records(folder) == records


def test_a_shard_that_never_arrives_is_a_one_line_error_naming_it(tmp_path):
    from imgclf.errors import RunError

    with pytest.raises(RunError) as chief:
        _extract(tmp_path, shard=(0, 2), timeout=0.3)
    message = str(chief.value)
    assert "\n" not in message and "shard-1-of-2.json" in message and "worker 1" in message
    with pytest.raises(RunError) as other:  # worker 1 has its shard, but the chief never assembles
        _extract(tmp_path, shard=(1, 2), timeout=0.3)
    message = str(other.value)
    assert "\n" not in message and "-plain.npy" in message and "chief" in message
    assert len(features.shard_records(tmp_path)) == 2  # both shards are kept for the next start
