"""Drills: made-up (input_ids, loss_mask) examples, each training one skill the traces need but hold too
few examples of, on random runs of a tokenizer's ordinary ids, whatever the corpus: copying from the
context (`copy_drills`), keeping one's place in a line of a search result (`record_drills`), and picking
the result line that holds a name, or none (`match_drills`). The synthetic worlds' step drills live with
the worlds (core/worlds/drills.py); distill/packing.py mixes both kinds into the trace rows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from cogcore.core.io import DataError


def drill_vocab(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids a drill draws from: every token but the special ones."""
    special = set(tokenizer.all_special_ids)
    return [i for i in range(len(tokenizer)) if i not in special]


def copy_drills(
    n_tokens: int,
    vocab: Sequence[int],
    bos_id: int,
    min_len: int,
    max_len: int,
    seed: int | str,
    min_alphabet: int | None = None,
) -> list[tuple[list[int], list[int]]]:
    """(input_ids, loss_mask) drills of about `n_tokens` tokens in all: `<|bos|>`, a random run of
    `vocab` ids, and the same run again, trained on the repeat (after its first token, which nothing
    predicts). Only copying lowers their loss, so they teach a from-scratch student the induction heads it
    needs to copy names and numbers out of tool results, a skill pre-training gives larger models.

    With `min_alphabet`, each run draws from its own random subset of `vocab`, of log-uniform size between
    `min_alphabet` and all of it. Small alphabets repeat tokens within a run, so one token of context no
    longer says where to copy from and the student must match longer prefixes, as it must to copy a name
    made of a few recurring pieces (" St ir i dr am"). They do not teach copying from scratch: a warm-up on
    them alone never found induction heads (BENCHMARKS.md, run 25)."""
    rng = random.Random(f"drills-{seed}")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"copy drills of {min_len} to {max_len} tokens: use 1 <= min_len <= max_len")
    if min_alphabet is not None and not 2 <= min_alphabet <= len(vocab):
        raise ValueError(f"copy drills from alphabets of {min_alphabet} tokens: use 2 to {len(vocab)}")
    pool = list(vocab)
    drills, made = [], 0
    while made < n_tokens:
        letters = pool
        if min_alphabet is not None:
            size = round(math.exp(rng.uniform(math.log(min_alphabet), math.log(len(pool)))))
            letters = rng.sample(pool, size)
        run = rng.choices(letters, k=rng.randint(min_len, max_len))
        ids = [bos_id, *run, *run]
        drills.append((ids, [0] * (len(run) + 2) + [1] * (len(run) - 1)))
        made += len(ids)
    return drills


# Record drills: lengths (low, high) of a line's parts; a drill is at most 5 lines of RECORD_PARTS' highs.
RECORD_LINES = (2, 4)
RECORD_PARTS = {"key": (2, 4), "title": (2, 5), "head": (1, 4), "name": (2, 5), "tail": (1, 5)}
RECORD_MARK_TEXTS = ("\n[", "]")  # how a rendered search result opens and closes a passage id
RECORD_SHARED, RECORD_OWN = ("title", "name"), ("key", "head", "tail")
RECORD_MARKS = 4  # tokens `marks` may add to a line
RECORD_MAX_LEN = 1 + (RECORD_LINES[1] + 1) * (sum(high for _, high in RECORD_PARTS.values()) + RECORD_MARKS)


def record_marks(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids that open and close a passage id in a rendered search result, as record drills use them."""
    opening, closing = (tokenizer.encode(text, add_special_tokens=False) for text in RECORD_MARK_TEXTS)
    if len(opening) + len(closing) > RECORD_MARKS:
        raise DataError(
            f"record drills: the tokenizer splits {RECORD_MARK_TEXTS} into {len(opening) + len(closing)} "
            f"tokens, more than the {RECORD_MARKS} a line has room for; set distill.copy_drills.records=0 "
            "and distill.copy_drills.matches=0"
        )
    return opening, closing


def record_drills(
    n_tokens: int,
    vocab: Sequence[int],
    bos_id: int,
    seed: int | str,
    marks: tuple[Sequence[int], Sequence[int]] = ((), ()),
) -> list[tuple[list[int], list[int]]]:
    """(input_ids, loss_mask) drills of about `n_tokens` tokens in all, shaped like a tool result and its
    quote: `<|bos|>`, two to four lines `open key close title head name tail` (random runs of `vocab` ids;
    `title` and `name` the same in every line, as a passage's title and entity are; `open` and `close` the
    fixed ids of `marks`, as a rendered result's `\\n[` and `]`), then one of the lines again, trained after
    its first `key` token. Where a plain copy drill's next token follows from the one before it,
    here the token after the shared `title` or `name` depends on which line is being copied, up to a
    dozen tokens back: the student must keep its place in the line, as it must when quoting one of three
    passages about the same entity (the demo student quoted `The headquarters of X` and went on with the
    founder line's `is Y`)."""
    rng = random.Random(f"records-{seed}")
    drills, made = [], 0
    while made < n_tokens:
        n_lines = rng.randint(*RECORD_LINES)
        shared = {part: rng.choices(vocab, k=rng.randint(*RECORD_PARTS[part])) for part in RECORD_SHARED}
        firsts = rng.sample(vocab, n_lines)  # distinct first tokens: the repeat's first token names its line
        lines = []
        for first in firsts:
            own = {part: rng.choices(vocab, k=rng.randint(*RECORD_PARTS[part])) for part in RECORD_OWN}
            key = [*marks[0], first, *own["key"][1:], *marks[1]]
            lines.append([*key, *shared["title"], *own["head"], *shared["name"], *own["tail"]])
        line = rng.choice(lines)
        context = [bos_id, *(token for each in lines for token in each)]
        untrained = len(context) + len(marks[0]) + 1  # the line's marks and first key token say nothing
        drills.append(([*context, *line], [0] * untrained + [1] * (len(context) + len(line) - untrained)))
        made += len(context) + len(line)
    return drills


MATCH_NONE_TEXT = " none"  # what a match drill answers when no line holds the name


def match_drills(
    n_tokens: int,
    vocab: Sequence[int],
    bos_id: int,
    seed: int | str,
    marks: tuple[Sequence[int], Sequence[int]],
    none: Sequence[int],
) -> list[tuple[list[int], list[int]]]:
    """(input_ids, loss_mask) drills of about `n_tokens` tokens in all, of the choice a search result asks
    for before its quote: `<|bos|>name` then two to four lines `open key close name' tail` (random runs of
    `vocab` ids; `open` and `close` the ids of `marks`), and, trained whole, the line whose `name'` is
    `name` or, in half of the drills, where no line's is, the ids `none`. The other lines' names are near
    misses, most of them `name` with one token changed, as a question about a person the world does not
    hold gets results about people whose names share its pieces (`Brepa Paeziax`, `Pedaen Paeziax`). The
    student quoted the nearest such result instead of saying the results do not hold the answer."""
    rng = random.Random(f"matches-{seed}")
    drills, made = [], 0
    while made < n_tokens:
        name = rng.choices(vocab, k=rng.randint(*RECORD_PARTS["name"]))
        n_lines = rng.randint(*RECORD_LINES)
        names = []
        while len(names) < n_lines:
            if rng.random() < 0.75:  # one token changed
                near = list(name)
                near[rng.randrange(len(near))] = rng.choice(vocab)
            else:
                near = rng.choices(vocab, k=rng.randint(*RECORD_PARTS["name"]))
            if near != name:
                names.append(near)
        hit = rng.randrange(n_lines) if rng.random() < 0.5 else None
        if hit is not None:
            names[hit] = name
        firsts = rng.sample(vocab, n_lines)  # distinct first tokens: the answer's first token names its line
        lines = []
        for first, each in zip(firsts, names, strict=True):
            key = [*marks[0], first, *rng.choices(vocab, k=rng.randint(*RECORD_PARTS["key"]) - 1), *marks[1]]
            lines.append([*key, *each, *rng.choices(vocab, k=rng.randint(*RECORD_PARTS["tail"]))])
        answer = list(none) if hit is None else lines[hit]
        context = [bos_id, *name, *(token for line in lines for token in line)]
        # Trained from its first token: a line's opening marks or `none` is the first half of the choice.
        drills.append(([*context, *answer], [0] * len(context) + [1] * len(answer)))
        made += len(context) + len(answer)
    return drills
