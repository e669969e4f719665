"""Real searches through the CLI: Ray Tune + Optuna + ASHA trials training LoRA adapters on a tiny local Llama."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tuner.experiment.folder import Experiment
from tuner.experiment.ranking import rank_trials
from tests.conftest import REPO, spec_path

pytestmark = pytest.mark.integration

FAST = ["search.num_samples=3", "train.max_steps=4", "train.eval_steps=2", "train.per_device_train_batch_size=2",
        "data.max_rows=16", "data.max_eval_rows=4", "model.max_length=64"]


def run_cli(spec: str, tiny_llama: Path, storage: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tuner.run", str(spec_path(spec)), f"model.name={tiny_llama}",
               f"run.storage_path={storage}", "--name", name, *FAST, *extra]
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


@pytest.fixture(scope="module")
def dpo_run(tiny_llama, tmp_path_factory):
    storage = tmp_path_factory.mktemp("results")
    return run_cli("dpo.yaml", tiny_llama, storage, "dpo-it"), storage / "dpo-it"


def test_dpo_search_reports_trl_metrics_with_adapter_checkpoints(dpo_run):
    done, path = dpo_run
    experiment = Experiment.open(path)
    assert len(experiment.trials) == 3
    assert set(experiment.trials["status"]) <= {"finished", "stopped early"}
    for metric in ("eval_rewards/margins", "eval_rewards/accuracies", "eval_loss", "loss", "rewards/margins",
                   "rewards/chosen", "learning_rate", "eval_pref_accuracy"):
        assert experiment.history[metric].notna().all(), metric
    assert set(experiment.history["step"]) <= {2, 4}
    for trial_dir in experiment.trials["path"]:
        checkpoints = sorted(Path(trial_dir).glob("checkpoint_*"))
        assert checkpoints, trial_dir
        files = {p.name for p in checkpoints[-1].iterdir()}
        assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tuner_spec.yaml",
                "pair_outcomes.json"} <= files


def report_times(history):
    """Each report's wall-clock time: the start of the trial process that made it (`setup/started_at`, reported
    with the first result after each set-up) plus that process's share of Tune's time_total_s."""
    times = []
    for _, rows in history.sort_values("training_iteration").groupby("trial_id"):
        started, base, previous_total = None, 0.0, 0.0
        for _, row in rows.iterrows():
            if row["setup/started_at"] == row["setup/started_at"]:  # a new set-up: started, or resumed
                started, base = row["setup/started_at"], previous_total
            times.append((row["trial_id"], row["training_iteration"], started + row["time_total_s"] - base))
            previous_total = row["time_total_s"]
    return times


def test_the_first_trial_at_the_first_rung_waits_for_the_third_configuration(dpo_run):
    """Three configurations, two at a time. The first trial to reach the first rung pauses there, and the third
    configuration takes its place (plain ASHA would run it through first). It then resumes from the checkpoint it
    reported there (steps go on, none repeated), or ends there below the rung's cutoff."""
    _, path = dpo_run
    history = Experiment.open(path).history
    times = report_times(history)
    first_at_rung = min((time, trial_id) for trial_id, iteration, time in times if iteration == 1)[1]
    first_starts = history.dropna(subset=["setup/started_at"]).groupby("trial_id")["setup/started_at"].min()
    assert len(first_starts) == 3
    rows = history[history["trial_id"] == first_at_rung].sort_values("training_iteration")
    set_ups = rows["setup/started_at"].notna().sum()
    assert (set_ups, len(rows)) in {(2, 2), (1, 1)}  # resumed, or ended where it paused
    assert all(time > max(first_starts) for trial_id, iteration, time in times
               if trial_id == first_at_rung and iteration >= 2)
    for _, trial in history.sort_values("training_iteration").groupby("trial_id"):
        assert list(trial["training_iteration"]) == list(range(1, len(trial) + 1))
        assert list(trial["step"]) == [2, 4][:len(trial)]


def test_every_checkpoint_holds_the_per_pair_outcomes_of_its_eval(dpo_run):
    _, path = dpo_run
    experiment = Experiment.open(path)
    assert experiment.history["eval_drift"].notna().all()
    from datasets import load_from_disk

    held_out = load_from_disk(str(experiment.data_dir / "eval"))
    eval_ids = list(held_out["pair_id"])  # the data's own pair ids
    assert len(eval_ids) == 4
    # eval_pref_accuracy and its outcomes cover the pairs outside dpo.yaml's guard groups; every group is reported
    guards = set(experiment.spec.search.guard_groups)
    searched = [pair for pair, group in zip(eval_ids, held_out["group"]) if group not in guards]
    assert searched and guards
    for group in set(held_out["group"]):
        assert experiment.history[f"eval_pref_accuracy/{group}"].notna().all()
    if guards & set(held_out["group"]):
        assert experiment.history["eval_guard_broken"].notna().all()
    kept = experiment.history.dropna(subset=["checkpoint_path"])
    assert len(kept) >= 3
    for _, report in kept.iterrows():
        outcomes = json.loads((Path(report["checkpoint_path"]) / "pair_outcomes.json").read_text())
        assert outcomes["pairs"] == searched
        assert sum(outcomes["correct"]) / len(searched) == pytest.approx(report["eval_pref_accuracy"])
    base = json.loads(experiment.base_outcomes_file.read_text())
    assert base["pairs"] == searched
    assert sum(base["correct"]) / len(searched) == pytest.approx(experiment.base["eval_pref_accuracy"])


def test_dpo_search_samples_from_the_space_and_stores_the_optuna_study(dpo_run):
    _, path = dpo_run
    experiment = Experiment.open(path)
    betas = experiment.trials["config/train.beta"]
    assert betas.between(0.05, 0.5).all() and betas.nunique() == 3
    assert set(experiment.trials["config/lora.r"]) <= {4, 8, 16}
    study = optuna.load_study(study_name="dpo-it", storage=f"sqlite:///{path / 'tuner' / 'optuna.db'}")
    assert len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_dpo_search_prints_dashboard_ranking_and_best_checkpoint(dpo_run):
    done, path = dpo_run
    assert "Ray dashboard: http://127.0.0.1:" in done.stdout
    assert "data: 16 train pairs (8 used: train.max_steps x batch), 4 eval pairs" in done.stdout
    assert "reference log-probs: computed once for 8 train and 4 eval pairs" in done.stdout
    assert "base model: eval_pref_accuracy = " in done.stdout
    assert "Top trials by eval_pref_accuracy (max):" in done.stdout  # dpo.yaml's search metric
    experiment = Experiment.open(path)
    ranked = rank_trials(experiment.trials, experiment.history, "eval_pref_accuracy", "max")
    best_id = ranked.iloc[0]["trial_id"]
    assert f"best trial {best_id}" in done.stdout
    assert f"best checkpoint (LoRA adapter + tokenizer): {path}" in done.stdout


def test_console_is_short_and_ends_with_the_answer(dpo_run):
    done, path = dpo_run
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) < 80, "\n".join(lines)
    stdout = done.stdout.splitlines()
    end = stdout.index(f"export: python -m tuner.export {path} --out DIR")  # then the test split, last
    tail = stdout[end - 5 : end + 1]
    assert tail[0].startswith("best trial ")
    assert "tied with the leader" in tail[1] or "overlaps the leader's" in tail[1]
    assert tail[2].startswith("best checkpoint (LoRA adapter + tokenizer): ")
    assert tail[3:] == [f"results: {path}", f"report: python -m analysis {path}",
                        f"export: python -m tuner.export {path} --out DIR"]
    for noise in ("Saving the dataset", "Tokenizing", "examples/s", "INFO", "WARNING", "{'loss'", "Trial status"):
        assert noise not in done.stdout + done.stderr, noise
    logs = list(path.glob("run_trial_*/trial.log"))
    assert len(logs) == 3 and all(log.stat().st_size > 0 for log in logs)


def test_cli_ends_with_the_test_split_headline(dpo_run):
    import json

    done, path = dpo_run
    headline, advice = ending_lines(done.stdout)
    assert headline[0].startswith("Test split: ") and "pairs on 24 prompts" in headline[0]
    assert headline[1].startswith("  searched on the ") and "(wrong_fact, style_matched)" in headline[1]
    assert headline[2].startswith("  winner ") and "preference accuracy" in headline[2]
    assert headline[3].startswith("  base model: preference accuracy ")
    assert headline[4].startswith("  difference: ") and "paired bootstrap over 24 prompts" in headline[4]
    assert [line.split(":")[0] for line in headline[5:7]] == ["  guard wrong_fact", "  guard style_matched"]
    assert headline[-1].startswith("  verdict: the winner is ")
    # a tiny random model finds nothing: the last lines say so, and what to change
    if "better than the base model" not in headline[-1] or "WORSE on guard" in headline[-1]:
        assert advice[0].startswith("the search found nothing better than the base model") and len(advice) == 2
    else:
        assert advice == []
    assert "Test preference accuracy per kind" in done.stdout and "regressions: " in done.stdout
    # the winner named is the ranking's, and the three top trials and the base model were scored once
    experiment = Experiment.open(path)
    assert f"winner {experiment.best().trial_id} " in headline[2]
    scores = json.loads(experiment.test_scores_file.read_text())
    assert len(scores["models"]) == 1 + experiment.spec.search.test_top_k and len(scores["pairs"]) == 144
    from tuner.evidence import scoring

    said = []
    again = scoring.score_test_split(experiment, say=said.append)  # read back, not scored again
    assert said == [] and again.winner.trial_id == experiment.best().trial_id
    # scored in the shadow of the trials (tuner.passes.shadow), as each ended: nothing was left for the end
    from tuner.passes import tasks as model_passes

    passes = model_passes.recorded(experiment)
    assert len(passes["shadow"]) == 1 + experiment.spec.search.test_top_k and "test" not in passes
    # no test pair was seen by the search: its prompts are in neither the train nor the eval data
    from datasets import load_from_disk

    test_prompts = set(load_from_disk(str(experiment.test_dir))["prompt"])
    for split in ("train", "eval"):
        assert not test_prompts & set(load_from_disk(str(experiment.data_dir / split))["prompt"])


def test_ranking_agrees_with_ray_best_result(dpo_run):
    from ray.tune import ExperimentAnalysis, ResultGrid

    _, path = dpo_run
    experiment = Experiment.open(path)
    grid = ResultGrid(ExperimentAnalysis(str(path)))
    for scope, ray_scope in (("best", "all"), ("last", "last")):
        ranked = rank_trials(experiment.trials, experiment.history, "eval_rewards/margins", "max", scope)
        best = grid.get_best_result("eval_rewards/margins", "max", scope=ray_scope)
        assert ranked.iloc[0]["trial_id"] == best.metrics["trial_id"]


def test_orpo_search_reports_log_odds(tiny_llama, tmp_path):
    run_cli("orpo.yaml", tiny_llama, tmp_path, "orpo-it", "search.num_samples=2", "scheduler.type=none")
    experiment = Experiment.open(tmp_path / "orpo-it")
    assert list(experiment.trials["status"]) == ["finished", "finished"]
    for metric in ("eval_log_odds_ratio", "eval_log_odds_chosen", "eval_nll_loss", "log_odds_ratio", "nll_loss",
                   "loss", "eval_pref_accuracy"):
        assert experiment.history[metric].notna().all(), metric


def test_analysis_cli_writes_the_report_for_a_real_search(dpo_run, tmp_path):
    _, path = dpo_run
    done = subprocess.run([sys.executable, "-m", "analysis", str(path), "--out", str(tmp_path / "report")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "all: by eval_pref_accuracy (max, best)" in done.stdout
    assert "dpo: by eval_rewards/margins (max, best)" in done.stdout
    written = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"report.md", "report.html", "ranking_dpo.csv", "figures"} <= written
    figures = {p.name for p in (tmp_path / "report" / "figures").iterdir()}
    assert {"loss.png", "rewards_margins.png", "rewards_accuracies.png", "param_train.beta.png",
            "accuracy_vs_drift_test.png"} <= figures
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures)
    markdown = (tmp_path / "report" / "report.md").read_text()
    for section in ("## Test split: how much to trust the winner",
                    "### Test preference accuracy per group (base model and the top trials)",
                    "### Regressions: test pairs the base model gets right and the winner gets wrong",
                    "### Improvements: test pairs the base model gets wrong and the winner gets right",
                    "| kind | pairs | base model |", "| style_matched | 24 |", "Uncertainty: "):
        assert section in markdown, section
    assert "Test preference accuracy per group" in html and "verdict: the winner is" in html
    assert ending_lines(done.stdout)[0][-1].startswith("  verdict: the winner is ")


def ending_lines(stdout: str) -> tuple[list[str], list[str]]:
    """The last lines of a search or a report: the test split's headline (from `Test split:` to the verdict), and
    what follows it (what to change, when the search found nothing)."""
    lines = stdout.rstrip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("Test split: "))
    end = next(i for i, line in enumerate(lines) if i > start and line.startswith("  verdict: "))
    return lines[start:end + 1], lines[end + 1:]


def test_export_round_trip_loads_in_plain_peft_and_merges(dpo_run, tiny_llama, tmp_path):
    import json

    import torch
    from safetensors.torch import load_file

    _, path = dpo_run
    out = tmp_path / "adapter"
    done = subprocess.run([sys.executable, "-m", "tuner.export", str(path), "--out", str(out), "--merge"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    trial = json.loads((out / "trial.json").read_text())
    experiment = Experiment.open(path)
    ranked = rank_trials(experiment.trials, experiment.history, "eval_pref_accuracy", "max")
    assert trial["trial_id"] == ranked.iloc[0]["trial_id"] and trial["metric"] == "eval_pref_accuracy"
    assert trial["metrics"]["eval_pref_accuracy"] == pytest.approx(ranked.iloc[0]["best"])
    assert "PeftModel.from_pretrained" in (out / "README.md").read_text()
    exported = load_file(out / "adapter_model.safetensors")
    original = load_file(Path(trial["checkpoint"]) / "adapter_model.safetensors")
    assert exported.keys() == original.keys() and all(torch.equal(exported[k], original[k]) for k in exported)

    check = f"""
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained({str(out)!r})
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({str(tiny_llama)!r}), {str(out)!r}).eval()
merged = AutoModelForCausalLM.from_pretrained({str(out / 'merged')!r}).eval()
ids = tokenizer.apply_chat_template([{{"role": "user", "content": "hi"}}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=True)
with torch.no_grad():
    assert torch.allclose(model(**ids).logits, merged(**ids).logits, atol=1e-4)
    print("generated", model.generate(**ids, max_new_tokens=5, do_sample=False).shape[1] > ids["input_ids"].shape[1])
"""
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "generated True" in done.stdout


def test_generations_compare_base_and_best_adapter(dpo_run, tmp_path):
    from analysis import generations

    _, path = dpo_run
    adapters = generations.best_adapters(path)
    assert list(adapters) and list(adapters)[0].startswith("best DPO")
    prompts = generations.DEFAULT_PROMPTS[:2]
    columns = generations.compare(adapters, prompts, max_new_tokens=6)
    assert list(columns)[0] == "base" and all(len(answers) == 2 for answers in columns.values())
    assert generations.compare(adapters, prompts, max_new_tokens=6) == columns  # greedy: deterministic
    paths = generations.write_tables(columns, prompts, tmp_path)
    assert "| What is the first planet in the solar system? |" in paths["markdown"].read_text()


def test_generations_command_as_readme_writes_it(dpo_run):
    _, path = dpo_run
    done = subprocess.run([sys.executable, "-m", "analysis.generations", str(path)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = path / "report" / "generations.md"
    assert f"generations: {path / 'report' / 'generations.html'}" in done.stdout
    table = written.read_text()
    assert "| What is the first planet in the solar system? |" in table and "best DPO" in table


def test_compare_search_ranks_both_methods_on_the_shared_metric(tiny_llama, tmp_path):
    points = ("search.points_to_evaluate=["
              "{method: dpo, dpo.train.beta: 0.1, dpo.train.learning_rate: 1.0e-4, orpo.train.beta: 4.0,"
              " orpo.train.learning_rate: 5.0e-4},"
              " {method: orpo, dpo.train.beta: 0.1, dpo.train.learning_rate: 1.0e-4, orpo.train.beta: 4.0,"
              " orpo.train.learning_rate: 5.0e-4}]")
    done = run_cli("compare.yaml", tiny_llama, tmp_path, "cmp", "search.num_samples=2", "scheduler.type=none", points)
    assert "Top trials by eval_pref_accuracy (max):" in done.stdout
    experiment = Experiment.open(tmp_path / "cmp")
    assert sorted(experiment.trials["method"]) == ["dpo", "orpo"]
    # each method's trial ran with the values scoped to it (dpo.train.beta, orpo.train.beta)
    assert dict(zip(experiment.trials["method"], experiment.trials["beta"])) == {"dpo": 0.1, "orpo": 4.0}
    dpo = experiment.history[experiment.history["trial_id"].isin(
        experiment.trials.loc[experiment.trials["method"] == "dpo", "trial_id"])]
    assert dpo["eval_rewards/margins"].notna().all()
    done = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "cmp")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for heading in ("all: by eval_pref_accuracy (max, best)", "dpo: by eval_rewards/margins (max, best)",
                    "orpo: by eval_log_odds_ratio (max, best)"):
        assert heading in done.stdout


def test_seed_beta_grid_runs_one_trial_per_beta(tiny_llama, tmp_path):
    # its cells listed in points_to_evaluate too (to order them): each still runs once, on the spec's seed
    done = run_cli("seed_beta.yaml", tiny_llama, tmp_path, "seed-beta", "search.num_samples=1",
                   "search.points_to_evaluate=[{train.beta: 0.2}, {train.beta: 0.1}]")
    assert "Traceback" not in done.stderr and "search: grid of 2 settings, 2 trial(s)" in done.stdout
    experiment = Experiment.open(tmp_path / "seed-beta")
    assert sorted(experiment.trials["config/train.beta"]) == [0.1, 0.2]
    assert "config/train.seed" not in experiment.trials
    assert set(experiment.trials["status"]) == {"finished"}
    assert experiment.spec.train["learning_rate"] == 5e-6


def test_seed_models_compares_each_model_with_its_own_base(tiny_llama, tmp_path):
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    other = tmp_path / "other-llama"
    shutil.copytree(tiny_llama, other)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    model.save_pretrained(other)
    done = run_cli("seed_models.yaml", tiny_llama, tmp_path, "seed-models", "search.num_samples=1",
                   f"search.space.model.name.values=[{tiny_llama}, {other}]")
    assert f"base model {tiny_llama}: eval_pref_accuracy = " in done.stdout
    assert f"base model {other}: eval_pref_accuracy = " in done.stdout
    experiment = Experiment.open(tmp_path / "seed-models")
    assert len(experiment.trials) == 4 and set(experiment.trials["status"]) == {"finished"}
    ranked = experiment.ranking()
    for _, row in ranked.iterrows():
        base = experiment.base_of(row["config/model.name"])["eval_pref_accuracy"]
        assert row["pref_gain"] == pytest.approx(row["pref_accuracy_at_best"] - base)
