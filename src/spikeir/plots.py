"""Training curves from a run's ``log.jsonl``, drawn with Pillow (no plotting dependency).

``plot_run(run_dir)`` writes ``curves.png``: training loss, validation PSNR and the firing rate per
layer against the step, one panel each.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["read_log", "plot_run", "line_panel"]

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def read_log(run_dir: str | Path) -> list[dict]:
    """The records of ``run_dir/log.jsonl`` (a clear error if there is none)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}")
    recs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n} is not a JSON record") from None
    return recs


def _nice(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def line_panel(title: str, series: dict[str, list[tuple[float, float]]], size=(520, 300), log_y: bool = False
               ) -> Image.Image:
    """One chart: each series a polyline of ``(x, y)`` points, axes with min/max labels, legend."""
    rows = (len(series) - 1) // 4 + 1 if len(series) > 1 else 0
    W, H = size[0], size[1] + 12 * max(0, rows - 1)
    img = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((8, 4), title, fill=(0, 0, 0))
    pts = [(x, y) for s in series.values() for x, y in s if y is not None and math.isfinite(y)]
    left, right, top, bottom = 56, W - 12, 22, size[1] - 34
    d.rectangle([left, top, right, bottom], outline=(160, 160, 160))
    if not pts:
        d.text((left + 8, top + 8), "no data", fill=(120, 120, 120))
        return img
    tf = (lambda v: math.log10(max(v, 1e-12))) if log_y else (lambda v: v)
    xs = [p[0] for p in pts]
    ys = [tf(p[1]) for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (right - left), bottom - (tf(y) - y0) / (y1 - y0) * (bottom - top))

    for i, (name, s) in enumerate(series.items()):
        c = _COLOURS[i % len(_COLOURS)]
        line = [px(x, y) for x, y in s if y is not None and math.isfinite(y)]
        if len(line) > 1:
            d.line(line, fill=c, width=2)
        elif line:
            d.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=c)
        if len(series) > 1:
            d.text((left + 6 + (i % 4) * 110, bottom + 16 + (i // 4) * 12), name[:16], fill=c)
    inv = (lambda v: 10**v) if log_y else (lambda v: v)
    d.text((4, top), _nice(inv(y1)), fill=(0, 0, 0))
    d.text((4, bottom - 10), _nice(inv(y0)), fill=(0, 0, 0))
    d.text((left, bottom + 3), _nice(x0), fill=(0, 0, 0))
    d.text((right - 40, bottom + 3), _nice(x1), fill=(0, 0, 0))
    return img


def plot_run(run_dir: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Draw loss, validation PSNR and per-layer firing rates of a run; returns the PNG path.
    ``RUN_DIR/curves.png`` is always redrawn; an explicit ``out`` is replaced only if ``overwrite``."""
    from .data import write_image_atomic

    recs = read_log(run_dir)
    train = [r for r in recs if "loss" in r]
    val = [r for r in recs if "val_psnr" in r]
    if not train and not val:
        raise ValueError(f"{Path(run_dir) / 'log.jsonl'} has no training or validation records yet")
    panels = [
        line_panel("training loss (log scale)", {"loss": [(r["step"], r["loss"]) for r in train]}, log_y=True),
        line_panel("PSNR (dB)", {"train batch": [(r["step"], r.get("psnr")) for r in train],
                                 "validation": [(r["step"], r["val_psnr"]) for r in val]}),
    ]
    layers = [k for r in train for k in r.get("layer_rates", {})]
    if layers:
        names = list(dict.fromkeys(layers))
        panels.append(line_panel("firing rate per layer", {
            n: [(r["step"], r["layer_rates"].get(n)) for r in train if "layer_rates" in r] for n in names}))
    W = max(p.width for p in panels)
    canvas = Image.new("RGB", (W, sum(p.height for p in panels)), (255, 255, 255))
    y = 0
    for p in panels:
        canvas.paste(p, (0, y))
        y += p.height
    path = Path(out) if out else Path(run_dir) / "curves.png"
    write_image_atomic(path, np.asarray(canvas), overwrite=overwrite or out is None)
    return path
