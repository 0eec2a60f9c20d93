"""The feature pipeline that trains a frozen backbone's head."""

import numpy as np

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
