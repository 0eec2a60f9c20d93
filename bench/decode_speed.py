#!/usr/bin/env python3
"""Decode speed: imgclf's scan + decode cache against keras.utils.image_dataset_from_directory.

Over the 3,000 images of cats_and_dogs_filtered, at 160x160, in one run on the same machine:

1. keras: ``image_dataset_from_directory`` on train/ and validation/ (batch 32, image_size 160),
   each iterated once (what one epoch of the reference pipeline costs in decoding);
2. imgclf, first pass: a fresh, empty cache; ``load_dataset`` (find, decode-check every file,
   split) and ``decoded()`` (decode + resize every image into the on-disk uint8 cache);
3. imgclf, reopen: a new ``load_dataset`` on the same cache (the scan answers from its
   cache) and ``decoded()`` (opens the .npy): what a later run pays once before training;
4. imgclf, cached pass: every split's ``tf_dataset`` (uint8 batches, as the models take them)
   iterated once from the decode cache: what each epoch of a run pays for its input.

Passes 1 and 4 time the iteration, as an epoch of training pays it; building the
``tf.data`` pipelines (listing the files, tracing the map functions), which a run does once,
is timed apart and shown (``*_build_s``). Pass 2 counts everything from nothing.
The files are read once before timing, so every pass finds them in the page cache, and
TensorFlow is imported before timing. The passes run ``--repeat`` times, interleaved
(each first pass with a new empty cache), and the best wall time of each counts: the machines
are shared, and the best of a few is the least disturbed. CPU seconds (all threads) are shown
too, as they move less with the load of other processes. Prints a small table and one JSON
line; the ratios are speed-ups (higher is better for imgclf): ``first_vs_keras`` = keras
seconds / imgclf first-pass seconds, ``keras_vs_cached`` = keras seconds / imgclf cached-pass
seconds (the reopen is shown, not part of a ratio).

    .venv/bin/python bench/decode_speed.py [--data ../shared/data/cats_and_dogs_filtered]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _warm(root: Path) -> int:
    n = 0
    for p in sorted(q for split in ("train", "validation") for q in (root / split).rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                while fh.read(1 << 20):
                    pass
            n += 1
    return n


def _keras(root: Path, size: int, batch: int) -> tuple[float, int, float]:
    """Seconds to iterate train/ and validation/ once, images, and seconds to build the datasets."""
    import keras

    t0 = time.perf_counter()
    datasets = [keras.utils.image_dataset_from_directory(root / split, batch_size=batch, image_size=(size, size),
                                                         shuffle=True, seed=0, verbose=False)
                for split in ("train", "validation")]
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    for ds in datasets:
        for x, _ in ds:
            n += int(x.shape[0])
    return time.perf_counter() - t0, n, t_build


def _imgclf_first(root: Path, size: int, cache: Path) -> tuple[float, int, float]:
    from imgclf.data import load_dataset

    t0 = time.perf_counter()
    ds = load_dataset(root, image_size=size, cache=cache, progress=False)
    t_scan = time.perf_counter() - t0
    arr = ds.decoded()
    assert arr.shape[0] == len(ds.report.valid)
    return time.perf_counter() - t0, arr.shape[0], t_scan


def _imgclf_reopen(root: Path, size: int, cache: Path):
    from imgclf.data import load_dataset

    t0 = time.perf_counter()
    ds = load_dataset(root, image_size=size, cache=cache, progress=False)
    ds.decoded()
    return time.perf_counter() - t0, ds


def _imgclf_cached(ds, batch: int) -> tuple[float, int, float]:
    """Seconds to iterate every split once, images, and seconds to build the datasets."""
    t0 = time.perf_counter()
    datasets = [ds.tf_dataset(split, batch_size=batch) for split in ("train", "validation", "test")]
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    for d in datasets:
        for x, _ in d:
            n += int(x.shape[0])
    return time.perf_counter() - t0, n, t_build


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cats_and_dogs_filtered"),
                   help="folder with train/ and validation/ (default: ../shared/data/cats_and_dogs_filtered)")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3, help="runs of the three passes; the best of each counts")
    a = p.parse_args(argv)
    root = Path(a.data).resolve()
    if not (root / "train").is_dir() or not (root / "validation").is_dir():
        print(f"decode_speed: {root} has no train/ and validation/ folders; pass --data", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="imgclf-bench-cache-"))
    os.environ["IMGCLF_CACHE"] = str(work)  # nothing of this run touches the user's cache
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    best: dict[str, tuple[float, float, int]] = {}  # pass -> (wall s, cpu s, images)
    extra = {}
    builds: dict[str, list[float]] = {"keras": [], "cached": []}  # seconds to build the datasets

    def keep(name, wall, cpu, n):
        if name not in best or wall < best[name][0]:
            best[name] = (wall, cpu, n)

    try:
        import tensorflow as tf  # noqa: F401  (imported before timing)

        files = _warm(root)
        for r in range(a.repeat):
            c0 = time.process_time()
            k_s, k_n, k_build = _keras(root, a.size, a.batch)
            keep("keras", k_s, time.process_time() - c0, k_n)
            builds["keras"].append(k_build)
            cache = work / f"run-{r}"
            c0 = time.process_time()
            f_s, f_n, f_scan = _imgclf_first(root, a.size, cache)
            keep("first", f_s, time.process_time() - c0, f_n)
            c0 = time.process_time()
            o_s, ds = _imgclf_reopen(root, a.size, cache)
            keep("reopen", o_s, time.process_time() - c0, len(ds.report.valid))
            extra.update(scan_cached=ds.report.cached)
            c0 = time.process_time()
            c_s, c_n, c_build = _imgclf_cached(ds, a.batch)
            keep("cached", c_s, time.process_time() - c0, c_n)
            builds["cached"].append(c_build)
            del ds
            if best["first"][0] == f_s:
                extra.update(first_scan_s=round(f_scan, 3))
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    names = {"keras": "keras image_dataset_from_directory", "first": "imgclf first pass (scan + decode to cache)",
             "reopen": "imgclf reopen (load_dataset, scan cached)", "cached": "imgclf cached pass (all splits once)"}
    print(f"{files} images in {root}, {a.size}x{a.size}, {os.cpu_count()} CPU cores, best of {a.repeat}")
    print(f"{'pass':<44} {'wall s':>7} {'cpu s':>6} {'images':>7} {'images/s':>9}")
    for key, name in names.items():
        s_, c_, n_ = best[key]
        print(f"{name:<44} {s_:>7.2f} {c_:>6.2f} {n_:>7} {n_ / s_:>9.0f}")
    ips = {k: v[2] / v[0] for k, v in best.items()}
    first_vs_keras = ips["first"] / ips["keras"]
    keras_vs_cached = ips["cached"] / ips["keras"]
    print(f"building the pipelines (median, not in the passes): keras {statistics.median(builds['keras']):.3f} s, "
          f"imgclf {statistics.median(builds['cached']):.3f} s")
    print(f"imgclf first / keras (images/s):        {first_vs_keras:5.2f}x   (target >= 1)")
    print(f"keras / imgclf cached (time per image): {keras_vs_cached:5.2f}x   (target >= 10)")
    print(json.dumps({
        "bench": "decode_speed", "images": files, "size": a.size, "cpus": os.cpu_count(), "repeat": a.repeat,
        **{f"{k}_s": round(v[0], 3) for k, v in best.items()},
        **{f"{k}_cpu_s": round(v[1], 3) for k, v in best.items()},
        **{f"{k}_ips": round(ips[k], 1) for k in best},
        **extra,
        **{f"{k}_build_s": round(statistics.median(v), 3) for k, v in builds.items()},
        "first_vs_keras": round(first_vs_keras, 3), "keras_vs_cached": round(keras_vs_cached, 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
