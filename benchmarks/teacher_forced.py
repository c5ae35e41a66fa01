"""Teacher-forced diagnosis of a student on oracle traces: how often it predicts each assistant token, and
its whole `Answer:` line, given the correct trace so far (no generation, no retrieval errors).

    mkdir runs/ho && ln -s ../demo/world runs/ho/world && ln -s ../demo/index runs/ho/index
    .venv/bin/cogcore traces run_dir=runs/ho split=heldout teacher.unavailable_share=0
    .venv/bin/python benchmarks/teacher_forced.py --student runs/demo/student \
        --traces runs/ho/traces/traces.jsonl

Where the answer line fails while the tokens before it succeed, the student cannot copy the object out
of the tool result (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cogcore.core.tools import ANSWER_PREFIX, SEARCH_TOOL
from cogcore.core.trace import read_traces
from cogcore.distill.data import encode_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="runs/demo/student")
    parser.add_argument("--traces", required=True)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.student)
    model = AutoModelForCausalLM.from_pretrained(args.student).eval()
    tokens, answers = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
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
    report = {
        kind: {
            "assistant_token_accuracy": round(tokens[kind][0] / tokens[kind][1], 3),
            "answer_line_exact": round(answers[kind][0] / answers[kind][1], 3),
            "traces": answers[kind][1],
        }
        for kind in sorted(answers)
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
