"""Tool calls in each chat family's own format (core/toolformats.py): traces rendered through the family's
template parse back to the same calls, malformed and unclosed calls stay calls, a streamed turn never
shows call markup, and the engine's tool loop runs in every format."""

from __future__ import annotations

import json

import pytest
from families import FAMILIES, dict_arguments, family_tokenizer
from tiny_chat import TRACES, tiny_llama

from cogcore.core.assistant import TextStream
from cogcore.core.engine import Engine
from cogcore.core.generation import GenerationConfig
from cogcore.core.io import read_jsonl
from cogcore.core.toolformats import FORMATS, chat_template, get_format, tool_format
from cogcore.core.tools import SEARCH_TOOL, SYSTEM_PROMPT, ToolCallError, parse_search_call, render_results

FOREIGN = ("hermes", "llama3_json", "mistral")


@pytest.fixture(scope="module")
def tokenizers():
    return {fmt: family_tokenizer(fmt) for fmt in FORMATS}


def turns(tokenizer, messages: list[dict]) -> list[tuple[dict, str]]:
    """Each assistant message of a trace with the text a model writes for it: what rendering the message
    adds after the generation prompt, without the token that ends the turn."""

    def render(msgs, prompt=False):
        return tokenizer.apply_chat_template(
            msgs if tokenizer.chat_template.startswith("\n{#- cogcore") else dict_arguments(msgs),
            tools=[SEARCH_TOOL],
            tokenize=False,
            add_generation_prompt=prompt,
        )

    out = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            before, full = render(messages[:i], prompt=True), render(messages[: i + 1])
            assert full.startswith(before)
            written = full[len(before) :]
            assert written.endswith(tokenizer.eos_token)
            out.append((m, written[: -len(tokenizer.eos_token)]))
    return out


def same_calls(parsed: list[dict], expected: list[dict]) -> bool:
    def key(call):
        return call["function"]["name"], json.loads(call["function"]["arguments"])

    return [key(c) for c in parsed] == [key(c) for c in expected]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_family_template_is_detected_as_its_format(tokenizers, fmt):
    assert tool_format(tokenizers[fmt]).name == fmt


def test_a_template_that_drops_tool_calls_has_no_format_unless_a_config_names_one(tokenizers):
    smollm2 = tokenizers["hermes"]
    saved = smollm2.chat_template
    # SmolLM2-135M-Instruct's own template: ChatML, tool calls dropped
    smollm2.chat_template = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    try:
        assert tool_format(smollm2) is None
        assert tool_format(smollm2, "hermes").name == "hermes"
        smollm2.response_template = get_format("mistral").response_template  # saved with a student
        assert tool_format(smollm2).name == "mistral"
        with pytest.raises(ValueError, match="tool_format='qwen'"):
            tool_format(smollm2, "qwen")
    finally:
        smollm2.chat_template, smollm2.response_template = saved, None


@pytest.mark.parametrize("fmt", FORMATS)
def test_traces_rendered_through_the_family_template_parse_back_to_their_calls(tokenizers, fmt):
    parser, checked = get_format(fmt), 0
    for trace in TRACES:
        for message, written in turns(tokenizers[fmt], trace["messages"]):
            content, calls = parser.parse(written)
            assert content == message["content"]
            assert same_calls(calls, message.get("tool_calls") or [])
            checked += bool(calls)
    assert checked == sum(1 for t in TRACES for m in t["messages"] if m.get("tool_calls"))


CALLS = {  # format: (a well-formed call, the same call unclosed, a call whose JSON is broken)
    "cogcore": (
        '<|call|>{"query": "Verum"}<|/call|>',
        '<|call|>{"query": "Ver',
        "<|call|>{query: Verum}<|/call|>",
    ),
    "hermes": (
        '<tool_call>\n{"name": "search", "arguments": {"query": "Verum"}}\n</tool_call>',
        '<tool_call>\n{"name": "search", "arguments": {"query": "Ver',
        '<tool_call>\n{"name": "search", "arguments": {query: Verum}}\n</tool_call>',
    ),
    "llama3_json": (
        '\n{"name": "search", "parameters": {"query": "Verum"}}',
        '\n{"name": "search", "parameters": {"query": "Ver',
        '\n{"name": "search", "parameters": {query: Verum}}',
    ),
    "mistral": (
        '[TOOL_CALLS][{"name": "search", "arguments": {"query": "Verum"}}]',
        '[TOOL_CALLS][{"name": "search", "arguments": {"query": "Ver',
        '[TOOL_CALLS][{"name": "search", "arguments": {query: Verum}}]',
    ),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_malformed_and_unclosed_calls_are_still_calls_the_engine_can_answer(fmt):
    parser = get_format(fmt)
    good, unclosed, broken = CALLS[fmt]
    content, calls = parser.parse("I need it." + good)
    assert content == "I need it." and parse_search_call(calls[0]) == ("Verum", 5)
    for bad in (unclosed, broken):
        content, calls = parser.parse("I need it." + bad)
        assert content == "I need it." and len(calls) == 1 and calls[0]["function"]["name"] == "search"
        with pytest.raises(ToolCallError, match="not valid JSON"):
            parse_search_call(calls[0])
    assert parser.parse("No call here.\nAnswer: 3") == ("No call here.\nAnswer: 3", [])


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_streamed_turn_never_shows_a_call_or_the_start_of_one(tokenizers, fmt):
    """Fed one token at a time (TextStream, as chat and the server stream), only the text before the call
    is shown, and no piece of the call's opener ever reaches the screen."""
    tokenizer, parser = tokenizers[fmt], get_format(fmt)
    written = "I need the birthplace." + CALLS[fmt][0]
    opener = CALLS[fmt][0].strip()[:4]
    for n in range(len(written) + 1):  # every prefix, as a stream may cut it
        shown = parser.visible(written[:n], complete=False)
        shown = shown.rstrip()  # Llama 3's newline before a call shows: it may still begin a paragraph
        assert "I need the birthplace."[: len(shown)] == shown and opener not in shown
    pieces = []
    stream = TextStream(tokenizer, {tokenizer.eos_token_id}, pieces.append, fmt=parser)
    for token in tokenizer(written, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]:
        stream(token)
    assert "".join(pieces).rstrip() == "I need the birthplace."


def scripted(tokenizer, turns: list[str]) -> dict[int, int]:
    """The model's choices, by index, that write `turns` one after the other, each ended by eos (a scripted
    model in any format: the engine takes these tokens instead of the random model's)."""
    ids = []
    for turn in turns:
        ids += tokenizer(turn, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return dict(enumerate(ids))


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_engine_runs_the_tool_loop_in_every_format(tokenizers, fmt):
    tokenizer = tokenizers[fmt]
    trace = TRACES[1]  # two searches, then the answer
    written = [text for _, text in turns(tokenizer, trace["messages"])]
    engine = Engine(tiny_llama(tokenizer), tokenizer)
    assert engine.format.name == fmt
    searched = []

    def search(row, query, k):
        searched.append((query, k))
        return [{"id": f"p{len(searched)}", "title": "T", "text": f"result of {query}"}]

    conversation = trace["messages"][:2]
    (out,) = engine.generate(
        [conversation],
        search,
        GenerationConfig(max_new_tokens=400),
        prescribed=[scripted(tokenizer, written)],
    )
    assert out["stop"] == "answer" and searched == [("Rouler Bristor birthplace", 3), ("Verum population", 3)]
    messages = out["messages"][2:]
    assert [m["role"] for m in messages] == ["assistant", "tool", "assistant", "tool", "assistant"]
    for got, want in zip(messages[::2], trace["messages"][2::2], strict=True):
        assert got["content"] == want["content"] and same_calls(
            got.get("tool_calls", []), want.get("tool_calls", [])
        )
    assert messages[1]["content"] == render_results(
        [{"id": "p1", "title": "T", "text": "result of Rouler Bristor birthplace"}]
    )


def test_shipped_templates_mark_only_the_assistant_tokens(tokenizers):
    for fmt in ("hermes", "llama3_json"):
        tokenizer = tokenizers[fmt]
        messages = dict_arguments(TRACES[0]["messages"])
        enc = tokenizer.apply_chat_template(
            messages, tools=[SEARCH_TOOL], return_dict=True, return_assistant_tokens_mask=True
        )
        trained = tokenizer.decode(
            [t for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
        )
        assistant = [text + tokenizer.eos_token for _, text in turns(tokenizer, TRACES[0]["messages"])]
        assert trained == "".join(assistant)
        assert SYSTEM_PROMPT not in trained and "Which organisation" not in trained


def test_chat_template_names_a_shipped_template_or_a_file(tmp_path):
    assert "<tool_call>" in chat_template("chatml_hermes") and "ipython" in chat_template("llama3")
    (tmp_path / "mine.jinja").write_text("{{ messages }}")
    assert chat_template(str(tmp_path / "mine.jinja")) == "{{ messages }}"
    with pytest.raises(ValueError, match="chatml_hermes, llama3"):
        chat_template("chatml")


def hermes_librarian(context: str) -> str:
    """The librarian of tests/rule_lm.py in Hermes format: search for the user's question, then quote the
    first result line and answer with its id."""
    last = context[context.rfind("<|im_start|>") :].rstrip()
    if "<tool_response>" not in last:
        question = last.removeprefix("<|im_start|>user\n").removesuffix("<|im_end|>")
        call = json.dumps({"name": "search", "arguments": {"query": question}})
        return f"Let me look that up.\n<tool_call>\n{call}\n</tool_call>"
    lines = last.split("<tool_response>\n", 1)[1].splitlines()
    if not lines[0].startswith("["):
        return "The search found nothing.\nAnswer: unknown"
    return f"{lines[0]}\nAnswer: {lines[0][1 : lines[0].index(']')]}"


def test_a_hermes_checkpoint_is_served_and_evaluated_with_its_search_tool(tokenizers, small_run, tmp_path):
    """What was missing: a checkpoint whose template writes Qwen/Hermes calls was run without its tool. It
    is loaded with search on, and it searches when served (plain, streamed, client-side tools) and when
    evaluated on a held-out world."""
    from conftest import make_cfg
    from fastapi.testclient import TestClient
    from rule_lm import RuleLM, library

    from cogcore.core.assistant import Assistant, load_assistant
    from cogcore.core.server import create_app
    from cogcore.evals.suites import run_suite
    from cogcore.evals.systems import ToolUser
    from cogcore.retrieval.retriever import Retriever

    tokenizer = tokenizers["hermes"]
    tiny_llama(tokenizer).save_pretrained(tmp_path / "qwenish")
    tokenizer.save_pretrained(tmp_path / "qwenish")
    loaded = load_assistant(make_cfg("serve", tmp_path, f"model={tmp_path / 'qwenish'}", "index=null"))
    assert loaded.engine.tools == [SEARCH_TOOL] and loaded.engine.format.name == "hermes"

    model = RuleLM(tokenizer, reply=hermes_librarian, header=FAMILIES["hermes"][4])
    engine = Engine(model, tokenizer)
    body = {"model": "qwenish", "messages": [{"role": "user", "content": "cats"}], "max_tokens": 200}
    with TestClient(create_app(Assistant(engine, library, "qwenish"), make_cfg("serve", tmp_path))) as http:
        plain = http.post("/v1/chat/completions", json=body).json()
        assert plain["choices"][0]["message"]["content"].endswith("Answer: notes/cats.md#0")
        assert "<tool_call>" not in plain["choices"][0]["message"]["content"]
        assert [s["query"] for s in plain["cogcore"]["searches"]] == ["cats"]
        streamed = http.post("/v1/chat/completions", json={**body, "stream": True}).text
        pieces = [json.loads(line[6:]) for line in streamed.splitlines() if line.startswith("data: {")]
        text = "".join(p["choices"][0]["delta"].get("content") or "" for p in pieces if p.get("choices"))
        assert text == plain["choices"][0]["message"]["content"]
        client = http.post("/v1/chat/completions", json={**body, "tools": [SEARCH_TOOL]}).json()
        (call,) = client["choices"][0]["message"]["tool_calls"]
        assert client["choices"][0]["finish_reason"] == "tool_calls"
        assert json.loads(call["function"]["arguments"])["query"] == "cats"

    cfg = make_cfg("eval", small_run)
    retriever = Retriever.load(small_run / "index", cfg.retriever)
    questions = read_jsonl(small_run / "world" / "questions" / "heldout.jsonl")[:6]
    system = ToolUser("qwenish", engine, GenerationConfig(max_new_tokens=1000), batch=6)
    records = run_suite(system, "T", questions, retriever, retriever.passages_by_id())["records"]
    for record, question in zip(records, questions, strict=True):
        (call,) = [c for m in record["messages"] for c in m.get("tool_calls") or []]
        assert json.loads(call["function"]["arguments"])["query"] == question["question"]
        results = [m["content"] for m in record["messages"] if m["role"] == "tool"]
        assert results[0].startswith(f"[{question['world']}-")  # a search of its own world ran
        assert record["prediction"] == results[0][1 : results[0].index("]")]


def test_cogcore_inspect_says_what_cogcore_makes_of_a_checkpoint(tokenizers, tmp_path, capsys):
    from conftest import make_cfg

    from cogcore.core.show import inspect

    for fmt, family in (("hermes", "chatml"), ("llama3_json", "llama3"), ("cogcore", "cogcore")):
        folder = tmp_path / fmt
        model = tiny_llama(tokenizers[fmt])
        model.save_pretrained(folder)
        tokenizers[fmt].save_pretrained(folder)
        info = inspect(make_cfg("inspect", tmp_path, f"model={folder}", "json=true"))
        assert json.loads(capsys.readouterr().out) == info
        assert info["params"] == sum(p.numel() for p in model.parameters())
        assert (info["architecture"], info["chat_family"]) == ("LlamaForCausalLM", family)
        assert info["tool_format"] == fmt and info["assistant_mask"] is True
    plain = tokenizers["hermes"]
    template, plain.chat_template = (
        plain.chat_template,
        "{% for m in messages %}{{ m['content'] }}{% endfor %}",
    )
    plain.save_pretrained(tmp_path / "hermes")
    plain.chat_template = template
    info = inspect(make_cfg("inspect", tmp_path, f"model={tmp_path / 'hermes'}"))
    assert info["tool_format"] is None and info["assistant_mask"] is False
    assert "tool_format     none" in capsys.readouterr().out


def test_verbatim_quotes_hold_in_a_hermes_model_too(tokenizers):
    """The quote constraint reads tool turns and written lines, not cogcore's tokens: a Hermes-format
    model that begins a line with a returned passage's [id] and slips is held to that passage's line."""
    from rule_lm import RuleLM

    from cogcore.core.generation import generate

    def slipper(context: str) -> str:
        if "<tool_response>" not in context[context.rfind("<|im_start|>") :]:
            return '<tool_call>\n{"name": "search", "arguments": {"query": "Bo", "k": 2}}\n</tool_call>'
        return "[p2] Bo: Bo is short.\nAnswer: short"

    tokenizer = tokenizers["hermes"]
    passages = [
        {"id": "p1", "title": "Ana", "text": "Ana is tall."},
        {"id": "p2", "title": "Bo", "text": "Bo is tall."},
    ]
    conversation = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "How tall is Bo?"},
    ]
    first = {}
    for quotes in (True, False):
        engine = Engine(RuleLM(tokenizer, reply=slipper, header=FAMILIES["hermes"][4]), tokenizer)
        cfg = GenerationConfig(max_new_tokens=400, quotes=quotes)
        (out,) = generate(engine, [conversation], lambda *a: passages, cfg)
        assert out["messages"][3]["role"] == "tool"
        first[quotes] = out["messages"][4]["content"].splitlines()[0]
    assert first[True].startswith("[p2] Bo: Bo is tall.") and first[False] == "[p2] Bo: Bo is short."
