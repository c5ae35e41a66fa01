"""Each job's generation settings (conf/generation/), composed as the CLI composes its config, and the
GenerationConfig every caller builds from them."""

from dataclasses import replace
from types import SimpleNamespace

import pytest
from conftest import make_cfg

from cogcore.core.assistant import assistant_generation
from cogcore.core.generation import GenerationConfig, generation_config
from cogcore.core.io import DataError
from cogcore.evals.lm_eval_model import model_generation
from cogcore.evals.lm_eval_tasks import model_args
from cogcore.evals.run import eval_generation

# The eval retries an answer that fails a check (support, linked support, steps); the others answer once.
EVAL = GenerationConfig(retries=8, linked=True, steps=True)
WINDOW = SimpleNamespace(engine=SimpleNamespace(context=2048))  # what assistant_generation reads of one


@pytest.mark.parametrize("job", ["eval", "pipeline"])
def test_the_eval_retries_and_checks_linked_support_on_world_questions(job, tmp_path):
    cfg = make_cfg(job, tmp_path)
    assert eval_generation(cfg.eval) == EVAL
    user_questions = make_cfg(job, tmp_path, "eval.questions=my_qa.jsonl").eval
    assert eval_generation(user_questions) == replace(EVAL, linked=False)
    # The lm-eval backend hands the same settings to the cogcore model as model_args.
    args = model_args(cfg)
    assert model_generation(args) == EVAL and set(args) == {"pretrained", "search", "retriever", "index"}


def test_the_hf_teacher_answers_once_and_the_pipeline_keeps_it_apart_from_the_eval(tmp_path):
    teacher = make_cfg("traces", tmp_path, "teacher=hf", "teacher.path=x").teacher
    assert generation_config(teacher.generation, "teacher.generation") == GenerationConfig()
    cfg = make_cfg("pipeline", tmp_path, "teacher=hf", "teacher.path=x", "teacher.generation.temperature=0.7")
    assert generation_config(cfg.teacher.generation) == GenerationConfig(temperature=0.7)
    assert eval_generation(cfg.eval) == EVAL


@pytest.mark.parametrize("job", ["chat", "serve"])
def test_the_assistant_answers_once_within_the_whole_window(job, tmp_path):
    cfg = make_cfg(job, tmp_path, "generation.top_p=0.9")
    assert assistant_generation(WINDOW, cfg) == GenerationConfig(max_new_tokens=2048, top_p=0.9)
    asked = assistant_generation(WINDOW, cfg, temperature=0.7, run_tools=False)  # a request's sampling
    assert asked == GenerationConfig(max_new_tokens=2048, top_p=0.9, temperature=0.7, run_tools=False)


def test_lm_eval_model_args_take_any_generation_setting_and_default_to_one_greedy_answer():
    args = {"quotes": "false", "steps": 1, "retries": 2, "dtype": "float32"}  # as lm-eval's CLI casts them
    assert model_generation(args) == GenerationConfig(quotes=False, steps=True, retries=2)
    assert args == {"dtype": "float32"}  # the rest go to lm-eval's hf model
    assert model_generation({}) == GenerationConfig()
    with pytest.raises(DataError, match="model_args quotes='maybe': choose true or false"):
        model_generation({"quotes": "maybe"})


def test_a_setting_that_is_no_field_or_of_the_wrong_kind_is_named(tmp_path):
    with pytest.raises(DataError, match="eval.generation.retriez: no such generation setting"):
        eval_generation(make_cfg("eval", tmp_path, "+eval.generation.retriez=1").eval)
    with pytest.raises(DataError, match="generation.steps='yes': choose true or false"):
        assistant_generation(WINDOW, make_cfg("chat", tmp_path, "generation.steps=yes"))
    with pytest.raises(DataError, match="teacher.generation.k='many': must be a number"):
        teacher = make_cfg("traces", tmp_path, "teacher=hf", "teacher.path=x", "teacher.generation.k=many")
        generation_config(teacher.teacher.generation, "teacher.generation")
