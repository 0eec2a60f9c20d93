"""Export a run's model to Keras, SavedModel, TFLite (LiteRT) or ONNX, with a parity check.

    import imgclf
    result = imgclf.load("runs/x").export("onnx")            # or export(run, "tflite", quantize="int8")
    result.path, result.metadata_file, result.parity          # the figures also in exports/onnx/parity.json

One verb, a format argument (as ``keras.Model.export``). Every export

* takes float32 images ``(N, S, S, 3)`` with values 0..255 (RGB, decoded and resized as the run's
  ``preprocessing`` says) and returns float32 softmax probabilities ``(N, classes)`` in
  ``class_names`` order; the model's own scaling is inside the graph;
* carries the class names and the preprocessing inside the artifact where the format allows
  (``.keras``: an ``imgclf.json`` entry in the zip; SavedModel: a ``metadata`` signature and
  ``assets/class_names.txt`` + ``assets/imgclf.json``; TFLite: an ``imgclf`` metadata buffer
  and the associated files ``labels.txt`` + ``imgclf.json`` zipped onto the model, as the
  TFLite metadata tools do; ONNX: ``metadata_props`` ``imgclf`` and ``class_names``), and
  always a ``<name>.json`` file beside it;
* is checked against the Keras model on the run's test images: probabilities of float
  exports agree within 1e-4; quantized ones agree on the top-1 class for at least 98% of
  the images. The figures are printed by the CLI and saved in ``parity.json``.

Keras 3 trap: the augmentation layers of a Keras 3 model run when it is called without
``training=False``, and ``model.export()`` traces it that way. Every graph export here goes
through one inference function, ``model(image, training=False)``, saved with Keras'
``ExportArchive``; TFLite is converted from that SavedModel, ONNX (tf2onnx) from that function.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import io as _stdio
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import backend, io
from ..errors import ConfigError, ExportError, ParityError, first_line
from ..models.runtime import OPSET, quiet_stderr, to_onnx
from ..run import resolve_run
from ..version import __version__

FORMATS = ("keras", "savedmodel", "tflite", "onnx")
TENSORFLOW_FORMATS = ("savedmodel", "tflite")  # written from a TensorFlow graph: the TensorFlow backend only
QUANTIZE = {"tflite": ("float16", "int8"), "onnx": ("int8",)}
EXTENSIONS = {"keras": ".keras", "savedmodel": "", "tflite": ".tflite", "onnx": ".onnx"}
FLOAT_TOLERANCE = 1e-4
MIN_TOP1_AGREEMENT = 0.98
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
INSTALL_HINT = "install imgclf[export] (pip install 'imgclf[export]')"


@dataclass
class ExportResult:
    format: str
    quantize: str | None
    folder: Path
    path: Path  # the model file (or SavedModel folder)
    metadata_file: Path
    parity: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.parity.get("passed", True))

    def summary(self) -> str:
        """The parity figures as one or two lines for the terminal."""
        p = self.parity
        if not p:
            return f"{self.format}: {self.path} (no parity check)"
        q = f" {self.quantize}" if self.quantize else ""
        return (f"parity ({self.format}{q} vs keras, {p['count']} {p['split']} images): "
                f"max abs prob diff {p['max_abs_diff']:.3g}, mean {p['mean_abs_diff']:.3g}, "
                f"top-1 agreement {p['top1_agreement']:.1%} -> {'PASS' if p['passed'] else 'FAIL'} "
                f"({p['criterion']})")


# -- metadata ------------------------------------------------------------------------

def metadata(run, fmt: str, quantize: str | None, file_name: str) -> dict:
    """What travels with every export (also written as ``<name>.json`` beside it)."""
    s = run.image_size
    names = run.class_names
    return {
        "imgclf_version": __version__,
        "format": fmt,
        "quantize": quantize,
        "file": file_name,
        "class_names": names,
        "preprocessing": run.preprocessing,
        "input": {"name": INPUT_NAME, "shape": [None, s, s, 3], "dtype": "float32", "range": [0, 255],
                  "layout": "NHWC, RGB"},
        "output": {"name": OUTPUT_NAME, "shape": [None, len(names)], "dtype": "float32",
                   "meaning": "softmax probabilities, in class_names order"},
        "model": run.meta["train"].get("model"),
        "calibration": _calibration(run),
        "source_run": str(Path(run.path).resolve()),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _calibration(run) -> dict | None:
    """The temperature built into the model (imgclf.calibration), as metrics.json records it."""
    cal = run.metrics_record().calibration
    if cal is None or not cal.applied:
        return None
    return {"method": "temperature scaling", "temperature": cal.temperature, "fitted_on": cal.fitted_on,
            "note": "already inside the model: its probabilities are the calibrated ones"}


# -- the inference model ------------------------------------------------------------

# The Keras augmentation layers imgclf builds (models/augment.py): the identity at inference.
_IDENTITY_AT_INFERENCE = {"RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
                          "RandomBrightness"}


def _is_augmentation(layer) -> bool:
    import keras

    if isinstance(layer, keras.Sequential):
        return bool(layer.layers) and all(_is_augmentation(sub) for sub in layer.layers)
    return type(layer).__name__ in _IDENTITY_AT_INFERENCE


def inference_model(model):
    """``model`` without its augmentation layers (each replaced by an ``Identity``), same weights.

    Keras 3 trap: a random augmentation layer runs whenever the model is called without
    ``training=False`` (``model(x)``, ``model.export()``), so a deployed ``.keras`` would flip
    and rotate its inputs for anyone who calls it directly. The exported models cannot.
    """
    import keras

    if not any(_is_augmentation(layer) for layer in model.layers):
        return model

    def clone(layer):
        if _is_augmentation(layer):
            identity = keras.layers.Identity(name="identity")
            if isinstance(layer, keras.Sequential):  # same call signature (training, mask) as the original
                return keras.Sequential([identity], name=layer.name)
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    clean = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if not _is_augmentation(layer):
            clean.get_layer(layer.name).set_weights(layer.get_weights())
    return clean


# -- the inference function ---------------------------------------------------------

def _input_spec(run):
    import tensorflow as tf

    s = run.image_size
    return tf.TensorSpec((None, s, s, 3), tf.float32, name=INPUT_NAME)


def _write_savedmodel(run, model, folder: Path, meta: dict | None) -> None:
    """The model's inference function (``training=False``) as a SavedModel, plus metadata."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda image: {OUTPUT_NAME: model(image, training=False)},
                         input_signature=[_input_spec(run)])
    if meta is not None:
        names = list(meta["class_names"])
        text = json.dumps(meta)
        archive.add_endpoint("metadata", lambda: {"class_names": tf.constant(names), "imgclf": tf.constant(text)},
                             input_signature=[])
    with quiet_stderr():
        archive.write_out(str(folder), verbose=False)
    if meta is not None:
        assets = folder / "assets"
        assets.mkdir(exist_ok=True)
        (assets / "class_names.txt").write_text("\n".join(meta["class_names"]) + "\n", encoding="utf-8")
        (assets / "imgclf.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


# -- per format ---------------------------------------------------------------------

def _export_keras(run, model, target: Path, meta: dict, quantize) -> None:
    with io.atomic_path(target) as tmp:
        if model is run.model:  # nothing to strip: the trained file as it is
            shutil.copyfile(run.model_file, tmp)
        else:
            model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as z:
            z.writestr("imgclf.json", json.dumps(meta, indent=2))


def _export_savedmodel(run, model, target: Path, meta: dict, quantize) -> None:
    with io.atomic_dir(target) as tmp:
        _write_savedmodel(run, model, tmp, meta)


def _representative(run, count: int = 200, seed: int = 0):
    """Training images (the run's own decoding) to calibrate int8 quantization."""
    ds = run.dataset(progress=False)
    rows = ds.indices("train")
    if len(rows) == 0:
        raise ExportError(f"int8 quantization needs training images, and the train split of {run.path} is empty")
    order = np.random.default_rng(seed).permutation(len(rows))[:count]
    return np.asarray(ds.decoded()[rows[order]], dtype=np.float32)


def _export_tflite(run, model, target: Path, meta: dict, quantize) -> None:
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="imgclf-export-") as tmp:
        sm = Path(tmp) / "savedmodel"
        _write_savedmodel(run, model, sm, None)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(sm), signature_keys=["serving_default"])
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            reps = _representative(run)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([x[None]] for x in reps)
        try:
            with quiet_stderr():
                flat = converter.convert()
        except Exception as e:
            raise ExportError(f"TFLite conversion failed: {first_line(e, 300)}") from None
    flat = _tflite_with_metadata(bytes(flat), meta)
    io.write_bytes(target, flat)


def _tflite_with_metadata(flat: bytes, meta: dict) -> bytes:
    """Add an ``imgclf`` metadata buffer, then zip ``labels.txt`` and ``imgclf.json`` onto the end."""
    text = json.dumps(meta, indent=2).encode("utf-8")
    try:
        from tensorflow.lite.python import schema_py_generated as schema
        from tensorflow.lite.tools import flatbuffer_utils

        obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(flat))
        buf = schema.BufferT()
        buf.data = np.frombuffer(text, dtype=np.uint8)
        obj.buffers.append(buf)
        entry = schema.MetadataT()
        entry.name = "imgclf"
        entry.buffer = len(obj.buffers) - 1
        obj.metadata = list(obj.metadata or []) + [entry]
        flat = bytes(flatbuffer_utils.convert_object_to_bytearray(obj))
    except ImportError:  # the zip below still carries everything
        pass
    zbuf = __import__("io").BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("labels.txt", "\n".join(meta["class_names"]) + "\n")
        z.writestr("imgclf.json", text)
    return flat + zbuf.getvalue()


# what converts a Keras model to ONNX on each backend (Keras' own export on JAX and PyTorch)
ONNX_CONVERTERS = {"tensorflow": ("tf2onnx", "tf2onnx"), "jax": ("jax2onnx", "jax2onnx"),
                   "torch": ("onnxscript", "onnxscript")}


def _require_onnx():
    module, package = ONNX_CONVERTERS.get(backend.name(), ONNX_CONVERTERS["tensorflow"])
    for name, pip_name in (("onnx", "onnx"), (module, package)):
        if importlib.util.find_spec(name) is None:
            hint = INSTALL_HINT if backend.is_tensorflow() else f"pip install {pip_name} onnx onnxruntime"
            raise ExportError(f"ONNX export on the {backend.name()} backend needs {package} and onnx "
                              f"({pip_name} is not installed): {hint}")


def _export_onnx_keras(run, model, target: Path):
    """JAX and PyTorch: Keras' ``model.export(format="onnx")`` (jax2onnx, torch.onnx), the
    model called with ``training=False``, the batch dimension left free."""
    import keras
    import onnx

    s = run.image_size
    spec = [keras.InputSpec(shape=(None, s, s, 3), dtype="float32", name=INPUT_NAME)]
    with tempfile.TemporaryDirectory(prefix="imgclf-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with quiet_stderr(), contextlib.redirect_stdout(_stdio.StringIO()):
                model.export(str(path), format="onnx", input_signature=spec, verbose=False, opset_version=18)
        except Exception as e:
            raise ExportError(f"ONNX conversion (Keras export on {backend.name()}) failed: {first_line(e, 300)}") from None
        proto = onnx.load(str(path), load_external_data=True)
        if _channels_first_pools(proto):  # rewritten: check the graph that will be saved
            onnx.save(proto, str(path))
        _check_runs(path, s)
    graph = proto.graph
    old_in = graph.input[0].name
    for node in graph.node:
        node.input[:] = [INPUT_NAME if i == old_in else i for i in node.input]
    graph.input[0].name = INPUT_NAME
    return proto


def _export_onnx(run, model, target: Path, meta: dict, quantize) -> None:
    import onnx

    proto = _tf2onnx(run, model) if backend.is_tensorflow() else _export_onnx_keras(run, model, target)
    _name_onnx_io(proto, run)
    if quantize == "int8":
        proto = _onnx_int8(proto, run)
    del proto.metadata_props[:]
    for key, value in (("imgclf", json.dumps(meta)), ("class_names", json.dumps(meta["class_names"]))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"imgclf {__version__} export of {meta['source_run']} (Keras backend {backend.describe()})"
    with io.atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))


def _channels_first_pools(proto) -> int:
    """Rewrite the max pooling jax2onnx writes for channels-last images (the input unsqueezed to
    6-D, a 4-D ``MaxPool`` with kernel ``(1, k, k, 1)``, squeezed back), which ONNX Runtime
    refuses ("unsupported pooling size"), as the usual 2-D ``MaxPool`` between two transposes.
    Returns how many were rewritten."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    made = {out: n for n in graph.node for out in n.output}
    users = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    rewritten = 0
    for pool in [n for n in graph.node if n.op_type == "MaxPool"]:
        attrs = {a.name: list(a.ints) for a in pool.attribute}
        kernel = attrs.get("kernel_shape", [])
        if len(kernel) != 4 or kernel[0] != 1 or kernel[3] != 1:
            continue
        inner = made.get(pool.input[0])
        outer = made.get(inner.input[0]) if inner is not None and inner.op_type == "Unsqueeze" else None
        after = users.get(pool.output[0], [])
        if outer is None or outer.op_type != "Unsqueeze" or len(after) != 1 or after[0].op_type != "Squeeze":
            continue
        if [int(v) for v in consts.get(outer.input[1], [])] != [0] or \
                [int(v) for v in consts.get(inner.input[1], [])] != [1]:
            continue
        squeeze, source = after[0], outer.input[0]
        strides = attrs.get("strides", [1, 1, 1, 1])
        extra = {}
        if len(attrs.get("pads", [])) == 8:
            pads = attrs["pads"]
            extra["pads"] = [pads[1], pads[2], pads[5], pads[6]]
        if len(attrs.get("dilations", [])) == 4:
            extra["dilations"] = attrs["dilations"][1:3]
        name = pool.name or f"maxpool_{rewritten}"
        nodes = [helper.make_node("Transpose", [source], [f"{name}_nchw"], perm=[0, 3, 1, 2], name=f"{name}_to_nchw"),
                 helper.make_node("MaxPool", [f"{name}_nchw"], [f"{name}_pooled"], kernel_shape=kernel[1:3],
                                  strides=strides[1:3], name=f"{name}_2d", **extra),
                 helper.make_node("Transpose", [f"{name}_pooled"], [squeeze.output[0]], perm=[0, 2, 3, 1],
                                  name=f"{name}_to_nhwc")]
        at = list(graph.node).index(outer)
        for old in (outer, inner, pool, squeeze):
            graph.node.remove(old)
        for k, node in enumerate(nodes):
            graph.node.insert(at + k, node)
        rewritten += 1
    if rewritten:  # the unsqueeze and squeeze axes are used by nothing now
        used = {i for n in graph.node for i in n.input}
        for init in [i for i in graph.initializer if i.name not in used]:
            graph.initializer.remove(init)
    return rewritten


def _check_runs(path: Path, size: int) -> None:
    """The converted graph runs in ONNX Runtime (some converters write ops it rejects)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4  # the error below says it in one line
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        sess.run(None, {sess.get_inputs()[0].name: np.zeros((2, size, size, 3), np.float32)})
    except Exception as e:
        others = [b for b in ("torch", "tensorflow") if backend.installed(b) and b != backend.name()]
        where = f"KERAS_BACKEND={others[0]}" if others else "the PyTorch or TensorFlow backend (pip install 'imgclf[torch]')"
        raise ExportError(f"the ONNX graph Keras wrote on the {backend.name()} backend does not run in ONNX Runtime "
                          f"({first_line(e, 160)}); export with {where}") from None


def _tf2onnx(run, model):
    """The model's ONNX graph by tf2onnx (the converter the ONNX Runtime path shares)."""
    s = run.image_size
    try:
        return to_onnx(model, (s, s, 3), opset=OPSET)
    except Exception as e:
        raise ExportError(f"ONNX conversion (tf2onnx) failed: {first_line(e, 300)}") from None


def _name_onnx_io(proto, run) -> None:
    """``image`` -> ``probabilities``, batch dimension named ``batch`` (tf2onnx says Identity:0, unk__N)."""
    graph = proto.graph
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = [OUTPUT_NAME if o == old else o for o in node.output]
        node.input[:] = [OUTPUT_NAME if i == old else i for i in node.input]
    graph.output[0].name = OUTPUT_NAME
    for vi in (graph.input[0], graph.output[0]):
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"


def _onnx_int8(proto, run):
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError:
        raise ExportError(f"ONNX int8 quantization needs onnxruntime: {INSTALL_HINT}") from None
    import onnx

    reps = _representative(run, count=100)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(reps)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x[None]}

    with tempfile.TemporaryDirectory(prefix="imgclf-onnx-") as tmp:
        src, pre, dst = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(src))
        with quiet_stderr():
            # onnxruntime's recommended pre-processing: folds the BatchNormalization that tf2onnx
            # leaves as Mul + Add into the convolutions (without it MobileNetV2 loses far more).
            try:
                from onnxruntime.quantization.shape_inference import quant_pre_process

                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            except Exception:  # an older onnxruntime: quantize the graph as it is
                pre = src
            quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        return onnx.load(str(dst))


_EXPORTERS = {"keras": _export_keras, "savedmodel": _export_savedmodel, "tflite": _export_tflite,
              "onnx": _export_onnx}


# -- loading an export in its own runtime (what a user of the artifact would do) --------------

def load_exported(fmt: str, path: str | os.PathLike):
    """A function ``f(images float32 NxSxSx3) -> probabilities`` that runs the export in its runtime."""
    path = str(path)
    if fmt == "keras":
        import keras

        m = keras.models.load_model(path, compile=False, safe_mode=True)
        return lambda x: backend.numpy(m(x))  # a plain call: an export has no augmentation left to run
    if fmt == "savedmodel":
        tf = backend.require_tensorflow("loading a SavedModel")
        fn = tf.saved_model.load(path).signatures["serving_default"]
        return lambda x: fn(**{INPUT_NAME: tf.constant(x)})[OUTPUT_NAME].numpy()
    if fmt == "tflite":
        interpreter = tflite_interpreter(path)
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        state = {"shape": None}

        def run(x):
            if state["shape"] != x.shape:
                interpreter.resize_tensor_input(inp["index"], list(x.shape))
                interpreter.allocate_tensors()
                state["shape"] = x.shape
            interpreter.set_tensor(inp["index"], x)
            interpreter.invoke()
            return interpreter.get_tensor(out["index"]).copy()

        return run
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError(f"checking an ONNX export needs onnxruntime: {INSTALL_HINT}") from None
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return lambda x: sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def tflite_interpreter(path: str):
    """The LiteRT interpreter (``ai_edge_litert``) if installed, else ``tf.lite.Interpreter``."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=path)


# -- parity -----------------------------------------------------------------------

def _parity_images(run, limit: int):
    ds = run.dataset(progress=False)
    for split in ("test", "validation", "train"):
        rows = ds.indices(split)
        if len(rows):
            return split, np.asarray(ds.decoded()[rows[:limit]])
    raise ExportError(f"{run.path} has no images in any split to check the export against")


def parity_check(run, model, fmt: str, path: Path, quantize: str | None, *, limit: int = 1000,
                 batch_size: int = 32) -> dict:
    """Compare the export (in its runtime) with the Keras model on the run's test images."""
    split, images = _parity_images(run, limit)
    ref, got = [], []
    with quiet_stderr():  # "Created TensorFlow Lite XNNPACK delegate" and the like
        exported = load_exported(fmt, path)
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].astype(np.float32)
            ref.append(np.asarray(backend.numpy(model(x, training=False)), np.float32))
            got.append(np.asarray(exported(x), np.float32))
    ref, got = np.concatenate(ref), np.concatenate(got)
    diff = np.abs(ref - got)
    agree = float(np.mean(ref.argmax(1) == got.argmax(1)))
    if quantize is None:
        criterion = f"max abs prob diff <= {FLOAT_TOLERANCE:g}"
        passed = bool(diff.max() <= FLOAT_TOLERANCE)
    else:
        criterion = f"top-1 agreement >= {MIN_TOP1_AGREEMENT:.0%}"
        passed = agree >= MIN_TOP1_AGREEMENT
    return {
        "format": fmt, "quantize": quantize, "reference": "keras model.keras (training=False)",
        "split": split, "count": int(len(images)),
        "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
        "top1_agreement": agree, "top1_disagreements": int(np.sum(ref.argmax(1) != got.argmax(1))),
        "criterion": criterion, "passed": passed,
    }


# -- the verb -----------------------------------------------------------------------

def _export_on_tensorflow(run, fmt: str, quantize, folder: Path, name: str, *, check: bool, strict: bool) -> None:
    """Write a TensorFlow-only format from another backend: ``imgclf export`` on the TensorFlow
    backend, in a process of its own, reads the same run folder (``model.keras`` loads on any
    backend); its one-line error, if any, is this one's."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "imgclf.cli", "export", str(run.path), "--format", fmt, "--output", str(folder),
            "--name", name]
    argv += ["--quantize", quantize] if quantize else []
    argv += [] if check else ["--no-check"]
    argv += [] if strict else ["--no-strict"]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}  # (its parity check takes the default image count)
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.startswith("imgclf: error: ")]
        said = lines[-1][len("imgclf: error: "):] if lines else first_line(RuntimeError(done.stderr or "failed"))
        raise (ParityError if "parity" in said and "FAIL" in said else ExportError)(
            f"the {fmt} export on the TensorFlow backend: {said}")


def export(
    run,
    format: str = "savedmodel",
    quantize: str | None = None,
    output: str | os.PathLike | None = None,
    *,
    name: str = "model",
    check: bool = True,
    strict: bool = True,
    parity_images: int = 1000,
) -> ExportResult:
    """Export ``run`` to ``format`` (keras, savedmodel, tflite, onnx) in ``output``.

    ``output`` defaults to ``RUN/exports/<format>`` (``<format>-<quantize>`` when quantized).
    ``quantize``: ``float16`` or ``int8`` for tflite, ``int8`` for onnx (calibrated on training
    images). With ``check`` the export is loaded in its own runtime and compared with the
    Keras model on the test split (figures in ``parity.json``); with ``strict`` a failed
    check raises :class:`ParityError` (the files stay, for inspection).
    """
    fmt = str(format).lower().replace("_", "").replace("-", "")
    fmt = {"tf": "savedmodel", "tfsavedmodel": "savedmodel", "litert": "tflite", "h5": "keras"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if quantize in ("", "none", "None"):
        quantize = None
    if quantize is not None and quantize not in QUANTIZE.get(fmt, ()):
        allowed = "; ".join(f"{f}: {', '.join(q)}" for f, q in QUANTIZE.items())
        raise ConfigError(f"--quantize {quantize} is not available for {fmt} (available: {allowed})")
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"export name must be a plain file name, got {name!r}")
    run = resolve_run(run)
    folder = Path(output) if output is not None else run.path / "exports" / (fmt + (f"-{quantize}" if quantize else ""))
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--output {folder} is a file; give a folder")
    if fmt in TENSORFLOW_FORMATS and not backend.is_tensorflow():
        if not backend.installed("tensorflow"):
            backend.require_tensorflow_backend(f"the {fmt} export")
        # model.keras is backend-neutral: TensorFlow writes it from the same run folder
        _export_on_tensorflow(run, fmt, quantize, folder, name, check=check, strict=strict)
        meta_file = folder / f"{name}.json"
        parity = io.read_json(folder / "parity.json") if check and (folder / "parity.json").is_file() else {}
        return ExportResult(fmt, quantize, folder, folder / (name + EXTENSIONS[fmt]), meta_file, parity)
    if fmt == "onnx":
        _require_onnx()
        if check:
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                raise ExportError(f"checking an ONNX export needs onnxruntime: {INSTALL_HINT}") from None
    model = inference_model(run.model)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name + EXTENSIONS[fmt])
    meta = metadata(run, fmt, quantize, target.name)
    _EXPORTERS[fmt](run, model, target, meta, quantize)

    parity = parity_check(run, run.model, fmt, target, quantize, limit=parity_images) if check else {}
    if parity:
        io.write_json(folder / "parity.json", parity)
    meta_file = io.write_json(folder / f"{name}.json", {**meta, "parity": parity or None})
    result = ExportResult(fmt, quantize, folder, target, meta_file, parity)
    if strict and parity and not parity["passed"]:
        raise ParityError(f"{result.summary()}; the export is in {folder} for inspection")
    return result


__all__ = ["EXTENSIONS", "ExportError", "ExportResult", "FORMATS", "ParityError", "QUANTIZE", "export",
           "inference_model", "load_exported", "metadata", "parity_check", "tflite_interpreter"]
