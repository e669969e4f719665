"""Per-token log-probabilities of the answers in a preference batch, computed the cheap way, and a hook that lets
TRL's own loss code use them.

An eval batch (and the driver's reference pass) scores every answer under a frozen model, and only the answers'
tokens count. TRL's forward runs the model over each padded prompt+answer row and its LM head over every position:
the prompt is run once per answer (twice per pair, more when pairs share a prompt), padding is run too, and on a
CPU the 49k-wide head is applied to prompt and padding positions whose log-probs are thrown away. Here the backbone
runs each distinct prompt of the batch once, its answers continue from the prompt's key/value cache, and the head
projects only the positions that predict an answer token. Same log-probs as the full forward up to float rounding.
DPO's training steps on a CPU go through it too, with gradients (tuner.trial.evaluation).
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass

import torch

# Config fields that transform the logits after the LM head, or add a router loss to the output: the fast path does
# not reproduce them, so models with any of them set keep TRL's forward.
_UNSUPPORTED_CONFIG = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                       "logits_scaling", "output_router_logits")
HEAD_CHUNK = 512  # answer positions projected through the LM head at once: bounds the (positions x vocab) logits
# What one more forward call costs on a CPU, in padded token positions: a few narrow calls beat one wide padded one.
CALL_COST_TOKENS = 32


def supports(model) -> bool:
    """Whether to use `answer_log_probs` for this model: it computes exactly what the model's own causal-LM head
    would, and the model is on a CPU (where it was measured; on a GPU, TRL's Triton head already skips the prompt
    positions, and this path has not been measured there)."""
    if next(model.parameters()).device.type != "cpu":
        return False
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(config, "is_encoder_decoder", False) or model.get_output_embeddings() is None:
        return False
    return not any(getattr(text_config, name, None) for name in _UNSUPPORTED_CONFIG)


def answer_log_probs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                     labels: torch.Tensor) -> torch.Tensor:
    """log p(labels[r, t+1] | input_ids[r, :t+1]) as a (rows, length-1) float tensor, zero where labels[r, t+1] is
    -100: what TRL's fused LM head returns as `log_probs`. `model` is a causal LM (PreTrainedModel; LoRA layers
    injected into it are applied). Rows are right-padded, as TRL's preference collators make them.

    Differentiable: called with gradients on (training), a prompt shared by several answers receives the sum of
    their gradients, which is what running it once per answer gives."""
    rows, length = input_ids.shape
    device = input_ids.device
    scored = labels[:, 1:] != -100
    out = torch.zeros(rows, length - 1, dtype=torch.float32, device=device)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    prompts: dict[tuple[int, ...], int] = {}
    answers: list[_Answer] = []
    for row in range(rows):
        positions = scored[row].nonzero().flatten()
        if len(positions) == 0:
            continue
        first, last = int(positions[0]), int(positions[-1])
        if not bool(attention_mask[row, : last + 1].all()):  # not right-padded: score this batch the full way
            return _full_log_probs(model, input_ids, attention_mask, labels)
        # Position `first` (the prompt's last token) predicts the first answer token: the prompt is [0, first].
        prompt = prompts.setdefault(tuple(input_ids[row, : first + 1].tolist()), len(prompts))
        answers.append(_Answer(row, prompt, first, last))
    if not answers:
        return out

    backbone = model.base_model
    # 1. Every distinct prompt once, right-padded: padding after a prompt never reaches its real tokens.
    prompt_lengths = [len(p) for p in prompts]
    prompt_ids = torch.zeros(len(prompts), max(prompt_lengths), dtype=input_ids.dtype, device=device)
    prompt_mask = torch.zeros_like(prompt_ids)
    for tokens, index in prompts.items():
        prompt_ids[index, : len(tokens)] = torch.tensor(tokens, device=device)
        prompt_mask[index, : len(tokens)] = 1
    prompt_out = backbone(input_ids=prompt_ids, attention_mask=prompt_mask, use_cache=True)
    cache_layers = prompt_out.past_key_values.layers
    if any(type(layer).__name__ != "DynamicLayer" for layer in cache_layers):  # sliding window, linear attention
        return _full_log_probs(model, input_ids, attention_mask, labels)
    width_cached = prompt_ids.shape[1]

    # 2. The answers (all but their last token, which predicts nothing) continue from their prompt's cache, in
    #    buckets of similar length so that short answers are not padded to the longest one.
    states: dict[int, torch.Tensor] = {}
    for bucket in _buckets([a for a in answers if a.span]):
        width = max(a.span for a in bucket)
        selected = torch.tensor([a.prompt for a in bucket], device=device)
        cache = type(prompt_out.past_key_values)(
            [(layer.keys[selected], layer.values[selected]) for layer in cache_layers])
        continuation = torch.zeros(len(bucket), width, dtype=input_ids.dtype, device=device)
        mask = torch.cat([prompt_mask[selected], torch.zeros_like(continuation)], dim=1)
        positions = torch.zeros_like(continuation)
        for i, a in enumerate(bucket):
            continuation[i, : a.span] = input_ids[a.row, a.first + 1 : a.last + 1]
            mask[i, width_cached : width_cached + a.span] = 1
            positions[i] = prompt_lengths[a.prompt] + torch.arange(width, device=device)
        hidden = backbone(input_ids=continuation, attention_mask=mask, position_ids=positions,
                          past_key_values=cache, use_cache=True).last_hidden_state
        states.update({a.row: hidden[i, : a.span] for i, a in enumerate(bucket)})

    # 3. The LM head at the positions that predict an answer token, and nowhere else.
    hidden_states, where = [], []
    for a in answers:
        last_prompt_state = prompt_out.last_hidden_state[a.prompt, prompt_lengths[a.prompt] - 1 :][:1]
        row_states = torch.cat([last_prompt_state, states[a.row]]) if a.span else last_prompt_state
        keep = scored[a.row, a.first : a.last + 1]
        hidden_states.append(row_states[keep])
        where.append(torch.stack([torch.full_like(keep.nonzero().flatten(), a.row),
                                  a.first + keep.nonzero().flatten()]))
    rows_index, positions_index = torch.cat(where, dim=1)
    targets = labels[rows_index, positions_index + 1]
    out[rows_index, positions_index] = _head_log_probs(model.get_output_embeddings(), torch.cat(hidden_states),
                                                       targets)
    return out


@dataclass
class _Answer:
    row: int
    prompt: int  # index of its prompt in the prompt batch
    first: int  # position of the prompt's last token
    last: int  # position of the answer's second-to-last token (the last that predicts one)

    @property
    def span(self) -> int:
        return self.last - self.first


def _buckets(answers: list[_Answer]) -> list[list[_Answer]]:
    """Answers sorted by length and cut into buckets that minimise padded positions plus a fixed cost per forward
    call (dynamic programming over the sorted lengths)."""
    ordered = sorted(answers, key=lambda a: a.span)
    best = [0.0] + [float("inf")] * len(ordered)  # best[j]: cost of the first j answers
    cut = [0] * (len(ordered) + 1)
    for j in range(1, len(ordered) + 1):
        for i in range(j):
            cost = best[i] + CALL_COST_TOKENS + (j - i) * ordered[j - 1].span
            if cost < best[j]:
                best[j], cut[j] = cost, i
    buckets, j = [], len(ordered)
    while j > 0:
        buckets.append(ordered[cut[j] : j])
        j = cut[j]
    return buckets[::-1]


def _head_log_probs(head, hidden_states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    values = []
    for start in range(0, len(targets), HEAD_CHUNK):
        logits = head(hidden_states[start : start + HEAD_CHUNK]).float()
        chunk_targets = targets[start : start + HEAD_CHUNK].unsqueeze(-1)
        values.append((logits.gather(-1, chunk_targets) - torch.logsumexp(logits, -1, keepdim=True)).squeeze(-1))
    return torch.cat(values)


def _full_log_probs(model, input_ids, attention_mask, labels) -> torch.Tensor:
    hidden_states = model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                     use_cache=False).last_hidden_state[:, :-1]
    scored = labels[:, 1:] != -100
    out = torch.zeros(scored.shape, dtype=torch.float32, device=input_ids.device)
    if scored.any():
        out[scored] = _head_log_probs(model.get_output_embeddings(), hidden_states[scored], labels[:, 1:][scored])
    return out


@contextlib.contextmanager
def recording_forward(model, calls: list, fast: bool = True):
    """While inside, every `model(..., labels=..., fused_lm_head=True)` call (how TRL's DPOTrainer runs the policy
    and the reference, in training and in eval) appends `(log_probs, label_mask)` to `calls`. With `fast`, the call
    is answered by `answer_log_probs` and the output's other per-token fields (entropy, mean logits, top-1 hits:
    metrics nobody ranks on) are zeros; without it, by TRL's forward, whose output is recorded as it is.

    `model` is the trainer's model (a PEFT model or not): TRL patched its base model."""
    from trl.trainer.utils import FusedCausalLMOutput

    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    patched = model.forward  # TRL's fused forward, an attribute of this instance

    def forward(self, *args, fused_lm_head=False, labels=None, **kwargs):
        if not fused_lm_head:
            return patched(*args, labels=labels, **kwargs)
        if not fast:
            output = patched(*args, labels=labels, fused_lm_head=True, **kwargs)
            calls.append((output.log_probs.detach(), labels[:, 1:] != -100))
            return output
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        mask = labels[:, 1:] != -100
        log_probs = answer_log_probs(self, input_ids, kwargs.get("attention_mask"), labels)
        calls.append((log_probs.detach(), mask))
        zeros = torch.zeros_like(log_probs)
        return FusedCausalLMOutput(loss=-log_probs.sum() / mask.sum().clamp(min=1), log_probs=log_probs,
                                   entropy=zeros, mean_logits=zeros, is_top1=zeros.bool(), label_mask=mask)

    model.forward = types.MethodType(forward, model)
    try:
        yield calls
    finally:
        model.forward = patched
