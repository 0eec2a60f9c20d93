"""Shared fixtures: an isolated imgclf cache, small generated datasets, the ../shared folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
CATS_AND_DOGS = SHARED / "data" / "cats_and_dogs_filtered"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session", autouse=True)
def imgclf_cache(tmp_path_factory):
    """Each test session gets its own imgclf cache in pytest's temporary folder (removed with
    it), so no test sees another run's decoded images, and a user's own ``IMGCLF_CACHE`` is
    never read or written by the tests (subprocesses inherit the variable)."""
    folder = tmp_path_factory.mktemp("imgclf-cache")
    saved = os.environ.get("IMGCLF_CACHE")
    os.environ["IMGCLF_CACHE"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("IMGCLF_CACHE", None)
    else:
        os.environ["IMGCLF_CACHE"] = saved


@pytest.fixture
def class_tree(tmp_path):
    """A learnable 2-class tree of 32x32 PNGs, 16 images per class."""
    from tests.imagefactory import make_class_tree

    return make_class_tree(tmp_path / "data", {"cats": 16, "dogs": 16}, size=(32, 32))


# Two classes of flat colours with light noise: a tiny CNN learns them in a few epochs, so the
# probabilities are far from 0.5 and quantized exports can be held to top-1 agreement.
TRAINED_RUN_CLASSES = {"cats": 16, "dogs": 16}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One small trained run shared by the tests that only read a run (trained once per session)."""
    import imgclf
    from tests.imagefactory import make_class_tree

    root = tmp_path_factory.mktemp("inference")
    data = make_class_tree(root / "data", TRAINED_RUN_CLASSES, size=(32, 32))
    ds = imgclf.load_dataset(data, image_size=32, validation=0.25, test=0.25, progress=False)
    return imgclf.train(ds, "cnn_aug_pre", output=root / "run", epochs=4, image_size=32, progress=False)


@pytest.fixture
def cli(capsys):
    """Run the imgclf command line in-process; returns (exit code, stdout, stderr)."""
    from imgclf.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def run_cli_subprocess(*args, timeout=600, **kw):
    import subprocess

    return subprocess.run([sys.executable, "-m", "imgclf.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, **kw)


requires_shared = pytest.mark.skipif(not CATS_AND_DOGS.is_dir(), reason="../shared/data is not beside the repo")
requires_weights = pytest.mark.skipif(not MOBILENET_WEIGHTS.is_file(), reason="../shared/weights is not beside the repo")


def pytest_collection_modifyitems(config, items):
    """On the JAX and PyTorch backends only the tests marked ``backend_neutral`` run (the rest
    use TensorFlow itself: tf.data, SavedModel, TFLite, tf.distribute, tf2onnx)."""
    from imgclf import backend

    if backend.is_tensorflow():
        return
    keep = [item for item in items if item.get_closest_marker("backend_neutral")]
    left = [item for item in items if not item.get_closest_marker("backend_neutral")]
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = keep

