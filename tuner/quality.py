"""Held-out preference accuracy: one quality measure that DPO trials, ORPO trials and the base model share.

A pair counts as right when the model gives the chosen answer a higher mean per-token log-likelihood than the
rejected one. Means, not sums: a sum favours the shorter answer whatever its content. Reported as
`eval_pref_accuracy` at every evaluation; the base model's value is computed once per search.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

METRIC = "eval_pref_accuracy"


@dataclass
class Sequence:
    ids: list[int]
    completion_start: int


def _encode(tokenizer, prompt, completion, max_length: int) -> Sequence | None:
    if tokenizer.chat_template:
        user = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        answer = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
        prompt_ids = tokenizer.apply_chat_template(user, add_generation_prompt=True, return_dict=True)["input_ids"]
        full_ids = tokenizer.apply_chat_template(user + answer, return_dict=True)["input_ids"]
    else:
        prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        full_ids = prompt_ids + tokenizer(completion + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    full_ids = list(full_ids)[:max_length]
    if len(full_ids) <= len(prompt_ids):
        return None  # the answer was truncated away: nothing to compare
    return Sequence(full_ids, len(prompt_ids))


class PreferenceAccuracy:
    """Tokenizes the eval pairs once; calling it with a model scores them."""

    def __init__(self, tokenizer, pairs, max_length: int, batch_size: int = 8):
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.batch_size = batch_size
        self.pairs = []
        self.kept: list[int] = []  # position in `pairs` of each scored pair (one truncated to nothing is not)
        for index, row in enumerate(pairs):
            chosen = _encode(tokenizer, row["prompt"], row["chosen"], max_length)
            rejected = _encode(tokenizer, row["prompt"], row["rejected"], max_length)
            if chosen and rejected:
                self.pairs.append((chosen, rejected))
                self.kept.append(index)

    @torch.no_grad()
    def mean_logps(self, model, sequences: list[Sequence]) -> torch.Tensor:
        device = next(model.parameters()).device
        means = []
        for start in range(0, len(sequences), self.batch_size):
            batch = sequences[start : start + self.batch_size]
            width = max(len(s.ids) for s in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros_like(ids)
            completion = torch.zeros_like(ids, dtype=torch.bool)
            for i, s in enumerate(batch):
                ids[i, : len(s.ids)] = torch.tensor(s.ids)
                attention[i, : len(s.ids)] = 1
                completion[i, s.completion_start : len(s.ids)] = True
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
            logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].to(device).unsqueeze(-1))
            mask = completion[:, 1:].to(device)
            means.append(((logps.squeeze(-1) * mask).sum(-1) / mask.sum(-1)).cpu())
        return torch.cat(means) if means else torch.empty(0)

    def __call__(self, model) -> dict[str, float]:
        if not self.pairs:
            return {}
        was_training = model.training
        model.eval()
        try:
            chosen = self.mean_logps(model, [c for c, _ in self.pairs])
            rejected = self.mean_logps(model, [r for _, r in self.pairs])
        finally:
            model.train(was_training)
        return {METRIC: float((chosen > rejected).float().mean())}


    def pair_logps(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean per-token log-likelihood of each scored pair's chosen and rejected answer (in `kept` order), for
        per-pair outcomes. Sequences run in length order, so that a batch pads little."""
        sequences = [s for pair in self.pairs for s in pair]
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].ids))
        was_training = model.training
        model.eval()
        try:
            means = self.mean_logps(model, [sequences[i] for i in order])
        finally:
            model.train(was_training)
        unsorted = torch.empty_like(means)
        unsorted[torch.tensor(order, dtype=torch.long)] = means
        return unsorted[0::2], unsorted[1::2]


def base_model_metrics(base, pairs, max_length: int, batch_size: int = 8) -> dict[str, float]:
    """The base model's score (`base` from backends.load_base) on the eval pairs, once per search."""
    return PreferenceAccuracy(base.tokenizer, pairs, max_length, batch_size)(base.model)
