"""Tests for imgclf.figures: structure of each figure, atomic PNG writes, edge cases, nothing clipped."""

from __future__ import annotations

import io
import os
import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from PIL import Image  # noqa: E402

from imgclf import figures  # noqa: E402

RNG = np.random.default_rng(0)


def rgb(h=24, w=32):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def images(fig: Figure) -> int:
    return sum(len(ax.images) for ax in fig.axes)


def image_titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def render(fig: Figure) -> None:
    """Draw it as `save` would (PNG), failing on any layout warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.savefig(io.BytesIO(), format="png", dpi=50)


def assert_nothing_clipped(fig: Figure, tol: float = 0.03) -> None:
    """Everything drawn (titles, tick labels, legends, texts) lies inside the figure."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    tight = fig.get_tightbbox(canvas.get_renderer())  # inches
    w, h = fig.get_size_inches()
    assert tight.x0 >= -tol and tight.y0 >= -tol, f"something sticks out left/below: {tight}"
    assert tight.x1 <= w + tol and tight.y1 <= h + tol, f"something sticks out right/above: {tight}"


HISTORY = {
    "accuracy": [0.6, 0.7, 0.75, 0.8, 0.85, 0.88],
    "val_accuracy": [0.58, 0.66, 0.7, 0.74, 0.8, 0.79],
    "loss": [0.9, 0.7, 0.6, 0.5, 0.4, 0.35],
    "val_loss": [0.95, 0.8, 0.7, 0.65, 0.55, 0.56],
}


# ---------------------------------------------------------------------------------------- save


def test_save_writes_a_png_atomically(tmp_path):
    fig = figures.label_frequencies({"cats": 3, "dogs": 5})
    target = tmp_path / "new" / "folder" / "freq.png"
    out = figures.save(fig, target, dpi=50)
    assert out == target
    assert os.listdir(target.parent) == ["freq.png"]  # no temp file left beside it
    with Image.open(target) as im:
        assert im.format == "PNG"
        w, h = im.size
    fw, fh = fig.get_size_inches()
    assert abs(w - fw * 50) <= 2 and abs(h - fh * 50) <= 2
    assert 200 <= w <= 2000 and 100 <= h <= 2000


def test_save_replaces_and_adds_png_suffix(tmp_path):
    fig = figures.comparison({"cnn": [0.5, 0.6]})
    (tmp_path / "h.png").write_bytes(b"old")
    figures.save(fig, tmp_path / "h.png", dpi=30)
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures.save(fig, tmp_path / "plain", dpi=30) == tmp_path / "plain.png"
    assert sorted(os.listdir(tmp_path)) == ["h.png", "plain.png"]


def test_save_failure_leaves_nothing(tmp_path, monkeypatch):
    fig = figures.history(HISTORY)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", boom)
    with pytest.raises(RuntimeError):
        figures.save(fig, tmp_path / "h.png")
    assert os.listdir(tmp_path) == []


def test_save_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="xyz"):
        figures.save(figures.history(HISTORY), tmp_path / "h.xyz")
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------- sample_grid


def test_sample_grid_rows_per_class_with_blank_cells():
    fig = figures.sample_grid(
        {"cats": [rgb(), rgb(40, 20), rgb()], "dogs": [rgb(30, 30)[..., 0], np.ones((16, 16, 1), np.float32)]},
        title="samples",
    )
    assert isinstance(fig, Figure)
    assert images(fig) == 5  # the short class leaves its third cell blank, not an empty axes
    assert image_titles(fig) == ["cats"] * 3 + ["dogs"] * 2
    assert fig.get_suptitle() == "samples"
    render(fig)


def test_sample_grid_grayscale_uses_gray_map():
    fig = figures.sample_grid({"g": [rgb()[..., 0]]})
    assert fig.axes[0].images[0].get_cmap().name == "gray"


def test_sample_grid_class_without_images_and_long_names():
    long = "a_very_long_class_name_that_goes_on_and_on_and_on"
    fig = figures.sample_grid({long: [rgb()], "empty": []})
    assert images(fig) == 1
    assert "empty" in image_titles(fig)
    assert "(no images)" in texts(fig)
    assert all(len(t) < len(long) for t in image_titles(fig))  # truncated
    assert_nothing_clipped(fig)


def test_sample_grid_many_classes_stays_bounded(monkeypatch):
    # small limits keep the test fast; the same arithmetic caps the real 16 x 18 inch budget
    monkeypatch.setitem(figures.STYLE, "max_width", 8.0)
    monkeypatch.setitem(figures.STYLE, "max_height", 6.0)
    imgs = {f"class_{i}": [rgb(8, 8)] * 4 for i in range(40)}
    fig = figures.sample_grid(imgs)
    w, h = fig.get_size_inches()
    assert w <= 8.0 + 1e-6 and h <= 6.0 + 2
    shown = image_titles(fig)
    assert "class_0" in shown and len(set(shown)) < 40
    assert max(shown.count(c) for c in set(shown)) == 3  # fewer images per class before fewer classes
    assert "of 40 classes" in fig.get_suptitle()


def test_sample_grid_rejects_bad_image():
    with pytest.raises(ValueError, match="shape"):
        figures.sample_grid({"x": [np.zeros((4, 4, 2))]})


# --------------------------------------------------------------------------- label_frequencies


def test_label_frequencies_bars_counts_and_baseline():
    fig = figures.label_frequencies({"cats": 1000, "dogs": 1000, "birds": 0})
    ax = fig.axes[0]
    assert len(ax.patches) == 3
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["cats", "dogs", "birds"]
    all_text = texts(fig)
    assert {"1,000", "0"} <= set(all_text)
    assert "majority baseline: 50.0% (cats)" in all_text
    baseline_lines = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(baseline_lines) == 1 and baseline_lines[0].get_ydata()[0] == pytest.approx(1000)
    assert_nothing_clipped(fig)


def test_label_frequencies_explicit_baseline():
    fig = figures.label_frequencies({"cats": 30, "dogs": 70}, baseline=0.55)
    assert any(t == "majority baseline: 55.0% (dogs)" for t in texts(fig))


def test_label_frequencies_grouped_by_split():
    counts = {"train": {"cats": 70, "dogs": 30}, "val": {"cats": 15, "dogs": 5}, "test": {"cats": 15, "dogs": 0}}
    fig = figures.label_frequencies(counts)
    ax = fig.axes[0]
    assert len(ax.patches) == 6
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["train", "val", "test"]
    assert legend[3] == "majority baseline: 74.1% (cats)"  # 100 of 135
    assert {"70", "15", "0"} <= set(texts(fig))
    render(fig)


def test_label_frequencies_all_zero_and_empty():
    render(figures.label_frequencies({"a": 0, "b": 0}))
    render(figures.label_frequencies({}))


# --------------------------------------------------------------------------- augmentation_grid


def test_augmentation_grid_three_by_three():
    base = rgb(32, 32)
    augmented = [base] + [np.rot90(base, i % 4).astype(np.float32) for i in range(1, 9)]  # Keras-style floats
    fig = figures.augmentation_grid(augmented, "RandomFlip")
    assert len(fig.axes) == 9 and images(fig) == 9
    assert image_titles(fig)[0] == "original"
    assert all(t.startswith("augmented") for t in image_titles(fig)[1:])
    assert fig.get_suptitle() == "RandomFlip"
    geometry = fig.axes[0].get_subplotspec().get_geometry()
    assert geometry[:2] == (3, 3)


# ----------------------------------------------------------------------------------- history


def fine_tune_markers(fig: Figure) -> list[str]:
    return [t for t in texts(fig) if "fine-tun" in t]


def test_history_two_panels_with_fine_tune_marker():
    fig = figures.history(HISTORY, title="mobilenet", fine_tune_epoch=4)
    acc, loss = fig.axes
    assert acc.get_title(loc="left").startswith("accuracy") and loss.get_title(loc="left") == "loss"
    assert fine_tune_markers(fig) == ["fine-tuning from epoch 4"]
    for ax in (acc, loss):
        x = [ln.get_xdata()[0] for ln in ax.lines if ln.get_linestyle() == "--" and len(ln.get_xdata()) == 2]
        assert 3.5 in x  # the stage boundary, between epochs 3 and 4
    train = acc.lines[0]
    assert list(train.get_xdata()) == [1, 2, 3, 4, 5, 6]  # epochs are 1-based
    assert "training" in texts(fig) and "validation" in texts(fig)
    assert fig.get_suptitle() == "mobilenet"
    assert_nothing_clipped(fig)


def test_history_says_when_fine_tuning_was_not_kept():
    fig = figures.history(HISTORY, fine_tune_epoch=4, fine_tune_kept=False)
    assert fine_tune_markers(fig) == ["fine-tuning from epoch 4 (not kept: the model is the head stage's)"]
    assert_nothing_clipped(fig)


def test_history_without_fine_tune_has_no_marker():
    fig = figures.history(HISTORY)
    assert fine_tune_markers(fig) == []
    assert not any(ln.get_linestyle() == "--" and ln.get_xdata()[0] == ln.get_xdata()[-1] and len(ln.get_xdata()) == 2
                   for ax in fig.axes for ln in ax.lines)


def test_history_edge_cases():
    one = figures.history({"accuracy": [0.6], "loss": [0.7]})  # one epoch, no validation
    assert len(one.axes) == 2 and "validation" not in texts(one)
    render(one)
    no_acc = figures.history({"loss": [0.9, 0.8]}, fine_tune_epoch=2)
    assert "no accuracy recorded" in texts(no_acc)
    render(no_acc)
    keras_style = type("History", (), {"history": {"acc": [0.5, 0.6], "val_acc": [0.5, 0.55]}})()
    assert len(figures.history(keras_style).axes[0].lines) >= 2
    with pytest.raises(ValueError, match="fine_tune_epoch"):
        figures.history(HISTORY, fine_tune_epoch=0)


# -------------------------------------------------------------------------- confusion_matrix


def cell_texts(fig: Figure) -> dict[tuple[int, int], str]:
    ax = fig.axes[0]
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}


def test_confusion_matrix_cells_show_counts_and_row_percentages():
    cm = np.array([[50, 2, 0], [5, 40, 5], [0, 0, 0]])
    fig = figures.confusion_matrix(cm, ["cats", "dogs", "birds"], title="test split")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cats", "dogs", "birds"]
    cells = cell_texts(fig)
    assert len(cells) == 9
    for (i, j), text in cells.items():
        assert text.split("\n")[0] == str(cm[i, j])
    assert cells[(0, 0)] == "50\n96%" and cells[(1, 2)] == "5\n10%"
    assert cells[(2, 2)] == "0"  # an empty row has no percentages
    assert fig.get_suptitle() == "test split"
    assert_nothing_clipped(fig)


def test_confusion_matrix_counts_colouring_and_many_classes():
    n = 25
    cm = np.diag(np.full(n, 1200)) + np.eye(n, k=1, dtype=int) * 3
    names = [f"category_with_a_long_name_{i}" for i in range(n)]
    fig = figures.confusion_matrix(cm, names, normalize=False)
    cells = cell_texts(fig)
    assert cells[(0, 0)] == "1,200" and cells[(0, 1)] == "3"
    assert (0, 2) not in cells  # zeros are left blank in a big matrix
    assert fig.axes[0].images[0].get_array().max() == 1200  # coloured by count


def test_confusion_matrix_rejects_mismatch():
    with pytest.raises(ValueError, match="2x2"):
        figures.confusion_matrix(np.zeros((3, 3)), ["a", "b"])


# -------------------------------------------------------------------------------- top_losses


def test_top_losses_titles_and_file_names():
    fig = figures.top_losses(
        [rgb(), rgb(), rgb(50, 20)],
        ["cats", "dogs", "cats"],
        ["dogs", "cats", "dogs"],
        [0.97, 0.9, 0.655],
        paths=["/data/Cat/1.jpg", "/data/Dog/2.jpg", "/data/Cat/3.jpg"],
        title="top losses",
    )
    assert images(fig) == 3
    assert image_titles(fig) == [
        "true: cats / pred: dogs (97%)",
        "true: dogs / pred: cats (90%)",
        "true: cats / pred: dogs (66%)",
    ]
    assert {"1.jpg", "2.jpg", "3.jpg"} <= set(texts(fig))
    assert_nothing_clipped(fig)


def test_top_losses_long_names_empty_and_validation():
    fig = figures.top_losses([rgb()], ["x" * 60], ["y" * 60], [0.5])
    title = image_titles(fig)[0]
    assert title.startswith("true: x") and "pred: y" in title and "(50%)" in title and len(title) < 100
    assert "no misclassified images" in texts(figures.top_losses([], [], [], []))
    with pytest.raises(ValueError, match="one entry per image"):
        figures.top_losses([rgb()], ["a", "b"], ["b"], [0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        figures.top_losses([rgb()], ["a"], ["b"], [97])


# -------------------------------------------------------------------------------- comparison


def test_comparison_lines_baseline_and_legend():
    fig = figures.comparison(
        {"cnn": [0.6, 0.65, 0.7], "mobilenet_v2": [0.9, 0.95], "empty": []}, baseline=0.5, title="models"
    )
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["cnn (best 70.0%)", "mobilenet_v2 (best 95.0%)", "majority baseline: 50.0%"]
    assert list(ax.lines[0].get_xdata()) == [1, 2, 3]
    assert ax.lines[-1].get_linestyle() == "--" and ax.lines[-1].get_ydata()[0] == 0.5
    assert ax.yaxis.get_major_formatter().format_pct(0.5, 1.0).endswith("%")
    assert fig.get_suptitle() == "models"
    assert_nothing_clipped(fig)


def test_comparison_without_baseline_or_models():
    fig = figures.comparison({"cnn": [0.6]})
    assert not any("baseline" in t for t in texts(fig))
    render(fig)
    render(figures.comparison({}))


# --------------------------------------------------------------------------------- contract


def test_every_figure_is_a_pyplot_free_figure():
    import matplotlib.pyplot as plt  # only to check that nothing registered with pyplot

    before = plt.get_fignums()
    made = [
        figures.sample_grid({"a": [rgb()]}),
        figures.label_frequencies({"a": 1}),
        figures.augmentation_grid([rgb()], "t"),
        figures.history(HISTORY),
        figures.confusion_matrix(np.eye(2, dtype=int), ["a", "b"]),
        figures.top_losses([rgb()], ["a"], ["b"], [0.9]),
        figures.comparison({"m": [0.5]}),
    ]
    assert all(isinstance(f, Figure) and f.get_layout_engine() is not None for f in made)
    assert plt.get_fignums() == before
