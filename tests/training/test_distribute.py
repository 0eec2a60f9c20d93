import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

import imgclf
from imgclf.errors import ConfigError
from imgclf.training.distribute import choose, tf_config_from_workers


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_auto_strategy_follows_the_visible_gpus(monkeypatch):
    import tensorflow as tf

    monkeypatch.delenv("TF_CONFIG", raising=False)
    d = choose("auto")
    gpus = len(tf.config.list_logical_devices("GPU"))  # device-specific: what this machine shows
    if gpus > 1:
        assert d.name == "mirrored" and d.is_chief and d.replicas == gpus
    else:  # one CPU or one GPU: no strategy
        assert d.name == "none" and d.is_chief and d.replicas == 1


def test_worker_addresses_are_checked():
    cfg = tf_config_from_workers("127.0.0.1:1000,127.0.0.1:1001", 1)
    assert cfg["task"] == {"type": "worker", "index": 1} and len(cfg["cluster"]["worker"]) == 2
    with pytest.raises(ConfigError, match="host:port"):
        tf_config_from_workers("localhost", 0)
    with pytest.raises(ConfigError, match="worker-index"):
        tf_config_from_workers("127.0.0.1:1,127.0.0.1:2", 2)


def test_bad_tf_config_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        choose("auto")


def _two_workers(data, run_dir, *, model=("--model", "cnn_aug_pre"), env=None):
    """Train with two local worker processes; ``(exit codes, stderr of each)``."""
    workers = ",".join(f"127.0.0.1:{p}" for p in _free_ports(2))
    common = ["train", data, *model, "--epochs", "2", "--image-size", "32", "--batch-size", "8",
              "--validation", "0.25", "--test", "0.25", "--output", run_dir, "-q", "--workers", workers]
    env = {**{k: v for k, v in os.environ.items() if k != "TF_CONFIG"}, **(env or {})}
    procs = [subprocess.Popen([sys.executable, "-m", "imgclf.cli", *map(str, common), "--worker-index", str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in (0, 1)]
    try:
        errs = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        for p in procs:  # none left running on a timeout
            p.kill()
            p.wait()
    return [p.returncode for p in procs], errs


def _two_workers_complete(data, run_dir, **kw):
    codes, errs = _two_workers(data, run_dir, **kw)
    if codes != [0, 0] and any("stopped sending heartbeats" in e for e in errs):
        # TensorFlow's coordination service now and then loses a worker of two on a loaded
        # two-core machine while they start; one fresh start, as an operator would
        shutil.rmtree(run_dir, ignore_errors=True)
        codes, errs = _two_workers(data, run_dir, **kw)
    assert codes == [0, 0], "\n".join(f"worker {i} (exit {c}):\n{e[-1500:]}" for i, (c, e) in enumerate(zip(codes, errs)))


@pytest.mark.integration
def test_two_workers_train_and_only_the_chief_writes(tmp_path):
    from tests.imagefactory import make_class_tree

    data = make_class_tree(tmp_path / "data", {"red": 24, "blue": 24}, size=(32, 32))
    run_dir = tmp_path / "run"
    _two_workers_complete(data, run_dir)
    run = imgclf.load(run_dir)
    assert run.complete and run.history()["epoch"] == [1, 2]
    # one writer: the checkpoints and figures are the chief's alone, and the run is whole
    assert (run_dir / "model.keras").is_file() and (run_dir / "figures" / "history.png").is_file()
    mw_acc = run.metrics()["test"]["accuracy"]

    single = imgclf.train(imgclf.load_dataset(data, image_size=32, validation=0.25, test=0.25, progress=False),
                          "cnn_aug_pre", output=tmp_path / "single", epochs=2, image_size=32, batch_size=8,
                          progress=False)
    single_acc = single.metrics()["test"]["accuracy"]
    assert mw_acc > 0.5 or single_acc <= 0.5  # learns whenever one process learns
    assert abs(mw_acc - single_acc) <= 0.35


def test_workers_need_an_index(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="worker-index"):
        choose("auto", workers="127.0.0.1:1,127.0.0.1:2")


def _digest(weights):
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


@pytest.mark.integration
@pytest.mark.slow
def test_two_workers_share_the_backbone_pass_and_train_one_head(tmp_path):
    """A frozen backbone under two workers: each worker passes its share of the images through
    the backbone once, the shares cover every row once, the features are one process's, and
    both workers end with the same trained head (the one the chief saved)."""
    import keras

    from imgclf.models import build_model
    from imgclf.training import features
    from tests.imagefactory import make_class_tree

    data = make_class_tree(tmp_path / "data", {"red": 16, "blue": 16}, size=(32, 32))
    run_dir, digests = tmp_path / "run", tmp_path / "digests"
    _two_workers_complete(data, run_dir, model=("--model", "mobilenet_v2", "--weights", "none"),
                          env={"IMGCLF_WEIGHTS_DIGEST_DIR": str(digests)})
    run = imgclf.load(run_dir)
    assert run.complete and run.history()["epoch"] == [1, 2] and run.history()["stage"] == ["head", "head"]
    ds = run.dataset(progress=False)
    used = sorted(int(r) for s in ("train", "validation", "test") for r in ds.indices(s))
    train = ds.indices("train")
    extra = run.config.views - 1
    records = features.shard_records(run.cache_dir)
    assert [r["worker"] for r in records] == [0, 1] and all(r["num_workers"] == 2 for r in records)
    for i, rec in enumerate(records):  # each worker computed its own share, once
        assert rec["rows"] == used[features.shard_of(len(used), i, 2)]
        assert rec["view_rows"] == train[features.shard_of(len(train), i, 2)].tolist()
        assert rec["images"] == len(rec["rows"]) + extra * len(rec["view_rows"])
    assert sorted(r for rec in records for r in rec["rows"]) == used  # every row once, none missing
    assert sorted(r for rec in records for r in rec["view_rows"]) == sorted(train.tolist())
    assert records[0]["images"] + records[1]["images"] == len(used) + extra * len(train)

    # the assembled features are those one process computes with the same backbone
    cached = [np.load(p, mmap_mode="r") for p in run.cache_dir.glob("features-*-plain.npy")]
    assert len(cached) == 1
    built = build_model("mobilenet_v2", ds.num_classes, 32, weights=None)
    built.model.set_weights(run.model.get_weights())
    plain, _ = features.extract_features(built, ds, 32, views=1, seed=0, folder=tmp_path / "single", progress=False)
    np.testing.assert_allclose(cached[0][used], plain[used], atol=1e-5)
    assert run.metrics()["feature_parity_max_abs_diff"] < 1e-4  # the saved model agrees with its features

    # both workers hold the same weights, the saved model's, and the head moved from its start
    assert (digests / "worker-0.txt").read_text() == (digests / "worker-1.txt").read_text()
    assert (digests / "worker-0.txt").read_text().strip() == _digest(run.model.get_weights())
    keras.utils.set_random_seed(run.config.seed)  # the weights the workers started from
    fresh = build_model("mobilenet_v2", ds.num_classes, 32, weights=None, seed=run.config.seed)
    moved = [not np.array_equal(a, b) for a, b in zip(fresh.model.get_weights(), run.model.get_weights())]
    assert any(moved) and sum(moved) == len(fresh.head.trainable_weights)  # the head's, the backbone's stayed
