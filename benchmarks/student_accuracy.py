"""Accuracy of a trained student on held-out-world questions, answered through the tool-loop engine
with live retrieval (the student searches its world's collection of the index).

    .venv/bin/python benchmarks/student_accuracy.py --run-dir runs/demo [--limit 0] [--batch 32]

Graded by cogcore.evals.scoring (SQuAD-normalised exact match of the final `Answer:` line; `unknown`
is correct only for unanswerable questions), per question type.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

from hydra import compose, initialize_config_module
from transformers import AutoModelForCausalLM, AutoTokenizer

from cogcore.core.engine import Engine, GenerationConfig
from cogcore.core.io import read_jsonl
from cogcore.core.tools import SYSTEM_PROMPT
from cogcore.evals.scoring import score, summarize
from cogcore.retrieval.retriever import Retriever


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--limit", type=int, default=0, help="at most this many questions (0: all)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()

    with initialize_config_module("cogcore.conf", version_base=None):
        rcfg = compose("index", [f"run_dir={args.run_dir}"]).retriever
    retriever = Retriever.load(f"{args.run_dir}/index", rcfg)
    tokenizer = AutoTokenizer.from_pretrained(f"{args.run_dir}/student")
    model = AutoModelForCausalLM.from_pretrained(f"{args.run_dir}/student").eval()
    engine = Engine(model, tokenizer)
    questions = read_jsonl(f"{args.run_dir}/world/questions/heldout.jsonl")
    questions = questions[: args.limit] if args.limit else questions

    records, searches, stops = [], defaultdict(list), defaultdict(int)
    started = time.perf_counter()
    for start in range(0, len(questions), args.batch):
        batch = questions[start : start + args.batch]
        conversations = [
            [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q["question"]}]
            for q in batch
        ]
        outs = engine.generate(
            conversations,
            lambda row, query, k, batch=batch: retriever.search(query, k, batch[row]["world"]),
            GenerationConfig(max_new_tokens=600, k=args.k),
        )
        for q, out in zip(batch, outs, strict=True):
            last = out["messages"][-1]
            records.append(score(last["content"] if last["role"] == "assistant" else None, q))
            searches[q["type"]].append(out["tool_calls"])
            stops[out["stop"]] += 1
    seconds = time.perf_counter() - started
    summary = summarize(records)
    report = {
        "questions": len(questions),
        "accuracy": {t: round(s["accuracy"], 3) for t, s in summary.items()},
        "searches_per_question": {t: round(sum(v) / len(v), 2) for t, v in sorted(searches.items())},
        "stops": dict(stops),
        "questions_per_s": round(len(questions) / seconds, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
