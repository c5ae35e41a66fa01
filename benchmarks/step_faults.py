"""What the steps check (core.worlds.steps.fault) says of an eval's answers: per question type, how many are
wrong, how many of those it finds a fault in (and which), and any right answer it faults.

    .venv/bin/python benchmarks/step_faults.py runs/demo/evals/samples/student/T.jsonl [--list]

`--list` prints each wrong answer: id, type, tries, the fault (or none) and its final turn's start.
"""

from __future__ import annotations

import argparse
from collections import Counter

from cogcore.core.io import read_jsonl
from cogcore.core.worlds.steps import fault


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "samples", help="an eval's samples jsonl (<run_dir>/evals/samples/<system>/<suite>.jsonl)"
    )
    parser.add_argument("--list", action="store_true", help="print every wrong answer")
    args = parser.parse_args()
    wrong, found, kinds, right_faulted = Counter(), Counter(), Counter(), []
    for r in read_jsonl(args.samples):
        f = fault(r["messages"])
        if r["grade"] == "correct":
            if f is not None:
                right_faulted.append((r["id"], f.why))
            continue
        wrong[r["type"]] += 1
        if f is not None:
            found[r["type"]] += 1
            kinds[f.why.split(" ")[0] + (" more often" if "more often" in f.why else "")] += 1
        if args.list:
            final = r["messages"][-1].get("content") or ""
            print(
                f"{r['id']} {r['type']} tries={r.get('tries')} fault={f.why if f else None} | {final[:160]!r}"
            )
    print("| type | wrong | with a fault |\n| --- | --- | --- |")
    for t in sorted(wrong):
        print(f"| {t} | {wrong[t]} | {found[t]} |")
    print(f"| all | {sum(wrong.values())} | {sum(found.values())} |")
    print("faults by kind (first word of why):", dict(kinds))
    print(f"right answers with a fault: {len(right_faulted)}", right_faulted[:5])


if __name__ == "__main__":
    main()
