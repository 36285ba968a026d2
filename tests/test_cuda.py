"""The CUDA path, on a real GPU: mixed precision, the fused update, the decoded cache on the GPU, a step that
never makes the CPU wait, resume, and a model trained there that a CPU reads. CI has no GPU, so these skip there;
a session lent a GPU runs them through benchmarks/gpu_session.sh. The code under test is the CPU tests' code."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tests.conftest import TINY, InterruptAt
from tests.test_fitting import _config as fit_config
from tests.test_inference import _with_statistics
from tests.train.test_frozen_norm import _BatchNormCalls
from tests.train.test_precision import Spy
from transferlab.backbones import create_backbone
from transferlab.classifier import load
from transferlab.config import FitConfig
from transferlab.data import load_source, prepare
from transferlab.data.transforms import Normalizer
from transferlab.errors import Interrupted
from transferlab.fitting import build_run, fit, train_run
from transferlab.model import TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train.batches import ImageBatches
from transferlab.train.frozen_norm import frozen_norms
from transferlab.train.inputs import make_batches
from transferlab.train.loop import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_session.sh)")


def _config(weights: Path, **changes) -> FitConfig:
    """test_fitting's run, trained in full with augmentation, on the GPU."""
    return fit_config(weights, **({"strategy": "full", "augment": "light", "device": "cuda"} | changes))


def _trainer(digits, tmp_path: Path, objective: Spy | None = None) -> tuple[Trainer, ImageBatches, ImageBatches]:
    torch.manual_seed(0)
    model = TransferModel(create_backbone(TINY, pretrained=False), 3).cuda()
    strategy = parse_strategy("full")
    settings = {"epochs": 2, "lr": 1e-2, "image_size": 32, "batch_size": 16, "augment": "light", "cached_views": 0}
    config = FitConfig(strategy="full", **settings)
    train, val, _ = make_batches(model, strategy, config, prepare(load_source(digits), 32), "cuda")
    assert isinstance(train, ImageBatches) and isinstance(val, ImageBatches)
    return Trainer(model, strategy, config, train, val, tmp_path, objective=objective), train, val


def test_auto_precision_trains_in_bfloat16_on_the_gpu_from_a_cache_that_lives_there(digits, tmp_path) -> None:
    spy = Spy()
    trainer, train, val = _trainer(digits, tmp_path, spy)
    assert train.images.is_cuda and val.images.is_cuda  # each batch is gathered and augmented there
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    assert trainer.precision.dtype is torch.bfloat16 and spy.dtypes == {torch.bfloat16}
    assert trainer.optimizer.defaults["fused"]
    parameters = list(trainer.model.parameters())
    assert all(p.is_cuda and p.dtype == torch.float32 and torch.isfinite(p).all() for p in parameters)
    assert any(not torch.equal(p, b) for p, b in zip(parameters, before, strict=True))  # it trained


def _host_waits(run: Callable[[], object]) -> list[str]:
    """The CUDA runtime calls inside `run()` that make the CPU wait for the GPU's whole queue, as torch.profiler
    records them (torch warns that its sync debug mode does not yet detect every synchronizing operation)."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]  # CUDA: the runtime's
    with torch.profiler.profile(activities=activities) as profiler:  # calls are CUPTI's records, not the CPU's
        run()
    waits = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpy")  # cudaMemcpy: a blocking copy
    return [event.name for event in profiler.events() if event.name in waits]


def test_the_host_wait_check_sees_a_wait() -> None:
    """The two tests below assert that `_host_waits` finds none: a number read off the GPU must be found."""
    assert "cudaStreamSynchronize" in _host_waits(lambda: torch.ones(1, device="cuda").add(1).item())


def test_a_training_step_never_makes_the_cpu_wait_for_the_gpu(digits, tmp_path) -> None:
    """The GPU stays busy only while the CPU queues work ahead of it: a step reads no number off the GPU
    (train/readback.py) and copies nothing to it synchronously (batches._to)."""
    trainer, train, _ = _trainer(digits, tmp_path)
    trainer.strategy.set_train_mode(trainer.model)
    steps = train.batches(seed=0, epoch=0)
    trainer._step(next(steps))  # the first step looks at the frozen norms, once a run
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        waits = _host_waits(lambda: [trainer._step(next(steps)) for _ in range(3)])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.state.global_step == 4 and waits == []


def test_batches_from_labels_on_the_gpu_never_make_the_cpu_wait(digits) -> None:
    """Labels that live on the GPU (throughput.py makes them there) are indexed without a blocking copy."""
    data = prepare(load_source(digits, per_class=30), 32).splits["train"]
    normalizer = Normalizer(create_backbone(TINY, pretrained=False).preprocessing)
    train = ImageBatches(data.images, data.labels.cuda(), normalizer, 16, shuffle=True, device="cuda")
    steps = train.batches(seed=0, epoch=0)
    next(steps)
    torch.cuda.synchronize()
    assert _host_waits(lambda: [next(steps) for _ in range(3)]) == []


def test_frozen_batchnorms_run_through_the_gpu_kernels_with_the_same_loss_and_gradients(monkeypatch) -> None:
    """train/frozen_norm.py: on a GPU, a BatchNorm with frozen statistics is no F.batch_norm call in a step, and
    the step's loss and gradients are the plain step's, in float32 and under bfloat16 autocast."""
    torch.manual_seed(0)
    model = _with_statistics(TransferModel(create_backbone(TINY, pretrained=False), 3)).cuda().eval()
    model = model.to(memory_format=torch.channels_last)
    kinds = [type(each) for each in model.modules()]
    norms = sum(isinstance(each, nn.BatchNorm2d) for each in model.modules())
    x = torch.randn(8, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)

    def loss_and_gradients() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype is torch.bfloat16):
            loss = model.outputs_from(x, 0).logits["label"].float().square().mean()
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    context = frozen_norms(model, lambda: model.outputs_from(x[:1], 0), x.device)
    for dtype, tolerance in ((torch.float32, 1e-3), (torch.bfloat16, 3e-2)):
        plain_loss, plain_gradients = loss_and_gradients()
        calls = _BatchNormCalls(monkeypatch)
        with context():
            assert sum(type(each) is not kind for each, kind in zip(model.modules(), kinds, strict=True)) == norms
            loss, gradients = loss_and_gradients()
        monkeypatch.undo()
        assert calls.count == 0, dtype
        torch.testing.assert_close(loss, plain_loss, rtol=tolerance, atol=1e-5)
        assert gradients.keys() == plain_gradients.keys()  # γ and β trained too
        for name, gradient in gradients.items():
            scale = plain_gradients[name].abs().max().item()
            torch.testing.assert_close(
                gradient, plain_gradients[name], rtol=tolerance, atol=tolerance * scale, msg=name
            )
    assert [type(each) for each in model.modules()] == kinds


def test_a_gpu_run_resumed_after_interruption_ends_where_the_uninterrupted_one_does(digits, tiny_weights, tmp_path):
    config = _config(tiny_weights)
    whole, again = (fit(digits, config, tmp_path / name, quiet=True) for name in ("whole", "again"))
    run = build_run(digits, config, tmp_path / "parted", echo=lambda _: None)
    with pytest.raises(Interrupted, match="--resume"):
        train_run(run, quiet=True, callbacks=[InterruptAt(len(run.train) + 2)])  # in the middle of epoch two
    resumed = fit(digits, config, tmp_path / "parted", quiet=True, resume=True)
    assert resumed.state.global_step == whole.state.global_step == again.state.global_step

    def apart(name: str) -> float:
        a, b = load_file(tmp_path / "whole/model.safetensors"), load_file(tmp_path / name / "model.safetensors")
        return max((a[k].float() - b[k].float()).abs().max().item() for k in a)

    # cuDNN's backward may sum in another order each run: the same run twice sets the noise floor. A resume that
    # loses the optimizer's moments lands 2.6e-3 away (seen on a CPU, where the floor is 0).
    floor, resumed_apart = apart("again"), apart("parted")
    print(f"largest weight difference from the whole run: the same run again {floor:.1e}, resumed {resumed_apart:.1e}")
    assert resumed_apart <= max(10 * floor, 1e-4)


def test_a_model_trained_on_the_gpu_predicts_on_a_cpu_as_it_does_on_the_gpu(digits, tiny_weights, tmp_path) -> None:
    result = fit(digits, _config(tiny_weights, epochs=4), tmp_path / "run", quiet=True)
    assert FitConfig.load(result.run_dir / "config.yaml").precision == "bf16"  # `auto`, recorded as chosen
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["accuracy"] > 0.8  # three digit classes: chance is 0.33
    images = prepare(load_source(digits, per_class=30), 32).splits["train"].images.permute(0, 2, 3, 1).numpy()
    on_gpu = load(result.run_dir, device="cuda", inference_precision="32").predict_proba(images)
    on_cpu = load(result.run_dir, device="cpu", inference_precision="32").predict_proba(images)
    assert abs(on_gpu - on_cpu).max() < 1e-3 and (on_gpu.argmax(1) == on_cpu.argmax(1)).all()
