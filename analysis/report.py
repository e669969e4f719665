"""The report: Markdown and a self-contained HTML file (images embedded), plus each ranking as CSV."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tuner.experiment import Experiment
from tuner.spec import to_yaml
from tuner.tables import display_frame


@dataclass
class Report:
    title: str
    experiment: Experiment
    rankings: dict[str, pd.DataFrame]  # heading -> ranked trials
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def best_config_yaml(ranked: pd.DataFrame) -> str:
    """The winning sampled values as a spec fragment to paste over the searched keys."""
    if ranked.empty or pd.isna(ranked.iloc[0]["rank"]):
        return "# no trial reported a finite score\n"
    best = ranked.iloc[0]
    fragment: dict[str, Any] = {}
    for column in (c for c in ranked.columns if c.startswith("config/")):
        key, value = column.removeprefix("config/"), best[column]
        value = value.item() if hasattr(value, "item") else value
        section, _, name = key.partition(".")
        if name:
            fragment.setdefault(section, {})[name] = value
        else:
            fragment[key] = value
    return yaml.safe_dump(fragment, sort_keys=False)


def counts(experiment: Experiment) -> dict[str, Any]:
    trials, history = experiment.trials, experiment.history
    wall = math.nan
    if {"timestamp", "time_total_s"} <= set(history.columns) and not history.empty:
        wall = float(history["timestamp"].max() - (history["timestamp"] - history["time_total_s"]).min())
    return {"trials": len(trials), "by status": trials["status"].value_counts().to_dict() if len(trials) else {},
            "wall time (s)": round(wall, 1) if math.isfinite(wall) else "unknown"}


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _errored(experiment: Experiment) -> pd.DataFrame:
    trials = experiment.trials
    return trials.loc[trials["status"] == "errored", ["trial_id", "error"]] if len(trials) else trials


def write(report: Report, out_dir: Path, top: int | None = None) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for heading, ranked in report.rankings.items():
        path = out_dir / f"ranking_{heading}.csv"
        ranked.to_csv(path, index=False)
        written[f"csv:{heading}"] = path
    written["markdown"] = out_dir / "report.md"
    written["markdown"].write_text(_markdown(report, out_dir, top))
    written["html"] = out_dir / "report.html"
    written["html"].write_text(_html(report, top))
    return written


def _markdown(report: Report, out_dir: Path, top: int | None) -> str:
    parts = [f"# {report.title}", "", f"Experiment: `{report.experiment.uri}`", "",
             "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in counts(report.experiment).items()], ""]
    parts += [f"> {note}" for note in report.notes] + [""] if report.notes else []
    for heading, ranked in report.rankings.items():
        parts += [f"## Ranking: {heading} by {ranked.attrs['metric']} ({ranked.attrs['mode']}, "
                  f"{ranked.attrs['scope']} report)", "", _markdown_table(display_frame(ranked, top)), "",
                  "Best configuration:", "", "```yaml", best_config_yaml(ranked).rstrip(), "```", ""]
    errored = _errored(report.experiment)
    if len(errored):
        parts += ["## Errored trials", "", _markdown_table(errored), ""]
    parts += ["## Figures", ""] + [f"![{p.stem}]({p.relative_to(out_dir)})" for p in report.figures] + [""]
    parts += ["## Spec", "", "```yaml", to_yaml(report.experiment.spec).rstrip(), "```", ""]
    return "\n".join(parts)


def _html(report: Report, top: int | None) -> str:
    esc = html.escape
    body = [f"<h1>{esc(report.title)}</h1>", f"<p>Experiment: <code>{esc(report.experiment.uri)}</code></p>",
            "<table>" + "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
                                for k, v in counts(report.experiment).items()) + "</table>"]
    body += [f"<blockquote>{esc(note)}</blockquote>" for note in report.notes]
    for heading, ranked in report.rankings.items():
        body += [f"<h2>Ranking: {esc(heading)} by {esc(ranked.attrs['metric'])} ({ranked.attrs['mode']}, "
                 f"{ranked.attrs['scope']} report)</h2>",
                 display_frame(ranked, top).to_html(index=False, na_rep="-", float_format="{:.4g}".format, border=0),
                 "<p>Best configuration:</p>", f"<pre>{esc(best_config_yaml(ranked))}</pre>"]
    errored = _errored(report.experiment)
    if len(errored):
        body += ["<h2>Errored trials</h2>", errored.to_html(index=False, border=0)]
    body.append("<h2>Figures</h2>")
    for path in report.figures:
        data = base64.b64encode(path.read_bytes()).decode()
        body.append(f'<figure><img alt="{esc(path.stem)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{esc(path.stem)}</figcaption></figure>")
    body += ["<h2>Spec</h2>", f"<pre>{esc(to_yaml(report.experiment.spec))}</pre>"]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd}"
             "figure{display:inline-block;margin:6px}img{max-width:520px}pre{background:#f6f6f6;padding:8px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(report.title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
