"""Shared helpers for the benchmarks: run a command in a child process and measure it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data" / "cats_and_dogs_filtered"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
REFERENCE = SHARED / "bench" / "seed_reference.py"

# Runs a script or module in this child process, then prints its own peak RSS as JSON.
_LAUNCHER = r"""
import json, resource, runpy, sys
kind, target, *argv = sys.argv[1:]
sys.argv = [target, *argv]
try:
    if kind == "module":
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(target, run_name="__main__")
except SystemExit as e:
    if e.code not in (0, None):
        raise
print("@@RSS " + json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
"""


def measure(kind: str, target: str, args: list[str], env: dict | None = None, python: str | None = None) -> dict:
    """Wall time, peak RSS and stdout lines of ``python -m target`` or ``python target``
    (``python``: another interpreter, e.g. a virtual environment with another Keras backend)."""
    t = time.time()
    proc = subprocess.run([python or sys.executable, "-c", _LAUNCHER, kind, target, *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    wall = time.time() - t
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"{target} failed with status {proc.returncode}")
    out = {"wall_s": round(wall, 1), "stdout": proc.stdout}
    for line in proc.stdout.splitlines():
        if line.startswith("@@RSS "):
            out.update(json.loads(line[6:]))
    return out


def reference_results(stdout: str) -> dict[int, dict]:
    """The reference script's JSON lines, by model number."""
    res = {}
    for line in stdout.splitlines():
        if line.startswith("{") and '"model"' in line:
            d = json.loads(line)
            res[d["model"]] = d
    return res


def fresh_cache() -> str:
    return tempfile.mkdtemp(prefix="imgclf-bench-cache-")


def machine() -> str:
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
