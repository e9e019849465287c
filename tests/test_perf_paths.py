"""Optimised paths give the plain path's results (float64): BatchNorm folding for inference,
block and attention checkpointing and bool spike storage for training."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from _helpers import break_torch_compile
from spikeir.models import PRESETS, build_model
from spikeir.models.esdnet import ESDNet, ESDNetANN

SMALL = {"dim": 8, "en_num_blocks": [1, 1, 2], "de_num_blocks": [1, 1, 1], "T": 4}


def _perturbed(cls=ESDNet, **kw) -> ESDNet:
    """A float64 model whose weights and BN statistics are all off their initial values."""
    torch.manual_seed(0)
    model = cls(**kw).double()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif t.is_floating_point():
                t.add_(0.1 * torch.randn_like(t))
    return model


def _train_step(model, x, g):
    x = x.clone().requires_grad_(True)
    out = model.train()(x)
    (out * g).sum().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in model.named_parameters()}


ANN_SMALL = {k: v for k, v in SMALL.items() if k != "T"}


@pytest.mark.parametrize("cls,kw,option", [
    (ESDNet, SMALL, "checkpoint_blocks"), (ESDNetANN, ANN_SMALL, "checkpoint_blocks"),
    (ESDNet, SMALL, "checkpoint_attention"), (ESDNet, SMALL, "both"),
])
def test_checkpointing_same_outputs_gradients_and_bn_stats(cls, kw, option):
    plain = _perturbed(cls, **kw)
    ckpt = copy.deepcopy(plain)
    for name in ("checkpoint_blocks", "checkpoint_attention") if option == "both" else (option,):
        setattr(ckpt, name, True)
    x = torch.rand(2, 3, 16, 12, dtype=torch.float64)
    g = torch.randn(2, 3, 16, 12, dtype=torch.float64)
    out_a, gx_a, gp_a = _train_step(plain, x, g)
    out_b, gx_b, gp_b = _train_step(ckpt, x, g)
    assert torch.equal(out_a, out_b) and torch.allclose(gx_a, gx_b, rtol=0, atol=1e-12)
    assert gp_a.keys() == gp_b.keys()
    for name in gp_a:
        assert torch.allclose(gp_a[name], gp_b[name], rtol=0, atol=1e-12), name
    # running statistics are updated once per forward, not again by the recomputation
    for (name, a), b in zip(plain.state_dict().items(), ckpt.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_blocks_keeps_less_for_backward():
    def saved(model) -> int:
        sizes: list[int] = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.train()(torch.rand(1, 3, 16, 16, dtype=torch.float64)).sum()
        return sum(sizes)

    plain = _perturbed(**SMALL)
    blocks, attn = copy.deepcopy(plain), copy.deepcopy(plain)
    blocks.checkpoint_blocks = True
    attn.checkpoint_attention = True
    assert saved(blocks) < saved(plain) / 3
    assert saved(attn) < saved(plain)


def test_checkpointing_is_a_constructor_and_config_option():
    model = build_model({**PRESETS["esdnet-small"], "checkpoint_blocks": True, "checkpoint_attention": True})
    assert model.checkpoint_blocks and model.checkpoint_attention
    assert "checkpoint_blocks" not in model.config and "checkpoint_attention" not in model.config
    assert not build_model(PRESETS["esdnet-small"]).checkpoint_attention
    assert set(model.state_dict()) == set(build_model(PRESETS["esdnet-small"]).state_dict())
    with torch.no_grad():  # no effect without gradients
        assert model.eval()(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)


@pytest.mark.parametrize("cls,kw", [(ESDNet, SMALL), (ESDNetANN, ANN_SMALL)])
def test_fold_bn_same_outputs_and_leaves_the_model_alone(cls, kw):
    model = _perturbed(cls, **kw).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folded = model.fold_bn()
    assert not folded.training and not any(p.requires_grad for p in folded.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 3, 20, 12, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), rtol=0, atol=1e-12)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    model.train()  # the original still trains with batch statistics
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def _reference_mda(m, u):
    """MDA as plain autograd sees it (the release's layers: adaptive pools, products, ReLU)."""
    def gate(pool_gate, x):
        mlp = pool_gate.sharedMLP
        return torch.sigmoid(mlp(torch.nn.functional.adaptive_avg_pool3d(x, 1))
                             + mlp(torch.nn.functional.adaptive_max_pool3d(x, 1)))

    x = u.transpose(0, 1)
    if m.ta is not None:
        x = gate(m.ta, x) * x
    x = gate(m.ca, x.transpose(1, 2)).transpose(1, 2) * x
    flat = x.flatten(1, 2)
    pooled = torch.cat([flat.mean(1, keepdim=True), flat.max(1, keepdim=True).values], 1)
    x = torch.sigmoid(m.sa.conv(pooled)).unsqueeze(1) * x
    return torch.relu(x).transpose(0, 1)


@pytest.mark.parametrize("temporal", [True, False])
def test_attention_keeps_one_block_for_backward_and_matches_plain_autograd(temporal):
    from spikeir.models.esdnet import MDA

    torch.manual_seed(0)
    m = MDA(4, 16, temporal=temporal).double()
    u = torch.randn(4, 2, 16, 6, 5, dtype=torch.float64, requires_grad=True)
    go = torch.randn(u.shape, dtype=torch.float64)
    sizes: dict[str, dict] = {"mda": {}, "ref": {}}  # storage -> elements (a storage saved twice counts once)
    outs, grads = {}, {}
    for name, fn in (("mda", m), ("ref", lambda v: _reference_mda(m, v))):
        m.zero_grad(set_to_none=True)
        u.grad = None
        def pack(t, k=name):
            sizes[k][t.untyped_storage().data_ptr()] = t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outs[name] = fn(u)
        (outs[name] * go).sum().backward()
        grads[name] = [u.grad.clone()] + [p.grad.clone() for p in m.parameters()]
    # the pools are reductions over several dims here, not adaptive pools: another summation order
    torch.testing.assert_close(outs["mda"], outs["ref"], rtol=0, atol=1e-14)
    for a, b in zip(grads["mda"], grads["ref"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    block = u.numel()
    big = lambda k: sum(n for n in sizes[k].values() if n >= block)  # noqa: E731
    # plain autograd: u, each intermediate product and the ReLU output; here: u only
    assert big("ref") >= (4 if temporal else 3) * block and big("mda") == block


# ----------------------------------------------------------------------------- bool spike storage


def _step_in(model, x, g, compact: bool):
    from spikeir.neurons import compact_spike_storage

    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    with compact_spike_storage() if compact else contextlib.nullcontext() as stats:
        out = model.train()(x)
    (out * g).sum().backward()  # outside the block, as in a training loop
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in model.named_parameters()}, stats


def _neuron_output_elements(model, x) -> list[int]:
    """Elements of every neuron output in one forward, counted by hooks (independently of the
    storage code)."""
    from spikeir.neurons import BaseNeuron

    n = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: n.append(o.numel()))
             for m in model.modules() if isinstance(m, BaseNeuron)]
    with torch.no_grad():
        model.train()(x)
    for h in hooks:
        h.remove()
    return n


@pytest.mark.parametrize("family", ["esdnet", "spiden_scalar", "spiden_channel"])
def test_compact_spike_storage_is_bit_exact_and_saves_the_spikes(family):
    from spikeir.models import SpikingDnCNN

    if family == "esdnet":
        model, x = _perturbed(**SMALL), torch.rand(2, 3, 16, 12, dtype=torch.float64)
    else:  # threshold-scaled spikes V_th * S: one scalar threshold per layer, or one per channel
        torch.manual_seed(0)
        kw = {"threshold_channels": 8} if family == "spiden_channel" else {}
        model = SpikingDnCNN(depth=4, width=8, T=3, neuron_kwargs=kw).double()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("v_threshold"):
                    p.uniform_(0.3, 1.5)
        x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    g = torch.randn(x.shape, dtype=torch.float64)
    out_a, gx_a, gp_a, _ = _step_in(model, x, g, compact=False)
    out_b, gx_b, gp_b, stats = _step_in(model, x, g, compact=True)
    assert torch.equal(out_a, out_b) and torch.equal(gx_a, gx_b)
    assert gp_a.keys() == gp_b.keys() and all(torch.equal(gp_a[k], gp_b[k]) for k in gp_a)
    if family == "spiden_channel":  # per-channel scales are not one value: left as they are
        assert stats.tensors == 0 and stats.bytes_saved == 0
        return
    # every neuron output is saved once (by the convolution after it), 7 of its 8 bytes saved
    # (the last neuron of SpikingDnCNN feeds the time average, which saves nothing)
    elements = _neuron_output_elements(model, x)
    fed_to_convs = elements if family == "esdnet" else elements[:-1]
    assert stats.tensors == len(fed_to_convs) and stats.bytes_saved == 7 * sum(fed_to_convs)


def test_compact_spike_storage_leaves_modified_spikes_alone():
    from spikeir.neurons import IF, compact_spike_storage

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.neuron, self.conv = IF(v_threshold=0.5), torch.nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            s = self.neuron(x.unsqueeze(0).repeat(2, 1, 1, 1, 1))
            s.mul_(3.0)  # in place after the neuron: no longer 0/1
            return self.conv(s.flatten(0, 1))

    torch.manual_seed(0)
    net = Net().double()
    x = torch.rand(1, 2, 6, 6, dtype=torch.float64)
    net(x).sum().backward()
    ref = net.conv.weight.grad.clone()
    net.zero_grad()
    with compact_spike_storage() as stats:
        y = net(x)
    y.sum().backward()
    assert stats.tensors == 0 and torch.equal(net.conv.weight.grad, ref)


def test_compact_spike_storage_nests_refuses_odd_views_and_catches_later_inplace_changes():
    from spikeir.neurons import IF, compact_spike_storage

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 2, 3, padding=1).double()
    x = torch.rand(2, 1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    with compact_spike_storage() as outer:
        with compact_spike_storage():
            pass
        y = conv(IF(v_threshold=0.5)(x).flatten(0, 1))  # the outer block still compacts
    y.sum().backward()
    assert outer.tensors == 1
    # an expanded view would need a larger mask than the spikes: kept as it is
    p = torch.rand(2, 1, 4, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    with compact_spike_storage() as stats:
        s = IF(v_threshold=0.5)(x)
        z = (s.unsqueeze(2).expand(2, 1, 4, 2, 6, 6) * p).sum()
    z.backward()
    assert stats.tensors == 0 and torch.equal(p.grad, s.detach().unsqueeze(2).expand(2, 1, 4, 2, 6, 6))
    # a spike tensor changed in place after it was saved: the same error as plain autograd
    with compact_spike_storage():
        s = IF(v_threshold=0.5)(x)
        y = conv(s.flatten(0, 1))
    s.mul_(3.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


# ----------------------------------------------------------------------------- channels-last, compiled attention


def _conv_layouts(model, x) -> set[str]:
    """The memory layout of every convolution input with more than 2 channels and pixels in one
    forward (the spatial attention's 2-channel map and the pooled 1x1 maps have none that matters)."""
    seen: set[str] = set()

    def hook(mod, inp, out):
        if mod.in_channels > 2 and inp[0].shape[-2:].numel() > 1:
            t = inp[0]
            seen.add("channels_last" if t.stride(1) == 1 and t.shape[1] > 1 else "contiguous")

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _dncnn(cls, **kw):
    from spikeir.models.spiking_dncnn import DnCNN, SpikingDnCNN

    kw = {"depth": 5, "width": 8, **({"T": 3} if cls == "snn" else {}), **kw}
    return _perturbed(SpikingDnCNN if cls == "snn" else DnCNN, **kw)


@pytest.mark.parametrize("make,channels", [
    (lambda **kw: _perturbed(ESDNet, **SMALL, **kw), 3), (lambda **kw: _perturbed(ESDNetANN, **ANN_SMALL, **kw), 3),
    (lambda **kw: _dncnn("snn", **kw), 1), (lambda **kw: _dncnn("ann", **kw), 1),
])
def test_channels_last_same_outputs_and_gradients(make, channels):
    plain, cl = make(channels_last=False), make(channels_last=True)
    x = torch.rand(2, channels, 14, 12, dtype=torch.float64)
    g = torch.randn(x.shape, dtype=torch.float64)
    with torch.no_grad():
        assert _conv_layouts(plain.eval(), x) == {"contiguous"}
        assert _conv_layouts(cl.eval(), x) == {"channels_last"}  # every convolution: nothing falls back
        out_a, out_b = plain(x), cl(x)
    assert out_b.is_contiguous() and torch.allclose(out_a, out_b, rtol=0, atol=1e-12)
    out_a, gx_a, gp_a = _train_step(plain, x, g)
    out_b, gx_b, gp_b = _train_step(cl, x, g)
    assert torch.allclose(out_a, out_b, rtol=0, atol=1e-12) and torch.allclose(gx_a, gx_b, rtol=0, atol=1e-12)
    for name in gp_a:
        assert torch.allclose(gp_a[name], gp_b[name], rtol=0, atol=1e-10), name
    assert _conv_layouts(cl, x) == {"channels_last"}  # in training too
    auto = make()  # default: channels-last for inference on CPU, not for training
    assert auto.channels_last is None and _conv_layouts(auto.eval(), x) == {"channels_last"}
    assert _conv_layouts(auto.train(), x) == {"contiguous"}


def test_neuron_keeps_the_layout_of_an_input_repeated_over_time():
    from spikeir.layers import repeat_time
    from spikeir.neurons import LIF

    x = torch.randn(2, 5, 6, 7).contiguous(memory_format=torch.channels_last)
    rep = repeat_time(x, 4)
    out = LIF(v_threshold=0.3)(rep)
    assert out.stride(2) == 1 and out[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, LIF(v_threshold=0.3)(rep.contiguous()))


@pytest.mark.parametrize("cls,kw", [(ESDNet, SMALL), (ESDNetANN, ANN_SMALL)])
def test_compiled_attention_gives_the_eager_outputs(cls, kw, monkeypatch):
    from torch._dynamo.utils import counters

    from spikeir import neurons
    from spikeir.models import esdnet
    from spikeir.neurons import compiled_inference

    calls = []
    real = esdnet._compiled_block_output
    monkeypatch.setattr(esdnet, "_compiled_block_output",
                        lambda temporal, *a: calls.append(temporal) or real(temporal, *a))
    monkeypatch.setattr(neurons, "_KERNELS", {})  # fresh kernels: this test sees them compile
    model = _perturbed(cls, **kw).eval()
    x = torch.rand(1, 3, 13, 10, dtype=torch.float64)
    with torch.no_grad():
        eager = model(x)
        assert calls == []
        graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
        with compiled_inference():
            fused = model(x)
    n_blocks = sum(isinstance(m, esdnet.SRB) for m in model.modules())
    assert calls == [cls is ESDNet] * n_blocks  # every block took the compiled path ...
    assert counters["stats"]["unique_graphs"] > graphs  # ... which Dynamo compiled,
    assert sum(counters["graph_break"].values()) == breaks  # whole, without falling back to eager
    torch.testing.assert_close(fused, eager, rtol=0, atol=1e-12)
    calls.clear()
    with compiled_inference():  # gradients needed: the autograd path, never the compiled one
        out = model.train()(x.requires_grad_(True))
    out.sum().backward()
    assert calls == [] and x.grad is not None


def test_compiled_attention_failure_is_one_clear_line(monkeypatch):
    from spikeir import neurons

    break_torch_compile(monkeypatch, RuntimeError("InductorError: no C++ compiler\nmore"))
    model = ESDNetANN(**ANN_SMALL).eval()  # no neurons: the attention's compile is the one that fails
    with torch.no_grad(), neurons.compiled_inference(), pytest.raises(neurons.CompiledNeuronError) as e:
        model(torch.rand(1, 3, 8, 8))
    assert str(e.value) == ("compiled inference: torch.compile failed on cpu (InductorError: no C++ compiler); "
                            "run without compiled_inference()")


def test_compiled_inference_leaves_export_energy_and_hooks_alone():
    """The fused attention stands in for MDA only as built: a replaced attention (ONNX export's),
    hooks on it and the energy recorder all see the eager modules."""
    from spikeir.energy import measure
    from spikeir.export import export_module
    from spikeir.neurons import compiled_inference

    model = _perturbed(ESDNet, **SMALL).float().eval()
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        flat = export_module(model)
        want = flat(x)
        with compiled_inference():
            torch.testing.assert_close(flat(x), want, rtol=0, atol=1e-5)
        seen = []
        hook = model.encoder_level1[0].attn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
        with compiled_inference():
            model(x)
        hook.remove()
    assert len(seen) == 1
    plain = measure(model, x[0])
    with compiled_inference():
        inside = measure(model, x[0])
    assert [r.name for r in inside.layers] == [r.name for r in plain.layers]
    assert inside.energy() == plain.energy()


def test_dncnn_takes_an_unbatched_image_as_before():
    from spikeir.models.spiking_dncnn import DnCNN

    m = DnCNN(depth=3, width=4, bn=False).eval()
    x = torch.rand(1, 9, 8)
    with torch.no_grad():
        assert torch.allclose(m(x), m(x[None])[0], atol=1e-6)
