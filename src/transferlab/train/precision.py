"""Mixed precision for the training step: the forward pass and the loss under autocast, the backward pass
and the optimizer step outside it, through a loss scaler where the number format needs one.

- `bf16`: bfloat16 autocast. It has float32's range, so gradients need no scaling; GPUs from Ampere on, and
  CPUs, run it.
- `16`: float16 autocast with a GradScaler, for GPUs without bfloat16: float16's small range underflows
  small gradients unless the loss is scaled up first.
- `32`: plain float32.
- `auto`: bf16 on a CUDA GPU that has it, else 16 on a GPU, and 32 on a CPU (where float32 is what the
  kernels are fastest at on most CPUs, and what every measurement in benchmarks/ used).

Weights, optimizer state and the saved model stay float32 throughout; only activations change format.

Passes that only report (scoring the test split, `predict`, `evaluate`) have their own setting,
`inference_precision`: `auto` is bfloat16 where the device runs it natively (a CUDA GPU that has it; a CPU with
AVX-512 BF16 or AMX), as OpenVINO's CPU plugin does by default, and float32 elsewhere; `32` and `bf16` force one.
On this project's CPU it scores faster at the same accuracy within a few hundredths of a point, and a bfloat16
training step is slower than float32's, so training there stays float32 (benchmarks/README.md, "In bfloat16"
and "bfloat16's batch", for the figures). Passes that decide (validation, the advisor's probes, the feature
caches) stay float32 everywhere.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}


def resolve_precision(precision: str, device: str) -> str:
    """`precision` with `auto` replaced by what `device` runs best."""
    if precision != "auto":
        return precision
    if not device.startswith("cuda"):
        return "32"
    return "bf16" if torch.cuda.is_bf16_supported() else "16"


def native_bfloat16(device: str) -> bool:
    """Whether `device` computes in bfloat16 in hardware, rather than emulating it more slowly than float32."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device != "cpu":
        return False
    # torch's own probes of the CPU (private, so each is looked up, and missing means no).
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe is not None and probe() for probe in probes)


def inference_dtype(precision: str, device: str) -> torch.dtype | None:
    """The autocast format of a reporting pass under `inference_precision`, on `device` (None: float32)."""
    if precision == "bf16" or (precision == "auto" and native_bfloat16(torch.device(device).type)):
        return torch.bfloat16
    return None


class Precision:
    """How a training step runs its arithmetic on `device` (a torch device string)."""

    def __init__(self, precision: str, device: str) -> None:
        self.name = resolve_precision(precision, device)
        self.device_type = torch.device(device).type
        self.dtype = DTYPES.get(self.name)
        self.scaler = torch.amp.GradScaler(self.device_type) if self.name == "16" else None

    def autocast(self) -> AbstractContextManager:
        """The context of the forward pass and the loss."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward pass and optimizer step; with a scaler, a step whose gradients overflowed is skipped and
        the scale lowered."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
