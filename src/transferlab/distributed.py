"""Training on several processes, through the engine the field already uses: `torchrun` starts one process
per rank and sets RANK, LOCAL_RANK and WORLD_SIZE (and the rendezvous) in each one's environment; `join`
reads them and joins the process group, gloo on CPU and NCCL on GPUs (with gloo beside it for the flags a
step's ranks agree on, which stay on the host). The Trainer wraps its step in
DistributedDataParallel, and training batches are shared out by rank (train/batches.py).

Run without torchrun, everything here is a no-op: `World()` is the one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one training run."""

    rank: int = 0
    size: int = 1
    device: str = "cpu"  # where this rank trains (cuda:LOCAL_RANK on GPUs) and its collectives run

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that measures (the advisor), writes the run dir and prints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def any(self, *flags: bool) -> list[bool]:
        """For each flag, whether any process raises it, in one collective. A decision to stop is taken by all
        of them at once, or one process would wait forever for the others' gradients."""
        if not self.active:
            return list(flags)
        # On the host, over gloo (see `join`): reading a GPU tensor's result back would make the CPU wait for
        # the GPU's whole queue, every step, where the loop otherwise queues work ahead of it
        value = torch.tensor([float(flag) for flag in flags])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return [bool(each) for each in value.tolist()]

    def from_main(self, value: T) -> T:
        """Rank 0's `value`, on every rank (a run dir named from the clock, say)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def combine(self, parts: dict[int, torch.Tensor], count: int) -> torch.Tensor:
        """The `count` rows that the ranks computed between them, on every rank: `parts` maps a first row to
        the rows this rank computed from it, and rank 0 must hold row 0. Each rank puts its parts in place
        among zeros and the ranks sum them, in float32, which holds float16 parts exactly."""
        first = parts[0] if self.is_main else None
        announced = self.from_main(None if first is None else (tuple(first.shape[1:]), first.dtype))
        assert announced is not None, "rank 0 holds row 0"
        shape, dtype = announced
        whole = torch.zeros((count, *shape), dtype=torch.float32, device=self.device)
        for start, rows in parts.items():
            whole[start : start + len(rows)] = rows.to(self.device, torch.float32)
        if self.active:
            dist.all_reduce(whole)
        return whole.to("cpu", dtype)

    def share_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) into every rank's `module`: each rank's statistics saw
        only its own share of the batches."""
        if self.active:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)


def rank() -> int:
    """This process's rank, from torchrun's environment (0 without it), before or without joining."""
    return int(os.environ.get("RANK", "0"))


def leave() -> None:
    """Leave the process group, once every rank has come here; nothing when this process never joined one.
    A process that exits still in the group leaves its teardown to the interpreter's exit, where gloo's
    threads can outlive it and abort the process ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def join(device: str) -> World:
    """This process's World: the one process, unless torchrun started several; then it joins their process
    group (once) and, on GPUs, takes the GPU of its local rank."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(device=device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():  # on GPUs NCCL for the gradients, and gloo for what stays on the host
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    return World(rank(), size, device)
