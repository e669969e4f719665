"""Held-out preference accuracy and drift: the quality measures that DPO trials, ORPO trials and the base model share.

Both come from per-pair log-probabilities on TRL's own tokenization of the eval pairs (the chat template, the
answer from where prompt and prompt+answer diverge, `max_length` truncation keeping the start): the sum over each
answer's tokens and their count.

- `eval_pref_accuracy`: the share of pairs where the model gives the chosen answer a higher mean per-token
  log-likelihood than the rejected one. Means, not sums: a sum favours the shorter answer whatever its content.
- `eval_drift`: how far the policy moved from its reference on the eval answers, as the mean per-token log-ratio
  log pi(token) - log ref(token) over every token of the chosen and rejected answers (`eval_drift_chosen`,
  `eval_drift_rejected`: over each side). 0 for the untrained policy; negative when training made the eval answers
  less likely than under the reference. The reference is DPO's reference; for ORPO, which has none, the base model.

The base model's scores come from the driver's reference pass (tuner.reference); a trial's from its one eval forward
pass (tuner.evaluation). Each keeps its per-pair outcomes: `pair_outcomes.json` in every checkpoint,
`tuner/base_outcomes.json` for the base model, both {"pairs": [pair ids in eval order], "correct": [0/1, ...]}.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

METRIC = "eval_pref_accuracy"
DRIFT = "eval_drift"
PAIR_ID = "pair_id"  # a column of the data when it has stable ids; else the row's index in the eval split
OUTCOMES_FILE = "pair_outcomes.json"


def pair_ids(dataset) -> list:
    return list(dataset[PAIR_ID]) if PAIR_ID in dataset.column_names else list(range(len(dataset)))


def with_pair_ids(dataset):
    """The dataset with a `pair_id` column (its row index where it has none), which every later step (tokenization
    that drops rows included) carries along."""
    return dataset if PAIR_ID in dataset.column_names else dataset.add_column(PAIR_ID, list(range(len(dataset))))


@dataclass
class PairScores:
    """One model's log-probabilities of each pair's answers: sums over the answer's tokens, and token counts."""

    pairs: list = field(default_factory=list)
    chosen_logps: list[float] = field(default_factory=list)
    rejected_logps: list[float] = field(default_factory=list)
    chosen_tokens: list[int] = field(default_factory=list)
    rejected_tokens: list[int] = field(default_factory=list)

    def extend(self, chosen_logps, rejected_logps, chosen_tokens, rejected_tokens) -> None:
        self.chosen_logps += [float(v) for v in chosen_logps]
        self.rejected_logps += [float(v) for v in rejected_logps]
        self.chosen_tokens += [int(v) for v in chosen_tokens]
        self.rejected_tokens += [int(v) for v in rejected_tokens]

    def scored(self) -> list[int]:
        """Indices of the pairs with at least one token on each side (truncation can leave none)."""
        return [i for i, (c, r) in enumerate(zip(self.chosen_tokens, self.rejected_tokens)) if c > 0 and r > 0]

    def correct(self) -> list[int]:
        return [int(self.chosen_logps[i] / self.chosen_tokens[i] > self.rejected_logps[i] / self.rejected_tokens[i])
                for i in self.scored()]

    def outcomes(self) -> dict[str, list]:
        kept = self.scored()
        return {"pairs": [self.pairs[i] for i in kept], "correct": self.correct()}

    def accuracy(self) -> dict[str, float]:
        correct = self.correct()
        if not correct:
            return {}
        if not all(math.isfinite(self.chosen_logps[i]) and math.isfinite(self.rejected_logps[i])
                   for i in self.scored()):
            # NaN compares as False: a diverged model would score as "always wrong", a number that gets ranked
            return {METRIC: float("nan")}
        return {METRIC: sum(correct) / len(correct)}

    def drift(self, reference: PairScores) -> dict[str, float]:
        """Mean per-token log-ratio to `reference`, over the pairs both scored on the same tokens (same ids, same
        counts: a reference tokenized with another max_length or model says nothing about them)."""
        theirs = dict(zip(reference.pairs, zip(reference.chosen_logps, reference.rejected_logps,
                                               reference.chosen_tokens, reference.rejected_tokens)))
        sums = {"chosen": [0.0, 0], "rejected": [0.0, 0]}
        for pair, mine in zip(self.pairs, zip(self.chosen_logps, self.rejected_logps, self.chosen_tokens,
                                             self.rejected_tokens)):
            other = theirs.get(pair)
            if other is None or other[2:] != mine[2:]:
                continue
            for side, (logp, ref_logp, tokens) in {"chosen": (mine[0], other[0], mine[2]),
                                                   "rejected": (mine[1], other[1], mine[3])}.items():
                sums[side][0] += logp - ref_logp
                sums[side][1] += tokens
        total_tokens = sums["chosen"][1] + sums["rejected"][1]
        if total_tokens == 0:
            return {}
        result = {DRIFT: (sums["chosen"][0] + sums["rejected"][0]) / total_tokens}
        result.update({f"{DRIFT}_{side}": s / n for side, (s, n) in sums.items() if n})
        return result

    def metrics(self, reference: PairScores | None = None, prefix: str = "eval") -> dict[str, float]:
        """eval_pref_accuracy and, with a reference, eval_drift(_chosen, _rejected); under `prefix` (e.g. test_)."""
        result = self.accuracy()
        if reference is not None:
            result.update(self.drift(reference))
        return {f"{prefix}_{k.removeprefix('eval_')}": v for k, v in result.items()}

    def means(self, ids: list) -> tuple[list[float], list[float]]:
        """Each answer's mean per-token log-likelihood for the pairs `ids` (in that order), NaN for a pair not
        scored (its answer truncated away, or not in these scores)."""
        nan = float("nan")
        found = {str(pair): (c / nc, r / nr) if nc > 0 and nr > 0 else (nan, nan)
                 for pair, c, r, nc, nr in zip(self.pairs, self.chosen_logps, self.rejected_logps, self.chosen_tokens,
                                               self.rejected_tokens)}
        chosen, rejected = zip(*(found.get(str(pair), (nan, nan)) for pair in ids)) if ids else ((), ())
        return list(chosen), list(rejected)

    # -------------------------------------------------------------------------------------------- files

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: str | Path) -> PairScores:
        return cls(**json.loads(Path(path).read_text()))


def pair_lengths(tokenizer, pairs) -> list[tuple[int, int]]:
    """Per pair, (the max_length it needs to keep an answer of both sides, the max_length that keeps it whole), as
    TRL tokenizes it (the chat template when the tokenizer has one; truncation keeps the start): a pair whose prompt
    fills max_length has nothing left to compare and is not scored."""
    def ids(text) -> list:
        if tokenizer.chat_template:
            encoded = tokenizer.apply_chat_template(text, add_generation_prompt=text[-1]["role"] == "user",
                                                    tokenize=True)
        else:
            encoded = tokenizer(text)
        return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)

    def turns(role: str, value) -> list:
        return value if isinstance(value, list) else [{"role": role, "content": value}]

    lengths = []
    for row in pairs:
        if tokenizer.chat_template:
            prompt = ids(turns("user", row["prompt"]))
            whole = [ids(turns("user", row["prompt"]) + turns("assistant", row[side]))
                     for side in ("chosen", "rejected")]
        else:
            prompt = ids(row["prompt"])
            whole = [ids(row["prompt"] + row[side]) for side in ("chosen", "rejected")]
        lengths.append((len(prompt) + 1, max(len(w) for w in whole)))
    return lengths


def shortest_max_length(spec) -> int:
    """model.max_length, or its shortest value when it is searched: where truncation cuts most."""
    searched = spec.search.space.get("model.max_length")
    return spec.model.max_length if searched is None else int(min(searched.values or [searched.low]))


def length_line(tokenizer, pairs, max_length: int, what: str) -> str:
    """The token lengths of the prompts and answers of `pairs` (median and 95th percentile; per pair, its longer
    answer) against `max_length`, and how many pairs it truncates: what a user needs to choose model.max_length
    before paying for a search."""
    lengths = pair_lengths(tokenizer, pairs)
    if not lengths:
        return f"data tokens: no pair in {what}"
    prompts = [needed - 1 for needed, _ in lengths]
    answers = [whole - prompt for (_, whole), prompt in zip(lengths, prompts)]
    truncated = sum(whole > max_length for _, whole in lengths)
    return (f"data tokens (median / 95th percentile over {what}): prompts {_median_p95(prompts)}, answers "
            f"{_median_p95(answers)}; {truncated} of {len(lengths)} pairs longer than model.max_length={max_length}, "
            f"truncated")


def _median_p95(values: list[int]) -> str:
    ordered = sorted(values)
    rank = max(0, math.ceil(0.95 * len(ordered)) - 1)  # nearest rank
    return f"{ordered[(len(ordered) - 1) // 2]} / {ordered[rank]}"


def write_outcomes(scores: PairScores, path: Path) -> None:
    path.write_text(json.dumps(scores.outcomes()))
