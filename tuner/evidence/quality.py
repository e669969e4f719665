"""Held-out preference accuracy and drift: the quality measures that DPO trials, ORPO trials and the base model share.

Both come from per-pair log-probabilities on TRL's own tokenization of the eval pairs (the chat template, the
answer from where prompt and prompt+answer diverge, `max_length` truncation keeping the start): the sum over each
answer's tokens and their count.

- `eval_pref_accuracy`: the share of pairs where the model gives the chosen answer a higher mean per-token
  log-likelihood than the rejected one. Means, not sums: a sum favours the shorter answer whatever its content.
- `eval_pref_margin`: the same preference as a continuous number, on the same pairs: the mean over pairs of the
  chosen answer's mean per-token log-likelihood minus the rejected one's (nats per token). It moves before a pair
  changes side, so it separates trials whose accuracies tie (tuner.experiment.ranking breaks ties with it).
- `eval_pref_accuracy/GROUP`: the accuracy on each group of pairs (data.group_column), when the pairs have groups.
- Guard groups (`search.guard_groups`): groups that must not get worse than the base model. `eval_pref_accuracy`
  and `eval_pref_margin` then cover the other groups (what the search optimises), and each guard group is compared
  with the base model pair by pair: `eval_guard/GROUP` is the change in accuracy (trial minus base), and
  `eval_guard_broken` counts the guard groups where the trial is clearly worse (see `guard_broken`).
- `eval_drift`: how far the policy moved from its reference on the eval answers, as the mean per-token log-ratio
  log pi(token) - log ref(token) over every token of the chosen and rejected answers (`eval_drift_chosen`,
  `eval_drift_rejected`: over each side). 0 for the untrained policy; negative when training made the eval answers
  less likely than under the reference. The reference is DPO's reference; for ORPO, which has none, the base model.

The base model's scores come from the driver's reference pass (tuner.trial.reference); a trial's from its one eval
forward pass (tuner.trial.evaluation). Each keeps its per-pair outcomes: `pair_outcomes.json` in every checkpoint,
`tuner/base_outcomes.json` for the base model, both {"pairs": [pair ids in eval order], "correct": [0/1, ...]}.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

METRIC = "eval_pref_accuracy"
MARGIN = "eval_pref_margin"
GUARD = "eval_guard"  # eval_guard/GROUP: accuracy change on a guard group, trial minus base model
GUARD_BROKEN = "eval_guard_broken"  # how many guard groups the trial is clearly worse on
DRIFT = "eval_drift"
GROUP = "group"  # the dataset column holding each pair's group (tuner.data.loading)
# The one-sided level at which a guard group counts as broken (see guard_broken): a guard errs on the side of
# refusing a trial.
GUARD_LEVEL = 0.05
# The most a trial may lose on a guard group, net of the pairs it fixed, as a share of the group's pairs, however
# little the group's pairs can prove: on the few pairs of an eval split, a loss that no test calls significant is
# the first sign of one on the questions no split holds (measured: a trial that lost 3 of 24 eval fact pairs, not
# significant, lost 14 points on fact pairs about new questions).
GUARD_TOLERANCE = 0.05
PAIR_ID = "pair_id"  # a column of the data when it has stable ids; else the row's index in the eval split
OUTCOMES_FILE = "pair_outcomes.json"


def pair_ids(dataset) -> list:
    return list(dataset[PAIR_ID]) if PAIR_ID in dataset.column_names else list(range(len(dataset)))


def pair_groups(dataset) -> list:
    """Each pair's group, or [] when the pairs have none."""
    return [str(g) for g in dataset[GROUP]] if GROUP in dataset.column_names else []


def guard_broken(trial_margins, base_margins) -> bool:
    """Whether a trial fell below the base model on one guard group, from each pair's margin (chosen minus rejected
    mean per-token log-likelihood; > 0 is right) under the trial and under the base model, on the same pairs. It did
    when it broke more pairs than it fixed by more than GUARD_TOLERANCE of the group's pairs, or clearly more; or
    when its margins fell on clearly more pairs than they rose, by more than GUARD_TOLERANCE of the base model's mean
    margin size on average. "Clearly" is an exact one-sided sign test at GUARD_LEVEL. The margins see a preference
    weaken before pairs change side; a fall too small to matter is not one, however many pairs share it."""
    pairs = list(zip(trial_margins, base_margins))
    if not pairs:
        return False
    broken = sum(1 for t, b in pairs if b > 0 >= t)
    fixed = sum(1 for t, b in pairs if t > 0 >= b)
    shifts = [t - b for t, b in pairs]
    fell, rose = sum(1 for s in shifts if s < 0), sum(1 for s in shifts if s > 0)
    scale = sum(abs(b) for _, b in pairs) / len(pairs)
    return (broken - fixed > GUARD_TOLERANCE * len(pairs) or _clearly_more(broken, fixed)
            or (_clearly_more(fell, rose) and sum(shifts) / len(shifts) < -GUARD_TOLERANCE * scale))


def _clearly_more(worse: int, better: int) -> bool:
    from scipy import stats

    return worse > better and float(stats.binomtest(worse, worse + better, 0.5,
                                                     alternative="greater").pvalue) < GUARD_LEVEL


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
    groups: list = field(default_factory=list)  # each pair's group (data.group_column); [] when ungrouped

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

    def margin(self, i: int) -> float:
        """Pair i's chosen minus rejected mean per-token log-likelihood: > 0 when the model prefers the chosen."""
        return (self.chosen_logps[i] / self.chosen_tokens[i] - self.rejected_logps[i] / self.rejected_tokens[i])

    def group_of(self, i: int) -> str | None:
        return str(self.groups[i]) if self.groups else None

    def selected(self, guard_groups=()) -> list[int]:
        """Indices of the pairs eval_pref_accuracy covers: the scored pairs outside `guard_groups`."""
        guards = set(guard_groups)
        return [i for i in self.scored() if self.group_of(i) not in guards]

    def outcomes(self, guard_groups=()) -> dict[str, list]:
        """The 0/1 outcomes behind eval_pref_accuracy."""
        kept = self.selected(guard_groups)
        return {"pairs": [self.pairs[i] for i in kept], "correct": [int(self.margin(i) > 0) for i in kept]}

    def accuracy(self, guard_groups=()) -> dict[str, float]:
        """eval_pref_accuracy and eval_pref_margin over the pairs outside `guard_groups`."""
        kept = self.selected(guard_groups)
        if not kept:
            return {}
        if not all(math.isfinite(self.chosen_logps[i]) and math.isfinite(self.rejected_logps[i]) for i in kept):
            # NaN compares as False: a diverged model would score as "always wrong", a number that gets ranked
            return {METRIC: float("nan"), MARGIN: float("nan")}
        margins = [self.margin(i) for i in kept]
        return {METRIC: sum(m > 0 for m in margins) / len(kept), MARGIN: sum(margins) / len(kept)}

    def by_group(self) -> dict[str, float]:
        """eval_pref_accuracy/GROUP for every group of the scored pairs."""
        members: dict[str, list[int]] = {}
        for i in self.scored():
            if self.group_of(i) is not None:
                members.setdefault(self.group_of(i), []).append(i)
        return {f"{METRIC}/{group}": (sum(self.margin(i) > 0 for i in kept) / len(kept)
                                      if all(math.isfinite(self.margin(i)) for i in kept) else float("nan"))
                for group, kept in sorted(members.items())}

    def guard(self, base: PairScores, guard_groups) -> dict[str, float]:
        """Per guard group, the accuracy change from `base` on the pairs both scored on the same tokens
        (eval_guard/GROUP), and how many guard groups are clearly worse (eval_guard_broken)."""
        theirs = {pair: i for i, pair in enumerate(base.pairs)}
        result, broken = {}, 0
        for group in guard_groups:
            mine, others = [], []
            for i in self.scored():
                j = theirs.get(self.pairs[i])
                if (self.group_of(i) != group or j is None or base.chosen_tokens[j] != self.chosen_tokens[i]
                        or base.rejected_tokens[j] != self.rejected_tokens[i]):
                    continue
                if base.chosen_tokens[j] > 0 and base.rejected_tokens[j] > 0:
                    mine.append(self.margin(i))
                    others.append(base.margin(j))
            if not mine:
                continue
            result[f"{GUARD}/{group}"] = (sum(m > 0 for m in mine) - sum(o > 0 for o in others)) / len(mine)
            result[f"{GUARD}_margin/{group}"] = (sum(mine) - sum(others)) / len(mine)
            broken += guard_broken(mine, others)
        return {**result, GUARD_BROKEN: float(broken)} if result else {}

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

    def metrics(self, reference: PairScores | None = None, prefix: str = "eval",
                guard_groups=()) -> dict[str, float]:
        """eval_pref_accuracy, eval_pref_margin and the per-group accuracies and, with a reference (the base model:
        DPO's reference, or the base model's own scores), eval_drift(_chosen, _rejected) and the guard; under
        `prefix` (e.g. test_)."""
        result = {**self.accuracy(guard_groups), **self.by_group()}
        if reference is not None:
            result.update(self.drift(reference))
            if guard_groups:
                result.update(self.guard(reference, guard_groups))
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


