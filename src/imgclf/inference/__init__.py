"""After training: predict on files, export to deployment formats, serve over HTTP.

* :mod:`imgclf.inference.predict` (``imgclf predict``, ``Run.predict``): top-k classes for files,
  folders, globs, bytes, PIL images or arrays, as a ``Predictions`` list that prints as a table
  or writes CSV / JSON.
* :mod:`imgclf.inference.export` (``imgclf export``): Keras, SavedModel, TFLite (float16 / int8)
  or ONNX (float / int8), with the class names and preprocessing inside and beside the artifact,
  and a parity check against the Keras model.
* :mod:`imgclf.inference.serve` (``imgclf serve``): a FastAPI app with batched inference, upload
  limits and a web page.

The submodules share their names with their main function (``from imgclf.inference.predict
import predict``); heavy dependencies (TensorFlow, tf2onnx, FastAPI) load only when used.
"""
