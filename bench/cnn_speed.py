#!/usr/bin/env python3
"""The from-scratch CNNs (the blog's models 1 and 2), imgclf against the blog's pipeline.

Runs ``../shared/bench/seed_reference.py --models 1,2 --epochs 20`` and ``imgclf train`` for
``cnn`` and ``cnn_aug`` (decoded images cached once, augmentation applied after the cache) in
one invocation; prints wall time, accuracy and peak RSS for both and the ratios.

    python bench/cnn_speed.py [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile

from _common import DATA, REFERENCE, WEIGHTS, fresh_cache, machine, measure, reference_results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--precision", default="auto",
                   help="imgclf's --precision (default auto: bfloat16 where the CPU has it natively)")
    a = p.parse_args()

    ref = measure("path", str(REFERENCE), ["--data", DATA, "--weights", WEIGHTS, "--models", "1,2",
                                           "--epochs", a.epochs])
    ref_models = reference_results(ref["stdout"])
    cache = fresh_cache()
    out = tempfile.mkdtemp(prefix="imgclf-bench-run-")
    ours, metrics = {}, {}
    for name in ("cnn", "cnn_aug"):
        ours[name] = measure("module", "imgclf", ["train", DATA, "--model", name, "--image-size", 160,
                                                  "--epochs", a.epochs, "--precision", a.precision, "--output", f"{out}/{name}", "-q"],
                             env={"IMGCLF_CACHE": cache})
        metrics[name] = json.load(open(f"{out}/{name}/metrics.json"))
        metrics[name]["precision"] = json.load(open(f"{out}/{name}/config.json"))["train"]["precision"]

    ref_fit = sum(m["fit_wall_s"] for m in ref_models.values())
    our_wall = sum(o["wall_s"] for o in ours.values())
    print(f"machine: {machine()}; 160x160, {a.epochs} epochs; imgclf precision: {metrics['cnn']['precision']}")
    print(f"{'':22} {'wall s':>8} {'best val':>9} {'test acc':>9} {'peak RSS MB':>12}")
    print(f"{'reference models 1+2':22} {ref['wall_s']:>8.1f} {'':>9} {'':>9} {ref['peak_rss_mb']:>12.0f}")
    for n, name in ((1, "cnn"), (2, "cnn_aug")):
        r = ref_models[n]
        print(f"{'  reference model ' + str(n):22} {r['fit_wall_s']:>8.1f} {r['best_val_accuracy']:>9.2%} {r['test_accuracy']:>9.2%}")
    for name in ours:
        m = metrics[name]
        print(f"{'imgclf ' + name:22} {ours[name]['wall_s']:>8.1f} {m['best_val_accuracy']:>9.2%} "
              f"{m['test']['accuracy']:>9.2%} {ours[name]['peak_rss_mb']:>12.0f}")
    speedup = ref["wall_s"] / our_wall
    print(f"speed-up {speedup:.2f}x end to end (target >= 1.5x); reference fit time {ref_fit:.0f} s")
    print(json.dumps({"benchmark": "cnn_speed", "epochs": a.epochs, "reference_wall_s": ref["wall_s"],
                      "imgclf_wall_s": round(our_wall, 1), "speedup": round(speedup, 2),
                      "reference": ref_models, "imgclf": {k: {"wall_s": ours[k]["wall_s"],
                                                              "test_accuracy": metrics[k]["test"]["accuracy"],
                                                              "best_val_accuracy": metrics[k]["best_val_accuracy"],
                                                              "precision": metrics[k]["precision"],
                                                              "peak_rss_mb": ours[k]["peak_rss_mb"]} for k in ours}}))


if __name__ == "__main__":
    main()
