"""`torchrun -m transferlab fit`: two gloo processes on this CPU train like one, rank 0 alone writes the run
dir, a distributed run resumes from a checkpoint, a refit, domain adaptation, several tasks and several
domains train on both ranks, and the ranks share out the frozen prefix's cache and get one process's. Real
processes, a tiny backbone, real digit images."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from tests.conftest import TINY, InterruptAt, image_folder
from transferlab.backbones import create_backbone
from transferlab.config import FitConfig
from transferlab.data.transforms import PRESETS, Normalizer
from transferlab.distributed import join, leave
from transferlab.errors import Interrupted
from transferlab.fitting import build_run, fit, train_run
from transferlab.model import TransferModel
from transferlab.rundir import RunDir
from transferlab.strategies import parse_strategy
from transferlab.train.batches import ImageBatches, shard
from transferlab.train.features import cache_views
from transferlab.train.loop import Trainer

pytestmark = pytest.mark.slow
SETTINGS = {"image_size": 32, "epochs": 3, "batch_size": 16, "strategy": "partial:2", "report": False}


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    environment = os.environ | {"OMP_NUM_THREADS": "1"}  # two processes on two cores
    done = subprocess.run(
        [*command, "-m", "transferlab", *args], capture_output=True, text=True, env=environment, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _flags(weights: Path) -> list[str]:
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in SETTINGS.items() if name != "report"]
    return [*flags, "--backbone", TINY, "--weights", str(weights), "--no-report"]


@pytest.fixture(scope="module")
def folder(digits, tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("digits"), *digits)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in RunDir(run_dir).metrics.read_text().splitlines()]


def test_two_processes_train_like_one_and_only_rank_0_writes(folder, tiny_weights, tmp_path) -> None:
    config = FitConfig(backbone=TINY, weights=str(tiny_weights), **SETTINGS)
    one = fit(str(folder), config, tmp_path / "one", quiet=True)
    # A time limit that never binds: each epoch's plan is still broadcast from rank 0 (callbacks.TimeBudget)
    limit = ["--time-limit", "600"]
    done = _torchrun("fit", str(folder), *_flags(tiny_weights), *limit, "--out", str(tmp_path / "two"))
    assert done.stdout.count("run dir:") == 1 and done.stdout.count("test: accuracy") == 1  # one voice
    two = _rows(tmp_path / "two")
    assert [row["epoch"] for row in two] == [1, 2, 3]  # one writer: each epoch logged once
    summary = json.loads(RunDir(tmp_path / "two").summary.read_text())
    assert "shared out over 2 processes" in summary["input"]
    # The same batches, halved per rank: the same steps and batch size, so the same accuracy within noise
    # (108 test images: one image is 0.9 points). Measured: 0.917 against 0.926, validation loss 0.549 / 0.543.
    assert abs(summary["accuracy"] - one.scores["accuracy"]) <= 0.05
    assert two[-1]["val_loss"] == pytest.approx(one.state.history[-1]["val_loss"], rel=0.1)
    assert two[-1]["val_loss"] < two[0]["val_loss"]  # and it learned


def test_a_distributed_run_resumes_where_an_interrupted_one_stopped(folder, tiny_weights, tmp_path) -> None:
    config = FitConfig(backbone=TINY, weights=str(tiny_weights), **SETTINGS)
    run = build_run(str(folder), config, tmp_path / "run", echo=lambda _: None)
    with pytest.raises(Interrupted):
        train_run(run, quiet=True, callbacks=[InterruptAt(len(run.train) + 3)])  # in the second epoch
    assert [row["epoch"] for row in _rows(tmp_path / "run")] == [1]
    done = _torchrun("fit", "--resume", str(tmp_path / "run"))
    assert "resuming at epoch 2, step 3" in done.stdout
    assert [row["epoch"] for row in _rows(tmp_path / "run")] == [1, 2, 3]
    assert json.loads(RunDir(tmp_path / "run").summary.read_text())["stop_reason"] == "completed all epochs"


def test_a_distributed_refit_trains_on_both_ranks_and_rank_0_alone_scores_and_writes(folder, tiny_weights, tmp_path):
    config = FitConfig(backbone=TINY, weights=str(tiny_weights), **SETTINGS, refit=True)
    one = fit(str(folder), config, tmp_path / "one", quiet=True)
    done = _torchrun("fit", str(folder), *_flags(tiny_weights), "--refit", "--out", str(tmp_path / "two"))
    assert done.stdout.count("selected model") == 1 and done.stdout.count("refit: training again") == 1
    files = RunDir(tmp_path / "two")
    refit = json.loads(files.summary.read_text())["refit"]
    assert refit["train_images"] == one.refit.train_images and refit["selected"]["split"] == "test"
    rows = [json.loads(line) for line in files.refit_metrics.read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, refit["epochs"] + 1))  # one writer
    # The same batches halved per rank, as in the plain run above: the same accuracy within noise.
    assert abs(json.loads(files.summary.read_text())["accuracy"] - one.scores["accuracy"]) <= 0.05


def test_adapt_trains_on_both_ranks_and_scores_the_target_like_one_process(folder, tiny_weights, tmp_path) -> None:
    # The target is the source's own images, unlabelled: no shift, so both runs score near the plain fit's 92%
    # and a difference between them means something (on a shifted target this tiny backbone scores near chance).
    adapting = {"target": str(folder), "adaptation": "dann", "source_weighting": "importance"}
    config = FitConfig(backbone=TINY, weights=str(tiny_weights), **SETTINGS, **adapting)
    one = fit(str(folder), config, tmp_path / "one", quiet=True)
    method = ["--target", str(folder), "--method", "dann", "--weighting", "importance"]
    done = _torchrun("adapt", str(folder), *method, *_flags(tiny_weights), "--out", str(tmp_path / "two"))
    assert done.stdout.count("importance weights:") == 1 and done.stdout.count("run dir:") == 1  # one voice
    files = RunDir(tmp_path / "two")
    summary = json.loads(files.summary.read_text())
    assert "shared out over 2 processes" in summary["input"] and "a target batch beside each" in summary["input"]
    rows = _rows(tmp_path / "two")
    assert [row["epoch"] for row in rows] == [1, 2, 3]  # one writer
    assert all(row["train/transfer/dann"] > 0 for row in rows)  # the discriminator trained on both domains
    scores = json.loads(files.scores.read_text())
    # The same batches halved per rank: the same accuracy within noise (108 test images: one is 0.9 points).
    assert scores["split"] == one.scores["split"] == "target test"
    assert abs(scores["accuracy"] - one.scores["accuracy"]) <= 0.05


def _close_per_head(two: dict, one: dict, tolerance: float) -> None:
    for head, scores in one["tasks"].items():
        assert abs(two["tasks"][head]["accuracy"] - scores["accuracy"]) <= tolerance, head


def test_several_tasks_with_gradnorm_train_on_both_ranks_like_one_process(manifest, tiny_weights, tmp_path) -> None:
    # GradNorm is the weighting that takes gradients inside the loss (on the shared features), beside DDP's
    config = FitConfig(backbone=TINY, weights=str(tiny_weights), **SETTINGS, tasks="digit,parity", weighting="gradnorm")
    one = fit(str(manifest), config, tmp_path / "one", quiet=True)
    tasks = ["--tasks", "digit,parity", "--weighting", "gradnorm"]
    _torchrun("fit", str(manifest), *tasks, *_flags(tiny_weights), "--out", str(tmp_path / "two"))
    rows = _rows(tmp_path / "two")
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert rows[-1]["train/weight/digit"] != 1.0  # the task weights learned, on both ranks' gradients
    # 48 test images: one image is 2.1 points
    _close_per_head(json.loads(RunDir(tmp_path / "two").scores.read_text()), one.scores, 0.1)


def test_several_domains_with_their_own_batchnorm_train_on_both_ranks_like_one_process(
    folder, digits, tiny_weights, tmp_path
) -> None:
    images, labels = digits  # a second domain: the digits turned, under class names of their own
    turned_images = np.stack([np.rot90(image) for image in images[:200]])
    turned = image_folder(tmp_path / "turned", turned_images, np.array([f"t{label}" for label in labels[:200]]))
    domains = [f"digits={folder}", f"turned={turned}"]
    config = FitConfig(backbone=TINY, weights=str(tiny_weights), **SETTINGS, domains=domains, domain_batchnorm=True)
    one = fit(None, config, tmp_path / "one", quiet=True)
    flags = ["--domain", domains[0], "--domain", domains[1], "--domain-batchnorm"]
    done = _torchrun("fit", *flags, *_flags(tiny_weights), "--out", str(tmp_path / "two"))
    assert done.stdout.count("run dir:") == 1
    assert [row["epoch"] for row in _rows(tmp_path / "two")] == [1, 2, 3]
    # 108 and 40 test images: one image is 0.9 and 2.5 points
    _close_per_head(json.loads(RunDir(tmp_path / "two").scores.read_text()), one.scores, 0.1)


def _cache(world=None) -> torch.Tensor:
    """Two views (a clean one and a lightly augmented one) of blocks.0's output for 75 seeded images, batches
    of 16: five batches, which two ranks share out unevenly."""
    torch.manual_seed(0)
    model = TransferModel(create_backbone(TINY, pretrained=False), 3)
    images = torch.randint(0, 256, (75, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    normalizer = Normalizer(model.backbone.preprocessing)
    return cache_views(model, images, 2, normalizer, PRESETS["light"], 2, seed=3, batch_size=16, world=world)


def _on_rank(rank: int, port: int, out: str, work: str) -> None:
    """One of two spawned ranks: join the gloo group and save what `work` ('cache' or 'train') gives."""
    os.environ |= {"RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    torch.set_num_threads(1)
    world = join("cpu")
    tensors = {"cache": _cache(world)} if work == "cache" else _trained(world).state_dict()
    save_file({name: value.contiguous() for name, value in tensors.items()}, f"{out}/rank{rank}.safetensors")
    leave()  # as `transferlab` does after its command: exiting inside the group once aborted a rank here


def _spawn_two(out: Path, work: str) -> list[dict[str, torch.Tensor]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.spawn(_on_rank, args=(port, str(out), work), nprocs=2)
    return [load_file(out / f"rank{rank}.safetensors") for rank in (0, 1)]


def _trained(world=None) -> TransferModel:
    """A tiny model trained for 6 steps of 16 seeded images each; with a world, on this rank's half of each."""
    torch.manual_seed(0)
    model = TransferModel(create_backbone(TINY, pretrained=False), 3)
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(96) % 3
    normalizer = Normalizer(model.backbone.preprocessing)
    train = ImageBatches(images, labels, normalizer, 16, shuffle=True)
    config = FitConfig(strategy="full", epochs=1, lr=1e-2, batch_size=16, ema_epochs=0, image_size=32)
    sharded = shard(train, world.rank, world.size) if world else train
    Trainer(model, parse_strategy("full"), config, sharded, train, ".", world=world).fit()
    return model


def test_ranks_that_train_on_different_halves_end_with_the_same_weights(tmp_path) -> None:
    # Each rank sees other images: only gradients averaged across the ranks keep the replicas equal.
    ranks = _spawn_two(tmp_path, "train")
    torch.manual_seed(0)
    before = TransferModel(create_backbone(TINY, pretrained=False), 3).state_dict()  # where both started
    assert all(torch.equal(ranks[0][name], ranks[1][name]) for name in ranks[0])
    assert any(not torch.equal(ranks[0][name], before[name]) for name in before if name in ranks[0])


def test_two_ranks_share_out_the_frozen_prefix_cache_and_both_get_one_process_s(tmp_path) -> None:
    ranks = _spawn_two(tmp_path, "cache")
    alone = _cache()
    assert alone.shape[:2] == (2, 75) and alone.dtype == torch.float16
    for each in ranks:
        assert torch.equal(each["cache"], alone)


def test_on_gpus_the_ranks_agree_on_stopping_over_gloo_on_the_host(monkeypatch) -> None:
    """The flags that every step's ranks agree on (a diverged loss, a stop) stay on the host: a GPU tensor's
    result would make each rank's CPU wait for its GPU's whole queue every step (train/readback.py's reason)."""
    seen: dict[str, object] = {}
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: seen.update(gpu=index))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: seen.update(backend=backend))
    world = join("cuda")
    assert world.device == "cuda:1" and seen == {"gpu": 1, "backend": "cpu:gloo,cuda:nccl"}
    reduced = []
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op: reduced.append(tensor.device.type))
    assert world.any(True, False) == [True, False] and reduced == ["cpu"]
