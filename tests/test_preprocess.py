"""mobile_demo.preprocess on generated pictures: any digit picture becomes an MNIST-like 28x28."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import _models
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgeport.errors import ImageError, ModelFileError
from edgeport.mobile_demo.preprocess import (
    load_image,
    prepare_input,
    preprocess_digit,
    preprocess_resize,
)

SIZE = 28
CENTRE = SIZE / 2  # MNIST puts the centre of mass at (14, 14)
BOX = 20  # MNIST: the longer side of the ink is 20 px


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(a.shape)
    total = a.sum()
    return float((ys * a).sum() / total), float((xs * a).sum() / total)


def ink_box(a: np.ndarray, level: float = 0.05) -> tuple[int, int]:
    """Height and width of the pixels above ``level``."""
    rows, cols = np.flatnonzero(a.max(1) > level), np.flatnonzero(a.max(0) > level)
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def check_mnist_like(a: np.ndarray) -> None:
    assert a.shape == (SIZE, SIZE)
    assert a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert a.max() == pytest.approx(1.0)  # contrast stretched: the strongest stroke is 1
    cy, cx = centre_of_mass(a)
    # Integer shifts leave at most half a pixel; 1 px leaves room for the resampling.
    assert abs(cy - CENTRE) <= 1.0 and abs(cx - CENTRE) <= 1.0, (cy, cx)
    h, w = ink_box(a)
    # Longer side scaled to 20 px; +-1 for the anti-aliased edge pixels.
    assert BOX - 1 <= max(h, w) <= BOX + 1, (h, w)
    # Background is black: the corners of the frame hold no ink.
    assert a[:3, :3].max() == 0 and a[-3:, -3:].max() == 0


def _save_load(img: Image.Image, fmt: str, tmp_path: Path) -> Image.Image:
    path = tmp_path / f"digit.{fmt.lower()}"
    img.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return load_image(path)


@pytest.mark.parametrize("size", [(28, 28), (100, 60), (640, 480), (37, 300)])
@pytest.mark.parametrize("dark_on_light", [True, False])
@pytest.mark.parametrize("shape", ["seven", "zero", "one"])
def test_digits_of_any_size_and_polarity_become_mnist_like(
    size: tuple[int, int], dark_on_light: bool, shape: str
) -> None:
    img = _models.draw_digit(size, shape=shape, dark_on_light=dark_on_light)
    check_mnist_like(preprocess_digit(img))


@pytest.mark.parametrize(
    "box", [(0.0, 0.0, 0.3, 0.4), (0.6, 0.5, 1.0, 1.0), (0.05, 0.6, 0.35, 0.95)]
)
def test_offset_digits_are_centred(box: tuple[float, float, float, float]) -> None:
    img = _models.draw_digit((300, 200), box=box, shape="zero")
    check_mnist_like(preprocess_digit(img))


# Each mode with a format that can store it (JPEG: L and RGB only; PNG: no I or F).
_MODE_FORMATS = [
    ("L", "PNG"),
    ("L", "JPEG"),
    ("RGB", "PNG"),
    ("RGB", "JPEG"),
    ("RGBA", "PNG"),
    ("1", "PNG"),
    ("P", "PNG"),
    ("I;16", "PNG"),
    ("I", "TIFF"),
    ("F", "TIFF"),
]


@pytest.mark.parametrize(("mode", "fmt"), _MODE_FORMATS)
def test_modes_and_formats(mode: str, fmt: str, tmp_path: Path) -> None:
    base = _models.draw_digit((120, 160), shape="seven", mode="RGBA" if mode == "RGBA" else "L")
    grey = np.asarray(base.convert("L"))
    if mode == "I;16":
        img = Image.fromarray(grey.astype(np.uint16) * 257)
    elif mode == "I":
        img = Image.fromarray(grey.astype(np.int32))
    elif mode == "F":
        img = Image.fromarray(grey.astype(np.float32) / 255)
    else:
        img = base.convert(mode)
    assert img.mode == mode
    check_mnist_like(preprocess_digit(img))
    check_mnist_like(preprocess_digit(_save_load(img, fmt, tmp_path)))


def test_inverted_picture_gives_the_same_digit() -> None:
    dark = preprocess_digit(_models.draw_digit((200, 200), shape="seven"))
    light = preprocess_digit(_models.draw_digit((200, 200), shape="seven", dark_on_light=False))
    np.testing.assert_array_equal(dark, light)  # same pixels after the inversion


def test_transparent_paper_is_white() -> None:
    rgba = _models.draw_digit((90, 90), shape="one", mode="RGBA")
    grey = _models.draw_digit((90, 90), shape="one", mode="L")
    np.testing.assert_array_equal(preprocess_digit(rgba), preprocess_digit(grey))


def test_noisy_photo_of_a_thin_digit(tmp_path: Path) -> None:
    """Grey paper, sensor noise, JPEG and a 1-px pen on a large picture still give a clean digit."""
    rng = np.random.default_rng(0)
    img = np.asarray(_models.draw_digit((800, 600), shape="seven", width=0.004), np.float64)
    photo = 40 + img * (200 - 40) / 255 + rng.normal(0, 8, img.shape)
    pic = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).convert("RGB")
    a = preprocess_digit(_save_load(pic, "JPEG", tmp_path))
    check_mnist_like(a)
    # Noise is dropped: most of the frame is exactly black.
    assert np.mean(a == 0) > 0.6
    # The thin stroke was thickened to MNIST's weight: several pixels at full ink.
    assert np.sum(a > 0.5) >= 25


def test_mnist_sample_is_nearly_unchanged() -> None:
    """An MNIST-style input (light digit on black, 20-px box, centred) survives the pipeline."""
    src = preprocess_digit(_models.draw_digit((28, 28), shape="zero", box=(0.2, 0.15, 0.8, 0.85)))
    again = preprocess_digit(Image.fromarray((src * 255).round().astype(np.uint8)))
    # Re-centring moves at most one pixel; grey edge pixels lose up to the noise floor.
    assert np.abs(again - src).mean() < 0.05


@pytest.mark.parametrize(
    "img",
    [
        Image.new("L", (50, 50), 255),
        Image.new("RGB", (10, 30), (30, 30, 30)),
        Image.new("RGBA", (40, 40), (0, 0, 0, 0)),
        Image.new("L", (1, 1), 0),
        Image.fromarray(
            np.full((64, 64), 128, np.uint8)
            + np.random.default_rng(0).integers(0, 8, (64, 64), dtype=np.uint8)
        ),
    ],
    ids=["white", "dark", "transparent", "one-pixel", "faint-noise"],
)
def test_empty_pictures_raise(img: Image.Image) -> None:
    with pytest.raises(ImageError, match="no ink"):
        preprocess_digit(img)


_MODES = st.sampled_from(["L", "RGB", "RGBA", "LA", "1", "P", "I;16", "F"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    w=st.integers(1, 64),
    h=st.integers(1, 64),
    mode=_MODES,
    seed=st.integers(0, 2**32 - 1),
    sparsity=st.floats(0.0, 1.0),
)
def test_any_picture_gives_a_valid_frame_or_image_error(
    w: int, h: int, mode: str, seed: int, sparsity: float
) -> None:
    """Property: finite float32 28x28 in [0, 1], or ImageError; never another exception."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    raw[rng.random((h, w)) < sparsity] = raw[0, 0]
    img: Any
    if mode == "I;16":
        img = Image.fromarray(raw[:, :, 0].astype(np.uint16) * 257)
    elif mode == "F":
        img = Image.fromarray(raw[:, :, 0].astype(np.float32) * rng.normal(1, 5))
    else:
        img = Image.fromarray(raw, "RGBA").convert(mode)
    try:
        a = preprocess_digit(img)
    except ImageError:
        return
    assert a.shape == (SIZE, SIZE) and a.dtype == np.float32
    assert np.all(np.isfinite(a)) and a.min() >= 0.0 and a.max() <= 1.0


def test_numpy_arrays_are_accepted() -> None:
    grey = np.asarray(_models.draw_digit((60, 60), shape="one"))
    check_mnist_like(preprocess_digit(grey))
    check_mnist_like(preprocess_digit(grey.astype(np.float32) / 255))
    with pytest.raises(ImageError, match="expected"):
        preprocess_digit(np.zeros((4, 4, 7), np.uint8))
    with pytest.raises(ImageError, match="PIL image"):
        preprocess_digit("not an image object")


# --- load_image ----------------------------------------------------------------------


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` pixels but carries no image data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        (b"", "empty file"),
        (b"just some text, no picture", "not a picture"),
        (_png_header(100_000, 100_000), "pixels"),  # 10 G pixels: Pillow's own bomb check
        (_png_header(8_000, 6_000), "over the limit"),  # 48 MP: over our 40 MP limit
        (_png_header(30, 30), "cannot decode"),  # header fine, no pixel data
    ],
    ids=["missing", "empty", "text", "bomb", "too-large", "no-data"],
)
def test_load_image_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "picture.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_load_image_truncated_and_limits(tmp_path: Path) -> None:
    img = _models.draw_digit((200, 200), mode="RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(path)
    path.write_bytes(buf.getvalue())
    assert load_image(path).size == (200, 200)
    with pytest.raises(ImageError, match="over the limit"):
        load_image(path, max_pixels=100)
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)


def test_load_image_applies_exif_rotation(tmp_path: Path) -> None:
    img = Image.new("L", (40, 20), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes())
    assert load_image(path).size == (20, 40)


# --- preprocess_resize / prepare_input ----------------------------------------------------


def test_preprocess_resize() -> None:
    img = Image.new("RGBA", (64, 32), (255, 0, 0, 255))
    rgb = preprocess_resize(img, height=16, width=8, channels=3)
    assert rgb.shape == (16, 8, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[..., 0], 1.0)
    np.testing.assert_allclose(rgb[..., 1:], 0.0)
    grey = preprocess_resize(Image.new("L", (5, 5), 51), height=5, width=5, channels=1)
    np.testing.assert_allclose(grey, 0.2, atol=1e-6)  # 51 / 255, no resampling at the same size


def test_prepare_input_follows_the_description(tmp_path: Path) -> None:
    paths = []
    for i, shape in enumerate(["seven", "zero"]):
        p = tmp_path / f"{i}.png"
        _models.draw_digit((90, 70), shape=shape).save(p)
        paths.append(p)
    flat = prepare_input(paths, _models.INPUT_DESC)
    assert flat.shape == (2, 784) and flat.dtype == np.float32
    np.testing.assert_array_equal(flat[0].reshape(28, 28), preprocess_digit(load_image(paths[0])))
    nhwc = prepare_input(paths, {**_models.INPUT_DESC, "layout": "nhwc"})
    np.testing.assert_array_equal(nhwc.reshape(2, 784), flat)
    plain = prepare_input(paths[0], _models.INPUT_DESC, preprocess=False)
    assert plain.shape == (1, 784)
    # Without the digit pipeline: a plain resize of black-on-white, so mostly white.
    assert plain.mean() > 0.5
    folder = {"layout": "nhwc", "height": 8, "width": 6, "channels": 3, "preprocess": "resize"}
    assert prepare_input(paths, folder).shape == (2, 8, 6, 3)
    with pytest.raises(ModelFileError, match="height"):
        prepare_input(paths, {"layout": "flat"})
    with pytest.raises(ModelFileError, match="layout"):
        prepare_input(paths, {**_models.INPUT_DESC, "layout": "nchw"})


# --- "no digit": find_digit (DIGIT_RULE), shared with the app graph and the page -----------

def test_find_digit_says_none_to_empty_frames_and_finds_digits(mnist) -> None:
    """The rule on generated frames of every kind (two sizes) and on real MNIST test digits
    photographed on paper, evenly lit and lit by a gradient: issue 20's bars (>= 95 % of empty
    frames `none`, <= 2 % of digit photos), held here with a margin on 240 frames and photos."""
    from edgeport.export.frames import EMPTY_KINDS, digit_photos, empty_frames
    from edgeport.mobile_demo.preprocess import find_digit

    for size in (112, 320):
        frames, kinds = empty_frames(8 * 15, size, seed=size)
        found = np.array([find_digit(f).found for f in frames])
        assert found.mean() <= 0.02, [k for k, f in zip(kinds, found, strict=True) if f]
        assert set(kinds) == set(EMPTY_KINDS)
    x = mnist.x_test[:120].astype(np.float32) / 255.0
    for light in (False, True):
        photos = digit_photos(x, 240, seed=int(light), light=light)
        assert np.mean([not find_digit(p).found for p in photos]) <= 0.02


def test_find_digit_says_why() -> None:
    from edgeport.mobile_demo.preprocess import find_digit

    paper = np.full((200, 200), 235, np.uint8)
    assert find_digit(paper).reason.startswith("blank")
    speck = paper.copy()
    speck[100:103, 100:103] = 20
    assert find_digit(speck).reason.startswith("a speck")
    ruled = paper.copy()
    for y in range(0, 200, 25):
        ruled[y : y + 4, :] = 60
    assert find_digit(ruled).reason.startswith("marks on the picture's edge")
    digit = paper.copy()
    digit[50:150, 95:108] = 30  # a "1": tall, dense, clear of the edge
    check = find_digit(digit)
    assert check.found and check.reason == "" and 0.45 < check.height < 0.55


def test_with_none_appends_or_reuses_a_none_class() -> None:
    from edgeport.mobile_demo.preprocess import labels_with_none, with_none

    p = np.array([[0.7, 0.3], [0.6, 0.4]], np.float32)
    found = np.array([True, False])
    np.testing.assert_allclose(with_none(p, found, ["a", "b"]), [[0.7, 0.3, 0], [0, 0, 1]],
                               atol=1e-7)
    np.testing.assert_allclose(with_none(p, found, ["none", "b"]), [[0.7, 0.3], [1, 0]],
                               atol=1e-7)
    assert labels_with_none(["a", "b"]) == ["a", "b", "none"]
    assert labels_with_none(["none", "b"]) == ["none", "b"]


def test_page_preprocessing_agrees_with_numpy(mnist, tmp_path: Path) -> None:
    """mobile_demo/web/preprocess.js (run in Node) against numpy on the same grayscale
    pictures: findDigit gives find_digit's verdict and measures, preprocessDigit
    preprocess_digit's 28 x 28 array, to 1e-6 (float32 output; the JS keeps Pillow's float32
    resampling passes with Math.fround, its weights and Python's half-to-even rounding)."""
    import json
    import shutil
    import subprocess

    from edgeport.export.frames import digit_photos, empty_frames
    from edgeport.mobile_demo.preprocess import find_digit, preprocess_digit

    node = shutil.which("node")
    assert node, "node is not installed; fix: apt-get install -y nodejs (or install Node.js 20)"
    frames, _ = empty_frames(32, 112, seed=9)
    photos = digit_photos(mnist.x_test[:32].astype(np.float32) / 255.0, 150, seed=9)
    grays = [np.asarray(Image.fromarray(p).convert("L"), np.float64) / 255.0
             for p in [*frames, *photos]]
    (tmp_path / "in.json").write_text(json.dumps([[g.shape[1], g.shape[0], g.ravel().tolist()]
                                                   for g in grays]))
    script = Path(__file__).resolve().parents[1] / "mobile_demo" / "web" / "preprocess.js"
    code = ("global.self = global; require(process.argv[1]);"
            "const items = JSON.parse(require('fs').readFileSync(process.argv[2]));"
            "console.log(JSON.stringify(items.map(([w, h, d]) => {"
            " const g = Float64Array.from(d), check = self.findDigit(g, w, h);"
            " return {...check, digit: check.found ? Array.from(self.preprocessDigit(g, w, h))"
            " : null}; })));")
    out = subprocess.run([node, "-e", code, str(script), str(tmp_path / "in.json")],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    for got, gray in zip(json.loads(out), grays, strict=True):
        want = find_digit(gray)
        assert got["found"] == want.found
        for key in ("area", "height", "density", "edge"):
            assert abs(got[key] - getattr(want, key)) < 1e-6, (key, got, want)
        if want.found:
            np.testing.assert_allclose(np.reshape(got["digit"], (28, 28)),
                                       preprocess_digit(gray), atol=1e-6)
    assert sum(r["digit"] is not None for r in json.loads(out)) >= 30
