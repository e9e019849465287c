import pytest
import torch

from spikeir.models import PRESETS, DnCNN, SpikingDnCNN, build_model, is_spiking
from spikeir.neurons import BaseNeuron


@pytest.mark.parametrize("cls,kw", [(SpikingDnCNN, {"T": 3}), (DnCNN, {})])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(16, 16), (17, 23)])
def test_shapes_any_size(cls, kw, channels, size):
    m = cls(in_channels=channels, depth=4, width=8, **kw).eval()
    x = torch.rand(2, channels, *size)
    assert m(x).shape == x.shape


def test_hidden_layers_see_only_threshold_scaled_spikes():
    torch.manual_seed(0)
    m = SpikingDnCNN(depth=5, width=8, T=4).eval()
    seen = []

    def hook(mod, inp, out):
        th = mod.v_threshold.detach()
        vals = set(torch.unique(out).tolist())
        assert vals <= {0.0, float(th)}, vals
        seen.append(float((out != 0).float().mean()))

    for mod in m.modules():
        if isinstance(mod, BaseNeuron):
            mod.register_forward_hook(hook)
    m(torch.rand(1, 1, 20, 20))
    assert len(seen) == 4  # head neuron + 3 hidden neurons
    assert any(0 < r < 1 for r in seen)


def test_lif_variant_emits_binary_spikes():
    m = SpikingDnCNN(depth=4, width=8, T=3, neuron="lif",
                     neuron_kwargs={"scale_output": False, "v_reset": 0.0, "learn_threshold": False})
    outs = []
    for mod in m.modules():
        if isinstance(mod, BaseNeuron):
            mod.register_forward_hook(lambda _m, _i, o: outs.append(o))
    m(torch.rand(1, 1, 12, 12))
    for o in outs:
        assert set(torch.unique(o).tolist()) <= {0.0, 1.0}


def test_direct_encoding_and_time_average_readout():
    torch.manual_seed(1)
    m = SpikingDnCNN(depth=4, width=8, T=5).eval()
    head_batches, tail_inputs, body_out = [], [], []
    m.head.register_forward_hook(lambda _m, i, o: head_batches.append(i[0].shape[0]))
    m.tail.register_forward_hook(lambda _m, i, o: tail_inputs.append(i[0]))
    m.body.register_forward_hook(lambda _m, i, o: body_out.append(o))
    x = torch.rand(2, 1, 10, 10)
    y = m(x)
    assert head_batches == [2]  # the analog first conv runs once, not T times
    assert body_out[0].shape[0] == 5
    torch.testing.assert_close(tail_inputs[0], body_out[0].mean(0))
    torch.testing.assert_close(y, x - m.tail(body_out[0].mean(0)))


@pytest.mark.parametrize("cfg", [
    {"name": "spiking_dncnn", "depth": 4, "width": 8, "T": 2},
    {"name": "dncnn", "depth": 4, "width": 8},
])
def test_training_steps_reduce_loss(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    clean = torch.rand(4, 1, 16, 16) * 0.5 + 0.25
    noisy = clean + 0.1 * torch.randn_like(clean)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(model(noisy), clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_presets_and_errors():
    for name, cfg in PRESETS.items():
        m = build_model(cfg)
        assert is_spiking(m) == (cfg["name"] in ("spiking_dncnn", "esdnet")), name
    with pytest.raises(ValueError, match="unknown model"):
        build_model({"name": "nope"})
    with pytest.raises(ValueError, match="bad arguments"):
        build_model({"name": "dncnn", "colour": 3})
    with pytest.raises(ValueError, match="depth"):
        SpikingDnCNN(depth=2)
    with pytest.raises(ValueError, match="T must be"):
        SpikingDnCNN(T=0)
