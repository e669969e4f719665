"""Does a search's exported winner know facts at least as well as the base model, on questions the bundled data
never asks? Style-matched pairs (one template, filled with the right or a wrong fact of the same number of words)
about 44 questions outside the bundled set, scored for the base model and an adapter by tuner's preference
accuracy (mean per-token log-likelihood) and by summed log-likelihood.

    python -m benchmarks.fact_pairs results/<experiment>            # its best trial (what tuner.export writes)
    python -m benchmarks.fact_pairs --adapter my-adapter            # an exported adapter folder
    python -m benchmarks.fact_pairs --write pairs.jsonl             # just the pairs, as a data.test_source file
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# (question, template, right, wrong): none of these questions is in tuner/data/bundled/preferences.jsonl
FACTS = [
    ("What is the capital of Norway?", "The capital of Norway is {}.", "Oslo", "Bergen"),
    ("What is the capital of Kenya?", "The capital of Kenya is {}.", "Nairobi", "Mombasa"),
    ("What is the capital of Argentina?", "The capital of Argentina is {}.", "Buenos Aires", "Santa Fe"),
    ("What is the capital of Russia?", "The capital of Russia is {}.", "Moscow", "Novosibirsk"),
    ("What is the capital of China?", "The capital of China is {}.", "Beijing", "Shanghai"),
    ("What is the capital of South Korea?", "The capital of South Korea is {}.", "Seoul", "Busan"),
    ("What is the capital of Portugal?", "The capital of Portugal is {}.", "Lisbon", "Porto"),
    ("What is the capital of Greece?", "The capital of Greece is {}.", "Athens", "Thessaloniki"),
    ("What is the capital of Sweden?", "The capital of Sweden is {}.", "Stockholm", "Gothenburg"),
    ("What is the capital of Peru?", "The capital of Peru is {}.", "Lima", "Cusco"),
    ("What is the chemical symbol for iron?", "The chemical symbol for iron is {}.", "Fe", "Ir"),
    ("What is the chemical symbol for potassium?", "The chemical symbol for potassium is {}.", "K", "P"),
    ("What is the chemical symbol for silver?", "The chemical symbol for silver is {}.", "Ag", "Si"),
    ("How many legs does an insect have?", "An insect has {} legs.", "six", "eight"),
    ("How many strings does a standard guitar have?", "A standard guitar has {} strings.", "six", "four"),
    ("How many players does a football team have on the field?", "A football team has {} players on the field.",
     "eleven", "nine"),
    ("What is the largest moon in the solar system?", "The largest moon in the solar system is {}.", "Ganymede",
     "Titan"),
    ("Which planet is farthest from the Sun?", "The planet farthest from the Sun is {}.", "Neptune", "Uranus"),
    ("Who wrote Hamlet?", "Hamlet was written by {}.", "William Shakespeare", "Christopher Marlowe"),
    ("Who wrote Pride and Prejudice?", "Pride and Prejudice was written by {}.", "Jane Austen", "Emily Bronte"),
    ("Who composed the Moonlight Sonata?", "The Moonlight Sonata was composed by {}.", "Ludwig van Beethoven",
     "Wolfgang Amadeus Mozart"),
    ("Who formulated the three laws of motion?", "The three laws of motion were formulated by {}.", "Isaac Newton",
     "Galileo Galilei"),
    ("What is 8 times 7?", "8 times 7 is {}.", "56", "54"),
    ("What is 144 divided by 12?", "144 divided by 12 is {}.", "12", "14"),
    ("What is 25 plus 18?", "25 plus 18 is {}.", "43", "33"),
    ("How many sides does an octagon have?", "An octagon has {} sides.", "eight", "six"),
    ("How many millilitres are in a litre?", "There are {} millilitres in a litre.", "1,000", "100"),
    ("How many seconds are in a minute?", "There are {} seconds in a minute.", "60", "100"),
    ("How many days are in a week?", "There are {} days in a week.", "seven", "five"),
    ("What is the longest bone in the human body?", "The longest bone in the human body is the {}.", "femur",
     "tibia"),
    ("What gas do humans need to breathe in to live?", "Humans need to breathe in {} to live.", "oxygen",
     "hydrogen"),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at {} degrees Fahrenheit.", "32", "0"),
    ("What is the boiling point of water in Fahrenheit?", "Water boils at {} degrees Fahrenheit at sea level.",
     "212", "100"),
    ("What is the largest continent?", "The largest continent is {}.", "Asia", "Africa"),
    ("What is the smallest continent?", "The smallest continent is {}.", "Australia", "Europe"),
    ("Which animal is known as the king of the jungle?", "The animal known as the king of the jungle is the {}.",
     "lion", "tiger"),
    ("What do caterpillars turn into?", "Caterpillars turn into {}.", "butterflies", "beetles"),
    ("What is the tallest animal?", "The tallest animal is the {}.", "giraffe", "elephant"),
    ("What is the hottest planet in the solar system?", "The hottest planet in the solar system is {}.", "Venus",
     "Mercury"),
    ("Which planet has the Great Red Spot?", "The planet with the Great Red Spot is {}.", "Jupiter", "Saturn"),
    ("What is the main ingredient of guacamole?", "The main ingredient of guacamole is {}.", "avocado", "tomato"),
    ("Which metal is liquid at room temperature?", "The metal that is liquid at room temperature is {}.", "mercury",
     "lead"),
    ("Which blood cells fight infection?", "The blood cells that fight infection are {} blood cells.", "white",
     "red"),
    ("Which organ filters the blood to make urine?", "The organ that filters the blood to make urine is the {}.",
     "kidney", "lung"),
]


def pairs() -> list[dict[str, str]]:
    rows = []
    for number, (question, template, right, wrong) in enumerate(FACTS):
        if len(right.split()) != len(wrong.split()):
            raise ValueError(f"{question!r}: facts of different length: {right!r} vs {wrong!r}")
        rows.append({"prompt": question, "chosen": template.format(right), "rejected": template.format(wrong),
                     "kind": "style_matched", "pair_id": f"fact{number:02d}"})
    return rows


def _adapter_of(args) -> tuple[str, Path]:
    if args.adapter:
        trial = json.loads((args.adapter / "trial.json").read_text()) if (args.adapter / "trial.json").is_file() else {}
        return trial.get("trial_id", str(args.adapter)), args.adapter
    from tuner.export import choose
    from tuner.experiment.folder import Experiment

    best = choose(Experiment.open(args.results_dir), None, None, None)
    return best.trial_id, best.checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fact_pairs", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, nargs="?", help="an experiment folder: its best trial is scored")
    parser.add_argument("--adapter", type=Path, help="an exported adapter folder instead")
    parser.add_argument("--write", type=Path, help="write the pairs as JSON lines and stop")
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args(argv)
    if args.write:
        args.write.write_text("".join(json.dumps(row) + "\n" for row in pairs()))
        print(f"wrote {len(FACTS)} pairs to {args.write}")
        return 0
    if not (args.results_dir or args.adapter):
        parser.error("give RESULTS_DIR or --adapter DIR")

    import numpy as np
    from datasets import Dataset
    from peft import PeftModel

    from benchmarks.common import machine
    from tuner.trial import backends, reference
    from tuner.evidence import stats
    from tuner.evidence.quality import with_pair_ids
    from tuner.spec import validate_spec

    print(machine())
    label, adapter = _adapter_of(args)
    base_path = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    data = with_pair_ids(Dataset.from_list(pairs()))
    spec = validate_spec({"model": {"name": base_path, "max_length": args.max_length}})
    scores = {}
    for name in ("base model", label):
        loaded = backends.load_base(base_path)
        if name != "base model":  # merged: tuner's scoring pass then scores the adapter, not its base
            loaded.model = PeftModel.from_pretrained(loaded.model, str(adapter)).merge_and_unload().eval()
        scored = reference.base_scores(spec, loaded, data)  # tuner's one scoring (TRL's tokenization)
        kept = scored.scored()
        tokens = np.array([[scored.chosen_tokens[i], scored.rejected_tokens[i]] for i in kept])
        chosen = np.array([scored.chosen_logps[i] for i in kept]) / tokens[:, 0]
        rejected = np.array([scored.rejected_logps[i] for i in kept]) / tokens[:, 1]
        scores[name] = (chosen, rejected, tokens)
    print(f"{len(data)} style-matched fact pairs about questions outside the bundled data; 95% intervals")
    outcomes = {}
    for rule in ("mean", "sum"):
        for name, (chosen, rejected, lengths) in scores.items():
            if rule == "sum":  # the answer's total log-likelihood: mean x its tokens
                chosen, rejected = chosen * lengths[:, 0], rejected * lengths[:, 1]
            outcomes[(rule, name)] = (chosen > rejected).astype(int)
            estimate = stats.accuracy(outcomes[(rule, name)])
            print(f"  {rule:4} log-likelihood  {name:>16}: {estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]")
        difference = stats.paired_difference(outcomes[(rule, label)], outcomes[(rule, "base model")])
        d = difference.estimate
        print(f"  {rule:4} winner - base: {100 * d.value:+.1f} points [{100 * d.low:+.1f}, {100 * d.high:+.1f}], "
              f"{difference.a_only} fixed, {difference.b_only} broken, McNemar p = {difference.p_value:.2g}; "
              f"not worse: {d.value >= 0}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
