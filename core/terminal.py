"""`cogcore chat`: talk to a checkpoint in the terminal. The answer streams as the model writes it, each
search shows its query and the passages it returned (id, title), and each answer ends with the ids of
the passages it cited. The conversation is kept within the model's window, oldest exchanges dropped first.

    /reset    forget the conversation        /sources   the passages of the last answer
    /quit     leave (or Ctrl-D)              Ctrl-C     stop the current answer, not the program

With stdin a pipe it reads one question per line and writes the transcript to stdout, so it can be
scripted: `cat questions.txt | cogcore chat run_dir=... > answers.txt`.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import TextIO

from omegaconf import DictConfig

from cogcore.core.assistant import Reply, Search, Session, assistant_generation, load_assistant
from cogcore.core.tools import escape

COMMANDS = "/reset /sources /quit"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # terminal escapes and the like; newline and tab stay


class Printer:
    """Writes streamed text and whole lines, starting each line on a fresh one."""

    def __init__(self, out: TextIO):
        self.out, self.fresh, self.after_line = out, True, False

    def text(self, piece: str) -> None:
        if self.after_line and piece.startswith("\n"):  # a turn's separator after a line already ended
            piece = piece[1:]
        self._write(piece)

    def line(self, line: str = "") -> None:
        self._write(("" if self.fresh else "\n") + line + "\n")
        self.after_line = True

    def _write(self, piece: str) -> None:
        piece = _CONTROL.sub("", piece)  # what a model or a document writes never drives the terminal
        if piece:
            self.out.write(piece)
            self.out.flush()
            self.fresh, self.after_line = piece.endswith("\n"), False


def _passage(p: dict) -> str:
    return f"[{escape(p['id'])}] {escape(p['title'])}"


def show_search(printer: Printer, search: Search) -> None:
    printer.line(f"  search {escape(search.query)!r}: {len(search.passages)} passages")
    for p in search.passages:
        printer.line(f"    {_passage(p)}")


def show_end(printer: Printer, reply: Reply, tools: bool, cancelled: bool) -> None:
    if cancelled:
        printer.line("  [stopped]")
    elif reply.stop == "loop":
        printer.line("  [stopped: the answer kept repeating itself]")
    elif reply.stop == "context":
        printer.line("  [stopped: the model's window is full]")
    elif reply.finish == "length":
        printer.line("  [stopped: max_tokens reached]")
    if tools:
        printer.line(f"  sources: {', '.join(reply.citations) or 'none cited'}")
    elif not printer.fresh:
        printer.text("\n")


def show_sources(printer: Printer, reply: Reply | None) -> None:
    passages = {p["id"]: p for s in (reply.searches if reply else []) for p in s.passages}
    if not passages:
        printer.line("  (the last answer retrieved nothing)")
    for pid, p in passages.items():
        mark = "*" if pid in reply.citations else " "
        printer.line(f"  {mark} {_passage(p)}: {escape(p['text'])[:300]}")


@contextlib.contextmanager
def ctrl_c_stops(cancel: threading.Event) -> Iterator[None]:
    """While an answer runs, Ctrl-C sets `cancel` (the answer stops at its next token) instead of
    raising KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def questions(interactive: bool, lines: Iterable[str]) -> Iterator[str]:
    """Lines typed at a `> ` prompt (Ctrl-C there clears the line, Ctrl-D ends), or read from a pipe."""
    if not interactive:
        yield from (line.rstrip("\n") for line in lines)
        return
    while True:
        try:
            yield input("> ")
        except KeyboardInterrupt:
            print()
        except EOFError:
            print()
            return


def run(session: Session, lines: Iterable[str], out: TextIO, interactive: bool) -> None:
    """The chat loop over `lines` (questions and commands), writing to `out`."""
    printer = Printer(out)
    tools = bool(session.assistant.engine.tools)
    for line in questions(interactive, lines):
        question = line.strip()
        if not question:
            continue
        if not interactive:
            printer.line(f"> {question}")
        if question == "/quit":
            return
        if question == "/reset":
            session.reset()
            printer.line("  (conversation cleared)")
        elif question == "/sources":
            show_sources(printer, session.last)
        elif question.startswith("/"):
            printer.line(f"  unknown command {question}; commands: {COMMANDS}")
        else:
            cancel = threading.Event()
            with ctrl_c_stops(cancel):
                reply = session.ask(question, printer.text, lambda s: show_search(printer, s), cancel)
            show_end(printer, reply, tools, cancel.is_set())


def chat(cfg: DictConfig) -> None:
    """`cogcore chat`: the checkpoint `model=` searching `index=`, in the terminal or through a pipe."""
    assistant = load_assistant(cfg)
    session = Session(assistant, assistant_generation(assistant, cfg), cfg.max_tokens)
    interactive = sys.stdin.isatty()
    # Startup lines go to stderr, so that a piped stdout holds the transcript alone.
    for note in assistant.notes:
        print(f"chat: {note}", file=sys.stderr)
    if interactive:
        print(f"chat: {assistant.name}. {COMMANDS}; Ctrl-C stops an answer, Ctrl-D quits.", file=sys.stderr)
    run(session, sys.stdin, sys.stdout, interactive)
