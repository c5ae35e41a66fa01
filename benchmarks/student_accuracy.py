"""Accuracy of a trained student on unseen-world questions, answered through the tool-loop engine
with live retrieval (the student searches its world's collection of the index). Engine choices are
made on the validation worlds (the default `--split`); `--split heldout` only reports.

    .venv/bin/python benchmarks/student_accuracy.py --run-dir runs/demo [--limit 0] [--batch 32] \
        [--samples out.jsonl] [--max-new-tokens N] [--free-quotes] [--retries N] [--steps 0|1] ...

Graded by cogcore.evals.scoring (SQuAD-normalised exact match of the final `Answer:` line; `unknown`
is correct only for unanswerable questions), per question type.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict

from hydra import compose, initialize_config_module

from cogcore.core.checkpoint import load_model
from cogcore.core.engine import Engine
from cogcore.core.io import read_jsonl, write_jsonl
from cogcore.evals.run import eval_generation
from cogcore.evals.scoring import summarize
from cogcore.evals.suites import run_suite
from cogcore.evals.systems import ToolUser
from cogcore.retrieval.retriever import Retriever


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--samples", help="write every question's record (trace, prediction, grade) here")
    parser.add_argument("--split", default="validation", help="validation (tune here) | heldout (report)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many questions (0: all)")
    parser.add_argument("--batch", type=int, default=32)
    # Each generation setting defaults to eval.generation's.
    parser.add_argument("--k", type=int)
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--free-quotes", action="store_true", help="do not hold quotes to their passages")
    parser.add_argument("--retries", type=int, help="grounded retries")
    parser.add_argument("--retry-temperature", type=float)
    parser.add_argument("--top-p", type=float, help="nucleus of the retries' sampling")
    parser.add_argument("--linked", type=int, help="1: retries check linked citations")
    parser.add_argument("--steps", type=int, help="1: faulty written steps are retried too")
    args = parser.parse_args()

    with initialize_config_module("cogcore.conf", version_base=None):
        rcfg = compose("index", [f"run_dir={args.run_dir}"]).retriever
        ecfg = compose("eval").eval
    given = {
        "k": args.k,
        "max_new_tokens": args.max_new_tokens,
        "quotes": False if args.free_quotes else None,
        "retries": args.retries,
        "retry_temperature": args.retry_temperature,
        "top_p": args.top_p,
        "linked": None if args.linked is None else bool(args.linked),
        "steps": None if args.steps is None else bool(args.steps),
    }
    gen = eval_generation(ecfg, **{key: value for key, value in given.items() if value is not None})
    retriever = Retriever.load(f"{args.run_dir}/index", rcfg)
    model, tokenizer = load_model(f"{args.run_dir}/student")
    student = ToolUser("student", Engine(model, tokenizer), gen, batch=args.batch)
    questions = read_jsonl(f"{args.run_dir}/world/questions/{args.split}.jsonl")
    questions = questions[: args.limit] if args.limit else questions

    # The T suite of `cogcore eval`: live search in each question's own world.
    run = run_suite(student, "T", questions, retriever, {})
    searches = defaultdict(list)
    for r in run["records"]:
        searches[r["type"]].append(sum(m["role"] == "tool" for m in r["messages"]))
    report = {
        "questions": len(questions),
        "accuracy": {t: round(s["accuracy"], 3) for t, s in summarize(run["records"]).items()},
        "searches_per_question": {t: round(sum(v) / len(v), 2) for t, v in sorted(searches.items())},
        "stops": dict(Counter(r["stop"] for r in run["records"])),
        "tries": dict(sorted(Counter(r["tries"] for r in run["records"]).items())),
        "questions_per_s": round(len(questions) / run["seconds"], 2),
    }
    if args.samples:
        write_jsonl(args.samples, run["records"])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
