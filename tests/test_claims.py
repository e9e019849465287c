"""The claims pipeline (benchmarks/claims.py): end to end on a tiny setting, rules and failures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import claims  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("claims")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "claims.py"), "--run", "--tiny", "--results",
                        str(out), "--json", str(out / "claims.json"), "--md", str(out / "CLAIMS.md")],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, json.loads((out / "claims.json").read_text()), (out / "CLAIMS.md").read_text()


def test_tiny_pipeline_writes_every_claim_with_every_field(tiny_run):
    out, data, md = tiny_run
    rows = data["rows"]
    assert [r["id"] for r in rows] == [c.id for c in claims.CLAIMS]
    for r in rows:
        assert set(claims.FIELDS) <= set(r), r["id"]
        assert r["verdict"] in claims.VERDICTS
        assert r["verdict"] != "failed", (r["id"], r["reason"])  # every tiny experiment ran
        if r["verdict"] == "not testable here":
            assert r["reason"]
        else:
            assert r["measured"] != "-" and r["command"] != "-" and r["setting"] != "-"
            assert all((out / f).is_file() for f in r["evidence"])
        assert r["claim"] in md
    # the tiny experiments ran at most 3 seeds' worth of training: nothing may be called reproduced
    # on fewer seeds than the rule asks for
    for r in rows:
        if r.get("seeds", claims.MIN_SEEDS) < claims.MIN_SEEDS:
            assert r["verdict"] != "reproduced"


def test_seed_evidence_holds_three_seeds_with_mean_and_std(tiny_run):
    out, _, _ = tiny_run
    d = json.loads((out / "seeds_spiden.json").read_text())
    gaps = [r["ann"]["psnr"] - r["snn"]["psnr"] for r in d["rows"]]
    assert len(gaps) == 3 and d["summary"]["gap_db"]["n"] == 3
    mean = sum(gaps) / 3
    std = (sum((g - mean) ** 2 for g in gaps) / 2) ** 0.5  # sample standard deviation, by hand
    assert d["summary"]["gap_db"]["mean"] == pytest.approx(mean)
    assert d["summary"]["gap_db"]["std"] == pytest.approx(std)


def test_reused_runs_must_match_the_recipe(tiny_run):
    """--reuse keeps a finished run only when it was trained by the requested recipe; cadence and
    threads may differ, anything that changes the weights may not."""
    import copy

    import yaml

    from _common import reused_config_diff, train_or_reuse

    out, _, _ = tiny_run
    run = out / "runs" / "seeds-spiden" / "ann-seed0"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert reused_config_diff(run, cfg) == []
    same = copy.deepcopy(cfg)
    same["train"].update({"val_every": 7, "ckpt_every": 9, "threads": 3, "log_every": 1})
    assert train_or_reuse(run, same, reuse=True) == run / "model.safetensors"
    other = copy.deepcopy(cfg)
    other["optim"]["lr"] = cfg["optim"]["lr"] * 2
    other["model"]["width"] = cfg["model"]["width"] + 1
    diff = reused_config_diff(run, other)
    assert sorted(d.split(":")[0] for d in diff) == ["model.width", "optim.lr"]
    with pytest.raises(SystemExit, match="different recipe.*model.width"):
        train_or_reuse(run, other, reuse=True)


def test_reused_config_diff_normalises_presets_tuples_and_added_keys(tmp_path):
    import yaml

    from _common import reused_config_diff
    from spikeir.models import PRESETS

    saved = {"model": {"preset": "dncnn-cpu"}, "optim": {"betas": [0.9, 0.999]},
             "distill": {"teacher": "dncnn-s25", "hint_weight": 0.01}}
    run = tmp_path / "run"
    run.mkdir()
    assert reused_config_diff(run, saved) == ["no config.yaml in the run"]
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    same = {"model": dict(PRESETS["dncnn-cpu"]), "optim": {"betas": (0.9, 0.999)},
            "distill": {"teacher": "dncnn-s25", "hint_weight": 0.01, "output_weight": 0.0}}
    assert reused_config_diff(run, same) == []  # preset spelled out, a tuple, a key older runs lack
    other = {**same, "distill": {**same["distill"], "output_weight": 1.0}}
    assert reused_config_diff(run, other) == ["distill.output_weight: 0.0 -> 1.0"]


def test_recorded_command_runs_from_the_repository_root(monkeypatch):
    from _common import ROOT, command_line

    argv = ["derain_heldout.py", "--json", "results/a b.json"]
    monkeypatch.chdir(ROOT)
    assert command_line(argv) == "python derain_heldout.py --json 'results/a b.json'"
    monkeypatch.chdir(ROOT / "benchmarks")
    assert command_line(argv) == "cd benchmarks && python derain_heldout.py --json 'results/a b.json'"
    for f in (ROOT / "benchmarks" / "results").glob("*.json"):  # every recorded command is anchored
        cmd = json.loads(f.read_text()).get("command", "-")
        assert cmd == "-" or cmd.startswith(("python benchmarks/", "cd benchmarks && ", "spikeir ")), (f.name, cmd)


def test_rain_spikes_over_seed_models_summarise_each_layer(tiny_run):
    out, data, _ = tiny_run
    d = json.loads((out / "rain_spikes_seeds.json").read_text())
    assert len(d["models"]) == 3 and len({m["model"] for m in d["models"]}) == 3
    for i, layer in enumerate(d["layers"]):
        rows = [m["layers"][i] for m in d["models"]]
        assert all(r["name"] == layer["name"] for r in rows)
        vals = [r["matched"] for r in rows if r["matched"] is not None]
        if vals:
            mean = sum(vals) / len(vals)
            assert layer["matched"] == pytest.approx(mean)
            if len(vals) > 1:
                var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)  # sample variance, by hand
                assert layer["matched_std"] == pytest.approx(var**0.5)
        assert layer["more_in"] == sum(r["matched_ci"] is not None and r["matched_ci"][0] > 0 for r in rows)
        assert layer["less_in"] == sum(r["matched_ci"] is not None and r["matched_ci"][1] < 0 for r in rows)
    # three seeds trained three different networks, so their effects differ somewhere
    assert any(len({r["matched"] for r in (m["layers"][i] for m in d["models"])}) > 1
               for i in range(len(d["layers"])))
    row = next(r for r in data["rows"] if r["id"] == "esdnet-rain-spikes")
    assert row["seeds"] == 3 and "3 training seeds" in row["measured"]


def _seed_file(tmp_path, gaps):
    rows = [{"seed": i, "gap_db": g, "snn": {"psnr": 30 - g, "model": {"depth": 3, "width": 4, "T": 4}},
             "ann": {"psnr": 30.0}} for i, g in enumerate(gaps)]
    import statistics

    def ms(xs):
        return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else None, "n": len(xs)}

    d = {"command": "python benchmarks/seed_pairs.py", "protocol": "p", "steps": 3, "seeds": list(range(len(gaps))),
         "rows": rows, "summary": {"gap_db": ms(gaps), "psnr_snn": ms([30 - g for g in gaps]),
                                   "psnr_ann": ms([30.0] * len(gaps))}}
    (tmp_path / "seeds_spiden.json").write_text(json.dumps(d))


@pytest.mark.parametrize("gaps, verdict", [
    ([0.1, 0.2, 0.3], "reproduced"),         # mean 0.2 <= 0.25
    ([0.5, 0.6, 0.7], "partly"),             # mean 0.6 <= 0.75
    ([1.0, 1.2, 1.1], "not reproduced"),
    ([0.1, 0.2], "partly"),                  # would be reproduced, but only 2 seeds
])
def test_gap_rule_and_the_seed_cap(tmp_path, gaps, verdict):
    _seed_file(tmp_path, gaps)
    row = next(r for r in claims.build_rows(tmp_path) if r["id"] == "spiden-gap")
    assert row["verdict"] == verdict
    if len(gaps) < claims.MIN_SEEDS:
        assert "seed" in row["reason"]


def test_failed_or_broken_evidence_is_reported_not_dropped(tmp_path, monkeypatch):
    bad = claims.Evidence("rain_spikes.json", "seed_pairs.py", ["--pair", "nonsense"], ["--pair", "nonsense"])
    monkeypatch.setitem(claims.EVIDENCE, "rain_spikes", bad)
    reason = claims.run_evidence("rain_spikes", tmp_path, tiny=True, timeout=120)
    assert reason and "exited with 2" in reason
    (tmp_path / "distill.json").write_text("{not json")
    (tmp_path / "seeds_esdnet.json").write_text(json.dumps({"rows": []}))  # readable, but the check breaks
    rows = {r["id"]: r for r in claims.build_rows(tmp_path, {"rain_spikes": reason})}
    assert len(rows) == len(claims.CLAIMS)
    assert rows["esdnet-rain-spikes"]["verdict"] == "failed" and "exited with 2" in rows["esdnet-rain-spikes"]["reason"]
    assert rows["distill-student"]["verdict"] == "failed" and "unreadable" in rows["distill-student"]["reason"]
    assert rows["esdnet-quality"]["verdict"] == "failed" and "check failed" in rows["esdnet-quality"]["reason"]
    assert rows["spiden-few-steps"]["verdict"] == "failed" and "missing" in rows["spiden-few-steps"]["reason"]


def test_tradeoff_evidence_is_three_seed_sweeps_merged(tiny_run):
    out, data, _ = tiny_run
    d = json.loads((out / "tradeoff.json").read_text())
    assert d["seeds"] == [0, 1, 2] and set(d["commands"]) == {"0", "1", "2"}
    converted = [r for r in d["rows"] if "finetune_steps" not in r]
    for m in d["seed_means"]:
        vals = [r["psnr_snn"] for r in converted if (r["width"], r["T"]) == (m["width"], m["T"])]
        assert sorted(r["seed"] for r in converted if (r["width"], r["T"]) == (m["width"], m["T"])) == [0, 1, 2]
        mean = sum(vals) / 3
        assert m["psnr_snn"]["mean"] == pytest.approx(mean)
        assert m["psnr_snn"]["std"] == pytest.approx((sum((v - mean) ** 2 for v in vals) / 2) ** 0.5)
    assert len(d["seed_means"]) == len({(r["width"], r["T"]) for r in converted})
    assert any(m["psnr_snn"]["std"] > 0 for m in d["seed_means"])  # the seeds really trained different networks
    row = next(r for r in data["rows"] if r["id"] == "spiden-few-steps")
    assert row["seeds"] == 3 and "+-" in row["measured"] and "--merge" in row["command"]


def test_denoiser_energy_is_measured_on_the_noisy_inputs_the_network_sees(tiny_run):
    """distill.json and seeds_spiden.json price the spiking network on noisy inputs (the test
    protocol's noise, drawn here by hand), not on the clean images; the merged tradeoff sweep says so."""
    import numpy as np

    from spikeir.data import builtin_images
    from spikeir.energy import measure
    from spikeir.io import load_model
    from spikeir.train import _center_crop

    def noisy(im):  # sigma 25, np.random.seed(0) per image, unclipped
        return im / 255.0 + np.random.RandomState(0).normal(0.0, 25 / 255.0, im.shape)

    out, _, _ = tiny_run
    d = json.loads((out / "distill.json").read_text())
    student = load_model(out / "runs" / "distill" / f"distill-seed{d['seeds'][0]}" / "model.safetensors", "cpu")
    teacher = load_model(d["teacher"], "cpu")
    clean = [im for _, im in builtin_images("val", gray=True)]
    seen = measure(student, [noisy(im) for im in clean], twin=teacher).energy()["ops_45nm"]
    assert d["energy_45nm_j"]["student"] == pytest.approx(seen["snn_j"], rel=1e-9)
    assert d["energy_45nm_j"]["student_over_teacher"] == pytest.approx(seen["snn_over_ann"], rel=1e-9)
    assert "noisy" in d["energy_inputs"]
    plain = measure(student, clean, twin=teacher).energy()["ops_45nm"]["snn_j"]
    assert plain != pytest.approx(seen["snn_j"], rel=1e-6)  # the inputs make a difference

    d = json.loads((out / "seeds_spiden.json").read_text())
    runs = out / "runs" / "seeds-spiden"
    snn, ann = (load_model(runs / f"{k}-seed0" / "model.safetensors", "cpu") for k in ("snn2", "ann"))
    crops = [noisy(_center_crop(im, d["energy_crop"])) for _, im in builtin_images("heldout", gray=True)]
    ratio = measure(snn, crops, twin=ann).energy()["ops_45nm"]["snn_over_ann"]
    assert d["rows"][0]["energy_snn_over_ann"]["ops_45nm"] == pytest.approx(ratio, rel=1e-9)
    assert "noisy" in d["energy_inputs"]
    assert "noisy inputs" in json.loads((out / "tradeoff.json").read_text())["energy_inputs"]


def test_tradeoff_merge_refuses_different_settings_or_repeated_seeds(tmp_path):
    import tradeoff_sweep

    base = {"command": "c", "protocol": "p", "images": ["a"], "steps": 4, "depth": 3, "tile_pixels": 16,
            "rows_note": "n", "rows": [], "machine": {}}
    files = []
    other_grid = {"seed": 2, "rows": [{"width": 4, "T": 2}]}
    for i, extra in enumerate([{"seed": 0}, {"seed": 1, "steps": 5}, {"seed": 0}, other_grid]):
        f = tmp_path / f"s{i}.json"
        f.write_text(json.dumps({**base, **extra}))
        files.append(str(f))
    with pytest.raises(SystemExit, match="steps differs"):
        tradeoff_sweep.merge(files[:2])
    with pytest.raises(SystemExit, match="repeat a seed"):
        tradeoff_sweep.merge([files[0], files[2]])
    with pytest.raises(SystemExit, match=r"\(width, T\) points"):  # a mean over fewer seeds than claimed
        tradeoff_sweep.merge([files[0], files[3]])


def test_tradeoff_merge_averages_a_fine_tuned_setting_only_over_seeds_that_all_ran_it(tmp_path, monkeypatch):
    import readme_tables
    import tradeoff_sweep

    def row(psnr: float, **extra) -> dict:
        e = {"snn": psnr / 1e6, "ann": 1e-5, "snn_over_ann": psnr / 10}
        return {"width": 4, "T": 2, "psnr_snn": psnr, "psnr_ann": 30.0, "firing_rate": 0.2,
                "energy_45nm_j": e, "energy_memory_aware_j": e, **extra}

    reg = {"finetune_steps": 5, "rate_reg": {"weight": 0.05, "target": 0.1}}
    plain = {"finetune_steps": 5, "rate_reg": None}
    base = {"command": "c", "protocol": "p", "images": ["a"], "steps": 4, "depth": 3, "tile_pixels": 16,
            "rows_note": "n", "machine": {}}
    files = []
    for seed, rows in [(0, [row(20.0), row(22.0, **reg), row(25.0, **plain)]), (1, [row(21.0), row(24.0, **reg)])]:
        f = tmp_path / f"s{seed}.json"
        f.write_text(json.dumps({**base, "seed": seed, "rows": rows}))
        files.append(str(f))
    d = tradeoff_sweep.merge(files)
    (m,) = d["tuned_means"]  # the unregularised fine-tune ran on seed 0 only: no mean for it
    assert m["rate_reg"] == reg["rate_reg"] and m["seeds"] == [0, 1]
    assert m["psnr_snn"]["mean"] == pytest.approx(23.0) and m["psnr_snn"]["std"] == pytest.approx(2 ** 0.5)
    (tmp_path / "tradeoff.json").write_text(json.dumps(d))
    monkeypatch.setattr(readme_tables, "RESULTS", tmp_path)
    table = readme_tables.tradeoff_table()
    assert ("| converted + fine-tuned (seed mean) | 5 steps, rate_reg target 0.1 (weight 0.05) | 23.00 +- 1.41 |"
            in table)
    assert "| converted + fine-tuned (seed 0) | 5 steps, no rate_reg | 25.00 |" in table
    assert "(seed 1)" not in table


@pytest.mark.parametrize("seed_leads,verdict", [((0.4, 0.1, 0.2), "partly"), ((0.9, -0.1, 0.1), "not reproduced")])
def test_a_first_validation_lead_counts_only_on_every_seed(seed_leads, verdict):
    """The mean curve leads at the first validation in both cases; only a lead on every seed is 'partly'."""
    base = {str(k): [[50, 20.0], [100, 25.0]] for k in range(3)}
    dist = {str(k): [[50, 20.0 + lead], [100, 24.0]] for k, lead in enumerate(seed_leads)}
    mean = lambda c: [[50, sum(v[0][1] for v in c.values()) / 3], [100, sum(v[1][1] for v in c.values()) / 3]]  # noqa: E731
    d = {"steps_to_target": {"baseline": 100, "distill": None}, "target_psnr": 25.0, "steps": 100,
         "curves": {"baseline": mean(base), "distill": mean(dist)},
         "curves_per_seed": {"baseline": base, "distill": dist},
         "final_psnr": {"baseline": 25.0, "distill": 24.0}, "student": {"preset": "spiking-unet-s", "T": 4},
         "params": {"student": 1, "teacher": 10}, "teacher": "t", "distill": {"hint_weight": 0.001, "hints": {}},
         "seeds": [0, 1, 2], "machine": {}}
    out = claims.check_distill_convergence({"distill": d})
    assert out["verdict"] == verdict
    assert "per seed " + ", ".join(f"{x:+.2f}" for x in seed_leads) in out["measured"]


@pytest.mark.parametrize("base_rise,verdict", [(0.0, "partly"), (0.05, "partly"), (0.3, "not reproduced")])
def test_a_baseline_that_never_trains_is_said_so(base_rise, verdict):
    """A baseline flat at its first validation (within 0.1 dB) while the hinted arm ends far above it:
    'partly', with that reason; one that trained (here +0.3 dB) but ends below the hinted arm, which
    reached its final PSNR no sooner, is judged by the speed rule alone."""
    flat = 20.77
    base = [[50, flat], [100, flat + base_rise], [150, flat + base_rise]]
    dist = [[50, flat - 0.1], [100, flat - 0.05], [150, 25.0]]
    d = {"steps_to_target": {"baseline": 100 if base_rise else 50, "distill": 150}, "target_psnr": base[-1][1],
         "steps": 150, "curves": {"baseline": base, "distill": dist},
         "curves_per_seed": {"baseline": {"1": base}, "distill": {"1": dist}},
         "final_psnr": {"baseline": base[-1][1], "distill": 25.0},
         "student": {"name": "spiking_dncnn", "depth": 10, "width": 16, "T": 4, "bn": False, "neuron_kwargs": {}},
         "params": {"student": 1, "teacher": 4}, "teacher": "t", "distill": {"hint_weight": 0.01, "hints": {"a": "b"}},
         "command": "python benchmarks/distill_experiment.py --hints a:b", "seeds": [1], "machine": {}}
    out = claims.check_distill_convergence({"distill": d})
    assert out["verdict"] == verdict
    assert ("never leaves its start" in out["reason"]) == (verdict == "partly")
    assert "no BatchNorm, membranes from 0" in out["setting"] and "1 named hint" in out["setting"]


@pytest.mark.parametrize("readme", ["README.md", "benchmarks/README.md"])
def test_readme_tables_match_the_result_files(readme):
    import readme_tables

    path = Path(__file__).resolve().parents[1] / readme
    text = path.read_text()
    new, names = readme_tables.render_tables(text, readme)
    assert names, f"{readme} has no generated tables"
    assert new == text, f"{readme} is stale: run python benchmarks/readme_tables.py --write {readme}"
