"""torchrun: two gloo processes on the CPU follow a one-process run with the same global batch."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from _helpers import TINY_ANN, TINY_SNN, write_images
from spikeir.config import load_config
from spikeir.io import read_model_file


def _cfg(tmp_path, model, **train_kw) -> dict:
    write_images(tmp_path / "train", 3)
    write_images(tmp_path / "val", 1, h=24, w=24)
    cfg = load_config(None)
    cfg["model"] = dict(model)
    cfg["data"].update({"train": str(tmp_path / "train"), "val": str(tmp_path / "val"), "patch": 16,
                        "batch_size": 4, "val_crop": None})
    cfg["train"].update({"steps": 4, "log_every": 2, "val_every": 100, "ckpt_every": 2, "threads": 1, **train_kw})
    cfg["sched"]["warmup"] = 1
    return cfg


def _run(tmp_path, cfg, out, nproc, *extra) -> subprocess.CompletedProcess:
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "spikeir.cli", "train", str(path), "--out", str(tmp_path / out), "--quiet"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "spikeir.cli", "train", str(path), "--out", str(tmp_path / out), "--quiet"]
    r = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    # no BatchNorm (per-process statistics would differ); 2 micro-batches per step exercise no_sync
    cfg = _cfg(tmp_path, {**TINY_ANN, "bn": False}, accum_steps=2)
    _run(tmp_path, cfg, "one", 1)
    _run(tmp_path, cfg, "two", 2)
    a, _ = read_model_file(tmp_path / "one" / "model.safetensors")
    b, _ = read_model_file(tmp_path / "two" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    start = json.loads((tmp_path / "two" / "log.jsonl").read_text().splitlines()[0])
    assert start["processes"] == 2 and start["global_batch"] == 8 and start["per_process_batch"] == 2
    la = [json.loads(x)["loss"] for x in (tmp_path / "one" / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert la == pytest.approx(lb, rel=1e-4)  # the logged loss is the mean over processes


def test_two_process_spiking_run_completes_and_resumes(tmp_path):
    cfg = _cfg(tmp_path, TINY_SNN, stop_at=2)
    _run(tmp_path, cfg, "snn", 2)
    run = tmp_path / "snn"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002.pt"]
    assert not (run / "model.safetensors").exists()
    del cfg["train"]["stop_at"]
    _run(tmp_path, cfg, "snn", 2, "--resume")
    recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert recs[-1]["event"] == "end" and any(r.get("event") == "resume" for r in recs)
    assert read_model_file(run / "model.safetensors")[1]["steps"] == 4
    assert len([r for r in recs if "loss" in r]) == 2  # one log writer (rank 0), steps 2 and 4


def test_global_batch_must_split_evenly(tmp_path):
    cfg = _cfg(tmp_path, TINY_ANN)
    cfg["data"]["batch_size"] = 3
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "spikeir.cli", "train", str(path), "--out", str(tmp_path / "x"), "--quiet"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode != 0 and "must divide evenly over 2 processes" in r.stderr
    shutil.rmtree(tmp_path / "x", ignore_errors=True)
