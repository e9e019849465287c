"""Optimised ESDNet paths give the plain path's results (float64): BatchNorm folding for inference,
block and attention checkpointing for training."""

from __future__ import annotations

import copy

import pytest
import torch

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
    assert saved(attn) < 0.8 * saved(plain)


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
