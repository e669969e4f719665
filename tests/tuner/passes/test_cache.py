"""The base model's passes are reused across searches only when everything that determines them is the same: each
input changed in turn misses; damaged entries are rebuilt, never used; two preparations share one pass."""

from __future__ import annotations

import json
import shutil

import pytest
from datasets import Dataset

from tuner.passes import cache as pass_cache
from tuner.spec import validate_spec
from tuner.trial.backends import CPU_RUNTIME, PassRuntime

PAIRS = [{"prompt": f"Question {i}?", "chosen": f"Right answer {i}.", "rejected": f"Wrong {i}."} for i in range(6)]


def spec_for(model, **model_fields):
    return validate_spec({"model": {"name": str(model), "max_length": 64, "backend": "hf", **model_fields},
                          "data": {"max_rows": 8, "max_eval_rows": 4},
                          "train": {"max_steps": 2, "per_device_train_batch_size": 2, "seed": 0}})


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "passes"


def fingerprint_of(spec, model, pairs=PAIRS, runtime=CPU_RUNTIME):
    found, inputs = pass_cache.fingerprint("reference", spec, runtime, str(model), {"eval": Dataset.from_list(pairs)})
    assert found is not None, inputs
    return found


def test_each_input_changed_in_turn_changes_the_fingerprint(tiny_llama, tmp_path, store):
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    spec = spec_for(model)
    first = fingerprint_of(spec, model)
    assert fingerprint_of(spec, model) == first  # nothing changed: the same key (the memo of file hashes used)
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)  # other paths and mtimes, same content: the same model
    assert fingerprint_of(spec_for(copy), copy) == first

    changed = {}
    # the model's weights: one byte of the safetensors file
    weights = tmp_path / "weights"
    shutil.copytree(model, weights)
    raw = bytearray((weights / "model.safetensors").read_bytes())
    raw[-1] ^= 0x01
    (weights / "model.safetensors").write_bytes(bytes(raw))
    changed["model"] = fingerprint_of(spec_for(weights), weights)
    # the chat template, which lives in the tokenizer's files
    template = tmp_path / "template"
    shutil.copytree(model, template)
    config_file = template / "tokenizer_config.json"
    if (template / "chat_template.jinja").is_file():
        config_file = template / "chat_template.jinja"
        config_file.write_text(config_file.read_text() + "\n{# another template #}")
    else:
        config = json.loads(config_file.read_text())
        config["chat_template"] = config["chat_template"] + "{# another template #}"
        config_file.write_text(json.dumps(config))
    changed["template"] = fingerprint_of(spec_for(template), template)
    # the data: one answer of one pair
    other = [dict(pair) for pair in PAIRS]
    other[3]["rejected"] = "Wrong 3!"
    changed["data"] = fingerprint_of(spec, model, other)
    changed["data order"] = fingerprint_of(spec, model, PAIRS[::-1])
    changed["max_length"] = fingerprint_of(spec_for(model, max_length=128), model)
    changed["truncation_mode"] = fingerprint_of(
        validate_spec({**spec.model_dump(exclude_defaults=True), "train": {"truncation_mode": "keep_end"}}), model)
    # how the pass loads the model: unsloth's 4-bit base on the trials' GPU, transformers in bfloat16 on a GPU
    changed["unsloth 4-bit"] = fingerprint_of(spec, model, runtime=PassRuntime("unsloth", "cuda", "4bit"))
    changed["unsloth 16-bit"] = fingerprint_of(spec, model, runtime=PassRuntime("unsloth", "cuda", "16bit"))
    changed["hf on a GPU"] = fingerprint_of(spec, model, runtime=PassRuntime("hf", "cuda", "bfloat16"))
    assert len({first, *changed.values()}) == len(changed) + 1, changed
    assert pass_cache.fingerprint("scores", spec, CPU_RUNTIME, str(model), {"eval": Dataset.from_list(PAIRS)})[0] \
        != first


def test_a_missing_model_is_not_cached(tiny_llama, store):
    found, why = pass_cache.fingerprint("scores", spec_for(tiny_llama), CPU_RUNTIME, "nobody/no-such-model-here",
                                        {"eval": Dataset.from_list(PAIRS)})
    assert found is None and "no local copy" in why


def fill(folder):
    (folder / "scores.json").write_text('{"eval": [1, 2, 3]}')
    (folder / "eval").mkdir()
    (folder / "eval" / "data.arrow").write_bytes(b"0123456789" * 100)


@pytest.mark.parametrize("damage", ["truncated", "changed", "missing file", "extra file", "no manifest",
                                    "other fingerprint"])
def test_a_damaged_entry_is_removed_and_never_used(store, damage):
    cache = pass_cache.PassCache()
    key = "ab" * 32
    entry = cache.store(key, {"kind": "test"}, fill)
    assert cache.lookup(key).entry == entry
    arrow = entry / "eval" / "data.arrow"
    if damage == "truncated":
        arrow.write_bytes(arrow.read_bytes()[:500])
    elif damage == "changed":
        arrow.write_bytes(b"x" * 1000)  # the same size
    elif damage == "missing file":
        arrow.unlink()
    elif damage == "extra file":
        (entry / "eval" / "stray.arrow").write_bytes(b"1")
    elif damage == "no manifest":
        (entry / pass_cache.MANIFEST).unlink()
    else:
        manifest = json.loads((entry / pass_cache.MANIFEST).read_text())
        manifest["fingerprint"] = "cd" * 32
        (entry / pass_cache.MANIFEST).write_text(json.dumps(manifest))
    found = cache.lookup(key)
    assert found.entry is None and found.rebuilt
    assert not entry.exists()
    assert cache.lookup(key).entry is None and cache.lookup(key).rebuilt is None  # gone: a plain miss now
    rebuilt = cache.store(key, {"kind": "test"}, fill)
    assert cache.lookup(key).entry == rebuilt


def test_a_writer_killed_before_its_rename_leaves_no_entry(store, monkeypatch):
    cache = pass_cache.PassCache()
    key = "ef" * 32

    def dies(folder):
        fill(folder)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.store(key, {}, dies)
    assert cache.lookup(key).entry is None
    assert not [p for p in store.iterdir() if p.name.startswith(".") and p.is_dir()]
    # a temporary folder of a writer killed with SIGKILL (no cleanup) is not an entry, and goes when old
    stale = store / f".{key[:16]}.host.1.tmp"
    stale.mkdir()
    fill(stale)
    assert cache.lookup(key).entry is None
    import os
    os.utime(stale, (0, 0))
    cache.store(key, {}, fill)
    assert not stale.exists() and cache.lookup(key).entry is not None


def test_two_preparations_share_one_reference_pass(tiny_llama, tmp_path, store, monkeypatch):
    from datasets import load_from_disk

    from tuner.experiment import folder, prepare as preparing
    from tuner.passes import tasks as model_passes
    from tuner.trial import reference
    from tuner.data.loading import load_pairs

    spec = spec_for(tiny_llama)
    splits = load_pairs(spec.data)
    passes = []
    real = reference.reference_pass
    monkeypatch.setattr(reference, "reference_pass", lambda *a: passes.append(1) or real(*a))

    def prepared(name):
        experiment = folder.Experiment.create(spec, tmp_path / name)
        lines = preparing.prepare(spec, experiment, splits.train, splits.eval, splits.test)
        return experiment, lines

    first, first_lines = prepared("first")
    assert len(passes) == 1
    assert any(line.startswith("reference log-probs: computed once for 4 train and 4 eval pairs in")
               for line in first_lines), first_lines
    second, second_lines = prepared("second")
    assert len(passes) == 1, "the second preparation ran the reference pass again"
    [line] = [line for line in second_lines if line.startswith("reference log-probs:")]
    assert "by an earlier search, reused from the cache (fingerprint " in line
    assert [line for line in first_lines if line.startswith("base model:")] == \
        [line for line in second_lines if line.startswith("base model:")]
    for name in ("train", "eval"):
        a, b = (load_from_disk(str(e.reference_dir / name)) for e in (first, second))
        assert a.to_dict() == b.to_dict()
    assert json.loads(first.base_scores_file.read_text()) == json.loads(second.base_scores_file.read_text())
    [run] = model_passes.recorded(second)["prepare"]
    assert run["reused"] and run["pass"] == "reference" and run["fingerprint"]

    # A damaged entry is rebuilt by the next preparation, which says so
    entry = next(p for p in store.iterdir() if not p.name.startswith(".") and p.is_dir())
    (entry / "scores.json").write_text("{}")
    third, third_lines = prepared("third")
    assert len(passes) == 2
    assert any("cache entry rebuilt: scores.json does not match its checksum" in line for line in third_lines)
    assert json.loads(third.base_scores_file.read_text()) == json.loads(first.base_scores_file.read_text())
    # another max_length: another fingerprint, a fresh pass
    other = spec_for(tiny_llama, max_length=48)
    preparing.prepare(other, folder.Experiment.create(other, tmp_path / "fourth"), splits.train,
                        splits.eval, splits.test)
    assert len(passes) == 3


def test_searched_models_each_reuse_their_own_base_scores(tiny_llama, tmp_path, store, monkeypatch):
    from tuner.experiment import folder, prepare as preparing
    from tuner.passes import tasks as model_passes
    from tuner.trial import reference
    from tuner.data.loading import load_pairs

    other = tmp_path / "other-model"
    shutil.copytree(tiny_llama, other)
    raw = bytearray((other / "model.safetensors").read_bytes())
    raw[-1] ^= 0x01  # another model: other weights
    (other / "model.safetensors").write_bytes(bytes(raw))
    spec = validate_spec({**spec_for(tiny_llama).model_dump(exclude_defaults=True),
                          "search": {"space": {"model.name": {"type": "choice",
                                                              "values": [str(tiny_llama), str(other)]}}}})
    splits = load_pairs(spec.data)
    passes = []
    real = reference.reference_pass
    monkeypatch.setattr(reference, "reference_pass", lambda *a: passes.append(1) or real(*a))
    lines = {}
    for name in ("first", "second"):
        experiment = folder.Experiment.create(spec, tmp_path / name)
        lines[name] = preparing.prepare(spec, experiment, splits.train, splits.eval, splits.test)
    assert len(passes) == 2  # one per model, in the first preparation only
    reused = [line for line in lines["second"] if line.startswith("base model ")]
    assert len(reused) == 2 and all("reused from the cache (fingerprint " in line for line in reused)
    assert [line.split(" (reused")[0] for line in reused] == \
        [line for line in lines["first"] if line.startswith("base model ")]
    runs = model_passes.recorded(experiment)["prepare"]
    assert [run["reused"] for run in runs] == [True, True] and runs[0]["fingerprint"] != runs[1]["fingerprint"]
