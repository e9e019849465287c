import json

import pytest
import torch

from _helpers import TINY_SNN, write_images
from spikeir.config import apply_overrides, load_config
from spikeir.io import load_model, read_model_file
from spikeir.models import DnCNN
from spikeir.train import lr_at, resolve_model_cfg, train


def tiny_cfg(tmp_path, model=None, **train_kw):
    write_images(tmp_path / "train", 3)
    write_images(tmp_path / "val", 1, h=24, w=24)
    cfg = load_config(None)
    cfg["model"] = dict(model or TINY_SNN)
    cfg["data"].update({"train": str(tmp_path / "train"), "val": str(tmp_path / "val"),
                        "patch": 16, "batch_size": 4, "val_crop": None})
    cfg["train"].update({"steps": 6, "log_every": 2, "val_every": 3, "ckpt_every": 2, "threads": None,
                         **train_kw})
    cfg["sched"]["warmup"] = 2
    return cfg


def test_train_writes_run_and_model(tmp_path):
    cfg = tiny_cfg(tmp_path)
    res = train(cfg, tmp_path / "run", device="cpu", progress=False)
    run = tmp_path / "run"
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "loss" in r]
    assert [r["step"] for r in steps] == [2, 4, 6]
    assert all(0 <= r["firing_rate"] <= 1 and r["layer_rates"] for r in steps)
    assert any("val_psnr" in r for r in recs)
    assert recs[-1]["event"] == "end"
    assert len(list((run / "checkpoints").glob("*.pt"))) == 2  # keep_ckpts
    model = load_model(run / "model.safetensors", "cpu")
    _, info = read_model_file(run / "model.safetensors")
    assert info["model"] == TINY_SNN and info["task"] == "denoise"
    assert res["mean"]["psnr"] == pytest.approx(info["val"]["psnr"])
    assert model(torch.rand(1, 1, 9, 9)).shape == (1, 1, 9, 9)


def test_refuses_to_clobber_a_run(tmp_path):
    cfg = tiny_cfg(tmp_path, steps=2, ckpt_every=1)
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, tmp_path / "run", device="cpu", progress=False)


def test_resume_continues_exactly(tmp_path):
    cfg = tiny_cfg(tmp_path, val_every=100)
    train(cfg, tmp_path / "straight", device="cpu", progress=False)
    paused = apply_overrides(cfg, ["train.stop_at=3"])
    res = train(paused, tmp_path / "split", device="cpu", progress=False)
    assert res["paused"] and not (tmp_path / "split" / "model.safetensors").exists()
    train(cfg, tmp_path / "split", device="cpu", resume=True, progress=False)
    a, _ = read_model_file(tmp_path / "straight" / "model.safetensors")
    b, _ = read_model_file(tmp_path / "split" / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_preset_resolution_keeps_preset_class(tmp_path):
    # regression: config defaults must not override a preset's model class
    cfg = tiny_cfg(tmp_path, steps=1)
    cfg["model"] = {"preset": "dncnn-cpu", "depth": 3, "width": 8}
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    assert isinstance(load_model(tmp_path / "run" / "model.safetensors", "cpu"), DnCNN)
    assert resolve_model_cfg({"preset": "spiden-cpu", "T": 2})["T"] == 2
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_model_cfg({"preset": "nope"})


def test_lr_schedule():
    assert lr_at(0, 100, 1.0, 10, 0.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10, 0.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 10, 0.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, 10, 0.01) == pytest.approx(0.01)


def test_config_overrides():
    cfg = load_config(None, ["data.sigma=[0, 55]", "optim.lr=2e-4", "train.steps=7"])
    assert cfg["data"]["sigma"] == [0, 55] and cfg["optim"]["lr"] == 2e-4 and cfg["train"]["steps"] == 7
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["oops"])
    with pytest.raises(ValueError, match="not a section"):
        load_config(None, ["loss.x=1"])
