"""Real teachers on your own questions and documents: `teacher=openai` against a real HTTP server on a
loopback port that injects faults in front of a scripted model (tests/fault_server.py), `teacher=hf`
with a tiny model, `data=qa`, and the filter between teacher and student."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch
from conftest import make_cfg
from fault_server import RETRY_AFTER, FaultServer, Plan, ok
from omegaconf import OmegaConf
from rule_lm import RuleLM
from tiny_chat import PASSAGES, TRACES, make_trace, tiny_llama, tiny_tokenizer

from cogcore.core.io import DataError, read_json, read_jsonl
from cogcore.core.tools import SEARCH_TOOL, UNKNOWN, final_answer
from cogcore.core.trace import read_traces
from cogcore.distill.filtering import TraceFilter
from cogcore.distill.losses import load_topk_shard, teacher_topk
from cogcore.distill.packing import encode_trace
from cogcore.distill.teachers.hf import load_teacher, save_topk
from cogcore.distill.teachers.openai import EndpointError
from cogcore.distill.traces import traces

KEY_ENV, KEY = "COGCORE_TEST_KEY", "sk-test-7f3a9c"
WORKS = "Where does Rouler Bristor work?"

# id -> (question, gold answers, plan, expected outcome: "kept" or the rejection reason)
MATRIX = {
    "ok": (WORKS, ["Kouthoustus Bank"], ok("Rouler Bristor employer", "Kouthoustus Bank"), "kept"),
    "http500": (
        "Where was Rouler Bristor born?",
        ["Verum"],
        Plan(ok("Rouler Bristor", "Verum").turns, ["500", "500"]),
        "kept",
    ),
    "http429": (
        "How many people live in Verum?",
        ["48213"],
        Plan(ok("Verum population", "48213").turns, ["429"]),
        "kept",
    ),
    "slow": (
        "How many people live in Godas?",
        ["1907"],
        Plan(ok("Godas population", "1907").turns, ["slow"]),
        "kept",
    ),
    "drop": (
        "In what year was Kroubran Tobras born?",
        ["1950"],
        Plan(ok("Kroubran Tobras", "1950").turns, ["drop"]),
        "kept",
    ),
    "arithmetic": (
        "How many more people live in Verum than in Godas?",
        ["46306"],
        Plan(
            [
                ("search", "Verum population"),
                ("search", "Godas population"),
                ("answer", "48213 - 1907 = 46306.\nAnswer: 46306"),
            ]
        ),
        "kept",
    ),
    "malformed": (
        "Who is Zoë Ångström married to?",
        ["Vaes Vuzou"],
        Plan([("malformed",)]),
        "malformed_response",
    ),
    "bad_args": (
        "What is the population of Kelvar?",
        [UNKNOWN],
        Plan([("call", "search", '{"query": ')]),
        "bad_tool_arguments",
    ),
    "unknown_tool": (
        "Who founded Godas?",
        [UNKNOWN],
        Plan([("call", "browse", '{"url": "x"}')]),
        "unknown_tool",
    ),
    "endless": (
        "Who is Kroubran Tobras?",
        ["a person"],
        Plan([("search", "Kroubran Tobras")]),
        "max_tool_calls",
    ),
    "length": (
        "Where does Zoë Ångström live?",
        [UNKNOWN],
        Plan([("length", "Let me think at great length")]),
        "length",
    ),
    "no_answer": (
        "When was Verum founded?",
        [UNKNOWN],
        Plan([("search", "Verum"), ("answer", "I am not sure.")]),
        "no_answer",
    ),
    "wrong": (
        "Which city was Rouler Bristor born in?",
        ["Verum"],
        ok("Rouler Bristor birthplace", "Godas"),
        "wrong_answer",
    ),
    # The right answer, from memory: nothing it retrieved holds it.
    "unsupported": (
        "What is the birthplace of Rouler Bristor?",
        ["Verum"],
        Plan([("answer", "Answer: Verum")]),
        "unsupported",
    ),
    # Last in the file, so that "ok" is kept before them.
    "dup": (WORKS, ["Kouthoustus Bank"], ok("Rouler Bristor employer", "Kouthoustus Bank"), "duplicate"),
    "near_dup": (
        WORKS.rstrip("?"),
        ["Kouthoustus Bank"],
        ok("Rouler Bristor employer", "Kouthoustus Bank"),
        "near_duplicate",
    ),
}


@pytest.fixture(scope="module")
def docs_index(tmp_path_factory):
    """An index over a folder of the user's documents (`cogcore index docs=`), built once."""
    from cogcore.retrieval.index import index

    run_dir = tmp_path_factory.mktemp("docs_run")
    (run_dir / "docs").mkdir()
    (run_dir / "docs" / "facts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PASSAGES))
    index(make_cfg("index", run_dir, f"docs={run_dir / 'docs'}"))
    return run_dir / "index"


@pytest.fixture
def run_dir(tmp_path, docs_index, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    shutil.copytree(docs_index, tmp_path / "index")
    return tmp_path


def write_questions(run_dir, rows: dict) -> str:
    path = run_dir / "questions.jsonl"
    path.write_text(
        "".join(json.dumps({"id": i, "question": q, "answers": a}) + "\n" for i, (q, a, *_) in rows.items())
    )
    return str(path)


def openai_overrides(server: FaultServer, questions: str, *overrides: str) -> list[str]:
    return [
        "teacher=openai",
        "teacher.model=scripted",
        "data=qa",
        f"path={questions}",
        "retriever=bm25",
        f"teacher.client.base_url={server.base_url}",
        f"teacher.client.api_key_env={KEY_ENV}",
        "teacher.client.timeout=0.5",
        "teacher.client.retries=3",
        "teacher.client.backoff=0.05",
        "teacher.client.max_backoff=0.2",
        "teacher.client.concurrency=4",
        "teacher.max_tool_calls=4",
        "teacher.unavailable_share=0",
        *overrides,
    ]


def openai_cfg(run_dir, server: FaultServer, questions: str, *overrides: str):
    return make_cfg("traces", run_dir, *openai_overrides(server, questions, *overrides))


def outcomes(run_dir) -> dict[str, str]:
    """id -> "kept" or the rejection reason; fails if an id is in both files or twice in one."""
    kept = [t["id"] for t in read_traces(run_dir / "traces" / "traces.jsonl")]
    rejected = read_jsonl(run_dir / "traces" / "rejected.jsonl")
    ids = kept + [r["id"] for r in rejected]
    assert len(ids) == len(set(ids)), "an id is written twice"
    return {**{i: "kept" for i in kept}, **{r["id"]: r["reason"] for r in rejected}}


def test_fault_matrix_every_question_lands_once_with_its_reason(run_dir):
    questions = write_questions(run_dir, MATRIX)
    with FaultServer({q: plan for q, _, plan, _ in MATRIX.values()}, api_key=KEY) as server:
        traces(openai_cfg(run_dir, server, questions))

        assert outcomes(run_dir) == {i: expected for i, (*_, expected) in MATRIX.items()}
        manifest = read_json(run_dir / "traces" / "manifest.json")
        assert manifest["complete"] and manifest["questions"] == len(MATRIX)
        assert manifest["kept"] + manifest["rejected"] == len(MATRIX)
        assert sum(manifest["rejected_by_reason"].values()) == manifest["rejected"]
        assert manifest["by_type"]["qa"]["rejected_by_reason"] == manifest["rejected_by_reason"]
        assert manifest["rejected_by_reason"]["duplicate"] == 1

        # The faults were retried: 500 twice, 429 after its Retry-After, the slow and dropped ones once.
        first_turns = Counter(e["question"] for e in server.log if e["turn"] == 0)
        assert first_turns[MATRIX["http500"][0]] == 3
        assert first_turns[MATRIX["slow"][0]] == first_turns[MATRIX["drop"][0]] == 2
        limited, retried = [e["time"] for e in server.log if e["question"] == MATRIX["http429"][0]][:2]
        assert retried - limited >= RETRY_AFTER
        assert server.max_in_flight <= 4 + 1  # the abandoned slow request may still hold a server thread

        # Kept traces: the answer, from what was retrieved, with the question's metadata.
        for trace in read_traces(run_dir / "traces" / "traces.jsonl"):
            question, golds, *_ = MATRIX[trace["id"]]
            assert (
                trace["metadata"]["teacher"] == "openai:scripted"
                and trace["metadata"]["question"] == question
            )
            assert final_answer(trace["messages"][-1]["content"]) == golds[0]
            assert [m["role"] for m in trace["messages"]][:3] == ["system", "user", "assistant"]
            assert any(m["role"] == "tool" and "[" in m["content"] for m in trace["messages"])

        # A re-run from scratch replays the cache: no new call, the same outcomes.
        calls = len(server.log)
        for name in ("traces.jsonl", "rejected.jsonl", "manifest.json"):
            (run_dir / "traces" / name).unlink()
        traces(openai_cfg(run_dir, server, questions))
        assert len(server.log) == calls
        assert outcomes(run_dir) == {i: expected for i, (*_, expected) in MATRIX.items()}

        # A second run over finished files makes no call either, and never writes the key anywhere.
        traces(openai_cfg(run_dir, server, questions))
        assert len(server.log) == calls
    written = [
        p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file() and "index" not in p.parts
    ]
    assert written and not any(KEY in text for text in written)


def test_requests_that_cannot_succeed(run_dir):
    """A refused request rejects its question; an endpoint that keeps failing leaves its question in
    neither file and the job says so, and a later run picks it up; a wrong key stops the job at once."""
    rows = {
        "fine": MATRIX["ok"],
        "refused": (*MATRIX["http500"][:2], Plan([], ["400"])),
        "down": (*MATRIX["http429"][:2], Plan(MATRIX["http429"][2].turns, ["500"] * 4)),
    }
    questions = write_questions(run_dir, rows)
    plans = {q: plan for q, _, plan, *_ in rows.values()}
    with FaultServer(plans, api_key=KEY) as server:
        with pytest.raises(
            EndpointError, match=r"1 questions got no response .*down: HTTP 500 on each of 4 tries"
        ):
            traces(openai_cfg(run_dir, server, questions))
        assert outcomes(run_dir) == {"fine": "kept", "refused": "bad_request"}
        assert not read_json(run_dir / "traces" / "manifest.json")["complete"]

        traces(openai_cfg(run_dir, server, questions))  # the endpoint has recovered (4 faults were used up)
        assert outcomes(run_dir) == {"fine": "kept", "refused": "bad_request", "down": "kept"}

    shutil.copytree(run_dir / "index", run_dir / "again" / "index")
    with FaultServer(plans, api_key="another-key") as server, pytest.raises(DataError) as failure:
        traces(openai_cfg(run_dir / "again", server, questions))
    assert (
        "HTTP 401" in str(failure.value) and KEY_ENV in str(failure.value) and KEY not in str(failure.value)
    )


def test_missing_api_key_names_the_variable(run_dir, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    questions = write_questions(run_dir, {"ok": MATRIX["ok"]})
    with FaultServer({}, api_key=KEY) as server, pytest.raises(DataError, match=f"{KEY_ENV} is not set"):
        traces(openai_cfg(run_dir, server, questions))


def test_search_down_teaches_abstaining(run_dir):
    """With teacher.unavailable_share the search tool is down for the drawn questions: a teacher that
    abstains is kept, one that answers anyway is rejected as wrong."""
    rows = {
        "abstains": (
            "Where was Rouler Bristor born?",
            ["Verum"],
            Plan([("search", "Rouler Bristor"), ("abstain_if_down", "Answer: Verum")]),
            "kept",
        ),
        "guesses": (
            "Who is married to Zoë Ångström?",
            ["Vaes Vuzou"],
            ok("Zoë Ångström spouse", "Vaes Vuzou"),
            "wrong_answer",
        ),
    }
    questions = write_questions(run_dir, rows)
    with FaultServer({q: plan for q, _, plan, _ in rows.values()}, api_key=KEY) as server:
        traces(openai_cfg(run_dir, server, questions, "teacher.unavailable_share=1.0"))
    assert outcomes(run_dir) == {"abstains": "kept", "guesses": "wrong_answer"}
    (trace,) = read_traces(run_dir / "traces" / "traces.jsonl")
    assert (
        trace["metadata"]["search"] == "unavailable"
        and final_answer(trace["messages"][-1]["content"]) == UNKNOWN
    )


def test_concurrency_limit_is_reached_and_kept(run_dir):
    rows = {
        f"q{i}": (f"({i}) {WORKS}", ["Kouthoustus Bank"], ok("Rouler Bristor employer", "Kouthoustus Bank"))
        for i in range(6)
    }
    questions = write_questions(run_dir, rows)
    with FaultServer({q: plan for q, _, plan in rows.values()}, api_key=KEY, delay=0.1) as server:
        traces(openai_cfg(run_dir, server, questions, "teacher.client.concurrency=3"))
    assert server.max_in_flight == 3
    assert len(outcomes(run_dir)) == 6


def test_killed_run_resumes_without_losing_or_repeating(run_dir):
    rows = {
        i: (q, a, plan)
        for i, (q, a, plan, expected) in MATRIX.items()
        if expected == "kept" and not plan.faults
    }
    rows |= {
        f"more{i}": (f"How many people live in city {i}?", [UNKNOWN], ok(f"city {i}", UNKNOWN))
        for i in range(6)
    }
    questions = write_questions(run_dir, rows)
    with FaultServer({q: plan for q, _, plan in rows.values()}, api_key=KEY, delay=0.15) as server:
        overrides = openai_overrides(server, questions, "teacher.client.concurrency=2")
        files = [run_dir / "traces" / name for name in ("traces.jsonl", "rejected.jsonl")]
        command = [sys.executable, "-m", "cogcore.core.cli", "traces", f"run_dir={run_dir}", *overrides]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None:
            if sum(f.read_bytes().count(b"\n") for f in files if f.exists()) >= 2:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed mid-way"
        assert 2 <= len(outcomes(run_dir)) < len(rows)

        traces(make_cfg("traces", run_dir, *overrides))
        assert set(outcomes(run_dir)) == set(rows)  # every question once (outcomes checks "once")
        # Only requests in flight at the kill (at most `concurrency`) were answered twice.
        answered = Counter(e["digest"] for e in server.answered())
        assert sum(n - 1 for n in answered.values()) <= 2


def test_traces_from_cogcore_serve_end_to_end(run_dir):
    """`cogcore traces teacher=openai` against the app of `cogcore serve` over real HTTP: the server
    returns the model's search calls (client-side tools), the teacher runs them and sends the results
    back. The served model follows a rule: search for the question, answer with the first result's id."""
    server_module = pytest.importorskip("cogcore.core.server")
    import threading

    import uvicorn

    from cogcore.core.assistant import Assistant
    from cogcore.core.engine import Engine

    tokenizer = tiny_tokenizer()
    assistant = Assistant(Engine(RuleLM(tokenizer), tokenizer), None, "rule")
    app = server_module.create_app(assistant, make_cfg("serve", run_dir, f"api_key={KEY}"))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    sock = config.bind_socket()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    rows = RULE_ROWS
    questions = write_questions(run_dir, rows)
    base_url = "http://{}:{}/v1".format(*sock.getsockname()[:2])
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.01)
        traces(
            make_cfg(
                "traces",
                run_dir,
                "teacher=openai",
                "teacher.model=rule",
                "teacher.sampling.max_tokens=256",
                "teacher.unavailable_share=0",
                "data=qa",
                f"path={questions}",
                "retriever=bm25",
                f"teacher.client.base_url={base_url}",
                f"teacher.client.api_key_env={KEY_ENV}",
            )
        )
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert outcomes(run_dir) == {"employer": "kept", "population": "kept", "wrong": "wrong_answer"}
    for trace in read_traces(run_dir / "traces" / "traces.jsonl"):
        roles = [m["role"] for m in trace["messages"]]
        assert roles == ["system", "user", "assistant", "tool", "assistant"]
        assert trace["messages"][3]["content"].startswith(f"[{rows[trace['id']][1][0]}]")
        assert trace["metadata"]["teacher"] == "openai:rule"


# Questions the rule-following model (tests/rule_lm.py) answers with the id of its first search result.
RULE_ROWS = {
    "employer": ("Rouler Bristor works for", ["w0-p1-works_for"]),
    "population": ("Verum population", ["w0-c2-population"]),
    "wrong": ("Kroubran Tobras birth year", ["w0-p5-spouse"]),
}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random 2-layer Llama with a cogcore tokenizer, saved as a Hugging Face checkpoint."""
    path = tmp_path_factory.mktemp("teacher")
    tokenizer = tiny_tokenizer()
    tiny_llama(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def hf_overrides(questions: str, *overrides: str) -> list[str]:
    return [
        "teacher=hf",
        "teacher.unavailable_share=0",
        "data=qa",
        f"path={questions}",
        "retriever=bm25",
        "batch_size=2",
        *overrides,
    ]


def test_hf_teacher_writes_traces_and_topk_logprobs(run_dir, monkeypatch):
    tokenizer = tiny_tokenizer()
    rule = RuleLM(tokenizer)
    monkeypatch.setattr("cogcore.distill.traces.load_teacher", lambda tcfg: (rule, tokenizer))
    questions = write_questions(run_dir, RULE_ROWS)
    traces(make_cfg("traces", run_dir, *hf_overrides(questions, "teacher.path=rule", "teacher.topk=4")))

    assert outcomes(run_dir) == {"employer": "kept", "population": "kept", "wrong": "wrong_answer"}
    kept = {t["id"]: t for t in read_traces(run_dir / "traces" / "traces.jsonl")}
    assert {t["metadata"]["teacher"] for t in kept.values()} == {"hf:rule"}
    index = read_jsonl(run_dir / "traces" / "topk" / "index.jsonl")
    assert sorted(e["id"] for e in index) == sorted(kept)
    for entry in index:
        shard = load_topk_shard(run_dir / "traces" / "topk" / entry["shard"])
        row, n = entry["row"], entry["tokens"]
        ids, mask = encode_trace(tokenizer, kept[entry["id"]], [SEARCH_TOOL])
        assert shard["input_ids"][row, :n].tolist() == ids
        assert shard["mask"][row, : n - 1].tolist() == [bool(m) for m in mask[1:]]
        assert not shard["mask"][row, n - 1 :].any()  # padding is never trained
        assert shard["topk_ids"].shape[-1] == 4 and (shard["topk_logprobs"] <= 0).all()
        trained = tokenizer.decode(shard["input_ids"][row, 1:][shard["mask"][row]])
        assert trained.endswith(f"Answer: {kept[entry['id']]['metadata']['answers'][0]}<|end|>")

    # Resumed: the finished traces and their log-probs are kept, nothing is scored twice.
    traces(make_cfg("traces", run_dir, *hf_overrides(questions, "teacher.path=rule", "teacher.topk=4")))
    assert read_jsonl(run_dir / "traces" / "topk" / "index.jsonl") == index


def test_topk_logprobs_are_the_teachers_own(tiny_checkpoint, tmp_path):
    """Shards of a padded batch hold exactly the top-k of each trace run alone through the teacher."""
    model, tokenizer = load_teacher(
        make_cfg("traces", tmp_path, "teacher=hf", f"teacher.path={tiny_checkpoint}").teacher
    )
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in TRACES))
    assert save_topk(path, tmp_path / "topk", model, tokenizer, k=5, batch_size=4) == len(TRACES)
    for entry in read_jsonl(tmp_path / "topk" / "index.jsonl"):
        shard = load_topk_shard(tmp_path / "topk" / entry["shard"])
        row, n = entry["row"], entry["tokens"]
        ids = shard["input_ids"][row, :n]
        with torch.no_grad():
            alone_ids, alone_logprobs = teacher_topk(model(ids[None]).logits[:, :-1], 5)
        assert torch.equal(shard["topk_ids"][row, : n - 1], alone_ids[0])
        assert torch.allclose(shard["topk_logprobs"][row, : n - 1], alone_logprobs[0], atol=1e-5)


def test_hf_teacher_from_a_checkpoint_rejects_what_it_cannot_finish(run_dir, tiny_checkpoint):
    """A real (random) checkpoint through `teacher.path`: it never writes a finished answer, and every
    question still lands in rejected.jsonl with its reason."""
    questions = write_questions(run_dir, RULE_ROWS)
    overrides = hf_overrides(
        questions, f"teacher.path={tiny_checkpoint}", "teacher.generation.max_new_tokens=24"
    )
    traces(make_cfg("traces", run_dir, *overrides))
    rejected = read_jsonl(run_dir / "traces" / "rejected.jsonl")
    assert sorted(r["id"] for r in rejected) == sorted(RULE_ROWS)
    assert {r["reason"] for r in rejected} <= {"length", "no_answer", "bad_tool_arguments", "max_tool_calls"}
    assert read_json(run_dir / "traces" / "manifest.json")["complete"]


def test_data_qa_rejects_bad_question_files(run_dir, tiny_checkpoint):
    path = run_dir / "questions.jsonl"
    for lines, message in [
        ('{"question": "Who?", "answers": "Ada"}', r"questions.jsonl:1: 'answers' must be a non-empty list"),
        ('{"answers": ["Ada"]}', r"questions.jsonl:1: needs a non-empty string 'question'"),
        (
            '{"id": "a", "question": "Q", "answers": ["x"]}\n{"id": "a", "question": "R", "answers": ["y"]}',
            r"questions.jsonl:2: id 'a' is already used on line 1",
        ),
    ]:
        path.write_text(lines + "\n")
        with pytest.raises(DataError, match=message):
            traces(make_cfg("traces", run_dir, *hf_overrides(str(path), f"teacher.path={tiny_checkpoint}")))
    with pytest.raises(DataError, match=r"teacher=hf needs teacher.path"):
        traces(make_cfg("traces", run_dir, "teacher=hf"))
    with pytest.raises(DataError, match="data=qa needs the questions file"):
        traces(make_cfg("traces", run_dir, "teacher=hf", f"teacher.path={tiny_checkpoint}", "data=qa"))
    with pytest.raises(DataError, match="teacher=oracle writes traces for synthetic-world questions only"):
        traces(make_cfg("traces", run_dir, "data=qa", f"path={path}"))


def test_hf_teacher_refuses_a_checkpoint_without_cogcore_tool_calls(tiny_checkpoint, tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    shutil.copy(tiny_checkpoint / "config.json", foreign)
    vocab = {"[UNK]": 0, "hello": 1}
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, "[UNK]"))).save_pretrained(
        foreign
    )
    cfg = make_cfg("traces", tmp_path, "teacher=hf", f"teacher.path={foreign}")
    with pytest.raises(DataError, match=r"writes no tool calls in a format cogcore.*use teacher=openai"):
        load_teacher(cfg.teacher)


def test_filter_keeps_right_supported_new_traces_only():
    def trace(i, question, steps, final, answers):
        t = make_trace(i, question, steps, final)
        t["metadata"] = {"question": question, "type": "qa", "answers": answers, "teacher": "test"}
        return t

    works = [("I need his employer.", "Rouler Bristor employer", ["w0-p1-works_for"])]
    populations = [
        ("Verum.", "Verum population", ["w0-c2-population"]),
        ("Godas.", "Godas", ["w0-c3-population"]),
    ]
    cases = [
        (
            trace(
                "sum", "Verum minus Godas?", populations, "48213 - 1907 = 46306.\nAnswer: 46306", ["46306"]
            ),
            None,
        ),
        (trace("f1", "Employer?", works, "Answer: Kouthoustus Bank", ["the Kouthoustus Bank Ltd"]), None),
        (trace("unknown", "Kelvar population?", [], "Nothing.\nAnswer: unknown", ["unknown"]), None),
        (trace("copy", "Employer?", works, "Answer: Kouthoustus Bank", ["Kouthoustus Bank"]), "duplicate"),
        (
            trace("near", "Employer", works, "Answer: Kouthoustus Bank", ["Kouthoustus Bank"]),
            "near_duplicate",
        ),
        (trace("memory", "Birthplace?", works, "Answer: Verum", ["Verum"]), "unsupported"),
        (
            trace("sloppy", "Employer of Rouler?", works, "Answer: Kouthoustus", ["Kouthoustus Bank"]),
            "wrong_answer",
        ),
        (
            trace("unfinished", "Employer?!", works, "He works at a bank.", ["Kouthoustus Bank"]),
            "invalid_trace",
        ),
    ]
    cfg = OmegaConf.create({"match": "f1", "f1": 0.8, "support": True, "near_duplicate": 0.9})
    keep = TraceFilter(cfg)
    assert [getattr(keep.check(t), "reason", None) for t, _ in cases] == [why for _, why in cases]
    # Exact match only, no near-duplicate check, and the traces of an earlier run already kept.
    strict = TraceFilter(OmegaConf.merge(cfg, {"match": "em", "near_duplicate": None}), [cases[0][0]])
    assert strict.check(cases[0][0]).reason == "duplicate"
    assert strict.check(cases[1][0]).reason == "wrong_answer"  # F1 0.8, but not the same answer
    assert strict.check(cases[4][0]) is None


def test_data_qa_reads_parquet_and_datasets_folders_with_their_own_field_names(tmp_path):
    """`cogcore traces data=qa path=<parquet or datasets folder> data.fields.question=query ...`: the
    questions of a QA set as users have it, read through the config's field names."""
    import datasets

    from cogcore.distill.traces import read_qa

    rows = {"query": ["Who founded Acme?", "Where is Acme?"], "golden": [["Ada"], ["Paris", "paris"]]}
    table = datasets.Dataset.from_dict(rows)
    table.to_parquet(tmp_path / "qa.parquet")
    table.save_to_disk(tmp_path / "qa_folder")
    names = ("data.fields.question=query", "data.fields.answers=golden")
    cfg = make_cfg("traces", tmp_path, "data=qa", f"path={tmp_path}", *names)
    for path in (tmp_path / "qa.parquet", tmp_path / "qa_folder"):
        assert read_qa(path, None, cfg.data.fields) == [
            {"id": "line-0", "type": "qa", "question": "Who founded Acme?", "answers": ["Ada"]},
            {"id": "line-1", "type": "qa", "question": "Where is Acme?", "answers": ["Paris", "paris"]},
        ]
    with pytest.raises(DataError, match="needs a non-empty string 'question'"):
        read_qa(tmp_path / "qa.parquet", None, None)
    with pytest.raises(DataError, match="no such file or folder"):
        read_qa(tmp_path / "absent.parquet", None, None)
