"""Fine-tuning throughput: transferlab's `full` training step against a plain hand-written PyTorch loop.

Same model (tf_efficientnet_lite0, random init: speed does not depend on the weights), same batch, same
resolution, same optimizer, measured side by side in one process. Also shows what channels-last and the
decoded uint8 cache add, against a per-item PIL pipeline that decodes and resizes every image every epoch.

On a GPU (--device auto finds one) the decoded cache sits on the GPU, both loops train under the same
autocast (bfloat16 where the GPU has it, as `--precision auto` does), the per-item PIL pipeline is left out,
and each row also gives how busy the GPU was while it ran (nvidia-smi's utilisation: the share of time a
kernel was running, sampled every 50 ms). A row with the `light` augmentation shows what augmenting on the
GPU costs. `--profile N` then runs N steps of the plain channels-last loop and of the default under
torch.profiler, and prints where each one's time went. `--graph` adds the plain loop with its whole step
captured in a CUDA graph: the pace of the GPU alone, where Python's launches bound the others.

    python benchmarks/throughput.py [--size 96] [--batch 32] [--steps 20] [--device auto|cpu|cuda] [--profile 0]
    python benchmarks/throughput.py --size 224 --batch 128 --steps 300     (the GPU goal's setting)
"""

from __future__ import annotations

import argparse
import functools
import io
import shutil
import subprocess
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity

from transferlab.backbones import create_backbone
from transferlab.config import FitConfig, resolve_device
from transferlab.data.transforms import PRESETS, Normalizer
from transferlab.model import TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train.batches import ImageBatches
from transferlab.train.loop import Trainer
from transferlab.train.precision import Precision


def _model(channels_last: bool, device: str = "cpu") -> TransferModel:
    torch.manual_seed(0)
    model = TransferModel(create_backbone("tf_efficientnet_lite0", pretrained=False), 10).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _clock(device: str) -> float:
    """Now, once the GPU has finished what was queued: its kernels run asynchronously."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


class Timed:
    """The timed steps of a loop, from `start()` to `stop()` with the GPU's queue drained at both ends. Under
    `profile` (a title), torch.profiler also records them and `stop()` prints where their time went: the
    kernels that took the device longest, the calls that took the host longest (a `cudaStreamSynchronize` or
    `cudaMemcpy` there is the host waiting for the device), and how busy the device was (kernel time over
    wall time: what nvidia-smi's utilisation estimates by sampling)."""

    def __init__(self, device: str, profile: str | None = None) -> None:
        self.device, self.title, self._started = device, profile, 0.0
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
        self._profiler = torch.profiler.profile(activities=activities) if profile else None

    def start(self) -> None:
        if self._profiler is not None:
            self._profiler.start()
        self._started = _clock(self.device)

    def stop(self) -> float:
        seconds = _clock(self.device) - self._started
        if self._profiler is not None:
            self._profiler.stop()
            events = self._profiler.key_averages()
            print(f"\n### {self.title}: {1000 * seconds:.1f} ms wall")
            if self.device.startswith("cuda"):
                kernels = [event for event in events if event.device_type == DeviceType.CUDA]  # not the ops too
                on_device = sum(event.self_device_time_total for event in kernels) / 1e6
                print(f"device busy {100 * on_device / seconds:.0f}% ({1000 * on_device:.1f} ms of kernels)")
                print(events.table(sort_by="self_device_time_total", row_limit=15, max_name_column_width=60))
            print(events.table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=60))
        return seconds


class GpuBusy:
    """How busy the GPU is while the block runs: nvidia-smi's utilisation samples, averaged. nvidia-smi rather
    than pynvml: it ships with the driver, so the benchmark needs no extra package. None without one."""

    def __enter__(self) -> GpuBusy:
        self.percent: float | None = None
        self._sampler: subprocess.Popen | None = None
        if shutil.which("nvidia-smi"):  # GPU 0: the one `cuda` trains on
            query = ["-i", "0", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "50"]
            self._sampler = subprocess.Popen(["nvidia-smi", *query], stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *_: object) -> None:
        if self._sampler is None:
            return
        self._sampler.terminate()
        out, _ = self._sampler.communicate()
        samples = [float(value) for value in out.split() if value.isdigit()]
        self.percent = sum(samples) / len(samples) if samples else None


def _as_float(images: torch.Tensor, device: str) -> torch.Tensor:
    """The plain loops' batches, normalised once in memory as a user would (4x the bytes of uint8)."""
    return (images.to(device).float() / 255 - 0.5) / 0.5


def plain_loop(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    steps: int,
    channels_last: bool,
    device: str = "cpu",
    profile: str | None = None,
) -> float:
    """What a user writes by hand: float batches already in memory, AdamW, cross-entropy; on a GPU, under the
    autocast that `--precision auto` picks, as PyTorch's AMP recipe has it."""
    model = _model(channels_last, device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data, labels = _as_float(images, device), labels.to(device)
    precision = Precision("auto", device)
    timed = Timed(device, profile)
    for step in range(steps + 2):
        if step == 2:  # the first steps pay one-time allocation costs
            timed.start()
        index = torch.randint(len(labels), (batch,), device=device)
        x = data[index]
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        with precision.autocast():
            loss = F.cross_entropy(model(x), labels[index])
        optimizer.zero_grad()
        precision.step(loss, optimizer)
    return steps * batch / timed.stop()


def graphed_loop(
    images: torch.Tensor, labels: torch.Tensor, batch: int, steps: int, device: str, profile: str | None = None
) -> float:
    """The plain channels-last loop with its whole step (forward, backward, AdamW) captured once in a CUDA graph
    and replayed, as PyTorch's CUDA-graphs recipe has it: no kernel launches from Python, so the GPU's own
    pace. What a step bound by its launches could reach; CUDA only."""
    model = _model(True, device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, capturable=True)
    data, labels = _as_float(images, device), labels.to(device)
    static_x = data[:batch].contiguous(memory_format=torch.channels_last)
    static_y = labels[:batch].clone()
    dtype = Precision("auto", device).dtype

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None, cache_enabled=False):  # no cache: graphs
            loss = F.cross_entropy(model(static_x), static_y)
        loss.backward()
        optimizer.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step()
    timed = Timed(device, profile)
    for replay in range(steps + 2):
        if replay == 2:
            timed.start()
        index = torch.randint(len(labels), (batch,), device=device)
        static_x.copy_(data[index])
        static_y.copy_(labels[index])
        graph.replay()
    return steps * batch / timed.stop()


def pil_pipeline(jpegs: list[bytes], labels: torch.Tensor, size: int, batch: int, steps: int) -> float:
    """The classic per-item pipeline: decode, resize and convert each image every time it is used."""
    model = _model(False)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    timed = Timed("cpu")
    for step in range(steps + 2):
        if step == 2:
            timed.start()
        index = torch.randint(len(labels), (batch,)).tolist()
        items = []
        for i in index:
            image = Image.open(io.BytesIO(jpegs[i])).convert("RGB").resize((size, size), Image.BILINEAR)
            items.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        x = (torch.stack(items).float() / 255 - 0.5) / 0.5
        loss = F.cross_entropy(model(x), torch.tensor([labels[i] for i in index]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch / timed.stop()


def transferlab_loop(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    steps: int,
    channels_last: bool,
    device: str = "cpu",
    augment: str = "none",
    precision: str = "auto",
    profile: str | None = None,
) -> float:
    """transferlab's Trainer, strategy `full`, from the decoded cache (on the GPU, on a GPU), no augmentation
    unless asked (the plain loop has none), `--precision auto` unless asked."""
    model = _model(channels_last, device)
    settings = {"augment": augment, "channels_last": channels_last, "precision": precision}
    config = FitConfig(epochs=1, lr=1e-3, batch_size=batch, **settings)
    normalizer = Normalizer(model.backbone.preprocessing, channels_last)
    count = batch * (steps + 2)
    # on a GPU the random cache is made there; `fit` hands over a CPU one, which ImageBatches moves once
    train = ImageBatches(
        images[:count], labels[:count], normalizer, batch, PRESETS[augment], shuffle=True, device=device
    )
    trainer = Trainer(model, parse_strategy("full"), config, train, train, run_dir=".", callbacks=[])
    trainer.strategy.set_train_mode(model)
    timed = Timed(device, profile)
    for step, drawn in enumerate(train.batches(seed=0, epoch=0)):
        if step == 2:
            timed.start()
        trainer._step(drawn)
    return steps * batch / timed.stop()


PLAIN = "plain PyTorch loop, channels-last"
OURS = "transferlab full (default: channels-last)"


@functools.cache
def _jpegs(images: torch.Tensor) -> list[bytes]:
    """Photo-sized JPEGs (256 px) for the per-item pipeline to read, as it would from an image folder. Made
    only where that row runs (on a CPU): a GPU's step count at 224 px makes them 15 GB of float on the way."""
    photos = torch.nn.functional.interpolate(images[:, :, :32, :32].float(), size=256, mode="bilinear")
    jpegs = []
    for image in photos.to(torch.uint8).permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    return jpegs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (a GPU needs a few hundred)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--profile", type=int, default=0, help="then profile this many steps of two rows")
    parser.add_argument("--graph", action="store_true", help="add the plain loop captured in a CUDA graph (CUDA)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    generator = torch.Generator(device).manual_seed(0)  # 300 steps at 224 px are 5.8 GB of images: made in place
    count = args.batch * (args.steps + 2)
    shape = (count, 3, args.size, args.size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator, device=device)
    labels = torch.randint(0, 10, (count,), generator=generator, device=device)
    plain = functools.partial(plain_loop, images, labels, args.batch)
    ours = functools.partial(transferlab_loop, images, labels, args.batch)
    variants: dict[str, Callable[..., float]] = {  # each called as (steps, profile=None)
        "plain PyTorch loop, NCHW": functools.partial(plain, channels_last=False, device=device),
        PLAIN: functools.partial(plain, channels_last=True, device=device),
        "per-item PIL decode of 256 px JPEGs, NCHW": lambda steps, profile=None: pil_pipeline(
            _jpegs(images), labels, args.size, args.batch, steps
        ),
        "transferlab full, NCHW": functools.partial(ours, channels_last=False, device=device),
        OURS: functools.partial(ours, channels_last=True, device=device),
        "transferlab full, channels-last, light augment": functools.partial(
            ours, channels_last=True, device=device, augment="light"
        ),
    }
    if device != "cpu":  # the per-item pipeline is a CPU story; on a GPU, what mixed precision is worth
        del variants["per-item PIL decode of 256 px JPEGs, NCHW"]
        variants["transferlab full, channels-last, float32 (--precision 32)"] = functools.partial(
            ours, channels_last=True, device=device, precision="32"
        )
    if args.graph and device != "cpu":  # the ceiling that Python's launches hide
        variants["plain PyTorch loop, channels-last, CUDA graph"] = functools.partial(
            graphed_loop, images, labels, args.batch, device=device
        )
    # Two interleaved rounds, best of each: the first run of anything pays one-time warm-up costs.
    speeds: dict[str, float] = {}
    busy: dict[str, float | None] = {}
    for _ in range(2):
        for name, measure in list(variants.items()):
            try:
                with GpuBusy() as gpu:
                    speed = measure(args.steps)
            except RuntimeError as error:  # one row that cannot run (a graph capture, say) costs only itself
                print(f"  {name}: failed: {error}", flush=True)
                del variants[name]
                continue
            print(f"  {name}: {speed:.0f} img/s, GPU busy {gpu.percent}", flush=True)
            if speed > speeds.get(name, 0.0):
                speeds[name], busy[name] = speed, gpu.percent
    rows = list(speeds.items())
    base = rows[0][1]
    print(
        f"\ntf_efficientnet_lite0 training, {args.size} px, batch {args.batch}, {args.steps} timed steps, "
        f"{torch.get_num_threads()} threads, {device}"
        + (f" ({torch.cuda.get_device_name()})" if device != "cpu" else "")
    )
    print(f"{'loop':<48} {'img/s':>8} {'vs plain':>9} {'GPU busy':>9}")
    for name, speed in rows:
        percent = busy[name]
        shown = "n/a" if percent is None else f"{percent:.0f}%"  # no GPU, or no nvidia-smi
        print(f"{name:<48} {speed:>8.1f} {speed / base:>8.2f}x {shown:>9}")
    if args.profile:  # where the default's steps and the plain loop's spend their time, side by side
        for name in [each for each in (PLAIN, OURS) if each in variants]:  # a failed row is gone
            variants[name](args.profile, profile=f"{name}, {args.profile} steps under torch.profiler")


if __name__ == "__main__":
    main()
