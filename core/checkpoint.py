"""Loading a local Hugging Face chat checkpoint: the one loader the assistant, the `hf` teacher and the
evals share, so every stage refuses a folder for the same reasons and says which setting to fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils.quantization_config import GgufConfig

from cogcore.core.io import DataError


def from_gguf(gguf_file: str | None) -> dict:
    """The `from_pretrained` arguments that read a GGUF file in a checkpoint folder into plain dense weights.
    transformers otherwise keeps GGUF weights in their quantised blocks: modules that cannot be trained and
    a model whose save_pretrained refuses ("quantized with gguf and is not serializable")."""
    if gguf_file is None:
        return {}
    return {"gguf_file": gguf_file, "quantization_config": GgufConfig(gguf_file=gguf_file, dequantize=True)}


def load_model(
    path: str | Path,
    device: str = "auto",
    dtype: str = "auto",
    key: str = "model",
    check: Callable[[object], None] | None = None,
    gguf_file: str | None = None,
):
    """(model, tokenizer) of the checkpoint folder `path`, in eval mode on `device` (auto: a GPU if any);
    `key` is the setting that named the folder, for the error messages. `check(tokenizer)` may refuse the
    checkpoint (raising) before its weights are read. `gguf_file`: a GGUF file in that folder (as Ollama and
    llama.cpp keep models), read into dense weights."""
    folder = Path(path).expanduser()
    if gguf_file is not None:
        if not (folder / gguf_file).is_file():
            raise DataError(f"gguf_file={gguf_file}: no such file in {key}={path}; name a .gguf file there")
    elif not (folder / "config.json").exists():
        raise DataError(
            f"{key}={path}: no Hugging Face checkpoint here (config.json missing); train a student with "
            f"`cogcore distill` or set {key}=<folder of a checkpoint> (gguf_file=<name> for a GGUF file)"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, **({"gguf_file": gguf_file} if gguf_file else {}))
    if check is not None:
        check(tokenizer)
    if tokenizer.chat_template is None:
        raise DataError(
            f"{key}={path}: its tokenizer has no chat template, so a conversation cannot be rendered; use "
            "a chat checkpoint or add a chat_template to its tokenizer_config.json"
        )
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **from_gguf(gguf_file))
    return model.to(device).eval(), tokenizer
