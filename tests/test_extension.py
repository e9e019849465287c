"""Extension points: a model class of the user's own named in YAML, trained by the standard
trainer (the example in examples/), and the public encoders."""

from pathlib import Path

import pytest
import torch

from _helpers import write_images
from spikeir.config import load_config
from spikeir.io import load_model
from spikeir.layers import rate_encode, repeat_time
from spikeir.models import build_model, is_spiking
from spikeir.neurons import record_firing_rates
from spikeir.train import train

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_example_derainer_is_short_and_trains_with_the_standard_trainer(tmp_path, monkeypatch):
    src = EXAMPLES / "tiny_spiking_derainer.py"
    assert len(src.read_text().splitlines()) < 100
    monkeypatch.syspath_prepend(str(EXAMPLES))
    write_images(tmp_path / "train", 2, rgb=True)
    cfg = load_config(None)
    cfg.update(task="derain", loss="ssim",
               model={"class": "tiny_spiking_derainer:TinySpikingDerainer", "dim": 4, "T": 2})
    cfg["data"].update({"train": str(tmp_path / "train"), "val": str(tmp_path / "train"), "patch": 16,
                        "batch_size": 2, "rain": "light", "val_crop": 24})
    cfg["train"].update({"steps": 3, "log_every": 1, "val_every": 100, "ckpt_every": 3})
    res = train(cfg, tmp_path / "run", device="cpu", progress=False)
    assert res["task"] == "derain" and 0 < res["mean"]["firing_rate"] < 1
    model = load_model(tmp_path / "run" / "model.safetensors", "cpu")  # rebuilt from the import path
    assert type(model).__name__ == "TinySpikingDerainer" and is_spiking(model)
    x = torch.rand(1, 3, 17, 23)  # odd sizes: padded and cropped back
    with torch.no_grad(), record_firing_rates(model) as fr:
        y = model(x)
    assert y.shape == x.shape and 0 < fr.mean < 1


@pytest.mark.parametrize("path,needle", [
    ("no_such_module_xyz:Model", "cannot import model class"), ("torch.nn:NoSuchClass", "cannot import"),
    ("torch:Tensor", "not a torch.nn.Module"), ("justaname", "package.module:Class"),
])
def test_model_class_by_import_path_errors_are_one_line(path, needle):
    with pytest.raises(ValueError, match=needle):
        build_model({"class": path})


def test_model_class_by_import_path_builds_any_module():
    m = build_model({"class": "torch.nn:Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3})
    assert isinstance(m, torch.nn.Conv2d) and m.out_channels == 2


def test_encoders_shapes_and_statistics():
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0, 1.7, -0.3]])
    d = repeat_time(x, 3)
    assert d.shape == (3, 1, 6) and torch.equal(d[2], x)
    g = torch.Generator().manual_seed(0)
    s = rate_encode(x, 20000, generator=g)
    assert s.shape == (20000, 1, 6) and set(s.unique().tolist()) <= {0.0, 1.0}
    mean = s.mean(0)[0]
    expect = x.clamp(0, 1)[0]
    # binomial standard error sqrt(p(1-p)/T) <= 0.0036; 5 standard errors
    assert torch.all((mean - expect).abs() <= 5 * torch.sqrt(expect * (1 - expect) / 20000) + 1e-12)
    with pytest.raises(ValueError, match="T must be"):
        rate_encode(x, 0)


def test_tdbn_normalises_over_time_batch_and_space_with_threshold_scale():
    from spikeir.layers import TdBatchNorm2d

    torch.manual_seed(0)
    x = torch.randn(3, 2, 4, 5, 5) * 3 + 1  # [T, B, C, H, W]
    bn = TdBatchNorm2d(4, v_threshold=0.5, alpha=0.7).train()
    y = bn(x)
    assert y.shape == x.shape and torch.allclose(bn.weight, torch.full((4,), 0.35))
    # independent: per channel, statistics over (T, B, H, W) with the biased variance
    mu = x.mean(dim=(0, 1, 3, 4), keepdim=True)
    var = x.var(dim=(0, 1, 3, 4), unbiased=False, keepdim=True)
    assert torch.allclose(y, 0.35 * (x - mu) / torch.sqrt(var + 1e-5), atol=1e-5)
    assert torch.allclose(bn(x.flatten(0, 1)), y.flatten(0, 1), atol=1e-6)  # the flattened form agrees
    with pytest.raises(ValueError, match="v_threshold > 0"):
        TdBatchNorm2d(4, v_threshold=0.0)


def test_public_srb_keeps_the_sequence_shape_and_matches_esdnet_blocks():
    from spikeir.layers import TdBatchNorm2d
    from spikeir.models.esdnet import SRB, ESDNet

    x = torch.rand(4, 2, 8, 6, 6)
    blk = SRB(8, T=4, v_threshold=0.15, tau=2.0)
    assert blk(x).shape == x.shape
    # the block inside ESDNet is built the same way: same names, shapes and initial values
    net = ESDNet(dim=8, en_num_blocks=[1, 1, 1], de_num_blocks=[1, 1, 1], T=4)
    inner = net.encoder_level1[0]
    assert {k: v.shape for k, v in blk.state_dict().items()} == {k: v.shape for k, v in inner.state_dict().items()}
    bns = [m for m in inner.modules() if isinstance(m, TdBatchNorm2d)]
    assert len(bns) == 3 and torch.allclose(bns[1].weight, torch.full((8,), 0.15 * 0.2 / 2**0.5))
    ann = SRB(8, T=1, spiking=False)
    assert ann.attn.ta is None and not any(isinstance(m, TdBatchNorm2d) for m in ann.modules())
    assert ann(torch.rand(1, 2, 8, 6, 6)).shape == (1, 2, 8, 6, 6)
