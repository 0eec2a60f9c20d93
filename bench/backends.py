#!/usr/bin/env python3
"""imgclf on every installed Keras backend, side by side, in one invocation.

For each backend: the transfer run of ``bench/transfer_speed.py`` (frozen MobileNetV2 0.35 at
160x160, 20 epochs, fresh decode and feature cache) and one CNN run of ``bench/cnn_speed.py``
(``cnn`` at 160x160), each in its own process; wall time, test accuracy and the ratio of the
wall time to the TensorFlow backend's (today's path). A backend installed in another virtual
environment is run with that environment's Python:

    python bench/backends.py --backend tensorflow=/path/to/tf-venv/bin/python \\
        --backend jax=/work/venv-jax/bin/python --backend torch=/work/venv-torch/bin/python \\
        [--epochs 20] [--cnn-epochs 20]

Without ``--backend``, every backend importable by this Python is measured with it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile

from _common import DATA, REPO, WEIGHTS, fresh_cache, machine, measure

BACKENDS = ("tensorflow", "jax", "torch")


def _parse_backends(values: list[str] | None) -> dict[str, str]:
    if not values:
        return {b: sys.executable for b in BACKENDS if importlib.util.find_spec(b) is not None}
    out = {}
    for v in values:
        name, _, python = v.partition("=")
        if name not in BACKENDS:
            raise SystemExit(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
        out[name] = python or sys.executable
    return out


def train(python: str, backend: str, args: list[str], cache: str) -> dict:
    out = tempfile.mkdtemp(prefix=f"imgclf-bench-{backend}-")
    env = {"KERAS_BACKEND": backend, "IMGCLF_CACHE": cache,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    result = measure("module", "imgclf", ["train", DATA, *args, "--output", f"{out}/run", "-q"], env=env,
                     python=python)
    metrics = json.load(open(f"{out}/run/metrics.json"))
    config = json.load(open(f"{out}/run/config.json"))
    return {"wall_s": result["wall_s"], "test_accuracy": metrics["test"]["accuracy"],
            "peak_rss_mb": result.get("peak_rss_mb"), "backend": config.get("keras_backend"),
            "precision": config["train"]["precision"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", action="append", metavar="NAME[=PYTHON]",
                   help="a backend to measure, and the Python that has it installed (repeatable)")
    p.add_argument("--epochs", type=int, default=20, help="transfer epochs (bench/transfer_speed.py: 20)")
    p.add_argument("--cnn-epochs", type=int, default=20, help="CNN epochs (bench/cnn_speed.py: 20)")
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--skip-cnn", action="store_true")
    p.add_argument("--skip-transfer", action="store_true")
    a = p.parse_args()
    backends = _parse_backends(a.backend)

    runs = {
        "transfer": ["--model", "mobilenet_v2", "--alpha", "0.35", "--image-size", a.image_size,
                     "--epochs", a.epochs, "--weights", WEIGHTS],
        "cnn": ["--model", "cnn", "--image-size", a.image_size, "--epochs", a.cnn_epochs],
    }
    if a.skip_cnn:
        del runs["cnn"]
    if a.skip_transfer:
        del runs["transfer"]
    results: dict[str, dict[str, dict]] = {}
    for backend, python in backends.items():
        for name, args in runs.items():
            results.setdefault(name, {})[backend] = train(python, backend, args, fresh_cache())
            r = results[name][backend]
            print(f"  {name} on {r['backend']}: {r['wall_s']:.1f} s, test accuracy {r['test_accuracy']:.2%}",
                  file=sys.stderr, flush=True)

    print(f"machine: {machine()}; {a.image_size}x{a.image_size}; transfer: MobileNetV2 0.35, {a.epochs} epochs; "
          f"cnn: {a.cnn_epochs} epochs")
    print(f"{'run':10} {'backend':24} {'wall s':>8} {'test acc':>9} {'vs tensorflow':>14} {'peak RSS MB':>12}")
    for name, by_backend in results.items():
        base = by_backend.get("tensorflow", {}).get("wall_s")
        for backend, r in by_backend.items():
            ratio = f"{r['wall_s'] / base:.2f}x" if base else "-"
            rss = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "-"
            print(f"{name:10} {r['backend']:24} {r['wall_s']:>8.1f} {r['test_accuracy']:>9.2%} {ratio:>14} {rss:>12}")
    print(json.dumps({"benchmark": "backends", "epochs": a.epochs, "cnn_epochs": a.cnn_epochs, "results": results}))


if __name__ == "__main__":
    main()
