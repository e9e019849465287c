import numpy as np
import pytest
import torch
from PIL import Image

from _helpers import smooth_image
from spikeir.rain import find_rain_pairs, load_rain_pair, synth_rain


def test_synth_rain_is_seeded_and_consistent_with_its_mask():
    clean = smooth_image(0, 64, 80, rgb=True)
    r1, s1, m1 = synth_rain(clean, "light", seed=3)
    r2, s2, m2 = synth_rain(clean, "light", seed=3)
    assert np.array_equal(r1, r2) and np.array_equal(m1, m2)
    assert not np.array_equal(r1, synth_rain(clean, "light", seed=4)[0])
    assert r1.shape == clean.shape and r1.dtype == np.uint8 and s1.shape == clean.shape[:2]
    diff = r1.astype(int) - clean.astype(int)
    assert (diff >= 0).all()  # screen blend only brightens
    assert diff[m1].mean() > 5 * max(diff[s1 < 1e-3].mean(), 0.2)
    assert np.abs(diff[s1 < 1e-4]).max() <= 1
    assert np.array_equal(m1, s1 > 0.2)


def test_heavy_rain_is_denser_than_light():
    clean = smooth_image(1, 96, 96, rgb=True)
    light = np.mean([synth_rain(clean, "light", seed=s)[2].mean() for s in range(4)])
    heavy = np.mean([synth_rain(clean, "heavy", seed=s)[2].mean() for s in range(4)])
    assert heavy > 2 * light > 0
    with pytest.raises(ValueError, match="unknown rain preset"):
        synth_rain(clean, "drizzle")


def _save(p, arr):
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(p)


@pytest.fixture
def pair_imgs():
    clean = smooth_image(2, 24, 32, rgb=True)
    return synth_rain(clean, "light", seed=0)[0], clean


@pytest.mark.parametrize("layout", ["input_target", "prenet_test", "prenet_train", "rain200", "ddn", "list"])
def test_layouts_detected_and_paired(tmp_path, pair_imgs, layout):
    rainy, clean = pair_imgs
    root = tmp_path / "set"
    for i in (1, 2, 3):
        r = np.roll(rainy, i, axis=1)
        c = np.roll(clean, i, axis=1)
        if layout == "input_target":
            _save(root / "input" / f"{i:03d}.png", r)
            _save(root / "target" / f"{i:03d}.png", c)
        elif layout == "prenet_test":
            _save(root / "rainy" / f"rain-{i:03d}.png", r)
            _save(root / f"norain-{i:03d}.png", c)
        elif layout == "prenet_train":
            _save(root / f"rain-{i}.png", r)
            _save(root / f"norain-{i}.png", c)
        elif layout == "rain200":
            _save(root / "rain" / "X2" / f"norain-{i}x2.png", r)
            _save(root / "norain" / f"norain-{i}.png", c)
        elif layout == "ddn":
            for k in (1, 2):
                _save(root / "rainy_image" / f"{i}_{k}.png", r)
            _save(root / "ground_truth" / f"{i}.png", c)
        elif layout == "list":
            _save(root / "r" / f"{i}.png", r)
            _save(root / "c" / f"{i}.png", c)
    if layout == "list":
        (root / "pairs.txt").write_text("".join(f"r/{i}.png c/{i}.png\n" for i in (1, 2, 3)))
        root = root / "pairs.txt"
    found, pairs = find_rain_pairs(root)
    assert found == layout
    assert len(pairs) == (6 if layout == "ddn" else 3)
    for p in pairs:
        r, c = load_rain_pair(p)
        shift = [i for i in (1, 2, 3) if np.array_equal(c, np.roll(clean, i, axis=1))]
        assert len(shift) == 1 and np.array_equal(r, np.roll(rainy, shift[0], axis=1))


def test_side_by_side_halves(tmp_path, pair_imgs):
    rainy, clean = pair_imgs
    _save(tmp_path / "1.png", np.concatenate([clean, rainy], axis=1))
    layout, pairs = find_rain_pairs(tmp_path, layout="side_by_side", rainy_half="right")
    r, c = load_rain_pair(pairs[0])
    assert layout == "side_by_side" and np.array_equal(r, rainy) and np.array_equal(c, clean)


def test_clear_errors(tmp_path, pair_imgs):
    rainy, clean = pair_imgs
    _save(tmp_path / "a" / "input" / "1.png", rainy)
    _save(tmp_path / "a" / "input" / "2.png", rainy)
    _save(tmp_path / "a" / "target" / "1.png", clean)
    with pytest.raises(ValueError, match="2 rainy vs 1 clean"):
        find_rain_pairs(tmp_path / "a")
    _save(tmp_path / "b" / "rain-1.png", rainy)
    _save(tmp_path / "b" / "norain-2.png", clean)
    with pytest.raises(ValueError, match="no clean image.*rain-1.png"):
        find_rain_pairs(tmp_path / "b")
    _save(tmp_path / "c" / "input" / "1.png", rainy)
    _save(tmp_path / "c" / "target" / "1.png", clean[:10])
    _, pairs = find_rain_pairs(tmp_path / "c")
    with pytest.raises(ValueError, match="size mismatch"):
        load_rain_pair(pairs[0])
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="cannot tell the rain dataset layout"):
        find_rain_pairs(tmp_path / "d")
    with pytest.raises(ValueError, match="unknown layout"):
        find_rain_pairs(tmp_path / "a", layout="nope")


def test_rain_patch_sampler_synthetic_and_paired():
    from spikeir.rain import RainPatchSampler

    imgs = [smooth_image(i, 40, 48, rgb=True) for i in range(2)]
    s = RainPatchSampler(images=imgs, patch=16, batch_size=4, preset="mixed", seed=1)
    r1, c1 = s.batch(3)
    r2, c2 = s.batch(3)
    assert torch.equal(r1, r2) and torch.equal(c1, c2) and r1.shape == (4, 3, 16, 16)
    assert (r1 >= c1 - 1 / 255).all() and (r1 > c1 + 0.05).any()  # rain only brightens
    pairs = [(np.full((20, 20, 3), 200, np.uint8), np.arange(20 * 20 * 3, dtype=np.uint16).reshape(20, 20, 3)
              .astype(np.uint8))]
    p = RainPatchSampler(pairs=pairs, patch=8, batch_size=2, seed=0)
    r, c = p.batch(0)
    assert torch.allclose(r, torch.full_like(r, 200 / 255))
    with pytest.raises(ValueError, match="unknown rain preset"):
        RainPatchSampler(images=imgs, patch=16, preset="storm")
    with pytest.raises(ValueError, match="larger than"):
        RainPatchSampler(images=imgs, patch=64)


def test_synthetic_rain_set_is_reproducible(tmp_path):
    from spikeir.rain import load_rain_set

    for i in range(2):
        _save(tmp_path / f"{i}.png", smooth_image(i, 32, 32, rgb=True))
    desc, a = load_rain_set("builtin:val")
    assert "synthetic" in desc and a[0][0] == "coffee"
    _, b = load_rain_set("builtin:val")
    assert np.array_equal(a[0][1], b[0][1])
