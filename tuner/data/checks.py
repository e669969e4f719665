"""The checks on the eval pairs before a search starts: truncation must leave pairs to score, and guard groups must
leave pairs for the search metric. Each raises InputError, or returns a line for the user."""

from __future__ import annotations

from tuner.errors import InputError
from tuner.spec import Spec


def check_eval_pairs(spec: Spec, held_out) -> str | None:
    """Refuse a model.max_length at which truncation leaves no eval pair with an answer to score (the held-out
    preference accuracy would never be reported, and Ray stops a search on it at the first report); a line for the
    user when it leaves only some. With model.max_length or model.name searched, the shortest length and each
    model's tokenizer count."""
    from transformers import AutoTokenizer

    from tuner.trial import models
    from tuner.evidence import quality

    max_length = quality.shortest_max_length(spec)
    note = None
    for name in spec.model_names():
        tokenizer = AutoTokenizer.from_pretrained(models.resolve(name))
        if not tokenizer.chat_template and len(held_out) and not isinstance(held_out[0]["prompt"], str):
            raise InputError(f"model.name: {name} has no chat template, which the conversations of data.source "
                             f"{spec.data.source!r} need; use a chat model, or data in text, got {name!r}")
        lengths = quality.pair_lengths(tokenizer, held_out)
        scored = sum(needed <= max_length for needed, _ in lengths)
        whole = max((w for _, w in lengths), default=0)
        model = f" with {name}" if len(spec.model_names()) > 1 else ""
        if lengths and scored == 0:
            raise InputError(f"model.max_length: truncating to {max_length} tokens{model} leaves no eval pair with an "
                             f"answer to score (the prompts alone fill it in all {len(lengths)}), so "
                             f"{quality.METRIC} would never be reported; raise model.max_length to at least "
                             f"{min(n for n, _ in lengths)} ({whole} keeps every eval pair whole), got {max_length}")
        if scored < len(lengths) and note is None:
            note = (f"eval: {len(lengths) - scored} of {len(lengths)} eval pairs lose their answer to truncation at "
                    f"model.max_length={max_length}{model} and are not scored by {quality.METRIC} ({whole} keeps "
                    f"every pair whole)")
    return note


def check_guard_groups(spec: Spec, held_out, *others) -> str | None:
    """Refuse guard groups that cover every eval pair (the search metric would have no pair), and a guard group
    that no pair of grouped data is in (a typo would switch the guard off). A guard group of the data with no eval
    pair (an eval split capped below one pair per group), or guards on data without groups, guard nothing: a line
    for the user says so, and the search runs without them. `others`: the data's other splits."""
    import difflib

    from tuner.evidence.quality import pair_groups

    guards = spec.search.guard_groups
    if not guards:
        return None
    present = sorted(set(pair_groups(held_out)))
    if present and not set(present) - set(guards):
        raise InputError(f"search.guard_groups: every eval group is a guard, which leaves no pairs for the search "
                         f"metric (eval groups {present}), got {guards}")
    in_data = sorted(set(present).union(*(pair_groups(split) for split in others)))
    unknown = [g for g in guards if in_data and g not in in_data]
    if unknown:
        close = [m for g in unknown for m in difflib.get_close_matches(g, in_data, n=1, cutoff=0.6)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InputError(f"search.guard_groups: {unknown} is no group of the data{hint}; its groups are "
                         f"{in_data}, got {guards}")
    missing = [g for g in guards if g not in present]
    if not missing:
        return None
    where = (f"the eval groups are {present}" if present else
             "the eval pairs have no groups (data.group_column)")
    return (f"search.guard_groups: no eval pair is in {', '.join(missing)} ({where}): "
            f"{'no guard applies' if len(missing) == len(guards) else 'those guard nothing'}")
