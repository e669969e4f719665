"""GPU check: one device run of everything the GPU path claims, written to OUT/gpu_check.json with every log under
OUT/logs/ (a phase that failed, timed out or was skipped for lack of time is recorded with its reason and log).

Phases, in order, each with a share of --budget-s (a phase that would eat the time kept for the later target phases
is skipped, and one that overruns its share is stopped, so the JSON is always written):
 1. build a random-init model: a 1B-class Llama (benchmarks/gpu_packing.py GPU_MODEL), bfloat16, with the embedded
    model's tokenizer (or --tokenizer FOLDER, as carried to the device by benchmarks/gpu_check.sh);
 2. search_spaces/dpo_gpu.yaml and search_spaces/orpo_gpu.yaml on it, 4 trials at resources.gpu=0.25, small step
    counts: per trial, whether it reported eval metrics and which backend it ran on (its `setup/backend` report);
 3. packing at 1, 2 and 4 trials per GPU (4 is the DPO search of phase 2, reused): trial-steps per second over the
    wall and in the steady state, fixed cost per trial cold and warm, peak GPU memory, ratio to 1 per GPU;
 4. 4 per GPU under MPS (nvidia-cuda-mps-control), or why it is unavailable;
 5. shared vs per-trial reference log-probs (search.share_reference true vs false): total trial time and the saving;
 6. export of the DPO winner (python -m tuner.export), loaded in a fresh process with plain transformers + PEFT on
    the full-precision base, generating 16 tokens.
and ends with the targets, each {"value", "target", "met"} (met null when not measured).

    bash benchmarks/gpu_check.sh                      # on the device machine, carry [".device"] (see its header)
    python benchmarks/gpu_check.py --out DIR --tokenizer .device/tokenizer --budget-s 540   # what it runs there
    python benchmarks/gpu_check.py --dry-run --out DIR                                       # on a CPU: a few minutes

--dry-run: a tiny model, model.backend=hf, resources.gpu=0 and resources.cpu=1, tiny data and steps
(benchmarks.common.DRY_RUN), 2 trials where the device runs 4, packing at 1 and 2 per "GPU", MPS recorded as
unavailable; every other phase really runs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DRY_RUN, REPO, TINY_MODEL, machine, trial_seconds, tuner_command  # noqa: E402

# Per unit of work: (budget, least worth starting) in seconds of the device run. Estimates on an H100/H200 for the
# 1B model (docs/gpu.md, ../shared/device/README.md): a trial's unsloth import, 4-bit load and set-up 20-45 s, its
# first step up to 40 s with cold compile caches and ~8 s warm, 16 steps ~7 s; a search's driver (imports, Ray, Tune,
# the end) ~20 s, plus a base-model pass (reference or scores) of ~30 s when the pass cache has none. So: the model
# ~25 s, the cold 4-trial DPO search ~140 s, the ORPO one with its test scoring ~150 s, a warm 1-trial search ~70 s,
# the export and load ~30 s. The targets' units (KEPT) need about 490 s; packing at 2 (~75 s) and MPS (~90 s) run
# only when the budget has that much left beyond what the later kept units need: at --budget-s 540 (the default; a
# device call may run 600 s) expect them skipped.
DEVICE_BUDGETS = {"build_model": (90, 20), "searches.dpo": (210, 120), "searches.orpo": (210, 120),
                  "packing.1": (120, 75), "packing.2": (130, 80), "packing.4": (150, 100), "mps": (140, 90),
                  "shared_reference": (130, 75), "export": (100, 35)}
DRY_BUDGETS = {"build_model": (120, 5), "searches.dpo": (400, 20), "searches.orpo": (400, 20),
               "packing.1": (300, 20), "packing.2": (300, 20), "packing.4": (300, 20), "mps": (300, 20),
               "shared_reference": (300, 20), "export": (300, 20)}
# Units whose least time is kept free while earlier units run (the targets need them); the others (packing at 2 and
# 4 when not reused, MPS) run only when that time is left over.
KEPT = ("build_model", "searches.dpo", "searches.orpo", "packing.1", "shared_reference", "export")
STOP_GRACE_S = 10  # at most, after SIGINT (tuner.run stops its search and Ray as on Ctrl-C); then SIGKILL to the group

# The device searches: few steps, a small eval split, no test split (its end-of-search scoring costs minutes of
# base-model passes), every trial run to the end.
DEVICE_SEARCH = ["train.max_steps=16", "train.eval_steps=8", "train.warmup_steps=2",
                 "train.per_device_train_batch_size=4", "train.per_device_eval_batch_size=16", "data.max_rows=64",
                 "data.max_eval_rows=16", "data.test_fraction=0", "scheduler.type=none"]
DRY_SEARCH = [*DRY_RUN, "model.backend=hf", "resources.gpu=0", "resources.cpu=1", "data.test_fraction=0",
              "scheduler.type=none", "train.warmup_steps=0", "train.per_device_eval_batch_size=4"]

TARGETS = {"eval_on_unsloth": "every trial of the packed DPO and ORPO searches reports eval metrics, on unsloth",
           "throughput_4_per_gpu": ">= 3.3x the aggregate steady throughput of 1 trial per GPU",
           "warm_fixed_cost_s": "<= 15 s per trial, warm compile caches",
           "shared_reference_saving": ">= 25% less total trial time than a reference per trial",
           "export_loads_with_peft": "the exported adapter loads with plain transformers + PEFT and generates"}

LOAD_ADAPTER = r'''"""gpu_check phase 6: an exported adapter on its full-precision base, with plain transformers + PEFT only."""
import json, sys, time
started = time.perf_counter()
import peft, torch, transformers
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base_dir, adapter_dir, out = sys.argv[1:4]
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = torch.bfloat16 if device == "cuda" else torch.float32
base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype).to(device)
model = PeftModel.from_pretrained(base, adapter_dir).eval()
tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                       add_generation_prompt=True, return_tensors="pt", return_dict=True).to(device)
with torch.no_grad():
    ids = model.generate(**prompt, max_new_tokens=16, min_new_tokens=16, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
new = ids[0, prompt["input_ids"].shape[1]:]
answer = json.dumps({"loaded": True, "generated_tokens": int(new.numel()),
                     "text": tokenizer.decode(new, skip_special_tokens=True), "lora_modules": len(lora_b),
                     "lora_b_nonzero": any(bool(p.abs().sum() > 0) for p in lora_b), "device": device,
                     "dtype": str(dtype), "peft": peft.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__, "seconds": round(time.perf_counter() - started, 1)}, indent=1)
with open(out, "w") as handle:
    handle.write(answer)
print(answer)
'''

BUILD_MODEL = r'''"""gpu_check phase 1: a random-init Llama (benchmarks.common.build_model) and its parameter count."""
import json, sys, time
from pathlib import Path
started = time.perf_counter()
sys.path.insert(0, REPO_ROOT)
import torch
from safetensors import safe_open
from benchmarks.common import build_model

folder, shape, tokenizer, device, info = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] or None, sys.argv[4], sys.argv[5]
device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
build_model(folder, shape, tokenizer, device)
parameters = 0
for file in folder.glob("*.safetensors"):
    with safe_open(str(file), "pt") as handle:
        for key in handle.keys():
            parameters += int(torch.Size(handle.get_slice(key).get_shape()).numel())
Path(info).write_text(json.dumps({"parameters": parameters, "initialised_on": device, "dtype": "bfloat16",
                                  "seconds": round(time.perf_counter() - started, 1)}))
print(Path(info).read_text())
'''


# ---------------------------------------------------------------------------------------------- running commands


@dataclass
class Ran:
    rc: int | None
    wall_s: float
    timed_out: bool
    limit_s: float


@dataclass
class Check:
    """The run's state: where things go, the clock, and the JSON written after every unit."""

    out: Path
    work: Path
    dry_run: bool
    budget_s: float
    tokenizer: str | None
    gpu: bool
    started: float = field(default_factory=time.monotonic)
    figures: dict = field(default_factory=dict)
    child: subprocess.Popen | None = None
    model: Path | None = None
    first_search_with_trials: str | None = None  # its trials compiled cold; every later trial is warm

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def results(self) -> Path:
        return self.work / "results"

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.out))
        except ValueError:
            return str(path)

    def save(self) -> None:
        self.figures["wall_s"] = round(time.monotonic() - self.started, 1)
        temporary = self.out / "gpu_check.json.tmp"
        temporary.write_text(json.dumps(self.figures, indent=1, default=str))
        temporary.replace(self.out / "gpu_check.json")

    def run(self, command: list[str], log: Path, limit_s: float, env: dict | None = None) -> Ran:
        """`command` to completion or `limit_s` (then SIGINT, and SIGKILL to its process group STOP_GRACE_S later),
        its output to `log`."""
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        timed_out = False
        grace = min(STOP_GRACE_S, limit_s / 4)
        with log.open("w") as handle:
            handle.write(f"$ {shlex.join(command)}\n")
            handle.flush()
            self.child = subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True)
            try:
                rc = self.child.wait(timeout=max(1.0, limit_s - grace))
            except subprocess.TimeoutExpired:
                timed_out = True
                os.kill(self.child.pid, signal.SIGINT)
                try:
                    rc = self.child.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    kill_group(self.child.pid)
                    rc = self.child.wait()
            finally:
                if self.child.poll() is None:  # interrupted ourselves (SIGTERM): take the child with us
                    kill_group(self.child.pid)
                self.child = None
        return Ran(rc, round(time.perf_counter() - started, 1), timed_out, round(limit_s, 1))


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "transformers", "trl", "peft", "unsloth", "unsloth_zoo", "bitsandbytes", "torchao", "ray",
                 "optuna", "datasets", "scipy", "pandas", "accelerate"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


# ---------------------------------------------------------------------------------------------- the units


def unit(check: Check, name: str, work, *, reason_if_not: str | None = None) -> dict:
    """Run one unit of work (`work(limit_s)` returns its record) within its share of the budget: skipped (with the
    reason) when its least time is not left beyond what the later kept units need; any error recorded, never
    raised. The record gets `status`, `wall_s` and, for a skip, `skipped` details."""
    budgets = DRY_BUDGETS if check.dry_run else DEVICE_BUDGETS
    budget, least = budgets[name]
    order = list(budgets)
    kept_later = sum(budgets[u][1] for u in order[order.index(name) + 1:] if u in KEPT)
    if reason_if_not:
        return {"status": f"skipped: {reason_if_not}"}
    limit = min(budget, check.left() - kept_later)
    if limit < least:
        return {"status": f"skipped: not enough time left ({check.left():.0f} s of --budget-s {check.budget_s:.0f}; "
                          f"this needs at least {least} s and {kept_later} s are kept for the later phases)"}
    started = time.perf_counter()
    try:
        record = work(limit)
    except Exception as error:  # the record of a failure, never the end of the check
        trace = check.logs / f"{name}.error.txt"
        trace.write_text(traceback.format_exc())
        record = {"status": f"failed: {type(error).__name__}: {error}", "traceback": check.rel(trace)}
    record.setdefault("wall_s", round(time.perf_counter() - started, 1))
    record["limit_s"] = round(limit, 1)
    return record


def build(check: Check, limit: float) -> dict:
    from benchmarks.gpu_packing import GPU_MODEL

    shape = TINY_MODEL if check.dry_run else GPU_MODEL
    folder = check.work / "model"
    info = check.work / "model.json"
    log = check.logs / "build_model.log"
    script = check.work / "build_model.py"
    script.write_text(BUILD_MODEL.replace("REPO_ROOT", repr(str(REPO))))
    ran = check.run([sys.executable, str(script), str(folder), json.dumps(shape), check.tokenizer or "",
                     "cpu" if check.dry_run else "auto", str(info)], log, limit)
    record = {"log": check.rel(log), "wall_s": ran.wall_s, "shape": shape, "folder": str(folder),
              "tokenizer": check.tokenizer or "the embedded model's"}
    if ran.rc == 0 and info.is_file():
        check.model = folder
        return {"status": "ok", **record, **json.loads(info.read_text())}
    return {"status": failure(ran, log), **record}


def failure(ran: Ran, log: Path) -> str:
    if ran.timed_out:
        return f"timed out: stopped after {ran.limit_s:.0f} s (its share of the budget)"
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return f"failed: exit {ran.rc}: {lines[-1][:300] if lines else 'no output'}"


def search(check: Check, name: str, spec: str, overrides: list[str], limit: float, env: dict | None = None) -> dict:
    """One tuner.run search on the built model, and what its trials did."""
    log = check.logs / f"{name}.log"
    command = tuner_command(spec, check.results, name, f"model.name={check.model}", *overrides)
    ran = check.run(command, log, limit, env=env)
    text = log.read_text(errors="replace")
    reference = [line for line in text.splitlines() if line.startswith("reference log-probs:")]
    record = {"status": "ok" if ran.rc == 0 else failure(ran, log),
              "command": shlex.join(["python", *command[1:]]).replace(f"{REPO}/", ""), "log": check.rel(log),
              "rc": ran.rc,
              "wall_s": ran.wall_s, "reference": reference[0] if reference else None,
              "experiment": str(check.results / name)}
    if (check.results / name).is_dir():
        try:
            record.update(trials_of(check, name, ran.wall_s))
        except Exception as error:
            record["trials_error"] = f"{type(error).__name__}: {error}"
    return record


def trials_of(check: Check, name: str, wall: float) -> dict:
    """Per trial: status, whether it reported eval metrics (the search metric), the backend it reported, peak GPU
    memory, fixed cost; with the trials' logs copied under OUT/logs/NAME/."""
    import pandas as pd

    from benchmarks.gpu_packing import summarize
    from tuner.console import TRIAL_LOG
    from tuner.experiment.folder import Experiment

    experiment = Experiment.open(check.results / name)
    trials, history = experiment.trials, experiment.history
    metric = experiment.spec.metric
    cold = check.first_search_with_trials in (None, name)
    rows = []
    for _, trial in trials.iterrows():
        reports = history[history["trial_id"] == trial["trial_id"]].sort_values("training_iteration")
        folder = Path(str(trial["path"]))
        copied = check.logs / name / f"{trial['trial_id']}.log"
        copied.parent.mkdir(parents=True, exist_ok=True)
        text = ""
        for source in (folder / TRIAL_LOG, folder / "error.txt"):
            if source.is_file():
                text += source.read_text(errors="replace")
        copied.write_text(text or "(no trial.log or error.txt in the trial's folder)\n")
        evals = sorted(c for c in reports.columns if c.startswith("eval_") and reports[c].notna().any())
        scores = reports[metric].dropna() if metric in reports else pd.Series(dtype=float)
        row = {"trial_id": trial["trial_id"], "status": trial["status"], "reports": int(len(reports)),
               "eval_metrics": bool(len(scores)), "metric": metric,
               "last_score": float(scores.iloc[-1]) if len(scores) else None, "eval_keys": len(evals),
               **backend_of(reports, text), "log": check.rel(copied), "error": trial.get("error") or None,
               "compile": "cold" if cold else "warm"}
        if "peak_gpu_memory_gib" in reports and reports["peak_gpu_memory_gib"].notna().any():
            row["peak_gpu_memory_gib"] = round(float(reports["peak_gpu_memory_gib"].max()), 3)
        if len(reports):
            first, last = reports.iloc[0], reports.iloc[-1]
            steady = (last["time_total_s"] - first["time_total_s"]) / (len(reports) - 1) if len(reports) > 1 else 0.0
            row["fixed_s"] = round(float(first["time_total_s"] - steady), 2)
            row["setup_s"] = {k.removeprefix("setup/").removesuffix("_s"): round(float(first[k]), 2)
                              for k in reports.columns if k.startswith("setup/") and k.endswith("_s")
                              and pd.notna(first[k])}
            row["steps"] = int(last["step"])
        rows.append(row)
    if rows and check.first_search_with_trials is None:
        check.first_search_with_trials = name
    record = {"trials": rows, "trial_s": round(trial_seconds(check.results / name), 2) if len(history) else None,
              "test_scored": sorted(json.loads(experiment.test_scores_file.read_text())["models"])
              if experiment.test_scores_file.is_file() else []}
    passes = experiment.tuner_dir / "passes.json"
    if passes.is_file():
        shutil.copy(passes, check.logs / name / "passes.json")
        record["passes"] = check.rel(check.logs / name / "passes.json")
    if len(history):
        record["throughput"] = throughput(history)
        try:  # benchmarks/gpu_packing.py's figures, over the search's wall time
            record["summary"] = {k: (None if math.isnan(float(v)) else round(float(v), 4))
                                 for k, v in summarize(check.results / name, wall).items()}
        except Exception as error:
            record["summary_error"] = f"{type(error).__name__}: {error}"
    return record


def backend_of(reports, log: str) -> dict:
    """The backend a trial ran on, as it reported it with its first report (`setup/backend`, and whether it trained
    on the shared reference, `setup/reference`), with unsloth's banner from its log as the evidence."""
    reported = reports["setup/backend"].dropna() if "setup/backend" in reports else []
    reference = reports["setup/reference"].dropna() if "setup/reference" in reports else []
    match = re.search(r".*(Unsloth \d[^\n]*|Unsloth: [^\n]*|🦥[^\n]*)", log)
    return {"backend": str(reported.iloc[0]) if len(reported) else "unknown",
            "reference": str(reference.iloc[0]) if len(reference) else None,
            "backend_evidence": match.group(0).strip()[:160] if match else None}


def throughput(history) -> dict:
    """Aggregate trial-steps per second in the steady state: over the window in which every trial was between its
    first and last report (steps interpolated between reports; the wall clock of a report is the trial's
    setup/started_at plus its time_total_s); without such a window, the sum of each trial's own steady rate."""
    import numpy as np

    curves = []
    for _, reports in history.groupby("trial_id"):
        reports = reports.sort_values("training_iteration")
        started = reports["setup/started_at"].dropna()
        if len(reports) < 2 or started.empty:
            continue
        times = (float(started.iloc[0]) + reports["time_total_s"].astype(float)).to_numpy()
        curves.append((times, reports["step"].astype(float).to_numpy()))
    if not curves:
        return {"steady_trial_steps_per_s": None, "note": "no trial reported twice"}
    begin, end = max(t[0] for t, _ in curves), min(t[-1] for t, _ in curves)
    if end > begin:
        steps = sum(np.interp(end, t, s) - np.interp(begin, t, s) for t, s in curves)
        return {"steady_trial_steps_per_s": round(float(steps / (end - begin)), 4), "window_s": round(end - begin, 2),
                "trials": len(curves), "how": "every trial training at once"}
    rate = sum((s[-1] - s[0]) / (t[-1] - t[0]) for t, s in curves)
    return {"steady_trial_steps_per_s": round(float(rate), 4), "window_s": 0.0, "trials": len(curves),
            "how": "sum of each trial's own steady rate (the trials' steady phases did not overlap)"}


# ---------------------------------------------------------------------------------------------- the phases


def overrides(check: Check, n: int, trials: int | None = None) -> list[str]:
    """The search settings at `n` trials per GPU (on the dry run's CPU: n at a time, resources.gpu=0)."""
    trials = trials or n
    base = DRY_SEARCH if check.dry_run else DEVICE_SEARCH
    share = [] if check.dry_run else [f"resources.gpu={1 / n:g}"]
    return [*base, f"search.num_samples={trials}", f"search.max_concurrent_trials={n}", *share]


def packed(check: Check) -> int:
    """Trials per GPU of the phase-2 searches: 4 on the device, 2 at a time on the dry run's 2 cores."""
    return 2 if check.dry_run else 4


def phase_searches(check: Check) -> dict:
    n = packed(check)
    phase = {}
    for method in ("dpo", "orpo"):
        # ORPO's search keeps a test split, scored by the winner alone: the base model's and a trial adapter's
        # passes over it then run as the trials' runtime does (unsloth's 4-bit base in a Ray task on a GPU share).
        tested = ["data.test_fraction=0.2", "search.test_top_k=1"] if method == "orpo" else []
        phase[method] = unit(check, f"searches.{method}", lambda limit, m=method, t=tested: search(
            check, f"{m}-gpu", f"{m}_gpu.yaml", [*overrides(check, n), *t], limit),
            reason_if_not=None if check.model else "no model (phase 1 failed)")
        check.figures["phases"]["searches"] = phase
        check.save()
    phase["status"] = "ok" if all(phase[m]["status"] == "ok" for m in ("dpo", "orpo")) else \
        "; ".join(f"{m}: {phase[m]['status']}" for m in ("dpo", "orpo") if phase[m]["status"] != "ok")
    phase["per_gpu"] = n
    return phase


def setting_figures(record: dict) -> dict:
    """A search record's packing figures (benchmarks/gpu_packing.py's summarize over the search's wall time, and
    the steady-state aggregate)."""
    trials = record.get("trials") or []
    summary = record.get("summary") or {}
    fixed = [t["fixed_s"] for t in trials if t.get("fixed_s") is not None]
    steps = sum(t.get("steps", 0) for t in trials)
    peaks = [t["peak_gpu_memory_gib"] for t in trials if t.get("peak_gpu_memory_gib") is not None]
    return {"trials": len(trials), "wall_s": record.get("wall_s"),
            "trial_steps_per_s": summary.get("trial_steps_per_s",
                                             round(steps / record["wall_s"], 4) if record.get("wall_s") else None),
            "steady_trial_steps_per_s": (record.get("throughput") or {}).get("steady_trial_steps_per_s"),
            "steady_window_s": (record.get("throughput") or {}).get("window_s"),
            "fixed_cost_s": round(sum(fixed) / len(fixed), 2) if fixed else summary.get("fixed_cost_s"),
            "fixed_costs_s": fixed, "compile": sorted({t.get("compile") for t in trials}) or None,
            "peak_gib_per_trial": max(peaks) if peaks else summary.get("peak_gib_per_trial"),
            "setup_s": mean_setup(trials), "all_eval_metrics": bool(trials) and all(t["eval_metrics"] for t in trials)}


def mean_setup(trials: list[dict]) -> dict:
    keys = sorted({k for t in trials for k in t.get("setup_s", {}) if k != "started_at"})
    return {k: round(sum(t["setup_s"].get(k, 0.0) for t in trials) / len(trials), 2) for k in keys} if trials else {}


def phase_packing(check: Check) -> dict:
    per_gpu = [1, 2] if check.dry_run else [1, 2, 4]
    top = packed(check)
    settings = {}
    dpo = check.figures["phases"]["searches"].get("dpo", {})
    for n in per_gpu:
        if n == top and dpo.get("status") == "ok":
            share = "resources.gpu=0" if check.dry_run else f"resources.gpu={1 / n:g}"
            settings[str(n)] = {"status": "ok", **setting_figures(dpo),
                                "reused_from": f"phases.searches.dpo: the same settings, {n} trials at {share}, "
                                               f"max_concurrent_trials={n}; its trials compiled cold"}
            continue
        name = f"packing.{n}"
        record = unit(check, name, lambda limit, n=n: search(check, f"pack-{n}", "dpo_gpu.yaml",
                                                              overrides(check, n), limit),
                      reason_if_not=None if check.model else "no model (phase 1 failed)")
        settings[str(n)] = {"status": record["status"], **(setting_figures(record) if "trials" in record else {}),
                            "search": record}
        check.figures["phases"]["packing"] = {"settings": settings}
        check.save()
    base = settings.get("1", {}).get("steady_trial_steps_per_s")
    for row in settings.values():
        rate = row.get("steady_trial_steps_per_s")
        row["ratio_to_1"] = round(rate / base, 3) if rate and base else None
        wall_base = settings.get("1", {}).get("trial_steps_per_s")
        row["wall_ratio_to_1"] = round(row["trial_steps_per_s"] / wall_base, 3) \
            if row.get("trial_steps_per_s") and wall_base else None
    measured = [s for s in settings.values() if s.get("fixed_costs_s")]
    cold = [f for s in measured if s.get("compile") == ["cold"] for f in s["fixed_costs_s"]]
    warm = [f for s in measured if s.get("compile") == ["warm"] for f in s["fixed_costs_s"]]
    # The ORPO search's trials are warm too (they ran after the DPO search compiled), but are another method.
    failed = {n: s["status"] for n, s in settings.items() if s["status"] != "ok"}
    return {"status": "ok" if not failed else "; ".join(f"{n} per GPU: {why}" for n, why in failed.items()),
            "settings": settings,
            "fixed_cost_cold_s": round(sum(cold) / len(cold), 2) if cold else None,
            "fixed_cost_warm_s": round(sum(warm) / len(warm), 2) if warm else None,
            "how": "steady_trial_steps_per_s: trial-steps per second while every trial of the setting trained at "
                   "once (interpolated between eval reports); trial_steps_per_s: all steps over the search's wall "
                   "time (driver, set-up and the base model's passes included); fixed cost: a trial's time to its "
                   "first report less one steady round (imports, load, compile, data, trainer); cold: the first "
                   "search's trials (empty compile caches), warm: later searches' (Inductor and Triton caches "
                   "shared by every search of this check)"}


def phase_mps(check: Check) -> dict:
    if not check.gpu:
        return {"status": "unavailable: no GPU"}
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        return {"status": "unavailable: nvidia-cuda-mps-control is not on PATH"}
    if not check.model:
        return {"status": "skipped: no model (phase 1 failed)"}

    def work(limit: float) -> dict:
        folder = Path(tempfile.mkdtemp(prefix="mps-", dir=check.work))
        env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"),
               "CUDA_MPS_LOG_DIRECTORY": str(folder / "log")}
        (folder / "pipe").mkdir()
        (folder / "log").mkdir()
        started = subprocess.run([control, "-d"], env=env, capture_output=True, text=True, timeout=30)
        if started.returncode != 0:
            return {"status": f"unavailable: nvidia-cuda-mps-control -d exited {started.returncode}: "
                              f"{(started.stderr or started.stdout).strip()[:300]}"}
        try:
            record = search(check, "mps-4", "dpo_gpu.yaml", overrides(check, 4), limit - 15, env=env)
        finally:
            stopped = subprocess.run([control], input="quit\n", env=env, capture_output=True, text=True, timeout=30)
            for log in (folder / "log").glob("*"):
                (check.logs / "mps").mkdir(parents=True, exist_ok=True)
                shutil.copy(log, check.logs / "mps" / log.name)
        record["mps_quit"] = stopped.returncode
        if record["status"] != "ok" and not any(t.get("eval_metrics") for t in record.get("trials") or []):
            # no trial got as far as an eval: CUDA under this MPS daemon did not work (see the trials' logs)
            record["status"] = f"unavailable: the search under MPS failed ({record['status']})"
        figures = setting_figures(record) if record.get("trials") else {}
        without = check.figures["phases"].get("packing", {}).get("settings", {}).get("4", {})
        if figures.get("steady_trial_steps_per_s") and without.get("steady_trial_steps_per_s"):
            figures["ratio_to_4_without_mps"] = round(figures["steady_trial_steps_per_s"] /
                                                      without["steady_trial_steps_per_s"], 3)
        return {"status": record["status"], **figures, "search": record}

    return unit(check, "mps", work)


def phase_shared_reference(check: Check) -> dict:
    """search.share_reference true (the packing search at 1 per GPU: the GPU spec's own setting) vs false, the same
    search otherwise."""
    shared = check.figures["phases"].get("packing", {}).get("settings", {}).get("1", {}).get("search")
    if not shared or shared.get("status") != "ok":
        return {"status": "skipped: the shared-reference half (packing at 1 per GPU) did not run: "
                          f"{(shared or {}).get('status', 'not run')}"}
    record = unit(check, "shared_reference", lambda limit: search(
        check, "reference-per-trial", "dpo_gpu.yaml", [*overrides(check, 1), "search.share_reference=false"], limit),
        reason_if_not=None if check.model else "no model (phase 1 failed)")
    own = record.get("trial_s")
    mine = shared.get("trial_s")
    return {"status": record["status"], "wall_s": record.get("wall_s"),
            "shared": {"trial_s": mine, "wall_s": shared.get("wall_s"), "reference": shared.get("reference"),
                       "search": "phases.packing.settings.1.search (search.share_reference as the spec sets it: true)"},
            "per_trial": {"trial_s": own, "wall_s": record.get("wall_s"), "reference": record.get("reference"),
                          "search": record},
            "trial_time_saved": round(1 - mine / own, 4) if own and mine else None,
            "wall_saved": round(1 - shared["wall_s"] / record["wall_s"], 4)
            if record.get("wall_s") and shared.get("wall_s") else None}


def phase_export(check: Check) -> dict:
    phases = check.figures["phases"]
    candidates = [("phases.searches.dpo", phases.get("searches", {}).get("dpo", {})),
                  ("phases.packing.settings.1.search",
                   phases.get("packing", {}).get("settings", {}).get("1", {}).get("search", {}))]
    source = next(((where, r) for where, r in candidates
                   if r.get("status") == "ok" and any(t.get("eval_metrics") for t in r.get("trials", []))), None)
    if source is None:
        return {"status": "skipped: no DPO search finished with a scored trial"}
    where, record = source

    def work(limit: float) -> dict:
        begun = time.perf_counter()
        out = check.work / "export" / "dpo-winner"
        log = check.logs / "export.log"
        ran = check.run([sys.executable, "-m", "tuner.export", record["experiment"], "--out", str(out)], log, limit)
        result = {"experiment": where, "command": f"python -m tuner.export {record['experiment']} --out {out}",
                  "log": check.rel(log), "export_s": ran.wall_s}
        if ran.rc != 0:
            return {"status": failure(ran, log), **result}
        trial = json.loads((out / "trial.json").read_text())
        result.update(trial_id=trial["trial_id"], step=trial["step"], metric=trial["metric"],
                      score=trial["metrics"].get(trial["metric"]), files=sorted(p.name for p in out.iterdir()))
        script = check.work / "load_adapter.py"
        script.write_text(LOAD_ADAPTER)
        attempts = []
        for label, env in load_environments(check):
            left = limit - (time.perf_counter() - begun)
            if left < 15:
                attempts.append({"environment": label, "status": "skipped: no time left"})
                break
            answer = check.work / f"load-{len(attempts)}.json"
            log = check.logs / f"export.load-{len(attempts)}.log"
            ran = check.run([sys.executable, str(script), str(check.model), str(out), str(answer)], log, left, env)
            attempt = {"environment": label, "log": check.rel(log), "wall_s": ran.wall_s}
            if ran.rc == 0 and answer.is_file():
                attempt.update(status="ok", **json.loads(answer.read_text()))
                attempts.append(attempt)
                break
            attempt["status"] = failure(ran, log)
            attempts.append(attempt)
        loaded = next((a for a in attempts if a["status"] == "ok"), None)
        result["load"] = attempts
        result["loaded_and_generated"] = bool(loaded and loaded["generated_tokens"] > 0)
        result["text"] = loaded["text"] if loaded else None
        status = "ok" if result["loaded_and_generated"] else f"failed: {attempts[-1]['status'] if attempts else '?'}"
        return {"status": status, **result}

    return unit(check, "export", work)


def load_environments(check: Check):
    """The environment this check runs in; then, when torchao sits on PYTHONPATH (the device's site carries it for
    unsloth, and peft 0.18.1's plain LoRA dispatch breaks on it: ../shared/device/README.md), the same without it,
    as a user of plain transformers + PEFT would have it."""
    yield "as installed", None
    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    with_torchao = [e for e in entries if Path(e).is_dir() and any(Path(e).glob("torchao*"))]
    if not with_torchao:
        return
    farm_entries = []
    for i, entry in enumerate(entries):
        if entry not in with_torchao:
            farm_entries.append(entry)
            continue
        farm = check.work / f"site-without-torchao-{i}"
        farm.mkdir(exist_ok=True)
        for child in Path(entry).iterdir():
            if not child.name.startswith("torchao") and not (farm / child.name).exists():
                (farm / child.name).symlink_to(child)
        farm_entries.append(str(farm))
    yield "without torchao (its PYTHONPATH entries minus torchao*)", {**os.environ,
                                                                      "PYTHONPATH": os.pathsep.join(farm_entries)}


# ---------------------------------------------------------------------------------------------- targets and table


def targets(check: Check) -> dict:
    phases = check.figures["phases"]
    out = {}
    searches = phases.get("searches", {})
    rows = {m: searches.get(m, {}).get("trials") for m in ("dpo", "orpo")}
    value = {m: {"trials": len(t), "with_eval_metrics": sum(r["eval_metrics"] for r in t),
                 "backends": sorted({r["backend"] for r in t})} for m, t in rows.items() if t} or None
    passed = [r["eval_metrics"] and r["backend"] == "unsloth" for t in rows.values() if t for r in t]
    met = False if not all(passed) else (True if all(rows.values()) else None)
    out["eval_on_unsloth"] = {"value": value, "target": TARGETS["eval_on_unsloth"], "met": met}
    settings = phases.get("packing", {}).get("settings", {})
    ratio = settings.get("4", {}).get("ratio_to_1")
    out["throughput_4_per_gpu"] = {"value": ratio, "target": TARGETS["throughput_4_per_gpu"],
                                   "met": None if ratio is None else ratio >= 3.3}
    if ratio is None and settings.get("2", {}).get("ratio_to_1") is not None:
        out["throughput_4_per_gpu"]["measured_instead"] = {"per_gpu": 2, "ratio_to_1": settings["2"]["ratio_to_1"]}
    warm = phases.get("packing", {}).get("fixed_cost_warm_s")
    out["warm_fixed_cost_s"] = {"value": warm, "target": TARGETS["warm_fixed_cost_s"],
                                "met": None if warm is None else warm <= 15}
    saved = phases.get("shared_reference", {}).get("trial_time_saved")
    out["shared_reference_saving"] = {"value": saved, "target": TARGETS["shared_reference_saving"],
                                      "met": None if saved is None else saved >= 0.25}
    export = phases.get("export", {})
    loaded = export.get("loaded_and_generated")
    out["export_loads_with_peft"] = {"value": None if loaded is None else {
        "loaded_and_generated": loaded, "environment": next((a["environment"] for a in export.get("load", [])
                                                             if a["status"] == "ok"), None),
        "text": export.get("text")}, "target": TARGETS["export_loads_with_peft"], "met": loaded}
    return out


def table(check: Check) -> None:
    phases = check.figures["phases"]
    print(f"\n{'phase':<28} {'wall s':>7}  status")
    rows = [("1 build_model", phases.get("build_model", {})),
            ("2 searches: dpo", phases.get("searches", {}).get("dpo", {})),
            ("2 searches: orpo", phases.get("searches", {}).get("orpo", {})),
            *[(f"3 packing: {n} per GPU", s) for n, s in phases.get("packing", {}).get("settings", {}).items()],
            ("4 mps", phases.get("mps", {})), ("5 shared_reference", phases.get("shared_reference", {})),
            ("6 export", phases.get("export", {}))]
    for label, row in rows:
        wall = row.get("wall_s")
        print(f"{label:<28} {wall if wall is not None else '-':>7}  {str(row.get('status', 'not run'))[:110]}")
    settings = phases.get("packing", {}).get("settings", {})
    if settings:
        print(f"\n{'trials/GPU':>10} {'steady steps/s':>15} {'wall steps/s':>13} {'wall s':>7} {'fixed s/trial':>14} "
              f"{'peak GiB/trial':>15} {'ratio to 1':>10}")
        for n, s in settings.items():
            print(f"{n:>10} {fmt(s.get('steady_trial_steps_per_s')):>15} {fmt(s.get('trial_steps_per_s')):>13} "
                  f"{fmt(s.get('wall_s'), 1):>7} {fmt(s.get('fixed_cost_s'), 1):>14} "
                  f"{fmt(s.get('peak_gib_per_trial'), 2):>15} {fmt(s.get('ratio_to_1'), 2):>10}")
    print("\ntargets:")
    for name, t in check.figures.get("targets", {}).items():
        print(f"  {name:<26} met={str(t['met']):<5} value={json.dumps(t['value'], default=str)[:100]}  "
              f"(target: {t['target']})")


def fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--out", type=Path, help="folder for gpu_check.json and logs/ (default: $OUT, else a new "
                                                 "temporary folder)")
    parser.add_argument("--tokenizer", help="a folder with the tokenizer files (default: the embedded model's)")
    parser.add_argument("--budget-s", type=float, help="wall-time budget of the whole check (default: 540; 1200 with "
                                                       "--dry-run)")
    parser.add_argument("--work", type=Path, help="folder for the model, the results and the export (default: a new "
                                                  "temporary folder)")
    parser.add_argument("--dry-run", action="store_true", help="CPU: tiny model, hf backend, 1 and 2 at a time")
    args = parser.parse_args()
    where = machine()
    print(where, flush=True)
    out = (args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
           or Path(tempfile.mkdtemp(prefix="gpu-check-out-"))).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    work = (args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    import torch

    tokenizer = str(Path(args.tokenizer).resolve()) if args.tokenizer else None
    check = Check(out=out, work=work, dry_run=args.dry_run, tokenizer=tokenizer,
                  budget_s=args.budget_s or (1200 if args.dry_run else 540),
                  gpu=torch.cuda.is_available() and not args.dry_run)
    # Every search of the check shares one pass cache and one set of Inductor/Triton compile caches (tuner.trial.
    # device sets these only when unset): trials after the first search's are warm. Unsloth's own compile folder
    # stays per trial (a shared one races).
    os.environ["TUNER_CACHE"] = str(work / "tuner-cache")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "compile-cache" / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(work / "compile-cache" / "triton")
    check.figures = {"machine": where, "mode": "dry-run" if args.dry_run else "device",
                     "budget_s": check.budget_s, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "out": str(out), "work": str(work), "versions": versions(),
                     "settings": {"search": DRY_SEARCH if args.dry_run else DEVICE_SEARCH,
                                  "budgets_s": {k: {"budget": b, "least": m} for k, (b, m) in
                                                (DRY_BUDGETS if args.dry_run else DEVICE_BUDGETS).items()},
                                  "kept_for_targets": list(KEPT),
                                  "compile_caches": "TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR shared by every "
                                                    "search of the check; UNSLOTH_COMPILE_LOCATION per trial",
                                  "pass_cache": os.environ["TUNER_CACHE"]},
                     "phases": {}}

    def stop(signum, frame):
        if check.child is not None:
            kill_group(check.child.pid)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    phases = check.figures["phases"]
    try:
        for name, phase in (("build_model", lambda: unit(check, "build_model", lambda limit: build(check, limit))),
                            ("searches", lambda: phase_searches(check)),
                            ("packing", lambda: phase_packing(check)),
                            ("mps", lambda: phase_mps(check)),
                            ("shared_reference", lambda: phase_shared_reference(check)),
                            ("export", lambda: phase_export(check))):
            print(f"[{time.monotonic() - check.started:6.0f} s] {name} ...", flush=True)
            try:
                phases[name] = phase()
            except Exception as error:
                trace = check.logs / f"{name}.error.txt"
                trace.write_text(traceback.format_exc())
                phases[name] = {"status": f"failed: {type(error).__name__}: {error}", "traceback": check.rel(trace)}
            print(f"[{time.monotonic() - check.started:6.0f} s] {name}: {str(phases[name].get('status'))[:150]}",
                  flush=True)
            check.save()
    finally:
        for name in ("build_model", "searches", "packing", "mps", "shared_reference", "export"):
            phases.setdefault(name, {"status": "not run: the check was stopped before it"})
        check.figures["targets"] = targets(check)
        check.save()
    table(check)
    print(f"\nfigures: {out / 'gpu_check.json'}\nlogs: {out / 'logs'}\nwork: {work}")


if __name__ == "__main__":
    main()
