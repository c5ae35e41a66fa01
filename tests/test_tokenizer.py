import pytest
from tiny_chat import TRACES, tiny_tokenizer
from transformers import AutoTokenizer

from cogcore.core.chat import CHAT_TEMPLATE, SPECIAL_TOKENS, chat_messages
from cogcore.core.toolformats import chat_template
from cogcore.core.tools import SEARCH_TOOL
from cogcore.distill.tokenizer import check_chat_template, train_tokenizer

# A template in another model's syntax (turns as `role: text`, calls as JSON after `CALL`).
FOREIGN = (
    "{% for m in messages %}{{ m.role }}: {{ m.content }}"
    "{% for c in m.tool_calls or [] %} CALL {{ c.function.arguments | tojson }}{% endfor %}\n{% endfor %}"
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "student"
    return tiny_tokenizer(out), out


def test_special_tokens_and_roles(saved):
    tokenizer, _ = saved
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<|bos|>",
        "<|end|>",
        "<|pad|>",
    )
    assert len(tokenizer) <= 512
    # special tokens are single ids wherever they appear, and BPE learned no fragments of them
    assert tokenizer("<|assistant|>x<|/call|>")["input_ids"][0] == SPECIAL_TOKENS.index("<|assistant|>")
    assert not [t for t in tokenizer.get_vocab() if "|>" in t and t not in SPECIAL_TOKENS]


def test_byte_level_round_trip_and_single_digits(saved):
    tokenizer, _ = saved
    odd = "naïve café 🤖\t\n  x\u202e 中文 \x00 ÿ 1234567890 3.14159 -7e10 <|notspecial|> &lt;"
    ids = tokenizer(odd, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == odd
    assert tokenizer.unk_token_id is None  # byte-level: nothing is unknown
    assert [t for t in tokenizer.tokenize("In 1950") if t.isdigit()] == ["1", "9", "5", "0"]


def test_saved_tokenizer_renders_the_same_ids(saved):
    tokenizer, out = saved
    loaded = AutoTokenizer.from_pretrained(out)
    assert loaded.chat_template == CHAT_TEMPLATE
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (1, 2, 0)
    for trace in TRACES:
        expected = tokenizer.apply_chat_template(trace["messages"], tools=[SEARCH_TOOL])["input_ids"]
        assert loaded.apply_chat_template(trace["messages"], tools=[SEARCH_TOOL])["input_ids"] == expected


def test_vocab_size_is_checked():
    with pytest.raises(ValueError, match="at least 265"):
        train_tokenizer(["abc"], 100)


def test_check_chat_template_accepts_templates_whose_calls_a_format_parses(saved, tmp_path):
    """cogcore's own template and a shipped ChatML+Hermes one pass, and say their format; a template in a
    syntax no format parses shows the call but is refused, since the engine could not read its calls."""
    _, out = saved
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert check_chat_template(tokenizer).name == "cogcore"
    tokenizer.chat_template = chat_template("chatml_hermes")
    assert check_chat_template(tokenizer).name == "hermes"
    assert check_chat_template(tokenizer, "hermes").name == "hermes"
    with pytest.raises(ValueError, match="tool_format=mistral, but its chat template writes hermes calls"):
        check_chat_template(tokenizer, "mistral")
    tokenizer.chat_template = FOREIGN
    text = tokenizer.apply_chat_template(
        chat_messages(tokenizer, TRACES[0]["messages"]), tools=[SEARCH_TOOL], tokenize=False
    )
    assert "Rouler Bristor employer" in text and TRACES[0]["messages"][3]["content"] in text
    assert not any(token in text for token in SPECIAL_TOKENS)  # its own syntax, none of cogcore's
    with pytest.raises(ValueError, match="in no format cogcore parses.*student.chat_template=chatml_hermes"):
        check_chat_template(tokenizer)
    tokenizer.chat_template = FOREIGN.replace("{{ c.function.arguments | tojson }}", "")
    with pytest.raises(ValueError, match="drops the tool call's arguments"):
        check_chat_template(tokenizer)


@pytest.mark.parametrize(
    "template, why",
    [
        # renders tool results but drops the tool call
        (
            "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}",
            "drops the tool call's arguments",
        ),
        # renders only user and assistant text
        (
            "{% for m in messages %}{% if m.role in ['user', 'assistant'] %}{{ m.content }}{% endif %}"
            "{% endfor %}",
            "arguments and the tool results",
        ),
        # refuses tool turns outright
        (
            "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools here') }}"
            "{% endif %}{{ m.content }}{% endfor %}",
            "no tools here",
        ),
        (None, "chat_template"),  # no template at all
    ],
)
def test_check_chat_template_rejects_templates_without_tool_calls(saved, tmp_path, template, why):
    _, out = saved
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(tmp_path / "acme-tiny-chat")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "acme-tiny-chat")
    with pytest.raises(ValueError, match="cannot render tool calls") as e:
        check_chat_template(tokenizer)
    assert "acme-tiny-chat" in str(e.value) and why in str(e.value)
