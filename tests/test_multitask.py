"""Several tasks on the same images (hard and soft sharing) and several domains in one network: the data,
the objectives, the run dir, evaluate and predict, on real digits and a tiny backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open

import transferlab
from tests.conftest import PARITY, TINY, InterruptAt
from transferlab.backbones import create_backbone
from transferlab.cli import main
from transferlab.config import FitConfig
from transferlab.data import load_source, prepare, summarize
from transferlab.errors import ConfigError, DataError, Interrupted
from transferlab.fitting import build_run, fit, train_run
from transferlab.model import Outputs, TransferModel
from transferlab.train.batches import Batch
from transferlab.train.objectives import MultiTask, SoftSharing


def _config(weights: Path, **changes) -> FitConfig:
    settings = {"backbone": TINY, "weights": str(weights), "image_size": 32, "epochs": 3, "batch_size": 16}
    return FitConfig(**(settings | changes))


@pytest.fixture(scope="module")
def hard_run(manifest, tiny_weights, tmp_path_factory):
    config = _config(tiny_weights, tasks="digit,parity", strategy="partial:2", weighting="uncertainty")
    return fit(str(manifest), config, tmp_path_factory.mktemp("hard") / "run", quiet=True)


def test_several_label_columns_become_tasks_with_missing_labels_masked_not_imputed(manifest) -> None:
    data = load_source(str(manifest), tasks=["digit", "parity"])
    assert data.tasks == {"digit": ["0", "1", "2"], "parity": PARITY}
    train = np.concatenate([data.splits["train"].labels, data.splits["val"].labels])
    assert train.shape[1] == 2
    assert (train[:, 0] == -1).sum() == 96 and (train[:, 1] == -1).sum() == 0  # every other non-test digit missing
    assert not (data.splits["test"].labels == -1).any()
    summary = summarize(prepare(data, 16), data.name)
    digit = summary["tasks"]["digit"]
    assert digit["missing"]["train"] + digit["missing"]["val"] == 96 and digit["missing"]["test"] == 0
    assert sum(digit["counts"]["test"].values()) == 48  # a missing label is no class: counts skip it
    # val is carved stratified by the scarcer task: its three classes and its missing labels all land in val
    val = data.splits["val"].labels[:, 0]
    assert set(np.unique(val)) == {-1, 0, 1, 2}


def test_per_class_with_several_tasks_draws_each_task_s_classes_and_never_counts_missing_as_one(manifest) -> None:
    data = load_source(str(manifest), tasks=["digit", "parity"], per_class=10, seed=3)
    labels = np.concatenate([data.splits["train"].labels, data.splits["val"].labels])
    for task in range(2):
        column = labels[:, task]
        counts = np.bincount(column[column >= 0])
        assert counts.min() >= 10  # every class of every task, missing labels excluded from the draw
    assert len(labels) <= 10 * (3 + 2)  # the union of the draws, not the manifest
    assert (labels[:, 0] == -1).any()  # images drawn for parity keep their missing digit label, masked
    assert len(data.splits["test"]) == 48  # test is never subsampled
    again = load_source(str(manifest), tasks=["digit", "parity"], per_class=10, seed=3)
    assert data.splits["train"].paths == again.splits["train"].paths


def test_probe_rank_and_advise_measure_the_task_they_are_given(manifest, tiny_weights, tmp_path, capsys) -> None:
    source = str(manifest)
    assert main(["probe", source, "--backbone", TINY, "--no-pretrained", "--image-size", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "or one with --task" in err
    probe = ["probe", source, "--backbone", TINY, "--no-pretrained", "--image-size", "16", "--json"]
    assert main([*probe, "--task", "parity", "--out", str(tmp_path / "probe")]) == 0
    assert json.loads(capsys.readouterr().out)["stages"]
    assert main(["rank", source, "--backbones", TINY, "--no-pretrained", "--image-size", "16", "--task", "digit"]) == 0
    assert TINY in capsys.readouterr().out
    sizes = {}
    for task in ("digit", "parity"):
        advise = ["advise", source, "--backbone", TINY, "--weights", str(tiny_weights), "--image-size", "16"]
        assert main([*advise, "--task", task, "--json"]) == 0
        sizes[task] = json.loads(capsys.readouterr().out)["evidence"]["images_per_class"]
    # digit: 3 classes on half of the 192 non-test images; parity: 2 classes on all of them
    assert sizes == {"digit": 31, "parity": 65}  # the scarcest class of each: 1s and odd digits


@pytest.mark.parametrize(
    ("header", "row", "tasks", "message"),
    [
        ("path,digit", "{p},1", "digit,age", "has no 'age' column"),
        ("path,digit,age", "{p},1,5", "digit,age", "task 'digit' of .* has only one class"),
        ("path,digit,age,split", "{p},1,,train\n{p},2,,train\n{p},1,3,test\n{p},2,4,test", "digit,age", "no label"),
    ],
)
def test_bad_manifests_get_one_line_errors(tmp_path, digits, capsys, header, row, tasks, message) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(digits[0][0]).save(image)
    rows = row.format(p=image.name)
    if "only one class" in message:
        rows = f"{rows}\n{image.name},1,6"
    (tmp_path / "bad.csv").write_text(f"{header}\n{rows}\n")
    assert main(["data", str(tmp_path / "bad.csv"), "--tasks", tasks]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert __import__("re").search(message, err), err


def test_masked_task_without_labels_in_a_batch_adds_zero_loss_and_zero_gradient() -> None:
    torch.manual_seed(0)
    logits = {"digit": torch.randn(4, 3, requires_grad=True), "parity": torch.randn(4, 2, requires_grad=True)}
    labels = torch.tensor([[-1, 0], [-1, 1], [-1, 1], [-1, 0]])  # no digit label anywhere in this batch
    for weighting in ("equal", "uncertainty"):
        objective = MultiTask(["digit", "parity"], weighting)
        loss, parts = objective(Outputs(logits, torch.zeros(4, 1)), Batch(torch.zeros(4), labels), 0.0)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.equal(logits["digit"].grad, torch.zeros(4, 3))
        assert logits["parity"].grad.abs().sum() > 0
        assert torch.isnan(parts["loss/digit"]) and torch.isfinite(parts["loss/parity"])  # not measured
        if objective.log_vars is not None:
            assert objective.log_vars.grad[0] == 0 and objective.log_vars.grad[1] != 0
        logits["digit"].grad, logits["parity"].grad = None, None
    # with a label, the same head learns: the mask, not the head, was what silenced it
    labelled = labels.clone()
    labelled[:, 0] = torch.tensor([0, 1, 2, 0])
    loss, _ = MultiTask(["digit", "parity"])(Outputs(logits, torch.zeros(4, 1)), Batch(torch.zeros(4), labelled), 0)
    loss.backward()
    assert logits["digit"].grad.abs().sum() > 0


def test_hard_sharing_trains_one_backbone_with_a_head_per_task(hard_run) -> None:
    model = hard_run.model
    assert model.head_names == ["digit", "parity"] and model.soft_from is None and not model.towers
    metrics = [json.loads(line) for line in (hard_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    last = metrics[-1]
    for name in ("digit", "parity"):
        assert {f"val_loss/{name}", f"val_accuracy/{name}", f"train/loss/{name}", f"train/weight/{name}"} <= set(last)
    assert last["val_loss"] == pytest.approx((last["val_loss/digit"] + last["val_loss/parity"]) / 2)
    scores = hard_run.scores["tasks"]
    assert scores["digit"]["count"] == 48 and scores["parity"]["count"] == 48
    assert scores["digit"]["accuracy"] > 0.5 and scores["parity"]["accuracy"] > 0.6  # chance: 33% and 50%
    for name in ("accuracy", "macro_f1"):  # the run's headline scores are the tasks' means
        assert hard_run.scores[name] == pytest.approx((scores["digit"][name] + scores["parity"][name]) / 2)
    assert scores["digit"]["macro_f1"] != scores["digit"]["accuracy"]  # so the two means cannot stand in for each other


def test_uncertainty_weights_move_and_a_resumed_run_keeps_them(hard_run) -> None:
    with safe_open(hard_run.run_dir / "checkpoint.safetensors", framework="pt") as handle:
        log_vars = handle.get_tensor("objective.log_vars")
    assert log_vars.abs().min() > 1e-4  # learned away from their start at 0
    metrics = [json.loads(line) for line in (hard_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["train/weight/digit"] != metrics[-1]["train/weight/digit"]


def test_gradnorm_pulls_each_task_gradient_on_the_shared_features_towards_the_mean() -> None:
    torch.manual_seed(0)
    features = torch.randn(8, 4, requires_grad=True)
    loud, quiet = torch.nn.Linear(4, 3), torch.nn.Linear(4, 2)
    with torch.no_grad():
        loud.weight.mul_(10)  # the same loss ratio (1 on the first batch), but a 10x larger gradient
    labels = torch.stack([torch.arange(8) % 3, torch.arange(8) % 2], 1)
    objective = MultiTask(["loud", "quiet"], "gradnorm")
    outputs = Outputs({"loud": loud(features), "quiet": quiet(features)}, features)
    plain = sum(F.cross_entropy(outputs.logits[name], labels[:, k]) for k, name in enumerate(["loud", "quiet"]))
    (reference,) = torch.autograd.grad(plain, features, retain_graph=True)
    loss, parts = objective(outputs, Batch(torch.zeros(8), labels), 0.0)
    loss.backward()
    assert loss.item() == pytest.approx(plain.item())  # the logged loss is the weighted sum: weights start at 1
    assert torch.allclose(features.grad, reference)  # the model sees the weighted sum only, not the balancing term
    assert objective.scale_logits.grad[0] > 0 > objective.scale_logits.grad[1]  # a step weights `loud` down
    assert parts["weight/loud"] + parts["weight/quiet"] == pytest.approx(2.0)
    assert torch.equal(objective.first_losses, torch.stack([parts["loss/loud"], parts["loss/quiet"]]))
    # a frozen backbone shares nothing trained: no gradient reaches the weights, and they stay equal
    objective.scale_logits.grad = None
    frozen = Outputs({"loud": loud(features.detach()), "quiet": quiet(features.detach())}, features.detach())
    objective(frozen, Batch(torch.zeros(8), labels), 0.0)[0].backward()
    assert objective.scale_logits.grad is None


def test_uncertainty_weighting_is_kendall_gal_and_cipolla_s_loss_and_its_gradient() -> None:
    torch.manual_seed(0)
    logits = {"digit": torch.randn(6, 3), "parity": torch.randn(6, 2)}
    labels = torch.stack([torch.arange(6) % 3, torch.arange(6) % 2], 1)
    objective = MultiTask(["digit", "parity"], "uncertainty")
    loss, parts = objective(Outputs(logits, torch.zeros(6, 1)), Batch(torch.zeros(6), labels), 0.0)
    loss.backward()
    each = torch.stack([parts["loss/digit"], parts["loss/parity"]])
    assert objective.log_vars is not None and objective.log_vars.grad is not None
    # at s = 0, d/ds (exp(-s) L + s) / 2 = (1 - L) / 2: a task whose loss is above 1 is weighted down by a step
    assert torch.allclose(objective.log_vars.grad, (1 - each) / 2)
    with torch.no_grad():
        objective.log_vars.copy_(torch.tensor([0.5, -1.0]))
    loss, parts = objective(Outputs(logits, torch.zeros(6, 1)), Batch(torch.zeros(6), labels), 0.0)
    s = objective.log_vars.detach()
    assert loss.item() == pytest.approx(((each * torch.exp(-s) + s) / 2).sum().item())
    assert parts["weight/digit"].item() == pytest.approx(float(torch.exp(torch.tensor(-0.5))) / 2)


def test_gradnorm_weights_up_the_task_that_has_learned_less() -> None:
    """Two heads with the same logits send the same gradient into the shared features; only their loss ratios
    (the loss over the task's first loss) differ, so the balance must follow the ratios alone."""
    torch.manual_seed(0)
    features = torch.randn(8, 4, requires_grad=True)
    logits = torch.nn.Linear(4, 3)(features)
    labels = torch.stack([torch.arange(8) % 3, torch.arange(8) % 3], 1)
    objective = MultiTask(["slow", "fast"], "gradnorm")
    first = F.cross_entropy(logits, labels[:, 0]).detach()
    assert objective.first_losses is not None and objective.scale_logits is not None
    objective.first_losses.copy_(torch.stack([first / 2, first * 2]))  # loss ratios 2 (slow) and 0.5 (fast)
    loss, _ = objective(Outputs({"slow": logits, "fast": logits}, features), Batch(torch.zeros(8), labels), 0.0)
    loss.backward()
    assert objective.scale_logits.grad is not None
    assert objective.scale_logits.grad[0] < 0 < objective.scale_logits.grad[1]  # a step weights `slow` up


def test_gradnorm_is_refused_where_tasks_share_no_batch_or_no_backbone(digits, tiny_weights, tmp_path) -> None:
    sources = {"a": "digits", "b": "digits"}
    with pytest.raises(ConfigError, match="gradnorm balances"):
        fit(sources, _config(tiny_weights, weighting="gradnorm"), tmp_path / "run", quiet=True)


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["uncertainty", "gradnorm"])
def test_an_interrupted_multi_task_run_resumes_with_its_learned_task_weights(
    manifest, tiny_weights, tmp_path, weighting
) -> None:
    config = _config(tiny_weights, tasks="digit,parity", strategy="partial:2", weighting=weighting)
    whole = fit(str(manifest), config, tmp_path / "whole", quiet=True)
    run = build_run(str(manifest), config, tmp_path / "parted", echo=lambda _: None)
    with pytest.raises(Interrupted):
        train_run(run, quiet=True, callbacks=[InterruptAt(len(run.train) + 3)])
    resumed = fit(None, FitConfig(), tmp_path / "parted", resume=True, quiet=True)  # all from config.yaml
    ours = [json.loads(line) for line in (tmp_path / "parted" / "metrics.jsonl").read_text().splitlines()]
    theirs = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_loss"] for r in ours] == [r["val_loss"] for r in theirs]
    # the interrupted epoch's training means cover the resumed steps only; every other epoch matches exactly
    weights = [[r["train/weight/digit"] for i, r in enumerate(rows) if i != 1] for rows in (ours, theirs)]
    assert weights[0] == weights[1]
    assert theirs[0]["train/weight/digit"] != theirs[-1]["train/weight/digit"]  # learned, not left at the start
    assert all(torch.equal(resumed.model.state_dict()[k], v) for k, v in whole.model.state_dict().items())


def test_a_saved_multi_task_run_dir_predicts_identical_probabilities_after_load(hard_run, digits) -> None:
    images = digits[0][:12]
    again = transferlab.load(hard_run.run_dir)
    assert again.heads_ == {"digit": ["0", "1", "2"], "parity": PARITY}
    for task in ("digit", "parity"):
        before = again.predict_proba(images, task=task)
        model = hard_run.model.eval()
        fitted = transferlab.classifier.TransferClassifier()
        fitted._set_fitted(model, hard_run.heads, hard_run.image_size, hard_run.run_dir)
        assert np.array_equal(fitted.predict_proba(images, task=task), before)
    with pytest.raises(transferlab.classifier.TransferlabError, match="no task 'age'"):
        again.predict(images, task="age")


def test_cli_evaluate_and_predict_give_every_task(hard_run, manifest, capsys) -> None:
    assert main(["evaluate", str(hard_run.run_dir), str(manifest), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores["tasks"]) == {"digit", "parity"}
    assert scores["tasks"]["digit"]["accuracy"] == pytest.approx(hard_run.scores["tasks"]["digit"]["accuracy"])
    assert main(["predict", str(hard_run.run_dir), str(manifest.parent / "0.png"), "--top-k", "1"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert set(row["tasks"]) == {"digit", "parity"} and len(row["tasks"]["parity"]["top"]) == 1
    assert main(["predict", str(hard_run.run_dir), str(manifest.parent / "0.png"), "--task", "parity"]) == 0
    assert set(json.loads(capsys.readouterr().out)["tasks"]) == {"parity"}


def test_soft_sharing_penalty_gradient_is_2_lambda_times_the_distance_to_the_mean() -> None:
    torch.manual_seed(0)
    model = TransferModel(create_backbone(TINY, pretrained=False), {"a": 3, "b": 2, "c": 2}, soft_from=3)
    with torch.no_grad():  # pull the copies apart, as training does
        for tower in model.towers.values():
            for parameter in tower.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.01)
    penalty = SoftSharing(model, weight=0.5)
    loss, parts = penalty(Outputs({}, torch.zeros(1)), Batch(torch.zeros(1), torch.zeros(1)), 0.0)
    loss.backward()
    checked = 0
    for index in range(3, model.backbone.num_stages):
        copies = model.stage_copies(index)
        for group in zip(*(copy.parameters() for copy in copies), strict=True):
            mean = torch.stack([p.detach() for p in group]).mean(0)
            for parameter in group:
                assert torch.allclose(parameter.grad, 2 * 0.5 * (parameter.detach() - mean), rtol=1e-4, atol=1e-6)
                checked += 1
    assert checked > 30 and parts["soft/distance"] > 0
    assert float(loss.detach()) == pytest.approx(0.5 * float(parts["soft/distance"]))


def test_soft_sharing_at_lambda_zero_trains_each_task_independently() -> None:
    """Task a's tower and head after training depend only on task a's labels when λ = 0: change task b's
    labels and they come out bit-identical; with λ > 0 they do not."""

    def train(b_labels: torch.Tensor, weight: float) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = TransferModel(create_backbone(TINY, pretrained=False), {"a": 3, "b": 2}, soft_from=2)
        objective = MultiTask(["a", "b"])
        penalty = SoftSharing(model, weight)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        labels = torch.stack([torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), b_labels], dim=1)
        model.backbone.stages[:2].requires_grad_(False)  # the shared, frozen prefix
        model.eval()  # no dropout, no BatchNorm updates: the comparison is of gradients alone
        for _ in range(3):
            outputs = model.outputs_from(x, 0)
            loss = objective(outputs, Batch(x, labels), 0)[0] + penalty(outputs, Batch(x, labels), 0)[0]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("backbone.stages.2", "heads.a"))}

    first, flipped = torch.tensor([0, 1] * 4), torch.tensor([1, 0] * 4)
    independent = train(first, 0.0), train(flipped, 0.0)
    assert all(torch.equal(independent[0][k], independent[1][k]) for k in independent[0])
    coupled = train(first, 10.0), train(flipped, 10.0)
    assert any(not torch.equal(coupled[0][k], coupled[1][k]) for k in coupled[0])


def test_soft_sharing_fit_copies_only_the_trained_stages_and_logs_their_distance(manifest, tiny_weights, tmp_path):
    config = _config(tiny_weights, tasks="digit,parity", strategy="partial:3", sharing="soft", soft_l2=0.1, epochs=2)
    result = fit(str(manifest), config, tmp_path / "soft", quiet=True)
    model = result.model
    assert model.soft_from == 3 and list(model.towers) == ["parity"]
    assert len(model.towers["parity"]) == model.backbone.num_stages - 3
    metrics = [json.loads(line) for line in (tmp_path / "soft" / "metrics.jsonl").read_text().splitlines()]
    assert all(row["train/soft/distance"] > 0 for row in metrics)
    again = transferlab.load(tmp_path / "soft")
    images = np.stack([np.asarray(Image.open(manifest.parent / f"{i}.png")) for i in range(6)])
    direct = transferlab.classifier.TransferClassifier()
    direct._set_fitted(model, result.heads, result.image_size, result.run_dir)
    assert np.array_equal(again.predict_proba(images, task="parity"), direct.predict_proba(images, task="parity"))


def test_soft_sharing_needs_several_tasks(digits, tiny_weights, tmp_path) -> None:
    with pytest.raises(ConfigError, match="several tasks or domains"):
        fit(digits, _config(tiny_weights, sharing="soft", strategy="full"), tmp_path / "run", quiet=True)


@pytest.mark.parametrize("domain_batchnorm", [False, True])
def test_a_multi_domain_fit_predicts_per_domain(digits, tiny_weights, tmp_path, capsys, domain_batchnorm) -> None:
    images, labels = digits
    letters = np.stack([np.rot90(image) for image in images[:90]])  # another 'domain', with its own classes
    sources = {"digits": (images[:150], labels[:150]), "turned": (letters, np.array(["x", "y"] * 45))}
    config = _config(tiny_weights, strategy="partial:2", epochs=2, domain_batchnorm=domain_batchnorm)
    result = fit(sources, config, tmp_path / "domains", quiet=True)
    assert result.model.domains and result.model.head_names == ["digits", "turned"]
    if domain_batchnorm:  # trained stages normalise per domain; the frozen ones stay shared
        state = result.model.state_dict()
        assert not any(
            ".norms." in key for key in state if key.startswith(("backbone.stages.0.", "backbone.stages.1."))
        )
        digits_bn = [k for k in state if k.startswith("backbone.stages.2.") and ".norms.digits.weight" in k]
        turned = [state[k.replace(".norms.digits.", ".norms.turned.")] for k in digits_bn]
        assert digits_bn and any(not torch.equal(state[k], t) for k, t in zip(digits_bn, turned, strict=True))
    assert set(result.scores["tasks"]) == {"digits", "turned"}
    clf = transferlab.load(tmp_path / "domains")
    assert clf.predict_proba(images[:5], domain="digits").shape == (5, 3)
    assert set(clf.predict(images[:5], domain="turned")) <= {"x", "y"}
    with pytest.raises(transferlab.classifier.TransferlabError, match=r"name the images' domain \(digits, turned\)"):
        clf.predict(images[:5])
    Image.fromarray(images[0]).save(tmp_path / "one.png")
    assert main(["predict", str(tmp_path / "domains"), str(tmp_path / "one.png")]) == 2
    assert "(digits, turned)" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "domains"), str(tmp_path / "one.png"), "--domain", "turned"]) == 0
    assert json.loads(capsys.readouterr().out)["top"][0]["label"] in {"x", "y"}
    scores = clf.evaluate((images[150:], labels[150:]), split="all")  # its classes pick the digits head
    assert scores["count"] == len(labels) - 150
    with pytest.raises(DataError):
        fit({"a": "/no/such/folder", "b": "digits"}, _config(tiny_weights), tmp_path / "bad", quiet=True)


@pytest.mark.slow
def test_an_interrupted_multi_domain_run_resumes_from_its_config_alone(digits, tiny_weights, tmp_path) -> None:
    images = digits[0]
    for i, image in enumerate(images[:60]):  # a second domain as an image folder: turned digits, two classes
        folder = tmp_path / "turned" / ("left" if i % 2 else "right")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rot90(image).copy()).save(folder / f"{i}.png")
    sources = {"digits": "digits", "turned": str(tmp_path / "turned")}
    config = _config(tiny_weights, strategy="partial:2", per_class=20)
    whole = fit(sources, config, tmp_path / "whole", quiet=True)
    run = build_run(sources, config, tmp_path / "parted", echo=lambda _: None)
    with pytest.raises(Interrupted):
        train_run(run, quiet=True, callbacks=[InterruptAt(len(run.train) + 2)])
    resumed = fit(None, FitConfig(), tmp_path / "parted", resume=True, quiet=True)  # domains from config.yaml
    assert FitConfig.load(tmp_path / "parted" / "config.yaml").domain_sources == sources
    assert [row["val_loss"] for row in resumed.state.history] == [row["val_loss"] for row in whole.state.history]
    assert resumed.scores["tasks"]["turned"]["accuracy"] == whole.scores["tasks"]["turned"]["accuracy"]


def test_score_on_a_multi_task_source_is_the_first_task_s_accuracy_as_predict_predicts_it(hard_run, manifest) -> None:
    fitted = transferlab.load(hard_run.run_dir)
    scores = fitted.evaluate(str(manifest), split="test")["tasks"]
    assert fitted.score(str(manifest)) == scores["digit"]["accuracy"] != scores["parity"]["accuracy"]
