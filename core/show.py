"""`cogcore inspect model=<dir> [gguf_file=<file>] [json=true]`: what cogcore makes of a checkpoint, as
`ollama show` does: its parameters and architecture (counted on the meta device, no weights read), its chat
family, the format its template writes tool calls in (core/toolformats.py; null when it writes none
cogcore parses, so it would run without its search tool), and whether the template marks the assistant's
tokens for the loss mask (`{% generation %}`; without it the trainer finds them by rendering prefixes)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from cogcore.core.io import DataError
from cogcore.core.toolformats import tool_format
from cogcore.core.tools import search_call

# chat family -> a string only its template writes
FAMILIES = {
    "cogcore": "<|assistant|>",
    "chatml": "<|im_start|>",
    "llama3": "<|start_header_id|>",
    "mistral": "[INST]",
    "gemma": "<start_of_turn>",
}
_PROBE = [
    {"role": "user", "content": "q"},
    {"role": "assistant", "content": "a", "tool_calls": [search_call("call_0", "q", 1)]},
]


def assistant_mask(tokenizer) -> bool:
    """Whether the chat template marks some of the assistant's tokens for the loss mask."""
    if not re.search(r"\{%-?\s*generation\s*-?%\}", tokenizer.chat_template or ""):
        return False
    try:
        enc = tokenizer.apply_chat_template(
            [_PROBE[0], {"role": "assistant", "content": "a"}],
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
    except Exception:  # a template without generation blocks, or one that fails here: no mask
        return False
    return any(enc["assistant_masks"])


def describe(path: str, gguf_file: str | None = None, fmt: str | None = None) -> dict:
    folder = Path(path).expanduser()
    if not (folder / (gguf_file or "config.json")).exists():
        raise DataError(f"model={path}: no {gguf_file or 'config.json'} there; give a checkpoint folder")
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    config = AutoConfig.from_pretrained(folder, **extra)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    template = tokenizer.chat_template or ""
    found = tool_format(tokenizer, fmt) if template else None
    return {
        "model": str(folder / gguf_file) if gguf_file else str(folder),
        "params": params,
        "architecture": (config.architectures or [type(model).__name__])[0],
        "context": getattr(config, "max_position_embeddings", None),
        "vocab": len(tokenizer),
        "chat_family": next((name for name, mark in FAMILIES.items() if mark in template), None)
        if template
        else None,
        "tool_format": found.name if found else None,
        "assistant_mask": bool(template) and assistant_mask(tokenizer),
    }


def inspect(cfg: DictConfig) -> dict:
    info = describe(cfg.model, cfg.gguf_file, cfg.tool_format)
    if cfg.json:
        print(json.dumps(info))
        return info
    width = max(map(len, info))
    for key, value in info.items():
        shown = f"{value / 1e6:.1f}M ({value:,})" if key == "params" else value
        print(f"  {key:<{width}}  {'none' if value is None else shown}")
    if info["tool_format"] is None:
        print(
            "  its template writes no tool calls cogcore parses: it would run without search; give it one "
            "with student.chat_template=chatml_hermes (or llama3) when distilling"
        )
    return info
