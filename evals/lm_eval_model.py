"""The student with its tool loop as an lm-eval model: `--model cogcore` (importing this module registers it).

`loglikelihood` and `loglikelihood_rolling` are lm-eval's own Hugging Face implementation (`HFLM`): plain
batched forward passes over the model's tokenizer, no chat template, for multiple-choice and perplexity
tasks. `generate_until` is cogcore's: each request becomes [system prompt, user turn = the task's prompt],
answered by `core.engine.Engine` with the `search` tool, and the reply is the whole final assistant turn
(a task's filter extracts the answer from it).

What `search` returns is the request's `doc["search"]` if the doc has one (the exported cogcore tasks set
it per suite, so one model instance serves K, R and T), else the model arg `search`; each runs the search
function of its suite from `evals/suites.py` (unavailable: K, oracle: R, live: T). model_args:
    pretrained      HF checkpoint folder (the student)
    index           index folder, for live search (optional)
    corpus          corpus.jsonl, for the oracle's gold passages (optional; default: the index's passages)
    search          live | oracle | unavailable, for docs that name none (default live)
    tool_format     how the model writes a call: cogcore | hermes | llama3_json | mistral (default: detected
                    from its chat template, core/toolformats.py)
    retriever       a conf/retriever preset name (hybrid, bm25, dense) or its config as a mapping
    k, max_new_tokens, quotes, retries, steps, ...
                    any key of conf/generation/ (core.generation.GenerationConfig), with its default
                    there: greedy, one try; `cogcore eval eval.backend=lm_eval` passes eval.generation
    batch_size, device, dtype, ...  as lm-eval's `hf` model
Of a task's gen_kwargs only `until` applies, by truncating the final turn.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cogcore.core.engine import Engine
from cogcore.core.generation import FIELDS, GenerationConfig, generate, generation_config
from cogcore.core.io import DataError, read_jsonl
from cogcore.core.toolformats import FORMATS
from cogcore.core.toolformats import tool_format as detect_format
from cogcore.core.tools import SYSTEM_PROMPT
from cogcore.evals.lm_eval_tasks import SEARCH
from cogcore.evals.suites import SUITES, search_for
from cogcore.retrieval.retriever import Retriever

SUITE_OF = {mode: suite for suite, mode in SEARCH.items()}


def retriever_config(retriever: str | Mapping) -> DictConfig:
    """A retriever config from its conf/retriever preset name, or from the mapping itself."""
    if isinstance(retriever, Mapping):
        return OmegaConf.create(dict(retriever))
    from hydra import compose, initialize_config_module

    with initialize_config_module("cogcore.conf", version_base=None):
        return compose("index", overrides=[f"retriever={retriever}"]).retriever


def final_turn(messages: list[dict]) -> str:
    """The content of the last message if the model wrote it, else '' (stopped inside the tool loop)."""
    last = messages[-1]
    return last["content"] if last["role"] == "assistant" and not last.get("tool_calls") else ""


def truncate(text: str, until: list[str] | str | None) -> str:
    """`text` up to the first of the stop strings."""
    stops = [until] if isinstance(until, str) else until or []
    for stop in stops:
        if stop:
            text = text.split(stop, 1)[0]
    return text


def _flag(name: str, value: bool | int | str) -> bool:
    """A boolean model arg: lm-eval casts `linked=true` on its command line to True, `linked=1` to 1."""
    flags = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if str(value).lower() not in flags:
        raise DataError(f"model_args {name}={value!r}: choose true or false")
    return flags[str(value).lower()]


def model_generation(args: dict) -> GenerationConfig:
    """The GenerationConfig of the generation settings among the model args (the rest are left in
    `args`); a boolean may come as true/false or 1/0."""
    given = {name: args.pop(name) for name in FIELDS if name in args}
    for name, value in given.items():
        if isinstance(getattr(GenerationConfig, name), bool):
            given[name] = _flag(name, value)
    return generation_config(given, key="model_args")


@register_model("cogcore")
class CogcoreLM(HFLM):
    def __init__(
        self,
        pretrained: str,
        index: str | None = None,
        corpus: str | None = None,
        search: str = "live",
        retriever: str | Mapping = "hybrid",
        batch_size: int | str = 1,
        device: str | None = None,
        tool_format: str | None = None,
        **kwargs,
    ):
        if search not in SUITE_OF:
            raise ValueError(f"model_args search={search!r}: choose one of {', '.join(SUITE_OF)}")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        generation = model_generation(kwargs)
        super().__init__(pretrained=pretrained, batch_size=batch_size, device=device, **kwargs)
        self.generation = generation
        self.search = search
        self.tool_format = detect_format(self.tokenizer, tool_format)
        if self.tool_format is None:
            raise DataError(
                f"pretrained={pretrained}: its chat template writes no tool calls in a format cogcore parses "
                f"({', '.join(FORMATS)}); set model_args tool_format=<format> if it has one"
            )
        self.retriever = Retriever.load(index, retriever_config(retriever)) if index else None
        # The oracle's gold passages: from the corpus if given, else from the index's collections.
        if corpus:
            self.passages = {p["id"]: p for p in read_jsonl(corpus)}
        elif self.retriever is not None:
            self.passages = self.retriever.passages_by_id()
        else:
            self.passages = None

    def _suite(self, doc: dict) -> str:
        """The suite a request runs in: its doc's `search`, else the model's; checked before generating."""
        mode = doc.get("search") or self.search
        if mode not in SUITE_OF:
            raise DataError(f"doc {doc.get('id', '')}: search={mode!r} is not one of {', '.join(SUITE_OF)}")
        if mode == "oracle":
            if self.passages is None:
                raise ValueError(
                    "oracle search needs the gold passages: model_args corpus=<corpus.jsonl> or index=<index>"
                )
            missing = [pid for pid in doc.get("gold_passages") or [] if pid not in self.passages]
            if missing:
                raise DataError(
                    f"doc {doc.get('id', '')}: gold passages {missing} are not in the corpus/index"
                )
        return SUITE_OF[mode]

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """The final assistant turn for each request, one suite at a time (a batch shares its search)."""
        engine = Engine(self.model, self.tokenizer, tool_format=self.tool_format)
        # batch_size=auto sizes loglikelihood batches; generation then takes max_batch_size rows at once.
        size = self.batch_size if isinstance(self.batch_size, int) else self.max_batch_size
        suites = [self._suite(r.doc or {}) for r in requests]
        replies: list[str] = [""] * len(requests)
        progress = tqdm(total=len(requests), desc="cogcore generate", disable=disable_tqdm)
        for suite in SUITES:
            rows = [i for i, s in enumerate(suites) if s == suite]
            for start in range(0, len(rows), size):
                chunk = rows[start : start + size]
                search = search_for(
                    suite, [requests[i].doc or {} for i in chunk], self.retriever, self.passages
                )
                conversations = [
                    [
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": requests[i].args[0]},
                    ]
                    for i in chunk
                ]
                for i, out in zip(
                    chunk, generate(engine, conversations, search, self.generation), strict=True
                ):
                    replies[i] = truncate(final_turn(out["messages"]), requests[i].args[1].get("until"))
                    self.cache_hook.add_partial("generate_until", requests[i].args, replies[i])
                progress.update(len(chunk))
        progress.close()
        return replies
