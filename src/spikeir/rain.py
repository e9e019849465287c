"""Rain data: a seedable synthetic rain generator and paired deraining datasets in the layouts
that public rain sets are distributed in.

Synthetic rain (:func:`synth_rain`): random seeds of random brightness are smeared along a line
of random length and angle (a motion-blur kernel), widened and softened by a Gaussian, and
composited over the clean image with a screen blend ``rainy = 1 - (1 - clean)(1 - a * streaks)``.
The streak layer is known, so a rain mask comes for free (``streaks > mask_threshold``).

Paired layouts (:func:`find_rain_pairs`, detected automatically or named):

=================  ==============================================================================
``input_target``   ``input/`` + ``target/`` paired by sorted order (Rain13K, Rain100L/H, Test100,
                   Test1200, Test2800 as redistributed with MPRNet/Restormer)
``prenet_test``    ``rainy/rain-001.png`` with ``norain-001.png`` (Rain100L/H from PReNet)
``prenet_train``   ``rain-1.png`` / ``norain-1.png`` side by side in one folder (RainTrainL/H)
``rain200``        ``rain/X2/norain-{i}x2.png`` with ``norain/norain-{i}.png`` (Rain200L/H)
``ddn``            ``rainy_image/{i}_{k}.jpg`` (k = 1..14) with ``ground_truth/{i}.jpg`` (Rain1400)
``side_by_side``   one file per pair, two halves (Rain1200 / DID-MDN); ``rainy_half`` says which
``list``           a text file of ``<rainy> <clean>`` path pairs per line (SPA-Data)
=================  ==============================================================================
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import IMAGE_EXTENSIONS, list_images, read_image

__all__ = ["RAIN_PRESETS", "synth_rain", "RainPair", "find_rain_pairs", "load_rain_pair", "LAYOUTS",
           "synthetic_rain_set", "load_rain_set", "RainPatchSampler"]

# ranges sampled uniformly per streak layer: density = seeds per pixel
RAIN_PRESETS: dict[str, dict] = {
    "light": {"layers": 1, "density": (0.002, 0.006), "length": (8, 20), "angle": (-20, 20),
              "width": (0.4, 0.8), "blur": (0.3, 0.7), "amount": (0.55, 0.8)},
    "heavy": {"layers": 2, "density": (0.003, 0.007), "length": (15, 35), "angle": (-35, 35),
              "width": (0.6, 1.4), "blur": (0.5, 1.2), "amount": (0.7, 0.95)},
}


def _line_kernel(length: int, angle_deg: float) -> torch.Tensor:
    """Normalised motion-blur kernel: a line of ``length`` pixels at ``angle`` from vertical."""
    size = length if length % 2 else length + 1
    k = torch.zeros(size, size)
    c = (size - 1) / 2
    a = math.radians(angle_deg)
    for t in np.linspace(-c, c, 4 * size):
        x, y = c + t * math.sin(a), c + t * math.cos(a)
        k[int(round(y)), int(round(x))] = 1.0
    return k / k.sum()


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return img
    r = max(1, int(math.ceil(3 * sigma)))
    g = torch.exp(-torch.arange(-r, r + 1, dtype=img.dtype) ** 2 / (2 * sigma**2))
    g = g / g.sum()
    img = F.conv2d(F.pad(img, (r, r, 0, 0), mode="reflect"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(img, (0, 0, r, r), mode="reflect"), g.view(1, 1, -1, 1))


def synth_rain(
    clean: np.ndarray,
    preset: str | dict = "light",
    seed: int = 0,
    mask_threshold: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Composite synthetic rain over a uint8 image (``[H, W]`` or ``[H, W, 3]``).

    Returns ``(rainy uint8, streaks float32 [H, W] in [0, 1], mask bool [H, W])``. The same
    ``seed`` gives the same rain."""
    if isinstance(preset, str) and preset not in RAIN_PRESETS:
        raise ValueError(f"unknown rain preset {preset!r}; choose {sorted(RAIN_PRESETS)}")
    p = RAIN_PRESETS[preset] if isinstance(preset, str) else preset
    rng = np.random.default_rng(seed)
    H, W = clean.shape[:2]
    streaks = torch.zeros(1, 1, H, W)
    base_angle = rng.uniform(*p["angle"])
    for _ in range(int(p["layers"])):
        seeds = torch.from_numpy((rng.random((H, W)) < rng.uniform(*p["density"])).astype(np.float32))
        seeds *= torch.from_numpy(rng.uniform(0.5, 1.0, (H, W)).astype(np.float32))
        length = int(rng.integers(p["length"][0], p["length"][1] + 1))
        angle = base_angle + rng.uniform(-5, 5)  # layers share a wind direction
        k = _line_kernel(length, angle)
        pad = k.shape[-1] // 2
        layer = F.conv2d(F.pad(seeds[None, None], (pad,) * 4), k[None, None]) * length
        layer = _gaussian_blur(layer, rng.uniform(*p["width"]))
        layer = _gaussian_blur(layer, rng.uniform(*p["blur"]) * 0.5)
        streaks = torch.maximum(streaks, layer.clamp(0, 1))
    s = streaks[0, 0].numpy()
    s = s / max(float(s.max()), 1e-6) if s.max() > 1 else s
    amount = rng.uniform(*p["amount"])
    img = clean.astype(np.float32) / 255.0
    a = (amount * s)[..., None] if img.ndim == 3 else amount * s
    rainy = 1.0 - (1.0 - img) * (1.0 - a)
    rainy_u8 = np.clip(rainy * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return rainy_u8, s.astype(np.float32), s > mask_threshold


# ------------------------------------------------------------------------------- paired sets


@dataclass(frozen=True)
class RainPair:
    rainy: Path
    clean: Path
    half: str | None = None  # side_by_side: which half of ``rainy`` is rainy ("left"/"right")
    name: str = ""


def _imgs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _num(p: Path) -> int:
    m = re.findall(r"\d+", p.stem)
    return int(m[0]) if m else -1


def _pairs_input_target(root: Path) -> list[RainPair]:
    a, b = _imgs(root / "input"), _imgs(root / "target")
    if len(a) != len(b):
        raise ValueError(f"input/target layout in {root}: {len(a)} rainy vs {len(b)} clean images (unpaired files)")
    return [RainPair(x, y, name=x.name) for x, y in zip(a, b)]


def _pairs_by_name(rainy: list[Path], clean_for, root: Path, layout: str) -> list[RainPair]:
    pairs, missing = [], []
    for r in rainy:
        c = clean_for(r)
        (pairs if c.is_file() else missing).append(RainPair(r, c, name=r.name) if c.is_file() else r)
    if missing:
        raise ValueError(f"{layout} layout in {root}: no clean image for {len(missing)} rainy file(s), "
                         f"e.g. {missing[0].name}")
    return pairs


def _pairs_prenet_test(root: Path) -> list[RainPair]:
    rainy = [p for p in _imgs(root / "rainy") if p.stem.startswith("rain-")]
    return _pairs_by_name(rainy, lambda r: root / ("no" + r.name), root, "prenet_test")


def _pairs_prenet_train(root: Path) -> list[RainPair]:
    rainy = [p for p in _imgs(root) if p.stem.startswith("rain-")]
    return _pairs_by_name(rainy, lambda r: root / ("no" + r.name), root, "prenet_train")


def _pairs_rain200(root: Path) -> list[RainPair]:
    rainy = _imgs(root / "rain" / "X2")

    def clean(r: Path) -> Path:
        return root / "norain" / (re.sub(r"x2$", "", r.stem) + r.suffix)

    return _pairs_by_name(rainy, clean, root, "rain200")


def _pairs_ddn(root: Path) -> list[RainPair]:
    gt = {p.stem: p for p in _imgs(root / "ground_truth")}
    pairs, missing = [], []
    for r in _imgs(root / "rainy_image"):
        key = r.stem.split("_")[0]
        if key in gt:
            pairs.append(RainPair(r, gt[key], name=r.name))
        else:
            missing.append(r)
    if missing:
        raise ValueError(f"ddn layout in {root}: no ground_truth for {len(missing)} rainy file(s), "
                         f"e.g. {missing[0].name}")
    return pairs


def _pairs_side_by_side(root: Path, rainy_half: str) -> list[RainPair]:
    return [RainPair(p, p, half=rainy_half, name=p.name) for p in list_images(root)]


def _pairs_list(listfile: Path) -> list[RainPair]:
    if not listfile.is_file():
        raise ValueError(f"the list layout takes a text file of '<rainy> <clean>' lines; {listfile} is a folder")
    try:
        text = listfile.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{listfile} is not a text file of '<rainy> <clean>' lines") from None
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{listfile}:{n}: expected '<rainy> <clean>', got {line!r}")
        r, c = (Path(x) if Path(x).is_absolute() else listfile.parent / x for x in parts)
        for f in (r, c):
            if not f.is_file():
                raise ValueError(f"{listfile}:{n}: no such file {f}")
        pairs.append(RainPair(r, c, name=r.name))
    return pairs


LAYOUTS = ("input_target", "prenet_test", "prenet_train", "rain200", "ddn", "side_by_side", "list")


def _detect(root: Path) -> str:
    if root.is_file():
        return "list"
    if (root / "input").is_dir() and (root / "target").is_dir():
        return "input_target"
    if (root / "rain" / "X2").is_dir() and (root / "norain").is_dir():
        return "rain200"
    if (root / "rainy_image").is_dir() and (root / "ground_truth").is_dir():
        return "ddn"
    if (root / "rainy").is_dir() and any(p.name.startswith("norain-") for p in root.iterdir()):
        return "prenet_test"
    if any(p.name.startswith("norain-") for p in root.iterdir()):
        return "prenet_train"
    raise ValueError(f"cannot tell the rain dataset layout of {root}; name it with --layout "
                     f"({', '.join(LAYOUTS)})")


def find_rain_pairs(
    root: str | Path, layout: str | None = None, rainy_half: str = "left"
) -> tuple[str, list[RainPair]]:
    """``(layout, pairs)`` of a paired rain dataset; ``layout=None`` detects it."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such file or folder: {root}")
    layout = layout or _detect(root)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if rainy_half not in ("left", "right"):
        raise ValueError(f"rainy_half must be 'left' or 'right', got {rainy_half!r}")
    finder = {
        "input_target": _pairs_input_target, "prenet_test": _pairs_prenet_test,
        "prenet_train": _pairs_prenet_train, "rain200": _pairs_rain200, "ddn": _pairs_ddn,
        "side_by_side": lambda r: _pairs_side_by_side(r, rainy_half), "list": _pairs_list,
    }[layout]
    try:
        pairs = finder(root)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise ValueError(f"{root} does not look like the {layout} layout ({e})") from None
    if not pairs:
        raise ValueError(f"no image pairs found in {root} ({layout} layout)")
    return layout, pairs


def load_rain_pair(pair: RainPair) -> tuple[np.ndarray, np.ndarray]:
    """``(rainy, clean)`` uint8 RGB arrays of the same size (clear error otherwise)."""
    if pair.half is not None:
        both = read_image(pair.rainy, gray=False)
        w = both.shape[1] // 2
        left, right = both[:, :w], both[:, w : 2 * w]
        return (left, right) if pair.half == "left" else (right, left)
    rainy, clean = read_image(pair.rainy, gray=False), read_image(pair.clean, gray=False)
    if rainy.shape != clean.shape:
        raise ValueError(f"size mismatch: {pair.rainy} is {rainy.shape[1]}x{rainy.shape[0]} but "
                         f"{pair.clean} is {clean.shape[1]}x{clean.shape[0]}")
    return rainy, clean


# ------------------------------------------------------------------------------ training / eval


def _rain_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + sum(ord(c) * 31**i for i, c in enumerate(name))) % (2**31)


def synthetic_rain_set(
    spec: str, preset: str = "mixed", seed: int = 0
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, rainy, clean)`` uint8 RGB triples: synthetic rain over a set of clean images
    (``builtin:NAME`` or a folder). Each image's rain is seeded by ``seed`` and its name, so the
    set is the same on every machine. ``preset="mixed"`` alternates light and heavy."""
    from .data import load_image_set

    out = []
    for i, (name, clean) in enumerate(load_image_set(spec, gray=False)):
        p = preset if preset != "mixed" else ("light", "heavy")[i % 2]
        rainy, _, _ = synth_rain(clean, p, seed=_rain_seed(seed, name))
        out.append((name, rainy, clean))
    return out


def load_rain_set(
    spec: str, layout: str | None = None, rainy_half: str = "left", preset: str = "mixed", seed: int = 0
) -> tuple[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """A deraining test set: ``builtin:NAME`` (synthetic rain over built-in images) or a paired
    dataset folder/list in any of :data:`LAYOUTS`. Returns ``(description, triples)``; the
    description names the layout found and the number of pairs."""
    if spec.startswith("builtin:"):
        triples = synthetic_rain_set(spec, preset, seed)
        return f"synthetic {preset} rain over {spec} ({len(triples)} images)", triples
    found, pairs = find_rain_pairs(spec, layout, rainy_half)
    triples = [(p.name, *load_rain_pair(p)) for p in pairs]
    return f"{found} layout, {len(triples)} pairs", triples


@dataclass
class RainPatchSampler:
    """Training batches for deraining: aligned random crops ``(rainy, clean)`` float32
    ``[B, 3, P, P]`` in [0, 1]. From ``pairs`` (a paired dataset) or from clean ``images`` with
    fresh synthetic rain per patch (``preset`` light, heavy or mixed). Batch ``i`` is a pure
    function of ``(seed, i)``; no flips or rotations (rain has a direction), as in the release."""

    images: list[np.ndarray] | None = None
    pairs: list[tuple[np.ndarray, np.ndarray]] | None = None
    patch: int = 64
    batch_size: int = 12
    preset: str = "mixed"
    seed: int = 0

    def __post_init__(self) -> None:
        srcs = self.pairs if self.pairs is not None else [(None, im) for im in (self.images or [])]
        if not srcs:
            raise ValueError("no training images for deraining")
        small = [c.shape for _, c in srcs if min(c.shape[:2]) < self.patch]
        if small:
            raise ValueError(f"patch size {self.patch} is larger than image(s) of shape {small[:3]}")
        if self.preset not in ("mixed", *RAIN_PRESETS):
            raise ValueError(f"unknown rain preset {self.preset!r}; choose mixed, {', '.join(RAIN_PRESETS)}")
        self._srcs = srcs
        w = np.array([(c.shape[0] - self.patch + 1) * (c.shape[1] - self.patch + 1) for _, c in srcs], float)
        self._probs = torch.from_numpy(w / w.sum())

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        P = self.patch
        rainy, clean = [], []
        for i in torch.multinomial(self._probs, self.batch_size, replacement=True, generator=g).tolist():
            r, c = self._srcs[i]
            y = int(torch.randint(0, c.shape[0] - P + 1, (1,), generator=g))
            x = int(torch.randint(0, c.shape[1] - P + 1, (1,), generator=g))
            cp = c[y : y + P, x : x + P]
            if r is None:
                k = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
                preset = self.preset if self.preset != "mixed" else ("light", "heavy")[k % 2]
                rp = synth_rain(cp, preset, seed=k)[0]
            else:
                rp = r[y : y + P, x : x + P]
            rainy.append(torch.from_numpy(np.ascontiguousarray(rp)).permute(2, 0, 1))
            clean.append(torch.from_numpy(np.ascontiguousarray(cp)).permute(2, 0, 1))
        return torch.stack(rainy).float().div_(255.0), torch.stack(clean).float().div_(255.0)
