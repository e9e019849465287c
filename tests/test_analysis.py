"""The conversion-error / sparsity analysis against a direct simulation."""

import pytest
import torch

from spikeir.analysis import code_errors, quantization_report
from spikeir.models import SpikingDnCNN
from spikeir.neurons import IF, LIF


def simulate_soft_if(xs: list[float], th: float, v0: float) -> tuple[int, float]:
    """Plain-Python soft-reset IF: spike count and final membrane."""
    v, n = v0, 0
    for x in xs:
        v += x
        if v >= th:
            v -= th
            n += 1
    return n, v


@pytest.mark.parametrize("v_init,v0", [("half", 0.5), (None, 0.0)])
def test_code_errors_equal_a_direct_simulation_and_respect_the_bound(v_init, v0):
    T, th = 4, 1.0
    neuron = IF(v_threshold=th, v_reset=None, scale_output=True, v_init=v_init)
    const = [-0.3, 0.0, 0.1, 0.37, 0.5, 0.99, 1.2, 2.5]
    varying = [[0.9, -0.6, 0.8, 0.2], [1.5, 1.5, -2.0, 0.1], [0.3, 0.3, 0.3, 0.9]]
    seqs = [[c] * T for c in const] + varying
    x = torch.tensor(seqs, dtype=torch.float32).T[:, None, :]  # [T, 1, N]
    out = neuron(x)
    e = code_errors(neuron, x, out)
    for i, xs in enumerate(seqs):
        n, v = simulate_soft_if(xs, th, v0)
        a = sum(xs) / T
        r = th * n / T
        clipped = min(max(a, 0.0), th)
        assert float(e["code"][0, i]) == pytest.approx(r)
        assert float(e["quant"][0, i]) == pytest.approx(r - clipped, abs=1e-6)
        assert float(e["sat"][0, i]) == pytest.approx(clipped - max(a, 0.0), abs=1e-6)
        assert float(e["v_final"][0, i]) == pytest.approx(v, abs=1e-6)
        in_range = 0 <= v < th
        assert bool(e["in_range"][0, i]) == in_range
        if in_range:  # the charge-balance bound
            assert abs(r - a) <= max(v0, th - v0) / T + 1e-6
    assert float(e["bound"][0, 0]) == pytest.approx(max(v0, th - v0) / T)


def test_report_across_T_shows_the_bound_falling_and_holding():
    torch.manual_seed(0)
    model = SpikingDnCNN(depth=4, width=8, T=4, neuron_kwargs={"v_init": "half"}).eval()
    x = [torch.rand(1, 1, 16, 16)]
    rep = quantization_report(model, x, [2, 8])
    assert [s["T"] for s in rep["sweeps"]] == [2, 8] and model.T == 4  # restored
    b2 = [lay["bound"] for lay in rep["sweeps"][0]["layers"]]
    b8 = [lay["bound"] for lay in rep["sweeps"][1]["layers"]]
    assert b8 == pytest.approx([b / 4 for b in b2])
    for s in rep["sweeps"]:
        assert len(s["layers"]) == 3
        for lay in s["layers"]:
            assert 0.0 <= lay["in_range"] <= 1.0
            if lay["max_quant_in_range"] is not None:  # the bound holds where it applies
                assert lay["max_quant_in_range"] <= 0.5 * lay["theta_mean"] / s["T"] + 1e-6
            assert 0 <= lay["firing_rate"] <= 1 and lay["quant_rms"] >= 0 and lay["sat_rms"] >= 0


def test_leaky_neurons_have_no_bound_and_fixed_T_models_refuse_a_T_sweep():
    from spikeir.models import PRESETS, build_model

    lif = LIF(tau=2.0, v_threshold=0.5, v_reset=0.0)
    x = torch.rand(4, 1, 6)
    e = code_errors(lif, x, lif(x))
    assert "bound" not in e and e["quant"].shape == (1, 6)
    esd = build_model({**PRESETS["esdnet-small"], "dim": 4})
    with pytest.raises(ValueError, match="SpikingDnCNN only"):
        quantization_report(esd, [torch.rand(1, 3, 16, 16)], [2])
    rep = quantization_report(esd, [torch.rand(1, 3, 16, 16)])
    assert all(lay["bound"] is None for lay in rep["sweeps"][0]["layers"])


def test_analyze_cli_writes_json_and_plot(tmp_path, capsys):
    import json

    from _helpers import TINY_SNN, write_images
    from spikeir.cli import main
    from spikeir.data import read_image
    from spikeir.io import save_model
    from spikeir.models import build_model

    write_images(tmp_path / "imgs", 2)
    path = tmp_path / "snn.safetensors"
    torch.manual_seed(0)
    save_model(path, build_model(TINY_SNN).eval(), TINY_SNN, task="denoise", sigma=25)
    js, png = tmp_path / "q.json", tmp_path / "q.png"
    argv = ["analyze", "quantization", "--model", str(path), "--images", str(tmp_path / "imgs"),
            "--T", "2", "4", "--crop", "32", "--json", str(js), "--plot", str(png)]
    assert main(argv) == 0
    rep = json.loads(js.read_text())
    assert [s["T"] for s in rep["sweeps"]] == [2, 4] and rep["sigma"] == 25
    assert rep["sweeps"][1]["quant_rms"] < rep["sweeps"][0]["quant_rms"]  # finer code at larger T
    assert read_image(png).ndim == 3 and "quant RMS" in capsys.readouterr().out
    assert main(argv) == 2  # outputs exist: refused
    assert "exists" in capsys.readouterr().err


def test_matched_contrast_separates_rain_from_brightness():
    from spikeir.analysis import matched_contrast

    g = torch.Generator().manual_seed(0)
    intensity = torch.rand(64, 64, generator=g)
    mask = torch.rand(64, 64, generator=g) < 0.2
    intensity[mask] = 0.5 + 0.5 * intensity[mask]  # rain is bright
    only_bright = 0.6 * intensity  # rate follows brightness only
    c = matched_contrast(only_bright, mask, intensity, bins=32)
    assert c["raw"] > 0.1 and abs(c["matched"]) < 0.01 and c["coverage"] == 1.0
    # direct computation of the raw difference
    assert c["raw"] == pytest.approx(float(only_bright[mask].mean() - only_bright[~mask].mean()))
    with_rain = only_bright + 0.2 * mask  # rain adds 0.2 at any brightness
    c2 = matched_contrast(with_rain, mask, intensity, bins=32)
    assert c2["matched"] == pytest.approx(0.2, abs=0.01)


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_samples():
    from spikeir.analysis import bootstrap_ci

    g = torch.Generator().manual_seed(1)
    small = (torch.randn(8, generator=g) + 1).tolist()
    big = (torch.randn(400, generator=g) + 1).tolist()
    lo, hi = bootstrap_ci(small)
    assert lo < sum(small) / 8 < hi
    lo2, hi2 = bootstrap_ci(big)
    assert hi2 - lo2 < hi - lo and lo2 < 1.0 < hi2
    with pytest.raises(ValueError):
        bootstrap_ci([1.0])


def test_rain_spike_effect_runs_on_esdnet_and_reports_every_layer():
    from _helpers import smooth_image
    from spikeir.analysis import rain_spike_effect
    from spikeir.models import PRESETS, build_model
    from spikeir.rain import synth_rain

    torch.manual_seed(0)
    model = build_model({**PRESETS["esdnet-small"], "dim": 4})
    samples = []
    for i in range(3):
        rainy, _, mask = synth_rain(smooth_image(i, 32, 40, rgb=True), "heavy", seed=i)
        samples.append((f"s{i}", torch.from_numpy(rainy).float().permute(2, 0, 1) / 255, torch.from_numpy(mask)))
    rep = rain_spike_effect(model, samples, n_boot=200)
    names = [lay["name"] for lay in rep["layers"]]
    assert names[0].startswith("encoder_level1") and len(names) >= 10
    for lay in rep["layers"]:
        assert lay["samples"] == 3 and lay["raw_ci"][0] <= lay["raw"] <= lay["raw_ci"][1] and lay["verdict"]
