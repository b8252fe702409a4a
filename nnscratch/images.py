"""Pictures of digits, made to look like MNIST's; image files read with bounded memory.

MNIST's digits were made so (LeCun et al.): each scanned digit was scaled, keeping its
aspect ratio, to fit a 20x20 box, then pasted into a 28x28 field so that its centre of
mass sits on the field's centre; ink is bright (1) on a dark (0) background. A network
trained on MNIST reads a new picture well only after the same treatment:
:func:`preprocess_digit` gives it, on a plain NumPy array (a canvas drawing, a photo read
with :func:`read_image`), with no imaging library.

:func:`read_image` is the one place that needs Pillow. It refuses pictures with more
pixels than a limit *before* decoding them (JPEGs are decoded at a reduced scale
instead), so a small file that claims to be 30000x30000 pixels (a decompression bomb)
costs neither memory nor time.

This module is the host boundary: it works on NumPy arrays, never on the backend's.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from nnscratch._files import NotARegularFileError, open_regular
from nnscratch.errors import ConfigError, DataError, ShapeError

MNIST_SIDE = 28
MNIST_BOX = 20  # MNIST's digits fit a 20x20 box inside their 28x28 field
INK_THRESHOLD = 0.2  # share of the full ink level that counts as ink, not paper
BLANK_CONTRAST = 0.1  # ink must stand out from the paper by 10% of full white
DEFAULT_MAX_PIXELS = 4096 * 4096  # 16.8 Mpx: a 12 Mpx phone photo fits, 50 Mpx is reduced
LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as Pillow's convert("L")


# -- preprocessing ------------------------------------------------------------------------


def preprocess_digit(image: Any, side: int = MNIST_SIDE, *, white: float | None = None
                     ) -> np.ndarray:
    """A picture of one digit, of any size, as MNIST would have it: (side²,) float32.

    ``image`` is a NumPy array (or nested lists): ``(h, w)`` grey levels, or
    ``(h, w, c)`` with ``c`` = 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA).
    ``white`` is the value of full brightness; by default 65535 for uint16 arrays
    (16-bit files), 255 for other integer arrays (booleans: True is white), and for floats 1.0 if
    no value exceeds 1, else 255. The steps, those that made MNIST:

    1. **Grey levels**: colour becomes luma ``0.299 R + 0.587 G + 0.114 B``. Where there
       is an alpha channel, a pixel of opacity ``a`` (0 = transparent = paper) becomes
       ``a·grey + (1 − a)·paper``; the paper's colour is that of the border when most of
       the border is opaque, else the opposite of the opaque pixels' mean (dark strokes on
       a transparent canvas lie on white paper, light strokes on black).
    2. **Ink bright on dark**: if the border (the paper, for a centred digit) is lighter
       than mid-grey, the picture is inverted.
    3. **Levels**: the border's median becomes 0 and the brightest ink 1, whatever the
       lighting: ``ink = clip((grey − paper) / (brightest − paper), 0, 1)``. A picture
       whose ink stands out from the paper by less than 10% of white is blank:
       ``DataError``.
    4. **Crop** to the bounding box of the pixels above ``INK_THRESHOLD`` (0.2).
    5. **Scale**, keeping the aspect ratio, so that the longer side is ``20·side/28``
       pixels (see :func:`resize` for the resampling).
    6. **Centre**: paste into a ``side × side`` black field at the whole-pixel offset
       that brings the ink's centre of mass ``(Σ_ij i·x_ij / Σ x_ij, ...)`` closest to
       ``(side/2, side/2)`` (MNIST's centres of mass average 14.0 in 0..27), so within
       half a pixel of it unless the glyph would leave the field.

    Raises ``ShapeError`` for an empty array or one of another shape, ``DataError`` for
    NaN, values outside ``[0, white]`` or a blank picture, ``ConfigError`` for a bad
    ``side``.
    """
    if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 8:
        raise ConfigError(f"side must be an integer of at least 8 pixels, got {side!r}")
    pixels = _as_pixel_array(image)
    white = _white_level(pixels, white)
    levels = _grey_levels(pixels, white)
    ink = _normalized_ink(levels, white)
    cropped = ink[_ink_box(ink)]
    glyph = resize(cropped, _glyph_shape(cropped.shape, side))
    np.clip(glyph, 0.0, 1.0, out=glyph)  # float rounding may leave 1 + 1e-7
    return _centre_in_field(glyph, side).reshape(-1)


def _as_pixel_array(image: Any) -> np.ndarray:
    """``image`` as a numeric NumPy array of shape (h, w) or (h, w, c), c in 1..4."""
    try:
        pixels = np.asarray(image)
    except (ValueError, TypeError) as err:  # ragged nested lists, odd objects
        raise ShapeError(f"the image is not a rectangular array of numbers: {err}") from err
    if pixels.dtype == np.bool_:  # True is white
        pixels = pixels.astype(np.uint8) * np.uint8(255)
    if not (np.issubdtype(pixels.dtype, np.integer) or np.issubdtype(pixels.dtype, np.floating)):
        raise DataError(f"the image must hold numbers (grey levels), got dtype {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] in (1, 2, 3, 4):
        pass
    elif pixels.ndim != 2:
        raise ShapeError(
            f"the image must be 2-D (height, width) or 3-D (height, width, 1-4 channels), "
            f"got shape {pixels.shape}")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ShapeError(f"the image is empty (shape {pixels.shape})")
    if np.issubdtype(pixels.dtype, np.floating) and not np.isfinite(pixels).all():
        raise DataError("the image holds NaN or infinite values: grey levels must be finite")
    return pixels


def _white_level(pixels: np.ndarray, white: float | None) -> float:
    """The value of full brightness, given or guessed from the dtype (see
    :func:`preprocess_digit`), after checking every value lies in [0, white]."""
    if white is None:
        if pixels.dtype == np.uint16:
            white = 65535.0
        elif np.issubdtype(pixels.dtype, np.integer):
            white = 255.0
        else:
            white = 1.0 if pixels.max() <= 1.0 else 255.0
    elif (isinstance(white, bool) or not isinstance(white, (int, float, np.number))
          or not math.isfinite(white) or white <= 0):
        raise ConfigError(f"white must be a positive number (e.g. 255 or 1.0), got {white!r}")
    low, high = pixels.min(), pixels.max()
    if low < 0 or high > white:
        raise DataError(
            f"grey levels must lie in [0, {white:g}], but the image holds values from "
            f"{low:g} to {high:g}")
    return float(white)


def _grey_levels(pixels: np.ndarray, white: float) -> np.ndarray:
    """One float32 grey level per pixel, in the input's units (0..white), with any alpha
    channel composited onto the paper (step 1)."""
    if pixels.ndim == 2:
        return pixels.astype(np.float32)
    channels = pixels.shape[2]
    if channels in (1, 2):
        grey = pixels[..., 0].astype(np.float32)
    else:  # channel by channel: no float copy of the whole (h, w, 3) array
        grey = np.zeros(pixels.shape[:2], dtype=np.float32)
        for channel, weight in enumerate(LUMINANCE_WEIGHTS):
            grey += np.float32(weight) * pixels[..., channel]
    if channels in (2, 4):
        alpha = pixels[..., -1].astype(np.float32) / np.float32(white)
        if not alpha.any():
            raise DataError("the image looks blank: every pixel is transparent")
        grey = alpha * grey + (1 - alpha) * np.float32(_paper_under_alpha(grey, alpha, white))
    return grey


def _paper_under_alpha(grey: np.ndarray, alpha: np.ndarray, white: float) -> float:
    """The paper's grey level where pixels are transparent: the opaque border's median
    when most of the border is opaque, else the opposite of the opaque pixels' mean."""
    border_alpha, border_grey = _border(alpha), _border(grey)
    opaque = border_alpha > 0.5
    if opaque.mean() >= 0.5:
        return float(np.median(border_grey[opaque]))
    ink_mean = float((alpha * grey).sum() / alpha.sum())
    return white if ink_mean < white / 2 else 0.0


def _border(array: np.ndarray) -> np.ndarray:
    """The pixels of the outermost rows and columns, in one vector."""
    return np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])


def _normalized_ink(levels: np.ndarray, white: float) -> np.ndarray:
    """Steps 2 and 3: bright ink on a dark background, paper at 0, brightest ink at 1.

    The inversion is done in the input's units (``white − level``), exact for integer
    grey levels, so a picture and its negative give bit-identical results."""
    if np.median(_border(levels)) > white / 2:
        levels = np.float32(white) - levels
    paper, brightest = float(np.median(_border(levels))), float(levels.max())
    if brightest - paper < BLANK_CONTRAST * white:
        raise DataError(
            "the image looks blank: no digit stands out from the background (the brightest "
            f"pixel is {(brightest - paper) / white:.0%} of white above the paper; draw or "
            "photograph a digit with more contrast)")
    ink = (levels - np.float32(paper)) / np.float32(brightest - paper)
    return np.clip(ink, 0.0, 1.0, out=ink)


def _ink_box(ink: np.ndarray) -> tuple[slice, slice]:
    """Step 4: the bounding box of the pixels brighter than ``INK_THRESHOLD``."""
    is_ink = ink > INK_THRESHOLD
    rows = np.flatnonzero(is_ink.any(axis=1))
    columns = np.flatnonzero(is_ink.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1)


def _glyph_shape(ink_shape: tuple[int, ...], side: int) -> tuple[int, int]:
    """Step 5's target size: the longer side becomes the box (20 for 28), the other
    keeps the aspect ratio (at least one pixel)."""
    height, width = ink_shape
    box = MNIST_BOX * side // MNIST_SIDE
    scale = box / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _centre_in_field(glyph: np.ndarray, side: int) -> np.ndarray:
    """Step 6: paste ``glyph`` into a side x side field, centre of mass on the centre."""
    total = float(glyph.sum())
    row_centre = float(glyph.sum(axis=1) @ np.arange(glyph.shape[0])) / total
    column_centre = float(glyph.sum(axis=0) @ np.arange(glyph.shape[1])) / total
    centre = side / 2
    top = int(np.clip(round(centre - row_centre), 0, side - glyph.shape[0]))
    left = int(np.clip(round(centre - column_centre), 0, side - glyph.shape[1]))
    field = np.zeros((side, side), dtype=np.float32)
    field[top:top + glyph.shape[0], left:left + glyph.shape[1]] = glyph
    return field


# -- resampling ---------------------------------------------------------------------------


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` (2-D) resampled to ``shape`` = (height, width), as float32.

    Resampling is separable: ``out = R_rows · image · R_columnsᵀ``, where each ``R`` maps
    one axis of n pixels to m and each of its rows sums to 1, so a uniform area stays
    uniform and values stay within the input's range. See :func:`resampling_matrix`.
    """
    rows = resampling_matrix(image.shape[0], shape[0])
    columns = resampling_matrix(image.shape[1], shape[1])
    return (rows @ image.astype(np.float32) @ columns.T).astype(np.float32)


def resampling_matrix(n: int, m: int) -> np.ndarray:
    """The (m, n) float32 matrix that resamples an axis of ``n`` pixels to ``m``.

    Pixel j of the input covers the interval [j, j+1); output pixel i covers
    [i·s, (i+1)·s) in input units, with s = n/m.

    - **Shrinking** (m < n): area averaging (a box filter). Output pixel i is the mean
      of the input over its footprint, each input pixel weighted by the length of its
      overlap with it: ``R[i, j] = |[i·s, (i+1)·s) ∩ [j, j+1)| / s``. Every input pixel
      counts, so thin strokes fade instead of vanishing (point sampling drops them).
    - **Enlarging** (m > n): linear interpolation between the two nearest input pixel
      centres. Output pixel i's centre lies at x = (i + ½)·s − ½ in input pixel
      coordinates (clamped to [0, n − 1]); with j = ⌊x⌋ and t = x − j,
      ``R[i, j] = 1 − t`` and ``R[i, j + 1] = t``.
    - m = n: the identity.
    """
    if m == n:
        return np.eye(n, dtype=np.float32)
    step = n / m
    if m < n:
        low = np.arange(m)[:, None] * step
        high = low + step
        pixel = np.arange(n)[None, :]
        overlap = np.minimum(high, pixel + 1) - np.maximum(low, pixel)
        return (np.clip(overlap, 0.0, None) / step).astype(np.float32)
    x = np.clip((np.arange(m) + 0.5) * step - 0.5, 0.0, n - 1)
    left = np.floor(x).astype(np.int64)
    right = np.minimum(left + 1, n - 1)
    t = x - left
    matrix = np.zeros((m, n), dtype=np.float64)
    np.add.at(matrix, (np.arange(m), left), 1.0 - t)
    np.add.at(matrix, (np.arange(m), right), t)
    return matrix.astype(np.float32)


def classify(model: Any, image: Any, *, white: float | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """What ``model`` (trained on images like MNIST's, flattened, or as (1, side, side)
    images for a convolutional one) reads in ``image``: the picture as the model sees
    it, ``preprocess_digit(image, side, white=white)`` with side² the model's inputs,
    and the class probabilities, the softmax of its outputs,
    ``pᵢ = e^{zᵢ − m} / Σⱼ e^{zⱼ − m}``. Both are host arrays."""
    from nnscratch.backend import to_numpy
    from nnscratch.conv import image_side

    side = math.isqrt(model.in_features or 0) if model.in_features else image_side(model)
    if side is None or (model.in_features and side * side != model.in_features):
        raise ShapeError(f"the model takes {model.in_features} inputs, not a square image")
    pixels = preprocess_digit(image, side, white=white)
    batch = pixels[None, :] if model.in_features else pixels.reshape(1, 1, side, side)
    outputs = to_numpy(model.predict(batch))[0].astype(np.float64)
    if type(model.layers[-1]).__name__ == "Softmax":  # already probabilities
        return pixels, outputs
    probabilities = np.exp(outputs - outputs.max())
    return pixels, probabilities / probabilities.sum()


# -- reading files ------------------------------------------------------------------------


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The pixels of an image file as a NumPy array, decoding at most ``max_pixels``.

    Returns ``(h, w)`` uint8 grey levels for grey pictures (uint16 for 16-bit ones),
    ``(h, w, 4)`` uint8 RGBA for pictures with transparency, ``(h, w, 3)`` uint8 RGB for
    the others; the first frame of an animation. Feed it to :func:`preprocess_digit`.

    The pixel count is read from the file's header, before anything is decoded. Above
    ``max_pixels`` a JPEG is decoded at 1/2, 1/4 or 1/8 scale (its format allows that for
    free); any other picture is refused with ``DataError`` stating the limit. Pillow's
    own decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``) still applies above it.

    Raises ``DataError`` naming the file if it is missing, not a regular file, not an
    image or corrupt; ``ConfigError`` if Pillow is not installed.
    """
    if (isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer))
            or max_pixels <= 0):
        raise ConfigError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    Image = _pillow()
    path = Path(path)
    limit = f"{max_pixels:,} pixels"
    try:
        with warnings.catch_warnings(), open_regular(path) as (handle, _):
            # Our own limit is checked below; Pillow's warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(handle) as image:
                _decode_within(image, max_pixels, path)
                image.load()
                return _pixels_of(image, path)
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: the image is too large to decode safely (the limit is "
                        f"{limit}): {err}") from err
    except Image.UnidentifiedImageError as err:
        raise DataError(f"cannot read the image {path}: not an image format Pillow knows "
                        "(PNG, JPEG, GIF, BMP, WebP, ...)") from err
    except DataError:
        raise
    except NotARegularFileError as err:  # a FIFO or a device would block or never end
        raise DataError(f"cannot read the image {path}: it is {err.kind}, not a regular "
                        "file") from err
    except OSError as err:
        if err.filename is None:  # a decoder's OSError: a corrupt file, below
            raise DataError(f"cannot read the image {path}: the file is corrupt or "
                            f"truncated ({type(err).__name__}: {err})") from err
        raise DataError(f"cannot read the image {path}: {err.strerror or err}") from err
    except MemoryError as err:
        raise DataError(f"{path}: not enough memory to decode the image; pass a smaller "
                        f"max_pixels (now {limit})") from err
    except Exception as err:  # noqa: BLE001 - a corrupt file can fail in any decoder
        raise DataError(f"cannot read the image {path}: the file is corrupt or truncated "
                        f"({type(err).__name__}: {err})") from err


def _decode_within(image: Any, max_pixels: int, path: Path) -> None:
    """Arrange for ``image`` (opened, not yet decoded) to decode at most ``max_pixels``:
    a reduced JPEG decode, or a ``DataError`` stating the limit."""
    width, height = image.size
    if width * height <= max_pixels:
        return
    if image.format == "JPEG":
        for reduction in (2, 4, 8):
            target = (max(1, width // reduction), max(1, height // reduction))
            if math.ceil(width / reduction) * math.ceil(height / reduction) <= max_pixels:
                image.draft(None, target)
                break
        if image.size[0] * image.size[1] <= max_pixels:
            return
    raise DataError(
        f"{path}: the image is {width:,} x {height:,} = {width * height:,} pixels, more than "
        f"the limit of {max_pixels:,} pixels; scale it down first, or pass a larger "
        "max_pixels if you trust the file")


def _pixels_of(image: Any, path: Path) -> np.ndarray:
    """A decoded Pillow image as the array :func:`read_image` promises."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        return np.asarray(image.convert("RGBA"), dtype=np.uint8)
    if image.mode.startswith("I;16"):
        return np.asarray(image, dtype=np.uint16)
    if image.mode == "I":
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise DataError(f"{path}: 32-bit integer pixels outside 0..65535; save the image "
                            "with 8 or 16 bits per channel")
        return values.astype(np.uint16)
    if image.mode == "F":
        raise DataError(f"{path}: floating-point pixels have no fixed white level; save the "
                        "image with 8 or 16 bits per channel")
    if image.mode in ("1", "L"):
        return np.asarray(image.convert("L"), dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _pillow() -> Any:
    """PIL.Image, or a ConfigError with the command that installs it."""
    try:
        from PIL import Image
    except ImportError as err:
        raise ConfigError(
            "reading image files needs Pillow, which is not installed: install it with "
            "pip install pillow (or: pip install 'nnscratch[examples]')") from err
    return Image


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "INK_THRESHOLD",
    "MNIST_BOX",
    "MNIST_SIDE",
    "preprocess_digit",
    "read_image",
    "resampling_matrix",
    "resize",
]
