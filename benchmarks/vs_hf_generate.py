"""Tool-loop generation: cogcore's engine against the usual approach with Hugging Face `generate`, in one run.

The usual approach is what a script around transformers does: render the conversation with the chat template,
`model.generate` greedily until the assistant's turn ends, parse the call, run the search, append the tool
turn, render the whole conversation again and `generate` again, until an answer. The engine instead keeps
each row's KV cache across tool turns (the tool turn goes in as forced tokens) and runs the rows in one batch,
as `cogcore eval` does (eval.batch_size: auto, all 64 at once for the demo student); it is also timed one
conversation at a time, as `cogcore chat` runs it, which is the like-for-like match for HF's loop.

Both answer the same held-out questions of a run with the same student, greedy, with no retries, quote holding
or step checks (eval.generation with quotes, linked, steps off and retries 0: what is left is plain greedy
decoding plus running the search), the same chat template, tool-call parser (`Engine.parse`), retriever, k,
max_tool_calls and max_new_tokens. The traces must be the same token for token: the script compares each
question's generated tokens and messages and reports how many of them agree.

    .venv/bin/python benchmarks/vs_hf_generate.py [--run-dir runs/demo0] [--n 64] [--threads 2] [--batched] \\
        [--repeats 1] [--out result.json]

Questions: the held-out split, at most ceil(n / types) of each type spread over the worlds (`cogcore eval`'s
`per_type`), the first n of those. Tokens/s counts the tokens the model chose (the assistant's turns); the
tool-result tokens, forced into the engine's cache and re-encoded by `generate`, are not counted. Search time
(the same retriever calls on both sides) is timed apart, and the ratio without it given too.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from cogcore.core.chat import chat_messages
from cogcore.core.engine import CALL_LIMIT, Engine, SearchFn, _with_default_k
from cogcore.core.generation import GenerationConfig, generate
from cogcore.core.tools import SEARCH, ToolCallError, parse_search_call, render_results


def hf_tool_loop(
    engine: Engine, conversations: list[list[dict]], search: SearchFn, cfg: GenerationConfig, batch: int = 1
) -> list[dict]:
    """Answer each conversation the usual way: `engine.model.generate` (greedy) on the whole rendered
    conversation, once per assistant turn, `batch` conversations at a time (left-padded). Per row: its
    "messages", "generated" (the ids the model chose, every turn's end token included), "stop" and
    "tool_calls", with the engine's rules for max_new_tokens (sampled and tool-result tokens together) and
    max_tool_calls, so that the traces can be compared token for token."""
    out = []
    for start in range(0, len(conversations), batch):
        rows = [_HFRow([dict(m) for m in c], engine.prompt(c)) for c in conversations[start : start + batch]]
        while live := [r for r in rows if r.stop is None]:
            prompts = [engine.prompt(r.messages) for r in live]
            limits = [_limit(engine, r, p, cfg) for r, p in zip(live, prompts, strict=True)]
            turns = _generate(engine, prompts, max(budget for budget, _ in limits))
            for r, turn, (budget, why) in zip(live, turns, limits, strict=True):
                ended = next((n + 1 for n, t in enumerate(turn) if t in engine.end_ids), len(turn))
                turn = turn[: min(ended, budget)]
                r.generated += turn
                if turn and turn[-1] in engine.end_ids:
                    i = start + rows.index(r)
                    _end_turn(engine, r, turn[:-1], lambda query, k, i=i: search(i, query, k), cfg)
                    if (
                        r.stop is None
                        and (after := _limit(engine, r, engine.prompt(r.messages), cfg))[0] <= 0
                    ):
                        r.stop = after[1]  # the tool turn used up the budget
                    continue
                if turn:  # cut off: what it wrote is kept as its last turn
                    text = engine.tokenizer.decode(turn, skip_special_tokens=False)
                    r.messages.append({"role": "assistant", "content": engine.parse(text)[0]})
                r.stop = why
        out += [
            {"messages": r.messages, "generated": r.generated, "stop": r.stop, "tool_calls": r.calls}
            for r in rows
        ]
    return out


def _limit(engine: Engine, r: _HFRow, prompt: list[int], cfg: GenerationConfig) -> tuple[int, str]:
    """How many more tokens the row may take, and the stop reason once they are taken: max_new_tokens
    counts what the conversation grew by since the question (its turns and tool turns), as the engine's."""
    tokens, context = cfg.max_new_tokens - (len(prompt) - r.prompt), engine.context - len(prompt)
    return (tokens, "max_new_tokens") if tokens <= context else (context, "context")


class _HFRow:
    def __init__(self, messages: list[dict], prompt: list[int]):
        self.messages, self.prompt = messages, len(prompt)
        self.generated: list[int] = []
        self.calls = 0
        self.stop: str | None = None


def _generate(engine: Engine, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """One greedy `generate` call over the prompts, left-padded; per prompt, the ids after it."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), engine.pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for n, p in enumerate(prompts):
        ids[n, width - len(p) :], mask[n, width - len(p) :] = torch.tensor(p), 1
    device = next(engine.model.parameters()).device
    new = engine.model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=sorted(engine.end_ids),
        pad_token_id=engine.pad_id,
    )[:, width:]
    return new.cpu().tolist()


def _end_turn(engine: Engine, r: _HFRow, turn: list[int], search, cfg: GenerationConfig) -> None:
    """A turn that ended: an answer, or calls to run (at most max_tool_calls per answer; past it, the
    limit message, and a second call after that ends the answer), as the engine does."""
    content, calls = engine.parse(engine.tokenizer.decode(turn, skip_special_tokens=False))
    if not calls:
        r.messages.append({"role": "assistant", "content": content})
        r.stop = "answer"
        return
    if r.calls >= cfg.max_tool_calls:
        if r.messages[-1].get("content") == CALL_LIMIT:
            r.messages.append({"role": "assistant", "content": content})
            r.stop = "max_tool_calls"
            return
        calls = calls[:1]
    calls = [{**call, "id": f"call_{r.calls + j}"} for j, call in enumerate(calls)]
    r.messages.append({"role": "assistant", "content": content, "tool_calls": calls})
    for call in calls:
        r.calls += 1
        if r.calls > cfg.max_tool_calls:
            result = CALL_LIMIT
        else:
            try:
                result = render_results(search(*parse_search_call(_with_default_k(call, cfg.k))))
            except ToolCallError as e:
                result = f"Error: {e}."
        r.messages.append({"role": "tool", "tool_call_id": call["id"], "name": SEARCH, "content": result})


def engine_generated(output: dict) -> list[int]:
    """The ids the model chose in an engine output (the tool-result tokens it was fed left out)."""
    new = output["tokens"][output["prompt_tokens"] :]
    return [t for t, sampled in zip(new, output["sampled"], strict=True) if sampled]


def rerenders(engine: Engine, output: dict) -> bool:
    """Whether rendering an engine output's messages again gives back the tokens it generated from: false
    when the chat template writes a turn otherwise than the model did (a call it never closed, whitespace
    that parsing strips, a text that tokenises another way), where the usual approach, which renders the
    conversation again every turn, goes on from another context than the model's own."""
    text = engine.tokenizer.apply_chat_template(
        chat_messages(engine.tokenizer, output["messages"]), tools=engine.tools, tokenize=False
    )
    return engine.encode(text)[: len(output["tokens"])] == output["tokens"]


def generated(out: dict) -> list[int]:
    """The token ids a system's output says the model chose: the engine's or the HF loop's."""
    return engine_generated(out) if "tokens" in out else out["generated"]


def same_trace(reference: dict, other: dict) -> bool:
    return generated(reference) == generated(other) and reference["messages"] == other["messages"]


class TimedSearch:
    """A search function that adds up the seconds spent in it."""

    def __init__(self, search: SearchFn):
        self.search, self.seconds = search, 0.0

    def __call__(self, row: int, query: str, k: int) -> list[dict]:
        started = time.perf_counter()
        try:
            return self.search(row, query, k)
        finally:
            self.seconds += time.perf_counter() - started


def timed(run, search: SearchFn) -> tuple[list[dict], float, float]:
    """(outputs, seconds, of which searching) of `run(search)`."""
    timer = TimedSearch(search)
    started = time.perf_counter()
    out = run(timer)
    return out, time.perf_counter() - started, timer.seconds


def main() -> None:
    from hydra import compose, initialize_config_module

    from cogcore.core.checkpoint import load_model
    from cogcore.distill.teachers import conversation
    from cogcore.evals.run import batch_rows, eval_generation, load_questions
    from cogcore.evals.suites import search_for
    from cogcore.retrieval.retriever import Retriever

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/demo0", help="a run with student/, world/ and index/")
    parser.add_argument("--n", type=int, default=64, help="held-out questions")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batched", action="store_true", help="also HF generate batched over all n")
    parser.add_argument(
        "--repeats", type=int, default=1, help="time each system this many times; the fastest counts"
    )
    parser.add_argument("--out", help="write the figures and every trace here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    run_dir = Path(args.run_dir)
    with initialize_config_module("cogcore.conf", version_base=None):
        cfg = compose("eval", [f"run_dir={run_dir}"])
    ecfg = cfg.eval
    gen = eval_generation(ecfg, quotes=False, linked=False, steps=False, retries=0, temperature=0.0)
    types = len({json.loads(line)["type"] for line in open(run_dir / "world/questions/heldout.jsonl")})
    questions = load_questions(run_dir / "world/questions/heldout.jsonl", args.n, math.ceil(args.n / types))
    retriever = Retriever.load(run_dir / "index", cfg.retriever)
    search = search_for("T", questions, retriever, {})
    model, tokenizer = load_model(run_dir / "student", device="cpu")
    engine = Engine(model, tokenizer)
    conversations = [conversation(q) for q in questions]
    batch = batch_rows(ecfg.batch_size, model)

    def cogcore_engine(s, size=batch):
        return [
            r
            for b in range(0, len(conversations), size)
            for r in generate(engine, conversations[b : b + size], _offset(s, b), gen)
        ]

    systems = {
        f"cogcore engine (batch {batch}, KV cache kept)": cogcore_engine,
        "cogcore engine, one conversation at a time": lambda s: cogcore_engine(s, 1),
        "HF generate, one conversation at a time": lambda s: hf_tool_loop(engine, conversations, s, gen),
    }
    if args.batched:
        systems[f"HF generate, batched over {len(conversations)} (left padding)"] = lambda s: hf_tool_loop(
            engine, conversations, s, gen, batch=len(conversations)
        )
    # warm up: one-time kernel, allocator and index-loading costs are no one's
    for row in {q["world"]: row for row, q in enumerate(questions)}.values():
        search(row, questions[row]["question"], gen.k)
    generate(engine, conversations[:2], search, gen)
    hf_tool_loop(engine, conversations[:1], search, gen)

    results, outputs = {}, {}
    for repeat in range(args.repeats):  # each system's fastest run counts: the machine is shared
        for name, run in systems.items():
            out, seconds, searching = timed(run, search)
            outputs[name] = out
            tokens = sum(len(generated(o)) for o in out)
            timing = {
                "seconds": seconds,
                "search_seconds": searching,
                "questions_per_s": len(out) / seconds,
                "tokens": tokens,
                "tokens_per_s": tokens / seconds,
            }
            print(repeat, name, json.dumps({k: round(v, 2) for k, v in timing.items()}), flush=True)
            if name not in results or seconds < results[name]["seconds"]:
                results[name] = timing
    names = list(systems)
    reference = outputs[names[0]]
    for name in names[1:]:
        same = [same_trace(e, h) for e, h in zip(reference, outputs[name], strict=True)]
        results[name]["same_traces"] = sum(same)
        results[name]["differ"] = [questions[i]["id"] for i, s in enumerate(same) if not s]
    results[names[0]]["rerender"] = sum(rerenders(engine, o) for o in reference)
    base = results[names[0]]
    print(f"\n{len(questions)} held-out questions of {run_dir}, greedy, no retries; {args.threads} threads")
    print("| generation | questions/s | generated tokens/s | seconds (search) | same traces | engine is |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in names:
        r = results[name]
        ratio = r["seconds"] / base["seconds"]
        bare = (r["seconds"] - r["search_seconds"]) / (base["seconds"] - base["search_seconds"])
        same = "reference" if name == names[0] else f"{r['same_traces']} of {len(questions)}"
        faster = "" if name == names[0] else f"{ratio:.1f}x faster ({bare:.1f}x without search)"
        print(
            f"| {name} | {r['questions_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
            f"{r['seconds']:.1f} ({r['search_seconds']:.1f}) | {same} | {faster} |"
        )
    print(f"{base['rerender']} of {len(questions)} engine traces render back to the tokens the model wrote")
    for name in names[1:]:
        if results[name]["differ"]:
            print(f"{name}: traces differ on {results[name]['differ']}")
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {"results": results, "questions": [q["id"] for q in questions], "outputs": outputs},
                default=str,
            )
        )


def _offset(search: SearchFn, start: int) -> SearchFn:
    return lambda i, query, k: search(start + i, query, k)


if __name__ == "__main__":
    main()
