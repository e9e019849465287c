"""tools/bundle_model.py: a finished run becomes a package model with a card that matches the file."""

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle_tool():
    spec = importlib.util.spec_from_file_location("bundle_model", ROOT / "tools" / "bundle_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from spikeir.cli import main

    out = tmp_path_factory.mktemp("runs") / "smoke"
    assert main(["train", str(ROOT / "configs" / "smoke.yaml"), "--out", str(out), "--device", "cpu"]) in (0, None)
    return out


def _bundle(tool, monkeypatch, dest, *argv):
    monkeypatch.setattr(tool, "PRETRAINED_DIR", dest)
    monkeypatch.setattr(sys, "argv", ["bundle_model.py", *map(str, argv)])
    return tool.main()


def test_bundle_writes_the_model_its_card_and_both_stage_records(bundle_tool, smoke_run, tmp_path, monkeypatch):
    from spikeir.data import builtin_images
    from spikeir.evaluate import evaluate_denoise
    from spikeir.io import load_model

    dest = tmp_path / "pretrained"
    assert _bundle(bundle_tool, monkeypatch, dest, smoke_run, "--name", "tiny", "--recipe", "configs/smoke.yaml",
                   "--stage-of", "tiny-qat", "--stage-run", smoke_run) == 0
    card = json.loads((dest / "tiny.card.json").read_text())
    weights = (dest / "tiny.safetensors").read_bytes()
    assert weights == (smoke_run / "model.safetensors").read_bytes()
    assert card["sha256"] == hashlib.sha256(weights).hexdigest() and card["spiking"] and card["steps"] == 8
    log = [json.loads(x) for x in (smoke_run / "log.jsonl").read_text().splitlines()]
    assert card["training_seconds"] == pytest.approx(sum(2 / r["it_s"] for r in log if r.get("it_s")), abs=0.1)
    assert card["stage"] == {"run_record": "pretrained/runs/tiny/stage1/", "steps": 8,
                             "training_seconds": card["training_seconds"]}
    for rec in (dest / "runs" / "tiny", dest / "runs" / "tiny" / "stage1"):
        assert (rec / "log.jsonl").read_text() == (smoke_run / "log.jsonl").read_text()
        assert (rec / "config.yaml").is_file()
    # the card's scores are the shipped file's, under the stated protocol
    model = load_model(dest / "tiny.safetensors", "cpu")
    res = evaluate_denoise(model, builtin_images("heldout", gray=True), 25.0, "cpu")
    assert card["evaluation"]["mean"]["psnr"] == pytest.approx(res["mean"]["psnr"], abs=2e-3)
    assert not {d["name"] for d in card["data"]["heldout"]} & {d["name"] for d in card["data"]["train"]}


def test_bundle_refuses_to_replace_or_to_bundle_an_unfinished_run(bundle_tool, smoke_run, tmp_path, monkeypatch,
                                                                  capsys):
    dest = tmp_path / "pretrained"
    args = (smoke_run, "--name", "tiny", "--recipe", "configs/smoke.yaml")
    assert _bundle(bundle_tool, monkeypatch, dest, *args) == 0
    before = (dest / "tiny.card.json").read_bytes()
    assert _bundle(bundle_tool, monkeypatch, dest, *args) == 2
    assert "use --overwrite" in capsys.readouterr().err and (dest / "tiny.card.json").read_bytes() == before
    assert _bundle(bundle_tool, monkeypatch, dest, tmp_path / "nowhere", "--name", "x",
                   "--recipe", "configs/smoke.yaml") == 2
    assert _bundle(bundle_tool, monkeypatch, dest, *args, "--overwrite", "--stage-run", tmp_path / "nowhere") == 2
    assert "does not exist" in capsys.readouterr().err
