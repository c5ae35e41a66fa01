"""Decoding constraints: per-row objects the engine's tool loop asks at each token the model chooses.

Quotes are verbatim (`VerbatimQuote`, `GenerationConfig.quotes`): a line that begins with `[` cites a
passage a search returned to this row. Each next token is the model's likeliest one that keeps the line a
prefix of such a passage's rendered line, `[id]` included, until the line is whole. The model still
chooses which passage to quote and what to make of it; it cannot misquote one (a one-token slip inside a
quote used to send a small student on along another line's text: BENCHMARKS.md, "Verbatim quotes"). If the
model's own choice inside the `[id]` leaves every passage it may cite (a made-up id such as
`[w680-p2-spouse]` when no spouse line came back), the line is taken back: the engine masks its tokens out
of the cache, and the line starts again from the model's likeliest first token that begins no citation (a
streamed line, already shown, is held to a citable id instead).

Which passages a row may cite is a `Citable`: every one its searches returned, or a narrower choice the
caller makes (core.worlds.linked.LinkedCitable: only those linked to the question).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

from cogcore.core.sampling import Sampler

ALTERNATIVES = 3  # tokens a branching retry may take at a choice, besides the model's own
UNLIKELY = 1e-3  # a token the model gives less probability than this is no branch: a retry would waste a try


def _continues(piece: str, rest: str) -> bool:
    """Whether a token's text keeps a line on `rest`: it begins it, or ends it and goes on after."""
    return rest.startswith(piece) or piece.startswith(rest)


class Vocab:
    """Each token id's text as it reads after another token (decoding a SentencePiece token alone drops
    its leading space), and which ids begin with `[`; built when first asked, once per engine."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self._pieces: list[str] | None = None
        self._brackets: torch.Tensor | None = None

    def piece(self, token: int) -> str:
        if self._pieces is None:
            anchor = self.tokenizer("x", add_special_tokens=False)["input_ids"][-1:]
            skip = len(self.tokenizer.decode(anchor))
            self._pieces = [
                self.tokenizer.decode(anchor + [v], skip_special_tokens=False)[skip:]
                for v in range(len(self.tokenizer))
            ]
        return self._pieces[token] if 0 <= token < len(self._pieces) else ""

    def fits(self, token: int, rests: list[str]) -> bool:
        """Whether the token continues one of the `rests` (what is left of the lines being quoted)."""
        piece = self.piece(token)
        return bool(piece) and any(_continues(piece, rest) for rest in rests)

    def lines(self, token: int, rests: list[str]) -> set[int]:
        """Which of the `rests` the token continues."""
        piece = self.piece(token)
        return {n for n, rest in enumerate(rests) if piece and _continues(piece, rest)}

    def brackets(self, width: int) -> torch.Tensor:
        """A mask of the `width` logits: True where the token begins with `[` (a citation)."""
        if self._brackets is None:
            brackets = [self.piece(v).lstrip().startswith("[") for v in range(len(self.tokenizer))]
            self._brackets = torch.tensor(brackets + [False] * max(0, width - len(brackets)))
        return self._brackets[:width]


class Citable:
    """The passage lines a row may cite: every `[id] title: text` line its searches returned."""

    def __init__(self):
        self.returned: list[str] = []

    def add(self, lines: list[str]) -> None:
        self.returned.extend(lines)

    def lines(self) -> list[str]:
        return self.returned

    def cite(self, line: str) -> None:
        """The row has written the whole `[id]` of a citation of `line`."""


class Choice(NamedTuple):
    token: int  # the token the row takes
    taken_back: int  # how many of the row's last tokens to drop from it and mask out of the cache
    quoting: list[str] | None  # what is left of the lines the line may still become (None: not a quote)
    held: bool  # the token was chosen among those that keep the quote (not the model's free pick)


class VerbatimQuote:
    """One row's quote holding. `streaming`: the row's tokens are shown as they come, so a line is never
    taken back."""

    def __init__(self, vocab: Vocab, citable: Citable, streaming: bool):
        self.vocab, self.citable, self.streaming = vocab, citable, streaming
        self.line: list[int] = []  # the tokens the row chose since the last line break
        self.unheld = False  # the current line is no quote, or its quote is whole: nothing to hold it to
        self.start: torch.Tensor | None = None  # the logits the current line's first token was chosen from
        self.citing = False  # the line is still writing the `[id]` of a citation

    def add(self, lines: list[str]) -> None:
        self.citable.add(lines)

    def choose(self, token: int, logits: torch.Tensor, sample: Sampler, prescribed: int | None) -> Choice:
        """The row's next token, given the model's (or a branching retry's) `token` and the step's `logits`
        for the row; `prescribed`: a branching retry's token here, taken if it keeps the quote."""
        if not self.citable.returned:  # lines are followed only where there is one to quote
            return Choice(token, 0, None, False)
        start = self._at_line_start()
        rests = self._rests()
        taken, held = 0, False
        if rests is not None and self.citing and not self.vocab.fits(token, rests) and self.start is not None:
            # The line began citing a passage it may not: write it again without a citation.
            taken = self._take_back()
            token, self.start = self._uncited(self.start, sample), None
        elif rests:
            token, held = self._quote(rests, logits, sample, prescribed), True
        elif rests is not None:
            self.unheld = True  # nothing it may cite, and the line cannot be taken back
        if start:
            self.start = None if self.streaming else logits.clone()
        return Choice(token, taken, rests, held)

    def observe(self, token: int) -> None:
        """The row took `token`."""
        if self.citable.returned:
            self.line.append(token)
            if "\n" in self.vocab.piece(token):
                self.line, self.unheld, self.citing = [token], False, False

    def end_turn(self) -> None:
        self.line, self.unheld, self.citing = [], False, False

    def alternatives(self, token: int, rests: list[str], probs: torch.Tensor) -> tuple[int, ...]:
        """Inside a held citation's `[id]` the choice between passages is the model's own: its next
        likeliest tokens (up to ALTERNATIVES, each at least UNLIKELY) that still fit and lead to other
        passages' lines than `token` does (a branch to the same line would replay the same quote)."""
        mine = self.vocab.lines(token, rests)
        others = []
        for v in probs.topk(min(64, probs.shape[-1])).indices.tolist():
            if probs[v] < UNLIKELY:
                break
            if v != token and self.vocab.fits(v, rests) and not self.vocab.lines(v, rests) & mine:
                others.append(v)
                if len(others) == ALTERNATIVES:
                    break
        return tuple(others)

    def _at_line_start(self) -> bool:
        return not self.line or (len(self.line) == 1 and self.vocab.piece(self.line[0]).endswith("\n"))

    def _rests(self) -> list[str] | None:
        """What is left of the citable lines the current line is a prefix of, once it begins with `[` (an
        empty list: none); None when the line is held to nothing. Sets `citing` while the `[id]` is being
        written, and tells the citable once an id is whole."""
        if self.unheld or not self.line:
            return None
        text = self.vocab.tokenizer.decode(self.line, skip_special_tokens=False).rpartition("\n")[2]
        if not text:
            return None
        if not text.startswith("["):
            self.unheld = True
            return None
        self.citing = "]" not in text
        lines = [p for p in self.citable.lines() if len(p) > len(text) and p.startswith(text)]
        if not lines and not self.citing:
            self.unheld = True  # its line is whole
            return None
        if not self.citing:
            self.citable.cite(lines[0])
        return [p[len(text) :] for p in lines]

    def _take_back(self) -> int:
        """Drop the current line's tokens (not the line break before it); returns how many."""
        keep = 1 if self.line and "\n" in self.vocab.piece(self.line[0]) else 0
        taken = len(self.line) - keep
        self.line, self.unheld, self.citing = self.line[:keep], True, False
        return taken

    def _uncited(self, logits: torch.Tensor, sample: Sampler) -> int:
        """A line's first token, the model's choice among those that do not begin a citation."""
        masked = logits.masked_fill(self.vocab.brackets(logits.shape[-1]), float("-inf"))
        return int(sample(masked[None])[0])

    def _quote(self, rests: list[str], logits: torch.Tensor, sample: Sampler, prescribed: int | None) -> int:
        """The model's choice among the tokens that keep the line a prefix of a line it is quoting (or end
        that line), sampled as the generation config says; a branching retry's `prescribed` token if it
        keeps the line so."""

        def fits(v: int) -> bool:
            return self.vocab.fits(v, rests)

        if prescribed is not None and fits(prescribed):
            return prescribed
        order = logits.argsort(descending=True).tolist()
        if sample.greedy:
            return next((v for v in order if fits(v)), order[0])
        allowed = [v for v in order[:256] if fits(v)] or [v for v in order if fits(v)]
        if not allowed:
            return order[0]
        mask = torch.full_like(logits, float("-inf"))
        mask[allowed] = 0.0
        return int(sample((logits + mask)[None])[0])
