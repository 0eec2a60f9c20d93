"""Grad-CAM heatmaps: which part of the image made the model say what it said.

    import imgclf
    e = imgclf.load("runs/x").explain("cat.jpg")     # an Explanation
    e.heatmap            # (S, S) float32 in [0, 1], the model's input size
    e.figure             # a matplotlib Figure: the image and the overlay
    e.save("cat-gradcam.png")                         # the overlay as a PNG
    heatmap, figure = e                               # or unpacked

Keras' own recipe (keras.io/examples/vision/grad_cam): the gradient of the class's logit with
respect to the last convolutional feature map, averaged over the map's positions, weights the
map's channels; their sum, with negative values cut to 0 and scaled to a maximum of 1, is the
heatmap, then resized to the input. The last convolutional feature map is found on its own:
for a transfer model it is the output of the nested backbone model (its last convolutional
block), for the scratch CNNs the last ``Conv2D``.

The heatmap comes from the very model that predicts: the run's model, its layers called one
after another with ``training=False`` (so augmentation is off and the preprocessing inside the
model is the same), and the probabilities returned with the heatmap are that pass's; the pass
is checked against ``model(x, training=False)`` once per model. The logit is taken before the
final softmax (a calibrated model's logits are divided by its temperature, which scales every
gradient alike and leaves the normalised heatmap unchanged).
"""

from __future__ import annotations

import io as _io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import backend, figures, io
from .errors import ConfigError, DataError, ExplainError
from .inference.inputs import decode, describe_error, expand_inputs
from .run import resolve_run

OVERLAY_ALPHA = 0.55
COLORMAP = "jet"  # as the keras.io recipe




def _is_conv(layer) -> bool:
    return "Conv" in type(layer).__name__ and hasattr(layer, "kernel_size")


def _contains_conv(layer) -> bool:
    if _is_conv(layer):
        return True
    return any(_contains_conv(sub) for sub in getattr(layer, "layers", ()))


def _rank(layer) -> int:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):
        return 0


def target_layer(model):
    """The layer whose output is the last convolutional feature map (a top-level layer of
    ``model``: a ``Conv2D``, or a nested backbone model that holds convolutions)."""
    for layer in reversed(model.layers):
        if _rank(layer) == 4 and _contains_conv(layer):
            return layer
    raise ExplainError(
        f"model {model.name!r} has no convolutional layer, so it has no feature map to explain with "
        "Grad-CAM; predict without --explain")


class GradCAM:
    """Grad-CAM for a Keras model built as a chain of layers (every registry model is one)."""

    def __init__(self, model, *, check: bool = True, compile: bool = True):
        import keras

        self.model = model
        self.layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        self.target = target_layer(model)
        self.target_index = self.layers.index(self.target)
        last = self.layers[-1]
        self._dense_softmax = (isinstance(last, keras.layers.Dense)
                               and getattr(last.activation, "__name__", "") == "softmax")
        shape = model.input_shape
        self.image_size = (int(shape[1]), int(shape[2]))
        if backend.is_tensorflow():
            import tensorflow as tf

            # one traced graph for the layer-by-layer pass and its gradient: tracing costs seconds
            # once, then each image runs several times faster than eagerly (compile=False: eager)
            self._graph = tf.function(self._forward, reduce_retracing=True) if compile else self._forward
        if check:
            self._check_chain()

    def _check_chain(self) -> None:
        x = np.random.default_rng(0).uniform(0, 255, (1, *self.image_size, 3)).astype(np.float32)
        _, probs, _ = self._run(x, np.zeros(1, np.int32))
        ref = backend.numpy(self.model(x, training=False))
        diff = float(np.abs(ref - probs).max())
        if diff > 1e-4:
            raise ExplainError(
                f"model {self.model.name!r} is not a chain of layers that Grad-CAM can follow "
                f"(its layer-by-layer output differs by {diff:.2g})")

    def _run(self, x, class_index):
        if not backend.is_tensorflow():
            return self._run_other(x, class_index)
        import tensorflow as tf

        fmap, probs, grads = self._graph(tf.convert_to_tensor(x, tf.float32),
                                         tf.convert_to_tensor(class_index, tf.int32))
        return fmap.numpy(), probs.numpy(), grads.numpy()

    def _forward(self, x, class_index):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            fmap = None
            for i, layer in enumerate(self.layers):
                if i == len(self.layers) - 1 and self._dense_softmax:
                    logits = tf.matmul(x, layer.kernel) + (layer.bias if layer.use_bias else 0.0)
                    probs = tf.nn.softmax(logits)
                    break
                x = layer(x, training=False)
                if i == self.target_index:
                    fmap = x
                    tape.watch(fmap)
            else:
                logits = probs = x
            chosen = tf.gather(logits, class_index, axis=1, batch_dims=1)
            score = tf.reduce_sum(chosen)
        grads = tape.gradient(score, fmap)
        return fmap, probs, grads

    def _head(self, x):
        """The layers up to the target feature map (JAX, PyTorch)."""
        for layer in self.layers[:self.target_index + 1]:
            x = layer(x, training=False)
        return x

    def _tail(self, fmap, class_index):
        """``(score of the chosen classes, probabilities)`` from the feature map (JAX, PyTorch)."""
        import keras

        ops = keras.ops
        x = fmap
        rest = self.layers[self.target_index + 1:]
        for i, layer in enumerate(rest):
            if i == len(rest) - 1 and self._dense_softmax:
                logits = ops.matmul(x, layer.kernel) + (layer.bias if layer.use_bias else 0.0)
                probs = ops.softmax(logits)
                break
            x = layer(x, training=False)
        else:
            logits = probs = x
        chosen = ops.take_along_axis(logits, ops.expand_dims(ops.convert_to_tensor(class_index, "int32"), 1), axis=1)
        return ops.sum(chosen), probs

    def _run_other(self, x, class_index):
        """The gradient of the class score at the feature map: ``jax.grad`` or torch autograd."""
        import keras

        fmap = self._head(keras.ops.convert_to_tensor(x, "float32"))
        if backend.name() == "jax":
            import jax

            (_, probs), grads = jax.value_and_grad(lambda f: self._tail(f, class_index), has_aux=True)(fmap)
        elif backend.name() == "torch":
            import torch

            fmap = fmap.detach().requires_grad_(True)
            score, probs = self._tail(fmap, class_index)
            (grads,) = torch.autograd.grad(score, fmap)
            fmap, probs = fmap.detach(), probs.detach()
        else:
            raise ExplainError(f"Grad-CAM needs the TensorFlow, JAX or PyTorch backend, not {backend.name()}")
        return tuple(np.asarray(keras.ops.convert_to_numpy(t), np.float32) for t in (fmap, probs, grads))

    def __call__(self, images, class_index=None) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps ``(N, S, S)`` in [0, 1] and probabilities ``(N, classes)`` of ``images``
        (``(N, S, S, 3)``, 0..255); ``class_index``: one class per image (default: the top one)."""
        import cv2

        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.shape[1:3] != self.image_size:
            raise ExplainError(f"images are {x.shape[1]}x{x.shape[2]}, the model takes "
                               f"{self.image_size[0]}x{self.image_size[1]}")
        if class_index is None:
            class_index = backend.numpy(self.model(x, training=False)).argmax(1)
        class_index = np.array(np.broadcast_to(np.asarray(class_index, dtype=np.int32), (len(x),)))
        fmap, probs, grads = self._run(x, class_index)
        weights = grads.mean(axis=(1, 2))  # (N, C)
        cam = np.maximum(np.einsum("nhwc,nc->nhw", fmap, weights), 0.0)
        top = cam.reshape(len(cam), -1).max(1)
        cam = np.where(top[:, None, None] > 0, cam / np.maximum(top, 1e-12)[:, None, None], 0.0)
        h, w = self.image_size
        maps = np.stack([cv2.resize(c.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for c in cam])
        return np.clip(maps, 0.0, 1.0).astype(np.float32), probs.astype(np.float32)


def overlay(image, heatmap, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """``image`` (uint8 HxWx3) with ``heatmap`` (HxW in [0, 1]) painted over it in the jet colours;
    the hotter a place, the more of the colour covers it."""
    from matplotlib import colormaps

    img = np.asarray(image, dtype=np.float32)
    h = np.asarray(heatmap, dtype=np.float32)
    colour = colormaps[COLORMAP](h)[..., :3] * 255.0
    weight = (alpha * (0.3 + 0.7 * h))[..., None]
    return np.clip(img * (1 - weight) + colour * weight, 0, 255).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Explanation:
    """A Grad-CAM heatmap of one image for one class (see the module docstring)."""

    name: str
    image: np.ndarray  # uint8 (S, S, 3): what the model saw
    heatmap: np.ndarray  # float32 (S, S) in [0, 1]
    class_name: str  # the class explained
    probability: float  # its probability
    label: str  # the top class
    probabilities: dict = field(default_factory=dict)

    @property
    def overlay(self) -> np.ndarray:
        return overlay(self.image, self.heatmap)

    @property
    def figure(self):
        """The image and its heatmap overlay, side by side, with the colour scale."""
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        fig = figures.new_figure((7.4, 3.9))
        a, b = fig.subplots(1, 2)
        figures.show_image(a, self.image)
        a.set_title(Path(self.name).name[:40], fontsize=figures.STYLE["tick"])
        figures.show_image(b, self.overlay)
        b.set_title(f"Grad-CAM: {self.class_name} ({self.probability:.0%})", fontsize=figures.STYLE["tick"])
        bar = fig.colorbar(ScalarMappable(Normalize(0, 1), COLORMAP), ax=b, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=figures.STYLE["small"])
        bar.set_label("importance", fontsize=figures.STYLE["small"])
        return fig

    def png(self) -> bytes:
        """The overlay as PNG bytes (the model's input size)."""
        return png_bytes(self.overlay)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the overlay PNG atomically."""
        return io.write_bytes(path, self.png())

    def __iter__(self):
        return iter((self.heatmap, self.figure))


def explainer_for(run) -> GradCAM:
    """The :class:`GradCAM` of a run's model, made once per loaded model."""
    model = run.model
    cached = run.memo.get("gradcam")
    if cached is None or cached.model is not model:
        cached = GradCAM(model)
        run.memo["gradcam"] = cached
    return cached


def explain(run, image, class_name: str | None = None):
    """The :class:`Explanation` of ``image`` (a path, bytes, PIL image or array; a list gives a
    list) for ``class_name`` (default: the predicted class), with the run's own decoding."""
    run = resolve_run(run)
    names = run.class_names
    if class_name is not None and class_name not in names:
        raise ConfigError(f"unknown class {class_name!r}; the run's classes are: {', '.join(names)}")
    single = not isinstance(image, (list, tuple))
    items = expand_inputs(image)
    cam = explainer_for(run)
    out = []
    for item in items:
        if item.error is not None:
            raise DataError(f"{item.name}: {item.error}")
        try:
            pixels = decode(item.source, run.preprocessing)
        except Exception as e:
            raise DataError(f"{item.name}: {describe_error(e)}") from None
        out.append(explanation(cam, pixels, names, item.name,
                               None if class_name is None else names.index(class_name)))
    if single and len(out) == 1:
        return out[0]
    return out


def explanation(cam: GradCAM, pixels: np.ndarray, class_names, name: str, class_index=None) -> Explanation:
    heat, probs = cam(pixels[None], None if class_index is None else [class_index])
    p = probs[0]
    c = int(p.argmax()) if class_index is None else int(class_index)
    return Explanation(name=name, image=np.asarray(pixels, np.uint8), heatmap=heat[0], class_name=class_names[c],
                       probability=float(p[c]), label=class_names[int(p.argmax())],
                       probabilities={n: float(v) for n, v in zip(class_names, p)})


__all__ = ["ExplainError", "Explanation", "GradCAM", "explain", "explainer_for", "overlay", "png_bytes",
           "target_layer"]
