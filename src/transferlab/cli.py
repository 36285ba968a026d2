"""The `transferlab` command. Each subcommand parses its flags, calls the API and prints: no logic here."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import NoReturn

from transferlab.config import ADAPTATIONS, INFERENCE_PRECISIONS, SOURCE_WEIGHTINGS, VALIDATIONS, FitConfig
from transferlab.errors import Interrupted, TransferlabError


class _Parser(argparse.ArgumentParser):
    """Wrong arguments get one line, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# The settings only `fit` reads (several heads, a refit), and those only domain adaptation reads.
FIT_FIELDS = {"tasks", "domains", "weighting", "sharing", "soft_l2", "domain_batchnorm", "refit"}
ADAPT_FIELDS = {"target", "adaptation", "transfer_weight", "bottleneck", "source_weighting", "validation"}
# What an unset setting means in `fit --help`: most are chosen from the data (defaults.py); these are not.
UNSET_MEANS = {
    "tasks": "one label",
    "target": "none",
    "bottleneck": "none",
    "weights": "the backbone's pretrained weights",
    "time_limit": "none",
    "per_class": "all",
    "val_fraction": "a tenth of each class, at least 10 images and at most a fifth of it",
    "sample_seed": "--seed",
    "split_seed": "--seed",
    "ensemble": "one model, or as many as --time-limit holds",
}
TASK_HELP = "a multi-task CSV manifest's label column to measure (default: its `label`)"
# As `adapt` names them, with their choices.
ADAPT_FLAGS = {
    "adaptation": ("--method", ADAPTATIONS),
    "source_weighting": ("--weighting", SOURCE_WEIGHTINGS),
    "validation": ("--validation", VALIDATIONS),
}


def _add_fit_flags(parser: argparse.ArgumentParser, adapt: bool = False) -> None:
    """One flag per FitConfig field (`--batch-size` ↔ `batch_size`), plus `--config FILE`: `fit`'s, or
    `adapt`'s (its own settings, without the several-heads ones)."""
    parser.add_argument("--config", type=Path, help="YAML file of settings; flags override it")
    for field in fields(FitConfig):
        if field.name == "source" or field.name in (FIT_FIELDS if adapt else ADAPT_FIELDS):
            continue
        if adapt and field.name in ADAPT_FLAGS:
            flag, choices = ADAPT_FLAGS[field.name]
            parser.add_argument(flag, dest=field.name, choices=choices, help=f"default: {field.default}")
            continue
        if field.name == "domains":
            parser.add_argument(
                "--domain",
                dest="domains",
                action="append",
                metavar="NAME=SOURCE",
                help="one of several data sets learned with a head each (give two or more; no SOURCE then)",
            )
            continue
        flag = "--" + field.name.replace("_", "-")
        if field.type in ("bool", "bool | None"):
            shown = "on" if field.default is True else "off" if field.default is False else "automatic"
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"default: {shown}")
            continue
        kind = {"int | None": int, "int": int, "float": float, "float | None": float}.get(str(field.type), str)
        unset = UNSET_MEANS.get(field.name, "automatic") if field.default is None else field.default
        parser.add_argument(flag, type=kind, default=None, help=f"default: {unset}")


def _fit_config(args: argparse.Namespace) -> FitConfig:
    base = FitConfig.load(args.config) if args.config else FitConfig()
    given = {f.name: getattr(args, f.name, None) for f in fields(FitConfig) if f.name != "source"}
    return base.updated(**given)


def cmd_backbones(args: argparse.Namespace) -> int:
    from transferlab.backbones import list_backbones

    rows = list_backbones()
    if args.json:
        print(json.dumps([row.__dict__ for row in rows], default=str, indent=2))
        return 0
    print(f"{'backbone':<24} {'family':<14} {'params':>8}  pretrained weights offline")
    for row in rows:
        offline = row.pretrained_source or "none (needs a download, or --weights FILE)"
        print(f"{row.name:<24} {row.family:<14} {row.num_params / 1e6:>7.1f}M  {offline}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from transferlab.data import format_summary, load_source, prepare, summarize

    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    dataset = load_source(args.source, tasks=tasks, per_class=args.per_class, seed=args.seed)
    summary = summarize(prepare(dataset, args.image_size), dataset.name)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _say_run_dir(run_dir: Path) -> None:
    from transferlab.distributed import rank

    if rank() == 0:  # under torchrun, one process speaks for the run
        print(f"run dir: {run_dir}")


def cmd_fit(args: argparse.Namespace) -> int:
    from transferlab.fitting import fit

    if args.resume:
        result = fit(None, FitConfig(), args.resume, resume=True)
    else:
        config = _fit_config(args)
        if (args.source is None) == (not config.domains):
            raise TransferlabError(
                "fit needs a SOURCE (a folder, a CSV file or a built-in name), or two or more --domain NAME=SOURCE, "
                "or --resume RUN_DIR"
            )
        name = args.source or "-".join(config.domain_sources)
        result = fit(args.source, config, args.out or _new_run_dir(name))
    _say_run_dir(result.run_dir)
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from transferlab.fitting import fit

    if args.resume:
        result = fit(None, FitConfig(), args.resume, resume=True)
    else:
        if args.source is None or args.target is None:
            raise TransferlabError("adapt needs a labelled SOURCE and --target TARGET, or --resume RUN_DIR")
        out = args.out or _new_run_dir(f"{Path(str(args.source)).name}-to-{Path(str(args.target)).name}")
        result = fit(args.source, _fit_config(args), out)
    _say_run_dir(result.run_dir)
    return 0


def _new_run_dir(source: str) -> Path:
    import time

    name = Path(str(source)).name or "run"
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from transferlab.classifier import load
    from transferlab.evaluate import format_scores

    scores = load(args.run_dir, inference_precision=args.inference_precision).evaluate(
        args.source, split=args.split, domain=args.domain
    )
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        tasks = scores.get("tasks", {"": scores})
        print("\n\n".join((f"task {name}\n" if name else "") + format_scores(each) for name, each in tasks.items()))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    options = {"top_k": args.top_k, "task": args.task, "domain": args.domain}
    if args.run_dir.suffix == ".onnx":  # an exported model: onnxruntime, no torch
        from transferlab.onnx_predict import OnnxPredictor

        rows = OnnxPredictor(args.run_dir).predict_paths(args.paths, **options)
    else:
        from transferlab.classifier import load

        rows = load(args.run_dir, inference_precision=args.inference_precision).predict_paths(args.paths, **options)
    failures = 0
    for row in rows:
        failures += "error" in row
        print(json.dumps(row), flush=True)
    return 1 if failures else 0


def cmd_runs(args: argparse.Namespace) -> int:
    import time

    from transferlab.rundir import RunDir

    def listed(path: Path) -> bool:  # finished, and not one of an ensemble's members (its own row counts them)
        member = path.parent.name == "members" and RunDir(path.parent.parent).config.is_file()
        return RunDir(path).summary.is_file() and not member

    folders = sorted(p for p in args.dir.glob("**/") if listed(p)) if args.dir.is_dir() else []
    if not folders:
        raise TransferlabError(f"no finished run dirs under {args.dir}")
    print(f"{'run dir':<48} {'strategy':<12} {'accuracy':>9} {'on':<12} finished")
    for folder in folders:
        summary = json.loads(RunDir(folder).summary.read_text())
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(RunDir(folder).summary.stat().st_mtime))
        accuracy = f"{100 * summary['accuracy']:.2f}%"
        models = f"{len(summary['ensemble'])} × " if "ensemble" in summary else ""
        strategy = f"{models}{summary['strategy']}"
        print(f"{folder!s:<48} {strategy:<12} {accuracy:>9} {summary['evaluated_on']:<12} {when}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from transferlab.report.html import write_report
    from transferlab.rundir import RunDir

    if not RunDir(args.run_dir).summary.is_file():
        raise TransferlabError(f"{args.run_dir} is not a finished run dir: it has no summary.json")
    print(f"written: {write_report(args.run_dir, args.out)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from transferlab.export import export_model

    done = export_model(args.run_dir, args.format, args.out, args.check_images)
    print(
        f"exported {done.format} to {done.path} in {done.seconds:.1f} s; parity on {done.images_checked} images "
        f"from {done.images_from}: max |probability difference| {done.max_abs_diff:.2e}"
    )
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from transferlab.probe import format_probe_table, run_probe

    out = args.out or Path("runs") / f"probe-{Path(str(args.source)).name}"
    report = run_probe(
        args.source,
        args.backbone,
        out_dir=out,
        image_size=args.image_size,
        per_class=args.per_class,
        task=args.task,
        pretrained=args.pretrained,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else f"{format_probe_table(report)}\nwritten: {out}")
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    from transferlab.rank import format_rank_table, rank_backbones

    names = [name.strip() for name in args.backbones.split(",") if name.strip()]
    rows = rank_backbones(
        args.source,
        names,
        image_size=args.image_size,
        per_class=args.per_class,
        task=args.task,
        pretrained=args.pretrained,
    )
    print(json.dumps([row.__dict__ for row in rows], indent=2) if args.json else format_rank_table(rows))
    return 0


def cmd_advise(args: argparse.Namespace) -> int:
    from transferlab.advisor import advise_source

    advice = advise_source(
        args.source,
        args.backbone,
        weights=args.weights,
        image_size=args.image_size,
        per_class=args.per_class,
        task=args.task,
        seed=args.seed,
        target=args.target,
    )
    print(json.dumps(advice.to_json(), indent=2) if args.json else advice.explanation)
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from transferlab.adaptation.selection import format_selection, parse_keep, select_source

    selection = select_source(
        args.source,
        args.target,
        parse_keep(args.keep),
        args.out,
        backbone=args.backbone,
        weights=args.weights,
        image_size=args.image_size,
        seed=args.seed,
    )
    print(f"{format_selection(selection)}\nwritten: {selection.manifest}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from transferlab.compare import compare, format_compare

    strategies = [name.strip() for name in args.strategies.split(",") if name.strip()]
    out = args.out or _new_run_dir(f"compare-{Path(str(args.source)).name}")
    print(format_compare(compare(args.source, strategies, _fit_config(args), out)))
    print(f"written: {out}/compare.json, {out}/compare.png")
    return 0


def _add_transferability_flags(parser: argparse.ArgumentParser) -> None:
    """The flags `probe` and `rank` share: which data, at which size, and whether weights are pretrained."""
    parser.add_argument("source", help="image folder, CSV manifest, or built-in name")
    parser.add_argument("--image-size", type=int, help="default: the size fit would pick for each backbone")
    parser.add_argument("--per-class", type=int, help="use this many train+val images per class")
    parser.add_argument("--task", help=TASK_HELP)
    parser.add_argument(
        "--no-pretrained", dest="pretrained", action="store_false", help="random weights (run dirs keep theirs)"
    )
    parser.add_argument("--json", action="store_true")


def _add_pretrained_flags(parser: argparse.ArgumentParser) -> None:
    """The flags `advise` and `select` share: whose pretrained features, at which size, with which seed."""
    parser.add_argument("--backbone", default=FitConfig.backbone, help="registered name or run dir")
    parser.add_argument("--weights", help="a local weights file (.safetensors or .pth)")
    parser.add_argument("--image-size", type=int, help="default: the size fit would pick")
    parser.add_argument("--seed", type=int, default=0)


def _inference_precision_flag(parser: argparse.ArgumentParser, note: str = "") -> None:
    """The arithmetic of `evaluate` and `predict` (FitConfig.inference_precision)."""
    parser.add_argument(
        "--inference-precision",
        choices=INFERENCE_PRECISIONS,
        default="auto",
        help="auto: bfloat16 where the CPU or GPU computes it in hardware, else float32" + note,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from transferlab.demo import run_demo

    run_demo(Path(args.out))
    return 0


def _version() -> str:
    from transferlab import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="transferlab", description="Transfer learning on images: fit, evaluate, predict.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every skipped file and more")
    parser.add_argument("--version", action="version", version=f"transferlab {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("backbones", help="list registered backbones and their offline weights")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_backbones)

    p = sub.add_parser("data", help="summarise a data source: classes, counts, image sizes, skipped files")
    p.add_argument("source", help="image folder, CSV manifest, or built-in name")
    p.add_argument("--per-class", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", help="a CSV manifest's label columns, comma-separated (default: its `label`)")
    p.add_argument("--image-size", type=int, default=32, help="decode size used to check every file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_data)

    p = sub.add_parser("fit", help="fit a pretrained backbone to a data source")
    p.add_argument("source", nargs="?", help="image folder, CSV manifest, or built-in name (not with --domain)")
    p.add_argument("--out", type=Path, help="run dir (default: runs/<time>-<source>)")
    p.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run (settings from its config.yaml)"
    )
    _add_fit_flags(p)
    p.set_defaults(run=cmd_fit)

    p = sub.add_parser(
        "adapt", help="fit to a labelled source while adapting to an unlabelled target (domain adaptation)"
    )
    p.add_argument("source", nargs="?", help="labelled image folder, CSV manifest, or built-in name")
    p.add_argument("--out", type=Path, help="run dir (default: runs/<time>-<source>-to-<target>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    _add_fit_flags(p, adapt=True)
    p.set_defaults(run=cmd_adapt)

    p = sub.add_parser("evaluate", help="score a fitted model on labelled data")
    p.add_argument("run_dir", type=Path)
    p.add_argument("source")
    p.add_argument("--split", choices=["auto", "train", "val", "test", "all"], default="auto")
    p.add_argument("--domain", help="a multi-domain model: the source's domain (default: the one its classes fit)")
    p.add_argument("--json", action="store_true")
    _inference_precision_flag(p)
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("predict", help="predict image files or folders, one JSON line each")
    p.add_argument("run_dir", type=Path, help="a run dir, a saved model, or an exported .onnx file (no torch needed)")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--task", help="a multi-task model: this task only (default: every task)")
    p.add_argument("--domain", help="a multi-domain model: the images' domain (required there)")
    _inference_precision_flag(p, "; not for an .onnx file, which runs in float32")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("runs", help="the finished run dirs under a folder, one line each")
    p.add_argument("dir", nargs="?", type=Path, default=Path("runs"))
    p.set_defaults(run=cmd_runs)

    p = sub.add_parser("report", help="one self-contained HTML page of a run: data, advice, curves, errors")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="the page to write (default: RUN_DIR/report.html)")
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("export", help="write a run dir's model as ONNX or TorchScript, checked against PyTorch")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--out", type=Path, help="the file to write (default: RUN_DIR/model.onnx or model.pt)")
    p.add_argument(
        "--check-images", type=Path, nargs="+", help="images or folders to check parity on (default: the run's source)"
    )
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("probe", help="linear probe and LogME at every stage of a backbone")
    _add_transferability_flags(p)
    p.add_argument("--backbone", required=True, help="registered name or run dir")
    p.add_argument("--out", type=Path, help="where probe.json and probe.png go (default: runs/probe-<source>)")
    p.set_defaults(run=cmd_probe)

    p = sub.add_parser("rank", help="rank backbones for a data set by LogME, H-score and a linear probe")
    _add_transferability_flags(p)
    p.add_argument("--backbones", required=True, help="comma-separated registered names or run dirs")
    p.set_defaults(run=cmd_rank)

    p = sub.add_parser("advise", help="measure size and similarity, choose the strategy, and explain why")
    p.add_argument("source", help="image folder, CSV manifest, or built-in name")
    _add_pretrained_flags(p)
    p.add_argument("--per-class", type=int, help="use this many train+val images per class")
    p.add_argument("--task", help=TASK_HELP)
    p.add_argument("--target", help="an unlabelled target domain: also measure the shift to it and choose a method")
    p.add_argument(
        "--json", action="store_true", help="keys: situation, strategy, freeze_stages, evidence (adaptation)"
    )
    p.set_defaults(run=cmd_advise)

    p = sub.add_parser("select", help="keep the source images most like a target domain, as a CSV manifest")
    p.add_argument("source", help="labelled image folder, CSV manifest, or built-in name")
    p.add_argument("--target", required=True, help="the target domain's images (their labels are never read)")
    p.add_argument("--keep", required=True, help="how many to keep: a count (300) or a fraction (0.3)")
    p.add_argument("--out", type=Path, required=True, help="the manifest to write (.csv)")
    _add_pretrained_flags(p)
    p.set_defaults(run=cmd_select)

    p = sub.add_parser("compare", help="fit several strategies on the same data and budget, side by side")
    p.add_argument("source", help="image folder, CSV manifest, or built-in name")
    p.add_argument("--strategies", default="head,partial:4,full,scratch", help="comma-separated")
    p.add_argument("--out", type=Path, help="folder for one run dir per strategy, compare.json and compare.png")
    _add_fit_flags(p)
    p.set_defaults(run=cmd_compare)

    p = sub.add_parser("demo", help="the built-in tour: data, pretrained predictions, a fit")
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        code = run(args)
        if "torch.distributed" in sys.modules:  # a command that trained may have joined torchrun's ranks
            from transferlab.distributed import leave

            leave()
        return code
    except TransferlabError as error:
        print(f"transferlab {args.command}: error: {error}", file=sys.stderr)
        return 130 if isinstance(error, Interrupted) else 2
    except KeyboardInterrupt:
        print(f"transferlab {args.command}: interrupted", file=sys.stderr)
        return 130
