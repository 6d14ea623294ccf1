"""predict: read handwritten digits with a trained model, from image files, folders of them or .npy arrays.

Usage: predict [--model models/transfer.keras] [--json] [--raw] [--min-confidence P] PATH...

Each PATH is an image (PNG, JPEG, WebP, BMP, GIF, TIFF, or anything else Pillow reads), a folder, or a .npy
array. A folder is searched recursively (symlinked folders too, each once), in sorted path order, for files of
every format Pillow opens and *.npy files (any letter case), skipping hidden names (".name") and other files. A
.npy array holds one image (28, 28) or a stack (N, 28, 28) (a trailing axis of 1 is allowed) of uint8 pixels, or
floats in [0, 255] (rounded; an array within [0, 1] is refused as fractions); its images are named file.npy[i].

Every image is first brought to 8-bit grayscale: colour by Pillow's luma, 16-bit by /257, a multi-frame
GIF/TIFF by its first frame, a JPEG turned by its EXIF orientation. Transparency is composited onto a backdrop:
when most of the image is transparent, the visible strokes are the digit and the backdrop is white for dark
strokes and black for light ones; otherwise the backdrop is the image's dominant (median) opaque grey.

Then, unless --raw, it is made the way MNIST was made. An image over 512 pixels on a side is first scaled down
(a JPEG decodes at a reduced scale). If the ink is darker than the outermost pixels' median (dark on light), the
image is inverted so the digit is light on dark. The paper's level is estimated at each pixel (a grey opening
half the image wide, smoothed: a shadow or a gradient is paper, not ink) and subtracted. The digit is the
largest connected mark of ink above Otsu's threshold, with every mark at least a quarter its size; other specks
and smudges are dropped. The contrast is stretched so the ink peaks at 255; the image is cropped to the
bounding box of the pixels above 1/5 of that peak, resized to fit 20x20 keeping its aspect ratio (Pillow,
Lanczos, antialiased), placed in a 28x28 black image and shifted so its centre of mass is at pixel (14, 14)
(where MNIST's digits have theirs). An image whose grey levels span fewer than 32 levels has no ink (blank).
--raw skips all of this for images already in MNIST form: 28x28, a light digit on black. A model trained on a
folder with params target.preprocess: resize (its file says so) gets its images grayscale and resized instead.

Output: a table (source, class, its probability, the runner-up and its probability, notes), one line per image,
or with --json one JSON object per line: {"source": path, "index": i or null, "label": k, "class": name,
"probability": p, "top3": [[k, p], ...], "warnings": [...]}. The class names are those the model file carries
(the pipeline's exports do; a plain Keras file is taken to read the digits 0-9). An answer to doubt is marked
"?" and its notes say why: a probability under --min-confidence (0.5 by default), an image too thin to hold a
digit, ink wider than a digit, or ink in many separate marks. An input that cannot be read or used (missing,
unreadable, truncated or empty file, not an image, more than 120 million pixels (a possible decompression bomb),
an array of the wrong shape or dtype, a blank image, a folder without images) gives one line on stderr,
"predict: <input>: <problem>", and the others are still predicted; the exit code is then 1. A model file that
is missing or not a Keras model stops the run with one line "error: predict: <file>: <problem>" and exit code 1
(TensorFlow is imported and the model loaded only once there is an image to predict). TLPIPE_DEBUG=1 adds
tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import traceback
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tlpipe.apps.images import SIZE, InputError, files_under, first_line, grayscale, model_input, open_image
from tlpipe.core.cli import DEBUG_ENV, run
from tlpipe.core.data import CLASS_NAMES
from tlpipe.core.errors import PipelineError

DEFAULT_MODEL = Path("models/transfer.keras")
DIGITS = CLASS_NAMES["mnist"]
BATCH = 1024  # images per model call
NPY_MAGIC = b"\x93NUMPY"


@dataclass
class Item:
    """One image to predict (`image`), or one input that failed (`problem`)."""

    source: str  # as shown: the path, or path[i] for an image of an array
    path: str  # the file (or folder) given or found
    index: int | None  # the image's index in its array, None for an image file or a single-image array
    image: np.ndarray | None = None  # (28, 28) uint8, MNIST form
    problem: str | None = None
    cause: BaseException | None = None
    notes: list[str] = field(default_factory=list)  # why the image may not be one digit (Digit.notes)


def read_array(path: Path, form: str) -> list[Item]:
    """The images of the .npy file `path` (one Item each, failed or not); InputError if the file is unusable."""
    name = str(path)
    try:
        # memory-mapped: the header's shape and dtype are checked before any pixel is read
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise InputError("holds Python objects (dtype object); predict loads numbers only") from e
        raise InputError(f"truncated or corrupt array ({first_line(e)})") from e
    except (OSError, EOFError) as e:
        raise InputError(f"cannot read array ({first_line(e)})") from e
    shape = array.shape
    if shape[-1:] == (1,) and len(shape) in (3, 4):
        array = array[..., 0]
    if array.shape[-2:] != (SIZE, SIZE) or array.ndim not in (2, 3):
        raise InputError(f"array of shape {shape}, not (N, {SIZE}, {SIZE}) or ({SIZE}, {SIZE})")
    if array.dtype != np.uint8:
        if array.dtype.kind != "f":
            raise InputError(f"array of dtype {array.dtype}, not uint8 or float (pixels 0-255)")
        if not np.isfinite(array).all():
            raise InputError("array has NaN or infinite values")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise InputError(f"float values {array.min():g} to {array.max():g} are outside [0, 255]")
        if array.size and 0 < array.max() <= 1:
            raise InputError("float values are within [0, 1]; predict wants pixels 0-255 (multiply by 255)")
        array = np.rint(array)
    single = array.ndim == 2
    stack = array[None] if single else array
    if not len(stack):
        raise InputError(f"array of shape {shape} holds no images")
    return [image_item(name if single else f"{name}[{i}]", name, None if single else i, image.astype(np.float32),
                       form) for i, image in enumerate(stack)]


def image_item(source: str, path: str, index: int | None, gray: np.ndarray, form: str) -> Item:
    """The Item of grayscale image `gray` (0-255) as the model's input, or a failed one."""
    try:
        digit = model_input(gray, form)
    except InputError as e:
        return Item(source, path, index, problem=str(e), cause=e)
    return Item(source, path, index, digit.image, notes=digit.notes)


def read_file(path: Path, form: str) -> list[Item]:
    """The image(s) in the file `path`; a failed Item for any problem."""
    name = str(path)
    try:
        if not path.is_file():
            raise InputError("not a regular file")
        try:
            with open(path, "rb") as f:
                head = f.read(len(NPY_MAGIC))
        except OSError as e:
            raise InputError(f"cannot read ({e.strerror or first_line(e)})") from e
        if not head:
            raise InputError("empty file (0 bytes)")
        if path.suffix.lower() == ".npz" or (path.suffix.lower() == ".npy" and head.startswith(b"PK")):
            raise InputError("a .npz archive; predict reads .npy files (one array saved with np.save)")
        if head == NPY_MAGIC:
            return read_array(path, form)
        if path.suffix.lower() == ".npy":
            raise InputError("not a .npy array (no NumPy header)")
        return [image_item(name, name, None, grayscale(open_image(path)), form)]
    except InputError as e:
        return [Item(name, name, None, problem=str(e), cause=e)]


# Raster formats a folder search takes (those of them this Pillow reads), with .npy: not Pillow's stubs, formats
# that need outside programs (EPS, WMF) or that name other data (HDF5's .h5, video)
FOLDER_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "TGA", "JPEG2000", "AVIF", "QOI", "PCX", "SGI"}


def folder_suffixes() -> tuple[str, ...]:
    """File name endings a folder search takes: FOLDER_FORMATS's, as Pillow registers them, and .npy."""
    Image.init()
    return (*sorted(ext for ext, fmt in Image.registered_extensions().items()
                    if fmt in FOLDER_FORMATS and fmt in Image.OPEN), ".npy")


def folder_files(folder: Path) -> tuple[list[Path], list[Item]]:
    """The image and .npy files under `folder` (recursive through symlinked folders too, each real folder once;
    sorted; hidden names skipped), and the folders that could not be read."""
    failed = []

    def unreadable(e: OSError) -> None:
        where = e.filename or str(folder)
        failed.append(Item(str(where), str(where), None, problem=f"cannot read folder ({e.strerror})", cause=e))

    return files_under(folder, unreadable, folder_suffixes(), follow_links=True), failed


def read_inputs(paths: Iterable[str], form: str = "mnist") -> list[Item]:
    """Every image of `paths`, in order, each as an Item (failed ones included)."""
    items = []
    for arg in paths:
        path = Path(arg)
        try:
            path.stat()
        except FileNotFoundError:
            items.append(Item(arg, arg, None, problem="no such file or folder"))
            continue
        except OSError as e:  # a name too long, a folder we may not enter, ...
            items.append(Item(arg, arg, None, problem=f"cannot read ({e.strerror})"))
            continue
        if path.is_dir():
            files, failed = folder_files(path)
            items += failed
            if not files and not failed:
                items.append(Item(arg, arg, None, problem="folder has no images (nor .npy arrays)"))
            for file in files:
                items += read_file(file, form)
        else:
            items += read_file(path, form)
    return items


# --- the model -------------------------------------------------------------------------------------------------


def check_model_file(path: Path) -> None:
    """Cheap checks before TensorFlow is imported: PipelineError naming `path` unless it looks like a .keras file."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise PipelineError(f"{path}: not a model file (a Keras 3 .keras file is needed)")
        with open(path, "rb") as f:
            head = f.read(8)
        is_zip = zipfile.is_zipfile(path)
    except FileNotFoundError:
        hint = "export one with `dvc repro export`, or pass --model"
        raise PipelineError(f"{path}: no such model file ({hint})") from None
    except OSError as e:
        raise PipelineError(f"{path}: cannot read the model file ({e.strerror})") from e
    if not is_zip:
        if head.startswith(b"\x89HDF"):
            raise PipelineError(f"{path}: an HDF5 file (weights?), not a Keras 3 .keras model")
        raise PipelineError(f"{path}: not a Keras model (a .keras file is a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as e:
        raise PipelineError(f"{path}: not a Keras model (corrupt zip archive: {first_line(e)})") from e
    if "config.json" not in names:
        raise PipelineError(f"{path}: not a Keras model (a zip archive without config.json)")
    if path.suffix != ".keras":
        raise PipelineError(f"{path}: Keras loads models only from files named *.keras; rename it")


def model_metadata(path: Path) -> dict:
    """What an exported model's metadata.json says ({} for a plain Keras file)."""
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read("metadata.json"))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def model_classes(path: Path) -> list[str] | None:
    """The class names an exported model carries (metadata.json's "classes"), or None for a plain Keras file."""
    classes = model_metadata(path).get("classes")
    return classes if isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes) else None


def model_form(path: Path) -> str:
    """How the model's training images were made: MNIST's form unless metadata.json's "preprocess" says resize."""
    return "resize" if model_metadata(path).get("preprocess") == "resize" else "mnist"


def load_model(path: Path, classes: int = 10):
    """The Keras model in `path` (safe mode, not compiled) with `classes` outputs; PipelineError if it is unusable."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # TensorFlow: the slow import, only once there is something to predict

    try:
        model = keras.models.load_model(path, compile=False)  # safe_mode=True: no code from the file runs
    except Exception as e:
        if os.environ.get(DEBUG_ENV):
            raise
        raise PipelineError(f"{path}: cannot load the Keras model ({first_line(e)[:300]})") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise PipelineError(f"{path}: the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs, not 1")
    shape = tuple(model.inputs[0].shape[1:])
    if shape not in ((SIZE, SIZE), (SIZE, SIZE, 1)):
        raise PipelineError(f"{path}: the model takes images of shape {shape}, not ({SIZE}, {SIZE}[, 1])")
    if model.outputs[0].shape[1:] != (classes,):
        raise PipelineError(f"{path}: the model outputs shape {tuple(model.outputs[0].shape[1:])}, not the "
                            f"({classes},) of its {classes} classes")
    return model


def predict(model, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, 10) of (N, 28, 28) uint8 `images`, in batches of BATCH."""
    spec = model.inputs[0]
    x = images.reshape((len(images), *spec.shape[1:])).astype(spec.dtype)
    return np.concatenate([np.asarray(model.predict_on_batch(x[i : i + BATCH]), np.float64)
                           for i in range(0, len(x), BATCH)])


# --- output ----------------------------------------------------------------------------------------------------


def warnings_of(item: Item, probs: np.ndarray, min_confidence: float) -> list[str]:
    """Why this answer may be wrong: a low probability, or an input that does not look like one digit."""
    low = [f"low confidence (under {min_confidence:.0%})"] if probs.max() < min_confidence else []
    return low + item.notes


def json_line(item: Item, probs: np.ndarray, classes: list[str], min_confidence: float) -> str:
    top = np.argsort(-probs, kind="stable")[:3]
    return json.dumps({"source": item.path, "index": item.index,
                       "label": int(top[0]), "class": classes[top[0]], "probability": round(float(probs[top[0]]), 6),
                       "top3": [[int(d), round(float(probs[d]), 6)] for d in top],
                       "warnings": warnings_of(item, probs, min_confidence)})


def table_line(item: Item, probs: np.ndarray, width: int, classes: list[str], min_confidence: float,
               name_width: int) -> str:
    first, second = np.argsort(-probs, kind="stable")[:2]
    notes = warnings_of(item, probs, min_confidence)
    mark = "?" if notes else " "
    line = (f"{item.source:<{width}}  {classes[first]:>{name_width}}{mark} {probs[first]:>6.1%}  "
            f"{classes[second]:>{max(name_width, 9)}}  {probs[second]:>6.1%}")
    return f"{line}  {'; '.join(notes)}".rstrip()


def write_results(items: list[Item], probs: np.ndarray, as_json: bool, classes: list[str],
                  min_confidence: float = 0.0) -> None:
    """Results to stdout and problems to stderr, in input order; an answer to doubt marked "?" (JSON: "warnings")."""
    done = [item for item in items if item.problem is None]
    width = max([len("source"), *(len(item.source) for item in done)])
    heading = "digit" if classes == DIGITS else "class"
    name_width = max(len(heading), *(len(c) for c in classes))
    if done and not as_json:
        print(f"{'source':<{width}}  {heading:>{name_width}}  {'prob':>6}  {'runner-up':>{max(name_width, 9)}}  "
              f"{'prob':>6}  notes")
    k = 0
    for item in items:
        if item.problem is not None:
            sys.stdout.flush()
            if os.environ.get(DEBUG_ENV) and item.cause is not None:
                traceback.print_exception(item.cause)
            print(f"predict: {item.source}: {item.problem}", file=sys.stderr, flush=True)
            continue
        print(json_line(item, probs[k], classes, min_confidence) if as_json
              else table_line(item, probs[k], width, classes, min_confidence, name_width))
        k += 1
    sys.stdout.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="predict", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read handwritten digits in images, folders of images and .npy arrays.",
        epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image file, folder of images, or .npy array")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help=f"Keras 3 .keras file (default {DEFAULT_MODEL})")
    parser.add_argument("--json", action="store_true", help="one JSON object per image per line")
    parser.add_argument("--raw", action="store_true", help="images are already in MNIST form: no preprocessing")
    parser.add_argument("--min-confidence", type=probability, default=0.5, metavar="P",
                        help="mark answers whose probability is under P with '?' (default 0.5)")
    return parser.parse_args(argv)


def probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text}")
    return value


def predict_main(argv: list[str] | None = None) -> int:
    """The command without its error handling (`main` adds it); returns the exit code."""
    args = parse_args(argv)
    check_model_file(args.model)
    classes = model_classes(args.model) or DIGITS  # a plain Keras file: assumed to read digits
    items = read_inputs(args.paths, "raw" if args.raw else model_form(args.model))
    good = [item for item in items if item.problem is None]
    probs = np.zeros((0, len(classes)))
    if good:
        model = load_model(args.model, len(classes))
        probs = predict(model, np.stack([item.image for item in good]))
    try:
        write_results(items, probs, args.json, classes, args.min_confidence)
    except BrokenPipeError:  # `predict ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 1 if len(good) < len(items) else 0


def main() -> None:
    """Console-script entry point: `predict`, or `python -m tlpipe.apps.predict`."""
    for stream in (sys.stdout, sys.stderr):  # a file name that is not valid UTF-8 must not lose the whole table
        stream.reconfigure(errors="backslashreplace")

    def command() -> None:
        try:
            code = predict_main()
        except Exception as e:  # never a traceback for the user (TLPIPE_DEBUG=1 shows it)
            if isinstance(e, PipelineError) or os.environ.get(DEBUG_ENV):
                raise
            raise PipelineError(f"unexpected {type(e).__name__}: {first_line(e)}") from e
        if code:
            sys.exit(code)

    run(command)


if __name__ == "__main__":
    main()
