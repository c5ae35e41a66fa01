import logging
import re

import pytest
import torch
from tiny_chat import TRACES, tiny_llama, tiny_tokenizer
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from cogcore.core.chat import ASSISTANT, CHAT_TEMPLATE, END, SYSTEM, TOOL, USER
from cogcore.core.tools import SEARCH_TOOL
from cogcore.core.worlds.drills import step_drills
from cogcore.core.worlds.steps import decision, subtraction
from cogcore.core.worlds.templates import FACT
from cogcore.core.worlds.world import ARITHMETIC_QUESTIONS, COMPARE_QUESTIONS
from cogcore.distill.attention import NAME as PACKED
from cogcore.distill.attention import trace_bounds
from cogcore.distill.data import (
    IGNORE_INDEX,
    RECORD_MAX_LEN,
    collate,
    copy_drills,
    encode_trace,
    match_drills,
    pack,
    pack_drills,
    pack_traces,
    record_drills,
)

TOOLS = [SEARCH_TOOL]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "student"
    return tiny_tokenizer(out), out


@pytest.fixture(scope="module")
def tokenizer(saved):
    return saved[0]


def test_loss_mask_token_by_token(tokenizer):
    trace = TRACES[1]  # two searches, then the answer
    ids, mask = encode_trace(tokenizer, trace, TOOLS)
    assert len(ids) == len(mask) and set(mask) == {0, 1}
    role, trained = None, []
    for t, m in zip(ids, mask, strict=True):
        piece = tokenizer.decode([t])
        if piece in (SYSTEM, USER, ASSISTANT, TOOL):
            role = piece
            assert m == 0, "role headers are never trained"
        elif piece == END:
            assert m == (role == ASSISTANT), f"{role} turn's closing <|end|>"
            role = None
        else:
            assert m == (role == ASSISTANT), f"{piece!r} in a {role} turn"
        if m:
            trained.append(t)
    calls = [m["tool_calls"][0]["function"]["arguments"] for m in trace["messages"] if m.get("tool_calls")]
    assert tokenizer.decode(trained) == (
        f"First the birthplace of Rouler Bristor.<|call|>{calls[0]}<|/call|><|end|>"
        f"He was born in Verum. Now its population.<|call|>{calls[1]}<|/call|><|end|>"
        "Verum has 48213 people [w0-c2-population].\nAnswer: 48213<|end|>"
    )


def test_saved_tokenizer_renders_what_the_trainer_saw(saved):
    tokenizer, out = saved
    loaded = AutoTokenizer.from_pretrained(out)
    for trace in TRACES:
        ids, _ = encode_trace(tokenizer, trace, TOOLS)
        assert loaded.apply_chat_template(trace["messages"], tools=TOOLS)["input_ids"] == ids


def test_prefix_path_matches_generation_blocks(saved):
    tokenizer, out = saved
    plain = AutoTokenizer.from_pretrained(
        out
    )  # a template without generation blocks, as most pretrained ones
    plain.chat_template = CHAT_TEMPLATE.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", "")
    assert "{%- generation" not in plain.chat_template
    for trace in TRACES:
        assert encode_trace(plain, trace, TOOLS) == encode_trace(tokenizer, trace, TOOLS)


def test_prefix_path_rejects_unstable_templates(saved):
    _, out = saved
    unstable = AutoTokenizer.from_pretrained(out)
    # Earlier turns render differently depending on what follows them (here: a turn count up front).
    unstable.chat_template = (
        "{{ messages | length }} turns{% for m in messages %}<|{{ m.role }}|>{{ m.content }}"
        "{% for c in m.tool_calls or [] %}{{ c.function.arguments | tojson }}{% endfor %}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    with pytest.raises(ValueError, match="not prefix-stable"):
        encode_trace(unstable, TRACES[0], TOOLS)


def _segments(row: dict) -> list[tuple[int, int]]:
    return trace_bounds(row["position_ids"][None])[0]


def test_pack_keeps_whole_traces_and_pads_only_the_tail(tokenizer):
    examples = [encode_trace(tokenizer, t, TOOLS) for t in TRACES]
    seq_len = 400  # the traces are 137 to 223 tokens long
    rows = pack(examples, seq_len, tokenizer.pad_token_id, seed=0)
    assert (
        rows.input_ids.shape == (len(rows), seq_len) and rows.n_traces == len(TRACES) and rows.n_dropped == 0
    )
    assert len(rows) < len(TRACES)  # some rows hold several traces
    found = []
    for r in range(len(rows)):
        row = rows[r]
        for start, end in _segments(row):
            ids = row["input_ids"][start:end].tolist()
            if ids[0] == tokenizer.pad_token_id:  # the pad tail: last, and never trained
                assert (
                    end == seq_len
                    and set(ids) == {tokenizer.pad_token_id}
                    and not row["loss_mask"][start:].any()
                )
                continue
            found.append(ids)
            assert row["position_ids"][start:end].tolist() == list(range(end - start))
            assert row["loss_mask"][start:end].long().tolist() == next(m for i, m in examples if i == ids)
    assert sorted(found) == sorted(ids for ids, _ in examples)  # every trace once, whole
    assert torch.equal(rows.labels, rows.input_ids.masked_fill(~rows.loss_mask, IGNORE_INDEX))
    assert rows.n_tokens == sum(len(ids) for ids, _ in examples)
    assert rows.efficiency == rows.n_tokens / (len(rows) * seq_len)


def test_copy_drills_train_only_the_repeat(tokenizer):
    vocab = list(range(20, 60))
    drills = copy_drills(2_000, vocab, tokenizer.bos_token_id, 8, 16, seed=3)
    assert 2_000 <= sum(len(ids) for ids, _ in drills) < 2_000 + 1 + 2 * 16
    assert drills == copy_drills(2_000, vocab, tokenizer.bos_token_id, 8, 16, seed=3)
    assert drills != copy_drills(2_000, vocab, tokenizer.bos_token_id, 8, 16, seed=4)
    for ids, mask in drills:
        n = (len(ids) - 1) // 2
        assert 8 <= n <= 16 and ids[0] == tokenizer.bos_token_id and set(ids[1:]) <= set(vocab)
        assert ids[1 : 1 + n] == ids[1 + n :]
        # trained: the repeat after its first token, each predictable from the first run
        assert mask == [0] * (n + 2) + [1] * (n - 1)


def test_copy_drills_from_small_alphabets_repeat_tokens(tokenizer):
    vocab = list(range(20, 1020))

    def distinct(drills):
        return [len(set(ids[1:])) / ((len(ids) - 1) // 2) for ids, _ in drills]

    wide = distinct(copy_drills(20_000, vocab, tokenizer.bos_token_id, 16, 32, seed=0))
    small = copy_drills(20_000, vocab, tokenizer.bos_token_id, 16, 32, seed=0, min_alphabet=4)
    # A run of 16+ tokens from all 1,000 rarely repeats one; from 4-token alphabets, every token repeats.
    assert sum(wide) / len(wide) > 0.95 and min(distinct(small)) < 0.3
    assert sum(distinct(small)) / len(small) < 0.9
    for ids, mask in small:
        n = (len(ids) - 1) // 2
        assert ids[1 : 1 + n] == ids[1 + n :] and mask == [0] * (n + 2) + [1] * (n - 1)
    for bad in (1, 1001):
        with pytest.raises(ValueError, match="use 2 to 1000"):
            copy_drills(100, vocab, tokenizer.bos_token_id, 8, 16, seed=0, min_alphabet=bad)


@pytest.mark.parametrize("marks", [((), ()), ((7, 8), (9,))])
def test_record_drills_repeat_one_line_whose_place_must_be_kept(tokenizer, marks):
    vocab = list(range(20, 1020))
    drills = record_drills(5_000, vocab, tokenizer.bos_token_id, 1, marks)
    assert drills == record_drills(5_000, vocab, tokenizer.bos_token_id, 1, marks)
    assert 5_000 <= sum(len(ids) for ids, _ in drills) < 5_000 + RECORD_MAX_LEN
    ambiguous = 0
    for ids, mask in drills:
        assert ids[0] == tokenizer.bos_token_id and len(ids) <= RECORD_MAX_LEN
        n = sum(mask) + len(marks[0]) + 1  # the repeated line: trained after its marks and first key token
        line, context = ids[-n:], ids[1:-n]
        assert mask == [0] * (len(ids) - n + len(marks[0]) + 1) + [1] * (n - len(marks[0]) - 1)
        assert line[: len(marks[0])] == list(marks[0]) and set(marks[1]) <= set(line)
        assert any(context[k : k + n] == line for k in range(len(context)))  # a line it was shown
        # somewhere in the line, the token before says nothing: the context follows it with several tokens
        ambiguous += any(
            len({context[i + 1] for i, t in enumerate(context[:-1]) if t == line[j]}) > 1
            for j in range(len(marks[0]) + 1, n - 1)
        )
    assert ambiguous == len(drills)


def test_match_drills_answer_the_line_with_the_name_or_none(tokenizer):
    vocab, marks, none = list(range(20, 1020)), ((7, 8), (9,)), [5, 6]
    drills = match_drills(20_000, vocab, tokenizer.bos_token_id, 1, marks, none)
    assert drills == match_drills(20_000, vocab, tokenizer.bos_token_id, 1, marks, none)
    assert drills != match_drills(20_000, vocab, tokenizer.bos_token_id, 2, marks, none)
    assert 20_000 <= sum(len(ids) for ids, _ in drills) < 20_000 + RECORD_MAX_LEN
    hits = near = 0
    for ids, mask in drills:
        assert ids[0] == tokenizer.bos_token_id and len(ids) <= RECORD_MAX_LEN
        # lines open with marks[0]: split the context into the name and the lines
        starts = [i for i in range(len(ids) - 1) if ids[i : i + 2] == [7, 8]]
        answer_at = starts[-1] if ids[-len(none) :] != none else len(ids) - len(none)
        name = ids[1 : starts[0]]
        lines = [ids[a:b] for a, b in zip(starts, [*starts[1:], len(ids)], strict=True) if a < answer_at]
        lines[-1] = ids[starts[len(lines) - 1] : answer_at]
        names = [line[line.index(9) + 1 : line.index(9) + 1 + len(name)] for line in lines]
        answer = ids[answer_at:]
        assert mask == [0] * answer_at + [1] * len(answer)  # trained whole: its start is the choice
        if answer == none:
            assert name not in names
        else:  # the line whose name it is
            hits += 1
            assert answer in lines and answer[answer.index(9) + 1 :][: len(name)] == name
        near += sum(sum(a != b for a, b in zip(n, name, strict=False)) == 1 for n in names)
    assert 0.4 < hits / len(drills) < 0.6 and near > len(drills)  # near misses, one token off, are common


def test_pack_traces_adds_drills_as_a_share_of_tokens(tokenizer):
    plain = pack_traces(tokenizer, TRACES, TOOLS, 400, seed=0)
    mixed = pack_traces(tokenizer, TRACES, TOOLS, 400, seed=0, drills=0.5, drill_len=(8, 16))
    assert mixed.n_tokens - plain.n_tokens == pytest.approx(plain.n_tokens, abs=40)
    vocab = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids]
    drills = copy_drills(plain.n_tokens, vocab, tokenizer.bos_token_id, 8, 16, seed=0)
    assert (mixed.n_traces, mixed.n_drills, plain.n_drills) == (plain.n_traces, len(drills), 0)
    warmup = pack_drills(tokenizer, 10, 64, (8, 16), seed=0)
    assert len(warmup) >= 10 and warmup.n_traces == 0 and warmup.n_dropped == 0 and warmup.n_drills > 0
    with pytest.raises(ValueError, match="lower distill.copy_drills.max_len to 31"):
        pack_drills(tokenizer, 10, 64, (8, 40), seed=0)
    with pytest.raises(ValueError, match="copy_drills.share=1"):
        pack_traces(tokenizer, TRACES, TOOLS, 400, seed=0, drills=1)
    # record and match drills take their shares of the drill tokens, not more tokens
    shares = {"drills": 0.5, "drill_len": (8, 16), "records": 0.25, "matches": 0.25}
    split = pack_traces(tokenizer, TRACES, TOOLS, 400, seed=0, **shares)
    assert split.n_tokens - plain.n_tokens == pytest.approx(plain.n_tokens, abs=3 * RECORD_MAX_LEN)
    assert split.n_traces == plain.n_traces and split.n_drills != mixed.n_drills
    with pytest.raises(ValueError, match="records=0.6, matches=0.5: use shares"):
        pack_traces(tokenizer, TRACES, TOOLS, 400, seed=0, drills=0.5, records=0.6, matches=0.5)


def test_step_drills_write_the_oracles_steps_on_random_numbers(tokenizer):
    drills = step_drills(tokenizer, 20_000, seed=0)
    assert drills == step_drills(tokenizer, 20_000, seed=0) != step_drills(tokenizer, 20_000, seed=1)
    assert 20_000 <= sum(len(ids) for ids, _ in drills) < 21_000
    subtractions = shared_start = 0
    for ids, mask in drills:
        assert ids[0] == tokenizer.bos_token_id
        cut = mask.index(1)
        assert mask == [0] * cut + [1] * (len(ids) - cut)  # the context given, every step trained
        given, steps = tokenizer.decode(ids[1:cut]).strip(), tokenizer.decode(ids[cut:]).strip()
        # the question on two made-up names and its two facts, then the steps
        question, fact_a, fact_b = re.fullmatch(r"(.*\?) So (.+)\. So (.+)\.", given).groups()
        x, y = int(fact_a.rsplit(" ", 1)[1]), int(fact_b.rsplit(" ", 1)[1])
        if "column by column" in steps:  # an arithmetic question's subtraction
            a, b = (fact.split(" was ")[0].split(" has ")[0] for fact in (fact_a, fact_b))
            attribute = next(
                attr for attr, asked in ARITHMETIC_QUESTIONS.items() if asked.format(a=a, b=b) == question
            )
            expected = subtraction(max(x, y), min(x, y))
            subtractions += 1
        else:  # a compare question's last step
            a, b = re.fullmatch(r".*, (.+) or (.+)\?", question).groups()
            attribute, pick = next(
                (attr, pick)
                for attr, asked in COMPARE_QUESTIONS.items()
                for t, pick in asked
                if t.format(a=a, b=b) == question
            )
            expected = decision(x, y, a, b, attribute, pick)
            winner = a if (x < y) == (pick == "min") else b  # the question's pick of the two, by number
            assert steps.endswith(f" {winner}.")
        assert a != b
        assert fact_a == FACT[attribute].format(s=a, o=x) and fact_b == FACT[attribute].format(s=b, o=y)
        assert steps == expected
        assert x != y and all(1_000 <= n < 100_000 for n in (x, y))
        shared_start += str(x)[0] == str(y)[0] and len(str(x)) == len(str(y))
    # both kinds, and many pairs that differ only after their first digit (as years do)
    assert 0.55 < subtractions / len(drills) < 0.8 and shared_start / len(drills) > 0.4
    plain = pack_traces(tokenizer, TRACES, TOOLS, 400, seed=0)
    mixed = pack_traces(tokenizer, TRACES, TOOLS, 400, seed=0, steps=0.5)
    assert mixed.n_tokens - plain.n_tokens == pytest.approx(plain.n_tokens, abs=150)
    assert (mixed.n_traces, mixed.n_drills) == (
        plain.n_traces,
        len(step_drills(tokenizer, plain.n_tokens, 0)),
    )
    with pytest.raises(ValueError, match="step_drills=1"):
        pack_traces(tokenizer, TRACES, TOOLS, 400, seed=0, steps=1)


def test_best_fit_decreasing_fills_rows():
    examples = [([1] * n, [1] * n) for n in (6, 5, 4, 3, 2)]  # fits exactly into {6, 4} and {5, 3, 2}
    rows = pack(examples, 10, pad_id=0, seed=0)
    assert len(rows) == 2 and rows.efficiency == 1.0


def test_long_traces_are_dropped_and_counted(caplog):
    examples = [([1] * n, [1] * n) for n in (3, 12, 4, 11)]
    with caplog.at_level(logging.WARNING):
        rows = pack(examples, 10, pad_id=0, seed=0)
    assert (rows.n_traces, rows.n_dropped, rows.n_tokens) == (2, 2, 7)
    assert "2 of 4 traces are longer than seq_len=10" in caplog.text


def test_order_is_deterministic_from_the_seed():
    examples = [([n] * (n % 7 + 1), [1] * (n % 7 + 1)) for n in range(1, 60)]
    a, b, c = (pack(examples, 16, pad_id=0, seed=s) for s in (3, 3, 4))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.position_ids, b.position_ids)
    assert not torch.equal(a.input_ids, c.input_ids)
    assert a.efficiency == c.efficiency  # the seed changes the order, not how well rows are filled


@pytest.mark.parametrize("attn", ["sdpa", "eager", PACKED])
def test_packed_traces_do_not_see_each_other(tokenizer, attn):
    """The logits of every trace inside a packed row equal the logits of that trace run alone."""
    model = tiny_llama(tokenizer, hidden_size=64, intermediate_size=128, attn_implementation=attn)
    assert model.config._attn_implementation == attn
    rows = pack_traces(tokenizer, TRACES, TOOLS, seq_len=512, seed=1)
    assert len(rows) < len(TRACES)
    batch = next(iter(DataLoader(rows, batch_size=len(rows), collate_fn=collate)))
    assert batch["input_ids"].shape == (len(rows), 512)
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
        checked = 0
        for r in range(len(rows)):
            for start, end in _segments(rows[r]):
                ids = batch["input_ids"][r, start:end]
                if ids[0] == tokenizer.pad_token_id:
                    continue
                alone = model(input_ids=ids[None], use_cache=False).logits[0]
                torch.testing.assert_close(packed[r, start:end], alone, atol=1e-5, rtol=0)
                checked += 1
    assert checked == len(TRACES)
