import json

import numpy as np
import pytest
import torch
from PIL import Image

from _helpers import TINY_ANN, smooth_image
from spikeir.cli import main
from spikeir.io import save_model
from spikeir.models import build_model
from spikeir.neurons import BaseNeuron
from spikeir.rain import synth_rain
from spikeir.visualize import record_spike_maps, spike_rates_by_region


def test_spike_maps_equal_direct_count():
    torch.manual_seed(0)
    model = build_model({"name": "spiking_dncnn", "depth": 4, "width": 6, "T": 3}).eval()
    outs = []
    for m in model.modules():
        if isinstance(m, BaseNeuron):
            m.register_forward_hook(lambda _m, _i, o: outs.append(o))
    with record_spike_maps(model) as maps:
        model(torch.rand(2, 1, 10, 12))
    assert len(maps) == len(outs) == 3
    for rate, o in zip(maps.values(), outs):
        assert rate.shape == (2, 10, 12)
        expect = (o != 0).float().sum(dim=(0, 2)) / (o.shape[0] * o.shape[2])
        torch.testing.assert_close(rate, expect)


def test_rates_by_region_by_hand():
    rate = torch.zeros(1, 4, 4)
    rate[0, :, :2] = 0.5  # left half fires at 0.5, right half at 0.1
    rate[0, :, 2:] = 0.1
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True  # input-resolution mask covering the left half
    full = torch.zeros(1, 8, 8)
    full[0][torch.from_numpy(mask)] = 0.3
    rows = spike_rates_by_region({"half": rate, "full": full}, mask)
    assert rows[0] == {"name": "half", "rate_rain": 0.5, "rate_background": pytest.approx(0.1),
                       "pixels_rain": 8, "pixels_background": 8}
    assert rows[1]["rate_rain"] == pytest.approx(0.3) and rows[1]["rate_background"] == 0.0


def test_spikes_cli_with_rain_mask(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = {"name": "esdnet", "dim": 4, "en_num_blocks": [1, 1, 1], "de_num_blocks": [1, 1, 1], "T": 2}
    save_model(tmp_path / "e.safetensors", build_model(cfg), cfg, task="derain")
    clean = smooth_image(0, 32, 40, rgb=True)
    rainy, _, mask = synth_rain(clean, "heavy", seed=1)
    Image.fromarray(rainy).save(tmp_path / "r.png")
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "m.png")
    args = ["spikes", str(tmp_path / "r.png"), "--model", str(tmp_path / "e.safetensors"),
            "--mask", str(tmp_path / "m.png"), "--json", str(tmp_path / "s.json"), "-o", str(tmp_path / "s.png")]
    assert main(args) == 0
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["layers"] and all({"name", "rate_rain", "rate_background"} <= set(r) for r in res["layers"])
    assert Image.open(tmp_path / "s.png").size[0] > 40
    assert main(args) == 2  # the PNG exists: refuses to overwrite
    Image.fromarray((mask[:16] * 255).astype(np.uint8)).save(tmp_path / "small.png")
    assert main(["spikes", str(tmp_path / "r.png"), "--model", str(tmp_path / "e.safetensors"),
                 "--mask", str(tmp_path / "small.png"), "--json", str(tmp_path / "t.json")]) == 2
    assert "mask" in capsys.readouterr().err
    save_model(tmp_path / "a.safetensors", build_model(TINY_ANN), TINY_ANN, task="denoise")
    assert main(["spikes", str(tmp_path / "r.png"), "--model", str(tmp_path / "a.safetensors"),
                 "--json", str(tmp_path / "u.json")]) == 2


def test_rates_by_region_crop_padding_of_padded_models():
    # an ESDNet-like model padded a 6x10 image to 8x12: full-res map 8x12, stride-2 map 4x6
    H, W = 6, 10
    mask = np.zeros((H, W), bool)
    mask[:, :4] = True  # columns 0-3 rain
    full = torch.full((1, 8, 12), 0.9)  # padding cells fire a lot: they must be ignored
    full[0, :H, :W] = 0.1
    full[0, :H, :4] = 0.6
    half = torch.full((1, 4, 6), 0.9)
    half[0, :3, :5] = 0.2
    half[0, :3, :2] = 0.7  # stride-2 cells over columns 0-3
    rows = {r["name"]: r for r in spike_rates_by_region({"full": full, "half": half}, mask)}
    assert rows["full"]["rate_rain"] == pytest.approx(0.6) and rows["full"]["rate_background"] == pytest.approx(0.1)
    assert rows["full"]["pixels_rain"] + rows["full"]["pixels_background"] == H * W
    assert rows["half"]["rate_rain"] == pytest.approx(0.7) and rows["half"]["rate_background"] == pytest.approx(0.2)
    assert rows["half"]["pixels_rain"] + rows["half"]["pixels_background"] == 3 * 5


def test_spike_maps_of_esdnet_on_odd_size_are_registered(tmp_path):
    from spikeir.visualize import spike_map_panel

    torch.manual_seed(0)
    model = build_model({"name": "esdnet", "dim": 4, "en_num_blocks": [1, 1, 1], "de_num_blocks": [1, 1, 1],
                         "T": 2}).eval()
    img = smooth_image(0, 30, 38, rgb=True)
    with record_spike_maps(model) as maps:
        model(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)
    assert {tuple(m.shape[-2:]) for m in maps.values()} >= {(32, 40), (16, 20), (8, 10)}
    rows = spike_rates_by_region(maps, np.ones((30, 38), bool))
    assert all(r["pixels_background"] == 0 for r in rows)  # no padded cell counted
    panel = spike_map_panel(img, maps, tmp_path / "p.png", columns=len(maps) + 1)
    assert panel.size[1] == 30 + 18 + 6
