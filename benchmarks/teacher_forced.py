"""Teacher-forced diagnosis of a student on oracle traces: how often it predicts each assistant token, and
its whole `Answer:` line, given the correct trace so far (no generation, no retrieval errors).

    mkdir runs/ho && ln -s ../demo/world runs/ho/world && ln -s ../demo/index runs/ho/index
    .venv/bin/cogcore traces run_dir=runs/ho split=heldout teacher.unavailable_share=0
    .venv/bin/python benchmarks/teacher_forced.py --student runs/demo/student \
        --traces runs/ho/traces/traces.jsonl

Where the answer line fails while the tokens before it succeed, the student cannot copy the object out
of the tool result (BENCHMARKS.md). `copy_top1` probes that skill alone: the share of tokens predicted
right in the second half of random token runs shown twice (`distill.drills.copy_drills`, unseen seed);
a student without induction heads scores about 0. `copy_top1_alphabet_A` does the same on runs drawn
from A tokens, which repeat within a run: one token of context no longer says where to copy from.
`header_exact` is the share of arithmetic traces whose subtraction header (`77965 - 47314`, the two facts
copied, the larger first) the student predicts whole. `record_top1` is the same on record drills
(`distill.drills.record_drills`: one of a few lines that share spans, repeated), and `record_top1_ambiguous`
only on the tokens that follow a token the lines share, where the student must know which line it is
copying.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import defaultdict
from itertools import pairwise

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cogcore.core.tools import ANSWER_PREFIX, SEARCH_TOOL
from cogcore.core.trace import read_traces
from cogcore.distill.drills import copy_drills, drill_vocab, record_drills, record_marks
from cogcore.distill.packing import encode_trace


def drill_top1(model, drills: list[tuple[list[int], list[int]]], ambiguous: bool = False) -> float:
    """Top-1 accuracy on the trained tokens of `drills`; with `ambiguous`, only on those whose previous
    token the context follows with more than one token (one token of context does not say what is next)."""
    right = total = 0
    for ids, mask in drills:
        with torch.no_grad():
            predicted = model(torch.tensor([ids]), use_cache=False).logits[0].argmax(-1)
        hit = predicted[:-1] == torch.tensor(ids[1:])
        trained = torch.tensor(mask[1:], dtype=torch.bool)
        if ambiguous:
            context = ids[: len(ids) - sum(mask) - 1]
            followers = defaultdict(set)
            for before, after in pairwise(context):
                followers[before].add(after)
            trained &= torch.tensor([len(followers[token]) > 1 for token in ids[:-1]])
        right += int(hit[trained].sum())
        total += int(trained.sum())
    return right / total


def copy_top1(
    model, tokenizer, alphabet: int | None = None, n_tokens: int = 4_000, seed: int = 12_345
) -> float:
    """Top-1 accuracy on the trained (repeated) tokens of copy drills the student never saw, drawn from
    the whole vocabulary or from random `alphabet`-token subsets (tokens repeat within a run, as the
    pieces of names do)."""
    vocab = drill_vocab(tokenizer)
    if alphabet is not None:
        vocab = random.Random(seed).sample(vocab, alphabet)
    return drill_top1(model, copy_drills(n_tokens, vocab, tokenizer.bos_token_id, 8, 48, seed))


DECISIVE = {"arithmetic": "column_digit_top1", "compare": "winner_top1"}


def decisive_chars(text: str, kind: str) -> list[int]:
    """Offsets in `text` (a rendered trace) of the characters the steps hinge on: in the last subtraction,
    each column's result digit; in a compare, the winner's name after the chosen digit (`oracle.decision`:
    `so the larger digit: 9 `), or in traces of the old format after `x is less than y, so `."""
    if kind == "arithmetic" and (at := text.rfind("column by column: ")) >= 0:
        columns = text[at : text.index(". Digits", at)]
        return [at + m.start(1) for m in re.finditer(r"= (\d+)(?=(?:, borrow 1)?(?:;|$))", columns)]
    if kind == "compare" and (
        m := re.search(r"(?:digit|digits): \d+ (?!.*(?:digit|digits): \d+ )", text, re.DOTALL)
        or re.search(r" than \d+, so (?!.* than \d+, so )", text, re.DOTALL)
    ):
        return [m.end()]
    return []


def written_by(ends: list[int], char: int) -> int:
    """The token that writes offset `char` of a text whose token prefixes end at `ends`."""
    return next(t for t, end in enumerate(ends) if end > char)


def header_chars(text: str) -> range | None:
    """Offsets in `text` of the last subtraction's header (`77965 - 47314` before `, column by column`): the
    two numbers copied from the facts, the larger first."""
    heads = list(re.finditer(r"\d+ - \d+(?=, column by column)", text))
    return range(heads[-1].start(), heads[-1].end()) if heads else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="runs/demo/student")
    parser.add_argument("--traces", required=True)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.student)
    model = AutoModelForCausalLM.from_pretrained(args.student).eval()
    tokens, answers, steps, headers = (defaultdict(lambda: [0, 0]) for _ in range(4))
    for trace in read_traces(args.traces):
        ids, mask = encode_trace(tokenizer, trace, [SEARCH_TOOL])
        with torch.no_grad():
            predicted = model(torch.tensor([ids]), use_cache=False).logits[0].argmax(-1)
        right = (predicted[:-1] == torch.tensor(ids[1:])).tolist()  # right[t]: token t + 1 predicted
        trained = mask[1:]
        kind = trace["metadata"]["type"]
        tokens[kind][0] += sum(r for r, m in zip(right, trained, strict=True) if m)
        tokens[kind][1] += sum(trained)
        # The answer line: every trained token after the last "Answer:" of the final turn.
        text_upto = [tokenizer.decode(ids[: t + 1]) for t in range(len(ids))]
        start = max(t for t, text in enumerate(text_upto) if text.endswith(ANSWER_PREFIX))
        answers[kind][0] += all(right[t] for t in range(start, len(ids) - 1) if trained[t])
        answers[kind][1] += 1
        # The steps of the written-out reasoning: each subtraction column's result digit, and the first
        # token of a compare's winner.
        ends = [len(text) for text in text_upto]
        full = text_upto[-1]

        for char in decisive_chars(full, kind):
            steps[kind][0] += right[written_by(ends, char) - 1]
            steps[kind][1] += 1
        if kind == "arithmetic" and (span := header_chars(full)) is not None:
            headers[kind][0] += all(right[t - 1] for t in {written_by(ends, char) for char in span})
            headers[kind][1] += 1
    report = {
        kind: {
            "assistant_token_accuracy": round(tokens[kind][0] / tokens[kind][1], 3),
            "answer_line_exact": round(answers[kind][0] / answers[kind][1], 3),
            "traces": answers[kind][1],
        }
        for kind in sorted(answers)
    }
    for kind, (hits, total) in sorted(steps.items()):
        report[kind][DECISIVE[kind]] = round(hits / total, 3)
    for kind, (hits, total) in sorted(headers.items()):
        report[kind]["header_exact"] = round(hits / total, 3)
    report["copy_top1"] = round(copy_top1(model, tokenizer), 3)
    for alphabet in (64, 16, 8):
        report[f"copy_top1_alphabet_{alphabet}"] = round(copy_top1(model, tokenizer, alphabet), 3)
    vocab, marks = drill_vocab(tokenizer), record_marks(tokenizer)
    records = record_drills(4_000, vocab, tokenizer.bos_token_id, 12_345, marks)
    report["record_top1"] = round(drill_top1(model, records), 3)
    report["record_top1_ambiguous"] = round(drill_top1(model, records, ambiguous=True), 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
