#!/usr/bin/env python3
"""``imgclf tune`` against one default training run, in one invocation.

Runs ``imgclf train DATA --model mobilenet_v2`` with the defaults (the reference), then
``imgclf tune`` with the same data, model and weights (``--trials`` trials on the cached
features, then the best options trained into a run folder), and prints the wall time of each,
the ratio, and the validation and test accuracy of the tuned model against the defaults'. The
search is scored on validation only; the test split is reported, never used to choose.

    python bench/tune_speed.py [--trials 50] [--image-size 224]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile

from _common import DATA, WEIGHTS, fresh_cache, machine, measure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--image-size", type=int, default=None, help="default: the model's own (224)")
    a = p.parse_args()

    out = tempfile.mkdtemp(prefix="imgclf-bench-tune-")
    common = [DATA, "--model", "mobilenet_v2", "--weights", WEIGHTS, "-q"]
    if a.image_size:
        common += ["--image-size", a.image_size]
    env = {"IMGCLF_CACHE": fresh_cache()}  # the first run decodes; the second reads the decode cache
    default = measure("module", "imgclf", ["train", *common, "--output", f"{out}/default"], env=env)
    tuned = measure("module", "imgclf", ["tune", *common, "--trials", a.trials, "--output", f"{out}/tuned"], env=env)

    dm = json.load(open(f"{out}/default/metrics.json"))
    tm = json.load(open(f"{out}/tuned/metrics.json"))
    search = json.load(open(f"{out}/tuned/tune/search.json"))
    rows = list(csv.DictReader(open(f"{out}/tuned/tune/trials.csv")))
    seconds = [float(r["seconds"]) for r in rows if r["seconds"]]
    print(f"machine: {machine()}; MobileNetV2 0.35 (ImageNet), cats_and_dogs_filtered, {a.trials} trials")
    print(f"{'':28} {'wall s':>8} {'validation':>11} {'test':>7}")
    print(f"{'imgclf train (defaults)':28} {default['wall_s']:>8.1f} {dm['validation']['accuracy']:>11.2%} "
          f"{dm['test']['accuracy']:>7.2%}")
    print(f"{'imgclf tune + best run':28} {tuned['wall_s']:>8.1f} {tm['validation']['accuracy']:>11.2%} "
          f"{tm['test']['accuracy']:>7.2%}")
    print(f"tune / one default run: {tuned['wall_s'] / default['wall_s']:.2f}x the wall time for "
          f"{search['trials']} trials ({search['pruned']} pruned); a trial {min(seconds):.1f}-{max(seconds):.1f} s, "
          f"median {sorted(seconds)[len(seconds) // 2]:.1f} s, all trials {sum(seconds):.0f} s")
    print(f"search: best trial {search['best_trial']} validation {search['best_validation_accuracy']:.2%}, "
          f"defaults' trial {search['default_validation_accuracy']:.2%}; best options {search['best_params']}")
    print(f"run folders: {out}/default, {out}/tuned")


if __name__ == "__main__":
    main()
