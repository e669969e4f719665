"""One DPO LoRA run as a plain TRL script, the way it is written by hand in a notebook: the baseline that
benchmarks/harness_overhead.py compares a 1-trial tuner search against."""

from __future__ import annotations

import sys
from pathlib import Path
import argparse
import time

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from tuner.data import as_conversation, load_pairs
from tuner.embedded import embedded_model_path
from tuner.spec import DataSpec


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--eval-steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    path = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    splits = load_pairs(DataSpec(max_eval_rows=24))
    train, held_out = splits.train, splits.eval
    config = DPOConfig(output_dir="/tmp/bare-dpo", per_device_train_batch_size=2, per_device_eval_batch_size=8,
                       max_steps=args.steps, eval_strategy="steps", eval_steps=args.eval_steps, logging_steps=1,
                       learning_rate=5e-5, beta=0.1, max_length=128, bf16=False, report_to="none",
                       save_strategy="no", lr_scheduler_type="constant", seed=0, disable_tqdm=True)
    trainer = DPOTrainer(model=model, args=config, train_dataset=as_conversation(train),
                         eval_dataset=as_conversation(held_out), processing_class=tokenizer,
                         peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                   "o_proj"], task_type="CAUSAL_LM"))
    trainer.train()
    trainer.model.save_pretrained("/tmp/bare-dpo/adapter")
    print(f"bare TRL DPO: {args.steps} steps in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
