#!/usr/bin/env python3
"""Data bigger than memory: peak RSS while the dataset grows tenfold.

Generates a synthetic dataset of N and 10N images, trains ``cnn`` on each for one epoch in a
child process (fresh cache: decoding included), and prints peak RSS and the decoded-cache size.
The decoded images live in a file that is read batch by batch, so peak RSS should stay about
flat while the data grows.

    python bench/memory_scaling.py [--per-class 250] [--image-size 128]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import fresh_cache, machine, measure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=250, help="images per class of the small dataset (4 classes)")
    p.add_argument("--image-size", type=int, default=128)
    a = p.parse_args()
    from imgclf.data.synthetic import make_synthetic_dataset

    work = Path(tempfile.mkdtemp(prefix="imgclf-bench-mem-"))
    rows = []
    for factor in (1, 10):
        n = a.per_class * factor
        data = make_synthetic_dataset(work / f"data-{factor}", per_class=n, image_size=a.image_size, seed=factor)
        cache = fresh_cache()
        r = measure("module", "imgclf", ["train", data, "--model", "cnn", "--epochs", 1, "--image-size", a.image_size,
                                         "--output", work / f"run-{factor}", "-q"], env={"IMGCLF_CACHE": cache})
        decoded = sum(f.stat().st_size for f in Path(cache).rglob("*.npy")) / 2**20
        rows.append({"images": 4 * n, "decoded_cache_mb": round(decoded, 1), "peak_rss_mb": round(r["peak_rss_mb"], 1),
                     "wall_s": r["wall_s"]})
    print(f"machine: {machine()}; cnn, 1 epoch, {a.image_size}x{a.image_size}")
    print(f"{'images':>8} {'decoded MB':>11} {'peak RSS MB':>12} {'wall s':>7}")
    for r in rows:
        print(f"{r['images']:>8} {r['decoded_cache_mb']:>11.0f} {r['peak_rss_mb']:>12.0f} {r['wall_s']:>7.1f}")
    growth = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"data x{rows[1]['images'] / rows[0]['images']:.0f}, decoded cache x"
          f"{rows[1]['decoded_cache_mb'] / rows[0]['decoded_cache_mb']:.0f}, peak RSS x{growth:.2f}")
    print(json.dumps({"benchmark": "memory_scaling", "rows": rows, "rss_growth": round(growth, 2)}))


if __name__ == "__main__":
    main()
