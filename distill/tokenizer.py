"""Tokenizers of students: a BPE tokenizer trained from scratch for small students, and the check that a
pretrained student's own chat template can render the tool calls it will be trained on.

The trained tokenizer is byte-level (any string round-trips, nothing is ever unknown), splits digits one
by one (numbers then read digit by digit, which helps arithmetic), and carries cogcore's special tokens and
chat template (`cogcore.core.chat`), so `AutoTokenizer.from_pretrained(dir).apply_chat_template(messages,
tools=[SEARCH_TOOL])` renders exactly the token ids the trainer saw.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from cogcore.core.chat import BOS, CHAT_TEMPLATE, END, PAD, SPECIAL_TOKENS, chat_messages
from cogcore.core.toolformats import FORMATS, TEMPLATES, ToolFormat, detect, tool_format
from cogcore.core.tools import SEARCH_TOOL, SYSTEM_PROMPT, render_results, search_call

_SPECIAL = re.compile("|".join(map(re.escape, SPECIAL_TOKENS)))


def _pieces(texts: Iterable[str]) -> Iterator[str]:
    # At encode time special tokens are split off before BPE sees the text, so train on the text between
    # them too; otherwise BPE spends merges on fragments like '<|us' that can never occur.
    for text in texts:
        yield from (piece for piece in _SPECIAL.split(text) if piece)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, out_dir: str | Path | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of at most `vocab_size` ids trained on `texts` (corpus passages and
    rendered traces), with cogcore's special tokens (ids 0..8) and chat template; saved to `out_dir` if given.

    A small corpus may run out of merges before `vocab_size`: `len(tokenizer)` is the real size."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level tokenizer needs the 256 bytes and "
            f"{len(SPECIAL_TOKENS)} special tokens; use at least {256 + len(SPECIAL_TOKENS)}"
        )
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte, seen in training or not
        show_progress=False,
    )
    backend.train_from_iterator(_pieces(texts), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=END,  # a turn ends the assistant's generation
        pad_token=PAD,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in (BOS, END, PAD)],
        chat_template=CHAT_TEMPLATE,
    )
    if out_dir is not None:
        tokenizer.save_pretrained(out_dir)
    return tokenizer


# A probe conversation whose query and result text appear nowhere else in it, nor in any template by chance.
_PROBE_QUERY = "Zembla capital city"
_PROBE_RESULT = "The capital of Zembla is Onhava."
_PROBE = [
    {"role": "system", "content": SYSTEM_PROMPT},
    {"role": "user", "content": "What is the capital of Zembla?"},
    {
        "role": "assistant",
        "content": "I will look it up.",
        "tool_calls": [search_call("call_0", _PROBE_QUERY, 3)],
    },
    {
        "role": "tool",
        "tool_call_id": "call_0",
        "name": "search",
        "content": render_results([{"id": "p1", "title": "Zembla", "text": _PROBE_RESULT}]),
    },
    {"role": "assistant", "content": "Answer: Onhava"},
]


def check_chat_template(tokenizer: PreTrainedTokenizerBase, fmt: str | None = None) -> ToolFormat:
    """The tool-call format of `tokenizer`'s chat template (`fmt` when a config names it); ValueError unless
    the template renders a tool call that format parses back, and the tool's results: a pretrained student
    is trained on its own template, which must show it both."""
    name = tokenizer.name_or_path or "the student tokenizer"
    fix = (
        f"Give it one of cogcore's templates (student.chat_template={' or '.join(TEMPLATES)}, or a Jinja "
        "file), pick a checkpoint whose chat template renders `tool_calls` and `tool` turns, or train a "
        "student from scratch with the cogcore tokenizer."
    )
    try:
        text = tokenizer.apply_chat_template(
            chat_messages(tokenizer, _PROBE), tools=[SEARCH_TOOL], tokenize=False
        )
    except Exception as e:  # a foreign Jinja template can fail in any way; all of them mean the same here
        raise ValueError(
            f"{name}: its chat template cannot render tool calls ({type(e).__name__}: {e}). {fix}"
        ) from e
    found, detected = tool_format(tokenizer, fmt), detect(tokenizer)
    if found and detected and found != detected:
        raise ValueError(
            f"{name}: tool_format={fmt}, but its chat template writes {detected.name} calls; set "
            f"tool_format={detected.name} or null"
        )
    probes = (("the tool call's arguments", _PROBE_QUERY), ("the tool results", _PROBE_RESULT))
    dropped = [what for what, s in probes if s not in text]
    if dropped:
        why = f"it drops {' and '.join(dropped)}"
    elif found is None:
        why = f"it writes them in no format cogcore parses ({', '.join(FORMATS)})"
    else:
        return found
    raise ValueError(f"{name}: its chat template cannot render tool calls: {why}. {fix}")
