from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from tuner.experiment.folder import Experiment
from tests.analysis.fabricated import frames
from tuner.export import ExportError, choose, export, main


def test_export_refuses_when_no_trial_has_a_finite_metric(tmp_path):
    trials, history = frames({"a": [math.nan], "b": [0.3]}, status={"b": "errored"})
    experiment = Experiment(tmp_path, trials=trials, history=history)
    with pytest.raises(ExportError, match="no trial reported a finite eval_rewards/margins"):
        choose(experiment, None, "eval_rewards/margins", "max")
    with pytest.raises(ExportError, match="--trial zz: no such trial"):
        choose(experiment, "zz", "eval_rewards/margins", "max")
    with pytest.raises(ExportError, match="has no trials"):
        choose(Experiment(tmp_path, trials=trials.iloc[0:0], history=history), None, "x", "max")


def tune_folder(root: Path, adapter_config: dict | None = None, adapter: Path | None = None) -> Path:
    """A Tune experiment folder with one finished trial whose one report kept its checkpoint (an adapter): the files
    of `adapter` when given, else a fabricated one whose adapter_config.json is `adapter_config`."""
    folder = root / "exp"
    trial = {"trial_id": "t1", "status": "TERMINATED", "config": {"train.beta": 0.1}, "relative_logdir": "trial_t1"}
    metadata = {"last_result": {"step": 2}, "error_filename": None}
    folder.mkdir(parents=True)
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [[json.dumps(trial), json.dumps(metadata)]]}))
    checkpoint = folder / "trial_t1" / "checkpoint_000000"
    if adapter is not None:
        shutil.copytree(adapter, checkpoint)
    else:
        checkpoint.mkdir(parents=True)
        adapter_config = adapter_config or {"base_model_name_or_path": "base"}
        (checkpoint / "adapter_config.json").write_text(json.dumps(adapter_config))
        (checkpoint / "adapter_model.safetensors").write_text("weights")
    (folder / "trial_t1" / "result.json").write_text(json.dumps(
        {"eval_rewards/margins": 0.5, "step": 2, "max_steps": 2, "training_iteration": 1,
         "checkpoint_dir_name": "checkpoint_000000"}) + "\n")
    return folder


def test_export_refuses_a_non_empty_out_without_force(tmp_path, capsys):
    folder, out = tune_folder(tmp_path), tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my own notes")
    assert main([str(folder), "--out", str(out)]) == 2
    assert (f"tuner.export: --out: {out} is not empty (README.md); choose a new or empty folder, or pass --force "
            f"to replace it whole") in capsys.readouterr().err
    assert (out / "README.md").read_text() == "my own notes" and [p.name for p in out.iterdir()] == ["README.md"]
    (out / "README.md").unlink()
    assert export(folder, out) == out  # an empty folder is fine
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "trial.json",
                                               "README.md"}


def test_export_with_force_replaces_the_folder_whole(tmp_path):
    folder, out = tune_folder(tmp_path), tmp_path / "adapter"
    (out / "merged").mkdir(parents=True)  # an earlier --merge of another adapter
    (out / "merged" / "model.safetensors").write_text("stale")
    (out / "notes.txt").write_text("stale")
    export(folder, out, force=True)
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "trial.json",
                                               "README.md"}
    assert json.loads((out / "trial.json").read_text())["trial_id"] == "t1"
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]  # nothing left beside it


def test_force_never_replaces_the_current_folder_or_the_results(tmp_path, monkeypatch):
    folder = tune_folder(tmp_path)
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    monkeypatch.chdir(work / "sub")
    with pytest.raises(ExportError, match="would delete the current folder"):
        export(folder, Path(".."), force=True)
    with pytest.raises(ExportError, match="would delete the results folder"):
        export(folder, folder / "trial_t1", force=True)
    assert (work / "sub").is_dir() and (folder / "trial_t1" / "result.json").is_file()


# ---------------------------------------------------------------------------------------------- 4-bit bases

BNB_4BIT = {"quant_method": "bitsandbytes", "_load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}


def quantized_copy(model: Path, folder: Path) -> Path:
    """`model` as a folder that says it is bitsandbytes-quantized (its weights stay as they are: nothing loads them)."""
    shutil.copytree(model, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": BNB_4BIT}))
    return folder


def lora_adapter(model: Path, folder: Path, trained_on: str):
    """A LoRA adapter on `model` with random weights (so it changes the output), saved with the tokenizer to
    `folder` as a trial saves it, its config naming `trained_on` as the base the trial loaded; returns the PEFT
    model it saved."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(model).save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": trained_on}))
    return peft_model.eval()


def test_an_adapter_trained_on_a_pre_quantized_hub_repo_is_exported_for_the_full_precision_repo(tmp_path, capsys):
    trained_on = "unsloth/Llama-3.2-1B-Instruct-bnb-4bit"
    folder = tune_folder(tmp_path, {"base_model_name_or_path": trained_on, "revision": "abc123", "r": 8})
    out = tmp_path / "adapter"
    assert main([str(folder), "--out", str(out)]) == 0
    assert (f"note: trained on the 4-bit {trained_on}; its full-precision base is unsloth/Llama-3.2-1B-Instruct"
            in capsys.readouterr().out)
    assert json.loads((out / "adapter_config.json").read_text()) == {
        "base_model_name_or_path": "unsloth/Llama-3.2-1B-Instruct", "revision": None, "r": 8}
    trial = json.loads((out / "trial.json").read_text())
    assert (trial["base_model"], trial["trained_on_base"]) == ("unsloth/Llama-3.2-1B-Instruct", trained_on)
    card = (out / "README.md").read_text()
    assert "base_model: unsloth/Llama-3.2-1B-Instruct\n" in card
    assert 'AutoModelForCausalLM.from_pretrained("unsloth/Llama-3.2-1B-Instruct")' in card
    assert f"Base model: trained on the 4-bit {trained_on}" in card


def test_a_full_precision_base_is_exported_as_it_was(tmp_path, capsys):
    folder, out = tune_folder(tmp_path), tmp_path / "adapter"
    assert main([str(folder), "--out", str(out)]) == 0
    assert "note:" not in capsys.readouterr().out
    assert (out / "adapter_config.json").read_bytes() == (
        folder / "trial_t1" / "checkpoint_000000" / "adapter_config.json").read_bytes()
    trial = json.loads((out / "trial.json").read_text())
    assert trial["base_model"] == "base" and "trained_on_base" not in trial and "base_note" not in trial
    assert "Base model:" not in (out / "README.md").read_text()


def test_an_adapter_whose_test_scoring_needs_another_machine_is_still_exported(tmp_path, capsys, monkeypatch):
    """A GPU search's adapter exported on a laptop: its test scoring would need the search's 4-bit runtime."""
    import tuner.export
    from tuner.trial import backends

    def needs_the_gpu(experiment, best):
        monkeypatch.setattr(backends, "cuda_available", lambda: False)
        backends.check_available(backends.PassRuntime("unsloth", "cuda", "4bit"))

    monkeypatch.setattr(tuner.export, "summarize_test_split", needs_the_gpu)
    folder, out = tune_folder(tmp_path), tmp_path / "adapter"
    assert main([str(folder), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "note: the test split was not scored here: " in said and "needs a CUDA GPU" in said
    trial = json.loads((out / "trial.json").read_text())
    assert trial["test"] is None and "unsloth, 4bit" in trial["test_note"]
    assert (out / "adapter_model.safetensors").is_file()


def quantized_only_folder(root: Path) -> Path:
    """A local model folder that is itself bitsandbytes-quantized (config.json only: the export loads no weights)."""
    folder = root / "Llama-bnb-4bit-local"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": BNB_4BIT}))
    return folder


def test_merge_onto_a_quantized_only_base_without_base_is_refused(tmp_path, capsys):
    quantized = quantized_only_folder(tmp_path)
    folder, out = tune_folder(tmp_path, {"base_model_name_or_path": str(quantized)}), tmp_path / "adapter"
    assert main([str(folder), "--out", str(out), "--merge"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"tuner.export: --merge: the adapter's base {quantized} is quantized (bitsandbytes 4-bit) and a merge needs "
        f"full-precision weights; pass --base pointing at the full-precision model (a folder or hub id)"]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_a_quantized_only_base_exports_the_adapter_with_a_note(tmp_path, capsys):
    quantized = quantized_only_folder(tmp_path)
    folder, out = tune_folder(tmp_path, {"base_model_name_or_path": str(quantized)}), tmp_path / "adapter"
    assert main([str(folder), "--out", str(out)]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert printed == [f"note: the base {quantized} is quantized (bitsandbytes 4-bit) and no full-precision "
                       f"counterpart is known: loading the adapter needs that quantized base (bitsandbytes on a CUDA "
                       f"machine), or --base naming the full-precision model"]
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(quantized)
    trial = json.loads((out / "trial.json").read_text())
    assert trial["base_note"] == printed[0].removeprefix("note: ") and "trained_on_base" not in trial
    assert f"Base model: {trial['base_note']}." in (out / "README.md").read_text()


def test_base_flag_errors_are_one_line(tmp_path, capsys):
    folder = tune_folder(tmp_path, {"base_model_name_or_path": str(quantized_only_folder(tmp_path))})
    assert main([str(folder), "--out", str(tmp_path / "adapter"), "--base", "not/a/hub/id"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "tuner.export: --base: no such folder, and not a hub id of the form org/name, got 'not/a/hub/id'"]


def test_an_adapter_trained_on_a_quantized_folder_loads_and_merges_on_the_full_precision_base(tmp_path, tiny_llama,
                                                                                                capsys):
    """A real adapter, exported with --base naming the full-precision folder: plain PEFT loads it there, it
    generates, and --merge merged it into the full-precision weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantized = quantized_copy(tiny_llama, tmp_path / "tiny-bnb-4bit")
    trained = lora_adapter(tiny_llama, tmp_path / "trained", str(quantized))
    folder, out = tune_folder(tmp_path, adapter=tmp_path / "trained"), tmp_path / "adapter"
    full = str(tiny_llama.resolve())
    assert main([str(folder), "--out", str(out), "--base", str(tiny_llama), "--merge"]) == 0
    assert (f"note: trained on {quantized}; the full-precision base named with --base is {full}"
            in capsys.readouterr().out)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == full
    assert json.loads((out / "trial.json").read_text())["trained_on_base"] == str(quantized)
    assert f"base_model: {full}\n" in (out / "README.md").read_text()

    tokenizer = AutoTokenizer.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"]).eval()
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"]),
                                       str(out)).eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        logits = loaded(**ids).logits
        assert torch.allclose(logits, trained(**ids).logits, atol=1e-5)  # the trained adapter, whole
        assert not torch.allclose(logits, base(**ids).logits, atol=1e-3)  # and it changes the model
        assert torch.allclose(merged(**ids).logits, logits, atol=1e-4)
        generated = loaded.generate(**ids, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 4
