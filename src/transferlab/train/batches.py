"""Batches for the training loop, from decoded images or from a cached frozen prefix.

Every random choice of a step (shuffle order, augmentation, which cached view) is drawn from generators seeded
by (seed, epoch, step). A run resumed in the middle of an epoch therefore sees exactly the batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch

from transferlab.data.transforms import PRESETS, Augment, Normalizer
from transferlab.errors import ConfigError
from transferlab.train.mixing import Mixed


@dataclass
class Batch:
    """One step's input.

    - `x`: normalised images, or a cached frozen prefix's outputs, to be fed to backbone stage `start`;
    - `y`: labels [N] (one head), or [N, T] with one column per head the model runs and -1 where missing;
    - `domain`: the domain all its images come from, for a multi-domain model (its head is the one that runs);
    - `index`: which samples of the training split the labelled rows are (for per-sample weights);
    - `n_source`: for domain adaptation, the first `n_source` rows are the labelled source's and the rest the
      unlabelled target's (labelled -1);
    - `mix`: set when the loop mixed the images (train/mixing.py): the labels they were mixed with.
    """

    x: torch.Tensor
    y: torch.Tensor
    start: int = 0
    domain: str | None = None
    index: torch.Tensor | None = None
    n_source: int | None = None
    mix: Mixed | None = None

    @property
    def targets(self) -> torch.Tensor:
        """`y` as [N, T]: column t belongs to the t-th head of the model's outputs."""
        return self.y.view(len(self.y), -1)


STEP_SPAN = 10_007  # the (epoch, step) pairs the arithmetic seed below keeps apart: steps -1 to 10,005


def step_seed(seed: int, epoch: int, step: int) -> int:
    """A distinct, stable seed for each (run seed, epoch, step); step -1 is the epoch's shuffle.

    Up to step 10,005 it is plain arithmetic, as it always was, so earlier runs repeat exactly. From there on
    that arithmetic would hand out the next epoch's seeds again (the view cache numbers its chunks by image
    index, which gets there on large sets), so those steps take a hash of the triple instead.
    """
    if step + 1 < STEP_SPAN:
        return (seed * 1_000_003 + epoch * STEP_SPAN + step + 1) % (2**63 - 1)
    entropy = [seed % 2**64, epoch + 1, step + 1]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


def _resident(stored: torch.Tensor, device: str) -> torch.Tensor:
    """`stored` (the decoded images, or the frozen prefix's cached views) on the GPU that trains, where it takes
    at most a quarter of that GPU's free memory: each batch is then gathered, augmented and normalised there,
    and nothing crosses the bus per step (19 MB a step for 128 images at 224 px). Elsewhere it stays put."""
    if not device.startswith("cuda") or stored.device.type == "cuda":
        return stored
    free, _ = torch.cuda.mem_get_info(device)
    return stored.to(device) if stored.numel() * stored.element_size() <= free // 4 else stored


def _to(index: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """A step's CPU `index` where `stored` is, without waiting: a plain copy to a GPU first waits for the GPU
    to finish everything queued, and the GPU then idles while the CPU prepares the step."""
    return index.to(stored.device, non_blocking=True)


def _labels(labels: torch.Tensor, index: torch.Tensor, device: str) -> torch.Tensor:
    # labels on a GPU indexed by a CPU index would copy it there blocking; from pageable memory the copy to
    # `device` is staged before it returns, so safe
    return labels[_to(index, labels)].to(device, non_blocking=True)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _num_batches(count: int, batch_size: int, training: bool) -> int:
    """Training (shuffled) drops the ragged last batch: a batch of one breaks BatchNorm, and the images it
    leaves out change every epoch. Evaluation keeps every image."""
    return max(1, count // batch_size) if training else -(-count // batch_size)


def _order(n: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    return torch.randperm(n, generator=_generator(step_seed(seed, epoch, -1))) if shuffle else torch.arange(n)


def _steps(
    batches: ImageBatches | CachedBatches, seed: int, epoch: int, first_step: int
) -> Iterator[tuple[torch.Tensor, torch.Generator]]:
    """For each step from `first_step`: the sample indices of its batch and the generator of its randomness;
    of a shard (see `shard`), every shards-th image of the batch, with randomness of its own."""
    order = _order(len(batches.labels), seed, epoch, batches.shuffle)
    size, part, parts = batches.batch_size, batches.shard, batches.shards
    for step in range(first_step, len(batches)):
        index = order[step * size : (step + 1) * size][part::parts]
        yield index, _generator((step_seed(seed, epoch, step) + part) % (2**63 - 1))


@dataclass
class ImageBatches:
    """Decoded uint8 images, normalised (and augmented) batch by batch; the model runs from its first stage."""

    images: torch.Tensor
    labels: torch.Tensor
    normalizer: Normalizer
    batch_size: int
    augment: Augment = PRESETS["none"]
    shuffle: bool = False
    device: str = "cpu"
    start_stage: int = 0
    shard: int = 0
    shards: int = 1

    def __post_init__(self) -> None:
        self.images = _resident(self.images, self.device)

    def __len__(self) -> int:
        return _num_batches(len(self.labels), self.batch_size, self.shuffle)

    def batches(self, seed: int = 0, epoch: int = 0, first_step: int = 0) -> Iterator[Batch]:
        for index, generator in _steps(self, seed, epoch, first_step):
            x = self.normalizer(self.images[_to(index, self.images)], self.augment, generator, self.device)
            yield Batch(x, _labels(self.labels, index, self.device), self.start_stage, index=index)


@dataclass
class CachedBatches:
    """Outputs of the frozen prefix, cached once as `views` [V, N, ...]; each epoch draws one view per image.

    `start_stage` is the first stage the model still has to run (the number of frozen stages).
    """

    views: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    start_stage: int
    shuffle: bool = False
    device: str = "cpu"
    shard: int = 0
    shards: int = 1

    def __post_init__(self) -> None:
        self.views = _resident(self.views, self.device)

    def __len__(self) -> int:
        return _num_batches(len(self.labels), self.batch_size, self.shuffle)

    def batches(self, seed: int = 0, epoch: int = 0, first_step: int = 0) -> Iterator[Batch]:
        for index, generator in _steps(self, seed, epoch, first_step):
            view = torch.randint(self.views.shape[0], (len(index),), generator=generator)
            x = self.views[_to(view, self.views), _to(index, self.views)].to(self.device, non_blocking=True).float()
            if x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            yield Batch(x, _labels(self.labels, index, self.device), self.start_stage, index=index)


@dataclass
class DomainBatches:
    """Several domains' batches, interleaved: each step draws a whole batch from one domain, in an order
    shuffled per epoch in which every domain appears as often as it has batches."""

    domains: Mapping[str, ImageBatches | CachedBatches]
    shuffle: bool = False

    def __len__(self) -> int:
        return sum(len(batches) for batches in self.domains.values())

    def schedule(self, seed: int, epoch: int) -> list[str]:
        """Which domain each step of `epoch` draws from."""
        order = [name for name, batches in self.domains.items() for _ in range(len(batches))]
        return [order[i] for i in _order(len(order), seed, epoch, self.shuffle)]

    def batches(self, seed: int = 0, epoch: int = 0, first_step: int = 0) -> Iterator[Batch]:
        schedule = self.schedule(seed, epoch)
        done = schedule[:first_step]  # a resumed epoch skips each domain's steps already taken
        streams = {
            name: batches.batches(seed + k, epoch, done.count(name))  # each domain its own randomness
            for k, (name, batches) in enumerate(self.domains.items())
        }
        for name in schedule[first_step:]:
            batch = next(streams[name])
            batch.domain = name
            yield batch


@dataclass
class PairedBatches:
    """Domain adaptation's batches: each source batch side by side with a target batch, as one batch whose
    target rows are labelled -1 (BatchNorm layers see both domains, as in DANN). An epoch is a pass over the
    source; the target stream cycles through its own epochs, at the position that the global step fixes, so a
    resumed run draws the same target batches."""

    source: ImageBatches | CachedBatches
    target: ImageBatches | CachedBatches

    def __len__(self) -> int:
        return len(self.source)

    def _targets(self, seed: int, epoch: int, first_step: int) -> Iterator[Batch]:
        position = epoch * len(self.source) + first_step
        target_epoch, step = divmod(position, len(self.target))
        seed += 1  # the target's own randomness: its shuffle and augmentation differ from the source's
        while True:
            yield from self.target.batches(seed, target_epoch, step)
            target_epoch, step = target_epoch + 1, 0

    def batches(self, seed: int = 0, epoch: int = 0, first_step: int = 0) -> Iterator[Batch]:
        targets = self._targets(seed, epoch, first_step)
        for source in self.source.batches(seed, epoch, first_step):
            target = next(targets)
            unlabelled = torch.full((len(target.y),), -1, dtype=source.y.dtype, device=source.y.device)
            x = torch.cat([source.x, target.x])
            if x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            yield Batch(x, torch.cat([source.y, unlabelled]), source.start, index=source.index, n_source=len(source.y))


Batches = ImageBatches | CachedBatches | DomainBatches | PairedBatches


def shard(batches: Batches, rank: int, size: int) -> Batches:
    """`batches` as process `rank` of `size` draws them (distributed.py): each step is the step that one
    process would take, the same images in the same order, and each rank takes every size-th image of its
    batch. The batch that the ranks' gradients are averaged over is the one process's batch, so a run keeps
    its batch size, steps and schedule on any number of processes."""

    def one(each: ImageBatches | CachedBatches) -> ImageBatches | CachedBatches:
        if each.batch_size < 2 * size:  # BatchNorm needs two images per rank
            raise ConfigError(f"batch size {each.batch_size} cannot give {size} processes two images each")
        return replace(each, shard=rank, shards=size)

    if size == 1:
        return batches
    if isinstance(batches, DomainBatches):
        return replace(batches, domains={name: one(each) for name, each in batches.domains.items()})
    if isinstance(batches, PairedBatches):
        return replace(batches, source=one(batches.source), target=one(batches.target))
    return one(batches)
