"""SpikingJelly 2.0.0 versions of spikeir's ESDNet and SpikingDnCNN, for benchmarks only.

SpikingJelly is not a dependency of spikeir; install it into the benchmark venv with
``pip install --no-deps spikingjelly==2.0.0 loguru``. Importing this module raises
``ImportError`` when it is missing.

Both networks use the submodule and parameter names of their spikeir counterparts, so
``ref.load_state_dict(spikeir_model.state_dict())`` works (strictly) and the two run on the same
weights. SpikingJelly neurons keep their membrane as module state: call
``functional.reset_net(model)`` (or :func:`reset`) after every forward.

:class:`SJESDNet` follows the released ESDNet (``../shared/reference/esdnet.md``) in
SpikingJelly's ``activation_based`` idiom: ``LIFNode(step_mode="m")`` neurons, ``layer.Conv2d``
in multi-step mode, ``layer.ThresholdDependentBatchNorm2d`` (tdBN) and
``layer.MultiDimensionalAttention``. As in the release, the patch embedding runs on the image
repeated ``T`` times and the decoder upsamples time step by time step. Input height and width
must be multiples of 4 (spikeir pads; the release does not).

:class:`SJSpikingDnCNN` is the SPIDEN layout of :class:`spikeir.models.SpikingDnCNN` with
``IFNode(v_reset=None)`` (soft reset) and a sigmoid surrogate (``alpha=4``). Differences, because
SpikingJelly's ``IFNode`` takes a fixed float threshold:

* the per-layer threshold is a buffer (loaded from spikeir's ``v_threshold`` parameter), not
  trained: the reference computes no threshold gradient (spikeir does, so spikeir does a little
  more work per training step);
* threshold-scaled spikes (spikeir's ``scale_output=True``) are the IF spikes times the
  threshold, multiplied after the neuron;
* the head convolution runs on the input repeated ``T`` times (SpikingJelly's usual direct
  encoding), where spikeir computes it once.

Forward outputs and the gradients of all weights and of the input are the same as spikeir's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

__all__ = ["SJESDNet", "SJSpikingDnCNN", "reset"]

TDBN_ALPHA = 1.0 / math.sqrt(2.0)


def reset(model: nn.Module) -> None:
    """Clear the membranes SpikingJelly keeps between calls."""
    functional.reset_net(model)


def _lif(v_threshold: float, tau: float) -> neuron.LIFNode:
    return neuron.LIFNode(tau=tau, decay_input=False, v_threshold=v_threshold, v_reset=0.0,
                          surrogate_function=surrogate.Sigmoid(alpha=4.0), step_mode="m")


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, bias: bool = False) -> layer.Conv2d:
    return layer.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias, step_mode="m")


def _tdbn(c: int, v_th: float, scale: float = 1.0) -> layer.ThresholdDependentBatchNorm2d:
    return layer.ThresholdDependentBatchNorm2d(TDBN_ALPHA * scale, v_th, c)


class _SRB(nn.Module):
    """``MDA(residual(x) + shortcut(x)) + x`` on ``[T, B, C, H, W]``."""

    def __init__(self, c: int, T: int, v_th: float, tau: float) -> None:
        super().__init__()
        self.residual = nn.Sequential(_lif(v_th, tau), _conv(c, c), _tdbn(c, v_th),
                                      _lif(v_th, tau), _conv(c, c), _tdbn(c, v_th, 0.2))
        self.shortcut = nn.Sequential(_conv(c, c), _tdbn(c, v_th))
        self.attn = layer.MultiDimensionalAttention(T, c, reduction_t=4, reduction_c=16, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.residual(x) + self.shortcut(x)) + x


class _Down(nn.Module):
    def __init__(self, c: int, v_th: float, tau: float) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(_lif(v_th, tau), _conv(c, 2 * c, stride=2), _tdbn(2 * c, v_th))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class _Up(nn.Module):
    """Bilinear x2 time step by time step (as released), then LIF -> conv -> tdBN."""

    def __init__(self, c: int, v_th: float, tau: float) -> None:
        super().__init__()
        self.up = nn.Sequential(_lif(v_th, tau), _conv(c, c // 2), _tdbn(c // 2, v_th))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        y = torch.zeros(T, B, C, 2 * H, 2 * W, device=x.device, dtype=x.dtype)
        for t in range(T):
            y[t] = F.interpolate(x[t], scale_factor=2, mode="bilinear", align_corners=False)
        return self.up(y)


class _FRB(nn.Module):
    """Real-valued refinement ``(1 - t) * a + t * z`` on ``[B, C, H, W]`` (plain torch)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        h = max(1, c // 8)
        self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, h, 1), nn.ReLU(), nn.Conv2d(h, c, 1),
                                nn.Sigmoid())
        self.sa = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, h, 3, padding=1), nn.ReLU(),
                                nn.Conv2d(h, c, 3, padding=1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        t = self.sa(z)
        return (1 - t) * self.ca(z) + t * z


class _PatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int) -> None:
        super().__init__()
        self.proj = _conv(cin, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SJESDNet(nn.Module):
    """The released ESDNet on SpikingJelly 2.0.0. ``[B, C, H, W] -> [B, C, H, W]``, ``H, W``
    multiples of 4. Arguments as :class:`spikeir.models.ESDNet` (``T >= 4``: SpikingJelly's
    attention asserts ``T >= reduction_t``)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 en_num_blocks=(4, 4, 8), de_num_blocks=(2, 2, 2), T: int = 4,
                 v_threshold: float = 0.15, tau: float = 2.0) -> None:
        super().__init__()
        self.T = T
        en, de = list(en_num_blocks)[:3], list(de_num_blocks)[:3]

        def stack(c: int, n: int) -> nn.Sequential:
            return nn.Sequential(*[_SRB(c, T, v_threshold, tau) for _ in range(n)])

        D, vt = dim, v_threshold
        self.patch_embed = _PatchEmbed(in_channels, D)
        self.encoder_level1 = stack(D, en[0])
        self.down1_2 = _Down(D, vt, tau)
        self.encoder_level2 = stack(2 * D, en[1])
        self.down2_3 = _Down(2 * D, vt, tau)
        self.encoder_level3 = stack(4 * D, en[2])
        self.decoder_level3 = stack(4 * D, de[2])
        self.up3_2 = _Up(4 * D, vt, tau)
        self.reduce_chan_level2 = nn.Sequential(_lif(vt, tau), _conv(4 * D, 2 * D, 1), _tdbn(2 * D, vt))
        self.decoder_level2 = stack(2 * D, de[1])
        self.up2_1 = _Up(2 * D, vt, tau)
        self.decoder_level1 = stack(2 * D, de[0])
        self.refinement = _FRB(2 * D)
        self.output = nn.Sequential(nn.Conv2d(2 * D, out_channels, 3, padding=1))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-2] % 4 or img.shape[-1] % 4:
            raise ValueError(f"SJESDNet needs H and W multiples of 4, got {tuple(img.shape)}")
        x0 = self.patch_embed(img.unsqueeze(0).repeat(self.T, 1, 1, 1, 1))
        e1 = self.encoder_level1(x0)
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        d3 = self.decoder_level3(e3)
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], 2)))
        d1 = self.decoder_level1(torch.cat([self.up2_1(d2), e1], 2))
        return self.output(self.refinement(d1.mean(0))) + img


class _ScaledIF(nn.Module):
    """``IFNode(v_reset=None)`` with a per-layer threshold read from the ``v_threshold`` buffer
    (same state-dict key as spikeir's learnable threshold); emits ``V_th * S``."""

    def __init__(self, v_threshold: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("v_threshold", torch.tensor(float(v_threshold)))
        self.node = neuron.IFNode(v_threshold=float(v_threshold), v_reset=None,
                                  surrogate_function=surrogate.Sigmoid(alpha=4.0), step_mode="m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        th = max(float(self.v_threshold), 1e-6)  # spikeir clamps the same way
        self.node.v_threshold = th
        s = self.node(x)
        return s if th == 1.0 else s * th


class SJSpikingDnCNN(nn.Module):
    """SPIDEN-style spiking DnCNN on SpikingJelly (see the module docstring for the differences
    from :class:`spikeir.models.SpikingDnCNN`). ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, in_channels: int = 1, depth: int = 17, width: int = 64, T: int = 4, bn: bool = True) -> None:
        super().__init__()
        self.T = T
        self.head = _conv(in_channels, width, bias=True)
        self.head_neuron = _ScaledIF()
        body: list[nn.Module] = []
        for _ in range(depth - 2):
            convs = [nn.Conv2d(width, width, 3, padding=1, bias=not bn)] + ([nn.BatchNorm2d(width)] if bn else [])
            body += [layer.SeqToANNContainer(*convs), _ScaledIF()]
        self.body = nn.Sequential(*body)
        self.tail = nn.Conv2d(width, in_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.head_neuron(self.head(x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)))
        return x - self.tail(self.body(s).mean(0))
