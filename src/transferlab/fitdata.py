"""The prepared data of one run, seen as heads: a source's tasks, or one source per domain.

- One source, one task: one head, called `label`.
- One source with several label columns (multi-task): a head per task, every image feeding all of them.
- Several sources (multi-domain): a head per domain, each trained on its own source's images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from transferlab.data import DecodedSplit, PreparedData


@dataclass
class FitData:
    """`sources` maps each domain to its prepared data; a run without domains has one source under `""`."""

    sources: dict[str, PreparedData]

    @property
    def domains(self) -> bool:
        return "" not in self.sources

    @property
    def heads(self) -> dict[str, list[str]]:
        """{head: class names}, in the model's head order."""
        if self.domains:
            return {name: data.classes for name, data in self.sources.items()}
        return self.sources[""].heads

    def view(self, head: str) -> PreparedData:
        """One head's data as a single-task set: [N] labels, images that lack a label for it left out."""
        return self.sources[head] if self.domains else self.sources[""].task_view(head)

    def with_val_in_train(self) -> FitData:
        """Every source with its validation images added to its training images: what a refit trains on once
        validation has chosen the epoch. Validation stays as it was; it is no longer held out."""
        return FitData(
            {
                name: replace(data, splits=data.splits | {"train": _joined(data.splits["train"], data.splits["val"])})
                for name, data in self.sources.items()
            }
        )

    def smallest_head(self) -> str:
        """The head with the fewest training images in its smallest class: it decides whether the set is small."""
        return min(self.heads, key=lambda head: int(self.train_counts(head).min()))

    def train_counts(self, head: str) -> torch.Tensor:
        """Training images per class of `head`, read from the labels alone (a view would copy the images)."""
        source = self.sources[head if self.domains else ""]
        labels = source.splits["train"].labels
        labels = labels.view(len(labels), -1)[:, 0 if self.domains else list(source.heads).index(head)]
        return torch.bincount(labels[labels >= 0], minlength=len(self.heads[head]))

    @property
    def train_images(self) -> int:
        """Training images in all: each is one sample per step, whatever number of heads it labels."""
        return sum(len(data.splits["train"].labels) for data in self.sources.values())

    @property
    def skipped(self) -> list:
        return [bad for data in self.sources.values() for bad in data.skipped]

    def sizes(self) -> dict[str, int]:
        """Images per split, over every source."""
        sizes: dict[str, int] = {}
        for data in self.sources.values():
            for split, decoded in data.splits.items():
                sizes[split] = sizes.get(split, 0) + len(decoded.labels)
        return sizes


def _joined(first: DecodedSplit, second: DecodedSplit) -> DecodedSplit:
    """`first`'s images, then `second`'s, as one split (a copy in memory, even of a file-backed cache)."""
    paths = first.paths + second.paths if first.paths is not None and second.paths is not None else None
    return DecodedSplit(
        torch.cat([first.images, second.images]),
        torch.cat([first.labels, second.labels]),
        first.sizes + second.sizes,
        first.skipped + second.skipped,
        paths,
    )
