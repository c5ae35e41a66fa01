"""T@1: the first try of a verified (retrying) answer is exactly the answer generated with no retries, so
an eval scores one try without generating twice (evals.suites.run_suite)."""

from __future__ import annotations

import pytest
from tiny_chat import BatchScriptedLM

from cogcore.core.chat import CALL, END_CALL
from cogcore.core.engine import Engine
from cogcore.core.generation import GenerationConfig, generate
from cogcore.core.tools import SYSTEM_PROMPT
from cogcore.distill.tokenizer import train_tokenizer

TEXTS = ['Bo is short. Bo is tall. Answer: short tall {"query": "Bo", "k": 2} How tall is Bo?'] * 40
CALL_BO = f'{CALL}{{"query": "Bo", "k": 2}}{END_CALL}'


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300)


def search(row, query, k):
    return [{"id": "p0", "title": "Bo", "text": "Bo is tall."}]


def run(tokenizer, script, retries: int) -> dict:
    engine = Engine(BatchScriptedLM(tokenizer, [[script]] * (retries + 1)), tokenizer)
    cfg = GenerationConfig(max_new_tokens=60, retries=retries, retry_temperature=0.0, steps=retries > 0)
    conversation = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "How tall is Bo?"},
    ]
    return generate(engine, [conversation], search, cfg)[0]


def test_a_kept_retry_carries_its_first_try_which_is_the_one_try_answer(tokenizer):
    # The model's first choice (`short`) is not what its search returned: the first try fails support.
    doubting = [CALL_BO, ["Bo is short.\nAnswer: short", "Bo is tall.\nAnswer: tall"]]
    one_try, verified = run(tokenizer, doubting, retries=0), run(tokenizer, doubting, retries=3)
    assert verified["tries"] == 2 and verified["messages"][-1]["content"].endswith("Answer: tall")
    assert verified["first"] == {"messages": one_try["messages"], "stop": one_try["stop"]}
    assert "first" not in one_try


def test_an_answer_kept_at_its_first_try_carries_no_first(tokenizer):
    sure = [CALL_BO, ["Bo is tall.\nAnswer: tall", "Bo is short.\nAnswer: short"]]
    verified = run(tokenizer, sure, retries=3)
    assert verified["tries"] == 1 and "first" not in verified
    assert verified["messages"] == run(tokenizer, sure, retries=0)["messages"]
