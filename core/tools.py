"""The `search` tool protocol: its OpenAI tool definition, calls, rendered results and the answer line.

`search(query, k) -> ranked passages {id, title, text, score}`. Retrieved text is data, never
instructions: `escape` flattens it to one line and entity-escapes angle brackets, so a document cannot
start a line with `Answer:`, open or close a role or tool-call block, or spell a special token such as
`<|im_end|>`; the rendered turn is still plain, readable text.
"""

from __future__ import annotations

import html
import json
import re

SEARCH = "search"
DEFAULT_K = 5
MAX_K = 20
ANSWER_PREFIX = "Answer:"
UNKNOWN = "unknown"
UNAVAILABLE = "Search is unavailable."
NO_RESULTS = "No results."

SYSTEM_PROMPT = (
    "Answer the question. Look up every fact with the search tool; do not rely on memory. "
    f"End with a line '{ANSWER_PREFIX} <answer>', or '{ANSWER_PREFIX} {UNKNOWN}' if the search results "
    "do not contain it."
)

SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": SEARCH,
        "description": "Search the knowledge base. Returns ranked passages as lines '[id] title: text'.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "what to look for"},
                "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "description": "passages to return"},
            },
            "required": ["query"],
        },
    },
}


class SearchUnavailable(Exception):
    """Raised by a search function when the tool is down (the closed-book suite K): the call is answered
    with UNAVAILABLE, and a student trained on offline traces abstains."""


class ToolCallError(ValueError):
    """A malformed call: the message is what the tool turn answers, so the caller can recover."""


def escape(text: str) -> str:
    """One line, with `&`, `<` and `>` entity-escaped: inert inside any chat template."""
    return html.escape(re.sub(r"\s+", " ", str(text)).strip(), quote=False)


def render_results(passages: list[dict]) -> str:
    """The tool turn's content: one line per passage, best first."""
    if not passages:
        return NO_RESULTS
    return "\n".join(f"[{escape(p['id'])}] {escape(p['title'])}: {escape(p['text'])}" for p in passages)


_PASSAGE_LINE = re.compile(r"^\[[^\]]+\] ")  # a rendered passage: "[id] title: text"


def passage_lines(content: str | None) -> list[str]:
    """The passage lines of a rendered tool turn (`render_results`' `[id] title: text`), still escaped."""
    return [line for line in str(content or "").splitlines() if _PASSAGE_LINE.match(line)]


def search_call(call_id: str, query: str, k: int) -> dict:
    """An OpenAI-style tool call to `search`."""
    arguments = json.dumps({"query": query, "k": k}, ensure_ascii=False)
    return {"id": call_id, "type": "function", "function": {"name": SEARCH, "arguments": arguments}}


def parse_search_call(call: dict) -> tuple[str, int]:
    """(query, k) from a tool call, or ToolCallError saying what is wrong with it."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise ToolCallError("tool call has no 'function' object")
    if function.get("name") != SEARCH:
        raise ToolCallError(f"unknown tool {function.get('name')!r}; the only tool is {SEARCH!r}")
    raw = function.get("arguments", "{}")
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as e:
        raise ToolCallError(f"search arguments are not valid JSON ({e.msg})") from e
    if not isinstance(args, dict):
        raise ToolCallError("search arguments must be a JSON object")
    query = args.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ToolCallError("search needs a non-empty string 'query'")
    k = args.get("k", DEFAULT_K)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ToolCallError(f"search 'k' must be an integer from 1 to {MAX_K}")
    return query.strip(), k


def final_answer(text: str | None) -> str | None:
    """The answer of a turn that ends with an `Answer: <text>` line, else None."""
    lines = (text or "").strip().splitlines()
    if lines and lines[-1].strip().startswith(ANSWER_PREFIX):
        return lines[-1].strip()[len(ANSWER_PREFIX) :].strip()
    return None
