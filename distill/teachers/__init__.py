"""Teachers write traces: the oracle for synthetic worlds (`oracle`), any OpenAI-compatible endpoint
(`openai`) and a local transformers model through the tool-loop engine (`hf`). What they share is here."""

from __future__ import annotations

import hashlib

from cogcore.core.tools import SYSTEM_PROMPT


def drawn(key: str, share: float) -> bool:
    """A stable draw of `share` of the keys: the same questions whatever the batch size or resume point.
    Teachers trace the drawn questions with the search tool down, so that the trace abstains."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) < share * 0x100000000


def conversation(question: dict, system_prompt: str | None = None) -> list[dict]:
    """The opening turns: the system prompt (the config's, or the answer protocol of core/tools.py)."""
    return [
        {"role": "system", "content": system_prompt or SYSTEM_PROMPT},
        {"role": "user", "content": question["question"]},
    ]


def make_trace(question: dict, messages: list[dict], teacher: str, offline: bool, gold: bool = False) -> dict:
    """A trace record: the messages plus the question's metadata (world fields only where it has them).
    Its `search` (core/trace.py) is unavailable when the tool was down (`offline`), gold when every search
    returned exactly the question's gold passages, live otherwise."""
    metadata = {
        "question": question["question"],
        "type": question["type"],
        "answers": question["answers"],
        "teacher": teacher,
        "search": "unavailable" if offline else "gold" if gold else "live",
    }
    metadata.update({key: question[key] for key in ("world", "split", "gold_passages") if key in question})
    return {"id": question["id"], "messages": messages, "metadata": metadata}
