"""`cogcore serve` under concurrent clients: requests/s and p50/p95 latency at 1, 8, 32 and 64 concurrent
requests, through the real `openai` client against a real server on loopback.

    python benchmarks/serve_concurrency.py RUN_DIR --collection w680 --label after --out after.json

starts `cogcore serve run_dir=RUN_DIR collection=...` (port 0, its printed URL), sends one warm-up request,
then for each level sends `level` requests at once, one thread each, each a held-out question of the
collection's world (cycling), and times each from send to its whole response. Requests/s is a level's
requests over the wall time from the first send to the last response. Every level runs on the same server.

The other checkout (main's Batcher, "before") is measured the same way with its code first on the path, as
benchmarks/engine_outputs.py does: PYTHONPATH=<folder holding a `cogcore/` of symlinks core, retrieval,
distill, evals, conf into that checkout>.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai


def start(run_dir: Path, collection: str, options: list[str]) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        "-m",
        "cogcore.core.cli",
        "serve",
        f"run_dir={run_dir}",
        f"collection={collection}",
    ]
    command += ["port=0", "log_level=warning", *options]
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ
    )
    lines = []
    while not (lines and lines[-1].startswith("serve: model")):
        lines.append(server.stdout.readline())
        if not lines[-1]:
            raise SystemExit("the server exited before serving:\n" + "".join(lines))
    return server, lines[-1].split(" at ")[1].split()[0]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--collection", required=True, help="the world whose held-out questions are asked")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--label", default="", help="names the checkout in the output")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("serve", nargs="*", help="more `cogcore serve` overrides, e.g. max_tokens=256")
    args = parser.parse_intermixed_args()

    questions = [json.loads(line) for line in (args.run_dir / "world" / "questions" / "heldout.jsonl").open()]
    questions = [q["question"] for q in questions if q.get("world") == args.collection]
    server, url = start(args.run_dir, args.collection, args.serve)
    try:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=None)
        model = client.models.list().data[0].id

        def ask(n: int) -> dict:
            sent = time.monotonic()
            messages = [{"role": "user", "content": questions[n % len(questions)]}]
            response = client.chat.completions.create(model=model, messages=messages)
            return {
                "latency": time.monotonic() - sent,
                "tokens": response.usage.completion_tokens,
                "finish": response.choices[0].finish_reason,
            }

        ask(0)  # warm-up: the first forward pays for lazy initialisation
        levels, asked = [], 0
        for level in args.levels:
            began = time.monotonic()
            with ThreadPoolExecutor(level) as pool:
                answers = list(pool.map(ask, range(asked, asked + level)))
            wall = time.monotonic() - began
            asked += level
            latencies = [a["latency"] for a in answers]
            levels.append(
                {
                    "concurrent": level,
                    "requests_per_s": level / wall,
                    "p50_s": statistics.median(latencies),
                    "p95_s": percentile(latencies, 0.95),
                    "wall_s": wall,
                    "completion_tokens": sum(a["tokens"] for a in answers),
                    "finish": {
                        f: sum(a["finish"] == f for a in answers) for f in {a["finish"] for a in answers}
                    },
                }
            )
            row = levels[-1]
            rate, p50, p95 = row["requests_per_s"], row["p50_s"], row["p95_s"]
            print(
                f"{args.label} {level:>3} concurrent: {rate:.3f} req/s, p50 {p50:.1f} s, p95 {p95:.1f} s, "
                f"{row['completion_tokens']} tokens in {wall:.1f} s",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(timeout=60)
    args.out.write_text(
        json.dumps({"label": args.label, "serve": args.serve, "levels": levels}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
