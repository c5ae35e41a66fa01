"""cogcore's chat format: the special tokens and the Jinja chat template of from-scratch students.

A trace renders as
    <|bos|><|system|>{system}\\nTools: search(query, k)<|end|><|user|>{question}<|end|>
    <|assistant|>{reasoning}<|call|>{arguments JSON}<|/call|><|end|><|tool|>{results}<|end|>
    <|assistant|>{text ending with Answer: X}<|end|>
(one line in reality). The generation prompt is `<|assistant|>`. The trainer, the tokenizer and the
generation engine all rely on these exact strings, so they live here and nowhere else.

The template marks each assistant turn, from after `<|assistant|>` through its `<|end|>`, with
`{% generation %}`, so `tokenizer.apply_chat_template(..., return_assistant_tokens_mask=True)` yields the
loss mask: only what the assistant writes is trained.
"""

from __future__ import annotations

import json

from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import render_jinja_template

BOS = "<|bos|>"
END = "<|end|>"  # closes every turn; the tokenizer's eos, so generation stops at the end of a turn
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
TOOL = "<|tool|>"
CALL = "<|call|>"
END_CALL = "<|/call|>"
PAD = "<|pad|>"

# In this order they take ids 0..8 in a cogcore tokenizer.
SPECIAL_TOKENS = (PAD, BOS, END, SYSTEM, USER, ASSISTANT, TOOL, CALL, END_CALL)
GENERATION_PROMPT = ASSISTANT

# Rendered by transformers' sandboxed Jinja with trim_blocks/lstrip_blocks; every tag strips the
# whitespace around it (`{%-`, `-%}`), so the indentation below never reaches the output.
CHAT_TEMPLATE = r"""
{#- cogcore chat format, see cogcore/core/chat.py. -#}
{{- '<|bos|>' -}}
{%- if messages[0]['role'] == 'system' -%}
    {%- set system = messages[0]['content'] -%}
    {%- set messages = messages[1:] -%}
{%- else -%}
    {%- set system = '' -%}
{%- endif -%}
{#- Tools go in the system turn as one line, e.g. 'Tools: search(query, k)': a student of a few million
    parameters has no context to spare for JSON schemas. -#}
{%- if system or tools -%}
    {{- '<|system|>' + system -}}
    {%- if tools -%}
        {{- ('\n' if system else '') + 'Tools: ' -}}
        {%- for tool in tools -%}
            {%- set function = tool['function'] if tool['function'] is defined else tool -%}
            {%- set params = function['parameters'] if function['parameters'] is defined else {} -%}
            {{- function['name'] + '(' + params['properties'] | default({}) | list | join(', ') + ')' -}}
            {%- if not loop.last -%}{{- ', ' -}}{%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{- '<|end|>' -}}
{%- endif -%}
{%- for message in messages -%}
    {%- if message['role'] == 'user' -%}
        {{- '<|user|>' + message['content'] + '<|end|>' -}}
    {%- elif message['role'] == 'tool' -%}
        {{- '<|tool|>' + message['content'] + '<|end|>' -}}
    {%- elif message['role'] == 'assistant' -%}
        {{- '<|assistant|>' -}}
        {#- What the assistant writes, through its <|end|>, is what the student is trained on. -#}
        {%- generation -%}
            {%- if message['content'] -%}{{- message['content'] -}}{%- endif -%}
            {#- Traces store arguments as a JSON string: rendered byte for byte as the teacher wrote it. -#}
            {%- for call in message['tool_calls'] or [] -%}
                {%- set arguments = call['function']['arguments'] -%}
                {{- '<|call|>' + (arguments if arguments is string else arguments | tojson) + '<|/call|>' -}}
            {%- endfor -%}
            {{- '<|end|>' -}}
        {%- endgeneration -%}
    {%- else -%}
        {{- raise_exception('the cogcore chat format has no ' + message['role'] + ' turn here') -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|assistant|>' -}}
{%- endif -%}
"""


def render(messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = False) -> str:
    """The text `apply_chat_template(messages, tools=tools, tokenize=False)` gives, without a tokenizer (the
    tokenizer is trained on these texts). Keys set to None are dropped first, as transformers does."""
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    rendered, _ = render_jinja_template(
        conversations=[messages],
        tools=tools,
        chat_template=CHAT_TEMPLATE,
        add_generation_prompt=add_generation_prompt,
    )
    return rendered[0]


def chat_messages(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[dict]:
    """`messages` as `tokenizer`'s chat template expects them. cogcore's template renders the JSON string
    arguments of a trace as they are; other templates follow the transformers convention of dict arguments
    (many would otherwise JSON-encode the string a second time), except arguments that are not JSON."""
    if tokenizer.chat_template == CHAT_TEMPLATE:
        return messages
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [
                {**c, "function": {**c["function"], "arguments": _arguments(c)}} for c in m["tool_calls"]
            ]
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out


def _arguments(call: dict):
    """A call's arguments as a dict, or the string the model wrote when it is not JSON (a malformed call,
    which the engine answers with the error: it is rendered as written)."""
    try:
        return json.loads(call["function"]["arguments"])
    except json.JSONDecodeError:
        return call["function"]["arguments"]
