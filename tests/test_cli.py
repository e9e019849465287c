import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from _helpers import TINY_ANN, TINY_SNN, break_torch_compile, write_images
from spikeir.cli import main
from spikeir.data import add_test_noise, read_image
from spikeir.io import save_model
from spikeir.metrics import psnr
from spikeir.models import PRESETS, build_model


@pytest.fixture
def tiny_models(tmp_path):
    torch.manual_seed(0)
    paths = {}
    for key, cfg in (("snn", TINY_SNN), ("ann", TINY_ANN)):
        m = build_model(cfg).eval()
        paths[key] = tmp_path / f"{key}.safetensors"
        save_model(paths[key], m, cfg, task="denoise", sigma=25)
    return paths


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spikeir.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_denoise_writes_pngs_and_refuses_overwrite(tmp_path, tiny_models, capsys):
    src = tmp_path / "in"
    write_images(src, 2, rgb=True)
    out = tmp_path / "out"
    assert main(["denoise", str(src), "-o", str(out), "--model", str(tiny_models["snn"]), "--device", "cpu"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["img00.png", "img01.png"]
    assert read_image(out / "img00.png").shape == read_image(src / "img00.png", gray=True).shape
    before = (out / "img00.png").read_bytes()
    assert main(["denoise", str(src), "-o", str(out), "--model", str(tiny_models["snn"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spikeir: error:") and "--overwrite" in err[0]
    assert (out / "img00.png").read_bytes() == before
    assert main(["denoise", str(src), "-o", str(out), "--model", str(tiny_models["snn"]), "--overwrite",
                 "--sigma", "25"]) == 0
    src_bytes = (src / "img00.png").read_bytes()
    assert main(["denoise", str(src), "-o", str(src), "--model", str(tiny_models["snn"]), "--overwrite"]) == 2
    assert (src / "img00.png").read_bytes() == src_bytes


def test_eval_json_matches_independent_psnr(tmp_path, tiny_models):
    data = tmp_path / "clean"
    write_images(data, 2)
    js = tmp_path / "res.json"
    assert main(["eval", "--data", str(data), "--model", str(tiny_models["ann"]), "--sigma", "25",
                 "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    assert set(res["mean"]) >= {"psnr", "ssim"} and [r["name"] for r in res["images"]] == ["img00.png", "img01.png"]
    model = build_model(TINY_ANN)
    from spikeir.io import read_model_file

    model.load_state_dict(read_model_file(tiny_models["ann"])[0])
    model.eval()
    clean = read_image(data / "img00.png", gray=True)
    noisy = add_test_noise(clean, 25)
    with torch.no_grad():
        out = model(torch.from_numpy(noisy).float()[None, None])[0, 0].clamp(0, 1).numpy()
    den = np.round(out * 255).astype(np.uint8)
    assert abs(res["images"][0]["psnr"] - psnr(den, clean)) < 1e-9


@pytest.mark.parametrize("args,needle", [
    (["denoise", "/no/such/dir", "-o", "x"], "no such file or folder"),
    (["eval", "--data", "/no/such/dir", "--model", "spiden-cpu"], "preset without trained weights"),
    (["eval", "--data", "builtin:heldout", "--model", "nonexistent-model"], "unknown model"),
    (["train", "/no/such/config.yaml"], "no such config file"),
    (["denoise", __file__, "-o", "x", "--device", "cuda:99"], "device"),
])
def test_bad_input_gives_one_line_error(args, needle):
    r = run_cli(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("spikeir: error:") and needle in lines[0]
    assert "Traceback" not in r.stderr


def test_eval_refuses_wrong_task_and_existing_json(tmp_path, tiny_models, capsys):
    data = tmp_path / "clean"
    write_images(data, 1)
    assert main(["eval", "--task", "derain", "--data", str(data), "--model", str(tiny_models["ann"])]) == 2
    assert "trained for denoise" in capsys.readouterr().err
    js = tmp_path / "r.json"
    js.write_text("mine")
    assert main(["eval", "--data", str(data), "--model", str(tiny_models["ann"]), "--json", str(js)]) == 2
    assert js.read_text() == "mine"
    assert main(["eval", "--data", str(data), "--model", str(tiny_models["ann"]), "--json", str(js),
                 "--overwrite"]) == 0
    assert json.loads(js.read_text())["mean"]["psnr"] > 0


def test_models_and_version(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "spiden-cpu" in out and "dncnn-cpu" in out and "74,857" in out
    # one column layout for every row, however long a name or parameter count
    header, *rows = out.splitlines()
    kind_at, params_end = header.index(" kind "), header.index("params") + len("params")
    for row in rows:
        m = re.match(r"(\S+) +(bundled|preset) +([\d,]+)  ", row)
        assert m and m.start(2) == kind_at + 1 and m.end(3) == params_end, row
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("spikeir ")


def test_demo_with_given_models(tmp_path, tiny_models, capsys):
    out = tmp_path / "demo"
    torch.manual_seed(0)
    for key, preset in (("rsnn", "esdnet-small"), ("rann", "esdnet-small-ann")):
        cfg = {**PRESETS[preset], "dim": 4}
        tiny_models[key] = tmp_path / f"{key}.safetensors"
        save_model(tiny_models[key], build_model(cfg).eval(), cfg, task="derain")
    argv = ["demo", "-o", str(out), "--snn", str(tiny_models["snn"]), "--ann", str(tiny_models["ann"]),
            "--derain-snn", str(tiny_models["rsnn"]), "--derain-ann", str(tiny_models["rann"])]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "denoising demo" in text and "deraining demo" in text and "Y channel" in text
    assert text.count("estimated energy") == 2 and "inside rain streaks vs background" in text
    for task in ("denoise", "derain"):
        panel = read_image(out / f"{task}_panel.png")
        assert panel.shape[1] > 5 * 512 and panel.shape[2] == 3
    before = (out / "derain_panel.png").read_bytes()
    assert main(argv) == 2  # panels exist: refused up front, nothing rewritten
    assert "exists" in capsys.readouterr().err and (out / "derain_panel.png").read_bytes() == before
    assert main([*argv[:3], "--task", "denoise", *argv[3:7], "--overwrite"]) == 0
    assert "deraining demo" not in capsys.readouterr().out




def test_convert_ann_cli_writes_a_loadable_snn_and_refuses_bad_input(tmp_path, tiny_models, capsys):
    from spikeir.io import load_model, read_model_file
    from spikeir.models import SpikingDnCNN

    src = tmp_path / "imgs"
    write_images(src, 2)
    out = tmp_path / "converted.safetensors"
    argv = ["convert-ann", str(tiny_models["ann"]), "-o", str(out), "--T", "6", "--calib", str(src), "--patch", "16"]
    assert main(argv) == 0
    snn = load_model(out, "cpu")
    _, info = read_model_file(out)
    assert isinstance(snn, SpikingDnCNN) and snn.T == 6 and info["conversion"]["threshold"] == "percentile"
    ths = [float(m.v_threshold) for m in snn.modules() if hasattr(m, "v_threshold")]
    assert ths == info["conversion"]["thresholds"]
    capsys.readouterr()
    assert main(argv) == 2 and "exists" in capsys.readouterr().err  # never overwritten silently
    assert main(["convert-ann", str(tiny_models["snn"]), "-o", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "takes a trained DnCNN" in err[0]


@pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_runtime_writes_the_same_images(tmp_path, tiny_models, capsys, monkeypatch):
    import spikeir.neurons as neurons

    calls = []
    real = neurons._compiled_sequence
    monkeypatch.setattr(neurons, "_compiled_sequence", lambda cfg, x: calls.append(cfg) or real(cfg, x))
    src = tmp_path / "in"
    write_images(src, 1, rgb=False)
    outs = {}
    for runtime in ("torch", "compiled"):
        out = tmp_path / runtime
        assert main(["denoise", str(src), "-o", str(out), "--model", str(tiny_models["snn"]), "--device", "cpu",
                     "--runtime", runtime]) == 0
        outs[runtime] = read_image(out / "img00.png")
    assert calls  # the compiled run took the compiled path (the torch run cannot: no context)
    assert np.array_equal(outs["torch"], outs["compiled"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("firing rate")[1] == lines[1].split("firing rate")[1]  # rates are counted alike


@pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_derain_takes_the_fused_attention(tmp_path, capsys, monkeypatch):
    from spikeir.models import esdnet

    calls = []
    real = esdnet._compiled_block_output
    monkeypatch.setattr(esdnet, "_compiled_block_output", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    cfg = {**PRESETS["esdnet-small"], "dim": 4}
    model = tmp_path / "esdnet.safetensors"
    save_model(model, build_model(cfg).eval(), cfg, task="derain")
    src = tmp_path / "in"
    write_images(src, 1, rgb=True)
    outs = {}
    for runtime in ("torch", "compiled"):
        assert main(["derain", str(src), "-o", str(tmp_path / runtime), "--model", str(model), "--device", "cpu",
                     "--runtime", runtime]) == 0
        outs[runtime] = read_image(tmp_path / runtime / "img00.png").astype(int)
    assert calls  # every block of the compiled run, none of the other
    assert np.abs(outs["torch"] - outs["compiled"]).max() <= 1  # float rounding, at most one grey level


def test_compiled_runtime_failure_is_one_line(tmp_path, tiny_models, capsys, monkeypatch):

    break_torch_compile(monkeypatch, OSError("no C++ compiler found"))
    src = tmp_path / "in"
    write_images(src, 1, rgb=False)
    assert main(["denoise", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_models["snn"]),
                 "--device", "cpu", "--runtime", "compiled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["spikeir: error: compiled inference: torch.compile failed on cpu (no C++ compiler found); "
                   "run without compiled_inference()"]
    assert not (tmp_path / "out" / "img00.png").exists()
