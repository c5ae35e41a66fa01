"""Drills of the synthetic worlds' written-out steps, mixed into the trace rows by the trainer
(`distill.step_drills`; distill/packing.py mixes them in with the traces)."""

from __future__ import annotations

import random

from transformers import PreTrainedTokenizerBase

from cogcore.core.worlds.steps import decision, subtraction
from cogcore.core.worlds.templates import FACT
from cogcore.core.worlds.world import ARITHMETIC_QUESTIONS, COMPARE_QUESTIONS, made_up_name


def step_drills(
    tokenizer: PreTrainedTokenizerBase, n_tokens: int, seed: int | str
) -> list[tuple[list[int], list[int]]]:
    """(input_ids, loss_mask) drills of about `n_tokens` tokens in all, of the written-out steps the oracle's
    compare and arithmetic traces end with, on random numbers of 4 and 5 digits. Two in three are a
    subtraction as an arithmetic trace ends with one (`<|bos|>How many years apart were A and B founded?
    So A was founded in x. So B was founded in y. ` then, trained, the smaller taken from the larger
    column by column, `oracle.subtraction`; given as a bare `x and y. `, the demo's T was 0.035 lower on
    each of two seeds: BENCHMARKS.md, runs 110-113). The others are a compare question's last step on
    made-up names (`<|bos|>Who is younger, A or B? So A was born in x. So B was born in y. ` then, trained,
    `oracle.decision`: the first differing digit, each number's with its name, and the one the question
    asks for). The traces hold a few hundred of each, too few to learn the hundred-odd digit facts the
    steps are made of. Half the pairs share a leading run of digits (as years do), so every column and
    every first differing digit comes up."""
    rng, names = random.Random(f"steps-{seed}"), random.Random(f"steps-named-{seed}")
    kinds = {"birth_year": "person", "population": "city", "founded": "org"}

    def number() -> int:  # 4 or 5 digits, evenly
        return rng.randrange(1_000, 100_000) if rng.random() < 0.5 else rng.randrange(1_000, 10_000)

    drills, made = [], 0
    while made < n_tokens:
        x = number()
        digits = str(x)
        if rng.random() < 0.5:  # the same length, and the same first digits
            shared = rng.randrange(1, len(digits))
            y = int(digits[:shared] + "".join(rng.choice("0123456789") for _ in digits[shared:]))
        else:
            y = number()
        if x == y:
            continue
        # The question on two made-up names and its two facts, as a trace restates them before its steps.
        if rng.random() < 2 / 3:  # as many subtractions as when compares were a short sentence each
            attribute = "population" if max(x, y) >= 10_000 else names.choice(sorted(ARITHMETIC_QUESTIONS))
            template, pick = ARITHMETIC_QUESTIONS[attribute], None
        else:  # a compare's last step: which of two made-up names the question's wording picks
            attribute = names.choice(sorted(COMPARE_QUESTIONS))
            template, pick = names.choice(COMPARE_QUESTIONS[attribute])
        a, b = (made_up_name(names, kinds[attribute]) for _ in "ab")
        if a == b:
            continue
        fact = FACT[attribute]
        given = f"{template.format(a=a, b=b)} So {fact.format(s=a, o=x)}. So {fact.format(s=b, o=y)}. "
        steps = subtraction(max(x, y), min(x, y)) if pick is None else decision(x, y, a, b, attribute, pick)
        enc = tokenizer(given + steps, add_special_tokens=False, return_offsets_mapping=True)
        ids = [tokenizer.bos_token_id, *enc["input_ids"]]
        mask = [0] + [int(end > len(given)) for _, end in enc["offset_mapping"]]
        drills.append((ids, mask))
        made += len(ids)
    return drills
