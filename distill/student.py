"""Students: Hugging Face causal LMs built from config.

`student=tiny` and `student=llama_1b` are Llama-architecture models trained from scratch with a BPE
tokenizer of cogcore's chat format (trained on the corpus and the traces); `student=hf path=...`
continues from any pretrained checkpoint with its own tokenizer and chat template, provided that
template renders tool calls.
"""

from __future__ import annotations

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


def load_tokenizer(scfg: DictConfig, corpus: Path, traces: Path, saved: Path) -> PreTrainedTokenizerBase:
    """The student's tokenizer: the one saved in `saved` (a resumed run), the pretrained model's own, or
    a new BPE tokenizer trained on the corpus and traces (then saved, so a resume reuses it)."""
    from cogcore.distill.tokenizer import check_chat_template, train_tokenizer

    if scfg.kind == "pretrained":
        tokenizer = AutoTokenizer.from_pretrained(scfg.path)
        check_chat_template(tokenizer)
        return tokenizer
    if (saved / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(saved)
    return train_tokenizer(tokenizer_texts(corpus, traces), scfg.vocab_size, saved)


def build_student(scfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> torch.nn.Module:
    if scfg.kind == "pretrained":
        if not Path(scfg.path).exists():
            raise DataError(
                f"student.path={scfg.path}: no such checkpoint; give the folder of a local HF model"
            )
        return AutoModelForCausalLM.from_pretrained(scfg.path, dtype=torch.float32)
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
