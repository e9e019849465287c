"""Energy accounting: counts against hand calculations on tiny networks, firing rates against a
direct count of spikes, SNN/ANN ratios against the per-layer numbers, JSON and the command."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from _helpers import TINY_SNN, write_images
from spikeir.energy import (
    ENERGY_PRESETS,
    EnergyModel,
    add_energy_parser,
    ann_twin,
    count_parameters,
    format_report,
    measure,
    plot_report,
    profile,
)
from spikeir.io import save_model
from spikeir.layers import SeqWrap, repeat_time
from spikeir.models import PRESETS, DnCNN, SpikingDnCNN, build_model
from spikeir.models.esdnet import MDA
from spikeir.neurons import IF, LIF, record_firing_rates

E_MAC, E_AC, E_MUL = 4.6, 0.9, 3.7


def rows_by_name(rows):
    return {r.name: r for r in rows}


class SpikeConv(nn.Module):
    """image -> repeat over T -> IF -> conv on [T*B, ...] -> time mean (a one-layer SNN)."""

    def __init__(self, T: int = 3, cin: int = 1, cout: int = 2, k: int = 3, **neuron) -> None:
        super().__init__()
        self.T = T
        self.neuron = IF(**neuron)
        self.conv = SeqWrap(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False))

    def forward(self, x):
        return self.conv(self.neuron(repeat_time(x, self.T))).mean(0)


# ----------------------------------------------------------------------------- MAC counts by hand


def test_conv_macs_params_and_energy_by_hand():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
    (r,) = profile(net, [torch.rand(1, 1, 8, 8)])
    assert r.name == "0" and r.kind == "Conv2d" and r.category == "synaptic"
    assert r.macs == 8 * 8 * 2 * 1 * 9 == r.dense_macs and r.steps == 1
    assert r.params == 2 * 9 + 2
    assert r.adds == 8 * 8 * 2  # the bias
    assert r.input_kind == "real" and r.basis == "mac"
    assert r.energy_pj["ops_45nm_synaptic"] == pytest.approx(1152 * E_MAC)
    assert r.energy_pj["ops_45nm"] == pytest.approx(1152 * E_MAC + 128 * E_AC)


@pytest.mark.parametrize("conv, shape, macs", [
    (nn.Conv2d(3, 4, 3, stride=2, padding=1), (1, 3, 9, 9), 5 * 5 * 4 * 3 * 9),  # strided: 9 -> 5
    (nn.Conv2d(6, 3, 1), (1, 6, 5, 7), 5 * 7 * 3 * 6),  # 1x1
    (nn.Conv2d(4, 4, 3, padding=1, groups=2), (1, 4, 6, 6), 6 * 6 * 4 * 2 * 9),  # grouped: Cin/groups
    (nn.ConvTranspose2d(2, 3, 2, stride=2), (1, 2, 4, 4), 2 * 4 * 4 * 3 * 4),  # transposed: in x Cout x k^2
    (nn.Linear(5, 7), (1, 3, 5), 3 * 7 * 5),
])
def test_synaptic_layer_macs(conv, shape, macs):
    (r,) = profile(nn.Sequential(conv), [torch.rand(*shape)])
    assert r.macs == macs and r.params == sum(p.numel() for p in conv.parameters())


def test_upsampling_counted_as_documented():
    x = torch.rand(1, 2, 4, 4)
    (bil,) = profile(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear")), [x])
    out = 2 * 8 * 8
    assert (bil.muls, bil.adds, bil.cmps) == (4 * out, 3 * out, 0)  # 4 taps per output element
    assert bil.kind == "Upsample(bilinear)" and bil.macs == 0
    (near,) = profile(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest")), [x])
    assert (near.muls, near.adds) == (0, 0)  # a copy

    class Up(nn.Module):  # the functional form, as ESDNet's Up uses it
        def forward(self, x):
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    (fn,) = profile(Up(), [x])
    assert fn.name == "model/interpolate" and (fn.muls, fn.adds) == (4 * out, 3 * out)


def test_attention_counts_by_hand():
    """MDA on [T=4, B=1, C=16, 4, 4]: temporal gate T->1->T, channel gate C->1->C, spatial 3x3."""
    T, C, H, W = 4, 16, 4, 4
    n = T * C * H * W  # 1024
    rows = profile(MDA(T, C), [torch.randn(T, 1, C, H, W)], spiking=True)
    by = rows_by_name(rows)
    # synaptic work: each gate MLP runs twice (avg and max pooled), the spatial conv once
    ta = 2 * (T * 1 + 1 * T)  # Conv3d T->1 on one voxel, then 1->T
    ca = 2 * (C * 1 + 1 * C)
    sa = H * W * 2 * 9  # Conv2d 2->1, 3x3, on the H x W map of (mean, max)
    syn = [r for r in rows if r.category == "synaptic"]
    assert sum(r.dense_macs for r in syn) == ta + ca + sa == 368
    assert by["ta.sharedMLP.0"].calls == 2 and by["ta.sharedMLP.0"].macs == 2 * T
    assert by["sa.conv"].macs == sa
    assert all(r.input_kind == "real" and r.basis == "mac" for r in syn)  # attention runs on real values
    # element-wise work
    assert by["model/mul"].calls == 3 and by["model/mul"].muls == 3 * n  # the three gates
    assert by["ta/mean"].adds == n and by["ta/mean"].muls == T
    assert by["ca/amax"].cmps == n and by["sa/amax"].cmps == n
    assert by["sa/mean"].adds == n and by["sa/mean"].muls == H * W
    assert by["model/relu"].cmps == n
    sig = T + C + H * W  # sigmoid outputs: 2 muls + 1 add each
    muls = T + C + H * W + 2 * sig + 3 * n  # means + sigmoids + gates
    adds = 3 * n + T + C + sig  # pools and mean + the avg+max MLP sums + sigmoids
    cmps = 3 * n + 2 + 2 + n  # max pools and max + the MLP ReLUs (1 element, twice each) + final ReLU
    assert sum(r.muls for r in rows) == muls == 3180
    assert sum(r.adds for r in rows) == adds == 3128
    assert sum(r.cmps for r in rows) == cmps == 4100
    total = sum(r.energy_pj["ops_45nm"] for r in rows)
    assert total == pytest.approx(368 * E_MAC + muls * E_MUL + adds * E_AC + cmps * E_AC)


def test_batchnorm_folded_or_not():
    x = torch.rand(1, 4, 5, 5)
    (fold,) = profile(nn.Sequential(nn.BatchNorm2d(4)), [x])
    (full,) = profile(nn.Sequential(nn.BatchNorm2d(4)), [x], EnergyModel(fold_bn=False))
    assert (fold.adds, fold.muls) == (100, 0) and fold.energy_pj["memory_aware"] == pytest.approx(100 * E_AC)
    assert (full.adds, full.muls) == (100, 100)


def test_neuron_updates_by_hand():
    x = torch.full((3, 1, 2, 2), 0.6)  # IF, threshold 1, soft reset: spikes at t = 1 only (0.6, 1.2, 0.8)
    (r,) = profile(nn.Sequential(IF(v_reset=None)), [x])
    assert r.neuron_updates == 12 and r.output_nonzeros == 4 and r.output_firing_rate == pytest.approx(1 / 3)
    assert (r.adds, r.muls, r.cmps) == (12 + 4, 0, 12)  # integrate, soft-reset subtraction per spike, compare
    (lif,) = profile(nn.Sequential(LIF(tau=2.0, decay_input=False, v_reset=0.0)), [x])
    assert (lif.adds, lif.muls, lif.cmps) == (12, 12, 12)  # integrate + leak multiply + compare


# ----------------------------------------------------------------------------- spikes, rates, SOPs


def test_firing_rate_and_sops_against_direct_spike_count():
    torch.manual_seed(0)
    model = SpikeConv(T=3, v_threshold=0.5)
    counted = {}

    def hook(_m, _inp, out):
        counted["spikes"] = float((out != 0).sum())
        counted["elements"] = float(out.numel())

    h = model.neuron.register_forward_hook(hook)
    x = torch.rand(1, 1, 8, 8)
    rows = rows_by_name(profile(model, [x]))
    h.remove()
    direct = counted["spikes"] / counted["elements"]
    assert 0 < direct < 1
    conv, neuron = rows["conv.0"], rows["neuron"]
    assert conv.input_kind == "binary_spikes" and conv.basis == "ac"
    assert conv.input_firing_rate == pytest.approx(direct)
    assert neuron.output_firing_rate == pytest.approx(direct)
    with record_firing_rates(model) as fr, torch.no_grad():
        model(x)
    assert fr.rates["neuron"] == pytest.approx(direct)
    macs = 8 * 8 * 2 * 9
    assert conv.macs == macs and conv.steps == 3 and conv.dense_macs == 3 * macs
    assert conv.sops == pytest.approx(macs * direct * 3)  # rate once, T once
    assert conv.energy_pj["ops_45nm_synaptic"] == pytest.approx(macs * direct * 3 * E_AC)
    assert conv.sops_exact <= conv.sops


def test_exact_sops_account_for_borders():
    corner = torch.zeros(1, 1, 8, 8)
    corner[0, 0, 0, 0] = 1.0
    centre = torch.zeros(1, 1, 8, 8)
    centre[0, 0, 4, 4] = 1.0
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False))
    (a,) = profile(net, [corner], spiking=True)
    (b,) = profile(net, [centre], spiking=True)
    assert a.input_kind == "binary_spikes" and a.input_firing_rate == 1 / 64
    assert a.sops == pytest.approx(8 * 8 * 2 * 9 / 64) == b.sops  # the convention: 18
    assert a.sops_exact == 2 * 4 and b.sops_exact == 2 * 9  # a corner spike reaches 4 outputs per map


def test_all_zero_spikes_cost_nothing():
    model = SpikeConv(T=2, v_threshold=10.0)  # never fires
    rows = rows_by_name(profile(model, [torch.rand(1, 1, 6, 6)]))
    conv = rows["conv.0"]
    assert conv.input_kind == "binary_spikes" and conv.input_firing_rate == 0.0
    assert conv.sops == 0 and conv.sops_exact == 0
    assert conv.energy_pj["ops_45nm"] == 0 and conv.energy_pj["memory_aware"] == 0


def test_real_input_is_counted_as_macs_even_in_an_snn():
    class Hybrid(nn.Module):
        def __init__(self):
            super().__init__()
            self.neuron = IF()
            self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)

        def forward(self, x):
            self.neuron(repeat_time(x, 2))
            # a real tensor holding a single positive value: not spikes (not from a neuron)
            return self.conv(x * 0 + 0.3)

    rows = rows_by_name(profile(Hybrid(), [torch.rand(1, 1, 4, 4)]))
    conv = rows["conv"]
    assert conv.input_kind == "real" and conv.basis == "mac" and conv.input_firing_rate is None
    assert conv.energy_pj["ops_45nm"] == pytest.approx(4 * 4 * 2 * 9 * E_MAC)


def test_threshold_scaled_spikes_are_classified_as_scaled():
    torch.manual_seed(0)
    x = [torch.rand(1, 1, 6, 6)]
    rows = rows_by_name(profile(SpikeConv(T=2, v_threshold=0.4, v_reset=None, scale_output=True), x))
    assert rows["conv.0"].input_kind == "scaled_spikes" and rows["conv.0"].basis == "ac"
    as_mac = rows_by_name(profile(SpikeConv(T=2, v_threshold=0.4, v_reset=None, scale_output=True), x,
                                  EnergyModel(scaled_spikes_as_ac=False)))
    assert as_mac["conv.0"].basis == "mac"
    # one threshold per channel: still one value per channel, foldable into the weights
    per_ch = SpikeConv(T=2, cin=2, v_reset=None, scale_output=True, threshold_channels=2, v_threshold=0.3)
    with torch.no_grad():
        per_ch.neuron.v_threshold.copy_(torch.tensor([0.3, 0.5]))
    rows = rows_by_name(profile(per_ch, [torch.rand(1, 2, 6, 6)]))
    assert rows["conv.0"].input_kind == "scaled_spikes"


# ----------------------------------------------------------------------------- models and reports


def test_released_esdnet_parameter_count():
    model = build_model(PRESETS["esdnet"])
    assert count_parameters(model) == 12_811_463
    assert count_parameters(ann_twin(model)) < 12_811_463  # no temporal attention in the twin


def test_tiny_esdnet_report_is_honest_about_hybrid_layers():
    torch.manual_seed(0)
    m = build_model({"name": "esdnet", "dim": 4, "en_num_blocks": [1, 1, 1], "de_num_blocks": [1, 1, 1], "T": 2})
    rep = measure(m, torch.rand(1, 3, 8, 8), untrained=True)
    by = rows_by_name(rep.layers)
    assert rep.params == count_parameters(m) == sum(r.params for r in rep.layers)
    assert by["encoder_level1.0.shortcut.0"].basis == "mac"  # the shortcut sees real values
    assert by["encoder_level1.0.residual.1"].basis == "ac"  # behind a LIF
    assert by["patch_embed.proj"].steps == 1 and by["encoder_level1.0.residual.1"].steps == 2
    assert by["up3_2/interpolate"].muls > 0
    assert any(n.startswith("untrained weights") for n in rep.notes)
    assert any(n.startswith("hybrid") and "shortcut" in n for n in rep.notes)
    # the twin has the same synaptic shapes outside the temporal attention
    twin = rows_by_name(rep.ann.layers)
    assert twin["encoder_level1.0.residual.1"].macs == by["encoder_level1.0.residual.1"].macs


def test_snn_ann_ratio_matches_hand_formula_on_reported_layers():
    torch.manual_seed(0)
    snn = SpikingDnCNN(in_channels=1, depth=4, width=4, T=2, neuron_kwargs={"v_threshold": 0.3})
    rep = measure(snn, [torch.rand(1, 10, 10), torch.rand(1, 10, 10)])
    assert isinstance(ann_twin(snn), DnCNN) and rep.ann is not None

    def synaptic(rows, spiking):
        e = 0.0
        for r in rows:
            if r.category != "synaptic":
                continue
            if spiking and r.input_kind != "real":
                e += r.macs * r.input_firing_rate * r.steps * E_AC  # SOPs = MACs x rate x T
            else:
                e += r.macs * r.steps * E_MAC
        return e * 1e-12

    def total(rows):
        return synaptic(rows, rows is rep.layers) + sum(r.adds * E_AC + r.muls * E_MUL + r.cmps * E_AC
                                                        for r in rows) * 1e-12

    s, a = synaptic(rep.layers, True), synaptic(rep.ann.layers, False)
    en = rep.energy()
    assert en["ops_45nm"]["snn_synaptic_j"] == pytest.approx(s)
    assert en["ops_45nm"]["ann_synaptic_j"] == pytest.approx(a)
    assert en["ops_45nm"]["synaptic_snn_over_ann"] == pytest.approx(s / a)
    assert en["ops_45nm"]["snn_over_ann"] == pytest.approx(total(rep.layers) / total(rep.ann.layers))
    mem = en["memory_aware"]
    assert mem["snn_over_ann"] == pytest.approx(sum(r.energy_pj["memory_aware"] for r in rep.layers)
                                                / sum(r.energy_pj["memory_aware"] for r in rep.ann.layers))
    assert mem["snn_j"] > en["ops_45nm"]["snn_j"]
    # same shapes: the same dense MACs per step
    assert rep.totals["macs"] == rep.ann.totals["macs"]
    text = format_report(rep)
    assert "body.0.0" in text and "memory-aware total" in text


def test_ann_model_has_no_snn():
    rep = measure(DnCNN(1, depth=3, width=4), torch.rand(1, 8, 8))
    en = rep.energy()
    assert not rep.spiking and rep.ann is None
    assert en["ops_45nm"]["snn_j"] is None and en["ops_45nm"]["ann_j"] > 0
    assert all(r.basis == "mac" for r in rep.layers if r.category == "synaptic")
    assert any("ANN" in n for n in rep.notes)


def test_json_has_required_keys_and_plot(tmp_path):
    torch.manual_seed(0)
    rep = measure(SpikingDnCNN(1, depth=3, width=4, T=2), torch.rand(1, 8, 8))
    d = json.loads(json.dumps(rep.to_dict()))
    assert isinstance(d["params"], int) and d["params"] == count_parameters(SpikingDnCNN(1, depth=3, width=4, T=2))
    for layer in d["layers"]:
        assert {"name", "params", "macs", "input_kind", "input_firing_rate", "sops"} <= set(layer)
    for key in ("ops_45nm", "memory_aware"):
        assert d["energy"][key]["snn_j"] > 0 and d["energy"][key]["ann_j"] > 0
    png = plot_report(rep, tmp_path / "bars.png")
    assert Image.open(png).size[0] > 400


def test_energy_model_overrides_and_presets():
    em = EnergyModel().with_overrides(["e_mac=3.2", "fold_bn=false", "weight-bits=8"])
    assert (em.e_mac, em.fold_bn, em.weight_bits) == (3.2, False, 8)
    assert em.sram_pj(1_000_000) == pytest.approx(1.09e-5 * 1e6 + 13.2)
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        EnergyModel().with_overrides(["nope=1"])
    with pytest.raises(ValueError, match="bad value"):
        EnergyModel().with_overrides(["fold_bn=maybe"])
    assert ENERGY_PRESETS["int8-45nm"].e_ac == 0.03


# ----------------------------------------------------------------------------- command


def _parse(argv):
    p = argparse.ArgumentParser()
    add_energy_parser(p.add_subparsers(dest="command"))
    return p.parse_args(argv)


def test_cmd_energy_on_a_saved_model(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_model(path, build_model(TINY_SNN), TINY_SNN, task="denoise", sigma=25)
    write_images(tmp_path / "imgs", 2, h=16, w=20)
    js, png = tmp_path / "out" / "e.json", tmp_path / "out" / "e.png"
    args = _parse(["energy", "--model", str(path), "--images", str(tmp_path / "imgs"), "--json", str(js),
                   "--plot", str(png)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "45 nm ops, synaptic only" in out and "sigma 25" in out
    d = json.loads(js.read_text())
    assert d["params"] == count_parameters(build_model(TINY_SNN)) and len(d["images"]) == 2
    assert d["sigma"] == 25 and d["energy"]["ops_45nm"]["snn_over_ann"] > 0
    assert Image.open(png).format == "PNG"
    assert not list((tmp_path / "out").glob(".*tmp*"))  # atomic writes leave no temp files


def test_cmd_energy_rejects_bad_constants(tmp_path):
    args = _parse(["energy", "--model", "spiden-cpu", "--set", "e_mac"])
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        args.func(args)


def test_tile_pixels_makes_memory_energy_per_pixel_independent_of_image_size():
    from spikeir.energy import EnergyModel, measure
    from spikeir.models import DnCNN

    torch.manual_seed(0)
    m = DnCNN(depth=3, width=4).eval()

    def per_pixel(size, em):
        rep = measure(m, torch.rand(1, 1, size, size), energy_model=em)
        e = rep.energy()
        return e["memory_aware"]["ann_j"] / size**2, e["ops_45nm"]["ann_j"] / size**2

    whole = EnergyModel()
    tiled = EnergyModel(tile_pixels=64)
    (w16, o16), (w32, o32) = per_pixel(16, whole), per_pixel(32, whole)
    assert w32 > w16 * 1.005  # whole-image memories: bigger images cost more per pixel
    assert o32 == pytest.approx(o16, rel=1e-12)  # the operation model does not depend on size
    (t16, _), (t32, _) = per_pixel(16, tiled), per_pixel(32, tiled)
    assert t32 == pytest.approx(t16, rel=1e-9) and t16 < w16


def test_repricing_a_report_equals_measuring_under_the_other_model():
    from spikeir.energy import EnergyModel, measure

    torch.manual_seed(0)
    snn = build_model(dict(TINY_SNN, depth=4, T=4)).eval()
    x = torch.rand(1, 1, 20, 20)
    other = EnergyModel(tile_pixels=64, e_ac=0.1, potential_bits=16)
    base = measure(snn, x)
    again = measure(snn, x, energy_model=other)  # runs the model again: the independent computation
    priced = base.priced(other)
    assert priced.energy_model == other and base.energy_model == EnergyModel()  # the original is untouched
    for a, b in zip(priced.layers + priced.ann.layers, again.layers + again.ann.layers):
        assert a.basis == b.basis and a.energy_pj == pytest.approx(b.energy_pj, rel=1e-12)
    assert priced.energy() == again.energy()  # same counts, same arithmetic: bit for bit
    assert priced.notes == again.notes
    assert base.energy()["memory_aware"]["snn_j"] != pytest.approx(priced.energy()["memory_aware"]["snn_j"])
    with pytest.raises(ValueError, match="fold_bn"):
        base.priced(EnergyModel(fold_bn=False))
