"""predict: digits from image files, folders and .npy arrays, through a tiny model trained on rendered digits.

The model trains once per session for a few seconds on digits drawn with Pillow's default font at random sizes,
stroke widths, angles and positions, brought to MNIST form by predict's own preprocessing, so that training data
and preprocessed inputs share one distribution. The end-to-end cases run
`python -m tlpipe.apps.predict` in a subprocess.
That preprocessing itself is checked against real MNIST digits (from $DATA_MIRROR), not against its own output.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw, ImageFont

from tests.support import ROOT, tiny_params
from tlpipe.apps.images import INK, WORK, InputError, composite, grayscale, open_image, prepare, to_mnist
from tlpipe.apps.predict import folder_files, load_model, predict, predict_main
from tlpipe.core.data import CLASS_NAMES, parse_idx
from tlpipe.core.errors import PipelineError
from tlpipe.core.io import reproducible_zip
from tlpipe.core.model import build_model
from tlpipe.core.params import load_params

N_TEST = 200  # MNIST-form test images written as PNGs
KEYS = {"source", "index", "label", "class", "probability", "top3", "warnings"}


# --- rendered digits -------------------------------------------------------------------------------------------


@functools.cache
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def render(digit: int, size: int = 32, stroke: int = 1, angle: float = 0.0, centre=(32, 32), canvas=(64, 64),
           ink=255, paper=0, mode: str = "L") -> Image.Image:
    """`digit` in Pillow's default font, drawn at `centre` of a `canvas` of `paper` in `ink`."""
    image = Image.new(mode, canvas, paper)
    ImageDraw.Draw(image).text(centre, str(digit), fill=ink, font=font(size), anchor="mm", stroke_width=stroke,
                               stroke_fill=ink)
    if angle:
        image = image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=paper)
    return image


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.float32)


def digits(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) uint8 MNIST-form renderings of random size, stroke, angle and position, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    rng.shuffle(labels)
    images = [render(int(d), int(rng.integers(20, 44)), int(rng.integers(0, 3)), float(rng.uniform(-12, 12)),
                     (int(rng.integers(26, 39)), int(rng.integers(26, 39)))) for d in labels]
    return np.stack([to_mnist(as_array(image)) for image in images]), labels


def canonical(digit: int) -> np.ndarray:
    return to_mnist(as_array(render(digit)))


# --- fixtures: the model and the inputs, made once -----------------------------------------------------------------


@pytest.fixture(scope="session")
def work(tmp_path_factory, mirror) -> Path:
    """A folder with tiny.keras (input (28, 28, 1) floats, as build_model makes it) and tiny_uint8.keras (input
    (28, 28) uint8, as the export stage writes models/transfer.keras), trained for a few seconds."""
    root = tmp_path_factory.mktemp("predict")
    raw = tiny_params(mirror[1])
    raw["model"]["head_dense"] = 32  # 8 units learn 10 digits too slowly for a few seconds of training
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(root / "params.yaml")
    x, y = digits(150, seed=0)
    keras.utils.set_random_seed(0)
    model = build_model("target", params.model, params.base.image_size)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x[..., None].astype("float32"), y, epochs=6, batch_size=32, verbose=0)
    inputs = keras.Input((28, 28), dtype="uint8", name="image")
    uint8_model = keras.Model(inputs, model(keras.layers.Reshape((28, 28, 1))(inputs)))
    with warnings.catch_warnings():  # Keras' saving calls np.array on variables, which NumPy 2 warns about
        warnings.simplefilter("ignore", DeprecationWarning)
        model.save(root / "tiny.keras")
        uint8_model.save(root / "tiny_uint8.keras")
    return root


@pytest.fixture(scope="session")
def recognised(work) -> list[int]:
    """The digits whose canonical rendering the tiny model reads right."""
    model = load_model(work / "tiny.keras")
    labels = predict(model, np.stack([canonical(d) for d in range(10)])).argmax(axis=1)
    right = [d for d in range(10) if labels[d] == d]
    assert len(right) >= 8, f"the tiny model reads only {right} right"
    return right


@pytest.fixture(scope="session")
def mnist_inputs(work) -> np.ndarray:
    """N_TEST MNIST-form images as mnist/000.png ... and as mnist.npy."""
    images, _ = digits(N_TEST // 10, seed=1)
    (work / "mnist").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(work / "mnist" / f"{i:03d}.png")
    np.save(work / "mnist.npy", images)
    return images


def variant_files(folder: Path, digit: int) -> list[Path]:
    """`digit` drawn as canonically but off-centre, small, large and dark on light, in other modes and formats."""
    folder.mkdir(exist_ok=True)
    files = {}
    files["offcentre.png"] = render(digit, centre=(130, 26), canvas=(160, 120))
    files["small.bmp"] = render(digit, size=18, stroke=0, centre=(20, 50), canvas=(90, 70))
    files["dark.png"] = render(digit, size=120, stroke=4, centre=(150, 120), canvas=(300, 240), ink=40, paper=225)
    files["dark.jpg"] = render(digit, size=64, stroke=2, centre=(70, 60), canvas=(140, 120), ink=(30, 30, 60),
                               paper=(240, 235, 220), mode="RGB")
    files["rgba.png"] = render(digit, size=48, stroke=1, centre=(50, 50), canvas=(100, 100), ink=(20, 20, 120, 255),
                               paper=(0, 0, 0, 0), mode="RGBA")
    files["palette.png"] = render(digit, size=40, centre=(40, 40), canvas=(80, 80), ink=(250, 200, 40),
                                  paper=(10, 40, 90), mode="RGB").convert("P", palette=Image.Palette.ADAPTIVE,
                                                                            colors=8)
    files["palette.gif"] = render(digit, size=40, centre=(45, 40), canvas=(90, 80), ink=0, paper=255)
    light16 = (np.asarray(render(digit, size=48, centre=(40, 40), canvas=(80, 80))).astype(np.uint16) * 257)
    files["16bit.png"] = Image.fromarray(light16)
    files["16bit.tif"] = Image.fromarray((65535 - light16).astype(np.uint16))  # dark on light
    paths = []
    for name, image in files.items():
        path = folder / f"{digit}_{name}"
        image.save(path, quality=90) if name.endswith(".jpg") else image.save(path)
        paths.append(path)
    return paths


def run_predict(cwd: Path, *args: str, process: bool = False) -> subprocess.CompletedProcess:
    """`predict ARGS` in `cwd`: its main() in this process (stdout and stderr captured), or with `process` as a user
    runs it, `python -m tlpipe.apps.predict` (no TF_CPP_MIN_LOG_LEVEL: predict sets it)."""
    if process:
        env = {k: v for k, v in os.environ.items() if k not in ("TLPIPE_DEBUG", "TF_CPP_MIN_LOG_LEVEL")}
        env["PYTHONPATH"] = str(ROOT)
        return subprocess.run([sys.executable, "-m", "tlpipe.apps.predict", *args], cwd=cwd, env=env,
                              capture_output=True, text=True)
    from tlpipe.apps import predict as command

    streams = [io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True) for _ in range(2)]
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # cli.run sets its own
    here, argv, code = os.getcwd(), sys.argv, 0
    try:
        os.chdir(cwd)
        sys.argv = ["predict", *args]
        with contextlib.redirect_stdout(streams[0]), contextlib.redirect_stderr(streams[1]):
            try:
                command.main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        os.chdir(here)
        sys.argv = argv
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    out, err = (s.buffer.getvalue().decode() for s in streams)
    return subprocess.CompletedProcess(["predict", *args], code, out, err)


def json_results(result: subprocess.CompletedProcess) -> list[dict]:
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    for row in rows:
        assert set(row) == KEYS, row
        assert len(row["top3"]) == 3
        assert row["top3"][0] == [row["label"], row["probability"]]
        assert row["top3"][0][1] >= row["top3"][1][1] >= row["top3"][2][1]
        assert 0 <= row["probability"] <= 1 and row["label"] in range(10)
    return rows


@pytest.fixture(scope="session")
def raw_run(work, mnist_inputs) -> subprocess.CompletedProcess:
    """--raw --json on the PNG folder and the .npy of the same images."""
    return run_predict(work, "--model", "tiny.keras", "--raw", "--json", "mnist", "mnist.npy", process=True)


@pytest.fixture(scope="session")
def variants(work, recognised) -> list[tuple[int, Path]]:
    return [(d, path) for d in recognised for path in variant_files(work / "variants", d)]


@pytest.fixture(scope="session")
def preprocessed_run(work, mnist_inputs, variants) -> subprocess.CompletedProcess:
    """--json with preprocessing, on the PNG folder and the variants (good inputs only), with the uint8 model."""
    return run_predict(work, "--model", "tiny_uint8.keras", "--json", "mnist",
                       *(str(p.relative_to(work)) for _, p in variants), process=True)


# --- end to end ----------------------------------------------------------------------------------------------


def test_raw_pngs_predict_exactly_as_the_same_raw_array(raw_run):
    assert raw_run.returncode == 0, raw_run.stderr
    assert raw_run.stderr == ""
    rows = json_results(raw_run)
    assert len(rows) == 2 * N_TEST
    pngs, arrays = rows[:N_TEST], rows[N_TEST:]
    assert [r["source"] for r in pngs] == [f"mnist/{i:03d}.png" for i in range(N_TEST)]  # sorted folder order
    assert all(r["index"] is None for r in pngs)
    assert [(r["source"], r["index"]) for r in arrays] == [("mnist.npy", i) for i in range(N_TEST)]
    assert [r["label"] for r in pngs] == [r["label"] for r in arrays]
    np.testing.assert_allclose([r["probability"] for r in pngs], [r["probability"] for r in arrays], atol=1e-5)


def test_tiny_model_reads_its_own_test_digits(raw_run, mnist_inputs):
    _, labels = digits(N_TEST // 10, seed=1)
    predicted = np.array([r["label"] for r in json_results(raw_run)[:N_TEST]])
    assert (predicted == labels).mean() >= 0.9


def test_preprocessing_mnist_form_pngs_keeps_their_predictions(raw_run, preprocessed_run):
    assert preprocessed_run.returncode == 0, preprocessed_run.stderr
    assert preprocessed_run.stderr == ""  # no TensorFlow notices either
    raw = [r["label"] for r in json_results(raw_run)[:N_TEST]]
    rows = json_results(preprocessed_run)[:N_TEST]
    assert [r["source"] for r in rows] == [f"mnist/{i:03d}.png" for i in range(N_TEST)]
    agree = np.mean([r["label"] == label for r, label in zip(rows, raw, strict=True)])
    assert agree >= 0.99


def test_off_centre_small_inverted_and_other_formats_are_recognised(preprocessed_run, variants, work):
    rows = json_results(preprocessed_run)[N_TEST:]
    assert [r["source"] for r in rows] == [str(p.relative_to(work)) for _, p in variants]
    wrong = [(r["source"], r["label"]) for (digit, _), r in zip(variants, rows, strict=True) if r["label"] != digit]
    assert not wrong


def bad_inputs(folder: Path, good: Image.Image, digit: int) -> list[tuple[str, str, str]]:
    """Write one input of each kind of problem into `folder` (and some good ones); return, in order, the
    arguments to pass and, for each failing input, (argument, name shown, fragment of its message)."""
    folder.mkdir()
    good.save(folder / "good.png")
    png = io.BytesIO()
    good.save(png, "PNG")
    (folder / "zero.png").write_bytes(b"")
    (folder / "notes.png").write_text("not a picture\n")
    (folder / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    Image.new("1", (11000, 11000)).save(folder / "huge.png")  # over 120 million pixels: Pillow's warning
    Image.new("1", (15600, 15600)).save(folder / "bomb.png")  # over twice the limit: Pillow's error
    Image.new("L", (50, 40), 255).save(folder / "blank.png")
    np.save(folder / "shape.npy", np.zeros((5, 32, 32), np.uint8))
    np.save(folder / "dtype.npy", np.zeros((3, 28, 28), np.int64))
    np.save(folder / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (folder / "fake.npy").write_text("0 1 2\n")
    np.save(folder / "fractions.npy", np.full((2, 28, 28), 0.5, np.float32))
    np.save(folder / "mixed.npy", np.stack([canonical(digit), np.zeros((28, 28), np.uint8), canonical(digit)]))
    (folder / "empty").mkdir()
    (folder / "nested" / "deeper").mkdir(parents=True)
    good.save(folder / "nested" / "deeper" / "ok.png")
    jpeg = io.BytesIO()
    good.save(jpeg, "JPEG")
    (folder / "nested" / "broken.jpg").write_bytes(jpeg.getvalue()[:300])
    (folder / "nested" / "README.txt").write_text("skipped: not an image name")
    failing = [
        ("missing.png", "missing.png", "no such file or folder"),
        ("zero.png", "zero.png", "empty file"),
        ("notes.png", "notes.png", "not an image (cannot identify image file)"),
        ("truncated.png", "truncated.png", "cannot read image"),
        ("huge.png", "huge.png", "too large"),
        ("bomb.png", "bomb.png", "too large"),
        ("blank.png", "blank.png", "blank"),
        ("shape.npy", "shape.npy", "array of shape (5, 32, 32)"),
        ("dtype.npy", "dtype.npy", "dtype int64"),
        ("objects.npy", "objects.npy", "Python objects"),
        ("fake.npy", "fake.npy", "not a .npy array"),
        ("fractions.npy", "fractions.npy", "within [0, 1]"),
        ("mixed.npy", "mixed.npy[1]", "blank"),
        ("empty", "empty", "folder has no images"),
        ("nested", "nested/broken.jpg", "cannot read image"),
    ]
    if os.geteuid() != 0:  # root reads any file
        good.save(folder / "locked.png")
        (folder / "locked.png").chmod(0)
        failing.append(("locked.png", "locked.png", "cannot read"))
    return failing


def test_each_bad_input_gives_one_line_and_the_rest_are_predicted(work, recognised):
    digit = recognised[0]
    failing = bad_inputs(work / "bad", render(digit, ink=0, paper=255), digit)
    result = run_predict(work / "bad", "--model", "../tiny.keras", "good.png", *(arg for arg, _, _ in failing))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(failing), result.stderr
    for line, (_, name, fragment) in zip(lines, failing, strict=True):
        assert line.startswith(f"predict: {name}: "), line
        assert fragment in line, line
    table = result.stdout.splitlines()
    assert table[0].split() == ["source", "digit", "prob", "runner-up", "prob", "notes"]
    rows = [line.split() for line in table[1:]]
    assert [row[0] for row in rows] == ["good.png", "mixed.npy[0]", "mixed.npy[2]", "nested/deeper/ok.png"]
    assert all(row[1] == str(digit) and row[3] != row[1] for row in rows), result.stdout
    assert all(row[2].endswith("%") and row[4].endswith("%") for row in rows)


def test_good_inputs_only_exit_0_and_bad_ones_without_tensorflow_still_fail_fast(work):
    result = run_predict(work, "--model", "tiny.keras", "nowhere.png", "nothing.npy", process=True)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["predict: nowhere.png: no such file or folder",
                                          "predict: nothing.npy: no such file or folder"]


@pytest.mark.parametrize(("content", "fragment"), [
    (None, "no such model file"),
    (b"hello", "not a Keras model"),
    (b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, "HDF5 file"),
    ("zip", "without config.json"),
])
def test_a_model_that_is_not_a_keras_file_gives_one_line(work, content, fragment):
    folder = work / f"model-{fragment.replace(' ', '-')}"
    folder.mkdir()
    render(1).save(folder / "one.png")
    model = folder / "model.keras"
    if content == "zip":
        with zipfile.ZipFile(model, "w") as archive:
            archive.writestr("weights.h5", b"")
    elif content is not None:
        model.write_bytes(content)
    args = ("one.png",) if content is None else ("--model", "model.keras", "one.png")  # default: models/transfer.keras
    result = run_predict(folder, *args)
    assert result.returncode == 1
    assert result.stdout == ""
    name = "model.keras" if content else "models/transfer.keras"
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: predict: {name}: ") and fragment in result.stderr, result.stderr


def test_help_is_fast_without_tensorflow():
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "tlpipe.apps.predict", "--help"], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0 and result.stdout.startswith("usage: predict")
    probe = "import sys, tlpipe.apps.predict; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env).stdout == "[]\n"


# --- in process: the model loader and the preprocessing ---------------------------------------------------------


def test_broken_keras_archive_is_one_pipeline_error(work, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    render(1).save("one.png")
    with zipfile.ZipFile("broken.keras", "w") as archive:
        archive.writestr("config.json", "{not json")
    with pytest.raises(PipelineError, match=r"^broken.keras: cannot load the Keras model \("):
        predict_main(["--model", "broken.keras", "one.png"])


def test_float_and_uint8_models_predict_alike(work, mnist_inputs):
    probs = [predict(load_model(work / name), mnist_inputs[:50]) for name in ("tiny.keras", "tiny_uint8.keras")]
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-5)


def test_to_mnist_fits_20x20_and_centres_the_mass():
    for image in (render(1, size=60, canvas=(200, 100), centre=(30, 50)), render(7, angle=10), render(0)):
        out = to_mnist(as_array(image)).astype(np.float64)
        rows, cols = np.flatnonzero((out > INK * 255).any(1)), np.flatnonzero((out > INK * 255).any(0))
        assert 19 <= max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 21
        total = out.sum()
        assert abs(out.sum(1) @ np.arange(28) / total - 14) <= 0.5
        assert abs(out.sum(0) @ np.arange(28) / total - 14) <= 0.5
        assert out.max() == 255


@pytest.fixture(scope="module")
def real_digits() -> np.ndarray:
    """MNIST's first 300 training images, from the offline mirror ($DATA_MIRROR, as `.ci/run` sets it): the
    form that to_mnist must produce, checked against MNIST itself rather than against renderings that went
    through to_mnist (which the tiny model is trained on)."""
    mirror = os.environ.get("DATA_MIRROR")
    if not mirror:
        pytest.skip("needs DATA_MIRROR (the offline mirror), e.g. DATA_MIRROR=../shared/datasets")
    path = ROOT / mirror / "mnist" / "train-images-idx3-ubyte.gz"  # relative to the project, as the stages read it
    if not path.is_file():
        pytest.fail(f"DATA_MIRROR={mirror}: {path} is missing")
    return parse_idx(gzip.decompress(path.read_bytes()), 3, path.name)[:300]


def test_to_mnist_leaves_real_mnist_digits_as_they_are(real_digits):
    # MNIST's digits already fit 20x20 with their centre of mass at (14, 14): preprocessing must not move them.
    # Measured: 98.7 % within a mean of 1 grey level (median 0); a 22- or 18-pixel box, or a centre 1 pixel
    # off, puts none of them there.
    diffs = [np.abs(to_mnist(x.astype(np.float32)).astype(int) - x).mean() for x in real_digits]
    assert np.mean(np.array(diffs) <= 1.0) >= 0.95


def test_to_mnist_brings_moved_scaled_inverted_real_digits_back(real_digits):
    rng = np.random.default_rng(0)
    correlations = []
    for x in real_digits:
        k = int(rng.integers(2, 6))
        canvas = Image.new("L", (28 * k + 90, 28 * k + 60), 0)
        canvas.paste(Image.fromarray(x).resize((28 * k, 28 * k), Image.Resampling.BILINEAR),
                     (int(rng.integers(0, 90)), int(rng.integers(0, 60))))
        out = to_mnist(255 - np.asarray(canvas, np.float32))  # dark on light, off-centre, 2-5x larger
        correlations.append(np.corrcoef(out.ravel(), x.ravel())[0, 1])
    assert np.mean(correlations) >= 0.9  # measured 0.946; the canvas merely resized to 28x28: 0.03


def test_to_mnist_inverts_dark_on_light_and_stretches_contrast():
    light = to_mnist(as_array(render(4)))
    np.testing.assert_array_equal(to_mnist(as_array(render(4, ink=0, paper=255))), light)
    faint = to_mnist(as_array(render(4, ink=60, paper=190))).astype(int)
    assert np.abs(faint - light).max() <= 8 and np.abs(faint - light).mean() < 1


def test_to_mnist_refuses_blank_images():
    for gray in (np.zeros((28, 28)), np.full((40, 30), 200.0), np.full((10, 10), 100.0) + np.eye(10) * 20):
        with pytest.raises(InputError, match="blank"):
            to_mnist(gray)


def test_grayscale_scales_16_bit_and_composites_transparency():
    values = np.arange(256, dtype=np.uint16).reshape(16, 16)
    np.testing.assert_array_equal(grayscale(Image.fromarray(values * 257)), values)
    dark_on_clear = render(2, ink=(0, 0, 0, 255), paper=(0, 0, 0, 0), mode="RGBA")
    gray = composite(dark_on_clear)
    assert np.median(gray) == 255 and gray.min() == 0  # a white backdrop for dark strokes
    light_on_clear = render(2, ink=(255, 255, 255, 255), paper=(255, 255, 255, 0), mode="RGBA")
    assert np.median(composite(light_on_clear)) == 0  # a black one for light strokes
    np.testing.assert_array_equal(to_mnist(grayscale(dark_on_clear)), to_mnist(as_array(render(2))))


# --- photos and odd inputs, generated ------------------------------------------------------------------------------


def photo(digit: int, slope: float, noise: float, seed: int = 0, canvas=(480, 360)) -> np.ndarray:
    """`digit` as a phone might see it: dark ink on paper lit unevenly (a light gradient of `slope` grey levels
    across the sheet, darker to the right and down) with sensor noise of `noise` grey levels."""
    sheet = as_array(render(digit, size=200, stroke=6, centre=(canvas[0] // 2, canvas[1] // 2), canvas=canvas,
                            ink=0, paper=255))
    rows, cols = np.mgrid[0 : canvas[1], 0 : canvas[0]]
    light = 1 - slope / 255 * (0.7 * cols / canvas[0] + 0.3 * rows / canvas[1])
    noisy = sheet * light + np.random.default_rng(seed).normal(0, noise, sheet.shape)
    return np.clip(noisy, 0, 255).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


@pytest.mark.parametrize("slope", [90, 150])
@pytest.mark.parametrize("digit", [2, 7])
def test_an_unevenly_lit_noisy_photo_gives_the_digit_of_the_clean_scan(digit, slope):
    """A gradient is paper, not ink: taken as one background level, the shadowed side of the sheet became part of
    the digit (what made predict read a 7 as a 3)."""
    clean = to_mnist(photo(digit, 0, 0))
    prepared = prepare(photo(digit, slope, 8))
    assert similarity(prepared.image, clean) > 0.9
    assert prepared.notes == []


def test_specks_and_smudges_beside_the_digit_are_dropped():
    sheet = photo(4, 0, 0)
    rng = np.random.default_rng(1)
    for y, x in rng.integers(5, 60, (12, 2)):  # dust in a corner, far from the digit
        sheet[y : y + 3, x : x + 3] = 0
    sheet[300:340, 20:60] = 90  # a smudge
    assert similarity(to_mnist(sheet), to_mnist(photo(4, 0, 0))) > 0.97


@pytest.mark.parametrize(("image", "note"), [
    (np.pad(np.full((1, 300), 0.0), ((1, 1), (350, 350)), constant_values=255), "too thin to hold a digit"),
    (np.pad(np.full((12, 160), 0.0), ((60, 60), (40, 40)), constant_values=255), "wider than a digit"),
    (np.kron(np.random.default_rng(2).random((12, 16)) < 0.15, np.ones((10, 10))) * 255.0, "many separate marks"),
])
def test_inputs_that_do_not_look_like_one_digit_are_noted(image, note):
    notes = prepare(image.astype(np.float32)).notes
    assert any(note in n for n in notes), notes


def test_a_digit_is_noted_for_nothing():
    for digit in range(10):
        assert prepare(as_array(render(digit, ink=0, paper=255))).notes == [], digit


def test_a_48_megapixel_photo_is_read_at_a_reduced_scale(tmp_path):
    big = Image.fromarray(photo(7, 60, 4, canvas=(8000, 6000)).astype(np.uint8))
    big.save(tmp_path / "phone.jpg", quality=85)
    opened = open_image(tmp_path / "phone.jpg")
    assert opened.size == (1000, 750)  # decoded at 1/8 scale by the JPEG decoder, not decoded whole and reduced
    assert similarity(to_mnist(grayscale(opened)), to_mnist(photo(7, 0, 0))) > 0.85


def test_folders_take_every_format_pillow_opens_and_follow_symlinked_folders(tmp_path):
    image = render(3)
    (tmp_path / "real").mkdir()
    image.save(tmp_path / "real" / "a.webp")
    image.save(tmp_path / "real" / "b.ppm")
    (tmp_path / "top").mkdir()
    image.save(tmp_path / "top" / "c.PNG")
    (tmp_path / "top" / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "top" / "loop").symlink_to(tmp_path / "top", target_is_directory=True)  # a cycle: read once
    files, failed = folder_files(tmp_path / "top")
    assert failed == []
    assert [p.relative_to(tmp_path / "top").as_posix() for p in files] == ["c.PNG", "linked/a.webp", "linked/b.ppm"]


def test_a_file_name_that_is_not_utf8_loses_nothing(work, recognised):
    folder = work / "names"
    folder.mkdir()
    render(recognised[0]).save(os.path.join(os.fsencode(folder), b"caf\xe9.png"))
    render(recognised[0]).save(folder / "plain.png")
    env = {k: v for k, v in os.environ.items() if k != "TLPIPE_DEBUG"} | {"PYTHONPATH": str(ROOT),
                                                                          "LC_ALL": "C.UTF-8", "LANG": "en_US.UTF-8"}
    result = subprocess.run([sys.executable, "-m", "tlpipe.apps.predict", "--model", "../tiny.keras", "."], cwd=folder,
                            env=env, capture_output=True)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.decode().splitlines()[1:]
    assert len(rows) == 2 and rows[0].startswith("caf\\udce9.png") and rows[1].startswith("plain.png")


def test_the_model_says_what_it_classifies(work, recognised):
    clothes = work / "clothes.keras"
    shutil.copy(work / "tiny.keras", clothes)
    reproducible_zip(clothes, {"classes": CLASS_NAMES["fashion_mnist"]})
    render(recognised[0]).save(work / "one.png")
    result = run_predict(work, "--model", "clothes.keras", "--json", "one.png")
    assert result.returncode == 0, result.stderr
    (row,) = json_results(result)
    assert row["class"] == CLASS_NAMES["fashion_mnist"][row["label"]]
    table = run_predict(work, "--model", "clothes.keras", "one.png").stdout.splitlines()
    assert table[0].split()[:2] == ["source", "class"] and CLASS_NAMES["fashion_mnist"][row["label"]] in table[1]


def test_low_confidence_answers_are_marked(work, recognised):
    render(recognised[0]).save(work / "sure.png")
    result = run_predict(work, "--model", "tiny.keras", "--min-confidence", "1", "sure.png")
    assert result.returncode == 0, result.stderr
    row = result.stdout.splitlines()[1]
    assert "?" in row and "low confidence (under 100%)" in row
    (record,) = json_results(run_predict(work, "--model", "tiny.keras", "--min-confidence", "1", "--json", "sure.png"))
    assert record["warnings"] == ["low confidence (under 100%)"]
    bad = run_predict(work, "--model", "tiny.keras", "--min-confidence", "nan", "sure.png")
    assert bad.returncode == 2 and "must be a probability in [0, 1]" in bad.stderr


@pytest.mark.parametrize("mode", ["I;16", "P", "1"])
def test_large_images_of_every_mode_are_reduced(tmp_path, mode):
    sheet = Image.fromarray(photo(5, 0, 0, canvas=(2600, 2100)).astype(np.uint8))
    image = sheet.convert("I").point(lambda v: v * 257).convert("I;16") if mode == "I;16" else sheet.convert(mode)
    image.save(tmp_path / "big.png")
    opened = open_image(tmp_path / "big.png")
    assert max(opened.size) <= 2 * WORK
    assert similarity(to_mnist(grayscale(opened)), to_mnist(photo(5, 0, 0))) > 0.85


def test_a_folder_skips_files_pillow_only_names(tmp_path):
    render(3).save(tmp_path / "digit.png")
    (tmp_path / "weights.named.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    (tmp_path / "clip.mpg").write_bytes(b"\x00\x00\x01\xba")
    files, _ = folder_files(tmp_path)
    assert [p.name for p in files] == ["digit.png"]


def test_a_model_trained_on_resized_images_gets_resized_images(tmp_path):
    """An export whose metadata says preprocess: resize (target.preprocess) is fed images grayscale and resized,
    polarity kept; any other model file gets MNIST's form."""
    import zipfile

    from tlpipe.apps.images import model_input
    from tlpipe.apps.predict import model_form

    for preprocess, expected in (("resize", "resize"), ("mnist", "mnist"), (None, "mnist")):
        path = tmp_path / f"{preprocess}.keras"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("metadata.json", json.dumps({"classes": ["a", "b"]} | (
                {"preprocess": preprocess} if preprocess else {})))
        assert model_form(path) == expected
    paper = np.full((40, 50), 230.0, np.float32)
    paper[10:30, 20:24] = 20.0  # a dark bar on light paper
    resized = model_input(paper, "resize").image
    assert resized.shape == (28, 28) and resized[0, 0] > 200 and resized.min() < 60  # light paper stays light
    assert model_input(np.full((40, 50), 128.0, np.float32), "resize").image.shape == (28, 28)  # as prepare takes it
    mnist = model_input(paper, "mnist").image
    assert mnist[0, 0] == 0 and mnist.max() == 255  # MNIST's form: light ink on black
