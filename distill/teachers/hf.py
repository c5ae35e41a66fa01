"""teacher=hf: a local transformers checkpoint writes the traces through the tool-loop engine
(core/engine.py: `batch_size` questions per batch, one KV cache, searches run between turns).

The engine reads tool calls in the checkpoint's own format (core/toolformats.py: cogcore's, Hermes/Qwen,
Llama 3 JSON, Mistral; detected from its chat template, or `teacher.tool_format`), so a cogcore student, a
Qwen or a Llama instruct model all run here; `teacher.gguf_file` loads a GGUF file. A model whose template
writes no tool calls is refused.

A question ends as a trace, or as `Rejected` with the reason: `length` (max_new_tokens or the context ran
out), `max_tool_calls` (the model kept calling past the limit), `unknown_tool` / `bad_tool_arguments` (a
malformed call: the engine answered it with the error, but a trace that teaches it is no use),
`no_answer` (the final turn has no `Answer:` line).

With `topk: K > 0`, once the traces are written the teacher also scores every kept trace and saves its
top-K log-probs per token (`distill/losses.py` `teacher_topk`, `save_topk_shard`) to `<out>/topk/`, for
token-level distillation without the teacher in memory. One shard per batch of traces, each holding
    input_ids       int64 [B, T]       the trace as the teacher's chat template tokenises it (pad at the end)
    attention_mask  int64 [B, T]
    topk_ids        int64 [B, T-1, K]  the teacher's K likeliest next tokens at positions 0..T-2
    topk_logprobs   float [B, T-1, K]  their log-probs (temperature 1)
    mask            bool  [B, T-1]     True where the next token is one the assistant wrote (the loss mask)
and `topk/index.jsonl` saying which shard and row holds each trace id; traces already indexed are
skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from omegaconf import DictConfig

from cogcore.core.checkpoint import load_model
from cogcore.core.engine import CALL_LIMIT, Engine
from cogcore.core.generation import generate, generation_config
from cogcore.core.io import DataError, JsonlAppender, read_jsonl
from cogcore.core.toolformats import FORMATS, tool_format
from cogcore.core.tools import (
    SEARCH,
    SEARCH_TOOL,
    SearchUnavailable,
    ToolCallError,
    final_answer,
    parse_search_call,
)
from cogcore.core.trace import Rejected
from cogcore.distill.losses import save_topk_shard, teacher_topk
from cogcore.distill.packing import encode_trace
from cogcore.distill.teachers import conversation, drawn, make_trace
from cogcore.retrieval.retriever import Retriever

STOPS = {"max_new_tokens": "length", "context": "length", "max_tool_calls": "max_tool_calls"}


def load_teacher(tcfg: DictConfig):
    """(model, tokenizer) from `teacher.path` (a GGUF file in it with `teacher.gguf_file`), on
    `teacher.device` (auto: the GPU when there is one)."""

    def writes_tool_calls(tokenizer) -> None:
        if tool_format(tokenizer, tcfg.get("tool_format")) is None:
            raise DataError(
                f"teacher.path={tcfg.path}: its chat template writes no tool calls in a format cogcore "
                f"parses ({', '.join(FORMATS)}), so the engine cannot see its searches; set "
                "teacher.tool_format=<format> if it has one, or serve the model with vLLM or SGLang and use "
                "teacher=openai (see the README, 'Real teachers')"
            )

    return load_model(
        tcfg.path,
        tcfg.device,
        tcfg.dtype,
        key="teacher.path",
        check=writes_tool_calls,
        gguf_file=tcfg.get("gguf_file"),
    )


def judge(messages: list[dict], stop: str, max_tool_calls: int) -> Rejected | None:
    """Why the engine's answer is no trace to learn from, or None."""
    if stop != "answer":
        return Rejected(STOPS[stop], f"the engine stopped: {stop}", messages)
    for m in messages:
        for call in m.get("tool_calls") or []:
            if call["function"]["name"] != SEARCH:
                return Rejected("unknown_tool", f"called {call['function']['name']!r}", messages)
            try:
                parse_search_call(call)
            except ToolCallError as e:
                return Rejected("bad_tool_arguments", str(e), messages)
        if m["role"] == "tool" and m["content"] == CALL_LIMIT:
            return Rejected("max_tool_calls", f"more than {max_tool_calls} search calls", messages)
    if final_answer(messages[-1]["content"]) is None:
        return Rejected("no_answer", "the final turn has no 'Answer: <text>' line", messages)
    return None


def run_hf(
    questions: list[dict], retriever: Retriever, tcfg: DictConfig, batch_size: int, write, model, tokenizer
):
    """Trace `questions` `batch_size` at a time, calling `write(question, trace)` or
    `write(question, None, rejected)` for each."""
    engine = Engine(model, tokenizer, tool_format=tool_format(tokenizer, tcfg.get("tool_format")))
    # linked: auto is on for world questions, whose passages are titled by their entity.
    auto_linked = all("world" in q for q in questions)
    generation = generation_config(tcfg.generation, "teacher.generation", auto_linked=auto_linked)
    name = f"hf:{Path(tcfg.path).name}"
    for start in range(0, len(questions), batch_size):
        batch = questions[start : start + batch_size]
        offline = [drawn(q["id"], tcfg.unavailable_share) for q in batch]

        def search(row: int, query: str, k: int, batch=batch, offline=offline) -> list[dict]:
            if offline[row]:
                raise SearchUnavailable
            return retriever.search(query, k, batch[row].get("world"))

        conversations = [conversation(q, tcfg.system_prompt) for q in batch]
        outs = generate(engine, conversations, search, generation)
        for question, down, out in zip(batch, offline, outs, strict=True):
            failure = judge(out["messages"], out["stop"], generation.max_tool_calls)
            if failure is None:
                write(question, make_trace(question, out["messages"], name, down))
            else:
                write(question, None, failure)


@torch.no_grad()
def save_topk(traces_path: Path, out: Path, model, tokenizer, k: int, batch_size: int) -> int:
    """Score every trace of `traces_path` not yet in `out/index.jsonl` and save its top-k log-probs (the
    format is in the module docstring). Returns how many traces it scored."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with JsonlAppender(out / "index.jsonl") as index:
        todo = [t for t in read_jsonl(traces_path) if t["id"] not in index.ids]
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            encoded = [encode_trace(tokenizer, trace, [SEARCH_TOOL]) for trace in batch]
            width = max(len(ids) for ids, _ in encoded)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            trained = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, (ids, mask) in enumerate(encoded):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
                trained[row, : len(ids)] = torch.tensor(mask, dtype=torch.bool)
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            topk_ids, topk_logprobs = teacher_topk(logits[:, :-1], k)
            shard = (
                hashlib.sha256(" ".join(t["id"] for t in batch).encode()).hexdigest()[:16] + ".safetensors"
            )
            # The shard is complete on disk before the index names it, so an indexed trace always has one.
            save_topk_shard(
                out / shard,
                {
                    "input_ids": input_ids,
                    "attention_mask": attention,
                    "topk_ids": topk_ids,
                    "topk_logprobs": topk_logprobs,
                    "mask": trained[:, 1:],
                },
            )
            for row, (trace, (ids, _)) in enumerate(zip(batch, encoded, strict=True)):
                index.write({"id": trace["id"], "shard": shard, "row": row, "tokens": len(ids)})
    return len(todo)
