"""The trace contract: OpenAI chat messages plus metadata, one JSON schema, validated on write and read.

A trace is `{"id", "messages", "metadata"}`. Assistant turns carry reasoning text and `tool_calls` to
`search`; each tool turn answers one call, in order; the last turn is the assistant's and ends with an
`Answer:` line. Errors name the file, the line and the field, e.g.
`traces.jsonl:12: messages[3].tool_calls[0].function.arguments: not valid JSON`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jsonschema

from cogcore.core.io import DataError, iter_jsonl
from cogcore.core.tools import ToolCallError, final_answer, parse_search_call

TOOL_CALL = {
    "type": "object",
    "required": ["id", "type", "function"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "required": ["name", "arguments"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
        },
    },
}

MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "additionalProperties": False,
    "properties": {
        "role": {"enum": ["system", "user", "assistant", "tool"]},
        "content": {"type": ["string", "null"]},
        "tool_calls": {"type": "array", "minItems": 1, "items": TOOL_CALL},
        "tool_call_id": {"type": "string"},
        "name": {"type": "string"},
    },
    "allOf": [
        {
            "if": {"properties": {"role": {"const": "tool"}}},
            "then": {"required": ["tool_call_id"], "properties": {"content": {"type": "string"}}},
            "else": {"not": {"required": ["tool_call_id"]}},
        },
        {
            "if": {"properties": {"role": {"enum": ["system", "user"]}}},
            "then": {"properties": {"content": {"type": "string"}}, "not": {"required": ["tool_calls"]}},
        },
    ],
}

TRACE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "cogcore trace",
    "type": "object",
    "required": ["id", "messages", "metadata"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 2, "items": MESSAGE},
        "metadata": {
            "type": "object",
            "required": ["question", "type", "answers", "teacher"],
            "properties": {
                "question": {"type": "string"},
                "type": {"type": "string"},
                "answers": {"type": "array", "items": {"type": "string"}},
                "teacher": {"type": "string"},
                "world": {"type": "string"},
                "split": {"type": "string"},
                "gold_passages": {"type": "array", "items": {"type": "string"}},
                # "unavailable": the search tool was down for this trace and the answer abstains
                # "gold": every search returned exactly the question's gold passages (a perfect retriever)
                "search": {"enum": ["live", "unavailable", "gold"]},
            },
        },
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(TRACE_SCHEMA)


class Rejected(Exception):
    """A question that ends without a trace to keep: its teacher could not write one (e.g. the oracle found
    no passage for a fact), or the filter refused the one written. `reason` is a short code for counting,
    `detail` says what happened, `messages` is the trace so far; rejected.jsonl records all three."""

    def __init__(self, reason: str, detail: str, messages: list[dict]):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.messages = reason, detail, messages


def _field(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(record)"


def trace_errors(trace: dict) -> list[str]:
    """Every problem with `trace`, each as 'field: what is wrong'; empty when it is valid."""
    schema_errors = sorted(_VALIDATOR.iter_errors(trace), key=lambda e: list(map(str, e.absolute_path)))
    if schema_errors:
        return [f"{_field(e.absolute_path)}: {e.message}" for e in schema_errors]
    errors: list[str] = []
    messages = trace["messages"]
    first = 1 if messages[0]["role"] == "system" else 0
    if messages[first]["role"] != "user":
        errors.append(
            f"messages[{first}].role: the conversation must open with a user turn (after an optional system)"
        )
    pending: list[str] = []  # tool call ids issued and not answered yet, in order
    for i, m in enumerate(messages):
        role = m["role"]
        if role == "system" and i != 0:
            errors.append(f"messages[{i}].role: a system turn may only come first")
        if pending and role != "tool":
            errors.append(f"messages[{i}].role: tool call {pending[0]!r} is not answered before this turn")
            pending = []
        if role == "assistant":
            for j, call in enumerate(m.get("tool_calls", [])):
                try:
                    parse_search_call(call)
                except ToolCallError as e:
                    errors.append(f"messages[{i}].tool_calls[{j}].function: {e}")
                pending.append(call["id"])
            if not m.get("tool_calls") and not (m["content"] or "").strip():
                errors.append(f"messages[{i}].content: an assistant turn needs text or tool calls")
        elif role == "tool":
            if not pending:
                errors.append(f"messages[{i}]: tool turn answers no pending tool call")
            elif m["tool_call_id"] != pending[0]:
                errors.append(
                    f"messages[{i}].tool_call_id: expected {pending[0]!r}, got {m['tool_call_id']!r}"
                )
                pending.pop(0)
            else:
                pending.pop(0)
    last = messages[-1]
    if pending:
        errors.append(f"messages[{len(messages) - 1}]: tool call {pending[0]!r} is never answered")
    elif last["role"] != "assistant" or last.get("tool_calls"):
        errors.append(f"messages[{len(messages) - 1}]: the last turn must be the assistant's final answer")
    elif final_answer(last["content"]) is None:
        errors.append(
            f"messages[{len(messages) - 1}].content: the final turn must end with a line 'Answer: <text>'"
        )
    return errors


def check_trace(trace: dict, where: str = "trace") -> dict:
    """Return `trace` if valid, else raise DataError naming `where` (e.g. 'file:line') and the fields."""
    errors = trace_errors(trace)
    if errors:
        raise DataError(f"{where}: " + "; ".join(errors))
    return trace


def read_traces(path: str | Path) -> Iterator[dict]:
    """Valid traces from a JSONL file; the first invalid one raises DataError with its file and line."""
    for lineno, record in iter_jsonl(path):
        yield check_trace(record, f"{path}:{lineno}")
