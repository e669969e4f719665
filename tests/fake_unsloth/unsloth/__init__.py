"""Test only: a stand-in for unsloth on a CPU machine, where the real one raises on import. It has the two calls
tuner makes (tuner.trial.backends): `FastLanguageModel.from_pretrained` loads the model with transformers in float32
(the real one quantizes it to 4 bits on a GPU) and `FastLanguageModel.get_peft_model` wraps it with PEFT's LoRA,
as the real one does. Everything around them is tuner's, TRL's and Ray's own.

Put `tests/fake_unsloth` first on PYTHONPATH (trials and Ray tasks run in other processes). With
FAKE_UNSLOTH_LOG set, each call appends one JSON line there: the call, the process id and its arguments, so a test
can tell which process loaded which model how.
"""

from __future__ import annotations

import json
import os

__version__ = "0.0.0+fake"


def _log(call: str, **fields) -> None:
    path = os.environ.get("FAKE_UNSLOTH_LOG")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"call": call, "pid": os.getpid(), **fields}, default=str) + "\n")


def read_log(path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


class FastLanguageModel:
    @staticmethod
    def from_pretrained(model_name, max_seq_length=2048, dtype=None, load_in_4bit=True, **kwargs):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _log("from_pretrained", model_name=model_name, max_seq_length=max_seq_length, load_in_4bit=load_in_4bit,
             return_logits=os.environ.get("UNSLOTH_RETURN_LOGITS"),
             compile_location=os.environ.get("UNSLOTH_COMPILE_LOCATION"))
        model = AutoModelForCausalLM.from_pretrained(model_name, dtype=torch.float32)
        return model, AutoTokenizer.from_pretrained(model_name)

    @staticmethod
    def get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0.0, target_modules=None,
                       use_gradient_checkpointing=True, random_state=3407, **kwargs):
        from peft import LoraConfig, get_peft_model

        _log("get_peft_model", r=r, lora_alpha=lora_alpha, target_modules=target_modules)
        return get_peft_model(model, LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                                target_modules=target_modules, task_type="CAUSAL_LM"))
