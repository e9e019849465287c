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
        assert is_spiking(m) == (cfg["name"] in ("spiking_dncnn", "esdnet", "spiking_unet")), name
    with pytest.raises(ValueError, match="unknown model"):
        build_model({"name": "nope"})
    with pytest.raises(ValueError, match="bad arguments"):
        build_model({"name": "dncnn", "colour": 3})
    with pytest.raises(ValueError, match="depth"):
        SpikingDnCNN(depth=2)
    with pytest.raises(ValueError, match="T must be"):
        SpikingDnCNN(T=0)


# --- ANN -> SNN initialisation -------------------------------------------------------------


def _if_time_mean(a: torch.Tensor, th: float, T: int) -> torch.Tensor:
    """Soft-reset IF from V_th/2, constant input, threshold-scaled spikes: simulated step by step."""
    v = torch.full_like(a, th / 2)
    out = torch.zeros_like(a)
    for _ in range(T):
        v = v + a
        s = (v >= th).to(a.dtype)
        v = v - s * th
        out += s * th
    return out / T


def test_quantiser_formula_matches_the_if_neuron():
    from spikeir.neurons import IF

    a = torch.linspace(-0.5, 2.0, 401)
    th, T = 1.3, 4
    n = IF(v_threshold=th, v_reset=None, scale_output=True, v_init="half")
    ours = n(a.expand(T, -1)).mean(0)
    torch.testing.assert_close(ours, _if_time_mean(a, th, T))


def test_threshold_minimises_quantisation_error():
    from spikeir.models.spiking_dncnn import quantise_error_threshold

    # activations already on a 4-level grid with step 1: V_th = 4 at T = 4 codes them exactly
    a = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]).repeat(200)
    assert quantise_error_threshold(a, 4) == pytest.approx(4.0)
    # heavy tail: the error-optimal threshold clips the tail (below the max) and beats the max
    g = torch.Generator().manual_seed(0)
    a = torch.relu(torch.randn(20000, generator=g)) ** 2
    th = quantise_error_threshold(a, 4)

    def err(t):
        return float(((a - _if_time_mean(a, t, 4)) ** 2).mean())

    assert th < float(a.max())
    assert err(th) < err(float(a.max())) and err(th) < err(float(a.median()))
    dense = torch.linspace(float(a[a > 0].median()), float(a.max()), 400)
    assert err(th) <= 1.05 * min(err(float(t)) for t in dense)
    assert quantise_error_threshold(torch.zeros(10), 4) == 1.0


def test_init_from_ann_copies_weights_and_converges_with_T():
    from spikeir.models.spiking_dncnn import init_from_ann

    torch.manual_seed(0)
    ann = DnCNN(depth=4, width=8).eval()
    for m in ann.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(2, 1, 16, 16)
    errs = []
    for T in (2, 8, 64):
        snn = SpikingDnCNN(depth=4, width=8, T=T, neuron_kwargs={"v_init": "half"})
        ths = init_from_ann(snn, ann, x)
        snn.eval()
        assert len(ths) == 3 and all(t > 0 for t in ths)
        torch.testing.assert_close(snn.head.weight, ann.net[0].weight)
        torch.testing.assert_close(snn.tail.weight, ann.net[-1].weight)
        torch.testing.assert_close(snn.body[0][1].running_var, ann.net[3].running_var)
        with torch.no_grad():
            errs.append(float((snn(x) - ann(x)).abs().mean()))
    assert errs[2] < errs[1] < errs[0]
    assert errs[2] < 0.1 * errs[0]


def test_init_from_ann_refuses_other_layouts():
    from spikeir.models.spiking_dncnn import init_from_ann

    with pytest.raises(ValueError, match="layouts differ"):
        init_from_ann(SpikingDnCNN(depth=5, width=8), DnCNN(depth=4, width=8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="does not match"):
        init_from_ann(SpikingDnCNN(depth=4, width=8), DnCNN(depth=4, width=16), torch.rand(1, 1, 8, 8))


def test_quant_relu_is_the_if_rate_code_with_straight_through_gradients():
    from spikeir.models.spiking_dncnn import QuantReLU

    q = QuantReLU(T=4, v_threshold=1.3)
    a = (torch.linspace(-0.5, 2.0, 401) + 1e-3).requires_grad_()  # off the kinks at 0 and V_th
    y = q(a)
    torch.testing.assert_close(y.detach(), _if_time_mean(a.detach(), 1.3, 4))
    y.sum().backward()
    inside = (a.detach() > 0) & (a.detach() < 1.3)
    assert bool((a.grad[inside] == 1).all()) and bool((a.grad[a.detach() > 1.3] == 0).all())
    u = (a.detach() * 4 / 1.3).clamp(0, 4)
    expected = ((torch.floor(u + 0.5) - u) / 4)[inside].sum() + (a.detach() > 1.3).sum()
    torch.testing.assert_close(q.v_threshold.grad, expected, rtol=1e-5, atol=1e-5)


def test_quantisation_aware_twin_hands_over_its_thresholds_and_matches_the_snn_on_a_constant_code():
    from spikeir.models.spiking_dncnn import QuantReLU, init_from_ann

    torch.manual_seed(0)
    ann = DnCNN(depth=3, width=8, quant_T=4).eval()
    ann.net[1].v_threshold.data.fill_(0.7)
    ann.net[4].v_threshold.data.fill_(1.9)
    assert sum(isinstance(m, QuantReLU) for m in ann.modules()) == 2
    snn = SpikingDnCNN(depth=3, width=8, T=4, neuron_kwargs={"v_init": "half"})
    assert init_from_ann(snn, ann, torch.rand(1, 1, 8, 8)) == pytest.approx([0.7, 1.9])
    snn.eval()
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        # the first neuron sees a constant input: its time average is exactly the QuantReLU output
        head = snn.head_neuron(snn.head(x).expand(4, -1, -1, -1, -1)).mean(0)
        torch.testing.assert_close(head, ann.net[1](ann.net[0](x)))


def test_nafnet_teacher_any_size():
    from spikeir.models import NAFNet
    from spikeir.models.nafnet import LayerNorm2d

    torch.manual_seed(0)
    m = build_model(PRESETS["nafnet-s"])
    assert isinstance(m, NAFNet) and not is_spiking(m)
    for size in [(17, 23), (3, 5), (16, 16)]:
        x = torch.rand(2, 1, *size)
        assert m(x).shape == x.shape
    ln = LayerNorm2d(4)
    x = torch.randn(2, 4, 5, 6)
    torch.testing.assert_close(ln(x), torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (4,), eps=1e-6)
                               .permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="same length"):
        NAFNet(enc_blk_nums=[1, 1], dec_blk_nums=[1])


def test_spiking_unet_student_sees_only_spikes_and_keeps_size():
    from spikeir.models import SpikingUNet

    torch.manual_seed(0)
    m = build_model(PRESETS["spiking-unet-s"]).eval()
    assert isinstance(m, SpikingUNet) and is_spiking(m)
    for size in [(17, 23), (3, 5), (16, 16)]:
        x = torch.rand(2, 1, *size)
        assert m(x).shape == x.shape
    # every convolution but the analog head and tail reads threshold-scaled spikes only
    thresholds = {n.v_threshold.item() for n in m.modules() if isinstance(n, BaseNeuron)}
    seen = []

    def check(mod, inp, _out):
        vals = set(torch.unique(inp[0]).tolist())
        assert vals <= {0.0} | thresholds, (mod, sorted(vals)[:5])
        seen.append(mod)

    for name, mod in m.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and name not in ("head", "tail"):
            mod.register_forward_hook(check)
    m(torch.rand(1, 1, 16, 16))
    assert len(seen) == sum(isinstance(x, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for x in m.modules()) - 2


@pytest.mark.parametrize("preset", ["spiking-unet-s", "nafnet-s"])
def test_distillation_models_train(preset):
    torch.manual_seed(0)
    m = build_model(PRESETS[preset])
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    clean = torch.rand(4, 1, 16, 16) * 0.5 + 0.25
    noisy = clean + 0.1 * torch.randn_like(clean)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.mse_loss(m(noisy), clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.7 * losses[0], losses


def test_percentile_threshold_is_the_percentile_of_positive_activations():
    import numpy as np

    from spikeir.models.spiking_dncnn import percentile_threshold

    a = torch.cat([-torch.rand(500), torch.zeros(300), torch.rand(2000) * 7])
    pos = a[a > 0].numpy()
    assert percentile_threshold(a, 99.0) == pytest.approx(float(np.percentile(pos, 99.0)), rel=1e-5)
    assert percentile_threshold(a, 100.0) == pytest.approx(float(pos.max()), rel=1e-6)
    with pytest.raises(ValueError, match="percentile"):
        percentile_threshold(a, 0.0)


def test_converted_snn_counts_spikes_as_rounded_ann_activations():
    """convert_ann: the first layer sees a constant input, so each neuron's spike count over T
    steps is clip(floor(a T / V_th + 1/2), 0, T) of its ANN activation a; and the converted
    network approaches the ANN as T grows."""
    from spikeir.models.spiking_dncnn import convert_ann

    torch.manual_seed(1)
    ann = DnCNN(depth=4, width=8).eval()
    x = torch.rand(2, 1, 16, 16)
    errs = []
    for T in (4, 32, 256):
        snn = convert_ann(ann, T, x, threshold="percentile", percentile=100.0)
        assert not snn.training and isinstance(snn, SpikingDnCNN) and snn.T == T
        seen = []
        h = snn.head_neuron.register_forward_hook(lambda _m, _i, o, seen=seen: seen.append(o))
        with torch.no_grad():
            y = snn(x)
            a = torch.relu(ann.net[0](x))
        h.remove()
        th = float(snn.head_neuron.v_threshold)
        assert th == pytest.approx(float(a.max()), rel=1e-6)  # the 100th percentile: the largest activation
        counts = (seen[0] != 0).sum(0).float()
        torch.testing.assert_close(counts, torch.clamp(torch.floor(a * T / th + 0.5), 0, T), atol=0, rtol=0)
        errs.append(float((y - ann(x)).abs().mean()))
    assert errs[2] < errs[1] < errs[0] and errs[2] < 0.02
