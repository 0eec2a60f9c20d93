"""The test image factory writes what it promises: every good format decodes, every broken kind fails."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from tests.imagefactory import (
    ALL_BROKEN_KINDS,
    ALL_GOOD_FORMATS,
    BROKEN_EXTENSIONS,
    EXTENSIONS,
    FORMAT_INFO,
    class_colours,
    make_class_tree,
    write_broken,
    write_image,
)

COLOR = (200, 30, 30)
# mode after Image.open -> family
FAMILY = {"RGB": "RGB", "CMYK": "CMYK", "L": "L", "P": "P", "RGBA": "RGBA", "I;16": "I", "I": "I"}


def _centre_rgb(im: Image.Image) -> np.ndarray:
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I"):
        v = np.asarray(im, dtype=np.float64)[im.height // 2, im.width // 2] / 257
        return np.array([v, v, v])
    return np.asarray(im.convert("RGBA").convert("RGB"), dtype=np.float64)[im.height // 2, im.width // 2]


def test_lists_are_complete():
    assert set(ALL_GOOD_FORMATS) == {
        "jpeg", "jpeg_progressive", "jpeg_cmyk", "jpeg_gray", "jpeg_exif_rotated", "png", "png16",
        "png_palette", "png_palette_transparent", "png_rgba", "png_gray", "gif", "gif_animated", "bmp",
        "webp", "tiff", "tiff16", "tiff_multipage", "png_as_jpg"}
    assert set(ALL_BROKEN_KINDS) == {"truncated_jpeg", "zero_bytes", "text_as_jpg", "corrupt_jpeg", "ppm"}


@pytest.mark.parametrize("fmt", ALL_GOOD_FORMATS)
def test_good_format_decodes(tmp_path, fmt):
    path = write_image(tmp_path / f"img{EXTENSIONS[fmt]}", fmt, size=(40, 30), color=COLOR)
    want_format, want_mode, _ = FORMAT_INFO[fmt]
    with Image.open(path) as im:
        assert im.format == want_format
        assert FAMILY[im.mode] == FAMILY[want_mode]
        assert im.size == (40, 30)  # as stored
        im.load()
        shown = ImageOps.exif_transpose(im)
        assert shown.size == ((30, 40) if fmt == "jpeg_exif_rotated" else (40, 30))
        centre = _centre_rgb(im)
    if fmt in ("jpeg_gray", "png_gray", "png16", "tiff16"):
        luma = 0.299 * COLOR[0] + 0.587 * COLOR[1] + 0.114 * COLOR[2]
        assert np.allclose(centre, luma, atol=3)
    else:
        assert np.abs(centre - COLOR).max() <= 8, centre


def test_format_details(tmp_path):
    with Image.open(write_image(tmp_path / "p.jpg", "jpeg_progressive")) as im:
        assert im.info.get("progressive") or im.info.get("progression")
    with Image.open(write_image(tmp_path / "r.jpg", "jpeg_exif_rotated")) as im:
        assert im.getexif().get(0x0112) == 6
        shown = ImageOps.exif_transpose(im).convert("RGB")
        # the black marker stored top-left shows top-right once upright
        assert max(shown.getpixel((shown.width - 2, 1))) < 40
        assert max(shown.getpixel((1, 1))) > 150
    with Image.open(write_image(tmp_path / "t.png", "png_palette_transparent")) as im:
        assert "transparency" in im.info
        rgba = np.asarray(im.convert("RGBA"))
        assert (rgba[:, :5, 3] == 0).all() and (rgba[:, 20:, 3] == 255).all()
    with Image.open(write_image(tmp_path / "a.png", "png_rgba")) as im:
        alpha = np.asarray(im)[..., 3]
        assert (alpha[:, :5] == 0).all() and (alpha[:, 20:] == 255).all()
    with Image.open(write_image(tmp_path / "g.png", "png16")) as im:
        assert np.asarray(im).max() > 255  # really 16-bit values
    with Image.open(write_image(tmp_path / "anim.gif", "gif_animated")) as im:
        assert im.n_frames == 3 and im.is_animated
        firsts = []
        for k in range(3):
            im.seek(k)
            firsts.append(tuple(im.convert("RGB").getpixel((20, 15))))
        assert firsts[0] == COLOR and len(set(firsts)) == 3
    with Image.open(write_image(tmp_path / "one.gif", "gif")) as im:
        assert getattr(im, "n_frames", 1) == 1


def test_write_image_is_deterministic_and_noise_makes_distinct_files(tmp_path):
    a = write_image(tmp_path / "a.png", "png", noise=5, seed=1).read_bytes()
    b = write_image(tmp_path / "b.png", "png", noise=5, seed=1).read_bytes()
    c = write_image(tmp_path / "c.png", "png", noise=5, seed=2).read_bytes()
    assert a == b != c
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.png", "tga")


@pytest.mark.parametrize("kind", ALL_BROKEN_KINDS)
def test_broken_kind_fails_as_promised(tmp_path, kind):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    path = write_broken(tmp_path / f"bad{BROKEN_EXTENSIONS[kind]}", kind)
    if kind in ("zero_bytes", "text_as_jpg"):
        with pytest.raises(UnidentifiedImageError):
            Image.open(path)
        if kind == "zero_bytes":
            assert path.stat().st_size == 0
    elif kind in ("truncated_jpeg", "corrupt_jpeg"):
        with Image.open(path) as im:  # the header is fine ...
            assert im.format == "JPEG" and im.size == (64, 48)
            with pytest.raises(OSError, match="truncated" if kind == "truncated_jpeg" else None):
                im.load()  # ... the pixels are not
    elif kind == "ppm":
        with Image.open(path) as im:
            assert im.format == "PPM"
            im.load()


def test_truncated_jpeg_is_a_cut_valid_jpeg(tmp_path):
    from tests.imagefactory import _noisy_jpeg_bytes

    whole = _noisy_jpeg_bytes()
    cut = write_broken(tmp_path / "t.jpg", "truncated_jpeg").read_bytes()
    assert whole.startswith(cut) and 0.55 < len(cut) / len(whole) < 0.65


def test_make_class_tree(tmp_path):
    root = make_class_tree(tmp_path / "tree", {"cats": 3, "dogs": 4, "eels": 2}, size=(24, 16),
                           fmt=["png", "jpeg", "png_gray"], seed=5)
    assert sorted(p.name for p in root.iterdir()) == ["cats", "dogs", "eels"]
    assert sorted(p.name for p in (root / "dogs").iterdir()) == ["dogs_0.png", "dogs_1.jpg",
                                                                  "dogs_2.png", "dogs_3.png"]
    means = {}
    for cls in ("cats", "dogs", "eels"):
        files = sorted((root / cls).iterdir())
        assert len({f.read_bytes() for f in files}) == len(files)  # all distinct
        rgb = []
        for f in files:
            with Image.open(f) as im:
                assert im.size == (24, 16)
                if im.mode == "RGB":
                    rgb.append(np.asarray(im, dtype=np.float64).mean((0, 1)))
        means[cls] = np.mean(rgb, 0)
    # distinct colours per class
    keys = list(means)
    assert min(np.abs(means[a] - means[b]).max() for a in keys for b in keys if a < b) > 40
    # same arguments, same bytes
    again = make_class_tree(tmp_path / "again", {"cats": 3, "dogs": 4, "eels": 2}, size=(24, 16),
                            fmt=["png", "jpeg", "png_gray"], seed=5)
    assert all((root / f.relative_to(again)).read_bytes() == f.read_bytes()
               for f in again.rglob("*") if f.is_file())


def test_class_colours_differ_in_brightness_too():
    cols = np.array(class_colours(6), dtype=np.float64)
    luma = cols @ [0.299, 0.587, 0.114]
    assert len(set(map(tuple, cols))) == 6
    assert np.diff(np.sort(luma)).min() > 20
