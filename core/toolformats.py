"""Tool-call formats: how a checkpoint's chat family writes a `search` call, and how the text it generates is
parsed back into a trace's `tool_calls`. The engine, the assistant (chat, serve, streamed and client-side
tools), the HF teacher and the lm-eval model all go through `tool_format(tokenizer)` and `ToolFormat.parse`.

    cogcore      <|call|>{"query": ..., "k": ...}<|/call|>                     (cogcore's own, core/chat.py)
    hermes       <tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>  (Hermes, Qwen2.5/3, SmolLM3)
    llama3_json  {"name": ..., "parameters": {...}} from a line's start          (Llama 3.1-3.3)
    mistral      [TOOL_CALLS][{"name": ..., "arguments": {...}}]                  (Mistral v3)

Each format is data, `core/templates/<name>.json`: a transformers `response_template` whose regions split
a turn into its text and its raw call bodies (transformers' `ResponseParser` also holds back a call opener
still being written, which is what a streamed answer needs), and `call`, how a body reads: `arguments`
(the body is a search call's arguments) or `json` (one or more JSON objects, or lists of them, each with a
`name` and `arguments` or `parameters`). Bodies are read here rather than by transformers' `json` content
parser, which raises on a malformed call (the engine must answer one, not crash) and re-serialises
arguments (cogcore's format keeps the model's bytes).

Which format a checkpoint speaks is found by rendering a probe call through its chat template and parsing
the rendering with each format in turn; `tool_format=` in a config names it instead. The ChatML+Hermes and
Llama-3 chat templates shipped in `core/templates/*.jinja` give a template that drops tool calls (SmolLM2's)
a format, and mark the assistant's tokens for the loss mask with `{% generation %}`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_parsing.response_parser import ResponseParser

from cogcore.core.tools import SEARCH, SEARCH_TOOL, search_call

FORMATS = ("cogcore", "hermes", "llama3_json", "mistral")  # detection tries them in this order
TEMPLATES = ("chatml_hermes", "llama3")  # chat templates shipped as core/templates/<name>.jinja
_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')


def _data(name: str) -> str:
    return resources.files("cogcore.core").joinpath("templates", name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class ToolFormat:
    name: str
    response_template: dict  # transformers' declarative format: regions `content` and `tool_calls`
    call: str  # how a call region's body reads: "arguments" or "json" (see the module docstring)

    def _regions(self, text: str, complete: bool = True, visible: bool = False) -> tuple[str, list[str]]:
        """The turn's text and its raw call bodies; or, `visible`, its text before the first call (with
        `complete=False` a call opener still being written is held back) and no bodies."""
        parser = ResponseParser(self.response_template, prefix="")
        events = parser.feed(text)
        if complete:
            message, last = parser.finalize()
            if not visible:
                return message.get("content", ""), message.get("tool_calls", [])
            events += last
        shown = []
        for event in events:
            if event["field"] == "tool_calls":
                break
            if event["type"] == "region_chunk":
                shown.append(event["text"])
        return "".join(shown), []

    def parse(self, text: str) -> tuple[str, list[dict]]:
        """Split a generated assistant turn into its text and its tool calls. A call the model opened and
        never closed, or whose JSON is broken, is still a call: its arguments are the raw text, so running
        it answers with what is wrong."""
        content, bodies = self._regions(text)
        calls = [call for body in bodies for call in self._calls(body)]
        return content.strip(), calls

    def visible(self, text: str, complete: bool) -> str:
        """What a person may read of a turn: its text before the first call; while the turn is still being
        written (`complete=False`), without the start of a call opener that may still be forming."""
        return self._regions(text, complete, visible=True)[0]

    def _calls(self, body: str) -> list[dict]:
        if self.call == "arguments":
            return [_call(SEARCH, body.strip())]
        # One or more JSON values, each a call or a list of calls; text after the last one that reads is
        # ignored (a Llama 3 call runs to the end of its turn). Nothing readable: one malformed call.
        decoder, values, at = json.JSONDecoder(), [], 0
        while (at := _skip(body, at)) < len(body):
            try:
                value, at = decoder.raw_decode(body, at)
            except json.JSONDecodeError:
                break
            values += value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, dict) and isinstance(v.get("name"), str) for v in values):
            name = _NAME.search(body)
            return [_call(name.group(1) if name else SEARCH, body.strip())]
        out = []
        for v in values:
            arguments = v.get("arguments", v.get("parameters", {}))
            out.append(_call(v["name"], arguments if isinstance(arguments, str) else _dumps(arguments)))
        return out


def _skip(text: str, at: int) -> int:
    """The index of the next JSON value: past whitespace and the `,`/`;` some models put between calls."""
    while at < len(text) and (text[at].isspace() or text[at] in ",;"):
        at += 1
    return at


def _dumps(arguments) -> str:
    return json.dumps(arguments, ensure_ascii=False)  # as core.tools.search_call writes them


def _call(name: str, arguments: str) -> dict:
    return {"id": "", "type": "function", "function": {"name": name, "arguments": arguments}}


@cache
def get_format(name: str) -> ToolFormat:
    """The format called `name` (one of FORMATS), read from its data file."""
    if name not in FORMATS:
        raise ValueError(f"tool_format={name!r}: choose one of {', '.join(FORMATS)} (or null to detect it)")
    spec = json.loads(_data(f"{name}.json"))
    return ToolFormat(name, spec["response_template"], spec["call"])


# A probe conversation: one search call whose arguments appear nowhere else.
_PROBE_CALL = search_call("call_0", "Zembla probe query", 2)
_PROBE = [
    {"role": "user", "content": "What is the capital of Zembla?"},
    {"role": "assistant", "content": "", "tool_calls": [_PROBE_CALL]},
]


def detect(tokenizer: PreTrainedTokenizerBase) -> ToolFormat | None:
    """The format in which `tokenizer`'s chat template writes a search call, or None when it writes none
    that any format parses back (it drops tool calls, or fails on them)."""
    from cogcore.core.chat import chat_messages

    try:
        text = tokenizer.apply_chat_template(
            chat_messages(tokenizer, _PROBE), tools=[SEARCH_TOOL], tokenize=False
        )
        prompt = tokenizer.apply_chat_template(
            _PROBE[:1], tools=[SEARCH_TOOL], tokenize=False, add_generation_prompt=True
        )
    except Exception:  # a foreign Jinja template can fail in any way on a tool call: it writes none
        return None
    text = text[len(prompt) :] if text.startswith(prompt) else text  # what the model would write
    want = json.loads(_PROBE_CALL["function"]["arguments"])
    for name in FORMATS:
        fmt = get_format(name)
        for call in fmt.parse(text)[1]:
            try:
                if call["function"]["name"] == SEARCH and json.loads(call["function"]["arguments"]) == want:
                    return fmt
            except json.JSONDecodeError:
                continue
    return None


def tool_format(tokenizer: PreTrainedTokenizerBase, name: str | None = None) -> ToolFormat | None:
    """The format a checkpoint's calls are written and parsed in: `name` when a config gives one, else the
    one saved with it (a distilled student carries its format's `response_template` in its tokenizer
    config), else the one its chat template renders (None: the template writes no tool calls)."""
    if name:
        return get_format(name)
    saved = getattr(tokenizer, "response_template", None)
    for fmt in map(get_format, FORMATS):
        if saved == fmt.response_template:
            return fmt
    return detect(tokenizer)


def chat_template(name_or_file: str) -> str:
    """A shipped chat template by name (TEMPLATES), or the text of a Jinja file."""
    if name_or_file in TEMPLATES:
        return _data(f"{name_or_file}.jinja")
    path = Path(name_or_file).expanduser()
    if not path.is_file():
        raise ValueError(
            f"chat_template={name_or_file}: neither a shipped template ({', '.join(TEMPLATES)}) nor a file"
        )
    return path.read_text(encoding="utf-8")
