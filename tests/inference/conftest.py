"""The inference tests' fixtures; the small trained run they share (``trained_run``) is in tests/conftest.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

@pytest.fixture(scope="session")
def test_images(trained_run):
    """Paths of the run's test split."""
    return [Path(p) for p in trained_run.dataset(progress=False).paths("test")]


def python_without_imgclf(code: str, *args, timeout: int = 300):
    """Run ``code`` in a fresh interpreter where ``import imgclf`` is impossible.

    The working directory is a bare temp folder and PYTHONPATH is cleared, and a meta-path
    hook refuses ``imgclf`` even if it is installed in the venv (it is, editable).
    """
    import subprocess
    import tempfile

    guard = (
        "import sys\n"
        "class _NoImgclf:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'imgclf' or name.startswith('imgclf.'):\n"
        "            raise ImportError('imgclf must not be imported here')\n"
        "sys.meta_path.insert(0, _NoImgclf())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-c", guard + code, *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, cwd=cwd, env=env)


@pytest.fixture(scope="session")
def dense_run(trained_run, tmp_path_factory):
    """A copy of ``trained_run`` whose model has no convolutional layer (Flatten + Dense softmax)."""
    import shutil

    import keras

    import imgclf

    folder = tmp_path_factory.mktemp("dense") / "run"
    shutil.copytree(trained_run.path, folder, ignore=shutil.ignore_patterns("checkpoints", "exports", "cache"))
    model = keras.Sequential([keras.Input((32, 32, 3), name="image"), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    model.save(folder / "model.keras")
    return imgclf.load(folder)
