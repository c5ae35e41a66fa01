"""Loading a local Hugging Face chat checkpoint: the one loader the assistant, the `hf` teacher and the
evals share, so every stage refuses a folder for the same reasons and says which setting to fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cogcore.core.io import DataError


def load_model(
    path: str | Path,
    device: str = "auto",
    dtype: str = "auto",
    key: str = "model",
    check: Callable[[object], None] | None = None,
):
    """(model, tokenizer) of the checkpoint folder `path`, in eval mode on `device` (auto: a GPU if any);
    `key` is the setting that named the folder, for the error messages. `check(tokenizer)` may refuse the
    checkpoint (raising) before its weights are read."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").exists():
        raise DataError(
            f"{key}={path}: no Hugging Face checkpoint here (config.json missing); train a student with "
            f"`cogcore distill` or set {key}=<folder of a checkpoint>"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if check is not None:
        check(tokenizer)
    if tokenizer.chat_template is None:
        raise DataError(
            f"{key}={path}: its tokenizer has no chat template, so a conversation cannot be rendered; use "
            "a chat checkpoint or add a chat_template to its tokenizer_config.json"
        )
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    return model, tokenizer
