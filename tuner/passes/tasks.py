"""The model passes outside the trials (the reference pass, the base model's scores, the test scoring), run where
the trials run and done once across searches.

On a Ray cluster (tuner.run's driver attached with --address), each pass is a Ray task that asks for what a trial
asks (`resources.cpu`, `resources.gpu`), on whichever node has room, several at once when several fit: the driver,
a laptop or a CPU head node, loads no model. Its data goes to the task and its results come back through Ray's
object store (in memory, never paths on the driver's disk). On one machine whose Ray is the driver's own, and
without Ray (analysis and export after the search), a pass runs in this process, as before (`as_tasks` says why).
Where each pass ran, how long it took and whether it was reused is recorded in the experiment's `tuner/passes.json`.

The base model's passes are cached across searches (tuner.passes.cache): a second search on the same model, data and
tokenization reuses the reference log-probs and the base model's eval and test scores, and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from tuner.passes import cache as pass_cache

WHERE_VARIABLE = "TUNER_PASSES"  # "driver": run the passes in the driver even with Ray running (benchmarks)
REFERENCE_KIND, SCORES_KIND = "reference", "scores"
RUNTIME = "runtime"  # passes.json's key for the backends.PassRuntime every pass of the experiment uses


# ---------------------------------------------------------------------------------------------- where passes run


def ray_running() -> bool:
    """Ray is initialised in this process (tuner.run's driver)."""
    ray = sys.modules.get("ray")  # never imported here just to ask: analysis and export run without Ray
    return ray is not None and ray.is_initialized()


def as_tasks(runtime=None) -> bool:
    """Whether the passes between searches' steps run as Ray tasks: on a cluster whose nodes are not just this
    process's own (the driver may be a laptop or a CPU head node), and whenever they run on the trials' GPU share
    (`runtime`, backends.PassRuntime): the driver neither imports unsloth nor holds a CUDA context the trials'
    memory caps do not count. On one CPU machine that is the whole cluster, the driver process runs them: it is
    where the tasks would run, no trial runs meanwhile, and it saves a worker's start and imports (seconds) and runs
    on every core, where a task gets a trial's `resources.cpu` threads. `TUNER_PASSES=ray` or `=driver` decides it
    instead (benchmarks, tests)."""
    forced = os.environ.get(WHERE_VARIABLE, "").strip().lower()
    if not ray_running() or forced == "driver":
        return False
    if forced == "ray" or (runtime is not None and runtime.on_gpu):
        return True
    import ray

    nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
    return nodes != [ray.get_runtime_context().get_node_id()]


def run_all(spec, runtime, calls: list[tuple[Callable, tuple]], on_done: Callable[[int, Any], None] | None = None,
            tasks: bool | None = None) -> list[tuple[Any, dict]]:
    """Each `(function, args)` run once: as Ray tasks with a trial's resources (in parallel as they fit) when
    `tasks` (default: as_tasks(runtime)), else in this process, one after the other. Returns (result, where) per
    call in order, `where` being {"node_id": ..., "seconds": ...}; `on_done(i, result)` is called as each
    finishes."""
    results: list = [None] * len(calls)
    if not (as_tasks(runtime) if tasks is None else tasks):
        if calls:
            from tuner.trial import backends

            backends.check_available(runtime)
        for i, (function, args) in enumerate(calls):
            started = time.perf_counter()
            value = function(*args)
            results[i] = (value, {"node_id": None, "seconds": round(time.perf_counter() - started, 2)})
            if on_done:
                on_done(i, value)
        return results
    refs = [submit(spec, runtime, function, *args) for function, args in calls]
    import ray

    index = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            i = index[ready[0]]
            value, where = ray.get(ready[0])
            results[i] = (value, where)
            if on_done:
                on_done(i, value)
    except BaseException:  # an error or Ctrl-C: the other passes are not wanted any more
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return results


def submit(spec, runtime, function: Callable, *args):
    """`function(*args)` as a Ray task with what a trial asks for; its ObjectRef, resolving to (result, where).
    A task with a GPU share runs in a worker of its own that exits after it (`max_calls=1`, Ray's default for GPU
    tasks, said here because it matters): an idle worker would keep its CUDA context and cached memory, which no
    trial's memory cap counts."""
    import ray

    options = dict(num_cpus=spec.resources.cpu, num_gpus=spec.resources.gpu, max_retries=0)
    if spec.resources.gpu > 0:
        options["max_calls"] = 1
    setup = (runtime, spec.resources.cpu, spec.resources.gpu)
    return ray.remote(_timed).options(**options).remote(setup, function, *args)


def _timed(setup: tuple, function: Callable, *args) -> tuple[Any, dict]:
    """In the task: the process set up as a trial's (backends.prepare_pass_process), then the function's result,
    the node it ran on and its seconds."""
    import ray

    from tuner.trial import backends

    scratch = backends.prepare_pass_process(*setup)
    started = time.perf_counter()
    try:
        value = function(*args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return value, {"node_id": ray.get_runtime_context().get_node_id(),
                   "seconds": round(time.perf_counter() - started, 2)}


def in_memory(dataset):
    """The pairs as data that pickles by value: a dataset read from disk is memory-mapped and would pickle as a
    path on this machine, which another node cannot read."""
    from datasets.table import InMemoryTable

    if dataset._indices is None and isinstance(dataset.data, InMemoryTable):
        return dataset
    return dataset.flatten_indices(keep_in_memory=True)


def record(experiment, phase: str, entries: list[dict] | dict) -> None:
    """Where each pass of `phase` ("prepare", "shadow", "test") ran, or the passes' RUNTIME, in tuner/passes.json
    (replacing what that key held)."""
    path = experiment.passes_file
    try:
        done = json.loads(path.read_text())
    except (OSError, ValueError):
        done = {}
    done[phase] = entries
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(done, indent=1))
    temporary.replace(path)
    experiment.publish(path)


def recorded(experiment) -> dict[str, Any]:
    path = experiment.passes_file
    return json.loads(path.read_text()) if path.is_file() else {}


def runtime_of(experiment):
    """How this search's base-model passes load the model (backends.PassRuntime): as its preparation recorded it,
    so that every later pass (the end of the search, analysis, export) scores as the first did, whatever machine it
    runs on. A search prepared before the runtime was recorded ran every pass with transformers in float32 on a
    CPU."""
    from tuner.trial import backends

    return recorded_runtime(experiment) or backends.CPU_RUNTIME


def recorded_runtime(experiment):
    """The backends.PassRuntime this experiment's preparation recorded, None when it recorded none."""
    from tuner.trial import backends

    found = recorded(experiment).get(RUNTIME)
    return backends.PassRuntime(**found) if isinstance(found, dict) else None


# ---------------------------------------------------------------------------------------------- the passes


def _reference_task(spec, runtime, model_path: str, datasets: dict, keep_tokenized: bool) -> dict:
    """One reference pass of the base model, loaded as `runtime` says, over `datasets`
    (tuner.trial.reference.reference_pass): per name, the PairScores as a dict, and the tokenized pairs with their
    reference columns (in memory) when `keep_tokenized`."""
    from tuner.trial import backends, reference

    done = reference.reference_pass(spec, backends.load_base(model_path, runtime, spec.model.max_length), datasets)
    return {name: (in_memory(tokenized) if keep_tokenized else None, asdict(scores))
            for name, (tokenized, scores) in done.items()}


def _cached_pass(spec, runtime, model_path: str, datasets: dict, keep_tokenized: bool) -> tuple:
    """(fingerprint, its inputs, the cache's Lookup) of one pass; (None, why not cached, None) when it has none."""
    kind = REFERENCE_KIND if keep_tokenized else SCORES_KIND
    found, inputs = pass_cache.fingerprint(kind, spec, runtime, model_path, datasets)
    if found is None:
        return None, inputs, None
    return found, inputs, pass_cache.PassCache().lookup(found)


def base_model_passes(spec, runtime, jobs: list[tuple[str, str, dict, bool]]) -> list[dict]:
    """The base model's passes `jobs`, each (label, model path, datasets, keep_tokenized): from the cache when an
    intact entry has their fingerprint, else run (run_all) and stored. Returns per job {"scores": {name:
    PairScores}, "tokenized": {name: folder in the cache or a Dataset} (keep_tokenized only), "fingerprint",
    "reused", "note" (why not cached, or why an entry was rebuilt), "where"}."""
    from tuner.evidence.quality import PairScores

    out: list[dict] = []
    to_run = []
    for label, model_path, datasets, keep_tokenized in jobs:
        fingerprint, inputs, lookup = _cached_pass(spec, runtime, model_path, datasets, keep_tokenized)
        job = {"label": label, "fingerprint": fingerprint, "reused": False, "where": None,
               "note": inputs if fingerprint is None else (lookup.rebuilt and f"cache entry rebuilt: {lookup.rebuilt}")}
        if lookup is not None and lookup.entry is not None:
            stored = json.loads((lookup.entry / "scores.json").read_text())
            job.update(reused=True, scores={name: PairScores(**s) for name, s in stored.items()},
                       tokenized={name: lookup.entry / name for name in stored} if keep_tokenized else {})
        else:
            job["_inputs"] = inputs
            datasets = {name: in_memory(dataset) for name, dataset in datasets.items()}
            to_run.append((len(out), (_reference_task, (spec, runtime, model_path, datasets, keep_tokenized))))
        out.append(job)
    if to_run:
        done = run_all(spec, runtime, [call for _, call in to_run])
        for (i, _), (result, where) in zip(to_run, done):
            job = out[i]
            job.update(where=where, scores={name: PairScores(**s) for name, (_, s) in result.items()},
                       tokenized={name: t for name, (t, _) in result.items() if t is not None})
            if job["fingerprint"] is not None:
                job["tokenized"] = _store(job["fingerprint"], job.pop("_inputs"), result) or job["tokenized"]
            job.pop("_inputs", None)
    return out


def _store(fingerprint: str, inputs: dict, result: dict) -> dict | None:
    """Keep a pass's results in the cache; the tokenized folders stored there (None when storing failed: a full
    disk, a cache folder not writable; the search goes on without the cache)."""
    def fill(folder: Path) -> None:
        (folder / "scores.json").write_text(json.dumps({name: s for name, (_, s) in result.items()}))
        for name, (tokenized, _) in result.items():
            if tokenized is not None:
                tokenized.save_to_disk(str(folder / name))

    try:
        entry = pass_cache.PassCache().store(fingerprint, inputs, fill)
    except OSError as error:
        print(f"tuner: warning: the pass cache ({pass_cache.root()}) could not be written: {error}",
              file=sys.stderr)
        return None
    return {name: entry / name for name, (tokenized, _) in result.items() if tokenized is not None}


def _where(job: dict) -> dict:
    return {"pass": job["label"], "reused": job["reused"], "fingerprint": job["fingerprint"],
            **(job["where"] or {"node_id": None, "seconds": 0.0})}


def _reuse_note(job: dict) -> str:
    return f"reused from the cache (fingerprint {job['fingerprint'][:12]})"


def prepare_passes(spec, experiment, train, held_out, describe: Callable[[dict], str]) -> tuple[dict, list[str]]:
    """The base model's passes of experiment.prepare: DPO's shared reference (saved as experiment.reference_dir)
    with the base model's eval scores from the same pass, or those scores alone. Returns (model name ->
    PairScores on the eval pairs, lines for the user in prepare's order); `describe(metrics)` words the base
    model's scores."""
    from tuner.experiment import faults
    from tuner.trial import backends, models, reference

    guards = spec.search.guard_groups
    lines = []
    runtime = backends.pass_runtime(spec)
    record(experiment, RUNTIME, asdict(runtime))
    if len(spec.model_names()) > 1:  # each trial is compared with its own base model
        names = spec.model_names()
        jobs = base_model_passes(spec, runtime, [(f"base model {name} (eval)", models.resolve(name),
                                                  {"eval": held_out}, False) for name in names])
        by_model = {name: job["scores"]["eval"] for name, job in zip(names, jobs)}
        for name, job in zip(names, jobs):
            reused = f" ({_reuse_note(job)})" if job["reused"] else ""
            lines.append(f"base model {name}: {describe(by_model[name].metrics(guard_groups=guards))}{reused}")
        lines.append("reference log-probs: computed in each trial (model.name is searched)")
        record(experiment, "prepare", [_where(job) for job in jobs])
        return by_model, lines
    model_path = models.resolve(spec.model.name)
    faults.point("prepare.reference")
    reason = reference.why_not_shared(spec)
    started = time.perf_counter()
    if reason:
        [job] = base_model_passes(spec, runtime, [("base model (eval)", model_path, {"eval": held_out}, False)])
        lines.append(f"reference log-probs: computed in each trial ({reason})")
    else:
        [job] = base_model_passes(spec, runtime, [("reference", model_path, {"train": train, "eval": held_out},
                                                   True)])
        for name in ("train", "eval"):
            found = job["tokenized"][name]
            if isinstance(found, Path):  # the cache's folder, as save_to_disk wrote it
                shutil.copytree(found, experiment.reference_dir / name)
            else:
                found.save_to_disk(str(experiment.reference_dir / name))
        how = (f"by an earlier search, {_reuse_note(job)}" if job["reused"] else
               f"in {time.perf_counter() - started:.0f} s")
        lines.append(f"reference log-probs: computed once for {len(train)} train and {len(held_out)} eval pairs "
                     f"{how}, shared by every DPO trial"
                     + (f" ({runtime.describe()})" if runtime != backends.CPU_RUNTIME else ""))
    if job["note"]:
        lines.append(f"pass cache: {job['note']}")
    record(experiment, "prepare", [_where(job)])
    scores = job["scores"]["eval"]
    reused = f" ({_reuse_note(job)})" if job["reused"] and reason else ""
    lines.append(f"base model: {describe(scores.metrics(guard_groups=guards))}{reused}")
    return {spec.model.name: scores}, lines


def _base_scores_with(spec, bases, model_name: str, datasets: dict) -> dict:
    """_reference_task's scores in this process, with a base model `bases` (tuner.evidence.scoring._Bases) loaded once."""
    from tuner.trial import reference

    done = reference.reference_pass(spec, bases.copy_of(model_name), datasets)
    return {name: (None, asdict(scores)) for name, (_, scores) in done.items()}


def score_test(experiment, test, wanted: list[tuple[str, Any]], base_model_name: str,
               on_done: Callable[[str, dict], None], score_here: Callable, score_in_task: Callable, bases) -> None:
    """The test_scores.json entries of `wanted` ((key, Best), or (key, None) for the base model), each given to
    `on_done(key, entry)` as it is done: as Ray tasks in parallel (as_tasks), else in this process. A trial is
    scored by tuner.evidence.scoring's `score_here(experiment, test, best, base_model_name, bases)` here, or
    `score_in_task(uri, spec, runtime, test, best, base_model_name)` in a task; the base model's test scores come
    from the pass cache when an earlier search on the same model and test pairs computed them."""
    from tuner.trial import models
    from tuner.evidence.quality import pair_ids, with_pair_ids

    spec = experiment.spec
    runtime = runtime_of(experiment)
    tasks = as_tasks(runtime)
    test = in_memory(test) if tasks else test
    pairs = with_pair_ids(test)
    runs, calls, labels = [], [], []
    fingerprint = inputs = None
    for key, best in wanted:
        if best is None:
            fingerprint, inputs, lookup = _cached_pass(spec, runtime, models.resolve(base_model_name),
                                                       {"eval": pairs}, False)
            if lookup is not None and lookup.entry is not None:
                from tuner.evidence.quality import PairScores

                stored = PairScores(**json.loads((lookup.entry / "scores.json").read_text())["eval"])
                chosen, rejected = stored.means(pair_ids(pairs))
                on_done(key, {"model": base_model_name, "chosen": chosen, "rejected": rejected})
                runs.append({"pass": "base model (test)", "reused": True, "fingerprint": fingerprint,
                             "node_id": None, "seconds": 0.0})
                continue
            calls.append((_reference_task, (spec, runtime, models.resolve(base_model_name), {"eval": pairs}, False))
                         if tasks else (_base_scores_with, (spec, bases, base_model_name, {"eval": pairs})))
        elif tasks:
            calls.append((score_in_task, (experiment.uri, spec, runtime, test, best, base_model_name)))
        else:
            calls.append((score_here, (experiment, test, best, base_model_name, bases)))
        labels.append((key, best))

    def done(i: int, value) -> None:
        key, best = labels[i]
        if best is None:  # the reference pass's dict: kept in the cache, turned into the entry
            from tuner.evidence.quality import PairScores

            if fingerprint is not None:
                _store(fingerprint, inputs, value)
            chosen, rejected = PairScores(**value["eval"][1]).means(pair_ids(pairs))
            value = {"model": base_model_name, "chosen": chosen, "rejected": rejected}
        on_done(key, value)

    for (key, best), (_, where) in zip(labels, run_all(spec, runtime, calls, done, tasks)):
        runs.append({"pass": "base model (test)" if best is None else f"trial {best.trial_id} (test)",
                     "reused": False, "fingerprint": fingerprint if best is None else None, **where})
    record(experiment, "test", runs)
