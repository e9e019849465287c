"""Tiled inference: exact for pointwise models, exact away from tile seams for local models, and a
bounded, blended error at the seams."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikeir.models.esdnet import ESDNet
from spikeir.tiling import tile_starts, tiled_forward


class Pointwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return x * 2 + 1


def _local_conv(seed: int = 0) -> nn.Module:
    """Two 3x3 convolutions with zero padding: receptive radius r = 2."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 2, 3, padding=1)).double()


def test_tile_starts():
    assert tile_starts(10, 16, 4) == [0]
    assert tile_starts(16, 16, 4) == [0]
    assert tile_starts(40, 16, 4) == [0, 12, 24]
    assert tile_starts(30, 16, 4) == [0, 12, 14]  # the last tile is aligned to the border


@pytest.mark.parametrize("shape", [(1, 3, 50, 70), (2, 1, 37, 45), (1, 3, 17, 90)])
def test_pointwise_model_is_unchanged_by_tiling(shape):
    x = torch.randn(shape, dtype=torch.float64)
    model = Pointwise()
    out = tiled_forward(model, x, tile=16, overlap=4, pad_multiple=4, tile_batch=3)
    torch.testing.assert_close(out, x * 2 + 1, atol=1e-12, rtol=0)
    assert all(s[-2] % 4 == 0 and s[-1] % 4 == 0 and s[-2] <= 16 and s[-1] <= 16 for s in model.calls)


def test_tile_batch_groups_tiles_without_changing_the_result():
    x = torch.randn(2, 3, 40, 40, dtype=torch.float64)
    conv = _local_conv()
    one = tiled_forward(conv, x, tile=16, overlap=4, pad_multiple=1, tile_batch=1)
    model = Pointwise()
    tiled_forward(model, x, tile=16, overlap=4, tile_batch=4)
    assert [s[0] for s in model.calls] == [8, 8, 2]  # 9 tiles, 4 per call, B = 2
    many = tiled_forward(conv, x, tile=16, overlap=4, pad_multiple=1, tile_batch=4)
    torch.testing.assert_close(many, one, atol=1e-12, rtol=0)


def test_local_model_exact_away_from_seams_and_bounded_at_seams():
    r, tile, overlap = 2, 20, 6
    x = torch.randn(1, 3, 47, 61, dtype=torch.float64)
    conv = _local_conv()
    with torch.no_grad():
        full = conv(x)
        out = tiled_forward(conv, x, tile=tile, overlap=overlap, pad_multiple=1)
    H, W = x.shape[-2:]
    near_seam = torch.zeros(H, W, dtype=torch.bool)  # within r of a tile edge inside the image
    tile_err = 0.0  # the worst error of any single tile: what hard seams would show
    for a in tile_starts(H, tile, overlap):
        for b in tile_starts(W, tile, overlap):
            for lo, hi, dim in ((a, a + tile, 0), (b, b + tile, 1)):
                size = H if dim == 0 else W
                idx = [i for i in range(lo, hi) if (lo > 0 and i < lo + r) or (hi < size and i >= hi - r)]
                if dim == 0:
                    near_seam[idx, b:b + tile] = True
                else:
                    near_seam[a:a + tile, idx] = True
            with torch.no_grad():
                t = conv(x[..., a:a + tile, b:b + tile])
            tile_err = max(tile_err, (t - full[..., a:a + tile, b:b + tile]).abs().max().item())
    err = (out - full).abs().amax(dim=(0, 1))
    assert err[~near_seam].max() < 1e-12
    assert tile_err > 1e-3  # the tiles really lack context at their edges...
    # ...and blending keeps at most a fraction (r per axis out of overlap + 1) of that error
    assert err.max() <= 2 * r / (overlap + 1) * tile_err + 1e-12


@pytest.mark.parametrize("shape", [(1, 3, 30, 42), (1, 3, 7, 9)])
def test_image_smaller_than_tile_runs_whole(shape):
    x = torch.randn(shape, dtype=torch.float64)
    model = Pointwise()
    out = tiled_forward(model, x, tile=80, overlap=8)
    assert len(model.calls) == 1 and out.shape == shape
    conv = _local_conv()
    with torch.no_grad():
        torch.testing.assert_close(tiled_forward(conv, x, tile=80, pad_multiple=1), conv(x), atol=0, rtol=0)


def test_esdnet_tiled_odd_size():
    torch.manual_seed(0)
    model = ESDNet(dim=4, en_num_blocks=[1, 1, 1], de_num_blocks=[1, 1, 1], T=2).eval()
    x = torch.rand(1, 3, 45, 37)
    with torch.no_grad():
        out = tiled_forward(model, x, tile=24, overlap=8, tile_batch=2)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_bad_arguments():
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="overlap"):
        tiled_forward(Pointwise(), x, tile=8, overlap=8)
    with pytest.raises(ValueError, match="multiple"):
        tiled_forward(Pointwise(), x, tile=10, pad_multiple=4)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        tiled_forward(Pointwise(), torch.zeros(8, 8))
    with pytest.raises(ValueError, match="size-preserving"):
        tiled_forward(nn.MaxPool2d(2), torch.zeros(1, 1, 32, 32), tile=16, overlap=4)
