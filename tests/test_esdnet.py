"""ESDNet: parity with the released network (shared fixture), layout, release loading/conversion."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from spikeir.io import load_model
from spikeir.models import PRESETS, build_model, is_spiking
from spikeir.models.esdnet import ESDNet, ESDNetANN
from spikeir.neurons import LIF
from spikeir.release import cmd_convert, convert_esdnet_release, load_esdnet_release

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "esdnet_reference_small.safetensors"
TINY = {"dim": 4, "en_num_blocks": [1, 1, 1], "de_num_blocks": [1, 1, 1], "T": 2}
TOL = 1e-10  # the issue asks for 1e-8; with float64 thresholds we match to ~1e-13


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    if not FIXTURE.is_file():
        pytest.skip(f"ESDNet parity fixture not found at {FIXTURE} (the shared/ folder is not checked out)")
    return load_file(str(FIXTURE))


def _release_state(ref: dict) -> dict[str, torch.Tensor]:
    return {k[6:]: v.clone() for k, v in ref.items() if k.startswith("state.")}


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------------ parity


def test_parity_eval(ref):
    model = load_esdnet_release(_release_state(ref)).double()
    assert model.config["dim"] == 16 and model.config["T"] == 4
    assert model.config["en_num_blocks"] == [1, 1, 2] and model.config["de_num_blocks"] == [1, 1, 1]
    assert not model.training
    with torch.no_grad():
        out = model(ref["input"])
    assert _maxdiff(out, ref["output_eval"]) < TOL


def test_parity_train_and_gradients(ref):
    model = load_esdnet_release(_release_state(ref)).double().train()  # fresh: BN stats get updated
    x = ref["input"].clone().requires_grad_(True)
    out = model(x)
    assert _maxdiff(out, ref["output_train"]) < TOL
    (out * ref["grad_weight"]).sum().backward()
    assert _maxdiff(x.grad, ref["grad_input"]) < TOL
    assert _maxdiff(model.patch_embed.proj.weight.grad, ref["grad_patch_embed"]) < TOL


# ------------------------------------------------------------------------------ layout


def _release_keys(T: int = 4) -> set[str]:
    """State-dict keys of the released ESDNet (dim 48, encoder [4,4,8], decoder [2,2,2])."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    srb = [f"residual.{i}.weight" for i in (1, 4)] + [f"residual.{i}.{b}" for i in (2, 5) for b in bn]
    srb += ["shortcut.0.weight"] + [f"shortcut.1.{b}" for b in bn]
    srb += [f"attn.{a}.sharedMLP.{i}.weight" for a in ("ta", "ca") for i in (0, 2)] + ["attn.sa.conv.weight"]
    keys = {"patch_embed.proj.weight", "output.0.weight", "output.0.bias"}
    for side, counts in (("encoder", (4, 4, 8)), ("decoder", (2, 2, 2))):
        for level, n in zip((1, 2, 3), counts):
            keys |= {f"{side}_level{level}.{i}.{k}" for i in range(n) for k in srb}
    for mod in ("down1_2.maxpool_conv", "down2_3.maxpool_conv", "up3_2.up", "up2_1.up", "reduce_chan_level2"):
        keys |= {f"{mod}.1.weight"} | {f"{mod}.2.{b}" for b in bn}
    keys |= {f"refinement.ca.{i}.{p}" for i in (1, 3) for p in ("weight", "bias")}
    keys |= {f"refinement.sa.{i}.{p}" for i in (0, 1, 3) for p in ("weight", "bias")}
    return keys


def test_default_matches_release_keys_and_parameter_count():
    model = ESDNet()
    assert set(model.state_dict()) == _release_keys()
    assert sum(p.numel() for p in model.parameters()) == 12_811_463
    assert ESDNet(en_num_blocks=[4, 4, 8, 8], de_num_blocks=[2, 2, 2, 2]).config == model.config
    assert build_model(PRESETS["esdnet"]).config == model.config
    assert is_spiking(model) and all(m.v_threshold == 0.15 for m in model.modules() if isinstance(m, LIF))
    tdbn = model.encoder_level1[0].residual
    assert torch.allclose(tdbn[2].weight, torch.full((48,), 0.15 / 2**0.5))
    assert torch.allclose(tdbn[5].weight, torch.full((48,), 0.03 / 2**0.5))


def test_fixture_keys_equal_model_keys(ref):
    model = ESDNet(dim=16, en_num_blocks=[1, 1, 2, 2], de_num_blocks=[1, 1, 1, 1], T=4)
    assert set(model.state_dict()) == set(_release_state(ref))


@pytest.mark.parametrize("shape", [(1, 3, 30, 42), (2, 3, 33, 17), (1, 3, 2, 3), (1, 3, 8, 12)])
def test_any_size_returns_input_size(shape):
    torch.manual_seed(0)
    model = ESDNet(**TINY).eval()
    with torch.no_grad():
        out = model(torch.rand(shape))
    assert out.shape == shape and torch.isfinite(out).all()


@pytest.mark.parametrize("T", [1, 2, 8])
def test_temporal_attention_follows_T(T):
    model = ESDNet(**{**TINY, "T": T}).eval()
    ta = model.encoder_level1[0].attn.ta.sharedMLP
    assert ta[0].weight.shape == (max(1, T // 4), T, 1, 1, 1)
    assert ta[2].weight.shape == (T, max(1, T // 4), 1, 1, 1)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 12, 8)).shape == (2, 3, 12, 8)


def test_patch_embedding_runs_once_per_forward():
    model = ESDNet(**{**TINY, "T": 4}).eval()
    seen: list[int] = []
    model.patch_embed.proj.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    with torch.no_grad():
        model(torch.rand(2, 3, 8, 8))
    assert seen == [2]


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = ESDNet(**TINY).train()
    model(torch.rand(2, 3, 8, 8)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_ann_twin():
    ann = ESDNetANN(dim=4, en_num_blocks=[1, 1, 1], de_num_blocks=[1, 1, 1]).eval()
    assert not is_spiking(ann)
    keys = set(ann.state_dict())
    snn_keys = set(ESDNet(**{**TINY, "T": 4}).state_dict())
    assert keys == {k for k in snn_keys if ".attn.ta." not in k}
    with torch.no_grad():
        assert ann(torch.rand(1, 3, 10, 14)).shape == (1, 3, 10, 14)
    with pytest.raises(TypeError):
        ESDNetANN(T=4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="en_num_blocks"):
        ESDNet(en_num_blocks=[1, 1])
    with pytest.raises(ValueError, match="T must be"):
        ESDNet(T=0)
    with pytest.raises(ValueError, match="in_channels"):
        ESDNet(in_channels=3, out_channels=1)


# ------------------------------------------------------------------------------ release loading


def _tiny_release_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = ESDNet(**TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_loader_infers_config_from_nested_dataparallel_pth(tmp_path):
    state = _tiny_release_state()
    path = tmp_path / "release.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = load_esdnet_release(path)
    assert model.config == {**TINY, "in_channels": 3, "out_channels": 3, "v_threshold": 0.15, "tau": 2.0}
    assert next(model.parameters()).dtype == torch.float32
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    st = tmp_path / "release.safetensors"
    save_file(state, str(st))
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(load_esdnet_release(st)(x), model(x))


def test_loader_rejects_what_is_not_an_esdnet_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="not an ESDNet release checkpoint"):
        load_esdnet_release({"conv.weight": torch.zeros(3, 3), "fc.bias": torch.zeros(3)})
    state = _tiny_release_state()
    del state["decoder_level1.0.residual.4.weight"]
    with pytest.raises(ValueError, match="does not match") as e:
        load_esdnet_release(state)
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError):
        load_esdnet_release(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="refusing to load"):
        load_esdnet_release(garbage)


_EXECUTED: list[str] = []


def _record_execution() -> dict:
    _EXECUTED.append("code ran")
    return {}


class _Payload:
    """Unpickling this object calls :func:`_record_execution`: a stand-in for malicious code."""

    def __reduce__(self):
        return (_record_execution, ())


def test_loader_never_executes_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        pickle.dump({"state_dict": _Payload()}, f, protocol=2)
    torch.save({"state_dict": _tiny_release_state(), "extra": _Payload()}, tmp_path / "evil2.pth")
    for p in (path, tmp_path / "evil2.pth"):
        with pytest.raises(ValueError, match="refusing to load.*_record_execution") as e:
            load_esdnet_release(p)
        assert "\n" not in str(e.value)
    assert _EXECUTED == []


def test_convert_then_load_model_round_trip(tmp_path, capsys):
    src = tmp_path / "release.pth"
    torch.save({"params": _tiny_release_state(1)}, src)
    dst = tmp_path / "esdnet.safetensors"
    args = argparse.Namespace(kind="esdnet", src=str(src), output=str(dst), overwrite=False)
    assert cmd_convert(args) == 0
    assert "esdnet" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="overwrite"):
        cmd_convert(args)
    assert cmd_convert(argparse.Namespace(**{**vars(args), "overwrite": True})) == 0
    with pytest.raises(ValueError, match="unknown checkpoint kind"):
        cmd_convert(argparse.Namespace(**{**vars(args), "kind": "restormer"}))
    model = load_model(dst, device="cpu")
    assert isinstance(model, ESDNet) and model.spikeir_info["task"] == "derain"
    x = torch.rand(2, 3, 12, 16)
    with torch.no_grad():
        assert torch.equal(model(x), load_esdnet_release(src)(x))
    assert convert_esdnet_release(src, tmp_path / "b.safetensors")["name"] == "esdnet"
