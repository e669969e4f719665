"""Experiments in object storage, against a real S3-compatible HTTP server (moto, started by the test session): URIs,
the pre-flight probe, the working copy and its uploads and downloads, the study's storage, and the data trials get
through Ray's object store instead of a path."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest

from tests.conftest import spec_path
from tuner.experiment import checks
from tuner.experiment.folder import NotAnExperiment
from tuner.search import study
from tuner.errors import InputError
from tuner.experiment.folder import Experiment
from tuner.run import main
from tuner.spec import SpecError, validate_spec
from tuner.experiment.storage import Location


def test_uris_name_their_children_and_map_tune_paths_back():
    base = Location.parse("s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http")
    exp = base.child("exp")
    assert exp.uri == "s3://bucket/prefix/exp?endpoint_override=127.0.0.1:9000&scheme=http"
    assert exp.name == "exp" and not exp.is_local
    assert exp.parent == base
    # Ray Tune reports folders as paths on the filesystem, pyarrow's bucket/key
    checkpoint = "bucket/prefix/exp/run_trial_1/checkpoint_000001"
    assert exp.relative(checkpoint) == "run_trial_1/checkpoint_000001"
    assert exp.uri_of(checkpoint) == ("s3://bucket/prefix/exp/run_trial_1/checkpoint_000001"
                                      "?endpoint_override=127.0.0.1:9000&scheme=http")
    assert exp.relative(exp.uri_of(checkpoint)) == "run_trial_1/checkpoint_000001"
    assert exp.relative("bucket/prefix/other/x") is None
    assert Location.parse("gs://bucket").child("exp").uri == "gs://bucket/exp"


def test_local_paths_and_file_uris_are_absolute_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ("results", "file://" + str(tmp_path / "results"), tmp_path / "results"):
        location = Location.parse(text)
        assert location.is_local and location.uri == str(tmp_path / "results")
    location = Location.parse("results").child("exp")
    assert location.uri_of(str(tmp_path / "results" / "exp" / "t" / "c")) == str(tmp_path / "results/exp/t/c")
    assert Experiment(location).path == tmp_path / "results" / "exp"  # a local folder is its own working copy


@pytest.mark.parametrize(("override", "message"), [
    ("run.storage_path=s3://AKIAEXAMPLE:hunter2@bucket/results", "run.storage_path: credentials in the URI"),
    ("search.storage=postgresql://tuner:hunter2@db.example/tuner", "search.storage: a password in the URL"),
])
def test_secrets_in_uris_are_refused_without_being_echoed(override, message, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as in test_inputs: the CLI checks the model before the storage
    assert main([str(spec_path("dpo.yaml")), override, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and "hunter2" not in err and "***" in err


def test_bad_study_storages_exit_2_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    taken = tmp_path / "taken.db"
    optuna_storage = study.storage_for(f"sqlite:///{taken}", "")
    import optuna

    optuna.create_study(study_name="exp", storage=optuna_storage)
    cases = {
        f"sqlite:///{tmp_path}/missing/optuna.db": "search.storage: the folder of",
        f"sqlite:///{taken}": "already holds a study named 'exp'; choose another --name",
        "nosuchdb://host/db": "search.storage: nosuchdb URLs need the database driver for it installed",
        f"{tmp_path}/missing/journal.log": "search.storage: the journal file's folder",
        "sqlite://": "search.storage: an in-memory SQLite study ends with the driver",
    }
    for url, message in cases.items():
        code = main([str(spec_path("dpo.yaml")), f"search.storage={url}", f"run.storage_path={tmp_path / 'r'}",
                     "--name", "exp"])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, (url, err)
        assert [line for line in err.splitlines() if line.startswith("tuner:")] == [
            line for line in err.splitlines() if message in line], err  # one line, naming the problem
        assert not (tmp_path / "r").exists() and not (tmp_path / "missing").exists()


def test_storage_probe_names_what_is_wrong_and_writes_nothing(s3_server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from tuner.trial.embedded import cache_dir

    bucket = s3_server.bucket("probe")
    s3_server.client().put_object(Bucket=bucket, Key="results/taken/tuner/spec.yaml", Body=b"")
    dead = Location.parse(f"s3://{bucket}/results?endpoint_override=127.0.0.1:1&scheme=http")
    cases = {
        s3_server.uri("no-such-bucket", "results"): "run.storage_path: no bucket 'no-such-bucket' at s3://",
        dead.uri: "run.storage_path: cannot reach s3://probe/results",
        "foo://bucket/results": "run.storage_path: cannot open foo://bucket/results: Unrecognized filesystem type",
        s3_server.uri(bucket, "results"): f"run.name: s3://{bucket}/results/taken?endpoint_override",
    }
    for uri, message in cases.items():
        code = main([str(spec_path("dpo.yaml")), f"run.storage_path={uri}", "--name", "taken"])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, (uri, err)
        assert [line for line in err.splitlines() if line.startswith("tuner:")] == [
            line for line in err.splitlines() if message in line], err
    assert s3_server.keys(bucket) == ["results/taken/tuner/spec.yaml"]
    assert not list((cache_dir() / "experiments").glob("taken-*"))  # no working copy either


def test_an_experiment_in_object_storage_is_published_once_and_read_from_another_machine(s3_server, tmp_path,
                                                                                         monkeypatch):
    from datasets import Dataset

    from tuner.data import loading as data

    bucket = s3_server.bucket("roundtrip")
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "driver"))
    spec = validate_spec({"train": {"beta": 0.3}})
    location = checks.check_storage(s3_server.uri(bucket, "results"), "exp")
    created = Experiment.create(spec, location)
    assert created.path.is_relative_to(tmp_path / "driver") and created.uri == location.uri
    assert s3_server.keys(bucket) == ["results/exp/tuner/spec.yaml"]  # the name is taken at once
    pairs = Dataset.from_dict({"prompt": ["p1", "p2"], "chosen": ["a", "b"], "rejected": ["c", "d"]})
    pairs.save_to_disk(str(created.data_dir / "train"))
    pairs.select([0]).save_to_disk(str(created.data_dir / "eval"))
    created.base_metrics_file.write_text(json.dumps({"eval_pref_accuracy": 0.5}))
    created.publish(created.data_dir, created.base_metrics_file)
    assert created.local_copy(created.data_dir) == created.data_dir  # made here: nothing to download
    assert not created.shares_reference

    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "elsewhere"))  # another machine: nothing of the driver's
    shutil.rmtree(tmp_path / "driver")
    reader = Experiment(location.uri)
    assert reader.path.is_relative_to(tmp_path / "elsewhere")
    reader.fetch_tuner_files()
    assert reader.spec.beta() == 0.3 and reader.base == {"eval_pref_accuracy": 0.5}
    assert not (reader.data_dir).exists()  # data only when asked for
    train, held_out = data.load_prepared(reader.local_copy(reader.data_dir))
    assert train["prompt"] == ["p1", "p2"] and held_out["prompt"] == ["p1"]
    with pytest.raises(NotAnExperiment, match="no Ray Tune experiment|not a Ray Tune experiment"):
        Experiment.open(location.uri)  # tuner's files, but no Tune state yet


def test_storage_that_refuses_writes_leaves_nothing_behind(s3_server, tmp_path, monkeypatch):
    from tuner.experiment.storage import StorageError

    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "driver"))
    location = checks.check_storage(s3_server.uri(s3_server.bucket("read-only"), "results"), "exp")

    def denied(self, local, relative):
        raise StorageError(f"{self.uri}: AWS Error ACCESS_DENIED during PutObject operation")

    monkeypatch.setattr(Location, "upload", denied)
    with pytest.raises(InputError, match="run.storage_path: cannot write there: .*ACCESS_DENIED"):
        Experiment.create(validate_spec({}), location)
    assert not Experiment(location).path.exists()


def test_prepared_data_reaches_trials_as_data_not_as_a_path(tmp_path):
    """Trials get the data through Ray's object store (pickled): it must not refer to the driver's files."""
    from datasets import Dataset

    from tuner.data import loading as data

    pairs = Dataset.from_dict({"prompt": ["p1", "p2"], "chosen": ["a", "b"], "rejected": ["c", "d"]})
    for split in ("train", "eval"):
        pairs.save_to_disk(str(tmp_path / "data" / split))
    shipped = pickle.dumps(data.load_prepared(tmp_path / "data", in_memory=True))
    mapped = pickle.dumps(data.load_prepared(tmp_path / "data"))
    shutil.rmtree(tmp_path / "data")  # as on a node that never had the driver's folder
    train, held_out = pickle.loads(shipped)
    assert train["chosen"] == ["a", "b"] and held_out.num_rows == 2
    with pytest.raises(FileNotFoundError):  # why in_memory: a memory-mapped dataset pickles as its file path
        pickle.loads(mapped)


def test_the_default_study_reopens_wherever_the_experiment_is_kept(s3_server, tmp_path, monkeypatch):
    """Tune pickles the searcher with its storage; resuming on another machine must open that machine's copy."""
    uri = s3_server.uri("bucket-for-study", "results/exp")
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "first"))
    Experiment(uri).tuner_dir.mkdir(parents=True)
    first = study.storage_for(None, uri)
    assert str(tmp_path / "first") in first.url
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "second"))
    Experiment(uri).tuner_dir.mkdir(parents=True)
    reopened = pickle.loads(pickle.dumps(first))
    assert reopened.url == f"sqlite:///{Experiment(uri).optuna_file}" and str(tmp_path / "second") in reopened.url


def test_search_storage_holds_the_study(tmp_path):
    import optuna

    from tuner.search.build import build_searcher
    from tuner.search.space import param_space

    for url in (f"sqlite:///{tmp_path}/shared.db", str(tmp_path / "journal.log")):
        spec = validate_spec({"search": {"storage": url, "space": {"train.beta": {"type": "uniform", "low": 0.1,
                                                                                   "high": 0.5}}}})
        searcher = build_searcher(spec, Experiment(tmp_path / "results" / "exp"))
        searcher.set_search_properties(spec.metric, spec.search.mode, param_space(spec))
        searcher.suggest("trial-1")
        assert optuna.get_all_study_names(study.storage_for(url, "")) == ["exp"]
    assert not (tmp_path / "results").exists()  # the experiment's own SQLite was never made


def test_study_is_uploaded_when_a_trial_ends_and_when_tune_saves_its_state(s3_server, tmp_path, monkeypatch):
    from tuner.search.build import study_upload

    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "driver"))
    bucket = s3_server.bucket("upload")
    spec = validate_spec({"search": {"space": {"train.beta": {"type": "loguniform", "low": 0.05, "high": 0.5}}}})
    created = Experiment.create(spec, checks.check_storage(s3_server.uri(bucket, "results"), "exp"))
    (callback,) = study_upload(spec, created)
    assert study_upload(validate_spec({}), created) == []  # fixed settings: no study to upload
    assert study_upload(spec.model_copy(update={"search": spec.search.model_copy(
        update={"storage": "sqlite:////x.db"})}), created) == []
    assert study_upload(spec, Experiment(tmp_path / "local" / "exp")) == []
    created.optuna_file.write_bytes(b"first")
    callback.on_trial_complete(iteration=1, trials=[], trial=None)
    assert s3_server.client().get_object(Bucket=bucket, Key="results/exp/tuner/optuna.db")["Body"].read() == b"first"
    created.optuna_file.write_bytes(b"second")
    assert callback.get_state() is None  # nothing of its own for Tune to save
    assert s3_server.client().get_object(Bucket=bucket, Key="results/exp/tuner/optuna.db")["Body"].read() == b"second"
    import ray.cloudpickle

    assert ray.cloudpickle.loads(ray.cloudpickle.dumps(callback)).experiment.uri == created.uri


def test_malformed_uri_and_study_url_shapes():
    with pytest.raises(InputError, match="expected s3://BUCKET/PREFIX"):
        Location.parse("s3:///no-bucket")
    with pytest.raises(SpecError):
        validate_spec({"search": {"storage": " "}})
