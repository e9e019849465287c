"""Training workflow keys: EMA, gradient accumulation, mixed precision, best checkpoint, several
validation sets, TensorBoard. Each checked against an independent computation."""

import json

import pytest
import torch
from torch import nn

from _helpers import TINY_ANN, tiny_train_cfg, write_images
from spikeir.config import apply_overrides
from spikeir.data import read_image
from spikeir.evaluate import evaluate_denoise
from spikeir.io import load_model, read_model_file
from spikeir.neurons import IF
from spikeir.train import train
from spikeir.train_tools import EMA, spike_flips


def tiny_cfg(tmp_path, model=None, **train_kw):
    return tiny_train_cfg(tmp_path, model, **{"val_every": 2, **train_kw})


def records(run) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def test_ema_update_follows_its_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = EMA(model, 0.9, lambda: nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)))
    expect = [p.detach().clone() for p in model.parameters()]
    for n in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model[1].running_mean.add_(1.0)
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        expect = [d * e + (1 - d) * p.detach() for e, p in zip(expect, model.parameters())]
    for e, s in zip(expect, ema.shadow.parameters()):
        torch.testing.assert_close(s, e)
    assert torch.equal(ema.shadow[1].running_mean, model[1].running_mean)  # buffers copied, not averaged
    with pytest.raises(ValueError, match="train.ema"):
        EMA(model, 1.5, lambda: model)


def test_ema_is_validated_saved_and_resumed_exactly(tmp_path):
    cfg = tiny_cfg(tmp_path, ema=0.8)
    train(cfg, tmp_path / "straight", device="cpu", progress=False)
    run = tmp_path / "straight"
    vals = [r for r in records(run) if "val_psnr" in r]
    assert vals and all("val_psnr_ema" in r and "val_ssim_ema" in r for r in vals)
    raw, _ = read_model_file(run / "model.safetensors")
    ema, info = read_model_file(run / "model_ema.safetensors")
    assert info["ema"] == {"decay": 0.8, "updates": 6}
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    # the logged EMA score is the score of the saved EMA file
    m = load_model(run / "model_ema.safetensors", "cpu")
    res = evaluate_denoise(m, [("v", read_image(tmp_path / "val" / "img00.png", gray=True))], 25.0, "cpu")
    assert res["mean"]["psnr"] == pytest.approx(vals[-1]["val_psnr_ema"], abs=1e-9)
    # stop after 4 steps, resume: the EMA continues as in the straight run
    train(apply_overrides(cfg, ["train.stop_at=4"]), tmp_path / "legs", device="cpu", progress=False)
    train(cfg, tmp_path / "legs", device="cpu", progress=False, resume=True)
    again, _ = read_model_file(tmp_path / "legs" / "model_ema.safetensors")
    for k in ema:
        assert torch.equal(ema[k], again[k]), k


def test_gradient_accumulation_equals_one_big_batch(tmp_path, monkeypatch):
    """accum_steps=2 of batch 4 == one batch of 8 made of the same two micro-batches (a model
    without BatchNorm, where per-sample terms do not interact)."""
    from spikeir import data

    ann = {**TINY_ANN, "bn": False}
    cfg = tiny_cfg(tmp_path, model=ann, steps=3, accum_steps=2, val_every=100)
    train(cfg, tmp_path / "accum", device="cpu", progress=False)

    orig = data.DenoisePatchSampler.batch

    def big(self, index):
        a, b = orig(self, 2 * index), orig(self, 2 * index + 1)
        return torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])

    monkeypatch.setattr(data.DenoisePatchSampler, "batch", big)
    train(apply_overrides(cfg, ["train.accum_steps=1"]), tmp_path / "big", device="cpu", progress=False)
    a, _ = read_model_file(tmp_path / "accum" / "model.safetensors")
    b, _ = read_model_file(tmp_path / "big" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-6, rtol=1e-5)
    la = [r["loss"] for r in records(tmp_path / "accum") if "loss" in r]
    lb = [r["loss"] for r in records(tmp_path / "big") if "loss" in r]
    assert la == pytest.approx(lb, rel=1e-5)


class _Diff(nn.Module):
    """A 1x1 convolution taking ``x[1] - x[0]``, then an IF neuron over T=1 with threshold 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1))
        self.neuron = IF(v_threshold=0.5)

    def forward(self, x):
        return self.neuron(self.conv(x)[None])[0]


def test_spike_flips_counts_spikes_that_bf16_rounding_moves():
    x = torch.empty(1, 2, 4, 5)
    x[:, 1] = 1.5
    # 1 + 2**-9 is not a bfloat16 (7-bit mantissa): it rounds to 1.0, so 1.5 - x0 moves from
    # 0.498 (below the threshold) to exactly 0.5 (a spike) at every one of the 20 positions
    x[:, 0] = 1 + 2**-9
    assert spike_flips(_Diff(), x, torch.bfloat16) == {"flipped": 20, "spikes_fp32": 0, "elements": 20,
                                                       "fraction": 1.0}
    x[:, 0] = 1.0  # representable: nothing moves
    assert spike_flips(_Diff(), x, torch.bfloat16) == {"flipped": 0, "spikes_fp32": 20, "elements": 20,
                                                       "fraction": 0.0}


def test_bf16_training_runs_and_reports_spike_flips(tmp_path):
    cfg = tiny_cfg(tmp_path, amp="bf16")
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    vals = [r for r in records(tmp_path / "run") if "val_psnr" in r]
    assert vals and all(0.0 <= r["amp_spike_flips"] <= 1.0 for r in vals)
    tensors, _ = read_model_file(tmp_path / "run" / "model.safetensors")
    assert all(t.dtype != torch.bfloat16 and bool(torch.isfinite(t).all()) for t in tensors.values())


def test_best_checkpoint_is_the_best_logged_validation(tmp_path):
    cfg = tiny_cfg(tmp_path, best="val_psnr", steps=8)
    cfg["optim"]["lr"] = 0.05  # a noisy run, so the best is not simply the last
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    recs = records(tmp_path / "run")
    vals = [(r["val_psnr"], r["step"]) for r in recs if "val_psnr" in r]
    top, top_step = max(vals)
    _, info = read_model_file(tmp_path / "run" / "model_best.safetensors")
    assert info["best"] == {"metric": "val_psnr", "value": top, "step": top_step}
    assert recs[-1]["best"]["step"] == top_step
    m = load_model(tmp_path / "run" / "model_best.safetensors", "cpu")
    res = evaluate_denoise(m, [("v", read_image(tmp_path / "val" / "img00.png", gray=True))], 25.0, "cpu")
    assert res["mean"]["psnr"] == pytest.approx(top, abs=1e-9)


def test_several_validation_sets_are_logged_each(tmp_path):
    from spikeir.data import load_image_set

    write_images(tmp_path / "val2", 2, h=20, w=28)
    cfg = tiny_cfg(tmp_path)
    cfg["data"]["val"] = [str(tmp_path / "val"), str(tmp_path / "val2")]
    res = train(cfg, tmp_path / "run", device="cpu", progress=False)
    last = [r for r in records(tmp_path / "run") if "val_sets" in r][-1]
    assert set(last["val_sets"]) == {str(tmp_path / "val"), str(tmp_path / "val2")}
    assert last["val_psnr"] == last["val_sets"][str(tmp_path / "val")]["psnr"]
    m = load_model(tmp_path / "run" / "model.safetensors", "cpu")
    own = evaluate_denoise(m, load_image_set(tmp_path / "val2", gray=True), 25.0, "cpu")
    assert last["val_sets"][str(tmp_path / "val2")]["psnr"] == pytest.approx(own["mean"]["psnr"], abs=1e-9)
    assert res["sets"][str(tmp_path / "val2")]["psnr"] == pytest.approx(own["mean"]["psnr"], abs=1e-9)


def test_tensorboard_scalars_match_the_log(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is in the dev extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny_cfg(tmp_path, tensorboard=True), tmp_path / "run", device="cpu", progress=False)
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    logged = [(r["step"], r["loss"]) for r in records(tmp_path / "run") if "loss" in r]
    events = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert [s for s, _ in events] == [s for s, _ in logged]
    assert [v for _, v in events] == pytest.approx([v for _, v in logged], rel=1e-6)
    assert "val_psnr" in acc.Tags()["scalars"] and any(t.startswith("layer_rates/") for t in acc.Tags()["scalars"])


@pytest.mark.parametrize("override,needle", [
    ("train.amp=fp16", "fp16 autocast needs a CUDA"), ("train.amp=int8", "train.amp must be"),
    ("train.ema=2", "train.ema"), ("train.best=psnr", "not a validation metric"),
    ("train.best=val_psnr_ema", "needs train.ema"), ("train.accum_steps=0", "train.accum_steps"),
])
def test_workflow_config_mistakes_are_one_line_errors(tmp_path, override, needle):
    cfg = apply_overrides(tiny_cfg(tmp_path), [override])
    with pytest.raises(ValueError, match=needle):
        train(cfg, tmp_path / "run", device="cpu", progress=False)
    assert not (tmp_path / "run").exists()


def test_best_metric_is_checked_before_training(tmp_path):
    ann = tiny_cfg(tmp_path, model=TINY_ANN, best="val_firing_rate")  # an ANN has no firing rate
    with pytest.raises(ValueError, match="choose one of val_psnr, val_ssim$"):
        train(ann, tmp_path / "a", device="cpu", progress=False)
    typo = tiny_cfg(tmp_path, best="val_pnsr")
    with pytest.raises(ValueError, match="val_pnsr"):
        train(typo, tmp_path / "b", device="cpu", progress=False)
    noval = tiny_cfg(tmp_path, best="val_psnr")
    noval["data"]["val"] = None
    with pytest.raises(ValueError, match="needs validation data"):
        train(noval, tmp_path / "c", device="cpu", progress=False)
    assert not any((tmp_path / d).exists() for d in "abc")


def test_resume_drops_a_best_model_from_the_lost_tail(tmp_path):
    from spikeir.io import save_model

    cfg = tiny_cfg(tmp_path, best="val_psnr")
    train(apply_overrides(cfg, ["train.stop_at=4"]), tmp_path / "run", device="cpu", progress=False)
    run = tmp_path / "run"
    # a crashed leg got to step 6 and wrote a best model there before dying
    m = load_model(run / "model_best.safetensors", "cpu")
    _, info = read_model_file(run / "model_best.safetensors")
    meta = {k: v for k, v in info.items() if k not in ("model", "spikeir_version")}
    save_model(run / "model_best.safetensors", m, info["model"], **{**meta, "best": {**info["best"], "step": 6}})
    train(cfg, run, device="cpu", progress=False, resume=True)
    _, info = read_model_file(run / "model_best.safetensors")
    vals = {r["step"]: r["val_psnr"] for r in records(run) if "val_psnr" in r}
    # the file is this run's own: its recorded score is the score logged at its step (the stale file
    # claimed step 6 with an older score)
    assert info["best"]["step"] > 4 and info["best"]["value"] == vals[info["best"]["step"]]
