"""Before/after generations: `python -m analysis.generations RESULTS_DIR [RESULTS_DIR ...] [--prompts FILE]
[--max-new-tokens N]`.

Greedy answers from the base model and the best adapter of each method in the results (best DPO and best ORPO when
they hold both, in one folder or several), side by side in generations.md and generations.html, with per-answer metrics: length in words,
distinct-2, repeated 3-gram rate, and whether the expected fact appears (for prompts that have one).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import guarded
from tuner.experiment import Experiment
from tuner.trust import TRUST_HINT, owner_only_files

# (prompt, regular expression for the expected fact, or None where there is no single right answer)
DEFAULT_PROMPTS: list[tuple[str, str | None]] = [
    ("What is the first planet in the solar system?", r"\bmercury\b"),
    ("What are the colours of the rainbow?", r"\bviolet\b"),
    ("What is the visible spectrum?", r"wavelength|nanomet|\bnm\b"),
    ("Explain photosynthesis.", r"carbon dioxide|\bco2\b"),
    ("Why should college students get a library card?", None),
    ("What are the benefits of electric vehicles?", None),
    ("Which planet is known as the Red Planet?", r"\bmars\b"),
    ("What is the capital of Australia?", r"\bcanberra\b"),
    ("Who wrote Romeo and Juliet?", r"\bshakespeare\b"),
    ("At what temperature does water boil at sea level?", r"\b100\b"),
]


@dataclass
class AnswerMetrics:
    words: int
    distinct_2: float
    repeated_3gram_rate: float
    fact: bool | None


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def distinct_n(text: str, n: int = 2) -> float:
    """Share of n-grams that are unique: 1.0 never repeats, near 0 loops."""
    words = _words(text)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def repeated_ngram_rate(text: str, n: int = 3) -> float:
    """Share of n-grams that already appeared earlier in the answer."""
    words = _words(text)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    seen, repeats = set(), 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams) if grams else 0.0


def answer_metrics(text: str, expected: str | None) -> AnswerMetrics:
    fact = None if expected is None else bool(re.search(expected, text, flags=re.IGNORECASE))
    return AnswerMetrics(len(_words(text)), distinct_n(text, 2), repeated_ngram_rate(text, 3), fact)


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    import torch

    answers = []
    model.eval()
    for prompt in prompts:
        inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        answers.append(tokenizer.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return answers


def best_adapters(results_dir: str | Path, trust: bool = False) -> dict[str, Path]:
    """Best checkpoint per method (Experiment.best, as tuner.export picks it), on this machine's disk."""
    experiment = Experiment.open(results_dir, trust=trust)
    adapters = {}
    for method in sorted(experiment.trials["method"].unique()):
        best = experiment.best(method=method)
        if best is not None and best.checkpoint is not None:
            adapters[f"best {method.upper()} ({best.trial_id})"] = experiment.local_copy(best.checkpoint)
    return adapters


def compare(adapters: dict[str, Path], prompts: list[tuple[str, str | None]], max_new_tokens: int,
            seed: int = 0) -> dict[str, list[str]]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    first = next(iter(adapters.values()))
    base_path = json.loads((first / "adapter_config.json").read_text())["base_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(first)
    texts = [p for p, _ in prompts]
    columns = {"base": generate(AutoModelForCausalLM.from_pretrained(base_path), tokenizer, texts, max_new_tokens)}
    for label, adapter in adapters.items():
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(adapter))
        columns[label] = generate(model, tokenizer, texts, max_new_tokens)
    return columns


def _cell_metrics(metrics: AnswerMetrics) -> str:
    fact = "" if metrics.fact is None else (", fact ✓" if metrics.fact else ", fact ✗")
    return f"{metrics.words} words, distinct-2 {metrics.distinct_2:.2f}, rep-3 {metrics.repeated_3gram_rate:.2f}{fact}"


def write_tables(columns: dict[str, list[str]], prompts: list[tuple[str, str | None]], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    labels = list(columns)
    md = ["# Generations: base vs best adapters (greedy)", "", "| prompt | " + " | ".join(labels) + " |",
          "|---|" + "---|" * len(labels)]
    rows_html = []
    totals = {label: {"fact": 0, "rep": 0.0} for label in labels}
    for i, (prompt, expected) in enumerate(prompts):
        cells_md, cells_html = [], []
        for label in labels:
            text = columns[label][i]
            metrics = answer_metrics(text, expected)
            totals[label]["fact"] += bool(metrics.fact)
            totals[label]["rep"] += metrics.repeated_3gram_rate / len(prompts)
            flat = text.replace("|", "\\|").replace("\n", " ")
            cells_md.append(f"{flat}<br>*{_cell_metrics(metrics)}*")
            cells_html.append(f"<td><p>{html.escape(text)}</p><small>{html.escape(_cell_metrics(metrics))}</small></td>")
        md.append(f"| {prompt} | " + " | ".join(cells_md) + " |")
        rows_html.append(f"<tr><th>{html.escape(prompt)}</th>{''.join(cells_html)}</tr>")
    with_fact = sum(expected is not None for _, expected in prompts)
    summary = [f"{label}: expected fact in {t['fact']}/{with_fact}, mean repeated 3-gram rate {t['rep']:.2f}"
               for label, t in totals.items()]
    md += ["", *[f"- {line}" for line in summary], ""]
    paths = {"markdown": out / "generations.md", "html": out / "generations.html"}
    paths["markdown"].write_text("\n".join(md))
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    paths["html"].write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Generations</title><style>"
        "body{font-family:sans-serif;margin:2em}td,th{vertical-align:top;padding:6px;border-bottom:1px solid #ddd;"
        "max-width:380px;text-align:left}small{color:#666}</style></head><body><h1>Generations: base vs best "
        f"adapters (greedy)</h1><table><tr><th>prompt</th>{head}</tr>{''.join(rows_html)}</table><ul>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in summary) + "</ul></body></html>")
    return paths


def load_prompts(path: Path | None) -> list[tuple[str, str | None]]:
    """A prompts file is JSON lines with `prompt` and optional `expected` (a regular expression)."""
    if path is None:
        return DEFAULT_PROMPTS
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(row["prompt"], row.get("expected")) for row in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.generations", description=__doc__.splitlines()[0])
    parser.add_argument("results_dirs", nargs="+",
                        help="experiments: folders or s3:// (gs://) URIs (e.g. a DPO and an ORPO run)")
    parser.add_argument("--prompts", type=Path, help="JSON lines: {prompt, expected (regex, optional)}")
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--out", type=Path, help="default: the first RESULTS_DIR/report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(TRUST_HINT, action="store_true",
                        help="read results folders that another user owns or can write to")
    args = parser.parse_args(argv)
    with owner_only_files():
        return guarded("analysis.generations", _generate, args)


def _generate(args) -> int:
    adapters = {}
    for results_dir in args.results_dirs:
        adapters.update(best_adapters(results_dir, args.trust))
    if not adapters:
        print(f"analysis.generations: no trial with a checkpoint in {[str(d) for d in args.results_dirs]}",
              file=sys.stderr)
        return 2
    prompts = load_prompts(args.prompts)
    columns = compare(adapters, prompts, args.max_new_tokens, args.seed)
    paths = write_tables(columns, prompts, args.out or Experiment(args.results_dirs[0]).report_dir)
    print(paths["markdown"].read_text().rsplit("\n\n", 1)[-1].strip())
    print(f"generations: {paths['html']}\n             {paths['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
