"""One DPO LoRA run as a plain TRL script, the way it is written by hand in a notebook: the baseline that
benchmarks/harness_overhead.py (one configuration) and benchmarks/vs_loop.py (a search's configurations, one script
after another) compare tuner against.

It does what a user needs to get the same answers as a tuner trial, the way a user would write it: its own
reference pass (TRL's precompute_ref_log_probs), TRL's eval every --eval-steps, the held-out preference accuracy
by a second pass over the eval pairs after each eval, and the adapter saved at each eval. `--out` appends one JSON
line per eval (step, wall clock, metrics).

    python benchmarks/bare_dpo.py [--steps 8 --eval-steps 4 --beta 0.1 --learning-rate 5e-5 --lora-r 8]
"""

from __future__ import annotations

import sys
from pathlib import Path
import argparse
import json
import time

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

STARTED = time.time()


class LegacyPreferenceAccuracy:
    """Held-out preference accuracy as a second forward pass over the eval pairs, with full logits: tuner's own
    evaluator before the one-pass eval (tuner/quality.py at f5fc202), and what a user script would do."""

    def __init__(self, tokenizer, pairs, max_length: int, batch_size: int = 8):
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.batch_size = batch_size
        self.pairs = []
        for row in pairs:
            chosen = self._encode(tokenizer, row["prompt"], row["chosen"], max_length)
            rejected = self._encode(tokenizer, row["prompt"], row["rejected"], max_length)
            if chosen and rejected:
                self.pairs.append((chosen, rejected))

    @staticmethod
    def _encode(tokenizer, prompt, completion, max_length):
        user = [{"role": "user", "content": prompt}]
        prompt_ids = tokenizer.apply_chat_template(user, add_generation_prompt=True, return_dict=True)["input_ids"]
        full_ids = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": completion}],
                                                 return_dict=True)["input_ids"]
        full_ids = list(full_ids)[:max_length]
        return (full_ids, len(prompt_ids)) if len(full_ids) > len(prompt_ids) else None

    @torch.no_grad()
    def _mean_logps(self, model, sequences):
        device = next(model.parameters()).device
        means = []
        for start in range(0, len(sequences), self.batch_size):
            batch = sequences[start : start + self.batch_size]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros_like(ids)
            completion = torch.zeros_like(ids, dtype=torch.bool)
            for i, (tokens, prompt_length) in enumerate(batch):
                ids[i, : len(tokens)] = torch.tensor(tokens)
                attention[i, : len(tokens)] = 1
                completion[i, prompt_length : len(tokens)] = True
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
            logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].to(device).unsqueeze(-1))
            mask = completion[:, 1:].to(device)
            means.append(((logps.squeeze(-1) * mask).sum(-1) / mask.sum(-1)).cpu())
        return torch.cat(means) if means else torch.empty(0)

    def __call__(self, model) -> float:
        was_training = model.training
        model.eval()
        try:
            chosen = self._mean_logps(model, [c for c, _ in self.pairs])
            rejected = self._mean_logps(model, [r for _, r in self.pairs])
        finally:
            model.train(was_training)
        return float((chosen > rejected).float().mean())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local Hugging Face folder (default: the embedded model)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--eval-steps", type=int, default=4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=int, default=16)
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--eval-batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--eval-rows", type=int, default=24)
    parser.add_argument("--data", help="the spec's data section as JSON (the same split and eval pairs as a search); "
                                       "default: the bundled data with --eval-rows eval pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, every core)")
    parser.add_argument("--base-score", action="store_true", help="also score the base model once, before training")
    parser.add_argument("--out", type=Path, help="append one JSON line per eval here")
    parser.add_argument("--save-dir", type=Path, default=Path("/tmp/bare-dpo"))
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from tuner.data.loading import as_conversation, load_pairs
    from tuner.trial.embedded import embedded_model_path
    from tuner.spec import DataSpec

    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.model or embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    data_spec = DataSpec.model_validate(json.loads(args.data)) if args.data else DataSpec(max_eval_rows=args.eval_rows)
    splits = load_pairs(data_spec)
    train, held_out = splits.train, splits.eval
    # The pairs the steps consume, as tuner's driver keeps them: same pairs, same sampler order, same training.
    train = train.select(range(min(len(train), args.steps * args.train_batch)))
    pref_accuracy = LegacyPreferenceAccuracy(tokenizer, held_out, args.max_length, args.eval_batch)
    records = []

    class Record(TrainerCallback):
        def on_evaluate(self, _args, state, control, metrics=None, model=None, **kwargs):
            row = {"step": state.global_step, "time": time.time(), "started": STARTED, **(metrics or {}),
                   "eval_pref_accuracy": pref_accuracy(model)}
            model.save_pretrained(args.save_dir / f"step-{state.global_step}")
            records.append(row)
            if args.out:
                with args.out.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")

    if args.base_score:
        print(f"base model eval_pref_accuracy = {pref_accuracy(model):.3f}")
    config = DPOConfig(output_dir=str(args.save_dir), per_device_train_batch_size=args.train_batch,
                       per_device_eval_batch_size=args.eval_batch, max_steps=args.steps, eval_strategy="steps",
                       eval_steps=args.eval_steps, logging_steps=1, learning_rate=args.learning_rate,
                       beta=args.beta, max_length=args.max_length, bf16=False, report_to="none", save_strategy="no",
                       lr_scheduler_type="constant", warmup_steps=0, seed=args.seed, disable_tqdm=True,
                       dataloader_num_workers=0, precompute_ref_log_probs=True)
    trainer = DPOTrainer(model=model, args=config, train_dataset=as_conversation(train),
                         eval_dataset=as_conversation(held_out), processing_class=tokenizer, callbacks=[Record()],
                         peft_config=LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                                                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                                task_type="CAUSAL_LM"))
    trainer.train()
    if not records or records[-1]["step"] != trainer.state.global_step:
        trainer.evaluate()
    best = max(r["eval_pref_accuracy"] for r in records)
    print(f"bare TRL DPO: {args.steps} steps in {time.time() - STARTED:.1f} s; best eval_pref_accuracy {best:.3f}")


if __name__ == "__main__":
    main()
