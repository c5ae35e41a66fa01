"""Where a student's wrong answers first leave the oracle's trace for the same question.

    .venv/bin/cogcore traces run_dir=runs/ho split=heldout teacher.unavailable_share=0 teacher.gold_share=0
    .venv/bin/python benchmarks/divergence.py --samples runs/demo/evals/samples/student/T.jsonl \
        --oracle runs/ho/traces/traces.jsonl

(runs/ho links `world` and `index` to the demo run's.) For every wrong answer of the chosen types, both
conversations after the question are flattened to text and the first differing character is found. A
divergence inside a passage id (`[w120-...`) counts as "world id", anywhere else as "other"; a few
"other" cases are printed with the oracle's and the student's continuation, which shows what went wrong
(in the demo student: names copied badly out of the question or the tool result).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import Counter

from cogcore.core.io import iter_jsonl
from cogcore.core.trace import read_traces


def flatten(messages: list[dict]) -> str:
    """The turns after the system prompt and the question, as one text."""
    turns = []
    for m in messages[2:]:
        calls = "".join(c["function"]["arguments"] for c in m.get("tool_calls") or [])
        turns.append(f"{m['role']}: {m.get('content') or ''}{calls}")
    return "\n".join(turns)


def place_of(want: str, at: int) -> str:
    """Where in the oracle's flattened trace `want` the first difference at `at` lies."""
    line = want[:at].split("\n")[-1]
    if re.search(r"\[w\d*$", want[max(0, at - 8) : at]):
        return "world id"
    if re.search(r"\[[\w-]+\] [^:\[\]]*: ?$", line):
        return "quote: which line"
    if re.search(r"\[[\w-]+\] [^\[\]]*$", line) and " So " not in line.split("]")[-1]:
        return "quote: inside text"
    if re.search(r'"query": "[^"]*$', line):
        return "query"
    if re.search(r"column|digit", line):
        return "written-out steps"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", required=True, help="samples/<system>/<suite>.jsonl from cogcore eval")
    parser.add_argument("--oracle", required=True, help="oracle traces of the same questions")
    parser.add_argument("--types", nargs="+", default=["lookup", "compose"])
    parser.add_argument("--show", type=int, default=10)
    parser.add_argument("--show-place", default="other", help="which place's cases to print")
    args = parser.parse_args()

    oracle = {t["metadata"]["question"]: t for t in read_traces(args.oracle)}
    places, shown = Counter(), 0
    for _, sample in iter_jsonl(args.samples):
        if sample["type"] not in args.types or sample["grade"] == "correct":
            continue
        reference = oracle.get(sample["messages"][1]["content"])
        if reference is None:
            places["no oracle trace"] += 1
            continue
        got, want = flatten(sample["messages"]), flatten(reference["messages"])
        at = len(os.path.commonprefix([got, want]))
        place = place_of(want, at)
        places[place] += 1
        if place == args.show_place and shown < args.show:
            shown += 1
            print(f"...{want[max(0, at - 40) : at]!r}")
            print(f"   oracle: {want[at : at + 25]!r}\n   student: {got[at : at + 25]!r}")
    print(json.dumps(dict(places), indent=2))


if __name__ == "__main__":
    main()
