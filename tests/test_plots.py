import json

import numpy as np
import pytest
from PIL import Image

from spikeir.cli import main
from spikeir.plots import line_panel, plot_run


def test_plot_run_draws_three_panels(tmp_path):
    recs = [{"event": "start"}]
    for s in range(1, 11):
        recs.append({"step": s * 10, "loss": 1.0 / s, "psnr": 20 + s, "layer_rates": {"a": 0.1 * s / 10, "b": 0.2}})
    recs.append({"step": 100, "val_psnr": 29.0})
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    path = plot_run(tmp_path)
    img = np.asarray(Image.open(path))
    assert path.name == "curves.png" and img.shape[0] >= 3 * 300 and img.shape[1] == 520
    assert (img < 250).any(axis=2).mean() > 0.01  # something was drawn
    assert main(["plot", str(tmp_path), "-o", str(tmp_path / "c2.png")]) == 0
    assert (tmp_path / "c2.png").exists()


def test_plot_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no training log" in capsys.readouterr().err
    (tmp_path / "log.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="not a JSON record"):
        plot_run(tmp_path)


def test_line_panel_maps_points_into_the_frame():
    img = np.asarray(line_panel("t", {"s": [(0, 0.0), (1, 1.0)]}))
    blue = (img[..., 2] > 150) & (img[..., 0] < 100)
    ys, xs = np.nonzero(blue)
    # the line rises from bottom-left to top-right of the plot frame
    assert xs.min() <= 60 and xs.max() >= 500 and ys[xs.argmin()] > ys[xs.argmax()]
