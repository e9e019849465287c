"""Data-parallel training under ``torchrun`` (PyTorch's own DDP: gloo on CPU, NCCL on CUDA).

``spikeir train`` needs no flag: started by ``torchrun --nproc_per_node=N``, it reads the
``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` variables torchrun sets. Every process draws the same
global batch (a pure function of seed and step) and trains on its own ``1/N`` slice of it, so
``data.batch_size`` is the global batch whatever ``N`` is, and a BatchNorm-free model follows the
same trajectory as a one-process run (up to float summation order). Rank 0 alone writes the log,
checkpoints, validation and the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "setup", "shard", "all_min", "all_mean", "average_grads", "wrap", "barrier", "teardown"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    owns_group: bool = False  # this process started the group (and ends it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device: torch.device, timeout_s: float = 3600.0) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (if any); on CUDA each process takes the GPU
    ``LOCAL_RANK``. ``timeout_s`` bounds how long a process waits in a collective, which includes
    the other ranks' wait while rank 0 validates (``train.dist_timeout``; NCCL's own default is 10
    minutes, too short for validating a large spiking model). Returns the rank/world info and the
    device to train on."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        from datetime import timedelta

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), owns), device


def shard(batch: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This process's contiguous slice of a global batch ``[B, ...]`` (``B`` divisible by the world)."""
    if not info.active:
        return batch
    return batch.chunk(info.world)[info.rank]


def all_min(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """``True`` only if ``flag`` holds on every process (so all skip a bad step together)."""
    if not info.active:
        return flag
    t = torch.tensor(1.0 if flag else 0.0, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def all_mean(value: float, info: DistInfo, device: torch.device) -> float:
    """The mean of a number over all processes."""
    if not info.active:
        return value
    t = torch.tensor(float(value), device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world


def average_grads(params, info: DistInfo) -> None:
    """Average the gradients of parameters DDP does not own (e.g. distillation adapters)."""
    if not info.active:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(info.world)


def wrap(model: nn.Module, info: DistInfo, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """``model`` itself in one process; a DDP wrapper (optionally with SyncBatchNorm) under torchrun."""
    if not info.active:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
