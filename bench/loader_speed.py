#!/usr/bin/env python3
"""The input pipeline on the TensorFlow backend: ``tf.data`` (imgclf's path there) against the
``keras.utils.PyDataset`` the JAX and PyTorch backends use, in one process.

A small model (global average pooling and a dense layer) is fitted on 2,000 cached 160x160
images for a few epochs with each pipeline, so that the time is mostly the pipeline's.

    python bench/loader_speed.py [--images 2000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _common import REPO, machine

sys.path.insert(0, str(REPO / "src"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    a = p.parse_args()
    import keras

    from imgclf.data import loader, pipeline

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (a.images, 160, 160, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, a.images).astype(np.int32)
    rows = np.arange(a.images)
    pipelines = {
        "tf.data": lambda: pipeline.make_dataset(images, labels, rows, batch_size=a.batch_size, shuffle=True, seed=1),
        "PyDataset": lambda: loader.image_batches(images, labels, rows, batch_size=a.batch_size, shuffle=True,
                                                  seed=1, num_classes=2, one_hot=False),
    }
    print(f"machine: {machine()}; Keras backend {keras.backend.backend()}; {a.images} images 160x160, "
          f"{a.epochs} epochs")
    for name, make in pipelines.items():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((160, 160, 3)), keras.layers.Rescaling(1 / 255),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        data = make()
        model.fit(data, epochs=1, verbose=0)  # compiling, warming up
        t = time.time()
        model.fit(data, epochs=a.epochs, verbose=0)
        wall = time.time() - t
        print(f"{name:10} {wall:7.2f} s  {a.images * a.epochs / wall:8.0f} images/s")


if __name__ == "__main__":
    main()
