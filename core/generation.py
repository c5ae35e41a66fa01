"""How an answer is generated: `GenerationConfig` (the `generation` config group, conf/generation/, holds
exactly its fields), and `generate`, the one call every caller makes: the engine's tool loop, and around
it the retries, given the verifiers the config asks for.

Which verifiers an answer must pass is chosen here, from the config, and handed to core.retries; the
engine itself knows nothing of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from cogcore.core.answers import grounded
from cogcore.core.constraints import Citable
from cogcore.core.io import DataError
from cogcore.core.retries import answer
from cogcore.core.worlds.linked import LinkedCitable, linked_grounded
from cogcore.core.worlds.steps import steps_verdict

if TYPE_CHECKING:
    from cogcore.core.engine import CitableFn, Engine, SearchFn, TokenFn
    from cogcore.core.retries import Verifier


@dataclass
class GenerationConfig:
    max_new_tokens: int = 1024  # per row, sampled and forced (tool results) tokens together
    max_tool_calls: int = 6  # per answer
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0
    seed: int = 0
    k: int = 3  # passages per search when the model's call names no k
    # False: a turn with calls ends the row (stop="tool_calls"), for a caller that runs the calls itself
    run_tools: bool = True
    # a line begun with `[` cites a returned passage: its id is held to the ids searches returned and its
    # text to that passage's line; one that began an id no search returned is taken back (core.constraints)
    quotes: bool = True
    # support counts only cited passages linked to the question (core.worlds.linked), and retries may cite
    # only such passages
    linked: bool = False
    # an answer that fails a verifier is drawn again, up to this many times (streamed rows never are)
    retries: int = 0
    # > 0: each retry is drawn from the start at this temperature. 0: each is greedy but takes another
    # token at one of the first answer's least sure choices (core.retries)
    retry_temperature: float = 0.0
    linked_quotes: bool = False  # only passages linked to the question may be cited (set on `linked` retries)
    # an answer whose written steps its own quotes contradict (core.worlds.steps.fault) fails too, and
    # with retry_temperature 0 its retries branch where it went wrong
    steps: bool = False


FIELDS = tuple(f.name for f in fields(GenerationConfig))


def generation_config(node: Mapping | None, key: str = "generation", auto_linked: bool = False, **overrides):
    """The GenerationConfig of a config node whose keys are its fields (the `generation` group); keyword
    `overrides` win over the node. `linked: auto` is `auto_linked` (on for world questions, whose passages
    are titled by their entity). A key that is no field is an error naming `<key>.<name>`."""
    values = {**dict(node or {}), **overrides}
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise DataError(
            f"{key}.{unknown[0]}: no such generation setting; the settings are: {', '.join(FIELDS)}"
        )
    if str(values.get("linked", "")).lower() == "auto":
        values["linked"] = auto_linked
    for name, value in values.items():
        kind = type(getattr(GenerationConfig, name))
        if kind is bool and not isinstance(value, bool):
            choices = "true, false or auto" if name == "linked" else "true or false"
            raise DataError(f"{key}.{name}={value!r}: choose {choices}")
        if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise DataError(f"{key}.{name}={value!r}: must be a number")
        values[name] = kind(value)
    return GenerationConfig(**values)


def verifiers(cfg: GenerationConfig) -> list[Verifier]:
    """What an answer must pass not to be retried: support by its own search results (only by the cited
    passages linked to the question, with `linked`), and with `steps` written steps its quotes do not
    contradict. Support comes first: of two failed answers, a supported one is kept."""
    return [linked_grounded if cfg.linked else grounded] + ([steps_verdict] if cfg.steps else [])


def citable(cfg: GenerationConfig) -> CitableFn | None:
    """What a row may quote when generated with `cfg`: nothing held without `quotes`; with
    `linked_quotes` only the passages linked to the question; else every passage its searches returned."""
    if not cfg.quotes:
        return None
    return LinkedCitable if cfg.linked_quotes else (lambda messages: Citable())


def generate(
    engine: Engine,
    conversations: list[list[dict]],
    search: SearchFn,
    cfg: GenerationConfig,
    on_token: TokenFn | None = None,
) -> list[dict]:
    """Answer each conversation with the engine's tool loop and, with `cfg.retries`, retry the answers
    that fail the verifiers `cfg` asks for (core.retries; with `steps`, a retry branches where the answer
    went wrong). Per row: the engine's output plus "tries"."""
    checks = verifiers(cfg)
    return answer(engine, conversations, search, cfg, checks, citable, locate=cfg.steps, on_token=on_token)
