"""A training step's loss and its parts, read on the host a step late.

Reading a number off a GPU at once (`loss.item()`) makes the CPU wait until the GPU has run everything queued,
and then the GPU idles while the CPU launches the next kernels; the loop used to do that twice a step. Copied
to the host without waiting, and read once the next step is queued, the number is long there. On a CPU the
values need no copy; only the callbacks' turn comes a step late, as on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepValues:
    """The loss and its named parts of the step at (`epoch`, `step`), on their way to the host."""

    epoch: int
    step: int
    names: tuple[str, ...]
    values: torch.Tensor  # [1 + parts] float32, on the host once `ready` has passed
    ready: torch.cuda.Event | None

    @classmethod
    def of(cls, loss: torch.Tensor, parts: dict[str, torch.Tensor], epoch: int, step: int) -> StepValues:
        values = torch.stack([loss.detach().float(), *(part.detach().float() for part in parts.values())])
        ready = None
        if values.is_cuda:
            values = values.to("cpu", non_blocking=True)  # into pinned memory, queued behind the step
            ready = torch.cuda.Event()
            ready.record()
        return cls(epoch, step, tuple(parts), values, ready)

    def read(self) -> tuple[float, dict[str, float]]:
        """(loss, parts), waiting for the GPU only up to this step's end."""
        if self.ready is not None:
            self.ready.synchronize()
        loss, *parts = self.values.tolist()
        return loss, dict(zip(self.names, parts, strict=True))
