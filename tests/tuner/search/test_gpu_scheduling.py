"""Four trials packed on one GPU, proven on a CPU: Ray accepts a declared GPU on a machine without one, so a real
Tune search of tuner's real trainable (wrapped by tuner.search exactly as a run wraps it) is scheduled at
`resources.gpu: 0.25`. Only the model and the training step are stubbed, inside the trial processes
(tests/tuner/search/gpu_stub.py), and torch.cuda is made to say a GPU is there so that tuner.trial.device takes its GPU branch.
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import REPO, spec_path
from tests.tuner.search import gpu_stub
from tuner.experiment import checks
from tuner.search import build
from tuner.data import loading as data
from tuner.trial import device
from tuner.experiment.folder import Experiment
from tuner.spec import load_spec

pytestmark = pytest.mark.integration

SHARE = 0.25
TRIALS = 4  # 1 / SHARE: every slot on the one GPU busy at once


@pytest.fixture(scope="module")
def ray_with_one_declared_gpu():
    import ray

    saved_address = os.environ.pop("RAY_ADDRESS", None)  # a local Ray of our own, never a cluster someone runs
    # 4 CPUs declared whatever the machine has, so that only the GPU share limits how many trials run at once
    # (and Ray starts the 4 trial processes together: it starts at most num_cpus workers at a time).
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False,
             # the hook is imported before Ray puts the driver's paths on the worker's: the repository goes first
             runtime_env={"worker_process_setup_hook": "tests.tuner.search.gpu_stub.install",
                          "env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                                   os.environ.get("PYTHONPATH")]))}})
    try:
        yield
    finally:
        ray.shutdown()
        if saved_address is not None:
            os.environ["RAY_ADDRESS"] = saved_address


def run_packed_search(tmp_path, tiny_llama, name: str, seeds: list[int]):
    """A grid over train.seed (one trial per seed), 4 at a time at 0.25 GPU each; returns the loaded experiment."""
    spec = load_spec(spec_path("dpo_gpu.yaml"), [
        f"model.name={tiny_llama}", "model.backend=hf", "model.max_length=64",
        "data.max_rows=8", "data.max_eval_rows=4",
        "search.algorithm=grid", "search.num_samples=1", f"search.max_concurrent_trials={TRIALS}",
        f"search.space={{train.seed: {{type: grid, values: {seeds}}}}}",
        "scheduler.type=none", f"resources.gpu={SHARE}", "resources.cpu=1",
        f"run.storage_path={tmp_path}",
    ])
    experiment = Experiment.create(spec, checks.check_storage(str(tmp_path), name))
    splits = data.load_pairs(spec.data)  # what the driver prepares; the stubbed step never reads a model
    train, held_out = splits.train, splits.eval
    train.save_to_disk(str(experiment.data_dir / "train"))
    held_out.save_to_disk(str(experiment.data_dir / "eval"))
    build.build_tuner(spec, experiment, train_rows=len(train)).fit()
    return Experiment.open(experiment.path)


def records_by_trial(experiment) -> dict[str, list[dict]]:
    return {trial_id: gpu_stub.read_records(path)
            for trial_id, path in zip(experiment.trials["trial_id"], experiment.trials["path"])}


def only(records: list[dict], event: str) -> list[dict]:
    return [r for r in records if r["event"] == event]


def test_four_trials_share_one_gpu_at_once_each_capped_at_its_share(ray_with_one_declared_gpu, tiny_llama,
                                                                     tmp_path):
    experiment = run_packed_search(tmp_path, tiny_llama, "packed", seeds=[1, 2, 3, 4])

    assert len(experiment.trials) == TRIALS
    assert set(experiment.trials["status"]) == {"finished"}, experiment.trials[["trial_id", "status", "error"]]
    records = records_by_trial(experiment)
    starts = {t: only(r, "train_start")[0] for t, r in records.items()}
    ends = {t: only(r, "train_end")[0]["time"] for t, r in records.items()}
    # Overlap: some instant lies inside all four training steps.
    assert max(s["time"] for s in starts.values()) < min(ends.values()), (starts, ends)
    assert len({s["pid"] for s in starts.values()}) == TRIALS  # four trial processes, not one reused in turn
    # Ray gives fractional-GPU trials the same device.
    visible = {s["cuda_visible_devices"] for s in starts.values()}
    assert len(visible) == 1 and visible.pop() not in (None, ""), starts
    for trial_id, trial_records in records.items():
        caps = [r["fraction"] for r in only(trial_records, "memory_fraction")]
        assert caps == [pytest.approx(SHARE * device.MEMORY_HEADROOM)], (trial_id, caps)
        assert starts[trial_id]["on_gpu"] is True
    # Compile caches: unsloth's per trial (a shared one races), Inductor's and Triton's shared per experiment.
    assert len({s["UNSLOTH_COMPILE_LOCATION"] for s in starts.values()}) == TRIALS
    for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        assert len({s[key] for s in starts.values()}) == 1, key


def test_a_trial_out_of_cuda_memory_ends_errored_and_the_other_three_finish(ray_with_one_declared_gpu, tiny_llama,
                                                                            tmp_path):
    experiment = run_packed_search(tmp_path, tiny_llama, "oom", seeds=[1, gpu_stub.OOM_SEED, 3, 4])

    status = dict(zip(experiment.trials["config/train.seed"], experiment.trials["status"]))
    assert status == {1: "finished", gpu_stub.OOM_SEED: "errored", 3: "finished", 4: "finished"}
    errored = experiment.trials.set_index("config/train.seed").loc[gpu_stub.OOM_SEED]
    expected = device.out_of_memory_message(SHARE, RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB "
                                                                "(stub)"))
    assert errored["error"].endswith(expected), errored["error"]
    finished = experiment.trials[experiment.trials["status"] == "finished"]
    assert (finished["reports"] == 1).all()
