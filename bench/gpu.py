#!/usr/bin/env python3
"""The GPU check: the study's models (the CNNs and the MobileNetV2 transfer model) trained on
the GPU with whichever Keras backend is installed, with times, images per second and accuracy.

    bash bench/gpu.sh                                  # cats_and_dogs_filtered from ../shared, 20 epochs
    python bench/gpu.py --data DIR --epochs 1 --image-size 32 --allow-cpu   # a tiny run on a CPU

Each model is one ``imgclf train`` in its own process (fresh decode cache), on the backend
``KERAS_BACKEND`` names (else the one installed). Images per second are training images times
epochs over the whole wall time (decoding, the feature pass, validation and saving included).
Without a GPU visible to the backend it stops, unless ``--allow-cpu``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _common import DATA, REPO, WEIGHTS, fresh_cache, machine

MODELS = ("cnn", "cnn_aug", "cnn_aug_pre", "mobilenet_v2")  # imgclf study's default models


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    if not env.get("KERAS_BACKEND"):
        sys.path.insert(0, str(REPO / "src"))
        from imgclf import backend

        installed = backend.available()
        env["KERAS_BACKEND"] = backend.DEFAULT if backend.DEFAULT in installed else (installed or ["tensorflow"])[0]
    return env


def _device(env: dict) -> str:
    code = ("from imgclf import backend; import sys; backend.check(); "
            "print(('gpu' if backend.has_gpu() else 'cpu') + ' ' + backend.describe())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "cannot import imgclf")
    return done.stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--weights", default=str(WEIGHTS), help="MobileNetV2 0.35 no-top weights (.h5)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--allow-cpu", action="store_true", help="run even where the backend sees no GPU")
    a = p.parse_args()
    env = _env()
    device, described = _device(env).split(" ", 1)
    if device != "gpu" and not a.allow_cpu:
        raise SystemExit(f"the {described} backend sees no GPU; install its CUDA build, or pass --allow-cpu")
    print(f"machine: {machine()}; backend {described} on the {device.upper()}; {a.image_size}x{a.image_size}, "
          f"{a.epochs} epochs", flush=True)
    print(f"{'model':14} {'wall s':>8} {'images/s':>9} {'val acc':>8} {'test acc':>9}", flush=True)
    rows = []
    for model in a.models.split(","):
        out = tempfile.mkdtemp(prefix=f"imgclf-gpu-{model}-")
        args = ["train", a.data, "--model", model, "--image-size", str(a.image_size), "--epochs", str(a.epochs),
                "--output", f"{out}/run", "-q"]
        if model.startswith("mobilenet"):
            args += ["--alpha", "0.35", "--weights", a.weights]
        t = time.time()
        done = subprocess.run([sys.executable, "-m", "imgclf", *args], capture_output=True, text=True,
                              env={**env, "IMGCLF_CACHE": fresh_cache()})
        wall = time.time() - t
        if done.returncode != 0:
            raise SystemExit(f"{model}: imgclf train failed: {done.stderr.strip()[-2000:]}")
        metrics = json.load(open(f"{out}/run/metrics.json"))
        n_train = sum(1 for line in open(f"{out}/run/splits/train.txt") if line.strip())
        row = {"model": model, "wall_s": round(wall, 1), "images_per_s": round(n_train * a.epochs / wall, 1),
               "validation_accuracy": metrics["validation"]["accuracy"], "test_accuracy": metrics["test"]["accuracy"]}
        rows.append(row)
        print(f"{model:14} {row['wall_s']:>8.1f} {row['images_per_s']:>9.1f} {row['validation_accuracy']:>8.2%} "
              f"{row['test_accuracy']:>9.2%}", flush=True)
    print(json.dumps({"benchmark": "gpu", "backend": described, "device": device, "epochs": a.epochs,
                      "image_size": a.image_size, "results": rows}))


if __name__ == "__main__":
    main()
