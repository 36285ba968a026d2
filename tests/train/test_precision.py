"""Mixed precision: the forward pass runs in the chosen format, weights stay float32, a float16 step whose
gradients overflow is skipped, and `auto` is float32 on a CPU. CPU autocast stands in for the GPU's here;
the CUDA path is the same code with another device type."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY
from transferlab.backbones import create_backbone
from transferlab.config import FitConfig
from transferlab.data import load_source, prepare
from transferlab.data.transforms import Normalizer
from transferlab.errors import ConfigError
from transferlab.evaluate import probabilities
from transferlab.model import TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train.inputs import make_batches
from transferlab.train.loop import Trainer
from transferlab.train.objectives import CrossEntropy
from transferlab.train.precision import Precision, inference_dtype, resolve_precision


class Spy(CrossEntropy):
    """Cross-entropy that notes the dtype of the logits it is given."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.dtypes: set[torch.dtype] = set()

    def forward(self, outputs, batch, progress):
        self.dtypes |= {logits.dtype for logits in outputs.logits.values()}
        return super().forward(outputs, batch, progress)


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("32", torch.float32)])
def test_the_forward_pass_runs_in_the_chosen_format_and_weights_stay_float32(precision, dtype, digits, tmp_path):
    torch.manual_seed(0)
    model = TransferModel(create_backbone(TINY, pretrained=False), 3)
    strategy = parse_strategy("full")
    settings = {"epochs": 1, "lr": 1e-2, "image_size": 32, "batch_size": 16, "augment": "light", "cached_views": 0}
    config = FitConfig(strategy="full", precision=precision, **settings)
    train, val, _ = make_batches(model, strategy, config, prepare(load_source(digits), 32), "cpu")
    before = [p.detach().clone() for p in model.parameters()]
    spy = Spy()
    Trainer(model, strategy, config, train, val, tmp_path, objective=spy).fit()
    assert spy.dtypes == {dtype}
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))  # it trained


def test_a_float16_step_whose_gradients_overflow_is_skipped_and_the_scale_lowered() -> None:
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    precision = Precision("16", "cpu")
    assert precision.scaler is not None
    scale = precision.scaler.get_scale()
    precision.step((weight * torch.tensor([float("inf"), 1.0, 1.0])).sum(), optimizer)  # an inf gradient
    assert torch.equal(weight.detach(), torch.ones(3)) and precision.scaler.get_scale() < scale
    optimizer.zero_grad()
    precision.step(weight.sum(), optimizer)  # a finite one: the step is taken
    assert torch.allclose(weight.detach(), torch.full((3,), 0.9))


def test_auto_is_float32_on_a_cpu_and_a_yaml_number_reads_as_the_setting() -> None:
    assert resolve_precision("auto", "cpu") == "32" and resolve_precision("bf16", "cpu") == "bf16"
    assert Precision("auto", "cpu").dtype is None
    assert FitConfig(precision=32).precision == "32"  # type: ignore[arg-type]


def test_a_resumed_float16_run_goes_on_at_the_loss_scale_it_had_found(digits, tmp_path) -> None:
    torch.manual_seed(0)
    settings = {"epochs": 1, "lr": 1e-2, "image_size": 32, "batch_size": 16, "augment": "light", "cached_views": 0}
    config = FitConfig(strategy="full", precision="16", **settings)
    strategy = parse_strategy("full")

    def trainer() -> Trainer:
        model = TransferModel(create_backbone(TINY, pretrained=False), 3)
        train, val, _ = make_batches(model, strategy, config, prepare(load_source(digits), 32), "cpu")
        return Trainer(model, strategy, config, train, val, tmp_path)

    first = trainer()
    first.fit()
    assert first.precision.scaler is not None
    first.precision.scaler.update(new_scale=48.0)  # a scale no fresh scaler starts at
    first.save_resumable()
    resumed = trainer()
    resumed.resume()
    assert resumed.precision.scaler is not None
    assert resumed.precision.scaler.state_dict() == first.precision.scaler.state_dict()
    assert resumed.precision.scaler.get_scale() == 48.0


@pytest.mark.parametrize("native", [True, False])
def test_reporting_passes_run_in_bfloat16_only_where_the_hardware_computes_it(native, monkeypatch) -> None:
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: native, raising=False)
    assert inference_dtype("auto", "cpu") == (torch.bfloat16 if native else None)
    assert inference_dtype("32", "cpu") is None and inference_dtype("bf16", "cpu") is torch.bfloat16
    assert inference_dtype("auto", "mps") is None  # no probe of it: float32
    assert FitConfig(inference_precision=32).inference_precision == "32"  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="inference_precision"):
        FitConfig(inference_precision="16")  # float16 without a loss scale is a training matter; not offered


def test_bfloat16_scoring_gives_float32_probabilities_close_to_float32_s(digits) -> None:
    torch.manual_seed(0)
    model = TransferModel(create_backbone(TINY, pretrained=False), 3, test_time_flip=True)
    images = prepare(load_source(digits, per_class=30), 32).splits["train"].images
    normalizer = Normalizer(model.backbone.preprocessing)
    exact = probabilities(model, images, normalizer, precision="32")["label"]
    fast = probabilities(model, images, normalizer, precision="bf16")["label"]
    assert fast.dtype == torch.float32 and torch.allclose(fast.sum(1), torch.ones(len(images)))
    assert not torch.equal(fast, exact)  # it did run in bfloat16
    assert (fast - exact).abs().max() < 0.05
    assert (fast.argmax(1) == exact.argmax(1)).float().mean() >= 0.9
