"""Image preprocessing shared by prepare (a folder of your own images) and predict: finding the files in a folder,
decoding any Pillow image into 8-bit grayscale, and bringing a digit into MNIST's form (predict's module docstring
says how, step by step).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SIZE = 28  # MNIST images are 28x28 ...
BOX = 20  # ... with the digit scaled to fit 20x20 ...
CENTRE = 14.0  # ... and its centre of mass at pixel (14, 14) (the mean over MNIST's test set: 13.99, 14.01)
INK = 0.2  # the bounding box is of the pixels above this share of the ink's peak
MIN_CONTRAST = 32  # grey levels: an image spanning fewer is blank
MAX_PIXELS = 120_000_000  # larger images are refused (Pillow's decompression-bomb limit, set to this): a 48 MP
# phone photo passes; JPEGs decode at a reduced scale (draft) and others are reduced right after decoding
WORK = 512  # pixels on the longer side: larger images are scaled down before preprocessing
MIN_SIDE = 8  # pixels: a thinner image can't hold a recognisable digit
KEEP = 0.25  # ink marks at least this share of the largest one's mass count as part of the digit
WIDEST = 2.0  # ink wider than this many times its height is not one digit (MNIST's widest are about 1.3)


class InputError(Exception):
    """One input cannot be predicted; the message says why (the caller names the input)."""


# --- pixels -> MNIST form --------------------------------------------------------------------------------------


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def composite(image: Image.Image) -> np.ndarray:
    """An RGBA image's luma composited onto a backdrop (see the module docstring), float32."""
    luma = np.asarray(image.convert("RGB").convert("L"), np.float32)
    alpha = np.asarray(image.getchannel("A"), np.float32) / 255
    if alpha.min() == 1:
        return luma
    if np.median(alpha) < 0.5:  # a transparent background: what is visible is the digit
        visible = alpha.sum()
        ink = (luma * alpha).sum() / visible if visible else 0.0
        backdrop = 255.0 if ink < 128 else 0.0
    else:  # an opaque background with transparent parts: fill them with it
        backdrop = float(np.median(luma[alpha >= 0.5]))
    return luma * alpha + backdrop * (1 - alpha)


def grayscale(image: Image.Image) -> np.ndarray:
    """Any Pillow image as 8-bit grayscale values (float32 array, whole numbers 0-255)."""
    mode = image.mode
    if mode.startswith("I;16"):
        gray = np.asarray(image, np.float32) / 257
    elif mode in ("I", "F"):  # 32-bit integer or float: 0-255 as is, up to 65535 as 16-bit
        gray = np.asarray(image, np.float32)
        if not np.isfinite(gray).all():
            raise InputError("has NaN or infinite pixel values")
        low, high = float(gray.min()), float(gray.max())
        if low < 0 or high > 65535:
            raise InputError(f"pixel values {low:g} to {high:g} are outside 0-65535 ({mode} mode)")
        if high > 255:
            gray = gray / 257
    else:
        try:
            if mode in ("RGBA", "LA", "La", "PA", "RGBa") or "transparency" in image.info:
                gray = composite(image.convert("RGBA"))
            else:
                gray = np.asarray(image.convert("L"), np.float32)
        except ValueError as e:
            raise InputError(f"unsupported image mode {mode} ({first_line(e)})") from e
    return np.rint(gray).astype(np.float32)


def blank(gray: np.ndarray) -> bool:
    return float(gray.max()) - float(gray.min()) < MIN_CONTRAST


BLANK = f"blank (no ink: its pixels span fewer than {MIN_CONTRAST} grey levels)"


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold of values in 0-255: the level that best splits them into two classes (paper, ink)."""
    counts = np.bincount(np.clip(values, 0, 255).astype(np.int64).ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256)
    weight = np.cumsum(counts)
    mass = np.cumsum(counts * levels)
    total, total_mass = weight[-1], mass[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mass * weight - total * mass) ** 2 / (weight * (total - weight))
    return float(np.nanargmax(between[:-1])) if np.isfinite(between[:-1]).any() else 0.0


@dataclass
class Digit:
    """An image in MNIST form, and what about the input did not look like one digit (`notes`, empty if nothing)."""

    image: np.ndarray
    notes: list[str]


def prepare(gray: np.ndarray) -> Digit:
    """A grayscale image (2-D, values 0-255, any size, either polarity) in MNIST form, (28, 28) uint8, with notes
    on what does not look like one digit; InputError if it is blank. (predict's docstring has the steps.)"""
    from scipy import ndimage  # noqa: PLC0415 (only where images are preprocessed)

    gray = np.asarray(gray, np.float32)
    if gray.ndim != 2 or not gray.size:
        raise InputError(f"not a 2-D image (shape {gray.shape})")
    if blank(gray):
        raise InputError(BLANK)
    notes = []
    if min(gray.shape) < MIN_SIDE:
        notes.append(f"{gray.shape[1]}x{gray.shape[0]} pixels: too thin to hold a digit")
    if max(gray.shape) > WORK:  # the digit ends as 20x20: a phone photo's detail only costs time
        scale = WORK / max(gray.shape)
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        gray = np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BOX), np.float32)
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    background = float(np.median(border))
    low, high = float(gray.min()), float(gray.max())
    lit = 255 - gray if background - low > high - background else gray  # ink light on dark from here on
    # The paper's level at each pixel: a grey opening as wide as half the image removes every stroke narrower
    # than that and keeps slow changes (a shadow, a gradient), which a single background level would call ink.
    width = max(3, min(lit.shape) // 2)
    paper = ndimage.uniform_filter(ndimage.grey_opening(lit, size=(width, width)), size=width, mode="nearest")
    ink = np.clip(lit - np.minimum(paper, lit), 0, None)
    if float(ink.max()) < MIN_CONTRAST:
        raise InputError(BLANK)
    # The digit: the largest connected mark of ink above Otsu's level (and above INK of the peak), with any mark at
    # least a quarter its size (a stroke the pen lifted from); specks, smudges and the rest are dropped.
    strong = ink > max(otsu(ink), INK * float(ink.max()))
    marks, count = ndimage.label(strong, structure=np.ones((3, 3)))
    mass = ndimage.sum_labels(ink, marks, index=np.arange(1, count + 1))
    kept_marks = np.flatnonzero(mass >= KEEP * mass.max()) + 1
    kept = ndimage.binary_dilation(np.isin(marks, kept_marks), iterations=2)
    ink = np.where(kept, ink, 0)
    if mass.max() < 0.6 * mass.sum():
        notes.append("ink in many separate marks: not one digit?")
    peak = float(ink.max())
    ink *= 255 / peak
    crop = ink[ndimage.find_objects((ink > INK * 255).astype(np.uint8))[0]]  # the bounding box of the strong ink
    height, width = crop.shape
    if width > WIDEST * height:
        notes.append(f"ink {width}x{height} pixels, wider than a digit: a dash, or several digits?")
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.Resampling.LANCZOS)
    pixels = np.clip(np.asarray(digit), 0, None)  # Lanczos overshoots a little below 0 and above 255
    total = float(pixels.sum())
    if total <= 0:
        raise InputError(BLANK)
    cy = float(pixels.sum(axis=1) @ np.arange(pixels.shape[0])) / total
    cx = float(pixels.sum(axis=0) @ np.arange(pixels.shape[1])) / total
    canvas = Image.new("F", (SIZE, SIZE), 0.0)
    canvas.paste(Image.fromarray(pixels), (round(CENTRE - cx), round(CENTRE - cy)))  # clips at edges
    return Digit(np.rint(np.clip(np.asarray(canvas), 0, 255)).astype(np.uint8), notes)


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """`gray` in MNIST form (prepare's image)."""
    return prepare(gray).image


def resize(gray: np.ndarray, size: int = SIZE) -> np.ndarray:
    """A grayscale image (values 0-255) resized to size x size (Lanczos, antialiased), as uint8."""
    out = Image.fromarray(np.asarray(gray, np.float32)).resize((size, size), Image.Resampling.LANCZOS)
    return np.rint(np.clip(np.asarray(out), 0, 255)).astype(np.uint8)


def model_input(gray: np.ndarray, form: str) -> Digit:
    """`gray` (values 0-255) as the model's input: in MNIST's form (prepare), grayscale and resized (a model
    trained with target.preprocess: resize says so in its file), or as it is ("raw", predict --raw)."""
    if form == "mnist":
        return prepare(gray)
    if form == "resize":  # as the prepare stage makes them: any image, blank or not
        return Digit(resize(gray), [])
    if gray.shape != (SIZE, SIZE):
        raise InputError(f"is {gray.shape[1]}x{gray.shape[0]}, not {SIZE}x{SIZE} (without --raw it is resized)")
    if blank(gray):
        raise InputError(BLANK)
    return Digit(np.rint(gray).astype(np.uint8), [])


# --- files -> images -------------------------------------------------------------------------------------------


def files_under(folder: Path, unreadable: Callable[[OSError], object] | None = None, suffixes: tuple[str, ...] = (),
                follow_links: bool = False) -> list[Path]:
    """The files under `folder`, recursively, sorted by path, hidden names (".name") skipped; only names ending in
    one of `suffixes` (any letter case), if given. `follow_links`: through symlinked folders too, each real folder
    once. `unreadable(error)` is told of each folder that cannot be listed."""
    found, seen = [], set()
    for parent, dirs, names in os.walk(folder, onerror=unreadable, followlinks=follow_links):
        real = os.path.realpath(parent)
        if real in seen:  # a link back up the tree, or a second link to one folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # sorted: the same link wins on every machine
        found += [Path(parent, n) for n in names
                  if not n.startswith(".") and (not suffixes or n.lower().endswith(suffixes))]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def open_image(path) -> Image.Image:
    """The image in `path` (a path or a binary file), decoded (first frame, EXIF orientation applied); InputError for
    any problem."""
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own limit, process-wide: set where images are opened
    try:
        with warnings.catch_warnings():
            # Pillow warns past MAX_IMAGE_PIXELS and raises past twice that: both are an error here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise InputError(f"too large: {width}x{height} pixels, over the limit of {MAX_PIXELS} "
                                     "(a possible decompression bomb)")
                factor = -(-max(width, height) // (2 * WORK))  # to at most 2 * WORK pixels on the longer side
                if factor > 1:  # a JPEG decodes at 1/2, 1/4 or 1/8 scale, the smallest still this large
                    image.draft(None, (width // factor, height // factor))
                image.load()
                image = ImageOps.exif_transpose(image)
                factor = -(-max(image.size) // (2 * WORK))
                if factor <= 1:
                    return image
                # Image.reduce takes 8-bit and 32-bit modes: 16-bit as 32-bit, palettes and bilevel as their colours
                modes = {"P": "RGBA", "PA": "RGBA", "1": "L", "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}
                return image.convert(modes.get(image.mode, image.mode)).reduce(factor)
    except InputError:
        raise
    except UnidentifiedImageError as e:
        raise InputError("not an image (cannot identify image file)") from e
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{found.group(1)} pixels" if found else "too many pixels"
        raise InputError(f"too large: {size}, over the limit of {MAX_PIXELS} (a possible decompression bomb)") from e
    except OSError as e:
        reason = e.strerror if e.strerror else first_line(e)
        raise InputError(f"cannot read image ({reason})") from e
    except Exception as e:  # Pillow's decoders raise many types on corrupt data (SyntaxError, ValueError, ...)
        raise InputError(f"cannot read image ({type(e).__name__}: {first_line(e)})") from e

