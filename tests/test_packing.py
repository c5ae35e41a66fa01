import logging

import pytest
import torch
from conftest import make_cfg
from tiny_chat import TRACES, tiny_llama, tiny_tokenizer
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from cogcore.core.chat import ASSISTANT, CHAT_TEMPLATE, END, SYSTEM, TOOL, USER
from cogcore.core.io import DataError
from cogcore.core.tools import SEARCH_TOOL
from cogcore.core.worlds.drills import step_drills
from cogcore.distill.attention import NAME as PACKED
from cogcore.distill.attention import trace_bounds
from cogcore.distill.drills import RECORD_MAX_LEN, copy_drills
from cogcore.distill.packing import IGNORE_INDEX, collate, encode_trace, pack, pack_drills, pack_traces

TOOLS = [SEARCH_TOOL]
# The distill config with no drills, for rows of 400 tokens; each test's overrides add the drills it packs.
NO_DRILLS = (
    "distill.seq_len=400",
    "distill.step_drills=0",
    "distill.copy_drills.warmup_steps=0",
    "distill.copy_drills.share=0",
    "distill.copy_drills.records=0",
)


def distill_node(*overrides: str):
    """The `distill` node of the config `cogcore distill` composes, without drills but for `overrides`."""
    return make_cfg("distill", "unused", *NO_DRILLS, *overrides).distill


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
    with pytest.raises(DataError, match="not prefix-stable"):
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


COPIES = ("distill.copy_drills.share=0.5", "distill.copy_drills.min_len=8", "distill.copy_drills.max_len=16")


def test_pack_traces_adds_drills_as_a_share_of_tokens(tokenizer):
    plain = pack_traces(tokenizer, TRACES, TOOLS, distill_node())
    mixed = pack_traces(tokenizer, TRACES, TOOLS, distill_node(*COPIES))
    assert mixed.n_tokens - plain.n_tokens == pytest.approx(plain.n_tokens, abs=40)
    vocab = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids]
    drills = copy_drills(plain.n_tokens, vocab, tokenizer.bos_token_id, 8, 16, seed=0)
    assert (mixed.n_traces, mixed.n_drills, plain.n_drills) == (plain.n_traces, len(drills), 0)
    heldout = pack_traces(tokenizer, TRACES, TOOLS, distill_node(*COPIES), drills=False)  # the traces alone
    assert torch.equal(heldout.input_ids, plain.input_ids) and heldout.n_drills == 0
    warmup_rows = [f"distill.copy_drills.{key}" for key in ("warmup_steps=5", "rows=2", "row_len=64")]
    warmup = pack_drills(tokenizer, distill_node(*warmup_rows, "distill.copy_drills.max_len=16"))
    assert len(warmup) >= 10 and warmup.n_traces == 0 and warmup.n_dropped == 0 and warmup.n_drills > 0
    with pytest.raises(DataError, match="row_len=64; lower distill.copy_drills.max_len to 31"):
        pack_drills(tokenizer, distill_node(*warmup_rows, "distill.copy_drills.max_len=40"))
    with pytest.raises(DataError, match="copy_drills.share=1"):
        pack_traces(tokenizer, TRACES, TOOLS, distill_node("distill.copy_drills.share=1"))
    with pytest.raises(DataError, match="min_alphabet=5000: the tokenizer has only"):
        pack_traces(tokenizer, TRACES, TOOLS, distill_node(*COPIES, "distill.copy_drills.min_alphabet=5000"))
    # record and match drills take their shares of the drill tokens, not more tokens
    shares = ("distill.copy_drills.records=0.25", "distill.copy_drills.matches=0.25")
    split = pack_traces(tokenizer, TRACES, TOOLS, distill_node(*COPIES, *shares))
    assert split.n_tokens - plain.n_tokens == pytest.approx(plain.n_tokens, abs=3 * RECORD_MAX_LEN)
    assert split.n_traces == plain.n_traces and split.n_drills != mixed.n_drills
    over = ("distill.copy_drills.records=0.6", "distill.copy_drills.matches=0.5")
    with pytest.raises(DataError, match="records=0.6, matches=0.5: use shares"):
        pack_traces(tokenizer, TRACES, TOOLS, distill_node(*COPIES, *over))


def test_pack_traces_adds_step_drills_as_a_share_of_tokens(tokenizer):
    plain = pack_traces(tokenizer, TRACES, TOOLS, distill_node())
    mixed = pack_traces(tokenizer, TRACES, TOOLS, distill_node("distill.step_drills=0.5"))
    assert mixed.n_tokens - plain.n_tokens == pytest.approx(plain.n_tokens, abs=150)
    assert (mixed.n_traces, mixed.n_drills) == (
        plain.n_traces,
        len(step_drills(tokenizer, plain.n_tokens, 0)),
    )
    with pytest.raises(DataError, match="step_drills=1"):
        pack_traces(tokenizer, TRACES, TOOLS, distill_node("distill.step_drills=1"))


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
    rows = pack_traces(tokenizer, TRACES, TOOLS, distill_node("distill.seq_len=512", "distill.seed=1"))
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
