"""A quick end-to-end check of an installed imgclf: the one CI runs on every other Python.

Generates a tiny two-class folder (``class_2``, ``class_10``: natural order), trains a small
CNN for one epoch through the command line, predicts on a file, exports the run to every
format with the parity check against the Keras model (ONNX and TFLite loaded in their own
runtimes) and answers one request over HTTP. Exits non-zero on any failure.

    python .ci/smoke.py WORKDIR
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def imgclf(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "imgclf", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"smoke: `imgclf {' '.join(map(str, args))}` failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def main(work: Path) -> None:
    import imgclf as package

    rng = np.random.default_rng(0)
    for name, colour in (("class_2", (200, 40, 40)), ("class_10", (40, 60, 200))):
        for i in range(12):
            pixels = np.clip(rng.normal(colour, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            folder = work / "data" / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    print(f"imgclf {package.__version__} on Python {sys.version.split()[0]}")
    imgclf("train", work / "data", "--model", "cnn_aug_pre", "--epochs", "1", "--image-size", "32",
           "--validation", "0.25", "--test", "0.25", "--output", work / "run", "--cache-dir", work / "cache", "-q")
    names = json.loads((work / "run" / "class_names.json").read_text())
    assert names == ["class_2", "class_10"], names  # natural order, stored with the run
    out = imgclf("predict", work / "run", work / "data" / "class_10" / "0.png")
    assert "class_" in out, out
    for fmt in ("keras", "savedmodel", "onnx", "tflite"):
        imgclf("export", work / "run", "--format", fmt)
        parity = work / "run" / "exports" / fmt / "parity.json"
        check = json.loads(parity.read_text())
        if not check["passed"]:
            sys.exit(f"smoke: the {fmt} export disagrees with the Keras model: {check}")
        print(f"export {fmt}: parity passed on {check['count']} images (max abs diff {check['max_abs_diff']:.2g})")
    # the HTTP service, on a real port
    import urllib.request

    from imgclf.inference.serve import background_server

    with background_server(str(work / "run")) as url:
        image = (work / "data" / "class_2" / "0.png").read_bytes()
        answer = json.loads(urllib.request.urlopen(urllib.request.Request(url + "/predict", data=image)).read())
        assert answer["label"] in names, answer
    print(f"serve: {answer['label']} {answer['probability']:.1%}")
    print("smoke: ok")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
