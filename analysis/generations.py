"""Before/after generations: `python -m analysis.generations RESULTS_DIR [RESULTS_DIR ...] [--prompts FILE]
[--max-new-tokens N]`.

Greedy answers from the base model and the best adapter of each method in the results (best DPO and best ORPO when
they hold both, in one folder or several), side by side in generations.md and generations.html, with per-answer
metrics: length in words, distinct-2, repeated 3-gram rate, and a fact check (for prompts that have a right
answer): an accepted answer must appear and no known wrong one, matched as whole words with units read as units
(`100°F` is not `100 °C`). An adapter's answer whose fact check fails where the base model's passed is marked
REGRESSED.

The models load on the full-precision base (tuner.trial.bases: an adapter trained on a 4-bit base names its
full-precision counterpart; `--base` names it for a base that is a quantized folder), on the GPU in bfloat16 on a
CUDA machine, else on the CPU in float32.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import UserError, guarded
from tuner.experiment.folder import Experiment
from tuner.experiment.trust import TRUST_HINT, owner_only_files
from tuner.trial.bases import full_precision_base


@dataclass(frozen=True)
class Prompt:
    text: str
    accepted: tuple[str, ...] = ()  # answers that count as right (whole words; units normalised)
    wrong: tuple[str, ...] = ()  # known wrong answers: any of them fails the check
    pattern: str | None = None  # or a regular expression for the right answer (older prompt files)

    @property
    def has_fact(self) -> bool:
        return bool(self.accepted or self.pattern)


DEFAULT_PROMPTS: list[Prompt] = [
    Prompt("What is the first planet in the solar system?", ("mercury",),
           ("venus", "earth", "mars", "jupiter", "saturn", "uranus", "neptune", "pluto")),
    Prompt("What are the colours of the rainbow?", ("violet",), ("black", "brown", "pink", "grey", "gray")),
    Prompt("What is the visible spectrum?", ("wavelength", "wavelengths", "nanometres", "nanometers", "nm")),
    Prompt("Explain photosynthesis.", ("carbon dioxide", "co2"), ("helium",)),
    Prompt("Why should college students get a library card?"),
    Prompt("What are the benefits of electric vehicles?"),
    Prompt("Which planet is known as the Red Planet?", ("mars",), ("venus", "jupiter", "mercury", "saturn")),
    Prompt("What is the capital of Australia?", ("canberra",), ("sydney", "melbourne", "perth", "brisbane")),
    Prompt("Who wrote Romeo and Juliet?", ("shakespeare",), ("dickens", "marlowe", "austen")),
    Prompt("At what temperature does water boil at sea level?",
           ("100 °C", "100 degrees", "212 °F", "373 K", "373.15 K"), ("100 °F", "212 °C", "50 °C", "90 °C")),
]


@dataclass
class AnswerMetrics:
    words: int
    distinct_2: float
    repeated_3gram_rate: float
    fact: bool | None
    found: str | None = None  # the accepted answer the check found
    wrong: str | None = None  # the wrong answer it found


_UNIT = re.compile(r"(\d)\s*(?:°|º|˚|degrees?\s+|deg\.?\s*)?\s*(celsius|centigrade|fahrenheit|c|f)\b")
_KELVIN = re.compile(r"(\d)\s*(?:kelvins?|k)\b")


def normalise(text: str) -> str:
    """Lower case, one space between words, thousands separators dropped, and temperatures written one way
    (`100°F`, `100 degrees Fahrenheit` and `100 F` all become `100 °f`)."""
    text = " ".join(text.lower().split())
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = _UNIT.sub(lambda m: f"{m.group(1)} °{m.group(2)[0]}", text)
    return _KELVIN.sub(lambda m: f"{m.group(1)} k", text)


def _mentions(text: str, answer: str) -> bool:
    """`answer` in `text` (both normalised) as whole words: `mars` is not in `marsupial`, `100` is not in `1000`
    or `100.5`, and a bare number is not a temperature (`100` is not in `100 °f`)."""
    answer = normalise(answer)
    after = r"(?![\w°]|[.,]\d|\s*°|\s+k\b|\s+degrees?\b)" if answer[-1].isdigit() else r"(?![\w°])"
    return re.search(r"(?<![\w.°])" + re.escape(answer) + after, text) is not None


def check_fact(text: str, prompt: Prompt) -> tuple[bool | None, str | None, str | None]:
    """(passed, accepted answer found, wrong answer found); passed is None for a prompt with no right answer."""
    if not prompt.has_fact:
        return None, None, None
    if prompt.pattern:
        found = re.search(prompt.pattern, text, flags=re.IGNORECASE)
        return found is not None, found.group(0) if found else None, None
    normal = normalise(text)
    found = next((a for a in prompt.accepted if _mentions(normal, a)), None)
    wrong = next((w for w in prompt.wrong if _mentions(normal, w)), None)
    return found is not None and wrong is None, found, wrong


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


def answer_metrics(text: str, prompt: Prompt | None = None) -> AnswerMetrics:
    fact, found, wrong = check_fact(text, prompt) if prompt is not None else (None, None, None)
    return AnswerMetrics(len(_words(text)), distinct_n(text, 2), repeated_ngram_rate(text, 3), fact, found, wrong)


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    import torch

    answers = []
    model.eval()
    for prompt in prompts:
        inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True).to(model.device)
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


def generation_device():
    """(device, dtype) the models generate on: the GPU in bfloat16 where there is one (float32 on a GPU without
    bfloat16), else the CPU in float32, the precision trials train and score in there (not the checkpoint's own
    dtype, often bfloat16, which a CPU runs slowly)."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.device("cpu"), torch.float32


def load_base(name: str, quantized: bool):
    """The base model on the generation device; a quantized folder loads where bitsandbytes put it (a 4-bit model
    refuses `.to`)."""
    from transformers import AutoModelForCausalLM

    device, dtype = generation_device()
    if quantized:
        return AutoModelForCausalLM.from_pretrained(name, dtype=dtype, device_map={"": device.index or 0})
    model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    return model if device.type == "cpu" else model.to(device)


def compare(adapters: dict[str, Path], prompts: list[Prompt], max_new_tokens: int, seed: int = 0,
            base: str | None = None) -> dict[str, list[str]]:
    """Greedy answers of the base model and each adapter; `base` names the full-precision base (the `--base` of
    the command line), else it comes from the first adapter's config."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    first = next(iter(adapters.values()))
    trained_on = json.loads((first / "adapter_config.json").read_text())["base_model_name_or_path"]
    base_model = full_precision_base(trained_on, base)
    if base_model.quantized_only and generation_device()[0].type != "cuda":
        raise UserError(f"--base: the adapters' base {trained_on} is a quantized folder, which loads only on a CUDA "
                        f"machine (bitsandbytes); pass --base pointing at the full-precision model")
    if base_model.note:
        print(f"note: {base_model.note}", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(first)
    texts = [p.text for p in prompts]
    columns = {"base": generate(load_base(base_model.name, base_model.quantized_only), tokenizer, texts,
                                max_new_tokens)}
    for label, adapter in adapters.items():
        model = PeftModel.from_pretrained(load_base(base_model.name, base_model.quantized_only), str(adapter))
        columns[label] = generate(model, tokenizer, texts, max_new_tokens)
        del model  # one adapter's model in memory at a time (on a GPU, its memory back before the next loads)
    return columns


def _cell_metrics(metrics: AnswerMetrics, regressed: bool = False) -> str:
    fact = ""
    if metrics.fact is not None:
        fact = f", fact ✓ ({metrics.found})" if metrics.fact else (
            f", fact ✗ (wrong: {metrics.wrong})" if metrics.wrong else ", fact ✗ (no accepted answer)")
    flag = ", REGRESSED (the base model's answer passed)" if regressed else ""
    return (f"{metrics.words} words, distinct-2 {metrics.distinct_2:.2f}, rep-3 {metrics.repeated_3gram_rate:.2f}"
            f"{fact}{flag}")


def regressions(columns: dict[str, list[str]], prompts: list[Prompt]) -> dict[str, list[int]]:
    """Per adapter column: the prompts whose fact check the base model's answer passed and this answer fails."""
    base = [answer_metrics(text, prompt).fact for text, prompt in zip(columns["base"], prompts)]
    return {label: [i for i, (text, prompt) in enumerate(zip(answers, prompts))
                    if base[i] is True and answer_metrics(text, prompt).fact is False]
            for label, answers in columns.items() if label != "base"}


def write_tables(columns: dict[str, list[str]], prompts: list[Prompt], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    labels = list(columns)
    regressed = regressions(columns, prompts) if "base" in columns else {}
    md = ["# Generations: base vs best adapters (greedy)", "", "| prompt | " + " | ".join(labels) + " |",
          "|---|" + "---|" * len(labels)]
    rows_html = []
    totals = {label: {"fact": 0, "rep": 0.0} for label in labels}
    for i, prompt in enumerate(prompts):
        cells_md, cells_html = [], []
        for label in labels:
            text = columns[label][i]
            metrics = answer_metrics(text, prompt)
            totals[label]["fact"] += bool(metrics.fact)
            totals[label]["rep"] += metrics.repeated_3gram_rate / len(prompts)
            flat = text.replace("|", "\\|").replace("\n", " ")
            described = _cell_metrics(metrics, i in regressed.get(label, []))
            cells_md.append(f"{flat}<br>*{described}*")
            cells_html.append(f"<td><p>{html.escape(text)}</p><small>{html.escape(described)}</small></td>")
        md.append(f"| {prompt.text} | " + " | ".join(cells_md) + " |")
        rows_html.append(f"<tr><th>{html.escape(prompt.text)}</th>{''.join(cells_html)}</tr>")
    with_fact = sum(p.has_fact for p in prompts)
    summary = [f"{label}: fact check passed on {t['fact']}/{with_fact}"
               + (f", regressed on {len(regressed[label])}" if label in regressed else "")
               + f", mean repeated 3-gram rate {t['rep']:.2f}" for label, t in totals.items()]
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


def load_prompts(path: Path | None) -> list[Prompt]:
    """A prompts file is JSON lines: `prompt`, and optionally `accepted` and `wrong` (lists of answers) or
    `expected` (a regular expression for the right answer)."""
    if path is None:
        return DEFAULT_PROMPTS
    prompts = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompts.append(Prompt(row["prompt"], tuple(row.get("accepted", ())), tuple(row.get("wrong", ())),
                                  row.get("expected")))
        except (ValueError, KeyError, TypeError) as error:
            raise UserError(f"--prompts: {path} line {number}: expected JSON with a `prompt` (and optional "
                            f"`accepted`/`wrong` lists or `expected`), got {line[:80]!r}") from None
    return prompts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.generations", description=__doc__.splitlines()[0])
    parser.add_argument("results_dirs", nargs="+",
                        help="experiments: folders or s3:// (gs://) URIs (e.g. a DPO and an ORPO run)")
    parser.add_argument("--prompts", type=Path, help="JSON lines: {prompt, accepted: [...], wrong: [...]}")
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--out", type=Path, help="default: the first RESULTS_DIR/report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base", metavar="NAME_OR_DIR",
                        help="the full-precision base model (default: the adapters' base, or its full-precision "
                             "counterpart when it was a 4-bit one); needed on a CPU for a base that is a quantized "
                             "folder")
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
    columns = compare(adapters, prompts, args.max_new_tokens, args.seed, args.base)
    paths = write_tables(columns, prompts, args.out or Experiment(args.results_dirs[0]).report_dir)
    print(paths["markdown"].read_text().rsplit("\n\n", 1)[-1].strip())
    print(f"generations: {paths['html']}\n             {paths['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
