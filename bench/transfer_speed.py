#!/usr/bin/env python3
"""Transfer learning, imgclf against the blog's pipeline, in one invocation.

Runs ``../shared/bench/seed_reference.py --models 4 --epochs 20`` (frozen MobileNetV2 0.35 at
160x160, the backbone run on every image in every epoch) and ``imgclf train`` with the same
model, data, size and epochs (backbone features computed once, decoding cached, fresh cache so
that decoding and feature extraction are counted), and prints wall time, test accuracy, peak
RSS and the ratios.

    python bench/transfer_speed.py [--epochs 20] [--views 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile

from _common import DATA, REFERENCE, WEIGHTS, fresh_cache, machine, measure, reference_results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--views", type=int, default=None, help="imgclf cached views (default: imgclf's default)")
    p.add_argument("--image-size", type=int, default=160)
    a = p.parse_args()

    ref = measure("path", str(REFERENCE), ["--data", DATA, "--weights", WEIGHTS, "--models", "4",
                                           "--epochs", a.epochs])
    ref_model = reference_results(ref["stdout"])[4]

    out = tempfile.mkdtemp(prefix="imgclf-bench-run-")
    args = ["train", DATA, "--model", "mobilenet_v2", "--alpha", "0.35", "--image-size", a.image_size,
            "--epochs", a.epochs, "--weights", WEIGHTS, "--output", f"{out}/run", "-q"]
    if a.views:
        args += ["--views", a.views]
    ours = measure("module", "imgclf", args, env={"IMGCLF_CACHE": fresh_cache()})
    metrics = json.load(open(f"{out}/run/metrics.json"))

    rows = [
        ("reference (blog)", ref["wall_s"], ref_model["test_accuracy"], ref_model["best_val_accuracy"], ref["peak_rss_mb"]),
        ("imgclf", ours["wall_s"], metrics["test"]["accuracy"], metrics["best_val_accuracy"], ours["peak_rss_mb"]),
    ]
    print(f"machine: {machine()}; MobileNetV2 0.35, {a.image_size}x{a.image_size}, {a.epochs} epochs")
    print(f"{'':18} {'wall s':>8} {'test acc':>9} {'best val':>9} {'peak RSS MB':>12}")
    for name, wall, test, val, rss in rows:
        print(f"{name:18} {wall:>8.1f} {test:>9.2%} {val:>9.2%} {rss:>12.0f}")
    speedup = ref["wall_s"] / ours["wall_s"]
    rss_ratio = ours["peak_rss_mb"] / ref["peak_rss_mb"]
    print(f"speed-up {speedup:.1f}x (target >= 12x); peak memory ratio {rss_ratio:.2f} (target <= 1.5); "
          f"test accuracy {metrics['test']['accuracy']:.2%} vs {ref_model['test_accuracy']:.2%}")
    print(json.dumps({"benchmark": "transfer_speed", "epochs": a.epochs, "image_size": a.image_size,
                      "reference": {"wall_s": ref["wall_s"], "test_accuracy": ref_model["test_accuracy"],
                                    "best_val_accuracy": ref_model["best_val_accuracy"], "peak_rss_mb": ref["peak_rss_mb"]},
                      "imgclf": {"wall_s": ours["wall_s"], "test_accuracy": metrics["test"]["accuracy"],
                                 "best_val_accuracy": metrics["best_val_accuracy"], "peak_rss_mb": ours["peak_rss_mb"]},
                      "speedup": round(speedup, 2), "rss_ratio": round(rss_ratio, 2)}))


if __name__ == "__main__":
    main()
