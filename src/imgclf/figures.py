"""Figures for the run folder and the report: plain numpy / python data in, a matplotlib Figure out.

Every function builds a :class:`matplotlib.figure.Figure` with the object-oriented API only (no
pyplot state), so it is safe to call from worker threads, needs no display, and a returned
Figure shows inline in Jupyter. :func:`save` writes one atomically.

Nothing here imports TensorFlow: callers pass arrays (``uint8`` HxWx3, HxW grayscale, HxWx1,
HxWx4, or floats in [0, 1] or [0, 255]), lists of floats (a Keras ``history.history`` dict, or
the History object itself) and class names.

All figures share one look, set by :data:`STYLE`: the Okabe-Ito colour-blind-safe palette,
readable font sizes, light grid, percentages on every accuracy axis, and constrained layout so
labels are never clipped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

from imgclf.io import atomic_path

__all__ = [
    "STYLE",
    "save",
    "sample_grid",
    "label_frequencies",
    "augmentation_grid",
    "history",
    "confusion_matrix",
    "top_losses",
    "image_groups",
    "comparison",
    "reliability_diagram",
]

#: The one place the look is decided. Applied explicitly to each artist (never through global
#: rcParams), so figures look the same whatever the caller's matplotlib settings and threads.
STYLE: dict[str, Any] = {
    # Okabe & Ito (2008), ordered so the first colours contrast best on white; yellow last.
    "palette": ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"),
    "markers": ("o", "s", "^", "D", "v", "P", "X", "*"),
    "suptitle": 13,
    "title": 11,
    "label": 10,
    "tick": 9,
    "small": 8,
    "tiny": 7,
    "text": "#222222",
    "muted": "#666666",
    "grid": {"color": "#dddddd", "linewidth": 0.7},
    "baseline": {"color": "#555555", "linestyle": "--", "linewidth": 1.3},
    "wrong": "#D55E00",  # vermillion: a misclassified image
    "right": "#009E73",  # bluish green: a correct one
    "cmap": "Blues",
    "facecolor": "white",
    "max_width": 16.0,  # inches; figures never grow past this ...
    "max_height": 18.0,  # ... or this, however many classes there are
}

_ACCURACY_KEYS = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy")


# --------------------------------------------------------------------------------------------
# saving


def save(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` atomically and return the path.

    The parent folder is created. A path without a suffix gets ``.png``; otherwise the suffix
    picks the format (``.png``, ``.svg``, ``.pdf``, ...). The figure is not closed: it is a plain
    Figure, freed when the last reference goes.
    """
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    fmt = path.suffix.lstrip(".").lower()
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"cannot save a figure as {path.name!r}: format {fmt!r} is not one of {sorted(supported)}")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt, facecolor=STYLE["facecolor"])
    return path


# --------------------------------------------------------------------------------------------
# images


def sample_grid(images_by_class: Mapping[str, Sequence[np.ndarray]], title: str | None = None) -> Figure:
    """A row of sample images per class, each image titled with its class name.

    Classes keep the mapping's order; a class with fewer images than the others leaves blank
    cells, one with none says so. At most 10 images per class are shown. With many classes the
    rows wrap into side-by-side column groups and cells shrink (down to a legible minimum) so the
    figure stays within ``STYLE['max_width']`` x ``STYLE['max_height']``; classes that still do
    not fit are left out and the title says how many are shown.
    """
    if not isinstance(images_by_class, Mapping):
        raise ValueError(f"images_by_class must map class name -> list of images; got {type(images_by_class).__name__}")
    classes = [str(c) for c in images_by_class]
    lists = [list(v) for v in images_by_class.values()]
    n_total = len(classes)
    if n_total == 0:
        return message_figure("no classes to show", title)

    k_wanted = max(1, min(10, max(len(v) for v in lists)))
    max_w, max_h = STYLE["max_width"], STYLE["max_height"]
    min_cell = 1.1
    gap = 0.35  # spacer between column groups, in cells

    def cell_size(groups: int, rows: int, k: int) -> float:
        by_width = max_w / (groups * k + gap * (groups - 1))
        by_height = max_h / rows - (_row_height(0.0, STYLE["small"]))
        return min(2.0, by_width, by_height)

    def layout(k: int) -> tuple[int, int, float, int]:
        # Fewest column groups that keep cells legible, then as many rows as fit.
        groups = 1
        while cell_size(groups, math.ceil(n_total / groups), k) < min_cell:
            if ((groups + 1) * k + gap * groups) * min_cell > max_w:
                break  # another group would not fit across
            groups += 1
        rows = min(math.ceil(n_total / groups), max(1, int(max_h / _row_height(min_cell, STYLE["small"]))))
        return groups, rows, cell_size(groups, rows, k), min(n_total, rows * groups)

    # Many classes: show fewer images per class (down to 3) before leaving classes out.
    k = k_wanted
    groups, rows, cell, shown = layout(k)
    while shown < n_total and k > 3:
        k -= 1
        groups, rows, cell, shown = layout(k)
    rows = math.ceil(shown / groups)

    width_ratios: list[float] = []
    for g in range(groups):
        if g:
            width_ratios.append(gap)
        width_ratios.extend([1.0] * k)
    title_size = STYLE["label"] if cell >= 1.6 else STYLE["small"]
    heading = title
    if shown < n_total:
        heading = f"{title or 'samples'} (first {shown} of {n_total} classes)"
    fig = new_figure((cell * (groups * k + gap * (groups - 1)) + 0.15,
                   rows * _row_height(cell, title_size) + _heading_height(heading)))
    gs = fig.add_gridspec(rows, len(width_ratios), width_ratios=width_ratios)
    chars = max(6, int(cell * 72 / (title_size * 0.62)))

    for i in range(shown):
        g, r = divmod(i, rows)
        col0 = g * (k + 1)
        name, imgs = classes[i], lists[i][:k]
        if not imgs:
            ax = fig.add_subplot(gs[r, col0])
            ax.set_axis_off()
            ax.set_box_aspect(1)
            ax.set_title(_short(name, chars), fontsize=title_size, color=STYLE["text"], pad=3)
            ax.text(0.5, 0.5, "(no images)", ha="center", va="center", fontsize=title_size,
                    color=STYLE["muted"], transform=ax.transAxes)
            continue
        for j, img in enumerate(imgs):
            ax = fig.add_subplot(gs[r, col0 + j])
            show_image(ax, img)
            ax.set_title(_short(name, chars), fontsize=title_size, color=STYLE["text"], pad=3)

    if heading:
        fig.suptitle(heading, fontsize=STYLE["suptitle"])
    return fig


def augmentation_grid(images: Sequence[np.ndarray], title: str) -> Figure:
    """Augmented versions of one image in a 3-column grid (3x3 for nine); the first is the original."""
    images = list(images)
    if not images:
        return message_figure("no images to show", title)
    ncols = min(3, len(images))
    nrows = math.ceil(len(images) / ncols)
    cell = min(3.0, STYLE["max_height"] / nrows)
    fig = new_figure((cell * ncols + 0.15, nrows * _row_height(cell, STYLE["label"]) + _heading_height(title)))
    for i, img in enumerate(images):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        show_image(ax, img)
        ax.set_title("original" if i == 0 else f"augmented {i}", fontsize=STYLE["label"],
                     color=STYLE["text"] if i == 0 else STYLE["muted"],
                     fontweight="bold" if i == 0 else "normal", pad=3)
    if title:
        fig.suptitle(title, fontsize=STYLE["suptitle"])
    return fig


def top_losses(
    images: Sequence[np.ndarray],
    true: Sequence[str],
    predicted: Sequence[str],
    confidence: Sequence[float],
    paths: Sequence[str] | None = None,
    title: str | None = None,
    names: tuple[str, str] = ("true", "pred"),
) -> Figure:
    """A grid of (confidently) misclassified images, in the order given.

    Each is titled ``true: cats / pred: dogs (97%)`` (on two lines when the names are long), in
    vermillion when wrong; ``confidence`` is the predicted class's probability in [0, 1]. With
    ``paths``, the file name is written small under each image.
    """
    images = list(images)
    n = len(images)
    lengths = {"true": len(true), "predicted": len(predicted), "confidence": len(confidence)}
    if paths is not None:
        lengths["paths"] = len(paths)
    if any(v != n for v in lengths.values()):
        raise ValueError(f"top_losses needs one entry per image ({n} images); got lengths {lengths}")
    conf = np.asarray(confidence, dtype=float)
    if n and (np.nanmin(conf) < 0 or np.nanmax(conf) > 1):
        raise ValueError(f"confidence must be probabilities in [0, 1]; got values from {np.nanmin(conf)} to {np.nanmax(conf)}")
    if n == 0:
        return message_figure("no misclassified images", title)

    max_cols = 4 if n <= 16 else 6 if n <= 36 else 8
    nrows = math.ceil(n / max_cols)
    ncols = math.ceil(n / nrows)  # balanced: 5 -> 3+2, 6 -> 3+3, 8 -> 4+4
    cell = min(2.7, STYLE["max_width"] / ncols, STYLE["max_height"] / (nrows * 1.35))
    label_size = STYLE["small"] if cell < 2.4 else STYLE["tick"]
    fit = int(cell * 72 / (label_size * 0.6))  # characters that fit over one image
    a, b = names
    lines = 2 if any(len(f"{a}: {t} / {b}: {p} (100%)") > fit for t, p in zip(true, predicted)) else 1
    row = _row_height(cell, label_size, lines) + (STYLE["tiny"] * 1.4 / 72 if paths is not None else 0)
    fig = new_figure((cell * ncols + 0.15, nrows * row + _heading_height(title)))
    for i in range(n):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        show_image(ax, images[i])
        t, p = str(true[i]), str(predicted[i])
        pct = "?" if math.isnan(conf[i]) else f"{conf[i]:.0%}"
        line = f"{a}: {t} / {b}: {p} ({pct})"
        if len(line) > fit:
            short = max(4, fit - 12)
            line = f"{a}: {_short(t, short)} /\n{b}: {_short(p, short)} ({pct})"
        ax.set_title(line, fontsize=label_size, pad=3, color=STYLE["wrong"] if t != p else STYLE["right"])
        if paths is not None:
            ax.text(0.5, -0.03, _short_middle(Path(str(paths[i])).name, fit + 4), transform=ax.transAxes,
                    ha="center", va="top", fontsize=STYLE["tiny"], color=STYLE["muted"])
    if title:
        fig.suptitle(title, fontsize=STYLE["suptitle"])
    return fig


def image_groups(
    groups: Sequence[Sequence[np.ndarray]],
    captions: Sequence[Sequence[str]],
    headings: Sequence[str],
    title: str | None = None,
    max_per_group: int = 6,
) -> Figure:
    """One row per group of images (duplicates of one another), each image captioned (its
    class and split), each row headed (the group's kind); ``+N`` when a row is cut short."""
    n = len(groups)
    if n == 0:
        return message_figure("no groups", title)
    cols = min(max_per_group, max(len(g) for g in groups))
    cell = min(2.0, STYLE["max_width"] / cols, STYLE["max_height"] / (n * 1.5))
    size = STYLE["small"] if cell < 1.8 else STYLE["tick"]
    row = _row_height(cell, size, 2) + (size * 1.6) / 72
    fig = new_figure((cell * cols + 0.15, n * row + _heading_height(title)))
    subs = fig.subfigures(n, 1, squeeze=False)[:, 0]
    for sub, imgs, caps, head in zip(subs, groups, captions, headings):
        sub.suptitle(head, fontsize=size, ha="left", x=0.01, color=STYLE["text"])
        shown = list(imgs)[:cols]
        axes = sub.subplots(1, cols, squeeze=False)[0]
        for k, ax in enumerate(axes):
            if k >= len(shown):
                ax.set_axis_off()
                continue
            show_image(ax, shown[k])
            text = caps[k]
            if k == cols - 1 and len(imgs) > cols:
                text += f"  (+{len(imgs) - cols})"
            ax.set_title(text, fontsize=size, pad=2, color=STYLE["muted"])
    if title:
        fig.suptitle(title, fontsize=STYLE["suptitle"])
    return fig


# --------------------------------------------------------------------------------------------
# data


def label_frequencies(
    counts: Mapping[str, int] | Mapping[str, Mapping[str, int]],
    baseline: float | None = None,
    title: str | None = None,
) -> Figure:
    """Images per class as bars, counts written on them, with the majority-class baseline.

    ``counts`` is ``{class: n}`` or ``{split: {class: n}}`` (grouped bars, one colour per split).
    ``baseline`` is the accuracy of always predicting the majority class; by default the
    majority class's share of all images counted. With flat counts it is drawn as a dashed line
    at that share of the total (read it on the right-hand percentage axis); with splits it is
    stated in the legend. Either way the label reads ``majority baseline: 50.0% (dogs)``.
    ``title`` defaults to a summary such as ``images per class (2,000 images, 2 classes)``.
    """
    if not isinstance(counts, Mapping):
        raise ValueError(f"counts must be {{class: n}} or {{split: {{class: n}}}}; got {type(counts).__name__}")
    grouped = bool(counts) and all(isinstance(v, Mapping) for v in counts.values())
    if not grouped and any(isinstance(v, Mapping) for v in counts.values()):
        raise ValueError("counts mixes classes and splits: give either {class: n} or {split: {class: n}}")
    splits: dict[str, dict[str, int]] = (
        {str(s): {str(c): int(n) for c, n in v.items()} for s, v in counts.items()}
        if grouped else {"": {str(c): int(n) for c, n in counts.items()}}
    )
    classes: list[str] = []
    for per_class in splits.values():
        classes.extend(c for c in per_class if c not in classes)
    if not classes:
        return message_figure("no images counted")
    if any(n < 0 for per in splits.values() for n in per.values()):
        raise ValueError(f"counts must be >= 0; got {counts}")

    totals = {c: sum(per.get(c, 0) for per in splits.values()) for c in classes}
    total = sum(totals.values())
    majority = max(classes, key=lambda c: totals[c])  # first of the tied ones, in the given order
    if baseline is None and total > 0:
        baseline = totals[majority] / total

    n_cls, n_splits = len(classes), len(splits)
    n_bars = n_cls * n_splits
    width_in = min(STYLE["max_width"], max(5.5, 1.6 + 0.42 * n_bars + 0.25 * n_cls))
    fig = new_figure((width_in, 4.6))
    ax = fig.add_subplot()
    style_axes(ax, grid_axis="y")

    x = np.arange(n_cls)
    bar_w = 0.8 / n_splits
    label_size = STYLE["tick"] if n_bars <= 16 else STYLE["small"] if n_bars <= 40 else 6
    rotate_counts = n_bars > 40
    for s, (split, per_class) in enumerate(splits.items()):
        heights = [per_class.get(c, 0) for c in classes]
        offset = (s - (n_splits - 1) / 2) * bar_w
        bars = ax.bar(x + offset, heights, bar_w * 0.92, label=split or None,
                      color=STYLE["palette"][s % len(STYLE["palette"])], zorder=2)
        for text in ax.bar_label(bars, labels=[f"{h:,}" for h in heights], padding=2, fontsize=label_size,
                                 color=STYLE["text"], rotation=90 if rotate_counts else 0):
            # a white backing keeps a count readable where the baseline line runs through it
            text.set_bbox({"facecolor": "white", "edgecolor": "none", "pad": 0.3, "alpha": 0.85})
            text.set_zorder(4)

    top = max(max(per.values(), default=0) for per in splits.values())
    # headroom above the tallest bar for its count and, above that, the legend
    ax.set_ylim(0, max(1, top) * (1.38 if rotate_counts else 1.25))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("images", fontsize=STYLE["label"])
    _class_ticks(ax, x, classes, axis="x")
    ax.set_xlim(-0.6, n_cls - 0.4)

    handles, labels = ax.get_legend_handles_labels()
    if baseline is not None and not math.isnan(baseline):
        text = f"majority baseline: {baseline:.1%} ({_short(majority, 24)})"
        if not grouped and total > 0:
            line = ax.axhline(baseline * total, zorder=3, **STYLE["baseline"])
            handles, labels = [line], [text]
        else:  # splits differ in size, so no single count line: state it in the legend
            handles.append(Line2D([], [], linestyle="none"))
            labels.append(text)
    if not grouped and total > 0:
        share = ax.secondary_yaxis("right", functions=(lambda c: c / total, lambda p: p * total))
        share.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if baseline is None or baseline >= 0.05 else 1))
        share.set_ylabel("share of images", fontsize=STYLE["label"], color=STYLE["muted"])
        share.tick_params(labelsize=STYLE["tick"], colors=STYLE["muted"])
        share.spines["right"].set_visible(False)
    if handles:
        ax.legend(handles, labels, loc="upper right", ncols=len(handles), frameon=False,
                  fontsize=STYLE["tick"], handlelength=2.2 if not grouped else 1.2,
                  columnspacing=1.2, borderaxespad=0.2)
    noun = "images per class" + (" and split" if grouped else "")
    fig.suptitle(title or f"{noun} ({total:,} images, {n_cls} classes)", fontsize=STYLE["title"])
    return fig


# --------------------------------------------------------------------------------------------
# training


def history(
    history: Mapping[str, Sequence[float]] | Any,
    title: str | None = None,
    fine_tune_epoch: int | None = None,
    fine_tune_kept: bool = True,
) -> Figure:
    """Accuracy and loss per epoch, training vs validation, in two panels.

    ``history`` is a Keras ``History.history`` dict (``accuracy``, ``val_accuracy``, ``loss``,
    ``val_loss``; ``acc`` and the ``*_accuracy`` variants are recognised) or a History object.
    Epochs are numbered from 1. With ``fine_tune_epoch`` (the first epoch of the fine-tuning
    stage) a dashed line separates the stages and the fine-tuning epochs are lightly shaded;
    ``fine_tune_kept=False`` says in the legend that the model kept the head stage's weights.
    Missing series are skipped; a panel with no data says so.
    """
    data = getattr(history, "history", history)
    if not isinstance(data, Mapping):
        raise ValueError(f"history must be a dict of metric -> per-epoch values; got {type(history).__name__}")
    acc_key = next((k for k in _ACCURACY_KEYS if k in data), None)
    if fine_tune_epoch is not None and (int(fine_tune_epoch) != fine_tune_epoch or fine_tune_epoch < 1):
        raise ValueError(f"fine_tune_epoch is the 1-based first epoch of fine-tuning; got {fine_tune_epoch!r}")

    fig = new_figure((11.0, 4.4))
    ax_acc, ax_loss = fig.subplots(1, 2)
    colours = {"training": STYLE["palette"][0], "validation": STYLE["palette"][1]}
    n_epochs = 0
    for ax, key, name in ((ax_acc, acc_key, "accuracy"), (ax_loss, "loss", "loss")):
        style_axes(ax, grid_axis="both")
        ax.set_xlabel("epoch", fontsize=STYLE["label"])
        ax.set_title(name, fontsize=STYLE["title"], loc="left")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        plotted = False
        for split, k in (("training", key), ("validation", f"val_{key}" if key else None)):
            values = _series(data.get(k)) if k else None
            if values is None or values.size == 0:
                continue
            epochs = np.arange(1, values.size + 1)
            n_epochs = max(n_epochs, values.size)
            ax.plot(epochs, values, color=colours[split], linestyle="-" if split == "training" else "--",
                    marker="o", markersize=3.5 if values.size <= 60 else 0, linewidth=1.8, label=split, zorder=3)
            plotted = True
        if not plotted:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no {name} recorded", transform=ax.transAxes, ha="center", va="center",
                    color=STYLE["muted"], fontsize=STYLE["label"])
    if acc_key:
        val = _series(data.get(f"val_{acc_key}"))
        if val is not None and val.size and not np.all(np.isnan(val)):
            best = int(np.nanargmax(val))
            ax_acc.set_title(f"accuracy (best validation {val[best]:.1%}, epoch {best + 1})",
                             fontsize=STYLE["title"], loc="left")
            ax_acc.plot([best + 1], [val[best]], marker="*", markersize=12, color=colours["validation"],
                        markeredgecolor="white", linestyle="none", zorder=4)

    if fine_tune_epoch is not None:
        edge = fine_tune_epoch - 0.5
        right = max(n_epochs, fine_tune_epoch) + 0.5
        for ax in (ax_acc, ax_loss):
            if not ax.lines:
                continue
            ax.axvspan(edge, right, color=STYLE["palette"][2], alpha=0.07, linewidth=0, zorder=0)
            label = f"fine-tuning from epoch {fine_tune_epoch}"
            if not fine_tune_kept:
                label += " (not kept: the model is the head stage's)"
            ax.axvline(edge, zorder=2, label=label,
                       **{**STYLE["baseline"], "color": STYLE["palette"][2]})
            ax.set_xlim(0.5, right)
    elif n_epochs:
        for ax in (ax_acc, ax_loss):
            ax.set_xlim(0.5, n_epochs + 0.5)
    last = int(math.floor(ax_acc.get_xlim()[1] if ax_acc.lines else ax_loss.get_xlim()[1]))
    for ax in (ax_acc, ax_loss):
        if ax.lines and last <= 12:
            ax.set_xticks(range(1, last + 1))
    if ax_acc.lines:
        percent_axis(ax_acc)

    handles, labels = [], []
    for ax in (ax_acc, ax_loss):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), frameon=False,
                   fontsize=STYLE["tick"])
    if title:
        fig.suptitle(title, fontsize=STYLE["suptitle"])
    return fig


def comparison(
    val_accuracy: Mapping[str, Sequence[float]],
    baseline: float | None = None,
    title: str | None = None,
) -> Figure:
    """Validation accuracy per epoch, one line per model, with the majority baseline dashed."""
    if not isinstance(val_accuracy, Mapping):
        raise ValueError(f"val_accuracy must map model name -> per-epoch accuracies; got {type(val_accuracy).__name__}")
    fig = new_figure((9.0, 4.8))
    ax = fig.add_subplot()
    style_axes(ax, grid_axis="both")
    palette, markers = STYLE["palette"], STYLE["markers"]
    n_max = 0
    for i, (name, values) in enumerate(val_accuracy.items()):
        values = _series(values)
        if values is None or values.size == 0:
            continue
        n_max = max(n_max, values.size)
        best = f" (best {np.nanmax(values):.1%})" if not np.all(np.isnan(values)) else ""
        ax.plot(np.arange(1, values.size + 1), values, color=palette[i % len(palette)],
                marker=markers[i % len(markers)], markersize=4 if values.size <= 60 else 0,
                linestyle=("-", "--", ":", "-.")[(i // len(palette)) % 4], linewidth=1.8,
                label=_short(str(name), 32) + best, zorder=3)
    if not ax.lines:
        ax.text(0.5, 0.5, "no validation accuracy recorded", transform=ax.transAxes, ha="center",
                va="center", color=STYLE["muted"], fontsize=STYLE["label"])
    if baseline is not None:
        ax.axhline(baseline, zorder=2, label=f"majority baseline: {baseline:.1%}", **STYLE["baseline"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if n_max:
        ax.set_xlim(0.5, n_max + 0.5)
        if n_max <= 12:
            ax.set_xticks(range(1, n_max + 1))
    percent_axis(ax)
    ax.set_xlabel("epoch", fontsize=STYLE["label"])
    ax.set_ylabel("validation accuracy", fontsize=STYLE["label"])
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=STYLE["tick"])
    fig.suptitle(title or "validation accuracy per epoch", fontsize=STYLE["suptitle"])
    return fig


# --------------------------------------------------------------------------------------------
# evaluation


def confusion_matrix(
    cm: np.ndarray,
    class_names: Sequence[str],
    title: str | None = None,
    normalize: bool = True,
) -> Figure:
    """Heat map of a confusion matrix (rows: true class, columns: predicted class).

    Every cell shows its count and, with up to 20 classes, its share of the true class's row
    (zero cells show ``0``; above 15 classes they are left blank).
    ``normalize`` colours by that row share (so small classes are as visible as large ones);
    otherwise by count.
    """
    cm = np.asarray(cm)
    names = [str(c) for c in class_names]
    n = len(names)
    if cm.ndim != 2 or cm.shape != (n, n):
        raise ValueError(f"cm must be a square matrix matching class_names ({n} classes, so {n}x{n}); got shape {cm.shape}")
    if n == 0:
        return message_figure("no classes", title)
    if np.any(cm < 0):
        raise ValueError("cm must hold counts >= 0")
    counts = np.rint(cm).astype(np.int64)
    row_sums = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(row_sums > 0, counts / np.maximum(row_sums, 1), 0.0)
    colour = share if normalize else counts
    vmax = 1.0 if normalize else max(1, int(counts.max()))

    side = min(STYLE["max_height"] - 4, max(4.2, 1.6 + (0.42 if n <= 20 else 0.36) * n))
    longest = max(len(_short(c, 24)) for c in names)
    fig = new_figure((side + 1.6 + longest * 0.06, side + 0.9 + longest * 0.05))
    ax = fig.add_subplot()
    im = ax.imshow(colour, cmap=STYLE["cmap"], vmin=0, vmax=vmax, interpolation="nearest", aspect="equal")
    for s in ax.spines.values():
        s.set_visible(False)

    both = n <= 20  # count and percentage; above that, counts only
    size = 12 if n <= 4 else 10 if n <= 8 else 8 if n <= 14 else 6.5 if n <= 20 else 6
    cmap = im.get_cmap()
    for i in range(n):
        for j in range(n):
            c = counts[i, j]
            if c == 0 and n > 15:
                continue  # in a big matrix the zeros are noise: leave those cells blank
            label = f"{c:,}"
            if both and c > 0:
                p = share[i, j]
                label += "\n" + ("<1%" if 0 < p < 0.005 else f"{p:.0%}")
            r, g, b, _ = cmap(colour[i, j] / vmax)
            dark = (0.299 * r + 0.587 * g + 0.114 * b) < 0.5
            ax.text(j, i, label, ha="center", va="center", fontsize=size, linespacing=1.15,
                    color="white" if dark else (STYLE["text"] if c else "#aaaaaa"),
                    fontweight="bold" if i == j else "normal")

    _class_ticks(ax, np.arange(n), names, axis="x")
    _class_ticks(ax, np.arange(n), names, axis="y")
    ax.set_xlabel("predicted", fontsize=STYLE["label"])
    ax.set_ylabel("true", fontsize=STYLE["label"])
    ax.tick_params(length=0)
    total, correct = int(counts.sum()), int(np.trace(counts))
    if total:
        ax.set_title(f"{correct:,} of {total:,} correct ({correct / total:.1%})", fontsize=STYLE["tick"],
                     color=STYLE["muted"], loc="left")
    bar = fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02, aspect=30,
                       format=PercentFormatter(1.0, decimals=0) if normalize else None)
    bar.set_label("share of true class" if normalize else "images", fontsize=STYLE["small"])
    bar.ax.tick_params(labelsize=STYLE["small"])
    bar.outline.set_visible(False)
    fig.suptitle(title or "confusion matrix", fontsize=STYLE["suptitle"])
    return fig


def reliability_diagram(
    panels: Sequence[tuple[str, Mapping[str, Any], float | None]],
    title: str | None = None,
) -> Figure:
    """Reliability diagrams side by side: accuracy against confidence per bin, the gap shaded.

    ``panels`` holds ``(heading, bins, ece)`` per panel, ``bins`` as
    :func:`imgclf.calibration.reliability` returns them (``edges``, ``count``, ``confidence``,
    ``accuracy``). A perfectly calibrated model has every bar on the diagonal; under each
    panel, the share of the images in each bin.
    """
    panels = list(panels)
    if not panels:
        return message_figure("nothing to show", title)
    fig = new_figure((4.2 * len(panels) + 0.3, 5.0 + _heading_height(title)))
    gs = fig.add_gridspec(2, len(panels), height_ratios=(4, 1))
    blue, red = STYLE["palette"][0], STYLE["wrong"]
    for col, (heading, bins, ece) in enumerate(panels):
        edges = np.asarray(bins["edges"], dtype=float)
        count = np.asarray(bins["count"], dtype=float)
        acc = np.nan_to_num(np.asarray(bins["accuracy"], dtype=float))
        conf = np.asarray(bins["confidence"], dtype=float)
        width = np.diff(edges)
        left = edges[:-1]
        filled = count > 0
        ax = fig.add_subplot(gs[0, col])
        style_axes(ax, grid_axis="both")
        ax.plot([0, 1], [0, 1], zorder=2, label="perfect calibration", **STYLE["baseline"])
        ax.bar(left[filled], acc[filled], width[filled], align="edge", color=blue, edgecolor="white",
               linewidth=0.6, zorder=3, label="accuracy")
        gap_lo = np.minimum(acc, np.nan_to_num(conf))[filled]
        gap_hi = np.maximum(acc, np.nan_to_num(conf))[filled]
        ax.bar(left[filled], gap_hi - gap_lo, width[filled], bottom=gap_lo, align="edge", facecolor="none",
               hatch="////", edgecolor=red, linewidth=0.8, zorder=4, label="gap to mean confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_ylabel("accuracy in the bin", fontsize=STYLE["label"])
        ece_text = "ECE n/a" if ece is None else f"ECE {ece:.3f}"
        ax.set_title(f"{heading}: {ece_text}", fontsize=STYLE["title"])
        if col == 0:
            ax.legend(loc="upper left", frameon=False, fontsize=STYLE["small"])
        hist = fig.add_subplot(gs[1, col], sharex=ax)
        style_axes(hist, grid_axis="y")
        total = max(count.sum(), 1.0)
        hist.bar(left, count / total, width, align="edge", color=STYLE["muted"], edgecolor="white",
                 linewidth=0.6, zorder=3)
        hist.set_ylim(0, 1)
        hist.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        hist.set_ylabel("images", fontsize=STYLE["small"])
        hist.set_xlabel("confidence (top-1 probability)", fontsize=STYLE["label"])
    if title:
        fig.suptitle(title, fontsize=STYLE["suptitle"])
    return fig


# --------------------------------------------------------------------------------------------
# helpers


def new_figure(size: tuple[float, float]) -> Figure:
    w = min(STYLE["max_width"], max(2.5, size[0]))
    h = min(STYLE["max_height"] + 2, max(2.0, size[1]))
    return Figure(figsize=(w, h), layout="constrained", facecolor=STYLE["facecolor"])


def _row_height(cell: float, title_size: float, lines: int = 1) -> float:
    """Inches a square image cell needs with its title above it (and constrained-layout padding)."""
    return cell + (lines * title_size * 1.25 + 4) / 72 + 0.09


def _heading_height(heading: str | None) -> float:
    return (STYLE["suptitle"] * 1.5 + 6) / 72 if heading else 0.05


def percent_axis(ax) -> None:
    """Percent tick labels on the y axis: whole percents unless the range is narrow."""
    lo, hi = ax.get_ylim()
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if hi - lo >= 0.06 else 1))


def message_figure(message: str, title: str | None = None) -> Figure:
    fig = new_figure((5.0, 2.2))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes,
            fontsize=STYLE["label"], color=STYLE["muted"])
    if title:
        fig.suptitle(title, fontsize=STYLE["suptitle"])
    return fig


def style_axes(ax, grid_axis: str) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#888888")
    ax.tick_params(labelsize=STYLE["tick"], colors="#444444")
    ax.grid(True, axis=grid_axis, zorder=0, **STYLE["grid"])
    ax.set_axisbelow(True)


def _class_ticks(ax, positions: np.ndarray, names: Sequence[str], axis: str) -> None:
    """Class names as tick labels: truncated to 24 characters, rotated when they would collide."""
    labels = [_short(c, 24) for c in names]
    n = len(labels)
    longest = max((len(s) for s in labels), default=0)
    size = STYLE["tick"] if n <= 20 else STYLE["small"] if n <= 40 else 6
    if axis == "y":
        ax.set_yticks(positions, labels, fontsize=size)
        return
    if n <= 3 and longest <= 16 or n * longest <= 60:
        ax.set_xticks(positions, labels, fontsize=size)
    elif n <= 25:
        ax.set_xticks(positions, labels, fontsize=size, rotation=40, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(positions, labels, fontsize=size, rotation=90)


def show_image(ax, img: Any) -> None:
    """Draw an image at the top of a square cell (centred across), so titles line up and sit on
    their image whatever the aspect ratios."""
    arr, kwargs = _displayable(img)
    ax.imshow(arr, interpolation="antialiased", **kwargs)
    h, w = arr.shape[:2]
    side = max(h, w)
    ax.set_xlim(-0.5 - (side - w) / 2, w - 0.5 + (side - w) / 2)
    ax.set_ylim(h - 0.5 + (side - h), -0.5)
    ax.set_axis_off()


def _displayable(img: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """An image as imshow wants it: uint8 or [0, 1] floats; grayscale gets a gray colour map."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or 0 in a.shape:
        raise ValueError(f"an image must be HxW, HxWx1, HxWx3 or HxWx4; got shape {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.integer) and a.dtype != np.uint8:
        top = 65535.0 if a.max() > 255 else 255.0
        a = a.astype(np.float32) / top
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        if a.size and a.max() > 1.0:  # Keras layers hand back floats in [0, 255]
            a = a / 255.0
        a = np.clip(a, 0.0, 1.0)
    if a.ndim == 2:
        return a, {"cmap": "gray", "vmin": 0, "vmax": 255 if a.dtype == np.uint8 else 1.0}
    return a, {}


def _series(values: Any) -> np.ndarray | None:
    if values is None:
        return None
    return np.asarray(values, dtype=float).reshape(-1)


def _short(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"


def _short_middle(text: str, limit: int) -> str:
    """Keep a file name's start and extension: ``IMG_2024…0413.jpg``."""
    if len(text) <= limit:
        return text
    keep = max(2, limit - 1)
    head = keep - keep // 2
    return text[:head] + "…" + text[len(text) - keep // 2:]

