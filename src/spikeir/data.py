"""Images in and out, built-in image sets, and the denoising data pipeline.

Built-in sets (no download; the images ship inside scikit-image, and scikit-learn if installed):

* ``builtin:train``   natural photos from ``skimage.data`` used to train the bundled models;
* ``builtin:val``     ``skimage.data.coffee``, used for validation during training only;
* ``builtin:heldout`` never seen in training or validation: ``skimage.data.camera`` and, when
  scikit-learn is installed, its two sample photos (``china``, ``flower``).

Gaussian denoising test protocol (the one papers use; see ``add_test_noise``): the clean uint8
image is scaled to [0, 1], the generator is seeded with 0 before each image, ``N(0, sigma/255)``
is added and the noisy input is neither clipped nor quantised; the output is clamped to [0, 1]
and rounded to uint8 before PSNR/SSIM on the 0..255 scale.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .io import atomic_output

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "list_images",
    "read_image",
    "write_image_atomic",
    "load_image_set",
    "builtin_images",
    "builtin_licence",
    "add_test_noise",
    "to_tensor",
    "to_uint8",
    "DenoisePatchSampler",
]

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}

_BUILTIN_TRAIN = [
    "astronaut", "chelsea", "hubble_deep_field", "immunohistochemistry", "motorcycle_left",
    "rocket", "brick", "grass", "gravel", "coins", "moon", "cell", "page", "microaneurysms",
]
_BUILTIN_VAL = ["coffee"]
_BUILTIN_HELDOUT = ["camera"]


class ImageReadError(ValueError):
    """A file could not be read as an image."""


def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def list_images(path: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``path`` (a file or a folder), sorted; raises if there are none."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    if p.is_file():
        return [p]
    it = p.rglob("*") if recursive else p.iterdir()
    files = sorted(f for f in it if f.is_file() and _is_image_name(f))
    if not files:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {p}")
    return files


def read_image(path: str | os.PathLike | IO[bytes], gray: bool | None = None) -> np.ndarray:
    """Read an image (a file, or a binary stream such as an upload) as uint8 ``[H, W]`` (gray) or
    ``[H, W, 3]`` (RGB).

    ``gray=None`` keeps the file's own mode (gray files stay gray, everything else is RGB).
    16-bit images are scaled to 8 bits. Raises :class:`ImageReadError` with the file name."""
    stream = hasattr(path, "read")
    if not stream:
        path = Path(path)  # type: ignore[arg-type]
    try:
        with Image.open(path) as im:  # type: ignore[arg-type]
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(im, dtype=np.float64)
                if im.mode.startswith("I;16"):  # true 16-bit
                    scale = 255.0 / 65535.0
                elif im.mode == "F":  # float images: [0, 1] or already 0..255
                    scale = 255.0 if arr.max() <= 1.0 else 1.0
                else:  # 32-bit integer: 16-bit content or 8-bit content
                    scale = 255.0 / 65535.0 if arr.max() > 255 else 1.0
                im = Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8))
            is_gray = im.mode in ("L", "1", "LA", "P") and _palette_is_gray(im)
            want_gray = is_gray if gray is None else gray
            im = im.convert("L" if want_gray else "RGB")
            arr = np.array(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        why = "not a recognised image format" if isinstance(e, UnidentifiedImageError) else str(e)
        raise ImageReadError(f"cannot read image {_label(path)}: {why}") from None
    if arr.size == 0:
        raise ImageReadError(f"cannot read image {_label(path)}: it has no pixels")
    return arr


def _label(src: object) -> str:
    return str(getattr(src, "name", "the upload")) if hasattr(src, "read") else str(src)


def _palette_is_gray(im: Image.Image) -> bool:
    if im.mode != "P":
        return True
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def write_image_atomic(path: str | os.PathLike, img: np.ndarray, overwrite: bool = False) -> None:
    """Write a uint8 image; never leaves a partial file, refuses to replace unless ``overwrite``."""
    with atomic_output(path, overwrite) as tmp:
        Image.fromarray(img).save(tmp, format=_pil_format(Path(path)))


def _pil_format(path: Path) -> str:
    ext = path.suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}.get(
        ext, "PNG"
    )


def _skimage_image(name: str) -> np.ndarray:
    from skimage import data as skdata

    if name == "motorcycle_left":
        return np.asarray(skdata.stereo_motorcycle()[0])
    return np.asarray(getattr(skdata, name)())


def _sklearn_images() -> list[tuple[str, np.ndarray]]:
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        return []
    ds = load_sample_images()
    return [(Path(f).stem, np.asarray(img)) for f, img in zip(ds.filenames, ds.images)]


def builtin_licence(name: str) -> str:
    """Where a built-in image comes from and its licence, as its own package states it (the
    ``skimage.data`` docstring, or scikit-learn's ``datasets/images/README.txt``)."""
    import re

    if name in ("china", "flower"):
        return (f"scikit-learn sample image {name}.jpg: Creative Commons Attribution 2.0 (CC BY 2.0), "
                "Flickr photo; see sklearn/datasets/images/README.txt")
    from skimage import data as skdata

    fn = getattr(skdata, "stereo_motorcycle" if name == "motorcycle_left" else name, None)
    doc = re.sub(r"`([^`<]*?)\s*(?:<[^>]*>)?`_*", r"\1", fn.__doc__ or "") if fn is not None else ""
    doc = re.sub(r"Notes\s*-+|https?://\S+|<\s*$", "", doc, flags=re.M)
    doc = " ".join(doc.split()).replace(" < ", " ")
    hits = re.findall(r"[^.]*(?:copyright|licen[cs]e|public domain|CC0)[^.]*\.", doc, flags=re.I)
    return f"skimage.data.{name}: " + (" ".join(h.strip() for h in hits[:2]) or "see its docstring in skimage.data")


def _to_mode(arr: np.ndarray, gray: bool | None) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.clip(arr.astype(np.float64) * (255.0 if arr.max() <= 1.0 else 1.0) + 0.5, 0, 255)
        arr = arr.astype(np.uint8)
    if gray is None:
        return arr
    if gray and arr.ndim == 3:
        return np.asarray(Image.fromarray(arr).convert("L"))
    if not gray and arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    return arr


def builtin_images(name: str, gray: bool | None = None) -> list[tuple[str, np.ndarray]]:
    """A built-in image set (``train``, ``val``, ``heldout``) as ``(name, uint8 array)`` pairs."""
    if name == "train":
        items = [(n, _skimage_image(n)) for n in _BUILTIN_TRAIN]
    elif name == "val":
        items = [(n, _skimage_image(n)) for n in _BUILTIN_VAL]
    elif name == "heldout":
        items = [(n, _skimage_image(n)) for n in _BUILTIN_HELDOUT] + _sklearn_images()
    else:
        raise ValueError(f"unknown built-in image set {name!r}; choose train, val or heldout")
    return [(n, _to_mode(a, gray)) for n, a in items]


def load_image_set(
    spec: str | os.PathLike | Iterable[str | os.PathLike], gray: bool | None = None
) -> list[tuple[str, np.ndarray]]:
    """Images from ``builtin:NAME``, a folder (recursive), a file, or a list of these.

    Unreadable files are skipped with a warning naming them; no readable image is an error."""
    if isinstance(spec, (str, os.PathLike)):
        specs = [spec]
    else:
        specs = list(spec)
    out: list[tuple[str, np.ndarray]] = []
    for s in specs:
        s_str = str(s)
        if s_str.startswith("builtin:"):
            out += builtin_images(s_str.split(":", 1)[1], gray)
            continue
        root = Path(s_str)
        for f in list_images(root):
            try:
                img = read_image(f, gray)
            except ImageReadError as e:
                warnings.warn(f"skipping {e}", stacklevel=2)
                continue
            name = str(f.relative_to(root)) if root.is_dir() else f.name
            out.append((name, img))
    if not out:
        raise ValueError(f"no readable images in {', '.join(map(str, specs))}")
    return out


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W]`` / ``[H, W, C]`` -> float32 ``[C, H, W]`` in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(img)).float().div_(255.0)
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """float ``[C, H, W]`` in [0, 1] -> uint8 ``[H, W]`` (C=1) or ``[H, W, C]``: clamp and round."""
    arr = t.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8).cpu().numpy()
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def add_test_noise(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """The test protocol's noisy input: float64 in [0,1] scale plus ``N(0, sigma/255)`` from a
    generator seeded with ``seed`` (NumPy's legacy ``RandomState``, as ``np.random.seed(0)``),
    not clipped, not quantised. Same shape as ``clean``."""
    rng = np.random.RandomState(seed)
    x = clean.astype(np.float64) / 255.0
    return x + rng.normal(0.0, sigma / 255.0, x.shape)


@dataclass
class DenoisePatchSampler:
    """Training batches of random patches with fresh Gaussian noise.

    Batch ``i`` is a pure function of ``(seed, i)``, so a resumed run sees exactly the batches it
    would have seen without the interruption. Patches are drawn with probability proportional to
    each image's number of valid positions, flipped/rotated at random (8 dihedral transforms),
    and corrupted by ``N(0, sigma/255)`` with ``sigma`` fixed or uniform in ``[lo, hi]`` (blind).

    ``batch(i)`` returns ``(noisy, clean)`` float32 ``[B, C, P, P]``.
    """

    images: list[np.ndarray]
    patch: int = 40
    batch_size: int = 16
    sigma: float | tuple[float, float] = 25.0
    seed: int = 0
    augment: bool = True

    def __post_init__(self) -> None:
        if not self.images:
            raise ValueError("no training images")
        small = [im.shape for im in self.images if min(im.shape[:2]) < self.patch]
        if small:
            raise ValueError(f"patch size {self.patch} is larger than image(s) of shape {small}")
        self._tensors = [torch.from_numpy(np.array(im, copy=True)) for im in self.images]
        P = self.patch
        w = np.array([(im.shape[0] - P + 1) * (im.shape[1] - P + 1) for im in self.images], dtype=np.float64)
        self._probs = torch.from_numpy(w / w.sum())
        if isinstance(self.sigma, (list, tuple)):
            lo, hi = (float(v) for v in self.sigma)
            if not 0 <= lo <= hi:
                raise ValueError(f"sigma range must satisfy 0 <= lo <= hi, got {self.sigma}")
            self.sigma = (lo, hi)

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        P = self.patch
        idx = torch.multinomial(self._probs, self.batch_size, replacement=True, generator=g)
        patches = []
        for i in idx.tolist():
            im = self._tensors[i]
            H, W = im.shape[:2]
            y = int(torch.randint(0, H - P + 1, (1,), generator=g))
            x = int(torch.randint(0, W - P + 1, (1,), generator=g))
            p = im[y : y + P, x : x + P]
            p = p[None] if p.dim() == 2 else p.permute(2, 0, 1)
            if self.augment:
                k = int(torch.randint(0, 8, (1,), generator=g))
                p = torch.rot90(p, k % 4, dims=(1, 2))
                if k >= 4:
                    p = p.flip(2)
            patches.append(p)
        clean = torch.stack(patches).float().div_(255.0)
        if isinstance(self.sigma, tuple):
            lo, hi = self.sigma
            s = lo + (hi - lo) * torch.rand(self.batch_size, 1, 1, 1, generator=g)
        else:
            s = torch.full((self.batch_size, 1, 1, 1), float(self.sigma))
        noise = torch.randn(clean.shape, generator=g) * (s / 255.0)
        return clean + noise, clean
