"""imgclf.inference.export and ``imgclf export``: every format, its metadata, its parity, its runtime."""

from __future__ import annotations

import json
import sys
import zipfile

import numpy as np
import pytest

from imgclf import ConfigError, __version__
from imgclf.inference import export as export_module
from imgclf.inference.export import ExportError, ParityError, export
from tests.inference.conftest import python_without_imgclf

CASES = [("keras", None), ("savedmodel", None), ("tflite", None), ("tflite", "float16"), ("tflite", "int8"),
         ("onnx", None), ("onnx", "int8")]


def _key(fmt, quantize):
    return fmt + (f"-{quantize}" if quantize else "")


@pytest.fixture(scope="session")
def exports(trained_run):
    """Every format exported once, into the run's default exports/ folders."""
    return {_key(f, q): export(trained_run, f, quantize=q) for f, q in CASES}


@pytest.mark.parametrize("fmt,quantize", CASES, ids=[_key(f, q) for f, q in CASES])
def test_export_parity_and_metadata(exports, trained_run, fmt, quantize):
    result = exports[_key(fmt, quantize)]
    assert result.folder == trained_run.path / "exports" / _key(fmt, quantize)
    assert result.path.exists() and result.path.name == "model" + export_module.EXTENSIONS[fmt]

    parity = json.loads((result.folder / "parity.json").read_text())
    assert parity == result.parity and parity["passed"]
    assert parity["split"] == "test" and parity["count"] == len(trained_run.dataset(progress=False).paths("test"))
    if quantize is None:
        assert parity["max_abs_diff"] <= 1e-4
    else:
        assert parity["top1_agreement"] >= 0.98
    assert "top-1 agreement" in result.summary() and "PASS" in result.summary()

    meta = json.loads(result.metadata_file.read_text())
    assert result.metadata_file == result.folder / "model.json"
    assert meta["class_names"] == trained_run.class_names
    assert meta["preprocessing"] == trained_run.preprocessing
    assert meta["imgclf_version"] == __version__
    assert meta["source_run"] == str(trained_run.path.resolve())
    assert meta["format"] == fmt and meta["quantize"] == quantize
    assert meta["input"]["shape"] == [None, 32, 32, 3] and meta["parity"]["passed"]


def _embedded(fmt, path) -> dict:
    """The metadata read back from inside the artifact, the way a consumer would."""
    if fmt == "keras":
        return json.loads(zipfile.ZipFile(path).read("imgclf.json"))
    if fmt == "savedmodel":
        assert (path / "assets" / "class_names.txt").read_text().split() == json.loads(
            (path / "assets" / "imgclf.json").read_text())["class_names"]
        return json.loads((path / "assets" / "imgclf.json").read_text())
    if fmt == "tflite":
        z = zipfile.ZipFile(path)  # associated files zipped onto the flatbuffer
        assert z.read("labels.txt").decode().split() == json.loads(z.read("imgclf.json"))["class_names"]
        from tensorflow.lite.tools import flatbuffer_utils

        model = flatbuffer_utils.read_model(str(path))
        entry = next(m for m in model.metadata if m.name == b"imgclf")
        inside = json.loads(bytes(model.buffers[entry.buffer].data).decode())
        assert inside == json.loads(z.read("imgclf.json"))
        return inside
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert json.loads(props["class_names"]) == json.loads(props["imgclf"])["class_names"]
        return json.loads(props["imgclf"])
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt,quantize", CASES, ids=[_key(f, q) for f, q in CASES])
def test_class_names_and_preprocessing_travel_inside(exports, trained_run, fmt, quantize):
    inside = _embedded(fmt, exports[_key(fmt, quantize)].path)
    assert inside["class_names"] == trained_run.class_names
    assert inside["preprocessing"] == trained_run.preprocessing
    assert inside["source_run"] == str(trained_run.path.resolve())


STANDALONE = r"""
import json, sys, zipfile
import numpy as np
paths = json.loads(sys.argv[1])
x = np.load(sys.argv[2])
out = {}

import keras
m = keras.models.load_model(paths["keras"], compile=False, safe_mode=True)
# a plain call, as a user would make it: the export has no augmentation left to run
out["keras"] = {"names": json.loads(zipfile.ZipFile(paths["keras"]).read("imgclf.json"))["class_names"],
                "probs": np.asarray(m(x)).tolist()}

import tensorflow as tf
sm = tf.saved_model.load(paths["savedmodel"])
out["savedmodel"] = {"names": [n.decode() for n in sm.signatures["metadata"]()["class_names"].numpy()],
                     "probs": sm.signatures["serving_default"](image=tf.constant(x))["probabilities"].numpy().tolist()}

try:
    from ai_edge_litert.interpreter import Interpreter
    runtime = "ai_edge_litert"
except ImportError:
    Interpreter, runtime = tf.lite.Interpreter, "tf.lite"
for key in ("tflite", "tflite-int8"):
    it = Interpreter(model_path=paths[key])
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    out[key] = {"names": zipfile.ZipFile(paths[key]).read("labels.txt").decode().split(),
                "probs": it.get_tensor(outp["index"]).tolist(), "runtime": runtime}

import onnxruntime as ort
for key in ("onnx", "onnx-int8"):
    sess = ort.InferenceSession(paths[key], providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    out[key] = {"names": json.loads(meta["class_names"]),
                "probs": sess.run(["probabilities"], {"image": x})[0].tolist()}

out["imgclf_imported"] = any(k == "imgclf" or k.startswith("imgclf.") for k in sys.modules)
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_every_export_loads_in_its_runtime_without_imgclf(exports, trained_run, tmp_path):
    ds = trained_run.dataset(progress=False)
    x = ds.images("test").astype(np.float32)
    expected = np.asarray(trained_run.model(x, training=False))
    np.save(tmp_path / "x.npy", x)
    paths = {k: str(r.path) for k, r in exports.items()}
    proc = python_without_imgclf(STANDALONE, json.dumps(paths), tmp_path / "x.npy")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    got = json.loads(line[len("RESULT "):])
    assert got.pop("imgclf_imported") is False
    assert set(got) == {"keras", "savedmodel", "tflite", "tflite-int8", "onnx", "onnx-int8"}
    for key, res in got.items():
        assert res["names"] == trained_run.class_names, key
        probs = np.asarray(res["probs"])
        assert probs.shape == expected.shape, key
        if key.endswith("int8"):
            assert np.mean(probs.argmax(1) == expected.argmax(1)) >= 0.98, key
        else:
            np.testing.assert_allclose(probs, expected, atol=1e-4, err_msg=key)


def test_exported_models_have_no_augmentation_left(trained_run):
    model = trained_run.model
    assert any(type(l).__name__.startswith("Random") for l in model.get_layer("augmentation").layers)
    clean = export_module.inference_model(model)
    assert [type(l).__name__ for l in clean.get_layer("augmentation").layers] == ["Identity"]
    x = trained_run.dataset(progress=False).images("test").astype(np.float32)
    expected = np.asarray(model(x, training=False))
    for _ in range(2):  # a plain call: no randomness
        np.testing.assert_allclose(np.asarray(clean(x)), expected, atol=1e-6)
    # the Keras 3 trap it removes: a plain call of the trained model augments its inputs
    assert not np.allclose(np.asarray(model(x)), expected, atol=1e-6)


def test_output_folder_and_name(trained_run, tmp_path):
    result = export(trained_run, "onnx", output=tmp_path / "deploy", name="catsdogs")
    assert result.path == tmp_path / "deploy" / "catsdogs.onnx"
    assert (tmp_path / "deploy" / "catsdogs.json").is_file() and (tmp_path / "deploy" / "parity.json").is_file()


def test_bad_options_are_one_line_errors(trained_run, tmp_path):
    with pytest.raises(ConfigError, match="unknown export format 'pb'; choose one of keras, savedmodel, tflite, onnx"):
        export(trained_run, "pb")
    with pytest.raises(ConfigError, match="--quantize int8 is not available for keras"):
        export(trained_run, "keras", quantize="int8")
    with pytest.raises(ConfigError, match="--quantize int4 is not available for tflite"):
        export(trained_run, "tflite", quantize="int4")
    with pytest.raises(ConfigError, match="plain file name"):
        export(trained_run, "keras", name="../x")


def test_missing_onnx_packages_say_what_to_install(trained_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx -> ImportError
    with pytest.raises(ExportError, match=r"install imgclf\[export\]"):
        export(trained_run, "onnx")


def test_failed_parity_is_an_error_unless_not_strict(trained_run, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "FLOAT_TOLERANCE", -1.0)  # nothing can pass
    with pytest.raises(ParityError, match="FAIL"):
        export(trained_run, "keras", output=tmp_path / "strict")
    assert json.loads((tmp_path / "strict" / "parity.json").read_text())["passed"] is False
    result = export(trained_run, "keras", output=tmp_path / "lenient", strict=False)
    assert not result.passed


def test_cli_export(cli, trained_run, tmp_path):
    code, out, err = cli("export", trained_run.path, "--format", "tflite", "--quantize", "float16",
                         "--output", tmp_path / "t")
    assert code == 0, err
    assert f"exported  {tmp_path / 't' / 'model.tflite'}" in out
    assert "max abs prob diff" in out and "top-1 agreement" in out and "PASS" in out
    assert json.loads((tmp_path / "t" / "parity.json").read_text())["passed"]

    code, out, err = cli("export", trained_run.path, "--format", "coreml")
    assert code == 2 and "unknown export format 'coreml'" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli("export", tmp_path / "nothing", "--format", "onnx")
    assert code == 2 and "no run folder" in err


@pytest.mark.integration
def test_mobilenet_v2_exports(tmp_path_factory):
    """A real backbone (BatchNorm, depthwise convolutions, ReLU6, a nested Functional) through
    tf2onnx. With ../shared's ImageNet weights
    when present: a random backbone gives near-zero features, which would hide a mismatch."""
    import imgclf
    from tests.conftest import MOBILENET_WEIGHTS
    from tests.imagefactory import make_class_tree

    root = tmp_path_factory.mktemp("mobilenet")
    data = make_class_tree(root / "data", {"a": 6, "b": 6}, size=(32, 32))
    ds = imgclf.load_dataset(data, image_size=32, validation=0.25, test=0.25, progress=False)
    weights = str(MOBILENET_WEIGHTS) if MOBILENET_WEIGHTS.is_file() else None
    run = imgclf.train(ds, "mobilenet_v2", output=root / "run", epochs=1, image_size=32, weights=weights,
                       progress=False)
    # ONNX only: tf2onnx is the converter at risk (TFLite goes through the same SavedModel that
    # the small-CNN tests cover, and costs ~20 s more on 2 cores); bench/serve_load's run and
    # `imgclf export` cover TFLite for MobileNetV2.
    result = export(run, "onnx")
    assert result.parity["passed"] and result.parity["max_abs_diff"] <= 1e-4, result.parity


@pytest.fixture(scope="module")
def calibrated_run(trained_run, tmp_path_factory):
    """A copy of ``trained_run`` with a temperature of 2.5 built into its model, as training does."""
    import shutil

    import keras

    import imgclf
    from imgclf import calibration, io

    folder = tmp_path_factory.mktemp("calibrated") / "run"
    shutil.copytree(trained_run.path, folder, ignore=shutil.ignore_patterns("checkpoints", "exports", "cache"))
    model = keras.models.load_model(folder / "model.keras", compile=False)
    calibration.temper_model(model, 2.5)
    model.save(folder / "model.keras")
    metrics = io.read_json(folder / "metrics.json")
    metrics["calibration"] = {"applied": True, "temperature": 2.5, "fitted_on": "validation"}
    io.write_json(folder / "metrics.json", metrics)
    return imgclf.load(folder)


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_calibrated_exports_agree_with_the_calibrated_keras_model(calibrated_run, trained_run, fmt):
    from imgclf import calibration

    result = export(calibrated_run, fmt)
    assert result.passed and result.parity["max_abs_diff"] <= 1e-4
    meta = json.loads(result.metadata_file.read_text())
    assert meta["calibration"]["temperature"] == 2.5
    images = np.asarray(calibrated_run.dataset(progress=False).decoded()[:16], np.float32)
    got = export_module.load_exported(fmt, result.path)(images)
    uncalibrated = np.asarray(trained_run.model(images, training=False))
    np.testing.assert_allclose(got, calibration.scale(uncalibrated, 2.5), atol=1e-4)
    assert got.max(1).mean() < uncalibrated.max(1).mean()  # softer: the temperature is in there
@pytest.mark.integration
def test_natural_class_order_through_train_predict_and_every_export(tmp_path_factory):
    """Classes ``class_2`` and ``class_10`` (string order would put ``class_10`` first): the
    order is the natural one in the run, in predict's labels and inside every export."""
    import imgclf
    from imgclf.inference.export import load_exported
    from tests.imagefactory import make_class_tree

    root = tmp_path_factory.mktemp("order")
    data = make_class_tree(root / "data", {"class_10": 12, "class_2": 12}, size=(32, 32))
    ds = imgclf.load_dataset(data, image_size=32, validation=0.25, test=0.25, progress=False)
    assert ds.class_names == ["class_2", "class_10"]
    run = imgclf.train(ds, "cnn_aug_pre", output=root / "run", epochs=4, image_size=32, progress=False)
    names = ["class_2", "class_10"]
    assert run.class_names == names and json.loads((run.path / "class_names.json").read_text()) == names
    paths = ds.paths("test")
    labels = [r.label for r in imgclf.load(run.path).predict(paths)]
    truth = [p.parent.name for p in paths]
    assert labels == truth  # the colours are learnt: each label is its folder's
    x = np.asarray(ds.images("test"), np.float32)
    for fmt in ("keras", "savedmodel", "tflite", "onnx"):
        result = export(run, fmt)
        assert _embedded(fmt, result.path)["class_names"] == names, fmt
        probs = load_exported(fmt, result.path)(x)
        assert [names[i] for i in probs.argmax(1)] == labels, fmt


@pytest.mark.integration
def test_int8_exports_agree_on_real_photographs(tmp_path_factory):
    """int8 TFLite and ONNX against the float model on 40 real photographs from ../shared (not
    flat colours, whose activations quantize easily): nearly every answer is the same, and an
    answer the float model is sure of (probability >= 0.9) never changes."""
    import os

    import imgclf
    from imgclf.inference.export import load_exported
    from tests.conftest import CATS_AND_DOGS, MOBILENET_WEIGHTS

    if not (CATS_AND_DOGS.is_dir() and MOBILENET_WEIGHTS.is_file()):
        pytest.skip("../shared data and weights are not beside the repo")
    root = tmp_path_factory.mktemp("photos")
    for cls in ("cats", "dogs"):
        (root / "data" / cls).mkdir(parents=True)
        for i in range(120):  # links: the photographs stay where they are
            os.symlink(CATS_AND_DOGS / "validation" / cls / f"{cls[:-1]}.{2000 + i}.jpg", root / "data" / cls / f"{i}.jpg")
    ds = imgclf.load_dataset(root / "data", image_size=96, validation=0.2, test=40 / 240, seed=0, progress=False)
    assert len(ds.splits["test"]) == 40
    run = imgclf.train(ds, "mobilenet_v2", output=root / "run", epochs=10, image_size=96,
                       weights=str(MOBILENET_WEIGHTS), progress=False)
    x = np.asarray(ds.images("test"), np.float32)
    ref = np.asarray(run.model(x, training=False))
    for fmt in ("tflite", "onnx"):
        result = export(run, fmt, quantize="int8", strict=False)
        p = result.parity
        assert p["split"] == "test" and p["count"] == 40, p
        assert p["top1_agreement"] >= 0.95 and p["mean_abs_diff"] < 0.05, p
        got = load_exported(fmt, result.path)(x)
        flipped = ref.argmax(1) != got.argmax(1)
        assert p["top1_disagreements"] == int(flipped.sum())
        assert (ref[flipped].max(1) < 0.9).all(), (fmt, ref[flipped])


def test_the_channels_last_max_pool_jax_writes_runs_in_onnx_runtime():
    """jax2onnx pools NHWC images with a 4-D MaxPool ONNX Runtime refuses; the export rewrites it
    as the 2-D one between transposes, with the same answers (including 'same' padding)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    def graph(kernel, strides, pads=None):
        extra = {"pads": [0, pads, pads, 0, 0, pads, pads, 0]} if pads else {}
        nodes = [helper.make_node("Unsqueeze", ["x", "axes0"], ["u0"]),
                 helper.make_node("Unsqueeze", ["u0", "axes1"], ["u1"]),
                 helper.make_node("MaxPool", ["u1"], ["p"], kernel_shape=[1, kernel, kernel, 1],
                                  strides=[1, strides, strides, 1], **extra),
                 helper.make_node("Squeeze", ["p", "axes01"], ["y"])]
        inits = [numpy_helper.from_array(np.array(v, np.int64), n)
                 for n, v in (("axes0", [0]), ("axes1", [1]), ("axes01", [0, 1]))]
        g = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 8, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, None, 3])], inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])

    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    for kernel, strides, pads, expected in ((2, 2, None, x.reshape(2, 4, 2, 4, 2, 3).max(axis=(2, 4))),
                                            (3, 1, 1, None)):
        model = graph(kernel, strides, pads)
        with pytest.raises(Exception, match="pooling size"):  # as written, ONNX Runtime refuses it
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        assert export_module._channels_first_pools(model) == 1
        onnx.checker.check_model(model)
        assert [n.op_type for n in model.graph.node] == ["Transpose", "MaxPool", "Transpose"]
        assert not model.graph.initializer  # the axes nothing reads any more are gone
        y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        if expected is None:  # 3x3, stride 1, padded by 1: each pixel is the max of its neighbourhood
            padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
            expected = np.max([padded[:, i:i + 8, j:j + 8] for i in range(3) for j in range(3)], axis=0)
        np.testing.assert_array_equal(y, expected)
