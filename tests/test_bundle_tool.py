"""tools/bundle_model.py: a finished run becomes a package model with a card that matches the file."""

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle_tool():
    spec = importlib.util.spec_from_file_location("bundle_model", ROOT / "tools" / "bundle_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished smoke run, and a distinct 'stage 1' run: a copy whose log stops at step 4."""
    from spikeir.cli import main

    base = tmp_path_factory.mktemp("runs")
    run = base / "smoke"
    assert main(["train", str(ROOT / "configs" / "smoke.yaml"), "--out", str(run), "--device", "cpu"]) in (0, None)
    stage = base / "stage1"
    shutil.copytree(run, stage)
    lines = [x for x in (stage / "log.jsonl").read_text().splitlines() if json.loads(x).get("step", 0) <= 4]
    (stage / "log.jsonl").write_text("".join(x + "\n" for x in lines))
    (stage / "config.yaml").write_text("# stage 1\n" + (stage / "config.yaml").read_text())
    return run, stage


def _bundle(tool, monkeypatch, dest, *argv):
    monkeypatch.setattr(tool, "PRETRAINED_DIR", dest)
    monkeypatch.setattr(sys, "argv", ["bundle_model.py", *map(str, argv)])
    threads = torch.get_num_threads()
    try:
        return tool.main()
    finally:
        assert torch.get_num_threads() == threads, "the tool must not change the caller's thread count"


def _seconds(log_path: Path) -> float:
    log = [json.loads(x) for x in log_path.read_text().splitlines()]
    prev, total = 0, 0.0
    for r in log:
        if r.get("it_s"):
            total, prev = total + (r["step"] - prev) / r["it_s"], r["step"]
    return total


def test_bundle_writes_the_model_its_card_and_both_stage_records(bundle_tool, runs, tmp_path, monkeypatch):
    from spikeir.data import builtin_images
    from spikeir.evaluate import evaluate_denoise
    from spikeir.io import load_model

    run, stage = runs
    dest = tmp_path / "pretrained"
    assert _bundle(bundle_tool, monkeypatch, dest, run, "--name", "tiny", "--recipe", "configs/smoke.yaml",
                   "--stage-of", "tiny-qat", "--stage-run", stage, "--threads", "1") == 0
    card = json.loads((dest / "tiny.card.json").read_text())
    weights = (dest / "tiny.safetensors").read_bytes()
    assert weights == (run / "model.safetensors").read_bytes()
    assert card["sha256"] == hashlib.sha256(weights).hexdigest() and card["spiking"] and card["steps"] == 8
    assert card["training_seconds"] == pytest.approx(_seconds(run / "log.jsonl"), abs=0.1)
    st = card["stage"]
    assert {k: st[k] for k in ("run_record", "steps", "training_seconds")} == {
        "run_record": "pretrained/runs/tiny/stage1/", "steps": 4,
        "training_seconds": pytest.approx(_seconds(stage / "log.jsonl"), abs=0.1)}
    # the stage-1 file's own held-out score and hash (here a copy of the final weights)
    assert st["sha256"] == hashlib.sha256((stage / "model.safetensors").read_bytes()).hexdigest()
    for rec, src in ((dest / "runs" / "tiny", run), (dest / "runs" / "tiny" / "stage1", stage)):
        for f in ("log.jsonl", "config.yaml"):
            assert (rec / f).read_text() == (src / f).read_text()
    # the card's scores are the shipped file's, under the stated protocol
    model = load_model(dest / "tiny.safetensors", "cpu")
    res = evaluate_denoise(model, builtin_images("heldout", gray=True), 25.0, "cpu")
    assert card["evaluation"]["mean"]["psnr"] == pytest.approx(res["mean"]["psnr"], abs=1e-2)
    assert st["heldout_mean"]["psnr"] == pytest.approx(res["mean"]["psnr"], abs=1e-2)
    assert not {d["name"] for d in card["data"]["heldout"]} & {d["name"] for d in card["data"]["train"]}
    # bundled again without a stage: no stage-1 record outlives the card that named it
    assert _bundle(bundle_tool, monkeypatch, dest, run, "--name", "tiny", "--recipe", "configs/smoke.yaml",
                   "--threads", "1", "--overwrite") == 0
    assert json.loads((dest / "tiny.card.json").read_text())["stage"] is None
    assert not (dest / "runs" / "tiny" / "stage1").exists()


def test_bundle_refuses_to_replace_or_to_bundle_an_unfinished_run(bundle_tool, runs, tmp_path, monkeypatch,
                                                                  capsys):
    run, _ = runs
    dest = tmp_path / "pretrained"
    args = (run, "--name", "tiny", "--recipe", "configs/smoke.yaml", "--threads", "1")
    assert _bundle(bundle_tool, monkeypatch, dest, *args) == 0
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert _bundle(bundle_tool, monkeypatch, dest, *args) == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert _bundle(bundle_tool, monkeypatch, dest, tmp_path / "nowhere", "--name", "tiny",
                   "--recipe", "configs/smoke.yaml", "--overwrite") == 2
    assert "model.safetensors does not exist" in capsys.readouterr().err
    assert _bundle(bundle_tool, monkeypatch, dest, *args, "--overwrite", "--stage-run", tmp_path / "nowhere") == 2
    assert "log.jsonl does not exist" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before, "a refused bundle changed files"
