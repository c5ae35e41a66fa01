import pytest
from tiny_chat import TRACES, tiny_tokenizer

from cogcore.core.chat import (
    ASSISTANT,
    BOS,
    CALL,
    CHAT_TEMPLATE,
    END,
    END_CALL,
    GENERATION_PROMPT,
    PAD,
    SPECIAL_TOKENS,
    SYSTEM,
    TOOL,
    USER,
    render,
)
from cogcore.core.tools import SEARCH_TOOL, SYSTEM_PROMPT, render_results, search_call


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def test_special_tokens_are_fixed():
    assert " ".join(SPECIAL_TOKENS) == (
        "<|pad|> <|bos|> <|end|> <|system|> <|user|> <|assistant|> <|tool|> <|call|> <|/call|>"
    )
    assert GENERATION_PROMPT == "<|assistant|>"


@pytest.mark.parametrize("trace", TRACES, ids=lambda t: t["id"])
def test_each_turn_opens_with_its_role_token_and_closes_with_end(trace):
    """What the trainer's mask and the engine's stop rely on: <|bos|>, then per message its role's token
    ... <|end|>, and a call's arguments between <|call|> and <|/call|> inside its assistant turn."""
    roles = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT, "tool": TOOL}
    text = render(trace["messages"], tools=[SEARCH_TOOL])
    assert text.startswith(BOS) and text.count(BOS) == 1 and PAD not in text
    *turns, rest = text.removeprefix(BOS).split(END)
    assert rest == ""
    assert [t[: t.index("|>") + 2] for t in turns] == [roles[m["role"]] for m in trace["messages"]]
    for turn, m in zip(turns, trace["messages"], strict=True):
        calls = [c["function"]["arguments"] for c in m.get("tool_calls") or []]
        assert turn.count(CALL) == turn.count(END_CALL) == len(calls)
        assert all(f"{CALL}{arguments}{END_CALL}" in turn for arguments in calls)


def test_renders_the_cogcore_format():
    trace = TRACES[0]
    m = trace["messages"]
    expected = (
        f"<|bos|><|system|>{SYSTEM_PROMPT}\nTools: search(query, k)<|end|>"
        f"<|user|>{m[1]['content']}<|end|>"
        f"<|assistant|>{m[2]['content']}<|call|>{m[2]['tool_calls'][0]['function']['arguments']}<|/call|><|end|>"
        f"<|tool|>{m[3]['content']}<|end|>"
        f"<|assistant|>{m[4]['content']}<|end|>"
    )
    assert render(m, tools=[SEARCH_TOOL]) == expected
    assert '<|call|>{"query": "Rouler Bristor employer", "k": 3}<|/call|>' in expected
    # no tools: no tools line; generation prompt opens an assistant turn
    assert (
        render(m[:2], add_generation_prompt=True)
        == f"<|bos|><|system|>{SYSTEM_PROMPT}<|end|><|user|>{m[1]['content']}<|end|><|assistant|>"
    )
    # no system turn and no tools: no system turn at all
    assert render([m[1]]) == f"<|bos|><|user|>{m[1]['content']}<|end|>"


def test_arguments_string_as_is_dict_as_json_and_several_calls():
    compact = '{"query":"Verum population","k":2}'  # a teacher's own formatting survives
    calls = [
        {"id": "a", "type": "function", "function": {"name": "search", "arguments": compact}},
        {
            "id": "b",
            "type": "function",
            "function": {"name": "search", "arguments": {"query": "Godas", "k": 1}},
        },
    ]
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": calls}]
    assert render(messages) == (
        '<|bos|><|user|>q<|end|><|assistant|><|call|>{"query":"Verum population","k":2}<|/call|>'
        '<|call|>{"query": "Godas", "k": 1}<|/call|><|end|>'
    )


def test_tokenizer_template_matches_render(tokenizer):
    for trace in TRACES:
        text = tokenizer.apply_chat_template(trace["messages"], tools=[SEARCH_TOOL], tokenize=False)
        assert text == render(trace["messages"], tools=[SEARCH_TOOL])
    assert tokenizer.chat_template == CHAT_TEMPLATE


def test_assistant_tokens_mask_from_generation_blocks(tokenizer):
    # transformers maps the {% generation %} character spans to tokens through the fast tokenizer's offsets.
    messages = TRACES[1]["messages"]
    enc = tokenizer.apply_chat_template(
        messages, tools=[SEARCH_TOOL], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    spans, start = [], None
    for t, m in enumerate([*mask, 0]):
        if m and start is None:
            start = t
        elif not m and start is not None:
            spans.append(tokenizer.decode(ids[start:t]))
            start = None
    assistant = [m for m in messages if m["role"] == "assistant"]
    expected = [
        (m["content"] or "")
        + "".join(f"<|call|>{c['function']['arguments']}<|/call|>" for c in m.get("tool_calls", []))
        + "<|end|>"
        for m in assistant
    ]
    assert spans == expected


def test_mask_survives_leading_whitespace(tokenizer):
    # A byte-level post-processor that trims offsets would map a leading space to no token, and transformers
    # would then stop marking the rest of the conversation.
    call = search_call("call_0", "Verum population", 3)
    messages = [
        {"role": "user", "content": "How many live in Verum?"},
        {"role": "assistant", "content": "  \nLook it up.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": render_results([])},
        {"role": "assistant", "content": " Answer: unknown"},
    ]
    enc = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    trained = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    text = tokenizer.decode(trained)
    assert (
        text
        == f"  \nLook it up.<|call|>{call['function']['arguments']}<|/call|><|end|> Answer: unknown<|end|>"
    )


def test_tools_line_lists_every_tool_compactly():
    now = {"type": "function", "function": {"name": "now", "description": "The current time."}}
    bare = {"name": "add", "parameters": {"type": "object", "properties": {"a": {}, "b": {}}}}
    text = render([{"role": "user", "content": "q"}], tools=[SEARCH_TOOL, now, bare])
    assert text == "<|bos|><|system|>Tools: search(query, k), now(), add(a, b)<|end|><|user|>q<|end|>"
