"""load_image: every format to 8-bit RGB of the requested size, the same way for every caller."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from imgclf.data.images import load_image
from tests.imagefactory import ALL_GOOD_FORMATS, EXTENSIONS, FORMAT_INFO, write_image

COLOR = (200, 30, 30)
LUMA = round(0.299 * 200 + 0.587 * 30 + 0.114 * 30)  # what a gray encoding keeps


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return {fmt: write_image(root / f"{fmt}{EXTENSIONS[fmt]}", fmt, size=(40, 30), color=COLOR)
            for fmt in ALL_GOOD_FORMATS}


def _expected_centre(fmt):
    gray = FORMAT_INFO[fmt][1] in ("L", "I;16")
    return (LUMA,) * 3 if gray else COLOR


@pytest.mark.parametrize("fmt", ALL_GOOD_FORMATS)
@pytest.mark.parametrize("size", [None, (20, 24), 16])
def test_every_format_gives_rgb_uint8_of_the_size(files, fmt, size):
    arr = load_image(files[fmt], size)
    rotated = fmt == "jpeg_exif_rotated"
    expected = {None: (40, 30) if rotated else (30, 40), (20, 24): (20, 24), 16: (16, 16)}[size]
    assert arr.dtype == np.uint8
    assert arr.shape == (*expected, 3)
    h, w = arr.shape[:2]
    centre = arr[h // 2, w // 2].astype(int)
    assert np.abs(centre - _expected_centre(fmt)).max() <= 4, centre


@pytest.mark.parametrize("fmt", ALL_GOOD_FORMATS)
def test_matches_pillow_reference_at_full_size(files, fmt):
    """Without resizing, the pixels are Pillow's, after exif_transpose (alpha on white)."""
    with Image.open(files[fmt]) as im:
        ref = ImageOps.exif_transpose(im)
        if "transparency" in ref.info or ref.mode in ("RGBA", "LA", "PA"):
            rgba = ref.convert("RGBA")
            ref = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        elif ref.mode == "I;16":
            ref = Image.fromarray(np.rint(np.asarray(ref) / 257).astype(np.uint8), "L")
        ref = np.asarray(ref.convert("RGB"))
    assert np.array_equal(load_image(files[fmt]), ref)


def test_exif_orientation_marker(files):
    """The black marker stored at the top left is shown at the top right (orientation 6)."""
    path = files["jpeg_exif_rotated"]
    with Image.open(path) as im:
        ref = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert ref.shape == (40, 30, 3)
    for size in (None, (40, 30), (80, 60), (20, 20)):
        arr = load_image(path, size).astype(int)
        h, w = arr.shape[:2]
        assert arr[1, w - 2].max() < 40, "marker at the top right"
        assert arr[1, 1].max() > 150 and arr[h - 2, w - 2].max() > 150 and arr[h - 2, 1].max() > 150
    # where exif_transpose puts it, at the stored size
    assert np.array_equal(ref[:, :, 0] < 60, load_image(path)[:, :, 0] < 60)


def test_16_bit_is_scaled(files, tmp_path):
    assert abs(int(load_image(files["png16"])[15, 20, 0]) - LUMA) <= 1
    # a dark 16-bit image stays dark (values below 256 are not taken as 8-bit)
    dark = np.full((10, 12), 200, dtype="<u2")
    p = tmp_path / "dark16.png"
    Image.frombytes("I;16", (12, 10), dark.tobytes()).save(p)
    assert load_image(p).max() <= 1
    bright = np.full((10, 12), 65535, dtype="<u2")
    Image.frombytes("I;16", (12, 10), bright.tobytes()).save(p)
    assert load_image(p).min() == 255


@pytest.mark.parametrize("fmt", ["png_rgba", "png_palette_transparent"])
def test_transparent_becomes_white(files, fmt):
    arr = load_image(files[fmt])
    assert (arr[:, :10] == 255).all()  # the left quarter of the 40 columns is transparent
    assert np.abs(arr[15, 30].astype(int) - COLOR).max() <= 4


def test_animated_gif_first_frame(files):
    arr = load_image(files["gif_animated"])
    assert np.abs(arr[15, 20].astype(int) - COLOR).max() <= 4


def test_cmyk_jpeg_is_rgb(files):
    arr = load_image(files["jpeg_cmyk"], (10, 10))
    assert np.abs(arr.astype(int) - COLOR).max() <= 6


def _banded(tmp_path):
    """60x30 (w x h): blue, with 10-pixel red bands at the left and right edges."""
    a = np.zeros((30, 60, 3), np.uint8)
    a[:] = (0, 0, 255)
    a[:, :10] = (255, 0, 0)
    a[:, 50:] = (255, 0, 0)
    p = tmp_path / "banded.png"
    Image.fromarray(a).save(p)
    return p


def _red(a):
    return (a[..., 0] > 128) & (a[..., 2] < 128)


def _black(a):
    return a.max(axis=-1) < 30


def test_fit_stretch(tmp_path):
    a = load_image(_banded(tmp_path), (30, 30), fit="stretch")
    assert a.shape == (30, 30, 3)
    assert _red(a[:, :3]).all() and _red(a[:, -3:]).all()
    assert not _black(a).any()


def test_fit_crop(tmp_path):
    a = load_image(_banded(tmp_path), (30, 30), fit="crop")
    assert a.shape == (30, 30, 3)
    assert not _red(a).any()  # the bands at the sides are cropped away
    assert not _black(a).any()
    # the aspect ratio is kept: a 2:1 crop of a 2:1 image keeps everything
    assert _red(load_image(_banded(tmp_path), (15, 30), fit="crop")[:, :4]).all()


def test_images_keep_their_aspect_ratio_by_default(tmp_path):
    """Like timm and fastai, and as ImageNet backbones saw their images: centre-cropped, not
    stretched (Keras' default)."""
    assert np.array_equal(load_image(_banded(tmp_path), (30, 30)),
                          load_image(_banded(tmp_path), (30, 30), fit="crop"))


def test_fit_pad(tmp_path):
    a = load_image(_banded(tmp_path), (30, 30), fit="pad")
    assert a.shape == (30, 30, 3)
    # 60x30 contained in 30x30: 30x15, centred, black above and below
    assert _black(a[:6]).all() and _black(a[-6:]).all()
    assert _red(a[10:20, :3]).all() and _red(a[10:20, -3:]).all()
    assert not _black(a[9:21]).any()


@pytest.mark.parametrize("fit", ["stretch", "crop", "pad"])
def test_fit_keeps_rotated_jpeg_geometry(files, fit):
    """Scaled JPEG decoding takes the EXIF swap into account: the marker stays top right."""
    a = load_image(files["jpeg_exif_rotated"], (16, 16), fit=fit).astype(int)
    assert a.shape == (16, 16, 3)
    if fit == "pad":  # 30x40 (shown) contained in 16x16: 12x16 in columns 2..13, black beside
        assert _black(a[:, :2]).all() and _black(a[:, 14:]).all()
        assert a[1, 12].max() < 60 and a[1, 3].max() > 150
    else:
        assert a[1, 14].max() < 60 and a[1, 1].max() > 150
    assert a[14, 12].max() > 150 and a[14, 8].max() > 150


def test_scaled_jpeg_decoding_is_close_to_full_decoding(tmp_path):
    """JPEG draft mode (DCT scaling) for speed must not change what the model sees much."""
    from PIL import ImageFilter

    from imgclf.data.images import resize_image

    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(0, 256, (30, 40, 3)), np.ones((10, 10, 1))).astype(np.uint8)
    p = tmp_path / "big.jpg"
    Image.fromarray(base).filter(ImageFilter.GaussianBlur(2)).save(p, quality=95)
    fast = load_image(p, (100, 100), fit="stretch").astype(int)
    with Image.open(p) as im:
        full = im.convert("RGB")
        slow = resize_image(full, 100, 100, "bilinear").astype(int)
        pillow = np.asarray(full.resize((100, 100), Image.Resampling.BILINEAR)).astype(int)
    # sharp-edged blocks are the hard case for a scaled decode (photos differ by about 3);
    # a wrong channel order, orientation or scale would differ by 40 or more
    assert np.abs(fast - slow).mean() < 6
    assert np.abs(fast - pillow).mean() < 6  # and close to Pillow's antialiased resize


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "lanczos", "area"])
def test_large_reductions_do_not_alias(interpolation):
    """Stripes 3 pixels apart shrunk 8x come out an even grey, not a moire of stripes."""
    stripes = np.zeros((800, 800, 3), np.uint8)
    stripes[:, ::3] = 255
    out = load_image(stripes, (100, 100), interpolation=interpolation).astype(float)
    assert abs(out.mean() - 255 / 3) < 8
    assert out.std() < 20  # a filter that skipped pixels gives about 60 here
    assert load_image(stripes, (100, 100), interpolation="nearest").std() > 60  # nearest: as asked


@pytest.mark.parametrize("shape", [(12, 16), (12, 16, 1), (12, 16, 3), (12, 16, 4)])
def test_array_inputs(shape):
    a = np.full(shape, 100, np.uint8)
    if shape[-1] == 4:
        a[..., 3] = 0  # fully transparent: white
    out = load_image(a, (6, 8))
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    assert (out == (255 if shape[-1] == 4 else 100)).all()


def test_float_array_input():
    out = load_image(np.full((4, 4, 3), 300.0))
    assert out.dtype == np.uint8 and (out == 255).all()


def test_bad_array_shape():
    with pytest.raises(ValueError, match="HxW"):
        load_image(np.zeros((2, 3, 4, 5), np.uint8))


@pytest.mark.parametrize("fmt", ["jpeg", "png_rgba", "webp", "jpeg_exif_rotated"])
def test_bytes_and_pil_inputs_match_path(files, fmt):
    path = files[fmt]
    expected = load_image(path, (20, 20))
    assert np.array_equal(load_image(path.read_bytes(), (20, 20)), expected)
    assert np.array_equal(load_image(io.BytesIO(path.read_bytes()).getvalue(), (20, 20)), expected)
    with Image.open(path) as im:
        size = im.size
        out = load_image(im, (20, 20))
        assert im.size == size  # the caller's image is not changed
    assert out.shape == (20, 20, 3)
    assert np.abs(out.astype(int) - expected).mean() < 3


def test_pil_input_already_rgb():
    im = Image.new("RGB", (8, 6), (1, 2, 3))
    out = load_image(im)
    assert out.shape == (6, 8, 3) and tuple(out[0, 0]) == (1, 2, 3)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos", "area"])
def test_interpolations(files, interpolation):
    assert load_image(files["png"], (10, 10), interpolation=interpolation).shape == (10, 10, 3)


def test_bad_options(files):
    with pytest.raises(ValueError, match="fit must be one of"):
        load_image(files["png"], 10, fit="squash")
    with pytest.raises(ValueError, match="interpolation must be one of"):
        load_image(files["png"], 10, interpolation="magic")


# -- plain JPEGs: decoded without Pillow parsing them, to the same pixels --------------------


def _pillow_way(path, size, interpolation="bilinear", fit="crop"):
    """What ``decode_opened`` gives for a file Pillow has opened (the way every file used to go)."""
    from imgclf.data.images import as_size, decode_opened

    with Image.open(path) as img:
        return decode_opened(img, as_size(size), interpolation, fit)


def _exif(order: str, orientation: int) -> bytes:
    """An EXIF block (TIFF header, IFD0 with one Orientation entry) in byte order ``order``."""
    end = "little" if order == "II" else "big"
    magic = b"II*\0" if order == "II" else b"MM\0*"
    entry = (0x0112).to_bytes(2, end) + (3).to_bytes(2, end) + (1).to_bytes(4, end) + orientation.to_bytes(2, end) + b"\0\0"
    return b"Exif\0\0" + magic + (8).to_bytes(4, end) + (1).to_bytes(2, end) + entry + (0).to_bytes(4, end)


@pytest.mark.parametrize("fmt", ["jpeg", "jpeg_progressive", "jpeg_gray"])
@pytest.mark.parametrize("fit", ["crop", "stretch", "pad"])
def test_plain_jpegs_decode_to_the_same_pixels_and_header(tmp_path, fmt, fit):
    from imgclf.data.images import decode_plain_jpeg
    from imgclf.data.scan import check_file

    path = write_image(tmp_path / "x.jpg", fmt, size=(57, 41), noise=25)
    plain = decode_plain_jpeg(path.read_bytes(), (24, 20), "bicubic", fit)
    assert plain is not None, "a plain JPEG takes the fast way"
    header, pixels = plain
    assert np.array_equal(pixels, _pillow_way(path, (24, 20), "bicubic", fit))
    assert np.array_equal(load_image(path, (24, 20), interpolation="bicubic", fit=fit), pixels)
    info = check_file(path)  # what Pillow says of the file
    assert header == {k: info[k] for k in header}


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body


def _odd_jpegs(folder) -> dict:
    """JPEGs with something in their header that Pillow reads (and may refuse): name -> path."""
    buf = io.BytesIO()
    Image.fromarray(np.full((30, 40, 3), (200, 30, 30), np.uint8)).save(buf, "JPEG", quality=95)
    jfif = buf.getvalue()
    app0_end = 4 + int.from_bytes(jfif[4:6], "big")

    def entry(tag, kind, count, value):
        return tag.to_bytes(2, "little") + kind.to_bytes(2, "little") + count.to_bytes(4, "little") + value

    text_resolution = (b"Exif\0\0II*\0\x08\0\0\0\x02\0" + entry(0x011A, 2, 2, b"5\0\0\0")
                       + entry(0x0128, 3, 1, b"\2\0\0\0") + b"\0" * 4)
    extras = {
        "exif_upright": _segment(0xE1, _exif("II", 1)),
        "exif_turned": _segment(0xE1, _exif("MM", 6)),
        "exif_text_resolution": _segment(0xE1, text_resolution),  # Pillow fails to read its dpi
        "tem_marker": b"\xff\x01",
        "short_adobe": _segment(0xEE, b"Adobe"),
        "short_icc": _segment(0xE2, b"ICC_PROFILE\0\1"),
    }
    out = {name: jfif[:app0_end] + extra + jfif[app0_end:] for name, extra in extras.items()}
    out["short_jfif"] = jfif[:2] + _segment(0xE0, b"JFIF\0") + jfif[app0_end:]
    paths = {}
    for name, data in out.items():
        paths[name] = folder / f"{name}.jpg"
        paths[name].write_bytes(data)
    return paths


def test_jpegs_with_more_in_their_header_go_through_pillow(tmp_path, monkeypatch):
    """Whatever Pillow makes of them (turned, refused), the scan and load_image say the same
    as when every file went through Pillow."""
    import importlib

    from imgclf.data.images import decode_plain_jpeg

    scan = importlib.import_module("imgclf.data.scan")
    images = importlib.import_module("imgclf.data.images")
    paths = _odd_jpegs(tmp_path)
    for name, path in paths.items():
        assert decode_plain_jpeg(path.read_bytes(), (16, 16), "bilinear", "crop") is None, name
    now = {name: scan.check_and_decode(path, 16) for name, path in paths.items()}
    monkeypatch.setattr(images, "decode_plain_jpeg", lambda *a: None)
    monkeypatch.setattr(scan, "decode_plain_jpeg", lambda *a: None)
    for name, path in paths.items():
        (res, px), (res0, px0) = now[name], scan.check_and_decode(path, 16)
        assert res == res0, name
        assert (px is None and px0 is None) or np.array_equal(px, px0), name
    assert not now["tem_marker"][0]["ok"] and not now["short_jfif"][0]["ok"]
    assert now["exif_turned"][0]["width"] == 30  # turned upright, by Pillow


def test_jpegs_pillow_must_read_are_left_to_it(tmp_path):
    from imgclf.data.images import decode_plain_jpeg
    from tests.imagefactory import write_broken

    base = Image.new("RGB", (40, 30), (200, 30, 30))
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    base.save(tmp_path / "xmp.jpg", "JPEG", xmp=xmp)  # an orientation in XMP, none in EXIF
    base.save(tmp_path / "two.jpg", "MPO", save_all=True, append_images=[base.transpose(Image.Transpose.ROTATE_180)])
    write_image(tmp_path / "cmyk.jpg", "jpeg_cmyk")
    write_broken(tmp_path / "cut.jpg", "truncated_jpeg")
    write_image(tmp_path / "png.jpg", "png_as_jpg")
    for name in ("xmp.jpg", "two.jpg", "cmyk.jpg", "cut.jpg", "png.jpg"):
        assert decode_plain_jpeg((tmp_path / name).read_bytes(), (16, 16), "bilinear", "crop") is None, name
    for name in ("xmp.jpg", "two.jpg", "cmyk.jpg"):
        assert np.array_equal(load_image(tmp_path / name, 16), _pillow_way(tmp_path / name, 16)), name
    assert load_image(tmp_path / "xmp.jpg", (30, 40), fit="stretch").shape == (30, 40, 3)
    with Image.open(tmp_path / "xmp.jpg") as img:
        assert img.getexif().get(0x0112) == 6  # Pillow turns it: the fast way would not have
