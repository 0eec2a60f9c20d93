"""``imgclf predict``, ``imgclf export`` and ``imgclf serve``: a trained run put to use."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import io
from ..config import RUNTIMES
from ..errors import ConfigError
from ..inference.export import FORMATS, QUANTIZE, export
from ..inference.predict import predict
from ..inference.serve import (
    DEFAULT_HOST,
    DEFAULT_LIMIT_CONCURRENCY,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_UPLOAD,
    DEFAULT_PORT,
    DEFAULT_TOP_K,
    serve,
)
from ..run import load
from .common import quiet_python_logs

PREDICT_FORMATS = ("table", "csv", "json")


# -- predict ----------------------------------------------------------------------------

def cmd_predict(args) -> int:
    fmt = args.format
    if fmt is None:
        suffix = Path(args.output).suffix.lower().lstrip(".") if args.output else ""
        fmt = suffix if suffix in ("csv", "json") else "table"
    fmt = fmt.lower()
    if fmt not in PREDICT_FORMATS:
        raise ConfigError(f"unknown --format {args.format!r}; choose one of {', '.join(PREDICT_FORMATS)}")
    quiet_python_logs()
    run = load(args.run)
    results = predict(run, args.paths, top_k=args.top_k, batch_size=args.batch_size,
                      progress=not args.quiet, tta=args.tta, explain=args.explain, runtime=args.runtime)
    if fmt == "csv":
        text = results.to_csv()
    elif fmt == "json":
        text = results.to_json()
    else:
        text = results.table() + "\n"
    if args.output:
        io.write_text(args.output, text)
        n_err = len(results.errors)
        print(f"{len(results)} predictions written to {args.output}"
              + (f" ({n_err} inputs could not be read)" if n_err else ""))
    else:
        sys.stdout.write(text)
    if results.explain_error:
        print(f"imgclf: error: --explain: {results.explain_error}", file=sys.stderr)
        return 2
    if args.explain and not args.quiet:
        print(f"{sum(1 for r in results if r.explanation)} heatmaps written to {args.explain}", file=sys.stderr)
    return 1 if results and len(results.errors) == len(results) else 0


# -- export -----------------------------------------------------------------------------

def cmd_export(args) -> int:
    quiet_python_logs()
    result = export(args.run, args.format, quantize=args.quantize, output=args.output, name=args.name,
                    check=not args.no_check, strict=not args.no_strict)
    print(f"exported  {result.path}")
    print(f"metadata  {result.metadata_file}")
    if result.parity:
        print(result.summary())
        print(f"parity    {result.folder / 'parity.json'}")
    if not result.passed:
        print("warning: the parity check failed (see above); kept because of --no-strict", file=sys.stderr)
    return 0


# -- serve ------------------------------------------------------------------------------

def cmd_serve(args) -> int:
    quiet_python_logs()
    serve(args.run, host=args.host, port=args.port, log_level=args.log_level,
          max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels,
          max_batch=args.max_batch, max_queue=args.max_queue, top_k=args.top_k,
          limit_concurrency=args.limit_concurrency, runtime=args.runtime)
    return 0


def add_commands(sub) -> None:
    """Register ``predict``, ``export`` and ``serve`` on the ``imgclf`` parser."""
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "predict", help="predict the classes of image files, folders or globs", formatter_class=fmt,
        description=(
            "Top-k classes with probabilities for each image, using a trained run.\n\n"
            "PATHS are image files, folders (searched recursively for image files) or glob\n"
            "patterns (quote them: 'photos/**/*.jpg'). Images are decoded exactly as in training\n"
            "(the run's size, fit and interpolation) and fed to the model in batches. A file that\n"
            "cannot be read is reported in the output with its reason; it does not stop the others.\n\n"
            "examples:\n"
            "  imgclf predict runs/mobilenet_v2-x cat.jpg photos/\n"
            "  imgclf predict runs/mobilenet_v2-x 'photos/*.png' --format csv -o predictions.csv\n"
            "  imgclf predict runs/mobilenet_v2-x photos/ --top-k 1 --format json"
        ),
    )
    p.add_argument("run", help="run folder (made by `imgclf train`)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    p.add_argument("-k", "--top-k", type=int, default=3, help="classes to report per image (default 3)")
    p.add_argument("--batch-size", type=int, default=32, help="images per model call (default 32)")
    p.add_argument("-f", "--format", default=None, metavar="FORMAT",
                   help="table (default on the terminal), csv or json; by default taken from "
                        "--output's extension")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    p.add_argument("--tta", nargs="?", const="flip", choices=("flip", "crops"),
                   help="test-time augmentation: average the image with its mirror (flip, the default) "
                        "or with its mirror and four corner crops (crops)")
    p.add_argument("--explain", metavar="DIR",
                   help="write one Grad-CAM overlay PNG per image into DIR (the predicted class's heatmap)")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="where the model runs: auto (default: ONNX Runtime on a CPU when a converted model is "
                        "cached or there are enough images to pay for converting it, else Keras), keras, "
                        "onnxruntime (converted once into RUN/cache/, checked against Keras)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    quant = "; ".join(f"{f}: {', '.join(q)}" for f, q in QUANTIZE.items())
    p = sub.add_parser(
        "export", help="export a run's model (keras, savedmodel, tflite, onnx) with a parity check",
        formatter_class=fmt,
        description=(
            "Export the trained model for deployment, then check it in its own runtime against the\n"
            "Keras model on the run's test images.\n\n"
            "Every export takes float32 RGB images (N, S, S, 3) with values 0..255 and returns\n"
            "softmax probabilities in class order; the model's own scaling is inside it. The class\n"
            "names and the preprocessing travel inside the artifact where the format allows (.keras\n"
            "zip entry, SavedModel 'metadata' signature and assets/, TFLite metadata and associated\n"
            "files, ONNX metadata_props) and always in <name>.json beside it.\n\n"
            "The parity figures (max abs probability difference, top-1 agreement) are printed and\n"
            "saved in parity.json: float exports must agree within 1e-4, quantized ones must agree on\n"
            "the top-1 class for at least 98% of the test images (int8 is calibrated on training\n"
            "images). A failed check is an error (exit 2) unless --no-strict; the files stay for\n"
            "inspection either way.\n\n"
            "Loading the exports without imgclf:\n"
            "  keras       keras.models.load_model('model.keras')\n"
            "  savedmodel  tf.saved_model.load('model').signatures['serving_default'](image=x)['probabilities']\n"
            "  tflite      ai_edge_litert.interpreter.Interpreter('model.tflite')  (or tf.lite.Interpreter)\n"
            "  onnx        onnxruntime.InferenceSession('model.onnx').run(['probabilities'], {'image': x})\n\n"
            "onnx needs the export extra: pip install 'imgclf[export]'\n\n"
            "examples:\n"
            "  imgclf export runs/mobilenet_v2-x --format tflite --quantize int8\n"
            "  imgclf export runs/mobilenet_v2-x --format onnx --output deploy/"
        ),
    )
    p.add_argument("run", help="run folder (made by `imgclf train`)")
    p.add_argument("-f", "--format", default="savedmodel", metavar="FORMAT",
                   help=f"one of {', '.join(FORMATS)} (default savedmodel)")
    p.add_argument("--quantize", default=None, metavar="MODE", help=f"quantization ({quant}); default none")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="folder for the export (default RUN/exports/<format>[-<quantize>])")
    p.add_argument("--name", default="model", help="file name of the export, without extension (default model)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.add_argument("--no-strict", action="store_true", help="keep and report an export that fails the parity check, exit 0")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "serve", help="serve a run over HTTP, with a web page to try it", formatter_class=fmt,
        description=(
            "Serve the model with FastAPI + uvicorn.\n\n"
            "  GET  /          a web page: drop or pick an image, see the class and probability bars\n"
            "  POST /predict   an image as the multipart field 'file' or as the raw body -> JSON top-k\n"
            "                  (?top_k=N); 400 not an image, 413 too large, 503 busy\n"
            "  GET  /health    status, model, queue figures\n"
            "  GET  /classes   the class names\n\n"
            "It listens on 127.0.0.1 (this machine only) unless --host says otherwise; there is no\n"
            "authentication. Concurrent requests are batched: one worker thread runs the model on up\n"
            "to --max-batch waiting images at a time, so memory stays bounded.\n\n"
            "examples:\n"
            "  imgclf serve runs/mobilenet_v2-x\n"
            "  curl -F file=@cat.jpg http://127.0.0.1:8000/predict\n"
            "  curl --data-binary @cat.jpg 'http://127.0.0.1:8000/predict?top_k=1'"
        ),
    )
    p.add_argument("run", help="run folder (made by `imgclf train`)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD / 1024 / 1024,
                   help=f"largest upload in MB; larger ones get 413 (default {DEFAULT_MAX_UPLOAD // 1024 // 1024})")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"largest image in pixels, checked before decoding (default {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"most waiting images per model call (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                   help=f"most images waiting for the model; more get 503 (default {DEFAULT_MAX_QUEUE})")
    p.add_argument("--limit-concurrency", type=int, default=DEFAULT_LIMIT_CONCURRENCY,
                   help=f"most open requests; more get 503 (default {DEFAULT_LIMIT_CONCURRENCY})")
    p.add_argument("-k", "--top-k", type=int, default=DEFAULT_TOP_K,
                   help=f"classes per answer unless the request says ?top_k= (default {DEFAULT_TOP_K})")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="where the model runs: auto (default: ONNX Runtime on a CPU, Keras on a GPU), keras, "
                        "onnxruntime (converted once into RUN/cache/, checked against Keras)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn log level (debug also logs every request)")
    p.set_defaults(func=cmd_serve)
