"""nnscratch.images: MNIST-style preprocessing on arrays, and bounded image reading."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from nnscratch.datasets import read_idx
from nnscratch.errors import ConfigError, DataError, ShapeError
from nnscratch.images import (
    INK_THRESHOLD,
    preprocess_digit,
    read_image,
    resampling_matrix,
    resize,
)

ROOT = Path(__file__).resolve().parents[1]


def draw_strokes(shape: tuple[int, int], points: list[tuple[float, float]], width: float,
                 ink: int = 255, paper: int = 0) -> np.ndarray:
    """A uint8 picture of a polyline through ``points`` (row, column), ``width`` thick."""
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    distance = np.full(shape, np.inf)
    for (r0, c0), (r1, c1) in zip(points[:-1], points[1:]):
        length2 = (r1 - r0) ** 2 + (c1 - c0) ** 2
        t = np.clip(((rows - r0) * (r1 - r0) + (columns - c0) * (c1 - c0)) / length2, 0, 1)
        distance = np.minimum(distance, np.hypot(rows - r0 - t * (r1 - r0),
                                                 columns - c0 - t * (c1 - c0)))
    picture = np.full(shape, paper, dtype=np.uint8)
    picture[distance <= width / 2] = ink
    return picture


SEVEN = [(60, 40), (60, 150), (280, 90)]  # a "7": the top bar, then the long diagonal


def centre_of_mass(field: np.ndarray) -> tuple[float, float]:
    index = np.arange(field.shape[0])
    total = field.sum()
    return float(field.sum(axis=1) @ index / total), float(field.sum(axis=0) @ index / total)


def ink_extent(field: np.ndarray, threshold: float = 0.0) -> tuple[int, int]:
    """(height, width) of the bounding box of the pixels above ``threshold``."""
    rows = np.flatnonzero((field > threshold).any(axis=1))
    columns = np.flatnonzero((field > threshold).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(columns[-1] - columns[0] + 1)


# -- preprocessing ------------------------------------------------------------------------


def test_a_digit_anywhere_in_the_picture_is_centred_by_its_centre_of_mass():
    seven = draw_strokes((320, 240), SEVEN, width=18)
    shifted = np.zeros((500, 700), dtype=np.uint8)
    shifted[170:490, 430:670] = seven  # far from the centre, near a corner
    result = preprocess_digit(shifted)
    assert result.shape == (784,) and result.dtype == np.float32
    field = result.reshape(28, 28)
    row, column = centre_of_mass(field)
    assert abs(row - 14) <= 0.5 and abs(column - 14) <= 0.5, (row, column)
    # Where the digit sat does not matter at all: only its shape does.
    np.testing.assert_array_equal(result, preprocess_digit(seven))
    assert result.min() >= 0.0 and result.max() <= 1.0 and result.max() > 0.99


def test_a_light_background_gives_exactly_its_dark_negative():
    dark = draw_strokes((320, 240), SEVEN, width=18)
    light = 255 - dark
    np.testing.assert_array_equal(preprocess_digit(light), preprocess_digit(dark))


def test_grey_paper_and_faint_ink_are_stretched_to_black_and_white():
    reference = preprocess_digit(draw_strokes((320, 240), SEVEN, width=18))
    faint = draw_strokes((320, 240), SEVEN, width=18, ink=150, paper=110)
    np.testing.assert_allclose(preprocess_digit(faint), reference, atol=1e-6)


@pytest.mark.parametrize(("height", "width", "expected"), [
    (200, 100, (20, 10)),  # shrunk: the long side becomes 20, the aspect ratio is kept
    (100, 200, (10, 20)),
    (3, 6, (10, 20)),  # enlarged
    (400, 400, (20, 20)),
])
def test_the_ink_box_is_scaled_so_its_longer_side_is_20_pixels(height, width, expected):
    picture = np.zeros((height + 100, width + 60), dtype=np.uint8)
    picture[50:50 + height, 30:30 + width] = 255
    field = preprocess_digit(picture).reshape(28, 28)
    assert ink_extent(field, INK_THRESHOLD) == expected
    if height % 20 == 0 and width % 20 == 0:  # whole pixels map onto whole pixels
        assert ink_extent(field) == expected
        assert set(np.unique(field)) == {0.0, 1.0}


def test_other_field_sizes_scale_the_box_with_them():
    picture = np.zeros((300, 300), dtype=np.uint8)
    picture[20:220, 100:200] = 255
    field = preprocess_digit(picture, side=56).reshape(56, 56)
    assert ink_extent(field) == (40, 20)


@pytest.fixture(scope="module")
def mnist_test_images(mnist_path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(mnist_path / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(mnist_path / "t10k-labels-idx1-ubyte.gz")
    return images[:200], labels[:200]


def test_an_mnist_digit_enlarged_tenfold_comes_back_as_it_was(mnist_test_images):
    images, _ = mnist_test_images
    differences = []
    for image in images:
        enlarged = np.kron(image, np.ones((10, 10), dtype=np.uint8))
        result = preprocess_digit(enlarged)
        # Area averaging undoes pixel replication exactly: the same as the small one.
        np.testing.assert_allclose(result, preprocess_digit(image), atol=2e-6)
        differences.append(np.abs(result - image.reshape(-1) / 255.0).mean())
    # MNIST's own digits are already in this form, up to where the ink threshold puts
    # the box edge.
    assert np.mean(differences) < 0.005, np.mean(differences)
    assert np.median(differences) < 1e-3, np.median(differences)


def test_an_mnist_digit_drawn_dark_on_light_paper_in_colour_is_read_back(mnist_test_images):
    images, _ = mnist_test_images
    for image in images[:20]:
        enlarged = np.kron(image, np.ones((6, 6), dtype=np.uint8)).astype(np.float64)
        rgb = np.stack([255 - enlarged * 0.9, 255 - enlarged * 0.8, 255 - enlarged * 0.5], -1)
        result = preprocess_digit(rgb)
        original = preprocess_digit(image)
        assert np.abs(result - original).max() < 0.02


def test_float_pictures_in_0_1_read_as_their_8_bit_twins():
    dark = draw_strokes((120, 90), [(20, 45), (100, 45)], width=9)
    np.testing.assert_allclose(preprocess_digit(dark / 255.0), preprocess_digit(dark),
                               atol=1e-6)
    np.testing.assert_allclose(preprocess_digit(dark.astype(np.float32)),
                               preprocess_digit(dark), atol=1e-6)  # floats above 1: 0-255
    np.testing.assert_array_equal(preprocess_digit(dark > 0), preprocess_digit(dark))
    np.testing.assert_array_equal(preprocess_digit(dark.tolist()), preprocess_digit(dark))
    sixteen_bit = dark.astype(np.uint16) * 257
    np.testing.assert_allclose(preprocess_digit(sixteen_bit), preprocess_digit(dark), atol=1e-6)


@pytest.mark.parametrize("paper_opacity", ["transparent", "opaque"])
@pytest.mark.parametrize("ink_colour", [0, 255])
def test_transparent_pixels_are_paper_whatever_the_ink_colour(ink_colour, paper_opacity):
    mask = draw_strokes((200, 150), SEVEN[:1] + [(60, 120), (190, 70)], width=14) > 0
    rgba = np.zeros((200, 150, 4), dtype=np.uint8)
    rgba[..., :3] = np.where(mask, ink_colour, 255 - ink_colour)[..., None]
    rgba[..., 3] = np.where(mask, 255, 0 if paper_opacity == "transparent" else 255)
    expected = preprocess_digit(mask.astype(np.uint8) * 255)
    np.testing.assert_allclose(preprocess_digit(rgba), expected, atol=1e-6)


@pytest.mark.parametrize("picture", [
    np.zeros((50, 50), dtype=np.uint8),
    np.full((50, 50), 255, dtype=np.uint8),
    np.full((50, 50), 0.4),
    np.pad(np.full((10, 10), 20, dtype=np.uint8), 20),  # ink 8% above the paper
    np.zeros((50, 50, 4), dtype=np.uint8),  # fully transparent
], ids=["black", "white", "grey", "too-faint", "transparent"])
def test_a_blank_picture_is_refused_as_blank(picture):
    with pytest.raises(DataError, match="blank"):
        preprocess_digit(picture)


@pytest.mark.parametrize(("picture", "error", "message"), [
    (np.zeros((0, 10)), ShapeError, "empty"),
    (np.zeros((10, 0), dtype=np.uint8), ShapeError, "empty"),
    (np.zeros(100), ShapeError, "2-D"),
    (np.zeros((4, 4, 4, 4)), ShapeError, "2-D"),
    (np.zeros((10, 10, 5)), ShapeError, "channels"),
    ([[0, 1], [2]], ShapeError, "rectangular"),
    (np.array([["a", "b"]]), DataError, "numbers"),
    (np.array([[0.0, np.nan], [1.0, 0.5]]), DataError, "NaN"),
    (np.array([[0.0, np.inf], [1.0, 0.5]]), DataError, "NaN or infinite"),
    (np.array([[0, 300], [1, 5]]), DataError, r"\[0, 255\].*300"),
    (np.array([[0, -1], [1, 5]]), DataError, r"from -1"),
], ids=["no-rows", "no-columns", "1-D", "4-D", "5-channels", "ragged", "strings", "nan",
        "inf", "above-white", "negative"])
def test_malformed_pictures_raise_errors_that_say_what_is_wrong(picture, error, message):
    with pytest.raises(error, match=message):
        preprocess_digit(picture)


def test_bad_settings_are_config_errors():
    picture = draw_strokes((40, 40), [(5, 20), (35, 20)], width=4)
    for side in (0, 7, 28.0, True):
        with pytest.raises(ConfigError, match="side"):
            preprocess_digit(picture, side=side)
    with pytest.raises(ConfigError, match="white"):
        preprocess_digit(picture, white=0)
    with pytest.raises(DataError, match=r"\[0, 100\]"):
        preprocess_digit(picture, white=100)


# -- resampling ---------------------------------------------------------------------------


def test_shrinking_averages_each_output_pixels_footprint():
    # 5 -> 2: each output pixel covers 2.5 input pixels.
    np.testing.assert_allclose(resampling_matrix(5, 2),
                               [[0.4, 0.4, 0.2, 0, 0], [0, 0, 0.2, 0.4, 0.4]], atol=1e-7)
    image = np.arange(24, dtype=np.float32).reshape(4, 6)
    # An integer factor is the mean of each block.
    np.testing.assert_allclose(resize(image, (2, 3)),
                               image.reshape(2, 2, 3, 2).mean(axis=(1, 3)), atol=1e-5)


def test_enlarging_interpolates_linearly_between_pixel_centres():
    # 2 -> 4: output centres at input coordinates -0.25 (clamped to 0), 0.25, 0.75, 1.25
    # (clamped to 1).
    np.testing.assert_allclose(resampling_matrix(2, 4),
                               [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], atol=1e-7)
    assert np.array_equal(resampling_matrix(3, 3), np.eye(3))


@pytest.mark.parametrize(("n", "m"), [(7, 3), (3, 7), (1000, 20), (1, 20), (20, 1)])
def test_every_resampling_row_is_a_weighted_mean(n, m):
    matrix = resampling_matrix(n, m)
    assert matrix.shape == (m, n) and (matrix >= 0).all()
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)


# -- reading files ------------------------------------------------------------------------


@pytest.fixture
def pil_image():
    return pytest.importorskip("PIL.Image", reason="read_image needs Pillow")


def test_read_image_returns_grey_rgb_or_rgba_pixels(pil_image, tmp_path):
    grey = draw_strokes((64, 48), [(10, 24), (54, 24)], width=6)
    pil_image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png"), grey)

    rgba = np.zeros((64, 48, 4), dtype=np.uint8)
    rgba[..., 3] = grey
    pil_image.fromarray(rgba, mode="RGBA").save(tmp_path / "strokes.png")
    np.testing.assert_array_equal(read_image(str(tmp_path / "strokes.png")), rgba)

    rgb = np.stack([grey, grey // 2, 255 - grey], axis=-1)
    pil_image.fromarray(rgb, mode="RGB").save(tmp_path / "colour.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "colour.bmp"), rgb)

    sixteen = grey.astype(np.uint16) * 257
    pil_image.fromarray(sixteen).save(tmp_path / "deep.png")
    read = read_image(tmp_path / "deep.png")
    assert read.dtype == np.uint16
    np.testing.assert_array_equal(read, sixteen)
    np.testing.assert_allclose(preprocess_digit(read), preprocess_digit(grey), atol=1e-6)


def test_unreadable_files_are_data_errors_naming_them(pil_image, tmp_path):
    with pytest.raises(DataError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image at all")
    with pytest.raises(DataError, match=r"notes\.png.*not an image"):
        read_image(tmp_path / "notes.png")
    pil_image.fromarray(np.zeros((300, 300), dtype=np.uint8) + 7).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png.*corrupt or truncated"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(DataError, match="not a regular file"):
        read_image(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_without_blocking(pil_image, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        read_image(fifo)  # opening it for reading would wait for a writer forever


def png_header_only(width: int, height: int, colour_type: int = 0) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels but carries a few bytes of data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_a_picture_above_the_pixel_limit_is_refused_before_decoding(pil_image, tmp_path):
    claim = tmp_path / "claims-5000x5000.png"
    claim.write_bytes(png_header_only(5000, 5000))
    with pytest.raises(DataError, match=r"5,000 x 5,000 = 25,000,000 pixels.*1,000,000"):
        read_image(claim, max_pixels=1_000_000)
    # Above the limit nothing was decoded: with room for it, decoding finds the truth.
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_image(claim, max_pixels=25_000_000)


def test_a_decompression_bomb_is_refused_with_the_limit_at_once(pil_image, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(30000, 30000, colour_type=2))  # 2.7 GB of RGB
    assert bomb.stat().st_size < 100
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"too large|limit of"):
        read_image(bomb)
    assert time.perf_counter() - start < 1.0


def test_the_refusal_costs_no_memory_under_an_address_space_limit(pil_image, tmp_path):
    """12000x12000 RGB (432 MB decoded, under Pillow's own bomb limit): refused by our
    limit in a child process that could not even allocate it."""
    pytest.importorskip("resource", reason="RLIMIT_AS needs the resource module (POSIX)")
    claim = tmp_path / "big.png"
    claim.write_bytes(png_header_only(12000, 12000, colour_type=2))
    script = textwrap.dedent(f"""
        import resource, numpy, PIL.Image
        from nnscratch.errors import DataError
        from nnscratch.images import read_image
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + 300 * 2**20, resource.RLIM_INFINITY))
        try:
            read_image({str(claim)!r})
        except DataError as err:
            print("refused:", err)
    """)
    if not Path("/proc/self/statm").exists():
        pytest.skip("needs /proc/self/statm (Linux) to measure the child's memory")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "16,777,216" in done.stdout, done.stdout


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(pil_image, tmp_path):
    stripes = np.zeros((2000, 3000), dtype=np.uint8)
    stripes[:, ::100] = 255
    pil_image.fromarray(stripes).save(tmp_path / "photo.jpg", quality=90)
    pixels = read_image(tmp_path / "photo.jpg", max_pixels=1_000_000)
    assert pixels.shape == (500, 750)  # 1/4 scale: 1/2 would be 1.5 million pixels
    assert read_image(tmp_path / "photo.jpg").shape == (2000, 3000)  # under the default


def test_without_pillow_reading_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ConfigError, match="pip install pillow"):
        read_image(tmp_path / "digit.png")


def test_bad_limits_are_config_errors(pil_image, tmp_path):
    for limit in (0, -5, 2.5, True):
        with pytest.raises(ConfigError, match="max_pixels"):
            read_image(tmp_path / "digit.png", max_pixels=limit)
