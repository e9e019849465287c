"""Property-based tests (hypothesis) of everything that reads user files: the image loader, the
rain-dataset layout detection on random folder trees, and the CLI on folders of random files.
Whatever the bytes or the tree, the outcome is an array, a pair list, or a one-line user error."""

import io
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the dev extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from spikeir.data import ImageReadError, read_image  # noqa: E402
from spikeir.rain import find_rain_pairs  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXTS = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".txt", ""]


def _png(h: int, w: int, mode: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    shape = {"L": (h, w), "RGB": (h, w, 3), "RGBA": (h, w, 4), "I;16": (h, w)}[mode]
    arr = rng.integers(0, 65535 if mode == "I;16" else 255, shape).astype(np.uint16 if mode == "I;16" else np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")  # the mode follows the array (uint16 -> I;16)
    return buf.getvalue()


# random bytes, real images, and real images cut short or with flipped bytes
file_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(_png, st.integers(1, 12), st.integers(1, 12), st.sampled_from(["L", "RGB", "RGBA", "I;16"]),
              st.integers(0, 99)),
    st.builds(lambda b, k: b[: max(0, len(b) - k)], st.builds(_png, st.just(8), st.just(8), st.just("RGB"),
                                                              st.just(0)), st.integers(1, 80)),
    st.builds(lambda b, i: b[:i] + bytes([b[i] ^ 0xFF]) + b[i + 1:],
              st.builds(_png, st.just(8), st.just(8), st.just("L"), st.just(1)), st.integers(0, 60)),
)


@SETTINGS
@given(data=file_bytes, ext=st.sampled_from(EXTS), gray=st.sampled_from([None, True, False]))
def test_read_image_returns_uint8_or_a_named_error(data, ext, gray):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"in put ü{ext}"  # spaces and unicode in the name
        p.write_bytes(data)
        try:
            img = read_image(p, gray=gray)
        except ImageReadError as e:
            msg = str(e)
            assert p.name in msg and "\n" not in msg
            return
        assert img.dtype == np.uint8 and img.ndim in (2, 3) and min(img.shape[:2]) >= 1
        if img.ndim == 3:
            assert img.shape[2] == 3
        if gray is True:
            assert img.ndim == 2
        if gray is False:
            assert img.ndim == 3


names = st.sampled_from(["input", "target", "rain", "norain", "X2", "rainy", "rainy_image", "ground_truth", "a",
                         "rain-1.png", "norain-1.png", "rain-001.png", "norain-2.png", "1.png", "1_1.jpg",
                         "x.txt", "list.txt"])
trees = st.lists(st.lists(names, min_size=1, max_size=3), max_size=8)


@SETTINGS
@given(tree=trees, layout=st.sampled_from([None, "input_target", "prenet_test", "prenet_train", "rain200", "ddn",
                                           "side_by_side", "list"]), valid=st.booleans())
def test_layout_detection_on_random_trees_gives_pairs_or_a_one_line_error(tree, layout, valid):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for parts in tree:
            p = root.joinpath(*parts)
            try:
                if p.suffix:
                    p.parent.mkdir(parents=True, exist_ok=True)
                    if not p.exists():
                        p.write_bytes(_png(4, 4, "RGB", 0) if valid and p.suffix != ".txt" else b"not an image")
                elif not p.exists():
                    p.mkdir(parents=True, exist_ok=True)
            except OSError:  # a name used as both file and folder in this random tree: keep the first
                continue
        try:
            found, pairs = find_rain_pairs(root, layout)
        except (ValueError, FileNotFoundError) as e:
            assert "\n" not in str(e) and str(e)
            return
        assert pairs and (layout is None or found == layout)
        for pair in pairs:
            assert Path(pair.rainy).exists() and Path(pair.clean).exists()


@pytest.mark.filterwarnings("ignore:skipping")  # the CLI warns once per unreadable file, as it should
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.tuples(st.text(string.ascii_letters + " ü", min_size=1, max_size=6),
                                st.sampled_from(EXTS[:7]), file_bytes), min_size=1, max_size=4))
def test_cli_denoise_on_random_files_never_crashes(tmp_path_factory, files):
    import torch

    from _helpers import TINY_ANN
    from spikeir.cli import main
    from spikeir.io import save_model
    from spikeir.models import build_model

    d = tmp_path_factory.mktemp("fuzz")
    src, out = d / "in", d / "out"
    src.mkdir()
    for i, (stem, ext, data) in enumerate(files):
        (src / f"{i}{stem}{ext}").write_bytes(data)
    torch.manual_seed(0)
    model = d / "m.safetensors"
    save_model(model, build_model(TINY_ANN).eval(), TINY_ANN, task="denoise", sigma=25)
    code = main(["denoise", str(src), "-o", str(out), "--model", str(model)])
    assert code in (0, 2)
    written = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert not any(n.startswith(".") for n in written)  # no temporary files left behind
    readable = 0
    for p in src.iterdir():
        try:
            read_image(p)
            readable += 1
        except ImageReadError:
            pass
    assert len(written) == readable and (code == 0) == (readable > 0)
