"""Run a search: `python -m tuner.run SPEC [key=value ...] [--name NAME] [--address ADDR] [--dry-run]`, or continue
one: `python -m tuner.run --resume RESULTS/NAME`.

Validates every input before writing anything (each problem named, exit code 2, no traceback unless --debug), starts
or attaches to Ray and checks that it can run a trial, creates and prepares the experiment once (a failure there
removes the folder), runs the Tune search under the folder's run lock, and ends with the ranking and the best
checkpoint: exit code 0, 1 when every trial failed, 130 when the search stopped early (with the resume command).
A new search's local Ray starts in the background while its inputs are checked (the checks import TRL, seconds of
one core, and Ray's start is seconds of waiting on its processes); when a check fails, its error is printed and
that Ray is stopped before the process exits.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile

from tuner import console
from tuner.console import TRIAL_LOG
from tuner.errors import InputError, guarded
from tuner.evidence.closing import report, report_test_split
from tuner.experiment import checks
from tuner.experiment.folder import Experiment
from tuner.experiment.trust import check_folder, owner_only_files
from tuner.search import cluster
from tuner.search.space import describe_space
from tuner.spec import Spec, load_spec, read_spec, to_yaml
from tuner.spec.schema import RunSpec
from tuner.spec.secrets import missing_variables

INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C
FAILED = 1  # every trial of the search errored


EXAMPLES = """examples:
  python -m tuner.run search_spaces/dpo.yaml                                   # the default DPO search
  python -m tuner.run search_spaces/dpo.yaml search.num_samples=2 train.max_steps=4   # a quick look
  python -m tuner.run search_spaces/orpo.yaml --name orpo-first --dry-run      # validate and print only
  python -m tuner.run --resume results/NAME                                    # continue a stopped search

most used overrides (any spec key, dotted):
  search.num_samples=N   train.max_steps=N   train.eval_steps=N   model.name=FOLDER|embedded
  data.source=FILE.jsonl   resources.cpu=N   resources.gpu=0.25   run.storage_path=DIR   run.wandb=offline
  search.space.train.beta='{type: loguniform, low: 0.05, high: 0.5}'
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tuner.run", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    parser.add_argument("spec", nargs="?", help="search spec YAML, e.g. search_spaces/dpo.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. search.num_samples=2")
    parser.add_argument("--name", help="experiment folder name under run.storage_path (default: method-timestamp)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                        help="attach to this Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--resume", metavar="RESULTS/NAME",
                        help="continue an interrupted search (a folder, or its s3:// or gs:// URI)")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the resolved spec; start nothing")
    parser.add_argument("--top", type=int, default=5, help="how many trials the final table shows")
    parser.add_argument("--verbose", action="store_true",
                        help="show every library's output (progress bars, Ray and Tune lines, each trial's output)")
    parser.add_argument("--trust", action="store_true",
                        help="--resume a folder that another user owns or can write to (it runs code stored in it)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    args = parser.parse_intermixed_args(argv)
    if (args.spec is None) == (args.resume is None):
        parser.error("give a SPEC to start a search, or --resume RESULTS/NAME to continue one")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet = not (args.verbose or args.dry_run)
    if quiet:
        console.quiet_environment()  # first: a Ray started below inherits these variables
    with owner_only_files():  # the results, the prepared data, Ray's files: readable by their owner only
        early = _start_ray_early(args)
        try:
            if quiet:
                console.quiet_libraries()
            if args.resume:
                return guarded("tuner", resume, args, debug=args.debug)
            return guarded("tuner", start, args, early, debug=args.debug)
        except KeyboardInterrupt:  # while checking or starting; the search and its preparation handle their own
            print("tuner: interrupted", file=sys.stderr)
            return INTERRUPTED
        finally:
            if early is not None:  # an input error, or the search's session was stopped already (then a no-op)
                early.close()


def _start_ray_early(args: argparse.Namespace) -> cluster.EarlyStart | None:
    """A new search on a local Ray, in a process that has not imported TRL yet: its local Ray starts now, in the
    background, so that its start overlaps the checks' import of TRL (seconds each, on different cores); if a later
    check fails, it is stopped before the process exits. None (Ray starts once every check passed) when there is
    nothing to overlap, when Ray is attached (--address), when the spec's structure is wrong (the error comes at
    once, with nothing started), or when it widens the dashboard beyond the loopback address (checked first)."""
    if args.resume or args.dry_run or args.address or not _checks_will_import_trl():
        return None
    try:
        raw, problems = read_spec(args.spec, args.overrides)
        structure = Spec.model_validate(raw)  # pydantic only: TRL's fields are checked later, by load_spec
    except Exception:  # UserError, ValidationError: start() reports each problem, with nothing started
        return None
    if problems or structure.run.dashboard_host != RunSpec().dashboard_host:
        return None
    return cluster.EarlyStart(structure.run.dashboard_host, args.verbose)


def _checks_will_import_trl() -> bool:
    return "trl" not in sys.modules


def start(args: argparse.Namespace, early: cluster.EarlyStart | None = None) -> int:
    """A new search; `early`, its local Ray if one was started while the inputs were checked."""
    spec = load_spec(args.spec, args.overrides)
    if args.dry_run:
        print(to_yaml(spec))
        print(describe_space(spec))
        return 0
    from tuner.data import loading as data

    _check_environment(spec, args.address)
    # The source's Arrow copy goes to a private folder removed once the pairs are saved in the experiment, not to
    # the shared HF datasets cache.
    staging = tempfile.TemporaryDirectory(prefix="tuner-datasets-")
    with staging:
        splits = _checked_pairs(spec, data.load_pairs(spec.data, cache_dir=staging.name))
        location = checks.check_storage(spec.run.storage_path, args.name or spec.run.name or
                                       checks.default_name(spec))
        if spec.search.uses_optuna() and spec.search.storage is not None:
            from tuner.search import study

            study.check(spec.search.storage, location.name)
        _warn_about_exposure(spec, args.address, location.is_local)
        session = _start_cluster(spec, args, early)  # its resources are checked before anything is written
        try:
            experiment = Experiment.create(spec, location)
            with experiment.locked():
                lines = _prepare(spec, experiment, splits, on_failure=experiment.discard)
                if lines is None:
                    return INTERRUPTED
                train_rows = len(splits.train)
                staging.cleanup()  # the pairs are saved in the experiment: the source's Arrow copy can go
                return _search(session, spec, experiment, lines, train_rows, args)
        finally:
            cluster.stop(session)


def resume(args: argparse.Namespace) -> int:
    from ray import tune

    from tuner.data import loading as data
    from tuner.search import build

    experiment = Experiment(args.resume)
    experiment.fetch_tuner_files()  # object storage: the spec, base metrics and study, before Tune restores
    path = experiment.uri
    if not experiment.spec_file.is_file():
        raise InputError(f"--resume: {path} is not a tuner experiment folder that can be resumed (no tuner/spec.yaml; "
                         f"pass run.storage_path/NAME as tuner.run wrote it)")
    if experiment.location.is_local:  # Tune.restore unpickles the folder's state: only a folder you own
        check_folder(experiment.path, args.trust)
    spec = experiment.spec
    restorable = tune.Tuner.can_restore(experiment.location.fs_path, storage_filesystem=experiment.location.filesystem)
    if args.dry_run:
        print(to_yaml(spec))
        print(describe_space(spec))
        plan = ("continue the search through Tune.restore" if restorable else
                "prepare the experiment again and start its search from the first trial (the driver stopped before "
                "Tune saved any state)")
        print(f"--resume {path} would {plan}; dry run: nothing started or written")
        return 0
    with experiment.locked():
        if restorable:
            checks.check_address(args.address)
            _check_secrets(spec, args.address)
            cluster.check_exposure(args.address, spec.run.dashboard_host)
            session = _start_cluster(spec, args)
            try:
                _announce(session.context, spec, experiment)
                print(f"resuming {path}: finished trials are kept, unfinished ones continue from their last "
                      f"checkpoint")
                return _fit_and_report(build.restore_tuner(spec, experiment, args.verbose), spec, experiment,
                                       args.top)
            finally:
                cluster.stop(session)
        # The driver stopped before Tune saved any state (killed while preparing or starting): do what is missing.
        _check_environment(spec, args.address)
        staging = tempfile.TemporaryDirectory(prefix="tuner-datasets-")
        with staging:
            splits = _checked_pairs(spec, data.load_pairs(spec.data, cache_dir=staging.name))
            session = _start_cluster(spec, args)
            try:
                print(f"resuming {path}: the driver stopped before Tune saved any state"
                      + ("" if experiment.is_prepared else " (while preparing)")
                      + "; preparing again and starting the search from its first trial")
                lines = _prepare(spec, experiment, splits, on_failure=experiment.forget_preparation)
                if lines is None:
                    return INTERRUPTED
                train_rows = len(splits.train)
                staging.cleanup()
                return _search(session, spec, experiment, lines, train_rows, args)
            finally:
                cluster.stop(session)


def _check_environment(spec: Spec, address: str | None) -> None:
    """Every check of what the spec names outside the data (model, Ray address, W&B, this machine's resources),
    before anything is written and before Ray is started or attached to (a new local search's Ray may be starting
    in the background meanwhile: _start_ray_early)."""
    from tuner.trial import compat, methods, models

    cluster.check_exposure(address, spec.run.dashboard_host)
    _check_secrets(spec, address)
    if any(methods.get(m).uses_reference for m in spec.searched_methods()) and (reason := compat.dpo_unavailable_reason()):
        raise InputError(reason)
    for name in spec.model_names():
        models.check_loadable(name)
    if not address:
        models.check_backend(spec.model.backend)
    checks.check_address(address)
    checks.check_wandb(spec.run.wandb)
    if not address:  # a cluster's resources are checked once Ray is attached (_start_cluster)
        cluster.check_resources(spec.resources.cpu, spec.resources.gpu, cluster.local_resources(), "this machine")


def _checked_pairs(spec: Spec, splits):
    """The loaded pairs, once truncation is known to leave eval pairs to score (a line in `notes` when it leaves
    only some); with the lines saying what was read and how long its pairs are in `splits.summary`."""
    from tuner.data import checks as data_checks, loading as data

    if line := data_checks.check_eval_pairs(spec, splits.eval):
        splits.notes.append(line)
    if line := data_checks.check_guard_groups(spec, splits.eval, splits.train):
        splits.notes.append(line)
    splits.summary = data.describe_pairs(spec, splits)
    return splits


def _start_cluster(spec: Spec, args: argparse.Namespace, early: cluster.EarlyStart | None = None
                   ) -> cluster.RaySession:
    """Start or attach to Ray (or take the one `early` started for this spec), and refuse a trial that the whole
    cluster could not run (Tune would wait forever)."""
    if early is not None and early.dashboard_host == spec.run.dashboard_host:
        session = early.take()
    else:
        if early is not None:
            early.close()
        session = cluster.start(args.address, spec.run.dashboard_host, args.verbose)
    try:
        where = f"the Ray cluster at {args.address}" if args.address else "the local Ray"
        cluster.check_resources(spec.resources.cpu, spec.resources.gpu, cluster.cluster_resources(), where)
    except BaseException:
        cluster.stop(session)
        raise
    return session


def _prepare(spec: Spec, experiment: Experiment, splits, on_failure) -> list[str] | None:
    """tuner.experiment.prepare.prepare; when it fails or is interrupted, `on_failure()` removes what it wrote (the
    whole folder for a new search) before the error is reported. None after Ctrl-C."""
    from tuner.experiment import prepare as preparation

    try:
        lines = preparation.prepare(spec, experiment, splits.train, splits.eval, splits.test)
        return [*lines[:1], *splits.summary, *lines[1:], *splits.notes]
    except BaseException as error:
        on_failure()
        kept = experiment.path.is_dir()
        after = (f"kept {experiment.uri} without what preparation wrote; continue with --resume "
                 f"{shlex.quote(experiment.uri)}" if kept else f"removed {experiment.uri}")
        if isinstance(error, KeyboardInterrupt):
            print(f"tuner: interrupted while preparing; {after}", file=sys.stderr)
            return None
        if isinstance(error, OSError):  # disk full, permissions changed under us, ...
            raise InputError(f"preparing {experiment.uri} failed: {error}; {after}") from None
        raise


def _search(session, spec: Spec, experiment: Experiment, lines: list[str], train_rows: int,
            args: argparse.Namespace) -> int:
    from tuner.search import build

    for line in lines:
        print(line)
    print(describe_space(spec))
    _announce(session.context, spec, experiment)
    return _fit_and_report(build.build_tuner(spec, experiment, train_rows, args.verbose), spec, experiment,
                           args.top)


def _check_secrets(spec: Spec, address: str | None) -> None:
    """A local run's trials inherit this environment: every `<field>_env` variable must be set in it. On a cluster
    they read the environment `ray start` had on their node, which only the trial can check."""
    missing = [] if address else missing_variables(spec.train)
    if missing:
        raise InputError("; ".join(missing))


def _announce(context, spec: Spec, experiment) -> None:
    if context.dashboard_url:
        print(f"Ray dashboard: http://{context.dashboard_url}  (token auth: see docs/monitoring.md)")
    if spec.search.uses_optuna():
        print(f"Optuna study: optuna-dashboard {experiment.optuna_url}")
    print(f"TensorBoard: tensorboard --logdir {shlex.quote(experiment.uri)}")
    print(f"trials: a table after {console.REFRESH_S:.0f} s, then at doubling gaps up to "
          f"{console.LONGEST_GAP_S / 60:.0f} min; each trial's output goes to {TRIAL_LOG} in its folder "
          f"(--verbose prints everything)")
    if spec.run.wandb != "off":
        print(f"W&B ({spec.run.wandb}): runs under {experiment.path / 'wandb'}"
              + (f"; upload later with `wandb sync {experiment.path / 'wandb'}/wandb/offline-run-*`"
                 if spec.run.wandb == "offline" else ""))


def _warn_about_exposure(spec: Spec, address: str | None, local_storage: bool) -> None:
    if address and local_storage:
        print(f"tuner: warning: on a cluster, a local run.storage_path ({spec.run.storage_path}) must be a folder "
              f"that every node mounts at the same path (NFS or similar): trials write checkpoints and results "
              f"there; or use object storage (s3://, gs://)", file=sys.stderr)
    if not address and spec.run.dashboard_host not in ("127.0.0.1", "localhost"):
        print(f"tuner: warning: run.dashboard_host={spec.run.dashboard_host!r} exposes the Ray dashboard, which can "
              f"run code on this machine, beyond localhost", file=sys.stderr)


def _fit_and_report(tuner, spec: Spec, experiment: Experiment, top: int) -> int:
    """Run the search and end it with the report. Exit code 0; INTERRUPTED (130) with the resume command when the
    search stopped before every trial ended; FAILED (1) with a one-line summary when every trial errored."""
    from tuner.experiment.folder import NotAnExperiment

    try:
        tuner.fit()
    except KeyboardInterrupt:
        pass
    resume_hint = (f"the search stopped before all {spec.search.num_samples} trials finished (the test split is "
                   f"scored when it completes); continue it with:\n  python -m tuner.run --resume "
                   f"{shlex.quote(experiment.uri)}")
    try:
        trials = experiment.reload().trials
    except NotAnExperiment:  # stopped before Tune saved any state
        print(resume_hint)
        return INTERRUPTED
    report(experiment, top)
    if len(trials) < spec.search.num_samples or trials["status"].isin(["running", "pending", "paused"]).any():
        print(resume_hint)
        return INTERRUPTED
    if len(trials) and trials["status"].eq("errored").all():
        print(f"tuner: all {len(trials)} trials failed (first error: {trials['error'].iloc[0] or 'unknown'}); "
              f"see each trial's error above", file=sys.stderr)
        return FAILED
    report_test_split(experiment)
    return 0


if __name__ == "__main__":
    sys.exit(main())
