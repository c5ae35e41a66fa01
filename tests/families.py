"""Tokenizers of chat families other than cogcore's, trained in a blink, for the tool-format tests: each
carries its family's special tokens and a chat template that writes tool calls its way (cogcore's shipped
ChatML+Hermes and Llama-3 templates, and a Mistral v3 template written here)."""

from __future__ import annotations

import json

from tiny_chat import PASSAGES, TRACES, tiny_tokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers.utils.chat_template_utils import render_jinja_template

from cogcore.core.toolformats import chat_template
from cogcore.core.tools import SEARCH_TOOL

MISTRAL = r"""
{{- bos_token -}}
{%- if messages[0]['role'] == 'system' -%}
    {%- set system = messages[0]['content'] -%}{%- set messages = messages[1:] -%}
{%- else -%}{%- set system = '' -%}{%- endif -%}
{%- if tools -%}{{- '[AVAILABLE_TOOLS]' + (tools | tojson) + '[/AVAILABLE_TOOLS]' -}}{%- endif -%}
{%- for message in messages -%}
    {%- if message['role'] == 'user' -%}
        {{- '[INST]' + (system + '\n\n' if loop.first and system else '') + message['content'] + '[/INST]' -}}
    {%- elif message['role'] == 'assistant' -%}
        {%- generation -%}
            {{- message['content'] or '' -}}
            {%- if message['tool_calls'] -%}
                {{- '[TOOL_CALLS][' -}}
                {%- for call in message['tool_calls'] -%}
                    {{- '{"name": "' + call['function']['name'] + '", "arguments": ' -}}
                    {{- (call['function']['arguments'] | tojson) + '}' + (', ' if not loop.last else '') -}}
                {%- endfor -%}
                {{- ']' -}}
            {%- endif -%}
            {{- '</s>' -}}
        {%- endgeneration -%}
    {%- elif message['role'] == 'tool' -%}
        {{- '[TOOL_RESULTS]' + ({'content': message['content']} | tojson) + '[/TOOL_RESULTS]' -}}
    {%- endif -%}
{%- endfor -%}
"""

# format: (chat template, special tokens, bos, eos, the generation prompt that opens an assistant turn)
FAMILIES = {
    "hermes": (
        chat_template("chatml_hermes"),
        ["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
        None,
        "<|im_end|>",
        "<|im_start|>assistant\n",
    ),
    "llama3_json": (
        chat_template("llama3"),
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "mistral": (
        MISTRAL,
        ["<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"]
        + ["[TOOL_RESULTS]", "[/TOOL_RESULTS]"],
        "<s>",
        "</s>",
        "[/INST]",
    ),
}


def dict_arguments(messages: list[dict]) -> list[dict]:
    """Trace messages with each call's arguments as a dict, as a foreign template takes them."""
    return [
        {
            **m,
            "tool_calls": [
                {**c, "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"])}}
                for c in m["tool_calls"]
            ],
        }
        if m.get("tool_calls")
        else m
        for m in messages
    ]


def family_tokenizer(fmt: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of the family whose tool calls are written in `fmt` (cogcore: the tiny
    cogcore tokenizer), with its special tokens and chat template."""
    if fmt == "cogcore":
        return tiny_tokenizer()
    template, specials, bos, eos, _ = FAMILIES[fmt]
    texts = [f"{p['title']}: {p['text']}" for p in PASSAGES]
    for trace in TRACES:
        messages = dict_arguments(trace["messages"])
        rendered, _ = render_jinja_template(
            conversations=[messages], tools=[SEARCH_TOOL], chat_template=template, bos_token=bos or ""
        )
        texts.append(rendered[0])
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<pad>", *specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token="<pad>",
        extra_special_tokens=[t for t in specials if t not in (bos, eos)],
        chat_template=template,
    )
