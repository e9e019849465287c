"""Feature distillation: hints from named layers, frozen teacher, loss terms and schedule."""

import json
import math

import pytest
import torch

from _helpers import TINY_ANN, write_images
from spikeir.config import load_config
from spikeir.distill import Distiller, fft_amplitude_loss, hint_weight_at
from spikeir.io import load_model, read_model_file
from spikeir.models import DnCNN, SpikingDnCNN
from spikeir.train import train


def test_hint_schedules():
    assert [hint_weight_at(s, 2.0, "constant", 10) for s in (0, 5, 10, 20)] == [2.0] * 4
    assert [hint_weight_at(s, 2.0, "linear", 10) for s in (0, 5, 10, 20)] == [2.0, 1.0, 0.0, 0.0]
    cos = [hint_weight_at(s, 2.0, "cosine", 10) for s in (0, 2, 5, 10, 20)]
    assert cos == pytest.approx([2.0, 1.0 + math.cos(math.pi * 0.2), 1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="hint_schedule"):
        hint_weight_at(0, 1.0, "step", 10)


def test_fft_amplitude_loss_against_numpy():
    import numpy as np

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 9, 12, generator=g), torch.rand(2, 1, 9, 12, generator=g)
    ref = np.abs(np.abs(np.fft.rfft2(a.numpy(), norm="ortho")) - np.abs(np.fft.rfft2(b.numpy(), norm="ortho"))).mean()
    assert float(fft_amplitude_loss(a, b)) == pytest.approx(ref, rel=1e-5)
    # amplitudes ignore a circular shift
    assert float(fft_amplitude_loss(a, torch.roll(a, 3, dims=-1))) < 1e-6


def _pair():
    torch.manual_seed(0)
    return SpikingDnCNN(depth=4, width=8, T=2), DnCNN(depth=5, width=12)


def test_wrong_layer_names_fail_with_the_valid_ones():
    student, teacher = _pair()
    with pytest.raises(ValueError, match=r"the teacher has no layer named 'net.99'; valid names: net, net.0"):
        Distiller({"hints": {"net.99": "body.1"}}, student, teacher, 1, 10)
    with pytest.raises(ValueError, match=r"the student has no layer named 'nope'.*head_neuron"):
        Distiller({"hints": {"net.1": "nope"}}, student, teacher, 1, 10)
    with pytest.raises(ValueError, match="distill.hints"):
        Distiller({"hints": {}}, student, teacher, 1, 10)


def test_hints_come_from_the_named_layers_and_the_teacher_stays_frozen():
    student, teacher = _pair()
    teacher.train()
    d = Distiller({"hints": {"net.1": "head_neuron", "net.7": "body.3"}, "fft_weight": 0.1}, student, teacher, 1, 10)
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    assert [a.in_channels for a in d.adapters] == [8, 8] and [a.out_channels for a in d.adapters] == [12, 12]
    assert not any(k.startswith("teacher") for k in d.state_dict())  # adapters only
    d.train()
    assert not teacher.training
    bn_before = teacher.net[3].running_mean.clone()
    x, clean = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    seen = {}

    def keep(key):
        def hook(_m, _i, o):
            if key not in seen:
                seen[key] = o.clone()
        return hook

    teacher.net[7].register_forward_hook(keep("t"))
    student.body[3].register_forward_hook(keep("s"))
    with d.capture():
        out = student(x)
    recon = torch.nn.functional.l1_loss(out, clean)
    terms = d.loss_terms(x, out, clean, recon, step=0)
    # the hint term is recomputed here from the hooked tensors, independently of the Distiller
    ref = torch.nn.functional.mse_loss(d.adapters[1](seen["s"].mean(0)), seen["t"])
    with d.capture():
        student(x)
    head_feat = d._feats["s:head_neuron"].mean(0)
    ref0 = torch.nn.functional.mse_loss(d.adapters[0](head_feat), teacher.net[1](teacher.net[0](x)))
    assert float(terms["hint"]) == pytest.approx(float((ref + ref0).detach()), rel=1e-5)
    assert float(terms["fft"]) == pytest.approx(float(fft_amplitude_loss(out.detach(), clean)), rel=1e-6)
    for k in ("recon", "fft", "hint"):
        assert float(terms[k]) > 0, k
    total = recon.detach() + 0.1 * terms["fft"] + 1.0 * terms["hint"]
    assert float(terms["loss"].detach()) == pytest.approx(float(total), rel=1e-6)
    terms["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in d.adapters.parameters())
    assert student.head.weight.grad is not None
    torch.testing.assert_close(teacher.net[3].running_mean, bn_before)


def _cfg(tmp_path, teacher, steps=12, **dist):
    write_images(tmp_path / "train", 3)
    write_images(tmp_path / "val", 1, h=24, w=24)
    cfg = load_config(None)
    cfg["model"] = {"name": "spiking_dncnn", "in_channels": 1, "depth": 4, "width": 8, "T": 2}
    cfg["data"].update({"train": str(tmp_path / "train"), "val": str(tmp_path / "val"),
                        "patch": 16, "batch_size": 4, "val_crop": None})
    cfg["train"].update({"steps": steps, "log_every": 1, "val_every": 100, "ckpt_every": 4, "threads": None})
    cfg["sched"]["warmup"] = 0
    cfg["loss"] = "l1"
    cfg["distill"] = {"teacher": str(teacher), "hints": {"net.4": "body.1", "net.7": "body.3"},
                      "hint_weight": 1.0, "hint_schedule": "linear", "fft_weight": 0.05, **dist}
    return cfg


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teacher")
    write_images(tmp / "train", 3)
    cfg = load_config(None)
    cfg["model"] = dict(TINY_ANN, depth=4)
    cfg["data"].update({"train": str(tmp / "train"), "val": None, "patch": 16, "batch_size": 4})
    cfg["train"].update({"steps": 5, "log_every": 5, "val_every": 100, "ckpt_every": 5, "threads": None})
    train(cfg, tmp / "run", device="cpu", progress=False)
    return tmp / "run" / "model.safetensors"


def test_distillation_run_logs_terms_follows_schedule_and_exports_the_student_only(tmp_path, teacher_file):
    cfg = _cfg(tmp_path, teacher_file, steps=12)
    cfg["optim"]["lr"] = 3e-3
    run = tmp_path / "run"
    train(cfg, run, device="cpu", progress=False)
    recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "terms" in r]
    assert len(steps) == 12
    for r in steps:
        assert r["terms"]["hint_weight"] == pytest.approx(1.0 - (r["step"] - 1) / 12)
        assert r["terms"]["recon"] > 0 and r["terms"]["fft"] > 0 and r["terms"]["hint"] > 0
    tensors, info = read_model_file(run / "model.safetensors")
    assert not any("adapter" in k for k in tensors)
    assert set(tensors) == set(SpikingDnCNN(depth=4, width=8, T=2).state_dict())
    assert isinstance(load_model(run / "model.safetensors", "cpu"), SpikingDnCNN)


def test_output_distillation_in_a_run_goes_through_the_runs_loss(tmp_path, teacher_file):
    """Step 1 sees the same student and batch under either loss: the output term logged under
    ``loss: mse`` must be the MSE of the error the L1 run logs the mean absolute value of."""
    first = {}
    for loss in ("l1", "mse"):
        cfg = _cfg(tmp_path, teacher_file, steps=3, hints={}, hint_weight=0.0, output_weight=0.5,
                   hint_schedule="linear")
        cfg["loss"] = loss
        train(cfg, tmp_path / loss, device="cpu", progress=False)
        recs = [json.loads(x)["terms"] for x in (tmp_path / loss / "log.jsonl").read_text().splitlines()
                if "terms" in x]
        assert [r["output_weight"] for r in recs] == pytest.approx([0.5, 0.5 * 2 / 3, 0.5 / 3])
        assert all(r["output"] > 0 and r["hint"] == 0 for r in recs)
        first[loss] = recs[0]["output"]
    # mean(|e|)^2 <= mean(e^2) < mean(|e|) for errors below 1: equal only if the loss were ignored
    assert first["l1"] ** 2 <= first["mse"] < first["l1"]


def test_a_tiny_distillation_run_reduces_the_feature_loss(tmp_path, teacher_file):
    cfg = _cfg(tmp_path, teacher_file, steps=24, hint_weight=10.0, hint_schedule="constant")
    cfg["optim"]["lr"] = 3e-3
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    hint = [json.loads(x)["terms"]["hint"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
            if "terms" in x]
    first, last = sum(hint[:4]) / 4, sum(hint[-4:]) / 4
    assert last < 0.7 * first, (first, last)


def test_distillation_resume_is_exact(tmp_path, teacher_file):
    straight = tmp_path / "a"
    train(_cfg(tmp_path, teacher_file, steps=8), straight, device="cpu", progress=False)
    split = tmp_path / "b"
    cfg = _cfg(tmp_path, teacher_file, steps=8)
    cfg["train"]["stop_at"] = 4
    train(cfg, split, device="cpu", progress=False)
    cfg["train"]["stop_at"] = None
    train(cfg, split, device="cpu", progress=False, resume=True)
    a, _ = read_model_file(straight / "model.safetensors")
    b, _ = read_model_file(split / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_gradient_clipping_bounds_the_student_alone(tmp_path, teacher_file):
    """train.grad_clip clips the student's gradient by its own norm, so the adapters' gradients do
    not shrink a distilled student's step. With a clip far below Adam's eps (1e-8) the first Adam
    step is lr * g / eps, so the student's step has norm lr * clip / eps exactly when it is clipped
    alone (one norm over student and adapters would give less)."""
    lr, clip, eps = 1.0, 1e-12, 1e-8
    finals = {}
    for name, rate in (("moved", lr), ("still", 1e-30)):  # the second one keeps its initial weights
        cfg = _cfg(tmp_path, teacher_file, steps=1, hint_schedule="constant", hint_weight=10.0)
        cfg["optim"]["lr"] = rate
        cfg["train"]["grad_clip"] = clip
        train(cfg, tmp_path / name, device="cpu", progress=False)
        finals[name], _ = read_model_file(tmp_path / name / "model.safetensors")
    names = [n for n, _ in SpikingDnCNN(in_channels=1, depth=4, width=8, T=2).named_parameters()]
    step = torch.sqrt(sum(((finals["moved"][n].double() - finals["still"][n].double()) ** 2).sum() for n in names))
    assert float(step) == pytest.approx(lr * clip / eps, rel=1e-3)


def test_distillation_config_errors(tmp_path, teacher_file):
    cfg = _cfg(tmp_path, teacher_file)
    cfg["distill"].pop("teacher")
    with pytest.raises(ValueError, match="needs a 'teacher'"):
        train(cfg, tmp_path / "x", device="cpu", progress=False)
    spiking_run = tmp_path / "s"
    train(_cfg(tmp_path, teacher_file, steps=2), spiking_run, device="cpu", progress=False)
    cfg = _cfg(tmp_path, spiking_run / "model.safetensors")
    with pytest.raises(ValueError, match="must be an ANN"):
        train(cfg, tmp_path / "y", device="cpu", progress=False)


def test_relative_hint_norm_divides_each_pair_by_its_teacher_energy():
    student, teacher = _pair()
    hints = {"net.1": "head_neuron", "net.7": "body.3"}
    d = Distiller({"hints": hints, "hint_norm": "relative"}, student, teacher, 1, 10)
    raw = Distiller({"hints": hints}, student, teacher, 1, 10)
    raw.adapters.load_state_dict(d.adapters.state_dict())
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        t1 = teacher.net[1](teacher.net[0](x))
        t7 = teacher.net[:8](x)
    with d.capture():
        out = student(x)
    rel = d.loss_terms(x, out, x, torch.tensor(0.0), step=0)["hint"]
    s_head, s3 = d._feats["s:head_neuron"].mean(0), d._feats["s:body.3"].mean(0)
    mse = torch.nn.functional.mse_loss
    ref = (mse(d.adapters[0](s_head), t1) / t1.pow(2).mean() + mse(d.adapters[1](s3), t7) / t7.pow(2).mean())
    assert float(rel) == pytest.approx(float(ref.detach()), rel=1e-5)
    with raw.capture():
        out = student(x)
    assert float(raw.loss_terms(x, out, x, torch.tensor(0.0), step=0)["hint"]) == pytest.approx(
        float((mse(d.adapters[0](s_head), t1) + mse(d.adapters[1](s3), t7)).detach()), rel=1e-5)
    # an adapter that outputs zeros scores exactly 1 per pair
    for a in d.adapters:
        torch.nn.init.zeros_(a.weight), torch.nn.init.zeros_(a.bias)
    with d.capture():
        out = student(x)
    assert float(d.loss_terms(x, out, x, torch.tensor(0.0), step=0)["hint"]) == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ValueError, match="hint_norm"):
        Distiller({"hints": hints, "hint_norm": "l2"}, student, teacher, 1, 10)


def test_zero_hint_weight_skips_the_teacher():
    student, teacher = _pair()
    d = Distiller({"hints": {"net.1": "head_neuron"}, "hint_weight": 0.0}, student, teacher, 1, 10)
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    x = torch.rand(1, 1, 8, 8)
    with d.capture():
        out = student(x)
    terms = d.loss_terms(x, out, x, torch.tensor(0.5), step=3)
    assert calls == [] and float(terms["hint"]) == 0.0 and float(terms["loss"]) == 0.5


def test_output_distillation_uses_the_teacher_output_as_a_second_target():
    student, teacher = _pair()
    d = Distiller({"hints": {}, "output_weight": 0.5, "hint_schedule": "linear"}, student, teacher, 1, 10)
    assert len(d.adapters) == 0
    x, clean = torch.rand(2, 1, 12, 12), torch.rand(2, 1, 12, 12)
    with d.capture():
        out = student(x)
    mse = torch.nn.functional.mse_loss
    recon = mse(out, clean)
    terms = d.loss_terms(x, out, clean, recon, step=4, loss_fn=mse)
    with torch.no_grad():
        t_out = teacher(x)
    ref = mse(out, t_out).item()
    assert float(terms["output"]) == pytest.approx(ref, rel=1e-6)
    assert float(terms["output_weight"]) == pytest.approx(0.5 * (1 - 4 / 10))
    assert terms["loss"].item() == pytest.approx(recon.item() + 0.3 * ref, rel=1e-6)
    # the term back-propagates into the student
    terms["loss"].backward()
    assert student.tail.weight.grad is not None
    # defaults to L1 without the run's loss; and weight 0 at the schedule's end skips the teacher
    with d.capture():
        out = student(x)
    assert float(d.loss_terms(x, out, clean, recon, step=4)["output"]) == pytest.approx(
        torch.nn.functional.l1_loss(out, teacher(x)).item(), rel=1e-6)
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    with d.capture():
        out = student(x)
    assert float(d.loss_terms(x, out, clean, recon, step=10)["output"]) == 0.0 and calls == []
    with pytest.raises(ValueError, match="distill.output_weight must be a number"):
        Distiller({"hints": {}, "output_weight": -1}, student, teacher, 1, 10)
    with pytest.raises(ValueError, match=r"unknown distill setting\(s\) 'output_weigth'; valid: teacher, hints"):
        Distiller({"hints": {}, "output_weigth": 1.0}, student, teacher, 1, 10)


@pytest.mark.parametrize("key,value", [("hint_weight", "big"), ("fft_weight", -1), ("hint_until", True),
                                       ("hint_until", 0), ("hint_until", 0.5), ("hint_until", 100.5)])
def test_bad_distill_numbers_are_one_line_errors(key, value):
    student, teacher = _pair()
    with pytest.raises(ValueError, match=f"distill.{key} must be a number"):
        Distiller({"hints": {"net.1": "head_neuron"}, key: value}, student, teacher, 1, 10)


@pytest.mark.parametrize("student_cfg,hints", [
    ({"name": "esdnet", "in_channels": 1, "out_channels": 1, "dim": 8, "en_num_blocks": [1, 1, 1],
      "de_num_blocks": [1, 1, 1], "T": 2}, {"decoders.0": "decoder_level3", "decoders.2": "decoder_level1"}),
    ({"name": "spiking_unet", "in_channels": 1, "width": 4, "blocks": [1, 1], "middle": 1, "T": 2},
     {"middle": "middle", "decoders.2": "decoders.1"}),
])
def test_nafnet_teaches_sequence_students_across_resolutions(student_cfg, hints):
    from spikeir.models import NAFNet, build_model

    torch.manual_seed(0)
    teacher = NAFNet(in_channels=1, width=8, enc_blk_nums=[1, 1, 1], middle_blk_num=1, dec_blk_nums=[1, 1, 1])
    student = build_model(student_cfg)
    d = Distiller({"hints": hints, "hint_weight": 1.0}, student, teacher, 1, 10)
    x = torch.rand(2, 1, 32, 32)
    seen = {}
    for t_name in hints:
        dict(teacher.named_modules())[t_name].register_forward_hook(
            lambda _m, _i, o, k=t_name: seen.__setitem__(k, o.shape))
    with d.capture():
        out = student(x)
    terms = d.loss_terms(x, out, x, torch.tensor(0.0), step=0)
    assert float(terms["hint"]) > 0
    terms["loss"].backward()
    assert all(a.weight.grad is not None for a in d.adapters)
    # student features were sequences [T, B, C, H, W]; adapters map their channels to the teacher's
    for (t_name, s_name), a in zip(d.pairs, d.adapters):
        s_feat = dict(student.named_modules())[s_name]
        assert a.out_channels == seen[t_name][1]
        assert s_feat is not None


def test_distillation_under_bf16_autocast(tmp_path, teacher_file):
    """train.amp with distill: the hint features of an autocast forward feed fp32 adapters."""
    cfg = _cfg(tmp_path, teacher_file, steps=3)
    cfg["train"]["amp"] = "bf16"
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    recs = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    terms = [r["terms"] for r in recs if "terms" in r]
    assert len(terms) == 3 and all(t["hint"] > 0 and t["recon"] > 0 for t in terms)


def test_distill_experiment_takes_a_student_preset_and_named_hints(tmp_path, monkeypatch):
    """benchmarks/distill_experiment.py --student PRESET --hints T:S: the recipe trains that student
    with those pairs (here a tiny NAFNet teacher file hinting spiking-unet-s's decoder)."""
    import sys
    from pathlib import Path

    from spikeir.io import save_model
    from spikeir.models import build_model

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import distill_experiment as de

    t_cfg = {"name": "nafnet", "in_channels": 1, "width": 4, "enc_blk_nums": [1, 1, 1], "middle_blk_num": 1,
             "dec_blk_nums": [1, 1, 1]}
    save_model(tmp_path / "teacher.safetensors", build_model(t_cfg), t_cfg)
    args = de.build_parser().parse_args([
        "--teacher", str(tmp_path / "teacher.safetensors"), "--student", "spiking-unet-s", "--T", "2",
        "--hints", "decoders.1:decoders.0", "decoders.2:decoders.1", "--steps", "2", "--batch", "2"])
    cfg = de.student_config(args, 0, True)
    assert cfg["model"] == {"preset": "spiking-unet-s", "T": 2}
    assert cfg["distill"]["hints"] == {"decoders.1": "decoders.0", "decoders.2": "decoders.1"}
    assert de.student_config(args, 0, False)["distill"]["hint_weight"] == 0.0
    write_images(tmp_path / "train", 3)
    cfg["data"].update({"train": str(tmp_path / "train"), "val": None, "patch": 16})
    cfg["train"].update({"val_every": 100, "threads": None})
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("terms", {}).get("hint", 0) > 0 for r in logged)
    for bad, needle in ((["--student", "spiking-unet-s"], "needs --hints"), (["--hints", "decoders.1"], "pairs"),
                        (["--hints", "a:b", "a:c"], "twice")):
        with pytest.raises(SystemExit, match=needle):
            de.hint_pairs(de.build_parser().parse_args(bad))
    # a kept run trained by another recipe (here: other data) is refused, not summarised
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(tmp_path / "run", runs / "baseline-seed0")
    argv = ["--teacher", str(tmp_path / "teacher.safetensors"), "--student", "spiking-unet-s", "--T", "2",
            "--hints", "decoders.1:decoders.0", "decoders.2:decoders.1", "--steps", "2", "--batch", "2",
            "--seeds", "0", "--arms", "baseline", "--reuse", "--runs", str(runs), "--json", str(tmp_path / "d.json"),
            "--threads", "1"]  # main() sets the process's torch threads: keep the suite's 1
    monkeypatch.setattr(sys, "argv", ["distill_experiment.py", *argv])
    with pytest.raises(SystemExit, match="different recipe.*data.train"):
        de.main()


def test_distill_experiment_set_overrides_reach_both_arms():
    """--set KEY=VALUE changes the recipe of both arms alike (here a student without BatchNorm whose
    neurons start at 0), so the arms still differ only in the teacher signal; a bad --set is one line."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import distill_experiment as de

    args = de.build_parser().parse_args(["--hints", "net.1:head_neuron", "--set", "model.bn=false",
                                         "--set", "model.neuron_kwargs={}"])
    arms = [de.student_config(args, 1, d) for d in (True, False)]
    for cfg in arms:
        assert cfg["model"]["bn"] is False and cfg["model"]["neuron_kwargs"] == {}
        assert cfg["model"]["width"] == 16 and cfg["train"]["seed"] == 1  # the script's own settings kept
    assert arms[0]["distill"]["hint_weight"] == 0.01 and arms[1]["distill"]["hint_weight"] == 0.0
    without = de.student_config(de.build_parser().parse_args(["--hints", "net.1:head_neuron"]), 1, True)
    assert without["model"].get("bn", True) is True and without["model"]["neuron_kwargs"] == {"v_init": "half"}
    with pytest.raises(SystemExit, match="key=value"):
        de.student_config(de.build_parser().parse_args(["--set", "model.bn"]), 1, True)
    for bad in ("distill.hint_weight=0.1", "distill={}", " distill.output_weight=1"):
        # it would reach the baseline too, which would then be distilled as well
        with pytest.raises(SystemExit, match="the distill section is the experiment's own"):
            de.student_config(de.build_parser().parse_args(["--hints", "net.1:head_neuron", "--set", bad]), 1, False)


def test_distill_gradients_splits_task_and_hint_gradients_by_layer(tmp_path, teacher_file):
    """benchmarks/distill_gradients.py: the hint term's gradient scales with the hint weight while
    the task loss's stays put, layers after the last hinted one get no hint gradient, and at a
    checkpoint it measures the saved student with the hint weight of that step."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import distill_experiment as de
    import distill_gradients as dg

    def cfg(w):
        args = de.build_parser().parse_args(["--teacher", str(teacher_file), "--depth", "4", "--width", "4",
                                             "--T", "2", "--batch", "2", "--hints", "net.1:head_neuron",
                                             "net.4:body.1", "--hint-weight", str(w), "--steps", "8",
                                             "--threads", "1", "--val-every", "8"])
        c = de.student_config(args, 0, True)
        c["train"]["ckpt_every"] = 4
        return c

    a, b = (dg.gradient_norms(cfg(w), 2) for w in (0.01, 0.02))
    assert a["hint_weight"] == pytest.approx(0.01) and a["step"] == 0
    by = {r["layer"]: r for r in a["layers"]}
    for ra, rb in zip(a["layers"], b["layers"]):
        assert ra["task_grad"] == pytest.approx(rb["task_grad"], rel=1e-6)
        assert rb["hint_grad"] == pytest.approx(2 * ra["hint_grad"], rel=1e-4)
    assert by["head"]["hint_grad"] > 0 and by["body.0.0"]["hint_grad"] > 0
    for later in ("body.2.0", "body.3", "tail"):  # downstream of body.1, the last hinted layer
        assert by[later]["hint_grad"] == 0.0
    assert by["tail"]["task_grad"] > 0
    assert a["total"]["hint_over_task"] == pytest.approx(
        sum(r["hint_grad"] ** 2 for r in a["layers"]) ** 0.5 / sum(r["task_grad"] ** 2 for r in a["layers"]) ** 0.5)

    run = tmp_path / "run"
    train(cfg(0.01), run, device="cpu", progress=False)
    ck = torch.load(sorted((run / "checkpoints").glob("step_*.pt"))[0], map_location="cpu", weights_only=True)
    c = dg.gradient_norms(ck["config"], 2, ck)
    assert c["step"] == ck["step"] == 4
    assert c["hint_weight"] == pytest.approx(hint_weight_at(ck["step"], 0.01, "cosine", 8))
    assert [r["task_grad"] for r in c["layers"]] != pytest.approx([r["task_grad"] for r in a["layers"]])
