import json
import re
from pathlib import Path

import pytest
import torch

from _helpers import TINY_SNN, tiny_train_cfg, write_images
from spikeir.config import apply_overrides, load_config
from spikeir.io import load_model, read_model_file
from spikeir.models import DnCNN
from spikeir.train import lr_at, resolve_model_cfg, train


def tiny_cfg(tmp_path, model=None, **train_kw):
    return tiny_train_cfg(tmp_path, model, **train_kw)


def assert_same_weights(run_a, run_b):
    a, _ = read_model_file(run_a / "model.safetensors")
    b, _ = read_model_file(run_b / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


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
    assert (run / "curves.png").is_file()


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
    assert_same_weights(tmp_path / "straight", tmp_path / "split")


def test_compact_spike_storage_trains_the_same_weights(tmp_path):
    cfg = tiny_cfg(tmp_path, val_every=100)
    train(cfg, tmp_path / "compact", device="cpu", progress=False)  # on by default
    train(apply_overrides(cfg, ["train.compact_spikes=false"]), tmp_path / "plain", device="cpu", progress=False)
    assert_same_weights(tmp_path / "compact", tmp_path / "plain")


def test_resume_from_an_earlier_checkpoint_drops_the_lost_tail(tmp_path):
    cfg = tiny_cfg(tmp_path, val_every=100, log_every=1, ckpt_every=2)
    train(cfg, tmp_path / "straight", device="cpu", progress=False)
    run = tmp_path / "crashed"
    train(apply_overrides(cfg, ["train.stop_at=5"]), run, device="cpu", progress=False)
    # simulate a crash after step 5's log line but before its checkpoint: keep only step 4's checkpoint
    for ck in (run / "checkpoints").glob("*.pt"):
        if not ck.name.endswith("0000004.pt"):
            ck.unlink()
    train(cfg, run, device="cpu", resume=True, progress=False)
    steps = [json.loads(x).get("step") for x in (run / "log.jsonl").read_text().splitlines()]
    logged = [s for s in steps if s is not None and s <= 6]
    assert logged == sorted(logged) and logged.count(5) == 1  # no duplicate records of the lost tail
    a, _ = read_model_file(tmp_path / "straight" / "model.safetensors")
    b, _ = read_model_file(run / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileExistsError, match="finished run"):
        train(cfg, run, device="cpu", resume=True, progress=False)


def test_resume_refuses_a_different_config(tmp_path):
    cfg = tiny_cfg(tmp_path, ckpt_every=1)
    train(apply_overrides(cfg, ["train.stop_at=1"]), tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(ValueError, match="optim.lr"):
        train(apply_overrides(cfg, ["optim.lr=0.5"]), tmp_path / "run", device="cpu", resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        train(cfg, tmp_path / "empty", device="cpu", resume=True, progress=False)


@pytest.mark.parametrize("override,needle", [
    ("train.val_every=0", "train.val_every"), ("train.keep_ckpts=0", "train.keep_ckpts"),
    ("train.steps=", "train.steps"), ("optim=3", "optim"), ("data.patch=big", "data.patch"),
    ("optim.lr=-1", "optim.lr"), ("train.compact_spikes=2", "train.compact_spikes"),
    # a misspelt key used to train with the default silently
    ("train.step=5", "unknown config setting 'train.step'; did you mean 'steps'?"),
    ("data.batchsize=4", "'data.batchsize'; did you mean 'batch_size'?"),
    ("optim.momentum=0.9", "'optim.momentum'; valid in optim: name, lr"),
    ("sched.warmpu=3", "did you mean 'warmup'?"),
    ("trian.steps=3", "unknown config setting 'trian'; did you mean 'train'?"),
])
def test_bad_configs_are_one_line_errors(tmp_path, override, needle):
    cfg = apply_overrides(tiny_cfg(tmp_path), [override])
    with pytest.raises(ValueError, match=re.escape(needle)):
        train(cfg, tmp_path / "run", device="cpu", progress=False)
    assert not (tmp_path / "run").exists()


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


TINY_ESDNET = {"name": "esdnet", "dim": 4, "en_num_blocks": [1, 1, 1], "de_num_blocks": [1, 1, 1], "T": 2}


def test_derain_training_cli_and_eval(tmp_path):
    import numpy as np
    from PIL import Image

    from spikeir.cli import main
    from spikeir.data import read_image
    from spikeir.metrics import psnr, ssim

    write_images(tmp_path / "train", 2, rgb=True)
    cfg = load_config(None)
    cfg.update(task="derain", loss="ssim", model=dict(TINY_ESDNET))
    cfg["data"].update({"train": str(tmp_path / "train"), "val": str(tmp_path / "train"), "patch": 16,
                        "batch_size": 2, "rain": "light", "val_crop": 32})
    cfg["train"].update({"steps": 3, "log_every": 1, "val_every": 100, "ckpt_every": 3, "threads": None})
    cfg["sched"]["warmup"] = 1
    res = train(cfg, tmp_path / "run", device="cpu", progress=False)
    assert res["task"] == "derain" and res["channel"] == "y" and 0 < res["mean"]["firing_rate"] < 1
    model_path = tmp_path / "run" / "model.safetensors"
    assert read_model_file(model_path)[1]["task"] == "derain"

    # a paired set in the input/target layout, evaluated on Y, checked independently
    pairs = tmp_path / "pairs"
    (pairs / "input").mkdir(parents=True)
    (pairs / "target").mkdir()
    from spikeir.rain import synth_rain

    clean = read_image(tmp_path / "train" / "img00.png")
    Image.fromarray(synth_rain(clean, "heavy", seed=0)[0]).save(pairs / "input" / "a.png")
    Image.fromarray(clean).save(pairs / "target" / "a.png")
    js = tmp_path / "derain.json"
    assert main(["eval", "--task", "derain", "--data", str(pairs), "--model", str(model_path),
                 "--crop-border", "2", "--json", str(js)]) == 0
    out = tmp_path / "derained"
    assert main(["derain", str(pairs / "input"), "-o", str(out), "--model", str(model_path)]) == 0
    derained = read_image(out / "a.png")
    got = json.loads(js.read_text())["images"][0]
    assert abs(got["psnr"] - psnr(derained, clean, crop_border=2, y_channel=True)) < 1e-9
    assert abs(got["ssim"] - ssim(derained, clean, crop_border=2, y_channel=True)) < 1e-9
    assert np.array_equal(derained.shape, clean.shape)
    # a denoiser refuses to derain
    snn_cfg = tiny_cfg(tmp_path / "dn", steps=1)
    train(snn_cfg, tmp_path / "dn" / "run", device="cpu", progress=False)
    assert main(["derain", str(pairs / "input"), "-o", str(tmp_path / "x"),
                 "--model", str(tmp_path / "dn" / "run" / "model.safetensors")]) == 2


def test_init_from_a_trained_ann_twin(tmp_path):
    from _helpers import TINY_ANN

    ann_run = tmp_path / "ann"
    train(tiny_cfg(tmp_path, model=TINY_ANN), ann_run, device="cpu", progress=False)
    ann = load_model(ann_run / "model.safetensors", "cpu")
    run = tmp_path / "snn"
    cfg = tiny_cfg(tmp_path, steps=2, init_from=str(ann_run / "model.safetensors"))
    cfg["optim"]["lr"] = 1e-12  # weights stay (almost) where the ANN put them
    train(cfg, run, device="cpu", progress=False)
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    init = next(r for r in recs if r.get("event") == "init_from")
    assert len(init["thresholds"]) == 2 and all(t > 0 for t in init["thresholds"])
    snn = load_model(run / "model.safetensors", "cpu")
    torch.testing.assert_close(snn.head.weight, ann.net[0].weight, atol=1e-8, rtol=0)
    torch.testing.assert_close(snn.head_neuron.v_threshold.detach(), torch.tensor(init["thresholds"][0]),
                               atol=1e-8, rtol=0)
    bad = tiny_cfg(tmp_path, init_from=str(run / "model.safetensors"))  # a spiking file is no ANN twin
    with pytest.raises(ValueError, match="init_from needs"):
        train(bad, tmp_path / "bad", device="cpu", progress=False)


def _poison(monkeypatch, bad_steps):
    """Make the training batches of ``bad_steps`` (0-based) all-NaN, as a broken data source would."""
    from spikeir import data

    orig = data.DenoisePatchSampler.batch

    def batch(self, index):
        noisy, clean = orig(self, index)
        if index in bad_steps or (bad_steps == "all" and index < 10**9):
            noisy = torch.full_like(noisy, float("nan"))
        return noisy, clean

    monkeypatch.setattr(data.DenoisePatchSampler, "batch", batch)


def test_nonfinite_losses_are_skipped_and_logged(tmp_path, monkeypatch):
    _poison(monkeypatch, {1, 2})
    cfg = tiny_cfg(tmp_path, val_every=100)
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    recs = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    bad = [r for r in recs if r.get("event") == "nonfinite_loss"]
    assert [(r["step"], r["count"]) for r in bad] == [(2, 1), (3, 2)]
    tensors, _ = read_model_file(tmp_path / "run" / "model.safetensors")
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())
    assert recs[-1]["event"] == "end"


def test_repeated_nonfinite_losses_stop_with_the_last_good_checkpoint(tmp_path, monkeypatch):
    from spikeir.train import TrainingError

    cfg = tiny_cfg(tmp_path, val_every=100, steps=20, max_bad_steps=3)
    _poison(monkeypatch, set(range(4, 20)))
    with pytest.raises(TrainingError, match="3 non-finite losses in a row at step 7"):
        train(cfg, tmp_path / "run", device="cpu", progress=False)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt"))
    assert ckpts == ["step_0000002.pt", "step_0000004.pt"]
    ck = torch.load(tmp_path / "run" / "checkpoints" / ckpts[-1], weights_only=True)
    assert all(bool(torch.isfinite(t).all()) for t in ck["model"].values() if t.is_floating_point())
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_sigkill_mid_run_then_resume_matches_a_straight_run(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    # one thread in every leg (the killed subprocess too): other thread counts may round differently
    cfg = tiny_cfg(tmp_path, val_every=1000, steps=120, ckpt_every=5, log_every=5, threads=1)
    train(cfg, tmp_path / "straight", device="cpu", progress=False)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "spikeir.cli", "train", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "killed"),
           "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ck_dir = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not list(ck_dir.glob("step_*.pt")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(ck_dir.glob("step_*.pt")), "no checkpoint was written before the deadline"
    assert not (tmp_path / "killed" / "model.safetensors").exists(), "the run finished before it could be killed"
    train(cfg, tmp_path / "killed", device="cpu", resume=True, progress=False)
    assert_same_weights(tmp_path / "straight", tmp_path / "killed")


def test_run_record_names_config_code_versions_and_hashed_data(tmp_path):
    import hashlib

    import numpy as np

    from spikeir.data import read_image

    cfg = tiny_cfg(tmp_path, val_every=100)
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rec["config"] == json.loads(json.dumps(cfg)) and rec["seed"] == 0
    assert rec["versions"]["torch"] == torch.__version__ and rec["hardware"]["device"] == "cpu"
    assert rec["git_revision"] is None or len(rec["git_revision"].split("+")[0]) == 40
    files = sorted((tmp_path / "train").glob("*.png"))
    assert [d["name"] for d in rec["train_data"]] == [f.name for f in files]
    for d, f in zip(rec["train_data"], files):
        img = np.asarray(read_image(f, True))
        assert d["sha256"] == hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()
        assert d["shape"] == list(img.shape)


def test_reproduce_matches_recorded_scores_and_catches_a_changed_model(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from spikeir.cli import main
    from spikeir.train import reproduce

    cfg = tiny_cfg(tmp_path, val_every=100)
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    r = reproduce(tmp_path / "run", "cpu")
    assert r["ok"] and abs(r["diff_db"]) <= 1e-6 and r["tolerance_db"] == 1e-6
    assert main(["reproduce", str(tmp_path / "run"), "--check", "--device", "cpu"]) == 0
    assert "reproduced" in capsys.readouterr().out
    # tamper with the weights (keeping the metadata): the check must fail
    path = tmp_path / "run" / "model.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["body.0.1.bias"] = tensors["body.0.1.bias"] + 3.0  # the last neurons now fire everywhere
    save_file(tensors, str(path), metadata=meta)
    assert main(["reproduce", str(tmp_path / "run"), "--check", "--device", "cpu"]) == 1
    assert "NOT reproduced" in capsys.readouterr().out
    assert main(["reproduce", str(tmp_path / "nothing")]) == 2


def test_rate_regulariser_lowers_the_firing_rate_as_its_weight_rises(tmp_path):
    rates = []
    for w in (0.0, 0.3, 3.0):
        cfg = tiny_cfg(tmp_path, steps=30, log_every=30, val_every=100, ckpt_every=30)
        cfg["model"] = dict(TINY_SNN, depth=4, T=4)
        cfg["loss"] = {"name": "mse", "rate_reg": {"weight": w, "target": 0.0}}
        cfg["optim"]["lr"] = 5e-3
        train(cfg, tmp_path / f"w{w}", device="cpu", progress=False)
        rec = [json.loads(x) for x in (tmp_path / f"w{w}" / "log.jsonl").read_text().splitlines() if '"loss"' in x][-1]
        assert rec["rate_reg"] >= 0 and (rec["rate_reg"] > 0) == (w > 0)
        rates.append(rec["firing_rate"])
    assert rates[0] > rates[1] > rates[2], rates
    bad = tiny_cfg(tmp_path)
    bad["loss"] = {"name": "mse", "rate_reg": {"weight": 1.0, "target": 2.0}}
    with pytest.raises(ValueError, match="target <= 1"):
        train(bad, tmp_path / "bad", device="cpu", progress=False)


def test_unknown_loss_setting_is_an_error(tmp_path):
    cfg = tiny_cfg(tmp_path)
    cfg["loss"] = {"name": "l1", "rate_weight": 0.1}
    with pytest.raises(ValueError, match=r"'loss\.rate_weight'; did you mean 'rate_reg'\?"):
        train(cfg, tmp_path / "run", device="cpu", progress=False)


def test_config_keys_cover_what_the_trainer_reads():
    # every key the trainer looks up is in CONFIG_KEYS, so a valid setting is never refused
    import inspect

    from spikeir import train as train_mod
    from spikeir.config import DEFAULTS

    src = Path(train_mod.__file__).read_text()
    for sect, var in (("train", "tcfg"), ("data", "dcfg"), ("sched", None), ("optim", None)):
        read = set(re.findall(rf'{var}(?:\.get\(|\[)"(\w+)"', src)) if var else set()
        read |= set(re.findall(rf'cfg\["{sect}"\](?:\.get\(|\[)"(\w+)"', src))
        assert read and read <= set(train_mod.CONFIG_KEYS[sect]), (sect, read - set(train_mod.CONFIG_KEYS[sect]))
    # the optimiser and the loss read their sections through a local name
    for fn, sect in ((train_mod._make_optimizer, "optim"), (train_mod._loss_spec, "loss")):
        read = set(re.findall(r'(?:cfg|spec)(?:\.get\(|\[)"(\w+)"', inspect.getsource(fn)))
        assert read and read <= set(train_mod.CONFIG_KEYS[sect]), (sect, read - set(train_mod.CONFIG_KEYS[sect]))
    for sect, keys in DEFAULTS.items():
        assert sect in train_mod.CONFIG_KEYS[""]
        if isinstance(keys, dict) and sect in train_mod.CONFIG_KEYS:
            assert set(keys) <= set(train_mod.CONFIG_KEYS[sect])
