"""benchmarks/batchnorm_ablation.py on two tiny runs that differ only in ``model.bn``."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def ablation():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import batchnorm_ablation as ba

    return ba


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from spikeir.cli import main

    root = tmp_path_factory.mktemp("bn")
    out = {}
    for name, sets in {"bn": ["model.bn=true"], "nobn": ["model.bn=false"],
                       "nobn-lr": ["model.bn=false", "optim.lr=0.001"]}.items():
        args = ["train", str(SMOKE), "--out", str(root / name), "--device", "cpu", "--quiet"]
        for s in sets:
            args += ["--set", s]
        main(args)
        out[name] = root / name
    return out


def test_pair_is_scored_against_an_independent_computation(ablation, runs, tmp_path):
    from spikeir.data import add_test_noise, builtin_images
    from spikeir.io import load_model

    res = ablation.main(["--pair", f"tiny={runs['bn']},{runs['nobn']}", "--json", str(tmp_path / "bn.json")])
    assert json.loads((tmp_path / "bn.json").read_text()) == json.loads(json.dumps(res))
    row = res["pairs"]["tiny"]
    assert row["config_differences"] == ["model.bn"]
    assert row["with_bn"]["bn"] is True and row["without_bn"]["bn"] is False
    for arm, run in (("with_bn", runs["bn"]), ("without_bn", runs["nobn"])):
        logged = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
        assert row[arm]["val_curve"] == [[r["step"], r["val_psnr"]] for r in logged if "val_psnr" in r]
        # held-out PSNR by hand: seed-0 noise, clamp, round to uint8, 10 log10(255^2 / MSE), mean over images
        model = load_model(run / "model.safetensors", "cpu")
        vals = []
        for _, clean in builtin_images("heldout", gray=True):
            noisy = torch.from_numpy(add_test_noise(clean, 25.0, 0)).float()[None, None]
            with torch.no_grad():
                out = model(noisy)[0, 0].clamp(0, 1).numpy()
            den = np.floor(out * 255.0 + 0.5)
            vals.append(10 * np.log10(255.0**2 / np.mean((den - clean.astype(np.float64)) ** 2)))
        assert row[arm]["heldout"]["psnr"] == pytest.approx(float(np.mean(vals)), abs=1e-3)
    gain = row["without_bn"]["heldout"]["psnr"] - row["with_bn"]["heldout"]["psnr"]
    assert row["heldout_gain"] == pytest.approx(gain)
    assert row["val_gain"] == pytest.approx(row["without_bn"]["val_final"] - row["with_bn"]["val_final"])
    step = row["steps_to_bn_final"]
    first = next((s for s, p in row["without_bn"]["val_curve"] if p >= row["with_bn"]["val_final"]), None)
    assert step == first


def test_bad_pairs_fail_with_one_line(ablation, runs, tmp_path):
    cases = {
        f"tiny={runs['bn']},{runs['nobn-lr']}": "differs in more than BatchNorm: optim.lr",
        f"tiny={runs['nobn']},{runs['bn']}": "the first run must have BatchNorm",
        f"tiny={runs['bn']}": "LABEL=WITH_BN,WITHOUT_BN",
        f"tiny={runs['bn']},{tmp_path}": "is not a run folder",
    }
    for spec, message in cases.items():
        with pytest.raises(SystemExit) as e:
            ablation.main(["--pair", spec, "--json", str(tmp_path / "x.json")])
        assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "x.json").exists()


def test_an_unfinished_run_is_refused(ablation, runs, tmp_path):
    import shutil

    half = tmp_path / "half"
    shutil.copytree(runs["nobn"], half)
    lines = [ln for ln in (half / "log.jsonl").read_text().splitlines() if '"end"' not in ln]
    (half / "log.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit, match="has not finished"):
        ablation.main(["--pair", f"tiny={runs['bn']},{half}", "--json", str(tmp_path / "x.json")])


def test_bundled_sources(ablation):
    from spikeir.io import model_card

    src = ablation._source("bundled:spiden-s25:stage")
    card = model_card("spiden-s25")
    assert src["model"] is None and src["card_heldout"] == card["stage"]["heldout_mean"]
    assert (src["record"] / "log.jsonl").is_file() and src["record"].name == "stage1"
    assert ablation._source("bundled:dncnn-s25")["model"].is_file()
    for spec, message in {"bundled:nope": "no bundled model named 'nope'",
                          "bundled:dncnn-s25:stage": "no earlier stage",
                          "bundled:dncnn-s25:x": "only 'bundled:NAME'"}.items():
        with pytest.raises(SystemExit, match=message):
            ablation._source(spec)


def test_a_deraining_run_is_refused(ablation, runs, tmp_path):
    import shutil

    import yaml

    rain = tmp_path / "rain"
    shutil.copytree(runs["nobn"], rain)
    cfg = yaml.safe_load((rain / "config.yaml").read_text())
    (rain / "config.yaml").write_text(yaml.safe_dump({**cfg, "task": "derain"}))
    with pytest.raises(SystemExit, match="is a derain run; only denoising runs"):
        ablation.main(["--pair", f"tiny={runs['bn']},{rain}", "--json", str(tmp_path / "x.json")])
