"""ESDNet: spiking U-Net for single-image deraining (Song et al., IJCAI 2024), and its ANN twin.

Layout (``D = dim``; sequences are ``[T, B, C, H, W]``)::

    img [B,3,H,W] -> patch_embed (once, copied over T) -> x0 [T,B,D,H,W]
    e1 = encoder_level1(x0)                                   D,  H
    e2 = encoder_level2(down1_2(e1))                          2D, H/2
    e3 = encoder_level3(down2_3(e2))                          4D, H/4
    d2 = decoder_level2(reduce_chan_level2(cat(up3_2(decoder_level3(e3)), e2)))     2D, H/2
    d1 = decoder_level1(cat(up2_1(d2), e1))                   2D, H
    out = output(refinement(mean_T(d1))) + img                [B,3,H,W]

Every level is a stack of spiking residual blocks (:class:`SRB`): two LIF-conv-tdBN stages plus
a conv-tdBN shortcut, gated by multi-dimensional attention (:class:`MDA`: temporal, channel,
spatial) and added to the block input. The network reads the image once and never emits spikes
to the outside: the decoder's time mean goes through a real-valued refinement block
(:class:`FRB`) and a convolution.

Submodule names follow the authors' release, so a released state dict loads as is
(:func:`spikeir.release.load_esdnet_release`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import TdBatchNorm2d, channels_last_wanted, fold_conv_bn, repeat_time
from ..neurons import LIF, BaseNeuron, compiled_kernel, compiled_kernel_applies, input_signature

__all__ = ["ESDNet", "ESDNetANN", "SRB", "MDA", "FRB", "TdBatchNorm2d"]

TDBN_ALPHA = 1.0 / math.sqrt(2.0)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)


@dataclass(frozen=True)
class _Parts:
    """How one network builds its activations and normalisations (spiking or not)."""

    T: int
    v_threshold: float
    tau: float
    spiking: bool

    def act(self) -> nn.Module:
        if not self.spiking:
            return nn.ReLU()
        lif = LIF(tau=self.tau, v_threshold=self.v_threshold, v_reset=0.0, decay_input=False, surrogate="sigmoid")
        th = lif.v_threshold
        del lif.v_threshold  # a fixed threshold is config, not a weight: keep it out of the state dict
        lif.register_buffer("v_threshold", th, persistent=False)
        return lif

    def bn(self, c: int, v_scale: float = 1.0) -> nn.BatchNorm2d:
        """tdBN (weight ``alpha * V_th * v_scale``) when spiking, plain BatchNorm for the ANN twin."""
        if self.spiking:
            return TdBatchNorm2d(c, v_threshold=self.v_threshold, alpha=TDBN_ALPHA * v_scale)
        return nn.BatchNorm2d(c)


class _Seq(nn.Sequential):
    """Sequential on ``[T, B, ...]``: neurons see the sequence, the other layers ``[T*B, ...]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        T, B = x.shape[:2]
        # an input repeated over T (stride 0) is copied by flatten in the default layout; cat
        # keeps its (channels-last) layout
        x = torch.cat([x[0]] * T) if T > 1 and x.stride(0) == 0 else x.flatten(0, 1)
        for m in self:
            x = m(x.unflatten(0, (T, B))).flatten(0, 1) if isinstance(m, BaseNeuron) else m(x)
        return x.unflatten(0, (T, B))


class _PoolGate(nn.Module):
    """Squeeze-excitation gate over dim 1 of ``[B, N, ...]``: ``sigmoid(MLP(avg) + MLP(max))``,
    shape ``[B, N, 1, 1, 1]`` for a 5-d input. The MLP is ``N -> max(1, N // ratio) -> N``."""

    def __init__(self, n: int, ratio: int) -> None:
        super().__init__()
        h = max(1, n // ratio)
        self.sharedMLP = nn.Sequential(nn.Conv3d(n, h, 1, bias=False), nn.ReLU(), nn.Conv3d(h, n, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.dim()))
        # reductions, not adaptive pools: they take any layout (channels-last included) at speed
        avg = x.mean(dims, keepdim=True)
        if torch.is_grad_enabled() and x.requires_grad:
            # the max one dim at a time: each step keeps only the indices of its (already
            # reduced) output for backward, where amax keeps its whole input
            mx = x
            for d in reversed(dims):
                mx = mx.max(dim=d, keepdim=True).values
        else:
            mx = x.amax(dims, keepdim=True)
        return torch.sigmoid(self.sharedMLP(avg) + self.sharedMLP(mx))


class _SpatialGate(nn.Module):
    """``[B, T, C, H, W] -> [B, 1, 1, H, W]``: conv3x3 over the per-pixel mean and max of the
    ``T*C`` maps, then sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # reduced over (T, C) in place of flatten(1, 2), which copies a channels-last block
        if torch.is_grad_enabled() and x.requires_grad:
            mx = x.max(2).values.max(1, keepdim=True).values  # keeps indices, not x (see _PoolGate)
        else:
            mx = x.amax((1, 2)).unsqueeze(1)
        pooled = torch.cat([x.mean((1, 2)).unsqueeze(1), mx], 1)
        return torch.sigmoid(self.conv(pooled)).unsqueeze(1)


class _Gated(torch.autograd.Function):
    """``y = x * g`` (``g`` a small broadcast gate), optionally then ReLU, for a chain of gates
    ``x = u * g_1 * ... * g_k`` over the attention's input ``u``.

    Plain autograd keeps every block-sized intermediate of the chain (``x`` for each product,
    the ReLU output); this keeps only ``u`` (saved anyway by the first product) and the gates,
    and rebuilds ``x`` in backward with the same multiplications, so the values and gradients
    are the same as autograd's. ``u`` and the earlier gates get no gradient here: it reaches
    them through the ops that made ``x``."""

    @staticmethod
    def forward(ctx, x, g, relu: bool, u, *prev):  # type: ignore[override]
        y = x * g
        ctx.relu = relu
        ctx.save_for_backward(u, g, *prev)
        return torch.relu(y) if relu else y

    @staticmethod
    def backward(ctx, go):  # type: ignore[override]
        u, g, *prev = ctx.saved_tensors
        x = u
        for p in prev:
            x = x * p  # the forward's order: input * gate
        if ctx.relu:
            go = go.masked_fill(x * g <= 0, 0.0)
        gx = go * g if ctx.needs_input_grad[0] else None
        gg = (go * x).sum_to_size(g.shape) if ctx.needs_input_grad[1] else None
        return (gx, gg, None, None) + (None,) * len(prev)


class MDA(nn.Module):
    """Multi-dimensional attention of MA-SNN (Yao et al., 2023): temporal, then channel, then
    spatial gating, then ReLU. ``[T, B, C, H, W] -> [T, B, C, H, W]``.

    The temporal MLP is ``T -> max(1, T // 4) -> T`` and the channel MLP ``C -> max(1, C // 16)
    -> C``; ``temporal=False`` drops the temporal gate (the ANN twin)."""

    def __init__(self, T: int, channels: int, temporal: bool = True) -> None:
        super().__init__()
        self.ta = _PoolGate(T, 4) if temporal else None
        self.ca = _PoolGate(channels, 16)
        self.sa = _SpatialGate()

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u = u.transpose(0, 1)  # [B, T, C, H, W]
        if not (torch.is_grad_enabled() and u.requires_grad):  # inference: the plain products
            # input * gate: the product is laid out as its first operand (the gate is [B, T, ...]
            # but the sequence [T, B, ...] in memory, channels-last included)
            if self.ta is not None:
                u = u * self.ta(u)  # pools (C, H, W) per time step
            u = u * self.ca(u.transpose(1, 2)).transpose(1, 2)  # pools (T, H, W) per channel
            u = u * self.sa(u)
            return F.relu(u).transpose(0, 1)
        # training: the same products through _Gated, which keeps u and the gates, not the
        # three block-sized intermediates and the ReLU output
        gates: list[torch.Tensor] = []
        x = u
        if self.ta is not None:
            gates.append(self.ta(u))
            x = u * gates[0]
        g = self.ca(x.transpose(1, 2)).transpose(1, 2)
        x = _Gated.apply(x, g, False, u, *gates) if gates else u * g
        gates.append(g)
        g = self.sa(x)
        return _Gated.apply(x, g, True, u, *gates).transpose(0, 1)


def _gate(avg: torch.Tensor, mx: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """:class:`_PoolGate`'s MLP on ``[B, N]`` pools, with its 1x1 Conv3d weights as matrices."""
    return torch.sigmoid(F.linear(F.relu(F.linear(avg, w1)), w2) + F.linear(F.relu(F.linear(mx, w1)), w2))


def _block_output(r: torch.Tensor, s: torch.Tensor, x: torch.Tensor, ta1: torch.Tensor | None,
                  ta2: torch.Tensor | None, ca1: torch.Tensor, ca2: torch.Tensor, sa: torch.Tensor) -> torch.Tensor:
    """An SRB's ``MDA(r + s) + x`` on ``[T, B, C, H, W]`` as plain tensor code, the same
    products in the same order as :meth:`MDA.forward`, for ``torch.compile`` to fuse into a few
    passes over memory (the three gates' pools, then the output). ``ta1, ta2``: the temporal
    MLP's weights (``None`` without temporal attention), ``ca1, ca2`` the channel MLP's,
    ``sa`` the spatial conv's."""
    u = r + s
    if ta1 is not None:
        g = _gate(u.mean((2, 3, 4)).t(), u.amax((2, 3, 4)).t(), ta1, ta2)  # [B, T]
        u = u * g.t()[:, :, None, None, None]
    g = _gate(u.mean((0, 3, 4)), u.amax((0, 3, 4)), ca1, ca2)  # [B, C]
    u = u * g[None, :, :, None, None]
    p = torch.stack([u.mean((0, 2)), u.amax((0, 2))], 1)  # [B, 2, H, W]
    u = u * torch.sigmoid(F.conv2d(p, sa, padding=1))[None]
    return F.relu(u) + x


def _compiled_block_output(temporal: bool, r: torch.Tensor, s: torch.Tensor, x: torch.Tensor,
                           hidden: int) -> Callable[..., torch.Tensor]:
    """The compiled :func:`_block_output`, one kernel per attention kind, input signatures, and
    channel-MLP width of 1 or more (Dynamo specialises size 1)."""
    key = (temporal, hidden == 1, *(input_signature(t) for t in (r, s, x)))
    return compiled_kernel("esdnet_block_output", key, _block_output)


class SRB(nn.Module):
    """Spiking residual block: ``MDA(residual(x) + shortcut(x)) + x``.

    ``residual`` is LIF -> conv3x3 -> tdBN -> LIF -> conv3x3 -> tdBN (scale ``0.2``: the branch
    starts small), ``shortcut`` conv3x3 -> tdBN on the block's real-valued input. The attention
    (:class:`MDA`) rescales the sum, the membrane input of the next block's first LIF.

    Args:
        channels: ``C``, kept.
        T: time steps of the input sequence (the temporal attention is sized by it).
        v_threshold, tau: of the LIF neurons (hard reset to 0, ``decay_input=False``, sigmoid
            surrogate), as in ESDNet.
        spiking: ``False`` builds the ANN twin's block (ReLU, BatchNorm, no temporal attention).

    Shape: ``[T, B, C, H, W] -> [T, B, C, H, W]`` (``T = 1`` for the ANN twin).

    Inside :func:`spikeir.neurons.compiled_inference`, when no gradient is needed, the sum, the
    attention and the block residual run as one ``torch.compile``-d function
    (:func:`_block_output`): the same products, a few fused passes over memory.
    """

    def __init__(self, channels: int, T: int = 4, v_threshold: float = 0.15, tau: float = 2.0,
                 spiking: bool = True, *, parts: _Parts | None = None) -> None:
        super().__init__()
        if parts is None:
            parts = _Parts(T=T, v_threshold=v_threshold, tau=tau, spiking=spiking)
        c = channels
        self.residual = _Seq(parts.act(), _conv(c, c), parts.bn(c), parts.act(), _conv(c, c), parts.bn(c, 0.2))
        self.shortcut = _Seq(_conv(c, c), parts.bn(c))
        self.attn = MDA(parts.T, c, temporal=parts.spiking)

    checkpoint_attention = False  # set by ESDNet(checkpoint_attention=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, s = self.residual(x), self.shortcut(x)
        a = self.attn
        # the fused kernel stands in for the attention: only for an MDA as built (no replacement
        # module, e.g. ONNX export's, and no hooks to skip, e.g. energy or rate recorders)
        if (type(a) is MDA and not any(m._forward_hooks or m._forward_pre_hooks for m in a.modules())
                and compiled_kernel_applies(x, r, s, *a.parameters())):
            w = [None, None] if a.ta is None else [m.weight.flatten(1) for m in a.ta.sharedMLP[::2]]
            w += [m.weight.flatten(1) for m in a.ca.sharedMLP[::2]]
            fn = _compiled_block_output(a.ta is not None, r, s, x, w[2].shape[0])
            return fn(r, s, x, *w, a.sa.conv.weight)
        u = r + s
        if self.checkpoint_attention and self.training and torch.is_grad_enabled():
            # the attention is cheap elementwise work but keeps three block-sized tensors
            return checkpoint(self.attn, u, use_reentrant=False, preserve_rng_state=False) + x
        return self.attn(u) + x


class Down(nn.Module):
    """``[T,B,C,H,W] -> [T,B,2C,H/2,W/2]``: LIF -> conv3x3 stride 2 -> tdBN."""

    def __init__(self, channels: int, parts: _Parts) -> None:
        super().__init__()
        self.maxpool_conv = _Seq(parts.act(), _conv(channels, 2 * channels, stride=2), parts.bn(2 * channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """``[T,B,C,H,W] -> [T,B,C/2,2H,2W]``: bilinear x2 on the real values -> LIF -> conv3x3 -> tdBN."""

    def __init__(self, channels: int, parts: _Parts) -> None:
        super().__init__()
        self.up = _Seq(parts.act(), _conv(channels, channels // 2), parts.bn(channels // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(x.flatten(0, 1), scale_factor=2, mode="bilinear", align_corners=False)
        return self.up(y.unflatten(0, x.shape[:2]))


class FRB(nn.Module):
    """Feature refinement on real values, ``[B,C,H,W] -> [B,C,H,W]``: a channel gate ``a`` and a
    pixel gate ``t`` mixed as ``(1 - t) * a + t * z`` (``a`` itself, as released)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c, h = channels, max(1, channels // 8)
        self.ca = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), _conv(c, h, 1, bias=True), nn.ReLU(), _conv(h, c, 1, bias=True), nn.Sigmoid()
        )
        self.sa = nn.Sequential(
            _conv(c, c, bias=True), _conv(c, h, bias=True), nn.ReLU(), _conv(h, c, bias=True), nn.Sigmoid()
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        t = self.sa(z)
        return (1 - t) * self.ca(z) + t * z


class PatchEmbed(nn.Module):
    """``[B,C,H,W] -> [B,dim,H,W]``: one conv3x3 without bias."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = _conv(in_channels, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _levels(blocks, name: str) -> list[int]:
    blocks = [int(b) for b in blocks]
    if len(blocks) not in (3, 4) or min(blocks[:3]) < 1:
        raise ValueError(f"{name} needs 3 (or 4, the 4th unused) block counts >= 1, got {blocks}")
    return blocks[:3]


class ESDNet(nn.Module):
    """Spiking deraining U-Net with the released layout and parameter names.

    Args:
        in_channels, out_channels: image channels (equal: the output adds the input image).
        dim: channels of the first level (48 in the release); levels use ``dim, 2dim, 4dim``.
        en_num_blocks: SRBs per encoder level (release ``[4, 4, 8]``; a 4th entry is ignored).
        de_num_blocks: SRBs per decoder level 1..3 (release ``[2, 2, 2]``).
        T: time steps; the temporal attention follows it (``T -> max(1, T//4) -> T``).
        v_threshold: LIF threshold (0.15), also the tdBN weight scale.
        tau: LIF time constant (2).
        checkpoint_blocks: in training, keep only each block's input for backward and recompute
            the block's forward there (activation checkpointing of every SRB, Down and Up):
            less memory, about one extra forward of compute. Same outputs, gradients and
            BatchNorm running statistics; no effect in eval mode or under ``torch.no_grad()``.
        checkpoint_attention: in training, recompute only each SRB's attention (:class:`MDA`)
            in backward: drops three of the block's saved tensors for a few cheap elementwise
            passes (no convolution is recomputed). Same results, as above.
        channels_last: run the activations channels-last (``[T, B, H, W, C]`` in memory), where
            oneDNN's 3x3 convolutions are 25-35% faster on CPU at the first two levels'
            sizes; ``None`` (default): for inference (eval mode) on CPU, where it measured
            8-15% faster end to end (training steps were slower). Same results up to float
            rounding; the output is returned in the usual contiguous layout.

    For fast inference use :meth:`fold_bn` (BatchNorm folded into the convolutions).

    Shape: ``[B, C, H, W] -> [B, C, H, W]``, any ``H, W``: the input is reflect-padded to a
    multiple of 4 (replicate when too small to reflect) and the output cropped back.
    """

    _spiking = True

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        en_num_blocks=(4, 4, 8),
        de_num_blocks=(2, 2, 2),
        T: int = 4,
        v_threshold: float = 0.15,
        tau: float = 2.0,
        checkpoint_blocks: bool = False,
        checkpoint_attention: bool = False,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__()
        if in_channels != out_channels:
            raise ValueError(f"ESDNet adds the input to its output: in_channels ({in_channels}) must equal "
                             f"out_channels ({out_channels})")
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        en, de = _levels(en_num_blocks, "en_num_blocks"), _levels(de_num_blocks, "de_num_blocks")
        self.config = {"in_channels": in_channels, "out_channels": out_channels, "dim": dim,
                       "en_num_blocks": en, "de_num_blocks": de}
        if self._spiking:
            self.config.update(T=T, v_threshold=v_threshold, tau=tau)
        self.T = T
        self.checkpoint_blocks = bool(checkpoint_blocks)  # a training option, not architecture: not in config
        self.channels_last = channels_last  # a runtime option, as checkpoint_blocks
        p = _Parts(T=T, v_threshold=v_threshold, tau=tau, spiking=self._spiking)

        def stack(c: int, n: int) -> nn.Sequential:
            return nn.Sequential(*[SRB(c, parts=p) for _ in range(n)])

        D = dim
        self.patch_embed = PatchEmbed(in_channels, D)
        self.encoder_level1 = stack(D, en[0])
        self.down1_2 = Down(D, p)
        self.encoder_level2 = stack(2 * D, en[1])
        self.down2_3 = Down(2 * D, p)
        self.encoder_level3 = stack(4 * D, en[2])
        self.decoder_level3 = stack(4 * D, de[2])
        self.up3_2 = Up(4 * D, p)
        self.reduce_chan_level2 = _Seq(p.act(), _conv(4 * D, 2 * D, 1), p.bn(2 * D))
        self.decoder_level2 = stack(2 * D, de[1])
        self.up2_1 = Up(2 * D, p)
        self.decoder_level1 = stack(2 * D, de[0])
        self.refinement = FRB(2 * D)
        self.output = nn.Sequential(_conv(2 * D, out_channels, bias=True))
        self.checkpoint_attention = checkpoint_attention

    @property
    def checkpoint_attention(self) -> bool:
        return all(b.checkpoint_attention for b in self.modules() if isinstance(b, SRB))

    @checkpoint_attention.setter
    def checkpoint_attention(self, on: bool) -> None:
        for b in self.modules():
            if isinstance(b, SRB):
                b.checkpoint_attention = bool(on)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        H, W = img.shape[-2:]
        ph, pw = -H % 4, -W % 4
        x = img
        if ph or pw:
            mode = "reflect" if H > ph and W > pw else "replicate"
            x = F.pad(img, (0, pw, 0, ph), mode=mode)
        cl = x.dim() == 4 and channels_last_wanted(self.channels_last, x, self.training)
        if cl:  # every op below keeps the layout (elementwise ops and empty_like follow their input)
            x = x.contiguous(memory_format=torch.channels_last)
        x0 = repeat_time(self.patch_embed(x), self.T)  # [T,B,D,H,W], T identical views
        run = self._checkpointed if self.checkpoint_blocks and self.training and torch.is_grad_enabled() else _call
        e1 = run(self.encoder_level1, x0)
        e2 = run(self.encoder_level2, run(self.down1_2, e1))
        e3 = run(self.encoder_level3, run(self.down2_3, e2))
        d3 = run(self.decoder_level3, e3)
        d2 = run(self.decoder_level2, run(self.reduce_chan_level2, _cat_channels(run(self.up3_2, d3), e2)))
        d1 = run(self.decoder_level1, _cat_channels(run(self.up2_1, d2), e1))
        z = d1.mean(0)
        if cl:  # a reduction over T returns the default layout
            z = z.contiguous(memory_format=torch.channels_last)
        out = self.output(self.refinement(z)) + x
        return out[..., :H, :W].contiguous()

    @staticmethod
    def _checkpointed(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``m(x)`` keeping only block inputs for backward; a level (a stack of SRBs) is
        checkpointed block by block, so backward holds one block's activations at a time."""
        blocks = list(m) if type(m) is nn.Sequential else [m]
        for b in blocks:
            x = checkpoint(b, x, use_reentrant=False, preserve_rng_state=False,  # no randomness inside
                           context_fn=lambda b=b: (nullcontext(), _keep_bn_stats(b)))
        return x

    @torch.no_grad()
    def fold_bn(self) -> ESDNet:
        """An inference copy (eval mode, no gradients) with every eval-mode (td)BatchNorm folded
        into the convolution before it: ``conv -> BN`` becomes one convolution with bias, which
        saves a pass over each activation. Same outputs as ``self.eval()`` up to float rounding.

        The copy's state dict has no BatchNorm entries: keep ``self`` for training and saving."""
        m = copy.deepcopy(self).eval()
        for seq in m.modules():
            if isinstance(seq, _Seq):
                for i in range(len(seq) - 1):
                    if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                        seq[i], seq[i + 1] = fold_conv_bn(seq[i], seq[i + 1]), nn.Identity()
        return m.requires_grad_(False)


def _call(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m(x)


def _cat_channels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``cat([a, b], 2)`` of ``[T, B, C, H, W]`` sequences, made on the ``[T*B, C, H, W]`` views:
    a 4-d cat keeps a channels-last layout, a 5-d one does not."""
    return torch.cat([a.flatten(0, 1), b.flatten(0, 1)], 1).unflatten(0, a.shape[:2])


@contextmanager
def _keep_bn_stats(m: nn.Module):
    """Undo the running-statistics update of a checkpoint's recomputed forward (the first
    forward already made it; batch statistics, hence outputs, are the same both times)."""
    saved = [(b, b.running_mean.clone(), b.running_var.clone(), b.num_batches_tracked.clone())
             for b in m.modules() if isinstance(b, nn.BatchNorm2d) and b.track_running_stats]
    try:
        yield
    finally:  # also when the recomputation stops early (it raises to stop)
        for b, mean, var, n in saved:
            b.running_mean.copy_(mean)
            b.running_var.copy_(var)
            b.num_batches_tracked.copy_(n)


class ESDNetANN(ESDNet):
    """The ANN twin of :class:`ESDNet`: ReLU for LIF, plain BatchNorm, no time axis (run as
    ``T = 1``), channel and spatial attention only. Same names and shapes otherwise."""

    _spiking = False

    def __init__(self, in_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 en_num_blocks=(4, 4, 8), de_num_blocks=(2, 2, 2), checkpoint_blocks: bool = False,
                 checkpoint_attention: bool = False, channels_last: bool | None = None) -> None:
        super().__init__(in_channels, out_channels, dim, en_num_blocks, de_num_blocks, T=1,
                         checkpoint_blocks=checkpoint_blocks, checkpoint_attention=checkpoint_attention,
                         channels_last=channels_last)
