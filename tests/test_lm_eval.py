"""The lm-eval integration: the student as lm-eval's `cogcore` model (log-likelihoods equal a direct
computation; generation runs the tool loop), the suites as lm-eval tasks scored like the native runner,
`cogcore eval backend=lm_eval` end to end, and lm-eval's own command line through the wrapper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_cfg
from lm_eval.api.instance import Instance
from tiny_chat import tiny_llama, tiny_tokenizer

from cogcore.core.engine import Engine
from cogcore.core.generation import generate
from cogcore.core.io import read_jsonl
from cogcore.core.tools import SYSTEM_PROMPT
from cogcore.evals.lm_eval_model import CogcoreLM
from cogcore.evals.lm_eval_tasks import export_tasks, run_lm_eval
from cogcore.evals.scoring import score
from cogcore.evals.suites import search_for


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    """A random tiny Llama checkpoint with cogcore's tokenizer and chat template."""
    out = tmp_path_factory.mktemp("student")
    tokenizer = tiny_tokenizer(out)
    tiny_llama(tokenizer).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def lm(student) -> CogcoreLM:
    return CogcoreLM(pretrained=str(student), device="cpu", batch_size=2, max_new_tokens=24)


def logprobs(model, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t >= 1, by one plain forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    return logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0], logits[:-1]


def request(kind: str, arguments, doc=None) -> Instance:
    return Instance(request_type=kind, doc=doc or {}, arguments=arguments, idx=0)


def test_loglikelihood_equals_a_direct_forward_pass(lm):
    tokenizer, model = lm.tokenizer, lm.model
    pairs = [
        ("Rouler Bristor was born in", " Verum."),
        ("Verum has a population of", " 48213"),
        ("Who is Zoë Ångström married to?", " Vaes Vuzou"),
        ("", "Godas has a population of 1907."),  # empty context: conditioned on BOS
    ]
    got = lm.loglikelihood([request("loglikelihood", pair) for pair in pairs], disable_tqdm=True)
    for (context, continuation), (logprob, greedy) in zip(pairs, got, strict=True):
        if context:  # lm-eval's split: the continuation is what encoding the context alone leaves over
            whole = tokenizer(context + continuation)["input_ids"]
            n = len(whole) - len(tokenizer(context)["input_ids"])
        else:
            n = len(tokenizer(continuation)["input_ids"])
            whole = [tokenizer.bos_token_id] + tokenizer(continuation)["input_ids"]
        lp, logits = logprobs(model, whole)
        assert logprob == pytest.approx(float(lp[-n:].sum()), abs=1e-4)
        assert greedy == bool((logits[-n:].argmax(-1) == torch.tensor(whole[-n:])).all())


def test_loglikelihood_rolling_is_the_whole_text_after_bos(lm):
    tokenizer, model = lm.tokenizer, lm.model
    texts = ["Rouler Bristor works for Kouthoustus Bank.", "Verum has a population of 48213. " * 3]
    got = lm.loglikelihood_rolling([request("loglikelihood_rolling", (t,)) for t in texts], disable_tqdm=True)
    for text, logprob in zip(texts, got, strict=True):
        lp, _ = logprobs(model, [tokenizer.bos_token_id] + tokenizer(text)["input_ids"])
        assert logprob == pytest.approx(float(lp.sum()), abs=1e-4)


def test_generate_until_returns_the_engines_final_turn_cut_at_until(lm):
    docs = [
        {"id": "a", "question": "Where was Rouler Bristor born?", "search": "unavailable"},
        {"id": "b", "question": "How many people live in Verum?", "search": "unavailable"},
        {"id": "c", "question": "Who is Zoë Ångström married to?", "search": "unavailable"},
    ]
    requests = [request("generate_until", (d["question"], {"until": []}), d) for d in docs]
    replies = lm.generate_until(requests, disable_tqdm=True)

    engine = Engine(lm.model, lm.tokenizer)
    conversations = [
        [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": d["question"]}]
        for d in docs
    ]
    outs = generate(engine, conversations, search_for("K", docs, None, {}), lm.generation)
    assert replies == [
        o["messages"][-1]["content"] if o["messages"][-1]["role"] == "assistant" else "" for o in outs
    ]

    assert len(replies[0]) >= 4, "the tiny model writes a final turn"
    stop = replies[0][2:4]
    cut = lm.generate_until(
        [request("generate_until", (docs[0]["question"], {"until": ["\n\n", stop]}), docs[0])]
    )
    assert cut == [replies[0].split(stop)[0]]


def test_a_suite_that_cannot_search_fails_before_generating(lm):
    doc = {"id": "q1", "question": "Where?", "search": "oracle", "gold_passages": ["w0-p1-born_in"]}
    with pytest.raises(ValueError, match="corpus=.*index="):
        lm.generate_until([request("generate_until", ("Where?", {"until": []}), doc)])
    doc = {"id": "q2", "question": "Where?", "search": "live"}
    with pytest.raises(ValueError, match="needs an index"):
        lm.generate_until([request("generate_until", ("Where?", {"until": []}), doc)])


@pytest.fixture(scope="module")
def eval_run(small_run, student, tmp_path_factory) -> Path:
    """A run folder with the small world and index (linked, read only) and the tiny student."""
    run_dir = tmp_path_factory.mktemp("lm_eval_run")
    for name in ("world", "index"):
        (run_dir / name).symlink_to(small_run / name)
    (run_dir / "student").symlink_to(student)
    return run_dir


def eval_cfg(run_dir: Path, *overrides: str):
    return make_cfg(
        "eval",
        run_dir,
        "eval.backend=lm_eval",
        "retriever=bm25",
        "eval.limit=4",
        "eval.batch_size=8",
        "eval.generation.max_new_tokens=24",
        "++eval.lm_eval.tasks=[]",
        "++eval.lm_eval.search=unavailable",
        *overrides,
    )


def test_cogcore_eval_backend_lm_eval_scores_every_suite_like_cogcore(eval_run, monkeypatch):
    from cogcore.evals import lm_eval_model

    seen = []  # (suite, doc ids) of every generation batch: one model instance serves the three suites
    search_for_ = lm_eval_model.search_for
    monkeypatch.setattr(
        lm_eval_model,
        "search_for",
        lambda suite, docs, *a: seen.append((suite, [d["id"] for d in docs])) or search_for_(suite, docs, *a),
    )
    path = run_lm_eval(eval_cfg(eval_run))

    assert path.parent == eval_run / "evals" / "lm_eval" and path.exists()
    results = json.loads(path.read_text())
    for suite in "KRT":
        task = results["results"][f"cogcore_{suite}"]
        for metric in ("accuracy", "exact_match", "f1", "not_attempted"):
            assert 0.0 <= task[f"{metric},answer"] <= 1.0
        assert {s for s, _ in seen} == set("KRT")
    assert "deferral,answer" in results["results"]["cogcore_K"]
    assert "deferral,answer" not in results["results"]["cogcore_T"]
    group = results["groups"]["cogcore"]
    assert 0.0 <= group["exact_match,answer"] <= 1.0 and 0.0 <= group["accuracy,answer"] <= 1.0

    questions = {q["id"]: q for q in read_jsonl(eval_run / "world" / "questions" / "heldout.jsonl")}
    for suite, search in (("K", "unavailable"), ("R", "oracle"), ("T", "live")):
        [samples] = (eval_run / "evals" / "lm_eval").glob(f"samples_cogcore_{suite}_*.jsonl")
        rows = read_jsonl(samples)
        assert len(rows) == 4
        for row in rows:
            assert row["doc"]["search"] == search
            native = score(row["resps"][0][0], questions[row["doc"]["id"]])  # the native runner's grading
            assert row["exact_match"] == native["em"] and row["f1"] == native["f1"]
            assert row["accuracy"] == float(native["grade"] == "correct")


def test_standard_lm_eval_tasks_are_passed_through_by_name(eval_run, tmp_path, monkeypatch):
    import lm_eval

    class Stop(Exception):
        pass

    def capture(**kwargs):
        raise Stop(kwargs["tasks"], kwargs["model_args"])

    monkeypatch.setattr(lm_eval, "simple_evaluate", capture)
    cfg = eval_cfg(
        eval_run, f"run_dir={tmp_path}", "eval.suites=[K]", "++eval.lm_eval.tasks=[arc_easy,triviaqa]"
    )
    cfg.eval.questions = str(eval_run / "world" / "questions" / "heldout.jsonl")
    with pytest.raises(Stop) as stopped:
        run_lm_eval(cfg)
    tasks, args = stopped.value.args
    assert tasks == ["cogcore", "arc_easy", "triviaqa"]
    assert args["search"] == "unavailable" and "index" not in args  # K and closed-book standard tasks


def test_exported_tasks_run_through_lm_evals_command_line(eval_run, student, tmp_path):
    tasks = tmp_path / "tasks"
    export_tasks(eval_run / "world" / "questions" / "heldout.jsonl", tasks, suites=["K"])
    out = tmp_path / "results.json"
    command = [
        sys.executable,
        "-m",
        "cogcore.evals.lm_eval_cli",
        "--model",
        "cogcore",
        "--model_args",
        f"pretrained={student},search=unavailable,max_new_tokens=16",
        "--device",
        "cpu",
        "--include_path",
        str(tasks),
        "--tasks",
        "cogcore",
        "--limit",
        "2",
        "--output_path",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    [written] = tmp_path.glob("results_*.json")
    results = json.loads(written.read_text())
    assert "exact_match,answer" in results["results"]["cogcore_K"]
    assert "exact_match,answer" in results["groups"]["cogcore"]
