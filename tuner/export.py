"""Export a trial's adapter: `python -m tuner.export RESULTS_DIR --out DIR [--trial ID] [--metric M --mode max|min]
[--merge] [--base NAME_OR_DIR]`.

Writes the LoRA adapter in PEFT format (adapter_config.json + adapter_model.safetensors) with the tokenizer and chat
template, a model card (README.md), and trial.json (id, config, metrics of the exported checkpoint). `--merge` also
writes the base model with the adapter merged in, as safetensors, under DIR/merged.

An adapter trained on a 4-bit base (the unsloth backend) is exported for its full-precision base
(tuner.trial.bases): adapter_config.json and the model card name that base, trial.json keeps the one the trial
trained on, and `--merge` always merges into full-precision weights. `--base` names the full-precision base when the
rule cannot (a local folder that is itself quantized).

DIR must be new or empty; `--force` replaces a non-empty DIR whole (nothing of an earlier export stays). The export
is written beside DIR and moved into place at the end, so a failed export leaves DIR as it was.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from tuner.errors import UserError, guarded
from tuner.experiment.folder import Experiment
from tuner.experiment.trust import TRUST_HINT, owner_only_files
from tuner.trial.backends import PassUnavailable
from tuner.trial.bases import BaseModel, full_precision_base, quantized_folder
from tuner.trial.reporting import RESUME_FILES

if TYPE_CHECKING:  # the ranking imports scipy, which `tuner export --help` does not need
    from tuner.experiment.ranking import Best

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class ExportError(UserError):
    pass


def choose(experiment: Experiment, trial_id: str | None, metric: str | None, mode: str | None) -> Best:
    """The trial to export (the best, or the named one), with the report and checkpoint of its score; raises
    ExportError saying why there is none."""
    trials = experiment.trials
    if trials.empty:
        raise ExportError(f"{experiment.uri}: the experiment has no trials")
    if trial_id is not None and trial_id not in set(trials["trial_id"]):
        raise ExportError(f"--trial {trial_id}: no such trial; trials are {sorted(trials['trial_id'])}")
    best = experiment.best(metric, mode, trial_id=trial_id)
    metric = metric or experiment.spec.metric
    if best is None:
        which = f"trial {trial_id}" if trial_id else "no trial"
        raise ExportError(f"{experiment.uri}: {which} reported a finite {metric}, so none can be exported"
                          if not trial_id else f"--trial {trial_id}: it reported no finite {metric}")
    if best.checkpoint is None:
        raise ExportError(f"trial {best.trial_id} has no checkpoint kept for its {metric} at step {best.step}")
    return best


def model_card(base_model: str, spec: dict, trial: dict, base_note: str = "") -> str:
    metrics = trial["metrics"]
    shown = {k: metrics[k] for k in sorted(metrics) if k.startswith("eval_") and isinstance(metrics[k], float)}
    return f"""---
library_name: peft
base_model: {base_model}
tags: [tuner, {spec.get("method", "dpo")}, lora, trl]
---
# LoRA adapter: {spec.get("method", "dpo").upper()} on {base_model}

Exported by `python -m tuner.export` from trial `{trial["trial_id"]}`, step {metrics.get("step")}.
{f"{chr(10)}Base model: {base_note}.{chr(10)}" if base_note else ""}
## Load it

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{base_model}")
model = PeftModel.from_pretrained(base, "THIS_FOLDER")
tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")
```

## Hyperparameters (the trial's resolved spec)

```yaml
{yaml.safe_dump({k: spec[k] for k in ("method", "train", "lora", "model") if k in spec}, sort_keys=False).rstrip()}
```

## Eval metrics at this checkpoint

These are the eval pairs the search selected this trial on: optimistic by construction.

| metric | value |
|---|---|
{chr(10).join(f"| {k} | {v:.4g} |" for k, v in shown.items())}
{_test_section(trial.get("test"))}"""


def _test_section(test: dict | None) -> str:
    if not test:
        return ""
    return "\n## Test split (pairs no search step saw)\n\n```\n" + "\n".join(test["headline"]) + "\n```\n"


def summarize_test_split(experiment: Experiment, best: Best) -> dict | None:
    """The exported trial and the base model on the test split (scored once, then read from the experiment)."""
    from tuner.evidence import scoring, verdict

    results = scoring.score_test_split(experiment, include=[best])
    if results is None:
        return None
    exported = next(t for t in results.trials if t.checkpoint == str(best.checkpoint))
    results = verdict.ScoredSplit(results.pairs, results.base, [exported], results.group_name, results.guard_groups)
    accuracy, base, difference = (results.accuracy(exported), results.accuracy(results.base),
                                  results.difference(exported))
    return {"pairs": int(results.selected.sum()), "pref_accuracy": [accuracy.value, accuracy.low, accuracy.high],
            "base_pref_accuracy": [base.value, base.low, base.high],
            "difference": [difference.estimate.value, difference.estimate.low, difference.estimate.high],
            "mcnemar_p": difference.p_value, "distinguishable": difference.distinguishable,
            "guards": {group: {"difference": [g.estimate.value, g.estimate.low, g.estimate.high], "broken": broken}
                       for group, (g, broken) in results.guards(exported).items()},
            "headline": verdict.headline(results)}


def check_out(out: Path, experiment_path: Path, force: bool) -> None:
    """Refuse to overwrite: a non-empty `out` needs `force`, and even then never the folder you are in, your home,
    or the results themselves."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out: {out} is a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        shown = sorted(p.name for p in out.iterdir())
        raise ExportError(f"--out: {out} is not empty ({', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''}); "
                          f"choose a new or empty folder, or pass --force to replace it whole")
    kept = {"the current folder": Path.cwd().resolve(), "your home folder": Path.home().resolve(),
            "the results folder": experiment_path}
    for what, folder in kept.items():
        if out == folder or out in folder.parents or (what == "the results folder" and folder in out.parents):
            raise ExportError(f"--out: --force replaces {out} whole, which would delete {what} ({folder}); "
                              f"choose another folder")


def export(results_dir: str | Path, out: Path, trial_id: str | None = None, metric: str | None = None,
           mode: str | None = None, merge: bool = False, force: bool = False, trust: bool = False,
           base: str | None = None) -> Path:
    """`base`: the full-precision base model (a folder or hub id), overriding tuner.trial.bases' rule."""
    experiment = Experiment.open(results_dir, trust=trust)
    best = choose(experiment, trial_id, metric, mode)
    checkpoint = experiment.local_copy(best.checkpoint)  # downloaded first when it is in object storage
    missing = [f for f in ADAPTER_FILES if not (checkpoint / f).is_file()]
    if missing:
        raise ExportError(f"{checkpoint}: not a LoRA checkpoint, missing {missing}")
    base_model = full_precision_base(_trained_on(checkpoint), base)
    if merge and base_model.quantized_only:
        raise ExportError(f"--merge: the adapter's base {base_model.trained_on} is quantized "
                          f"({quantized_folder(base_model.trained_on)}) and a merge needs full-precision weights; "
                          f"pass --base pointing at the full-precision model (a folder or hub id)")
    out = out.expanduser().resolve()
    check_out(out, experiment.path, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        _write(experiment, best, checkpoint, staging, merge, base_model)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _trained_on(checkpoint: Path) -> str:
    """The base the checkpoint's adapter config names: the model the trial loaded."""
    try:
        name = json.loads((checkpoint / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (ValueError, AttributeError):
        name = None
    if not isinstance(name, str) or not name:
        raise ExportError(f"{checkpoint / 'adapter_config.json'}: not a PEFT adapter config naming its base model "
                          f"(base_model_name_or_path is {name!r})")
    return name


def _write(experiment: Experiment, best: Best, checkpoint: Path, out: Path, merge: bool, base: BaseModel) -> None:
    """The export into `out`, from `checkpoint`: best's checkpoint on this machine's disk."""
    for path in checkpoint.iterdir():
        if path.is_file() and path.name not in RESUME_FILES:  # optimizer state is for resuming, not for use
            shutil.copy2(path, out / path.name)
    trial_spec = yaml.safe_load((checkpoint / "tuner_spec.yaml").read_text()) if (
        checkpoint / "tuner_spec.yaml").is_file() else experiment.spec.model_dump(mode="json")
    trial = {"trial_id": best.trial_id, "checkpoint": str(best.checkpoint), "metric": best.metric, "mode": best.mode,
             "step": best.step, "config": best.config, "metrics": best.report, "base_model": base.name}
    try:
        trial["test"] = summarize_test_split(experiment, best)
    except PassUnavailable as why:  # e.g. a GPU search's adapter exported on a laptop: the adapter is still wanted
        trial["test"], trial["test_note"] = None, f"the test split was not scored here: {why}"
    if base.changed:
        trial["trained_on_base"] = base.trained_on
        _name_base(out / "adapter_config.json", base.name)
    if base.note:
        trial["base_note"] = base.note
    (out / "trial.json").write_text(json.dumps(trial, indent=2, default=str))
    (out / "README.md").write_text(model_card(base.name, trial_spec, trial, base.note))
    if merge:
        merge_adapter(base.name, out, out / "merged")


def _name_base(adapter_config: Path, base_model: str) -> None:
    """Point the exported adapter at its full-precision base, the one plain PEFT loads it on."""
    config = json.loads(adapter_config.read_text())
    config["base_model_name_or_path"] = base_model
    if config.get("revision"):  # it pinned a commit of the quantized repo, which the full-precision one lacks
        config["revision"] = None
    adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def merge_adapter(base_model: str, adapter_dir: Path, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuner.export", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", help="an experiment: run.storage_path/NAME, a folder or an s3:// (gs://) URI")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trial", help="a trial id (default: the best trial)")
    parser.add_argument("--metric", help="default: the spec's search metric")
    parser.add_argument("--mode", choices=["max", "min"])
    parser.add_argument("--merge", action="store_true", help="also write the merged full model to OUT/merged")
    parser.add_argument("--force", action="store_true", help="replace a non-empty OUT whole")
    parser.add_argument("--base", metavar="NAME_OR_DIR",
                        help="the full-precision base model (default: the adapter's base, or its full-precision "
                             "counterpart when it was a 4-bit one); needed for a base that is a quantized folder")
    parser.add_argument(TRUST_HINT, action="store_true",
                        help="read a results folder that another user owns or can write to")
    args = parser.parse_args(argv)
    with owner_only_files():
        return guarded("tuner.export", _export_and_say, args)


def _export_and_say(args: argparse.Namespace) -> int:
    out = export(args.results_dir, args.out, args.trial, args.metric, args.mode, args.merge, args.force,
                 args.trust, args.base)
    trial = json.loads((out / "trial.json").read_text())
    for note in ("base_note", "test_note"):
        if trial.get(note):
            print(f"note: {trial[note]}")
    print(f"exported trial {trial['trial_id']} ({trial['metric']} = {trial['metrics'].get(trial['metric'])} at step "
          f"{trial['step']}) from {trial['checkpoint']}\nto {out}"
          + (f" (merged model in {out / 'merged'})" if args.merge else ""))
    if trial.get("test"):
        print("\n".join(["", *trial["test"]["headline"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
