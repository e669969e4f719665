"""The shapes of preference data that TRL's trainers read, brought to one form: an explicit `prompt`, and `chosen` /
`rejected` answers; chat turns when the source is conversational (the prompt every turn before the last assistant
turn, each answer that one assistant turn), plain text otherwise.

Read by TRL's own data utilities (`is_conversational`, `maybe_convert_to_chatml`, `extract_prompt`), so that what
the search trains on is what TRL would make of the same file:

- text, explicit prompt: {"prompt": "Q", "chosen": "A", "rejected": "B"}
- text, implicit prompt: {"chosen": "Q A", "rejected": "Q B"} (TRL's common prefix)
- hh-rlhf text turns: {"chosen": "\\n\\nHuman: Q\\n\\nAssistant: A", ...}, split at the last "\\n\\nAssistant:" (as
  TRL's hh-rlhf script does: a character-level common prefix cuts into answers that start alike)
- conversations, explicit prompt: {"prompt": [user turn], "chosen": [assistant turn], ...}; a text prompt is a user
  turn
- conversations, implicit prompt: {"chosen": [turns..., assistant], "rejected": [...]}, also when a `prompt` column
  repeats their first user turn (HuggingFaceH4/ultrafeedback_binarized): TRL then ignores that column too

What this module writes by hand is what TRL does not do: the hh-rlhf split, and the checks that name why a row
cannot be a pair (`Pair.reason`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from trl.data_utils import (extract_prompt, is_conversational, is_conversational_from_value,
                            maybe_convert_to_chatml)

ROLES = ("system", "user", "assistant")
HH_TURN = re.compile(r"\n\n(Human|Assistant):")  # Anthropic/hh-rlhf's turn markers
HH_ROLES = {"Human": "user", "Assistant": "assistant"}

TEXT = "text, explicit prompt"
TEXT_IMPLICIT = "text, prompt taken from chosen/rejected (their common start)"
HH = "hh-rlhf text turns, split at the last \\n\\nAssistant: into conversations"
TURNS = "conversations, explicit prompt"
TURNS_IMPLICIT = "conversations, prompt taken from chosen/rejected"


@dataclass
class Pair:
    prompt: object = None
    chosen: object = None
    rejected: object = None
    reason: str | None = None  # why the row cannot be a pair; None for a pair
    shape: str = TEXT


@dataclass
class Shape:
    """What was read: the shape(s) recognised and what was done to them, for the console's data line."""

    conversational: bool
    shapes: Counter = field(default_factory=Counter)  # pairs read per shape
    most_turns: int = 0  # turns of the longest conversation (prompt and answer)
    system_turns: int = 0  # pairs whose prompt holds a system turn
    ignored_prompt: bool = False  # a prompt column the conversations repeat, not used (as TRL does)

    def describe(self) -> str:
        parts = ["; ".join(name for name, _ in self.shapes.most_common())] if self.shapes else ["no pair"]
        if self.ignored_prompt:
            parts.append("its prompt column not used (chosen/rejected hold the prompt, as TRL reads them)")
        if self.conversational:
            parts.append(f"up to {self.most_turns} turns")
            if self.system_turns:
                parts.append(f"{self.system_turns} system turn{'s' if self.system_turns > 1 else ''} kept")
        return "; ".join(parts)


def read_pairs(prompts: list | None, chosen: list, rejected: list) -> tuple[list[Pair], Shape]:
    """Each row as a Pair in the one form downstream reads (or with the reason it is not one). `prompts` is None when
    the source has no prompt column. Conversational when any row holds turns: one Arrow column holds one type."""
    rows = range(len(chosen))
    conversational = any(_is_turns(c) or _is_turns(r) for c, r in zip(chosen, rejected)) or \
        (prompts is not None and any(_is_turns(p) for p in prompts))
    hh = not conversational and prompts is None and _looks_like_hh(chosen)
    shape = Shape(conversational=conversational or hh)
    pairs = []
    for i in rows:
        prompt = None if prompts is None else prompts[i]
        if hh:
            pair = _hh_pair(chosen[i], rejected[i])
        elif conversational:
            pair = _turns_pair(prompt, chosen[i], rejected[i], prompts is not None)
        elif prompts is None:
            pair = _text_implicit_pair(chosen[i], rejected[i])
        else:
            pair = Pair(prompt, chosen[i], rejected[i], why_bad_text(prompt, chosen[i], rejected[i]))
        pairs.append(pair)
        if pair.reason is None:
            shape.shapes[pair.shape] += 1
            if shape.conversational:
                shape.most_turns = max(shape.most_turns, len(pair.prompt) + 1)
                shape.system_turns += any(turn["role"] == "system" for turn in pair.prompt)
                shape.ignored_prompt |= pair.shape == TURNS_IMPLICIT and prompt is not None
    return pairs, shape


def _is_turns(value) -> bool:
    return bool(value) and (is_conversational({"chosen": value})
                            or is_conversational_from_value({"conversations": value}))


def why_bad_text(prompt, chosen, rejected) -> str | None:
    """Why a text row cannot be a training pair, or None: each of prompt, chosen and rejected must be non-empty text,
    and chosen must differ from rejected."""
    for column, value in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        if value is None:
            return f"missing {column}"
        if not isinstance(value, str):
            return f"{column} not text"
        if not value.strip():
            return f"empty {column}"
    if chosen == rejected:
        return "chosen == rejected"
    return None


def _text_implicit_pair(chosen, rejected) -> Pair:
    if reason := why_bad_text("-", chosen, rejected):
        return Pair(reason=reason)
    split = extract_prompt({"chosen": chosen, "rejected": rejected})
    pair = Pair(split["prompt"], split["chosen"], split["rejected"], shape=TEXT_IMPLICIT)
    if not pair.prompt.strip():
        pair.reason = "chosen and rejected share no prompt"
    elif not pair.chosen.strip() or not pair.rejected.strip():
        pair.reason = f"empty {'chosen' if not pair.chosen.strip() else 'rejected'} after the prompt"
    return pair


# ----------------------------------------------------------------------------------------------- hh-rlhf text


def _looks_like_hh(chosen: list) -> bool:
    first = next((c for c in chosen if isinstance(c, str) and c.strip()), "")
    return first.lstrip().startswith("Human:") and "\n\nAssistant:" in first


def _hh_pair(chosen, rejected) -> Pair:
    if reason := why_bad_text("-", chosen, rejected):
        return Pair(reason=reason)
    sides = {}
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        cut = text.rfind("\n\nAssistant:")
        if cut < 0 or HH_TURN.search(text, cut + 1):
            return Pair(reason=f"last turn of {name} is not the assistant's")
        sides[name] = (text[:cut], text[cut + len("\n\nAssistant:"):].strip())
    if sides["chosen"][0] != sides["rejected"][0]:
        return Pair(reason="chosen and rejected do not share a prompt")
    prompt = _hh_turns(sides["chosen"][0])
    if not prompt:
        return Pair(reason="no \\n\\nHuman: turn before the answer")
    pair = Pair(prompt, [_turn("assistant", sides["chosen"][1])], [_turn("assistant", sides["rejected"][1])],
                shape=HH)
    pair.reason = _answer_problem(pair)
    return pair


def _hh_turns(text: str) -> list[dict]:
    """'\\n\\nHuman: Q\\n\\nAssistant: A\\n\\nHuman: R' as user/assistant turns; text before the first marker
    (hh-rlhf has none) becomes a system turn rather than being lost."""
    if text.lstrip().startswith(("Human:", "Assistant:")):
        text = "\n\n" + text.lstrip()
    parts = HH_TURN.split(text)
    turns = [_turn("system", parts[0].strip())] if parts[0].strip() else []
    turns += [_turn(HH_ROLES[role], content.strip()) for role, content in zip(parts[1::2], parts[2::2])]
    return turns if any(t["role"] == "user" for t in turns) else []


# ----------------------------------------------------------------------------------------------- conversations


def _turn(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def _as_turns(value, column: str, role: str):
    """A column's value as role/content turns (TRL's ChatML conversion for from/value turns; text as one turn of
    `role`), or the reason it cannot be."""
    if value is None:
        return f"missing {column}"
    if isinstance(value, str):
        return [_turn(role, value)]
    if not isinstance(value, list):
        return f"{column} not text"
    if not value:
        return f"empty {column}"
    turns = maybe_convert_to_chatml({column: [dict(t) if isinstance(t, dict) else t for t in value]})[column]
    for turn in turns:
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            return f"{column} has a turn without role and content"
        if turn["role"] not in ROLES:
            return f"role {turn['role']!r} is neither system, user nor assistant"
        if not isinstance(turn["content"], str):
            return f"{column} has a turn whose content is not text"
    return [_turn(t["role"], t["content"]) for t in turns]  # extra keys (name, ...) are not read by the templates


def _turns_pair(prompt, chosen, rejected, has_prompt: bool) -> Pair:
    sides = {}
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        turns = _as_turns(value, name, "assistant")
        if isinstance(turns, str):
            return Pair(reason=turns)
        if turns[-1]["role"] != "assistant":
            return Pair(reason=f"last turn of {name} is not the assistant's")
        sides[name] = turns
    shape = TURNS_IMPLICIT
    if sides["chosen"][0]["role"] == "assistant" and sides["rejected"][0]["role"] == "assistant":
        # answers only: the prompt is the prompt column's (text: one user turn)
        if not has_prompt:
            return Pair(reason="missing prompt (chosen and rejected hold only the answers)")
        turns = _as_turns(prompt, "prompt", "user")
        if isinstance(turns, str):
            return Pair(reason=turns)
        sides = {name: turns + answer for name, answer in sides.items()}
        shape = TURNS
    if sides["chosen"] == sides["rejected"]:
        return Pair(reason="chosen == rejected")
    # The prompt is every turn before the answer: TRL's common prefix of the two conversations, which must then leave
    # one assistant turn on each side (else they differ earlier, and do not answer the same conversation).
    split = extract_prompt({"chosen": sides["chosen"], "rejected": sides["rejected"]})
    if not split["prompt"] or len(split["chosen"]) != 1 or len(split["rejected"]) != 1:
        return Pair(reason="chosen and rejected do not share a prompt")
    pair = Pair(split["prompt"], split["chosen"], split["rejected"], shape=shape)
    if not any(turn["role"] == "user" for turn in pair.prompt):
        pair.reason = "no user turn before the answer"
    else:
        pair.reason = _answer_problem(pair)
    return pair


def _answer_problem(pair: Pair) -> str | None:
    for name in ("chosen", "rejected"):
        if not getattr(pair, name)[0]["content"].strip():
            return f"empty {name} after the prompt"
    if pair.chosen == pair.rejected:
        return "chosen == rejected"
    return None
