"""Unsupervised domain adaptation on real data, offline: one table, every row a whole `fit` (decoding, the
heads' warm start, training, scoring the target's and the source's test images), timed side by side in one
process. Each fit runs quietly in a fresh temporary run dir.

Settings (the source is always grey and labelled; the target's training labels are never read, except by the
oracle row):
- `fashion-m`: Fashion-MNIST → Fashion-MNIST-M. Source: --per-class images per class of the training file.
  Target train: --target-train other images of the training file (never the source's), blended MNIST-M style
  (`blend`) with TRAIN_PHOTOS. Target test: a fixed stratified --test subset of the 10,000 t10k images (the
  same for every seed; 1,000 by default, to save time), blended with TEST_PHOTOS.
- `digits-m`: scikit-learn's digits → Digits-M, built the same way from the library's fixed train/test split:
  --digits-per-class source images per class of its train split, the rest of that split blended as the target
  train, its test split (450 images) blended with the test photos as the target test.
- `control`: Fashion-MNIST → Fashion-MNIST held out: the same draw as `fashion-m`, nothing blended. There is
  no shift, so a method should lose nothing here.
- `partial`: the `fashion-m` source with all 10 classes; the target (train and test) keeps only classes 0-4
  (T-shirt/top, Trouser, Pullover, Dress, Coat). Rows: source only, dann, dann + source_weighting="classes".
- `validation`: on fashion-m and digits-m, `none`, `coral` and `dann` again with validation="dev": the
  checkpoint kept and early stopping by DEV's importance-weighted source validation loss instead of the plain
  one. Compare them with the `fashion` and `digits` parts' rows (run them together: --part
  fashion,digits,validation).
- `selection`: Fashion-MNIST-M target; the source is the Fashion source mixed with as many digits images,
  labelled 0-9 as Fashion's classes 0-9 (off-domain images with meaningless labels). Rows, all without an
  alignment loss (adaptation="none"), so that only the choice of source images differs: the whole mixed
  source; the 30% that `select` keeps by the density ratio of a domain classifier on the pretrained backbone's
  pooled features (note: the share of kept images that are Fashion); a random 30% (control);
  source_weighting="importance" on the whole mixed source (note: the effective sample size of the importance
  weights, computed with the same shift.py functions on the whole mixed pool; the fit itself weighs its
  training split, 80% of it).

Rows of fashion-m, digits-m and control: `none` (source only), `adabn`, `coral`, `dann`, `auto` (the
library's pick, recorded in the notes from FitResult.config.adaptation) and `oracle`: a plain fit on labelled
target training images (blended exactly as the adapted rows saw them), as many per class as the source, scored
on the same target test.

Columns: target test accuracy (mean ± sd over seeds), source test accuracy (the same t10k subset unblended;
digits: its test split), seconds per fit (mean), notes. A goals section after the table judges the table's
own numbers.

Defaults, and why:
- `--strategy partial:4`, the same for every row: `fit`'s default `auto` runs the advisor on each source, which
  costs time on every fit and may pick a different strategy for different rows (the selection rows have
  different sources), so method and strategy would be confounded. partial:4 freezes stem..blocks.2 of
  tf_efficientnet_lite0 (cached once) and trains blocks.3..head: the aligning losses have trained backbone
  layers to move, and the frozen prefix keeps a fit short. multitask.py uses it too.
- `--image-size 32` (fit would pick 96 px for 28 px images): 3-4x less work per image, and it keeps the whole
  default run under 30 minutes on a 2-core CPU. Accuracies are lower than at 96 px; the comparison between
  rows is what matters. `--epochs 12` (fit's own default is 20) for the same reason; adversarial training
  needs the steps: on fashion-m, DANN gained 4.3 points over the source alone at 6 epochs, 8.3 at 12, 12.1
  at 20 (seed 0), while the source alone stayed at 35-36%.
- `--seeds 1`: a default run is 31 fits of about 20-90 s each (a fashion-m fit: 50-90 s at 12 epochs, two
  threads); digits fits are smaller, the selection's mixed source twice as large. `--seeds 3`, for a
  mean ± sd, takes three times as long. `--quick` (20/class, 2 epochs, 500 target and 500 test images,
  fashion-m only unless --part says otherwise) is a smoke test; its accuracies mean nothing.
- Data: sources and targets are written as PNG image folders (train/ and test/), because an in-memory source
  (`from_arrays`) has no test split: a target without one cannot be scored, nor a source's own test. The
  target's training images sit in one `unlabelled` folder, so that no label exists for them on disk.

    python benchmarks/adaptation.py [--part all|PART[,PART...]] [--seeds 1]
        [--per-class 100] [--image-size 32] [--epochs 12] [--strategy partial:4] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.adaptation.shift import (
    classify_domains,
    density_ratio,
    effective_sample_size,
    importance_weights,
    pooled_features,
    select,
)
from transferlab.backbones import create_backbone
from transferlab.config import FitConfig, resolve_device
from transferlab.data import Split, decode_split
from transferlab.data.blended import TEST_PHOTOS, TRAIN_PHOTOS, blend, photo_pool
from transferlab.data.builtins import load_builtin
from transferlab.fitting import fit

PARTS = ("fashion", "digits", "control", "partial", "selection", "validation")
SETTING_OF_PART = {
    "fashion": "fashion-m",
    "digits": "digits-m",
    "control": "control",
    "partial": "partial",
    "selection": "selection",
}
DEV_METHODS = ("none", "coral", "dann")  # the methods whose checkpoint the validation part also keeps by DEV
METHODS = ("none", "adabn", "coral", "dann")
ADAPTED = ("adabn", "coral", "dann")  # the methods that do something about the shift
PARTIAL_CLASSES = (0, 1, 2, 3, 4)  # the partial target's classes, of Fashion-MNIST's ten
KEEP = 0.3  # the share of the mixed source that selection keeps
UNLABELLED = "unlabelled"  # the one folder that holds a target's training images

# The goals (from the issue), in accuracy points unless stated.
GAP_CLOSED_GOAL = 0.5
DANN_GAIN_GOAL = 5.0
CONTROL_LOSS_GOAL = 1.0
AUTO_DISTANCE_GOAL = 1.5
KEPT_FASHION_GOAL = 0.9


@dataclass
class Images:
    """Images ([N, H, W] grey or [N, H, W, 3] RGB uint8) and their class indices."""

    images: np.ndarray
    labels: np.ndarray

    def take(self, rows: np.ndarray) -> Images:
        return Images(self.images[rows], self.labels[rows])


@dataclass
class Pool:
    """A data set's training and test files, and its class names (safe as folder names)."""

    train: Images
    test: Images
    classes: list[str]


@dataclass
class Setting:
    """One setting's folders for one seed: the source, the target and the oracle's labelled target; and the
    target's training images (for the selection's domain classifier)."""

    source: Path
    target: Path
    oracle: Path | None
    target_train: Images


def load_pool(name: str) -> Pool:
    dataset = load_builtin(name)
    splits = {}
    for split in ("train", "test"):
        each = dataset.splits[split]
        assert each.arrays is not None, "the built-ins are in memory"
        splits[split] = Images(each.arrays, np.asarray(each.labels))
    return Pool(splits["train"], splits["test"], [c.replace("/", "-") for c in dataset.classes])


def stratified(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted rows: `per_class` of each class (all of a class that has fewer), drawn by `rng`."""
    rows = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(rows))


def write_folder(
    root: Path,
    classes: list[str],
    *,
    train: Images | None = None,
    test: Images | None = None,
    unlabelled: Images | None = None,
    prefix: str = "",
) -> Path:
    """root/train/<class>/*.png (`unlabelled`: root/train/unlabelled/*.png) and root/test/<class>/*.png."""
    parts = [("test", test, False), ("train", train, False), ("train", unlabelled, True)]
    for split, data, blind in parts:
        if data is None:
            continue
        for i, (image, label) in enumerate(zip(data.images, data.labels, strict=True)):
            folder = root / split / (UNLABELLED if blind else classes[int(label)])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{prefix}{i:05d}.png", compress_level=1)
    return root


class Builder:
    """Every setting's folders for one seed, under `root`."""

    def __init__(self, args: argparse.Namespace, fashion: Pool | None, digits: Pool | None, root: Path) -> None:
        self.args, self.fashion, self.digits, self.root = args, fashion, digits, root
        self.train_photos, self.test_photos = photo_pool(TRAIN_PHOTOS), photo_pool(TEST_PHOTOS)
        self.fashion_test_rows = None
        if fashion is not None:  # fixed for every seed: the target test does not move with the seed
            count = min(args.test, len(fashion.test.labels))
            self.fashion_test_rows = stratified(fashion.test.labels, -(-count // 10), np.random.default_rng(0))

    def draw(self, pool: Pool, per_class: int, target_count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(source rows, target rows) of the training file, disjoint."""
        rng = np.random.default_rng(seed)
        source = stratified(pool.train.labels, per_class, rng)
        rest = np.setdiff1d(np.arange(len(pool.train.labels)), source)
        target = rest if target_count >= len(rest) else np.sort(rng.choice(rest, target_count, replace=False))
        return source, target

    def shifted(self, pool: Pool, target_rows: np.ndarray, test_rows: np.ndarray | None, seed: int, blended: bool):
        """(target train, target test): blended with the train and test photos, or as they are."""
        train = pool.train.take(target_rows)
        test = pool.test if test_rows is None else pool.test.take(test_rows)
        if not blended:
            return train, test
        train = Images(blend(train.images, self.train_photos, seed=[seed, 0]), train.labels)
        test = Images(blend(test.images, self.test_photos, seed=[0, 2]), test.labels)  # the same for every seed
        return train, test

    def setting(self, name: str, seed: int, classes: tuple[int, ...] | None = None) -> Setting:
        """`fashion-m`, `digits-m`, `control` or `partial`: source, target and oracle folders."""
        digits = name == "digits-m"
        pool = self.digits if digits else self.fashion
        assert pool is not None
        per_class = self.args.digits_per_class if digits else self.args.per_class
        test_rows = None if digits else self.fashion_test_rows
        source_rows, target_rows = self.draw(pool, per_class, self.args.target_train, seed)
        train, test = self.shifted(pool, target_rows, test_rows, seed, blended=name != "control")
        if classes is not None:
            train = train.take(np.flatnonzero(np.isin(train.labels, classes)))
            test = test.take(np.flatnonzero(np.isin(test.labels, classes)))
        base = self.root / f"seed{seed}"
        plain_test = pool.test if test_rows is None else pool.test.take(test_rows)
        source = base / ("digits" if digits else "fashion")  # shared by fashion-m, control and partial
        if not source.exists():
            write_folder(source, pool.classes, train=pool.train.take(source_rows), test=plain_test)
        target = write_folder(base / name / "target", pool.classes, test=test, unlabelled=train)
        oracle = None
        if classes is None:
            rows = stratified(train.labels, per_class, np.random.default_rng(seed + 1000))
            oracle = write_folder(base / name / "oracle", pool.classes, train=train.take(rows), test=test)
        return Setting(source, target, oracle, train)


@dataclass
class Selection:
    """The mixed source, its subsets, and what the domain classifier said."""

    mixed: Path
    kept: Path
    random: Path
    kept_fashion: float  # the share of kept images that are Fashion
    ess: float  # effective sample size of the importance weights, of `count` images
    count: int
    weight_on_fashion: float  # the share of the importance weight that Fashion images carry


def build_selection(builder: Builder, target: Setting, seed: int, config: FitConfig) -> Selection:
    """Fashion source + as many digits, labelled as Fashion's classes 0-9; `select`'s 30% and a random 30%."""
    fashion, digits, args = builder.fashion, builder.digits, builder.args
    assert fashion is not None and digits is not None and builder.fashion_test_rows is not None
    rng = np.random.default_rng(seed + 2000)
    source_rows, _ = builder.draw(fashion, args.per_class, args.target_train, seed)
    clothes = fashion.train.take(source_rows)
    numbers = digits.train.take(stratified(digits.train.labels, -(-len(source_rows) // 10), rng))
    is_fashion = np.arange(len(clothes.labels) + len(numbers.labels)) < len(clothes.labels)
    labels = np.concatenate([clothes.labels, numbers.labels])
    ratio = domain_ratio([clothes, numbers], target.target_train, config)
    kept = select(ratio, labels, KEEP, min_per_class=5)  # 5: every class keeps enough to carve a val image
    random = np.sort(rng.permutation(len(labels))[: len(kept)])
    weights = importance_weights(ratio)
    test = fashion.test.take(builder.fashion_test_rows)  # the source's own test: Fashion-MNIST, unblended
    folders = {}
    for name, rows in (("mixed", np.arange(len(labels))), ("kept", kept), ("random", random)):
        root = builder.root / f"seed{seed}" / "selection" / name
        write_folder(root, fashion.classes, train=clothes.take(rows[is_fashion[rows]]), test=test, prefix="f")
        # digits are 8 px and Fashion 28 px: one folder takes both, and the library resizes every image
        in_digits = rows[~is_fashion[rows]] - len(clothes.labels)
        folders[name] = write_folder(root, fashion.classes, train=numbers.take(in_digits), prefix="d")
    return Selection(
        folders["mixed"],
        folders["kept"],
        folders["random"],
        kept_fashion=float(is_fashion[kept].mean()),
        ess=effective_sample_size(weights),
        count=len(weights),
        weight_on_fashion=float(weights[is_fashion].sum() / weights.sum()),
    )


def domain_ratio(parts: list[Images], target: Images, config: FitConfig) -> np.ndarray:
    """p_target / p_source of each source image: a domain classifier on the pretrained backbone's pooled
    features, against (at most 2,000 of) the target's training images."""
    size = config.image_size
    assert size is not None
    backbone = create_backbone(config.backbone, pretrained=True)
    device = resolve_device(config.device)
    backbone.to(device)

    def features(images: np.ndarray) -> np.ndarray:
        split = Split(labels=np.zeros(len(images), dtype=np.int64), arrays=images)
        decoded = decode_split(split, size, interpolation=backbone.preprocessing.interpolation)
        return pooled_features(backbone, decoded.images, device)

    source = np.concatenate([features(part.images) for part in parts])
    rows = np.sort(np.random.default_rng(config.seed).permutation(len(target.labels))[:2000])
    return density_ratio(classify_domains(source, features(target.images[rows]), seed=config.seed))


@dataclass
class Row:
    setting: str
    method: str
    target: float
    source: float | None
    seconds: float
    note: str = ""
    values: dict[str, float] = field(default_factory=dict)  # numbers the goals read (kept_fashion)


def run_fit(setting: str, method: str, source: Path, config: FitConfig, target: Path | None, out: Path) -> Row:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(dir=out, prefix="run-") as run_dir:
        result = fit(str(source), config, Path(run_dir), quiet=True, target=None if target is None else str(target))
    seconds = time.monotonic() - start
    scores = result.scores
    expected = "test" if target is None else "target test"
    assert scores["split"] == expected, f"{setting}/{method} was scored on {scores['split']}, not the {expected}"
    source_accuracy = scores["source"]["accuracy"] if "source" in scores else None
    note = f"chose {result.config.adaptation}" if config.adaptation == "auto" and target is not None else ""
    row = Row(setting, method, scores["accuracy"], source_accuracy, seconds, note)
    shown = "" if source_accuracy is None else f", source {100 * source_accuracy:.1f}"
    print(f"  {setting} / {method}: target {100 * row.target:.1f}{shown}  {seconds:.0f} s {note}", flush=True)
    return row


def shift_rows(setting: str, folders: Setting, base: FitConfig, out: Path) -> list[Row]:
    rows = [run_fit(setting, m, folders.source, base.updated(adaptation=m), folders.target, out) for m in METHODS]
    rows.append(run_fit(setting, "auto", folders.source, base.updated(adaptation="auto"), folders.target, out))
    assert folders.oracle is not None
    rows.append(run_fit(setting, "oracle", folders.oracle, base.updated(adaptation="none"), None, out))
    return rows


def partial_rows(folders: Setting, base: FitConfig, out: Path) -> list[Row]:
    runs = [
        ("none", base.updated(adaptation="none")),
        ("dann", base.updated(adaptation="dann")),
        ("dann + classes", base.updated(adaptation="dann", source_weighting="classes")),
    ]
    return [run_fit("partial", name, folders.source, config, folders.target, out) for name, config in runs]


def validation_rows(fashion_m: Setting, builder: Builder, base: FitConfig, out: Path) -> list[Row]:
    """`DEV_METHODS` on both shifted settings, each checkpoint kept by DEV (rows named `METHOD + dev`)."""
    rows = []
    for setting, folders in (("fashion-m", fashion_m), ("digits-m", builder.setting("digits-m", base.seed))):
        for method in DEV_METHODS:
            config = base.updated(adaptation=method, validation="dev")
            rows.append(run_fit(setting, f"{method} + dev", folders.source, config, folders.target, out))
    return rows


def selection_rows(builder: Builder, fashion_m: Setting, base: FitConfig, seed: int, out: Path) -> list[Row]:
    start = time.monotonic()
    chosen = build_selection(builder, fashion_m, seed, base)
    print(f"  selection: domain classifier and folders {time.monotonic() - start:.0f} s", flush=True)
    none = base.updated(adaptation="none")
    target = fashion_m.target
    rows = [
        run_fit("selection", "all mixed", chosen.mixed, none, target, out),
        run_fit("selection", f"select {KEEP:.0%}", chosen.kept, none, target, out),
        run_fit("selection", f"random {KEEP:.0%}", chosen.random, none, target, out),
        run_fit("selection", "importance", chosen.mixed, none.updated(source_weighting="importance"), target, out),
    ]
    rows[1].note = f"kept {100 * chosen.kept_fashion:.0f}% Fashion"
    rows[1].values["kept_fashion"] = chosen.kept_fashion
    weight = f"{100 * chosen.weight_on_fashion:.0f}% of the weight on Fashion"
    rows[3].note = f"ESS {chosen.ess:.0f} of {chosen.count}, {weight}"
    return rows


def run_seed(args: argparse.Namespace, parts: list[str], builder: Builder, seed: int, out: Path) -> list[Row]:
    base = FitConfig(strategy=args.strategy, image_size=args.image_size, epochs=args.epochs, seed=seed)
    rows: list[Row] = []
    fashion_m = None
    if any(part in parts for part in ("fashion", "selection", "validation")):
        fashion_m = builder.setting("fashion-m", seed)
    for part in parts:
        if part == "validation":
            rows += validation_rows(fashion_m or builder.setting("fashion-m", seed), builder, base, out)
        elif part == "fashion":
            assert fashion_m is not None
            rows += shift_rows("fashion-m", fashion_m, base, out)
        elif part in ("digits", "control"):
            rows += shift_rows(SETTING_OF_PART[part], builder.setting(SETTING_OF_PART[part], seed), base, out)
        elif part == "partial":
            rows += partial_rows(builder.setting("partial", seed, PARTIAL_CLASSES), base, out)
        elif part == "selection":
            assert fashion_m is not None
            rows += selection_rows(builder, fashion_m, base, seed, out)
    return rows


@dataclass
class Cell:
    """One (setting, method) over seeds."""

    target: list[float]
    source: list[float]
    seconds: list[float]
    notes: list[str]
    values: dict[str, list[float]] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return 100 * statistics.fmean(self.target)

    @property
    def sd(self) -> float:
        return 100 * statistics.stdev(self.target) if len(self.target) > 1 else 0.0


def cells(rows: Iterable[Row]) -> dict[tuple[str, str], Cell]:
    table: dict[tuple[str, str], Cell] = {}
    for row in rows:
        cell = table.setdefault((row.setting, row.method), Cell([], [], [], []))
        cell.target.append(row.target)
        cell.seconds.append(row.seconds)
        if row.source is not None:
            cell.source.append(row.source)
        if row.note:
            cell.notes.append(row.note)
        for key, value in row.values.items():
            cell.values.setdefault(key, []).append(value)
    return table


def note_of(cell: Cell) -> str:
    """The notes of every seed; identical ones once, with their count."""
    counts: dict[str, int] = {}
    for note in cell.notes:
        counts[note] = counts.get(note, 0) + 1
    if len(cell.target) == 1:
        return "; ".join(counts)
    return "; ".join(f"{note} ({n}/{len(cell.target)})" for note, n in counts.items())


def print_table(table: dict[tuple[str, str], Cell], args: argparse.Namespace, seeds: int) -> None:
    print(
        f"\ntf_efficientnet_lite0, {args.strategy}, {args.image_size} px, {args.epochs or 'default'} epochs, "
        f"{args.per_class}/class Fashion source ({args.digits_per_class}/class digits), {args.target_train} target "
        f"training images, {args.test} Fashion test images; {seeds} seed(s), mean ± sd"
    )
    header = f"{'setting':<10} {'method':<15} {'target acc':>13} {'source acc':>10} {'seconds':>8}  notes"
    print(header)
    print("-" * len(header))
    for (setting, method), cell in table.items():
        spread = f"{cell.mean:.1f} ± {cell.sd:.1f}"
        source = f"{100 * statistics.fmean(cell.source):.1f}" if cell.source else "-"
        seconds = statistics.fmean(cell.seconds)
        print(f"{setting:<10} {method:<15} {spread:>13} {source:>10} {seconds:>8.0f}  {note_of(cell)}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# The mean target accuracy (in %) of a (setting, method), or None when it was not run.
Mean = Callable[[str, str], float | None]


def goals(table: dict[tuple[str, str], Cell]) -> list[str]:
    """The issue's goals, judged on the table's own numbers (means over seeds)."""

    def mean(setting: str, method: str) -> float | None:
        cell = table.get((setting, method))
        return cell.mean if cell else None

    kept = table.get(("selection", f"select {KEEP:.0%}"))
    kept_fashion = statistics.fmean(kept.values["kept_fashion"]) if kept else None
    lines = [
        *_gap_goal(mean),
        *_dann_goals(mean),
        *_control_goal(mean),
        *_auto_goals(mean),
        *_partial_goal(mean),
        *_selection_goals(mean, kept_fashion),
        *_validation_lines(mean),
    ]
    return lines or ["no goal could be judged: run more parts"]


def _known(mean: Mean, setting: str, methods: Iterable[str]) -> dict[str, float]:
    found = {method: mean(setting, method) for method in methods}
    return {method: value for method, value in found.items() if value is not None}


def _gap_goal(mean: Mean) -> list[str]:
    none, oracle = mean("fashion-m", "none"), mean("fashion-m", "oracle")
    adapted = _known(mean, "fashion-m", ADAPTED)
    if none is None or oracle is None or not adapted:
        return []
    best = max(adapted, key=adapted.__getitem__)
    gap = oracle - none
    if gap <= 0:
        return [f"MISS fashion-m: no gap to close: source only {none:.1f} ≥ oracle {oracle:.1f}"]
    share = (adapted[best] - none) / gap
    return [
        f"{verdict(share >= GAP_CLOSED_GOAL)} fashion-m: the best method ({best}, {adapted[best]:.1f}) closes "
        f"{100 * share:.0f}% of the source-only ({none:.1f}) → oracle ({oracle:.1f}) gap "
        f"(goal ≥ {100 * GAP_CLOSED_GOAL:.0f}%)"
    ]


def _dann_goals(mean: Mean) -> list[str]:
    lines = []
    for setting in ("fashion-m", "digits-m"):
        none, dann = mean(setting, "none"), mean(setting, "dann")
        if none is not None and dann is not None:
            gain = dann - none
            lines.append(
                f"{verdict(gain >= DANN_GAIN_GOAL)} {setting}: dann {dann:.1f} vs source only {none:.1f}: "
                f"{gain:+.1f} points (goal ≥ +{DANN_GAIN_GOAL:g})"
            )
    return lines


def _control_goal(mean: Mean) -> list[str]:
    none = mean("control", "none")
    others = _known(mean, "control", (*ADAPTED, "auto"))
    if none is None or not others:
        return []
    worst = min(others, key=others.__getitem__)
    loss = none - others[worst]
    return [
        f"{verdict(loss <= CONTROL_LOSS_GOAL)} control: the largest loss against source only ({none:.1f}) is "
        f"{worst}'s ({others[worst]:.1f}): {loss:.1f} points (goal ≤ {CONTROL_LOSS_GOAL:g})"
    ]


def _auto_goals(mean: Mean) -> list[str]:
    lines = []
    for setting in ("fashion-m", "digits-m", "control"):
        auto = mean(setting, "auto")
        methods = _known(mean, setting, METHODS)
        if auto is not None and methods:
            best = max(methods, key=methods.__getitem__)
            distance = methods[best] - auto
            lines.append(
                f"{verdict(distance <= AUTO_DISTANCE_GOAL)} {setting}: auto {auto:.1f} is {distance:.1f} points "
                f"below the best method ({best}, {methods[best]:.1f}) (goal ≤ {AUTO_DISTANCE_GOAL:g})"
            )
    return lines


def _partial_goal(mean: Mean) -> list[str]:
    none, dann, classes = mean("partial", "none"), mean("partial", "dann"), mean("partial", "dann + classes")
    if none is None or dann is None or classes is None:
        return []
    return [
        f"{verdict(classes > dann)} partial: dann + class weighting {classes:.1f} vs plain dann {dann:.1f} "
        f"({classes - dann:+.1f}; source only {none:.1f}) (goal: class weighting beats plain dann)"
    ]


def _selection_goals(mean: Mean, kept_fashion: float | None) -> list[str]:
    everything, weighted = mean("selection", "all mixed"), mean("selection", "importance")
    kept, random = mean("selection", f"select {KEEP:.0%}"), mean("selection", f"random {KEEP:.0%}")
    if everything is None or weighted is None or kept is None or random is None or kept_fashion is None:
        return []
    return [
        f"{verdict(kept_fashion >= KEPT_FASHION_GOAL)} selection: the kept {KEEP:.0%} is {100 * kept_fashion:.0f}% "
        f"Fashion (goal ≥ {100 * KEPT_FASHION_GOAL:.0f}%)",
        f"{verdict(kept > random)} selection: select {kept:.1f} vs random {random:.1f} ({kept - random:+.1f}) "
        "(goal: selection beats a random subset of the same size)",
        f"{verdict(kept >= everything)} selection: select {kept:.1f} vs the whole mixed source {everything:.1f} "
        f"({kept - everything:+.1f}) (goal: 30% chosen well is worth at least all of it)",
        f"{verdict(weighted > everything)} selection: importance weighting {weighted:.1f} vs unweighted "
        f"{everything:.1f} ({weighted - everything:+.1f}) (goal: weighting beats no weighting)",
    ]


def _validation_lines(mean: Mean) -> list[str]:
    """Not a goal: whether DEV's checkpoint did better on the target than the source validation loss's."""
    lines = []
    for setting in ("fashion-m", "digits-m"):
        pairs = [(m, mean(setting, m), mean(setting, f"{m} + dev")) for m in DEV_METHODS]
        known = [(m, plain, dev) for m, plain, dev in pairs if plain is not None and dev is not None]
        if known:
            changes = ", ".join(f"{m} {plain:.1f} → {dev:.1f}" for m, plain, dev in known)
            average = statistics.fmean(dev - plain for _, plain, dev in known)
            lines.append(f"INFO {setting}: source validation → DEV: {changes} (mean {average:+.1f} points)")
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = ",".join(PARTS)
    parser.add_argument("--part", default=None, help=f"all, or some of {parts} (default: all; --quick: fashion)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--per-class", type=int, default=100, help="Fashion source images per class")
    parser.add_argument("--digits-per-class", type=int, default=50, help="digits source images per class")
    parser.add_argument("--target-train", type=int, default=2000, help="Fashion target training images")
    parser.add_argument("--test", type=int, default=1000, help="Fashion test images (stratified, of 10,000)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--strategy", default="partial:4")
    parser.add_argument("--quick", action="store_true", help="smoke test: 20/class, 2 epochs, 500 test, fashion")
    parser.add_argument("--out", type=Path, default=None, help="where the data folders go (default: a temp dir)")
    args = parser.parse_args()
    if args.quick:
        args.per_class, args.digits_per_class, args.epochs, args.test, args.target_train = 20, 20, 2, 500, 500
        args.seeds = 1
        args.part = args.part or "fashion"
    args.part = args.part or "all"
    unknown = set(args.part.split(",")) - {*PARTS, "all"}
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}: choose from all, {', '.join(PARTS)}")
    return args


def main() -> None:
    started = time.monotonic()
    args = parse_args()
    parts = list(PARTS) if args.part == "all" else args.part.split(",")
    needs_fashion = any(p in parts for p in ("fashion", "control", "partial", "selection", "validation"))
    needs_digits = any(p in parts for p in ("digits", "selection", "validation"))
    fashion = load_pool("fashion-mnist") if needs_fashion else None
    digits = load_pool("digits") if needs_digits else None
    with tempfile.TemporaryDirectory(prefix="adaptation-") as temp:
        out = args.out or Path(temp)
        out.mkdir(parents=True, exist_ok=True)
        builder = Builder(args, fashion, digits, out)
        rows: list[Row] = []
        for seed in range(args.seeds):
            print(f"seed {seed}:", flush=True)
            rows += run_seed(args, parts, builder, seed, out)
    table = cells(rows)
    print_table(table, args, args.seeds)
    print("\ngoals (on the means above):")
    for line in goals(table):
        print(f"  {line}")
    fits = sum(len(cell.target) for cell in table.values())
    print(f"\n{fits} fits, total wall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
