"""The benchmarks' cheap dry runs (a tiny model, seconds of work each), run the way README writes the commands
(`python benchmarks/NAME.py`): they must keep working, and print the machine and the figures they exist for.
Timings are never asserted; what is asserted is that the figures are there and consistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def dry_run(name: str, out, *extra: str) -> str:
    """Run as README writes it: a script path, not -m."""
    done = subprocess.run([sys.executable, f"benchmarks/{name}.py", "--dry-run", "--out", str(out), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.startswith("machine: "), done.stdout[:200]
    return done.stdout


def test_gpu_packing_dry_run_prints_the_table(tmp_path, embedded_model):
    out = tmp_path / "packing.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_packing", "--dry-run", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "trials/GPU" in done.stdout and "ratio to 1" in done.stdout
    results = json.loads(out.read_text())
    assert set(results) == {"1", "2"}
    for row in results.values():
        assert row["trial_steps_per_s"] > 0 and row["wall_s"] > 0


def test_gpu_check_dry_run_writes_every_phase(tmp_path, embedded_model):
    out = tmp_path / "out"
    stdout = dry_run("gpu_check", out)
    figures = json.loads((out / "gpu_check.json").read_text())
    phases = figures["phases"]
    assert figures["mode"] == "dry-run" and "targets:" in stdout and "ratio to 1" in stdout
    # every phase ran and has its figures; MPS needs a GPU
    assert {name: phases[name]["status"] for name in phases if name != "mps"} == dict.fromkeys(
        ["build_model", "searches", "packing", "shared_reference", "export"], "ok")
    assert phases["mps"]["status"] == "unavailable: no GPU"
    assert phases["build_model"]["parameters"] > 0 and (out / phases["build_model"]["log"]).is_file()
    for method in ("dpo", "orpo"):
        search = phases["searches"][method]
        assert search["rc"] == 0 and len(search["trials"]) == 2 and (out / search["log"]).is_file()
        for trial in search["trials"]:
            assert trial["eval_metrics"] and trial["backend"] == "hf" and (out / trial["log"]).is_file()
        # as each trial reported it: DPO's trained on the reference computed once for the search
        assert {trial["reference"] for trial in search["trials"]} == {"shared" if method == "dpo" else "own"}
    # ORPO's search keeps a test split: the base model and the winner (at least) scored on it, with the trials'
    # runtime; the DPO search has none
    scored = phases["searches"]["orpo"]["test_scored"]
    assert sum(key.startswith("base:") for key in scored) == 1 and len(scored) >= 2
    assert phases["searches"]["dpo"]["test_scored"] == []
    packing = phases["packing"]["settings"]
    assert set(packing) == {"1", "2"} and "reused_from" in packing["2"]  # 2 at a time: the DPO search above
    for row in packing.values():
        assert row["trial_steps_per_s"] > 0 and row["steady_trial_steps_per_s"] > 0 and row["fixed_cost_s"] > 0
    assert packing["1"]["ratio_to_1"] == 1 and packing["2"]["ratio_to_1"] > 0
    assert phases["packing"]["fixed_cost_cold_s"] > 0 and phases["packing"]["fixed_cost_warm_s"] > 0
    reference = phases["shared_reference"]
    assert reference["shared"]["reference"].startswith("reference log-probs: ")
    assert "share_reference is off" in reference["per_trial"]["reference"]
    assert reference["shared"]["trial_s"] > 0 and reference["per_trial"]["trial_s"] > 0
    assert reference["trial_time_saved"] == pytest.approx(
        1 - reference["shared"]["trial_s"] / reference["per_trial"]["trial_s"], abs=1e-3)
    export = phases["export"]
    assert export["loaded_and_generated"] and export["load"][0]["environment"] == "as installed"
    assert export["load"][0]["generated_tokens"] == 16 and export["load"][0]["lora_b_nonzero"]
    targets = figures["targets"]
    assert set(targets) == {"eval_on_unsloth", "throughput_4_per_gpu", "warm_fixed_cost_s",
                            "shared_reference_saving", "export_loads_with_peft"}
    assert all(set(t) >= {"value", "target", "met"} for t in targets.values())
    assert targets["eval_on_unsloth"]["met"] is False  # the dry run trains on the hf backend
    assert targets["throughput_4_per_gpu"]["met"] is None  # 4 per GPU is not run on a CPU
    assert targets["export_loads_with_peft"]["met"] is True


def test_eval_round_dry_run_compares_today_with_the_one_pass(tmp_path, embedded_model):
    stdout = dry_run("eval_round", tmp_path / "eval.json")
    figures = json.loads((tmp_path / "eval.json").read_text())
    assert "x today" in stdout and "bf16 autocast" in stdout
    assert figures["largest_difference"] <= 1e-4  # the one pass computes today's metrics
    assert figures["speedup"] == pytest.approx(figures["median_s"]["today"] / figures["median_s"]["one pass"])


def test_default_search_dry_run_prints_where_the_time_went(tmp_path, embedded_model):
    stdout = dry_run("default_search", tmp_path / "default.json")
    breakdown = json.loads((tmp_path / "default.json").read_text())
    assert "driver fixed cost" in stdout and "target" in stdout
    phases = [k for k in breakdown if not k.startswith("trials") and k != "wall"]
    trials_wall = breakdown["trials, first start to last report (wall)"]
    # The driver's time, the reference pass, the trials and the end add up to the wall time.
    assert sum(breakdown[k] for k in phases) + trials_wall == pytest.approx(breakdown["wall"], abs=2)
    assert all(v >= -1 for v in breakdown.values()) and breakdown["trials: eval, trial-seconds"] > 0


def test_vs_loop_dry_run_runs_the_search_and_its_loop(tmp_path, embedded_model):
    stdout = dry_run("vs_loop", tmp_path / "loop.json")
    figures = json.loads((tmp_path / "loop.json").read_text())
    assert "time to signal" in stdout and "winner on eval_pref_accuracy" in stdout
    assert figures["configurations"] == 2 and figures["tuner_winner"]
    assert 0 < figures["tuner_signal_s"] <= figures["tuner_wall_s"]
    assert 0 < figures["loop_signal_s"] <= figures["loop_wall_s"]


def test_harness_and_shared_reference_dry_runs(tmp_path, embedded_model):
    dry_run("harness_overhead", tmp_path / "harness.json")
    harness = json.loads((tmp_path / "harness.json").read_text())
    assert harness["ratio"] == pytest.approx(harness["tuner_s"] / harness["bare_s"])
    dry_run("shared_reference", tmp_path / "reference.json")
    reference = json.loads((tmp_path / "reference.json").read_text())
    assert reference["shared_trial_s"] > 0 and reference["own_trial_s"] > 0


def test_sensitivity_dry_run_maps_the_grid_on_the_test_split(tmp_path, embedded_model):
    stdout = dry_run("sensitivity", tmp_path / "grid.json")
    rows = json.loads((tmp_path / "grid.json").read_text())
    assert "test split accuracy per group" in stdout and "base model" in stdout
    assert len(rows) == 2 and {row["learning_rate"] for row in rows} == {1.0e-4, 3.0e-4}
    for row in rows:
        assert set(row["guards"]) == {"wrong_fact", "style_matched"}  # dpo.yaml's, checked on the test split
        assert row["difference"][1] <= row["difference"][0] <= row["difference"][2]
        assert all(low <= value <= high for value, low, high, _ in row["groups"].values())


def test_search_quality_dry_run_puts_every_arm_against_the_oracle(tmp_path, embedded_model):
    stdout = dry_run("search_quality", tmp_path / "quality.json")
    (figures,) = json.loads((tmp_path / "quality.json").read_text())
    runs = {run["arm"]: run for run in figures["runs"]}
    assert set(runs) == {"oracle", "default", "random", "hand-picked", "trl-defaults"}
    assert len(figures["oracle_cells"]) == 4 and figures["oracle_best"] == max(figures["oracle_cells"])
    assert len(figures["noise_floor"]) == 2  # the oracle's best cell on 2 training seeds
    for run in figures["runs"]:
        value, low, high = run["accuracy"]
        assert low <= value <= high and run["trial_steps"] > 0 and run["wall_s"] > 0
        assert run["regret"] == pytest.approx(100 * (figures["oracle_best"] - value))
        assert 0 <= run["percentile"] <= 100
    assert runs["oracle"]["trial_steps"] == 4 * 4  # 4 cells of train.max_steps=4, none stopped early
    assert runs["hand-picked"]["config"] == {"train.beta": 0.1, "train.learning_rate": 5.0e-6}
    from trl import DPOConfig

    assert runs["trl-defaults"]["config"] == {"train.beta": DPOConfig.beta, "train.learning_rate": DPOConfig.learning_rate}
    assert [t["target"].split(" (")[0] for t in figures["targets"]][1:] == [
        "default ahead of random search by median over seeds", "default ahead of hand-picked",
        "default ahead of trl-defaults"]
    assert "regret = oracle's best" in stdout and "noise floor: the oracle's best cell on 2 training seeds" in stdout
    assert "targets:" in stdout


def test_large_data_dry_run_prints_first_trial_memory_and_object_store(tmp_path, embedded_model):
    stdout = dry_run("large_data", tmp_path / "large.json")
    figures = json.loads((tmp_path / "large.json").read_text())
    assert "first trial" in stdout and "driver peak memory" in stdout and "Ray's object store" in stdout
    assert "data read: conversations, prompt taken from chosen/rejected" in stdout
    assert 0 < figures["first_trial_s"] < figures["wall_s"] and figures["driver_peak_gb"] > 0
    # only the pairs trials consume go to the object store, not the whole set
    store = figures["object_store"]
    from tuner.spec import load_spec

    spec = load_spec(REPO / "search_spaces" / "dpo.yaml")  # what the benchmark's search runs, with 2 steps
    assert store["train pairs"] == 2 * spec.train_batch() and figures["pairs"] == 600
    assert 0 < store["eval pairs"] <= spec.data.max_eval_rows


def test_model_passes_dry_run_compares_today_first_and_second_search(tmp_path, embedded_model):
    stdout = dry_run("model_passes", tmp_path / "passes.json")
    figures = json.loads((tmp_path / "passes.json").read_text())
    assert "end of the first search:" in stdout and "second search: first trial" in stdout
    assert [figures[name]["reused"] for name in ("today", "first", "second")] == [False, False, True]
    for name in ("today", "first", "second"):
        row = figures[name]
        assert 0 < row["first_trial"] < row["wall"] and row["end_share"] == pytest.approx(row["end"] / row["wall"])
    assert figures["first_trial_speedup"] == pytest.approx(figures["first"]["first_trial"] /
                                                           figures["second"]["first_trial"])


@pytest.mark.parametrize("name", ["eval_round", "default_search", "vs_loop", "harness_overhead",
                                  "shared_reference", "gpu_packing", "sensitivity", "large_data", "model_passes",
                                  "gpu_check"])
def test_every_benchmark_answers_help_as_a_script(name):
    # Nothing of the repo on PYTHONPATH: `benchmarks` is found only because the script puts the repo root first.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, f"benchmarks/{name}.py", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0 and "--dry-run" in done.stdout, done.stderr[-2000:]


def test_startup_dry_run_times_help_and_the_dry_run_side_by_side(tmp_path):
    stdout = dry_run("startup", tmp_path / "startup.json", "--against", str(REPO))
    figures = json.loads((tmp_path / "startup.json").read_text())
    assert "tuner --help" in stdout and "--dry-run" in stdout
    assert set(figures) == {"this checkout", str(REPO)}
    assert all(seconds > 0 for row in figures.values() for seconds in row.values())
