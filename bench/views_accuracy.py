#!/usr/bin/env python3
"""Cached augmented views per training image (``--views``): test accuracy and wall time of
``imgclf train`` on cats_and_dogs_filtered for each count, in one invocation.

    python bench/views_accuracy.py [--views 1,2,4] [--epochs 20] [--image-size 160] [--seeds 42]

Each run: MobileNetV2 0.35 with the ImageNet weights from ../shared/weights, a fresh decode
cache, the default runtime (ONNX Runtime on a CPU). Compare the times as ratios.
"""

from __future__ import annotations

import argparse
import json
import tempfile

from _common import DATA, WEIGHTS, fresh_cache, machine, measure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--views", default="1,2,4")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--seeds", default="42")
    a = p.parse_args()
    print(f"machine: {machine()}; MobileNetV2 0.35, {a.image_size}x{a.image_size}, {a.epochs} epochs")
    print(f"{'views':>5} {'seed':>5} {'wall s':>8} {'test acc':>9} {'best val':>9} {'runtime':>12}")
    for seed in a.seeds.split(","):
        for views in a.views.split(","):
            out = tempfile.mkdtemp(prefix="imgclf-bench-views-")
            args = ["train", DATA, "--model", "mobilenet_v2", "--alpha", "0.35", "--image-size", a.image_size,
                    "--epochs", a.epochs, "--weights", WEIGHTS, "--views", views, "--seed", seed,
                    "--output", f"{out}/run", "-q"]
            r = measure("module", "imgclf", args, env={"IMGCLF_CACHE": fresh_cache()})
            m = json.load(open(f"{out}/run/metrics.json"))
            rt = (m.get("feature_runtime") or {}).get("runtime")
            print(f"{views:>5} {seed:>5} {r['wall_s']:>8.1f} {m['test']['accuracy']:>9.2%} "
                  f"{m['best_val_accuracy']:>9.2%} {str(rt):>12}", flush=True)
            print(json.dumps({"benchmark": "views_accuracy", "views": int(views), "seed": int(seed),
                              "wall_s": r["wall_s"], "test_accuracy": m["test"]["accuracy"],
                              "test_count": m["test"].get("count"), "best_val_accuracy": m["best_val_accuracy"],
                              "runtime": rt}), flush=True)


if __name__ == "__main__":
    main()
