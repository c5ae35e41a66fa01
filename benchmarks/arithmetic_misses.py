"""Where a student's wrong arithmetic answers go wrong: by the first written step that disagrees with the
facts the student itself quoted.

    .venv/bin/python benchmarks/arithmetic_misses.py runs/demo/evals/samples/student/T.jsonl runs/r75/Tq.jsonl

Reads samples as `cogcore eval` (`samples/<system>/T.jsonl`) and `benchmarks/student_accuracy.py
--samples` write them, and counts each wrong arithmetic answer once: `facts` (fewer than two numbers
restated, or the same one twice), `no subtraction` (none written), `header: one number twice` (the
subtraction takes a fact from itself), `header copy` (its two numbers are not the two facts), `order`
(the smaller on top), else `columns or read-back` (the steps after a right header).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

from cogcore.core.io import read_jsonl

FACT = re.compile(r"So [^.]*? (?:in|of) (\d+)\.")
HEADER = re.compile(r"(\d+) - (\d+), column by column")


def first_wrong_step(messages: list[dict]) -> str:
    text = " ".join(m.get("content") or "" for m in messages if m["role"] == "assistant")
    facts, header = FACT.findall(text), HEADER.search(text)
    if len(facts) < 2 or facts[0] == facts[1]:
        return "facts"
    if header is None:
        return "no subtraction"
    if header.group(1) == header.group(2):
        return "header: one number twice"
    if sorted(header.groups()) != sorted(facts[:2]):
        return "header copy"
    if int(header.group(1)) < int(header.group(2)):
        return "order"
    return "columns or read-back"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", nargs="+", help="T samples (jsonl)")
    args = parser.parse_args()
    for path in args.samples:
        arithmetic = [r for r in read_jsonl(path) if r["type"] == "arithmetic"]
        misses = Counter(first_wrong_step(r["messages"]) for r in arithmetic if r["grade"] != "correct")
        print(f"{path}: {sum(misses.values())} of {len(arithmetic)} wrong: {dict(misses.most_common())}")


if __name__ == "__main__":
    main()
