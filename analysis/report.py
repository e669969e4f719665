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

from tuner.evidence import verdict
from tuner.trial import methods
from tuner.experiment.folder import Experiment
from tuner.spec import to_yaml
from tuner.experiment.tables import describe_uncertainty, display_frame

TEXT_WIDTH = 90  # characters of a pair's text shown in the regression lists


@dataclass
class Report:
    title: str
    experiment: Experiment
    rankings: dict[str, pd.DataFrame]  # heading -> ranked trials
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    test: verdict.ScoredSplit | None = None  # the base model and the top trials scored on the test split


def test_tables(test: verdict.ScoredSplit) -> dict[str, pd.DataFrame]:
    """The report's test-split tables: accuracy per group, then the pairs that regressed and those that improved
    (base model vs the winner), texts shortened."""
    tables = {"per group": verdict.group_table(test)}
    if test.winner is not None:
        regressed, improved = verdict.changed_pairs(test)
        for name, frame in (("regressed", regressed), ("improved", improved)):
            frame = frame.copy()
            for column in ("prompt", "chosen", "rejected"):
                frame[column] = [_shorten(v) for v in frame[column]]
            tables[name] = frame
    return tables


def _shorten(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= TEXT_WIDTH else text[: TEXT_WIDTH - 3] + "..."


TEST_HEADINGS = {
    "per group": "Test preference accuracy per group (base model and the top trials)",
    "regressed": "Regressions: test pairs the base model gets right and the winner gets wrong",
    "improved": "Improvements: test pairs the base model gets wrong and the winner gets right",
}


def best_config_yaml(ranked: pd.DataFrame) -> str:
    """The winning sampled values as a spec fragment to paste over the searched keys."""
    if ranked.empty or pd.isna(ranked.iloc[0]["rank"]):
        return "# no trial reported a finite score\n"
    best = ranked.iloc[0]
    fragment: dict[str, Any] = {}
    for column in (c for c in ranked.columns if c.startswith("config/")):
        scope, key = methods.scoped(column.removeprefix("config/"))
        value = best[column]
        value = value.item() if hasattr(value, "item") else value
        if scope is not None and (scope != best.get("method") or value is None or value != value):
            continue  # scoped to the trials of another method than the winner's: not what the winner ran
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
        return str(value).replace("|", "\\|")

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
    if report.test is not None:
        parts += ["## Test split: how much to trust the winner", "", "```",
                  *verdict.headline(report.test), "```", ""]
        if report.test.trials:
            parts += ["Drift from the base model on the test answers (mean per-token log-ratio): " +
                      ", ".join(f"{t.label} {report.test.drift(t):+.3f}" for t in report.test.trials), ""]
        for name, table in test_tables(report.test).items():
            parts += [f"### {TEST_HEADINGS[name]}", "",
                      _markdown_table(table) if len(table) else "(none)", ""]
    for heading, ranked in report.rankings.items():
        parts += [f"## Ranking: {heading} by {ranked.attrs['metric']} ({ranked.attrs['mode']}, "
                  f"{ranked.attrs['scope']} report)", "", _markdown_table(display_frame(ranked, top)), ""]
        if uncertainty := describe_uncertainty(ranked):
            parts += [f"Uncertainty: {uncertainty}.", ""]
        parts += ["Best configuration:", "", "```yaml", best_config_yaml(ranked).rstrip(), "```", ""]
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
    if report.test is not None:
        body += ["<h2>Test split: how much to trust the winner</h2>",
                 f"<pre>{esc(chr(10).join(verdict.headline(report.test)))}</pre>"]
        if report.test.trials:
            body.append("<p>Drift from the base model on the test answers (mean per-token log-ratio): " +
                        esc(", ".join(f"{t.label} {report.test.drift(t):+.3f}" for t in report.test.trials)) + "</p>")
        for name, table in test_tables(report.test).items():
            body += [f"<h3>{esc(TEST_HEADINGS[name])}</h3>",
                     table.to_html(index=False, na_rep="-", float_format="{:.3f}".format, border=0)
                     if len(table) else "<p>(none)</p>"]
    for heading, ranked in report.rankings.items():
        body += [f"<h2>Ranking: {esc(heading)} by {esc(ranked.attrs['metric'])} ({ranked.attrs['mode']}, "
                 f"{ranked.attrs['scope']} report)</h2>",
                 display_frame(ranked, top).to_html(index=False, na_rep="-", float_format="{:.4g}".format, border=0)]
        if uncertainty := describe_uncertainty(ranked):
            body.append(f"<p>Uncertainty: {esc(uncertainty)}.</p>")
        body += ["<p>Best configuration:</p>", f"<pre>{esc(best_config_yaml(ranked))}</pre>"]
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
