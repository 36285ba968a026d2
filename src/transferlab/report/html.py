"""`transferlab report`: one self-contained HTML page per run dir, readable offline from an e-mail attachment.

Everything is inside the file: plots as inline SVG (hover a point for its value, through SVG's own `<title>`:
no script library to inline, nothing fetched), thumbnails and PNG plots as data URIs. It reads only the run dir:
data.json, advice.json, metrics.jsonl, eval.json, config.yaml, and compare.json where `compare` wrote one.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from transferlab._atomic import write_bytes_atomic
from transferlab.rundir import RunDir

WIDTH, HEIGHT, PAD = 460, 220, 40
Series = dict[str, list[tuple[float, float]]]  # a chart's lines: name → (x, y) points
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
# Marks the page once every image has decoded (or says how many did not): what the browser test reads.
IMAGE_CHECK = """
window.addEventListener("load", () => {
  const broken = [...document.images].filter((img) => !img.complete || img.naturalWidth === 0).length;
  document.body.dataset.images = broken ? `broken:${broken}` : "ok";
});
"""
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ddd; padding: 2px 8px; }
th { background: #f4f4f4; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.headline { font-size: 1.3em; } .note { color: #666; }
pre { background: #f7f7f7; padding: 0.8em; white-space: pre-wrap; }
.thumbs { display: flex; flex-wrap: wrap; gap: 10px; } .thumbs figure { margin: 0; text-align: center; width: 110px; }
.thumbs img { width: 96px; height: 96px; image-rendering: pixelated; border: 1px solid #ccc; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
"""


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the report of `run_dir` to `out` (default: RUN_DIR/report.html); returns its path."""
    path = Path(out) if out else RunDir(Path(run_dir)).report
    write_bytes_atomic(path, render(Path(run_dir)).encode())
    return path


def render(run_dir: Path) -> str:
    files = RunDir(run_dir)
    summary = _json(files.summary) or {}
    scores = _json(files.scores) or {}
    first = RunDir(run_dir / "members" / "0") if "ensemble" in summary else files  # whose data, advice, curves
    sections = [
        _headline(run_dir, summary, scores),
        _members(summary.get("ensemble", [])),
        _data(_json(first.data)),
        _advice(_json(first.advice)),
        _training(_metrics(first.metrics)),
        *_heads(scores),
        _compare(run_dir),
        _config(files.config),
    ]
    body = "\n".join(section for section in sections if section)
    title = f"transferlab report: {run_dir.name}"
    return (
        f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{STYLE}</style><script>{IMAGE_CHECK}</script></head>\n<body>\n<h1>{_e(title)}</h1>\n{body}\n"
        "</body></html>\n"
    )


def _headline(run_dir: Path, summary: dict[str, Any], scores: dict[str, Any]) -> str:
    if not scores:
        return "<section id='summary'><p>This run has no scores yet: it ended before its evaluation.</p></section>"
    line = f"{scores['split']} accuracy <b>{100 * scores['accuracy']:.2f}%</b>, macro-F1 {scores['macro_f1']:.4f}"
    facts = [
        ("strategy", summary.get("strategy")),
        ("stopped", summary.get("stop_reason")),
        ("model kept", _kept(summary)),
        ("training", f"{summary.get('train_seconds', 0):.0f} s"),
        ("input", summary.get("input")),
    ]
    if scores.get("target", "") is None:
        facts.append(("target", "accuracy unknown: the target has no labelled test split"))
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts if v is not None)
    return f"<section id='summary'><h2>Result</h2><p class='headline'>{line}</p><table>{rows}</table></section>"


def _kept(summary: dict[str, Any]) -> str:
    """Which model the run kept: validation's epoch, or a refit on training and validation images."""
    refit, members = summary.get("refit"), summary.get("ensemble", [])
    if len(members) > 1:
        return f"an ensemble: the mean of {len(members)} members' class probabilities"
    if refit is None:
        return f"epoch {summary.get('best_epoch')}"
    chosen = refit["selected"]
    return (
        f"a refit on {refit['train_images']} training and validation images, to epoch {refit['epochs']} of "
        f"{refit['schedule_epochs']}; the model validation chose scored {chosen['split']} accuracy "
        f"{100 * chosen['accuracy']:.2f}%"
    )


def _members(members: list[dict[str, Any]]) -> str:
    """An ensemble's members, each an ordinary run dir: the first's curves are the ones shown below."""
    if len(members) < 2:
        return ""
    rows = "".join(
        f"<tr><td>{_e(m['run_dir'])}</td><td class='n'>{m['seed']}</td><td class='n'>{100 * m['accuracy']:.2f}%</td>"
        f"<td class='n'>{m['train_seconds']:.0f}</td><td>{_e(m['stop_reason'])}</td></tr>"
        for m in members
    )
    return (
        "<section id='members'><h2>Members</h2><p class='note'>each alone; the data, advice and training curves "
        f"below are the first member's</p><table><tr><th>run dir</th><th>seed</th><th>accuracy</th><th>training s"
        f"</th><th>stopped</th></tr>{rows}</table></section>"
    )


def _data(data: dict[str, Any] | None) -> str:
    if data is None:
        return ""
    parts = []
    for name, summary in data.items():
        label = f" ({_e(name)})" if name else ""
        tasks = summary.get("tasks") or {"": {"classes": summary["classes"], "counts": summary["counts"]}}
        for task, counted in tasks.items():
            splits = list(counted["counts"])
            head = "".join(f"<th>{_e(s)}</th>" for s in splits)
            rows = "".join(
                f"<tr><td>{_e(c)}</td>"
                + "".join(f"<td class='n'>{counted['counts'][s][c]}</td>" for s in splits)
                + "</tr>"
                for c in counted["classes"]
            )
            missing = counted.get("missing")
            if missing:
                rows += "<tr><td><i>missing label</i></td>" + "".join(
                    f"<td class='n'>{missing[s]}</td>" for s in splits
                )
                rows += "</tr>"
            caption = f"<p>task <b>{_e(task)}</b></p>" if task else ""
            parts.append(f"{caption}<table><tr><th>class</th>{head}</tr>{rows}</table>")
        skipped = summary.get("skipped", [])
        listed = "".join(f"<li>{_e(s['path'])}: {_e(s['reason'])}</li>" for s in skipped[:50])
        more = f"<li>... and {len(skipped) - 50} more</li>" if len(skipped) > 50 else ""
        parts.append(f"<p>{len(skipped)} file(s) skipped{label}</p><ul>{listed}{more}</ul>" if skipped else "")
        notes = "".join(f"<li>{_e(note)}</li>" for note in summary.get("notes", []))
        parts.append(f"<p>Notes (leakage and duplicates){label}:</p><ul>{notes}</ul>" if notes else "")
    return f"<section id='data'><h2>Data</h2>{''.join(parts)}</section>"


def _advice(advice: dict[str, Any] | None) -> str:
    """Why this strategy (when the advisor chose it) and why this adaptation method (when `auto` chose it)."""
    if advice is None:
        return ""
    return (_strategy(advice) if "evidence" in advice else "") + _adaptation(advice.get("adaptation"))


def _adaptation(measured: dict[str, Any] | None) -> str:
    if measured is None:
        return ""
    facts = [
        ("method", measured["method"]),
        ("why", measured["why"]),
        ("domain classifier accuracy", f"{100 * measured['domain_accuracy']:.1f}% (balanced; 50% is chance)"),
        ("proxy A-distance", f"{measured['proxy_a_distance']:.2f} of 2"),
    ]
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    return f"<section id='adaptation'><h2>Why this adaptation method</h2><table>{rows}</table></section>"


def _strategy(advice: dict[str, Any]) -> str:
    evidence = advice["evidence"]
    curve: Series = {"pretrained probe": [(float(i), a) for i, a in enumerate(evidence["stage_probe"])]}
    chart = _svg_lines(curve, "stage", "probe accuracy", ticks=evidence["stage_names"])
    facts = [
        ("situation", advice["situation"]),
        ("decision", f"{advice['strategy']} (backbone lr x{advice['backbone_lr_ratio']}, {advice['augment']})"),
        ("transfer gain", f"{100 * evidence['transfer_gain']:+.1f} probe points over random weights"),
    ]
    if advice.get("decided_by", "label") != "label":  # several tasks: the scarcest one was measured
        facts.append(("measured on task", advice["decided_by"]))
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    return (
        f"<section id='advice'><h2>Why this strategy</h2><table>{rows}</table>{chart}"
        f"<pre>{_e(advice['explanation'])}</pre></section>"
    )


def _training(history: list[dict[str, Any]]) -> str:
    if not history:
        return ""
    loss = {
        "train loss": [(r["epoch"], r["train_loss"]) for r in history],
        "validation loss": [(r["epoch"], r["val_loss"]) for r in history],
    }
    if all("dev_loss" in r for r in history):  # an adapted run: the target loss DEV estimates
        loss["target loss, DEV's estimate"] = [(r["epoch"], r["dev_loss"]) for r in history]
    accuracy = {"validation accuracy": [(r["epoch"], r["val_accuracy"]) for r in history]}
    charts = _svg_lines(loss, "epoch", "loss") + _svg_lines(accuracy, "epoch", "accuracy")
    return f"<section id='training'><h2>Training</h2>{charts}</section>"


def _heads(scores: dict[str, Any]) -> list[str]:
    """Confusion, per-class precision and recall, and the most confident mistakes: per task where there are several."""
    if not scores:
        return []
    heads = scores.get("tasks") or {"": scores}
    return [_head(name, each) for name, each in heads.items()]


def _head(name: str, scores: dict[str, Any]) -> str:
    classes = list(scores["per_class"])
    suffix = f" — task {_e(name)}" if name else ""
    anchor = f"-{_e(name)}" if name else ""
    confusion = scores["confusion"]
    peak = max(max(row) for row in confusion) or 1
    cells = "".join(
        f"<tr><th>{_e(c)}</th>"
        + "".join(
            f"<td class='n' style='background: rgba(31, 119, 180, {0.85 * v / peak:.2f})'>{v or ''}</td>" for v in row
        )
        + "</tr>"
        for c, row in zip(classes, confusion, strict=True)
    )
    head = "".join(f"<th>{_e(c)}</th>" for c in classes)
    per_class = "".join(
        f"<tr><td>{_e(c)}</td><td class='n'>{m['precision']:.3f}</td><td class='n'>{m['recall']:.3f}</td>"
        f"<td class='n'>{m['f1']:.3f}</td><td class='n'>{m['support']}</td></tr>"
        for c, m in scores["per_class"].items()
    )
    figures = "".join(
        f"<figure>{_thumbnail(row)}<figcaption>true <b>{_e(row['label'])}</b><br>predicted {_e(row['predicted'])} "
        f"({100 * row['confidence']:.0f}%)</figcaption></figure>"
        for row in scores.get("top_losses", [])
    )
    return (
        f"<section id='confusion{anchor}'><h2>Confusion matrix{suffix}</h2><p class='note'>rows: true class; "
        f"columns: predicted ({_e(scores.get('split', ''))} split, {scores['count']} images)</p>"
        f"<table><tr><th></th>{head}</tr>{cells}</table></section>"
        f"<section id='per-class{anchor}'><h2>Precision and recall per class{suffix}</h2><table><tr><th>class</th>"
        f"<th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{per_class}</table></section>"
        f"<section id='mistakes{anchor}'><h2>Most confidently wrong{suffix}</h2>"
        f"<div class='thumbs'>{figures or '<p>none: every image was right</p>'}</div></section>"
    )


def _thumbnail(row: dict[str, Any]) -> str:
    if "thumbnail" in row:
        return f"<img src='{row['thumbnail']}' alt='{_e(row['image'])}' title='{_e(row['image'])}'>"
    path = Path(str(row["image"]))
    if path.is_file():  # a run from before thumbnails were kept: the file itself, where it still is
        data = base64.b64encode(path.read_bytes()).decode()
        return f"<img src='data:image/{path.suffix.lstrip('.').lower()};base64,{data}' alt='{_e(path.name)}'>"
    return f"<p class='note'>image {_e(row['image'])}</p>"


def _compare(run_dir: Path) -> str:
    for folder in (run_dir, run_dir.parent):
        rows = _json(folder / "compare.json")
        if rows:
            body = "".join(
                f"<tr><td>{_e(r['strategy'])}</td><td class='n'>{100 * r['accuracy']:.2f}%</td>"
                f"<td class='n'>{r['macro_f1']:.4f}</td><td class='n'>{r['seconds']:.0f}</td></tr>"
                for r in rows
            )
            chart = _svg_bars({r["strategy"]: r["accuracy"] for r in rows})
            return (
                f"<section id='compare'><h2>Strategies compared</h2><table><tr><th>strategy</th><th>accuracy</th>"
                f"<th>macro-F1</th><th>seconds</th></tr>{body}</table>{chart}</section>"
            )
    return ""


def _config(path: Path) -> str:
    if not path.is_file():
        return ""
    return f"<section id='config'><h2>Settings</h2><pre>{_e(path.read_text())}</pre></section>"


def _svg_lines(
    series: dict[str, list[tuple[float, float]]], x_label: str, y_label: str, ticks: list[str] | None = None
) -> str:
    """A line chart: one line per series, a hover title on every point."""
    points = [p for line in series.values() for p in line]
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    y0, y1 = (y0 - 0.5, y1 + 0.5) if y0 == y1 else (y0, y1)
    x1 = x1 if x1 > x0 else x0 + 1

    def at(x: float, y: float) -> tuple[float, float]:
        return PAD + (x - x0) / (x1 - x0) * (WIDTH - 2 * PAD), HEIGHT - PAD - (y - y0) / (y1 - y0) * (HEIGHT - 2 * PAD)

    parts = [f"<rect x='{PAD}' y='{PAD}' width='{WIDTH - 2 * PAD}' height='{HEIGHT - 2 * PAD}' fill='#fafafa'/>"]
    for k, (name, line) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        xy = [at(x, y) for x, y in line]
        joined = " ".join(f"{a:.1f},{b:.1f}" for a, b in xy)
        parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' points='{joined}'/>")
        for (x, y), (a, b) in zip(line, xy, strict=True):
            label = ticks[int(x)] if ticks else f"{x:g}"
            hover = f"<title>{_e(name)}, {x_label} {_e(label)}: {y:.4f}</title>"
            parts.append(f"<circle cx='{a:.1f}' cy='{b:.1f}' r='3.5' fill='{colour}'>{hover}</circle>")
        parts.append(f"<text x='{PAD + 6 + 150 * k}' y='{PAD - 8}' fill='{colour}'>{_e(name)}</text>")
    parts.append(f"<text x='{PAD}' y='{HEIGHT - 8}'>{_e(x_label)} {x0:g} to {x1:g}</text>")
    parts.append(f"<text x='4' y='{PAD + 4}'>{y1:.3g}</text><text x='4' y='{HEIGHT - PAD}'>{y0:.3g}</text>")
    return f"<svg width='{WIDTH}' height='{HEIGHT}' role='img' aria-label='{_e(y_label)}'>{''.join(parts)}</svg>"


def _svg_bars(values: dict[str, float]) -> str:
    width = 90 * len(values) + 2 * PAD
    top = max(values.values()) or 1
    parts = []
    for k, (name, value) in enumerate(values.items()):
        h = value / top * (HEIGHT - 2 * PAD)
        x = PAD + 90 * k + 10
        hover = f"<title>{_e(name)}: {100 * value:.2f}%</title>"
        bar = f"<rect x='{x}' y='{HEIGHT - PAD - h:.1f}' width='70' height='{h:.1f}' fill='{COLOURS[0]}'>"
        parts.append(f"{bar}{hover}</rect>")
        parts.append(f"<text x='{x}' y='{HEIGHT - PAD + 14}'>{_e(name)}</text>")
    return f"<svg width='{width}' height='{HEIGHT}' role='img' aria-label='strategies'>{''.join(parts)}</svg>"


def _metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
