"""The per-step seeds that make dropout, augmentation and shuffling repeatable, and the share of each batch
that a rank of a distributed run takes."""

from __future__ import annotations

import pytest
import torch

from transferlab.errors import ConfigError
from transferlab.train.batches import CachedBatches, PairedBatches, shard, step_seed


def test_step_seeds_are_distinct_past_ten_thousand_steps_and_unchanged_below() -> None:
    assert step_seed(3, 2, 5) == 3 * 1_000_003 + 2 * 10_007 + 6  # the seeds every run so far was measured with
    # the view cache numbers chunks by image index: chunk 10,007 of epoch -1 once drew epoch 0's first dropout seed
    assert step_seed(0, -1, 10_007) != step_seed(0, 0, 0)
    seeds = [step_seed(seed, epoch, step) for seed in (0, 1) for epoch in range(-1, 3) for step in range(-1, 20_100, 7)]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= value < 2**63 for value in seeds)
    assert step_seed(0, 1, 20_000) == step_seed(0, 1, 20_000)  # stable, so a resumed run draws the same


def test_ranks_share_out_each_batch_of_one_process_and_refuse_too_small_a_share() -> None:
    cached = CachedBatches(torch.arange(40.0).view(1, 40, 1), torch.arange(40), 8, start_stage=1, shuffle=True)
    whole = [batch.y.tolist() for batch in cached.batches(seed=3, epoch=1)]
    ranks = [[batch.y.tolist() for batch in shard(cached, rank, 2).batches(seed=3, epoch=1)] for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(whole) == 5  # the same steps on every rank
    for step, batch in enumerate(whole):  # each step's batch is one process's, halved: none lost, none twice
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(batch) and len(ranks[0][step]) == 4
    paired = shard(PairedBatches(cached, cached), 1, 2)
    assert isinstance(paired, PairedBatches) and paired.target.shards == 2  # the target's batches too
    with pytest.raises(ConfigError, match="two images each"):
        shard(cached, 0, 5)
    assert shard(cached, 0, 1) is cached
