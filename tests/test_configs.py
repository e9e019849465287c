from pathlib import Path

import pytest

from spikeir.config import load_config
from spikeir.models import build_model, is_spiking
from spikeir.train import resolve_model_cfg

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_there_are_recipes():
    names = {p.name for p in CONFIGS}
    assert {"spiden-cpu-s25.yaml", "dncnn-cpu-s25.yaml", "spiden-paper-s25.yaml", "dncnn-paper-s25.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_recipe_builds_its_model(path):
    cfg = load_config(path)
    model = build_model(resolve_model_cfg(cfg["model"]))
    assert is_spiking(model) == path.name.startswith("spiden")
    assert isinstance(cfg["optim"]["lr"], float) and cfg["train"]["steps"] > 0


def test_twins_are_trained_the_same_way():
    for kind in ("cpu", "paper"):
        a = load_config(CONFIGS[0].parent / f"spiden-{kind}-s25.yaml")
        b = load_config(CONFIGS[0].parent / f"dncnn-{kind}-s25.yaml")
        for key in ("data", "optim", "sched", "loss", "train"):
            assert a[key] == b[key], (kind, key)
