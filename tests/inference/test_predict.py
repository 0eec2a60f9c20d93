"""imgclf.inference.predict and ``imgclf predict``."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from imgclf import ConfigError, Run
from imgclf.inference.predict import Predictions, decode, expand_inputs, predict
from tests.imagefactory import write_broken, write_image


def test_predict_matches_the_model_on_the_same_pixels(trained_run, test_images):
    ds = trained_run.dataset(progress=False)
    expected = np.asarray(trained_run.model(ds.images("test").astype("float32"), training=False))
    results = predict(trained_run, test_images, top_k=2, batch_size=3)  # several batches
    assert [r.path for r in results] == [str(p) for p in test_images]
    names = trained_run.class_names
    for r, probs in zip(results, expected):
        assert r.error is None and r.ok
        assert r.label == names[int(probs.argmax())]
        assert r.probability == pytest.approx(float(probs.max()), abs=1e-5)
        assert [c for c, _ in r.top_k] == [names[i] for i in np.argsort(-probs)]
        assert r.top_k[0] == (r.label, r.probability)
        assert sum(p for _, p in r.top_k) == pytest.approx(1.0, abs=1e-4)


def test_the_model_has_learned_the_colours(trained_run, test_images):
    results = predict(trained_run, test_images, top_k=1)
    truth = [p.parent.name for p in test_images]
    assert np.mean([r.label == t for r, t in zip(results, truth)]) >= 0.8


def test_inputs_of_every_kind(trained_run, test_images, tmp_path):
    folder = tmp_path / "imgs"
    for i, p in enumerate(test_images[:3]):
        (folder / "sub").mkdir(parents=True, exist_ok=True)
        (folder / "sub" / f"img_{i}{p.suffix}").write_bytes(p.read_bytes())
    (folder / "notes.txt").write_text("not an image, ignored in folders")
    first = test_images[0]
    arr = np.asarray(Image.open(first).convert("RGB"))
    inputs = [
        str(first),                     # a file
        folder,                         # a folder, searched recursively (3 images)
        str(folder / "sub" / "*.png"),  # a glob
        first.read_bytes(),             # bytes
        Image.open(first),              # a PIL image
        arr,                            # an HxWx3 array
        np.stack([arr, arr]),           # a batch
    ]
    results = predict(trained_run, inputs, top_k=1)
    assert len(results) == 1 + 3 + 3 + 1 + 1 + 1 + 2
    assert not results.errors
    assert [r.path for r in results][-5:] == ["<bytes 0>", str(first), "<array 0>", "<array 1>", "<array 2>"]
    # every representation of the same image gives the same answer
    same = [results[0], results[7], results[8], results[9], results[10]]
    assert len({round(r.probability, 5) for r in same}) == 1


def test_a_single_input_need_not_be_a_list(trained_run, test_images):
    r = predict(trained_run, str(test_images[0]))
    assert len(r) == 1 and r[0].ok


def test_unreadable_inputs_are_reported_not_fatal(trained_run, test_images, tmp_path):
    broken = write_broken(tmp_path / "broken.jpg", "truncated_jpeg")
    text = write_broken(tmp_path / "text.jpg", "text_as_jpg")
    empty = write_broken(tmp_path / "zero.jpg", "zero_bytes")
    inputs = [broken, test_images[0], text, tmp_path / "missing.png", str(tmp_path / "nothing*.png"), empty,
              b"garbage bytes"]
    results = predict(trained_run, inputs)
    assert [r.ok for r in results] == [False, True, False, False, False, False, False]
    by_path = {r.path: r.error for r in results}
    assert "corrupt or truncated" in by_path[str(broken)]
    assert "not an image" in by_path[str(text)]
    assert by_path[str(tmp_path / "missing.png")] == "no such file or folder"
    assert by_path[str(tmp_path / "nothing*.png")] == "no file matches this pattern"
    assert "not an image" in by_path["<bytes 0>"]
    assert results[1].label in trained_run.class_names
    assert len(results.errors) == 6
    assert "could not be read" in results.table()


def test_outputs_table_csv_json(trained_run, test_images, tmp_path):
    bad = write_broken(tmp_path / "bad.jpg", "text_as_jpg")
    results = predict(trained_run, [test_images[0], bad], top_k=2)
    assert isinstance(results, Predictions)
    table = results.table()
    assert "path" in table.splitlines()[0] and results[0].label in table and "error:" in table

    rows = list(csv.DictReader(io.StringIO(results.to_csv(tmp_path / "p.csv"))))
    assert list(rows[0]) == ["path", "label", "probability", "class_2", "probability_2", "error"]
    assert rows[0]["label"] == results[0].label and float(rows[0]["probability"]) == pytest.approx(results[0].probability, abs=1e-6)
    assert rows[1]["label"] == "" and rows[1]["error"]
    assert (tmp_path / "p.csv").read_text() == results.to_csv()

    data = json.loads(results.to_json(tmp_path / "p.json"))
    assert data[0]["label"] == results[0].label
    assert [t["class"] for t in data[0]["top_k"]] == [c for c, _ in results[0].top_k]
    assert data[1]["error"] and data[1]["top_k"] == []
    assert results.rows()[0]["class_2"] == results[0].top_k[1][0]


def test_options_are_checked(trained_run, test_images):
    with pytest.raises(ConfigError, match="top_k"):
        predict(trained_run, test_images[:1], top_k=0)
    with pytest.raises(ConfigError, match="batch_size"):
        predict(trained_run, test_images[:1], batch_size=0)
    with pytest.raises(ConfigError, match="cannot predict on a dict"):
        predict(trained_run, [{"a": 1}])
    # more classes asked than there are: all of them
    assert len(predict(trained_run, test_images[:1], top_k=10)[0].top_k) == len(trained_run.class_names)


def test_decode_uses_the_run_preprocessing_and_a_pixel_limit(trained_run, tmp_path):
    from imgclf.inference.predict import ImageTooLargeError

    big = write_image(tmp_path / "big.png", "png", size=(300, 200))
    pixels = decode(big, trained_run.preprocessing)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    with pytest.raises(ImageTooLargeError, match="300x200 = 60,000 pixels"):
        decode(big, trained_run.preprocessing, max_pixels=50_000)


def test_expand_inputs_orders_folders_naturally(tmp_path):
    for i in (10, 2, 1):
        write_image(tmp_path / "f" / f"img_{i}.png", "png", size=(8, 8))
    write_image(tmp_path / "f" / ".hidden" / "x.png", "png", size=(8, 8))
    names = [i.name.rsplit("/", 1)[-1] for i in expand_inputs(tmp_path / "f")]
    assert names == ["img_1.png", "img_2.png", "img_10.png"]


@pytest.mark.skipif(not hasattr(Run, "predict"), reason="Run.predict is not wired in run.py yet")
def test_run_predict_method(trained_run, test_images):
    r = trained_run.predict(test_images[:2], top_k=1)
    assert len(r) == 2 and r[0].ok


# -- the command line -------------------------------------------------------------------

def test_cli_predict_table_csv_json(cli, trained_run, test_images, tmp_path):
    folder = test_images[0].parent
    code, out, err = cli("predict", trained_run.path, folder, "-q")
    assert code == 0, err
    assert out.splitlines()[0].startswith("path") and "inputs" in out.splitlines()[-1]

    code, out, err = cli("predict", trained_run.path, test_images[0], test_images[1], "--format", "csv", "-k", "1")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["path"] for r in rows] == [str(test_images[0]), str(test_images[1])]
    assert list(rows[0]) == ["path", "label", "probability", "error"]

    target = tmp_path / "out" / "p.json"
    bad = write_broken(tmp_path / "bad.jpg", "zero_bytes")
    code, out, err = cli("predict", trained_run.path, test_images[0], bad, "-o", target)
    assert code == 0, err
    assert "2 predictions written" in out and "1 inputs could not be read" in out
    data = json.loads(target.read_text())
    assert data[0]["label"] in trained_run.class_names and data[1]["error"]


def test_cli_predict_errors(cli, trained_run, tmp_path):
    code, out, err = cli("predict", tmp_path / "no-run", tmp_path)
    assert code == 2 and err.strip().startswith("imgclf: error:") and len(err.strip().splitlines()) == 1
    code, out, err = cli("predict", trained_run.path, tmp_path, "--format", "xml")
    assert code == 2 and "unknown --format 'xml'" in err
    # every input unreadable: reported, exit 1
    code, out, err = cli("predict", trained_run.path, tmp_path / "missing.jpg", "--format", "json")
    assert code == 1 and json.loads(out)[0]["error"] == "no such file or folder"


@pytest.mark.parametrize("kind", ["jpeg", "jpeg_exif_rotated", "jpeg_cmyk", "png"])
def test_uploaded_bytes_decode_like_the_file(tmp_path, kind):
    """What the server decodes from an upload is what training decoded from the file."""
    from imgclf.data.images import load_image
    from imgclf.inference.predict import open_header

    path = write_image(tmp_path / f"x.{'png' if kind == 'png' else 'jpg'}", kind, size=(300, 200))
    pre = {"image_size": [48, 40], "interpolation": "bilinear", "fit": "crop"}
    expected = load_image(path, (48, 40), fit="crop")
    data = path.read_bytes()
    assert np.array_equal(decode(data, pre, max_pixels=10**6), expected)
    assert np.array_equal(decode(open_header(data, 10**6), pre, opened=True), expected)


def test_max_pixels_applies_to_an_opened_image(tmp_path):
    from imgclf.inference.predict import ImageTooLargeError

    path = write_image(tmp_path / "big.png", "png", size=(300, 200))
    pre = {"image_size": [16, 16]}
    with Image.open(path) as img, pytest.raises(ImageTooLargeError, match="300x200"):
        decode(img, pre, max_pixels=10_000)
    with Image.open(path) as img:
        assert decode(img, pre, max_pixels=60_000).shape == (16, 16, 3)


def test_training_predict_and_serve_accept_exactly_the_same_files(trained_run, tmp_path):
    """One list of everyday odd files through the three doors: the scan that decides what
    training uses, ``predict`` and the HTTP service. Each file is used by all three or by none."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from imgclf.data.scan import check_file
    from imgclf.inference.serve import create_app
    from tests.imagefactory import BROKEN_EXTENSIONS, EXTENSIONS

    used = ["png_as_jpg", "tiff", "tiff16", "tiff_multipage", "jpeg_cmyk", "jpeg_exif_rotated", "png16",
            "png_palette_transparent", "gif_animated", "webp"]
    refused = ["truncated_jpeg", "corrupt_jpeg", "text_as_jpg", "zero_bytes", "ppm"]
    files = [write_image(tmp_path / f"{k}{EXTENSIONS[k]}", k) for k in used]
    files += [write_broken(tmp_path / f"{k}{BROKEN_EXTENSIONS[k]}", k) for k in refused]
    training = [check_file(f)["ok"] for f in files]
    predicted = [r.ok for r in predict(trained_run, files)]
    with TestClient(create_app(trained_run)) as c:
        served = [c.post("/predict", files={"file": (f.name, f.read_bytes())}).status_code == 200 for f in files]
    expected = [True] * len(used) + [False] * len(refused)
    assert training == expected
    assert predicted == expected
    assert served == expected
def test_cli_predict_explain_writes_one_overlay_per_image(cli, trained_run, test_images, tmp_path):
    from PIL import Image

    out_dir = tmp_path / "heatmaps"
    code, out, err = cli("predict", trained_run.path, *test_images[:3], "--explain", out_dir, "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    pngs = sorted(out_dir.glob("*.png"))
    assert len(pngs) == 3 and sorted(r["explanation"] for r in rows) == [str(p) for p in pngs]
    for p in pngs:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size == (32, 32)
    assert "3 heatmaps written" in err


def test_explain_on_a_model_without_convolutions_still_predicts(cli, dense_run, test_images, tmp_path):
    code, out, err = cli("predict", dense_run.path, test_images[0], "--explain", tmp_path / "h", "-q")
    assert code == 2 and "no convolutional layer" in err and len(err.strip().splitlines()) == 1
    assert "1 inputs" in out  # the predictions are printed all the same
    assert not (tmp_path / "h").exists()


def test_folders_expand_as_training_finds_files(tmp_path):
    write_image(tmp_path / "photos" / "b" / "scan.tif", "tiff")
    write_image(tmp_path / "photos" / "a.jpg", "jpeg")
    write_image(tmp_path / "photos" / "__MACOSX" / "._a.jpg", "jpeg")
    write_image(tmp_path / "photos" / ".ipynb_checkpoints" / "a-checkpoint.jpg", "jpeg")
    write_image(tmp_path / "photos" / "._a.jpg", "jpeg")
    (tmp_path / "photos" / "Thumbs.db").write_bytes(b"\xd0\xcf")
    items = expand_inputs(tmp_path / "photos")
    assert [it.name for it in items] == [str(tmp_path / "photos" / "a.jpg"), str(tmp_path / "photos" / "b" / "scan.tif")]
