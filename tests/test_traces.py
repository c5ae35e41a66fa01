import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import make_cfg

from cogcore.core.io import DataError, read_json, read_jsonl
from cogcore.core.tools import UNAVAILABLE, UNKNOWN, final_answer
from cogcore.core.trace import read_traces
from cogcore.distill.traces import traces


def by_id(path):
    return {r["id"]: r for r in read_jsonl(path)}


def test_every_question_traced_once_and_counted(small_run):
    questions = read_jsonl(small_run / "world" / "questions" / "train.jsonl")
    kept = list(read_traces(small_run / "traces" / "traces.jsonl"))  # validates every record
    rejected = read_jsonl(small_run / "traces" / "rejected.jsonl")
    ids = [r["id"] for r in kept + rejected]
    assert sorted(ids) == sorted(q["id"] for q in questions)
    manifest = read_json(small_run / "traces" / "manifest.json")
    assert manifest["complete"] and manifest["kept"] == len(kept) and manifest["rejected"] == len(rejected)
    assert sum(c["kept"] + c["rejected"] for c in manifest["by_type"].values()) == len(questions)
    assert len(kept) >= 0.95 * len(questions)


def test_oracle_answers_right_and_shows_its_steps(small_run):
    offline = 0
    for trace in read_traces(small_run / "traces" / "traces.jsonl"):
        meta, messages = trace["metadata"], trace["messages"]
        final = messages[-1]["content"]
        if meta["search"] == "unavailable":  # the tool was down: one call, then abstain
            assert [m["content"] for m in messages if m["role"] == "tool"] == [UNAVAILABLE]
            assert final_answer(final) == UNKNOWN
            offline += 1
            continue
        assert final_answer(final) == meta["answers"][0]
        searches = sum(m["role"] == "tool" for m in messages)
        retrieved = " ".join(m["content"] for m in messages if m["role"] == "tool")
        assert all(g in retrieved for g in meta["gold_passages"])  # every fact came from a search
        if meta["type"] == "arithmetic":
            assert " - " in final and " = " in final
        if meta["type"] == "compare":
            assert re.search(r"(?:digit|digits): \d " + re.escape(meta["answers"][0]) + r"\.", final)
        if meta["type"] == "unanswerable":
            assert searches >= 2 and "rephrase" in json.dumps(messages)
        if meta["type"] == "compose":
            assert searches >= len(meta["gold_passages"])
    assert offline, "expected some traces written with the search tool unavailable"


def test_gold_share_traces_search_a_perfect_retriever(small_run, tmp_path):
    """teacher.gold_share: those questions' searches return exactly their gold passages, as in R."""
    for stage in ("world", "index"):
        shutil.copytree(small_run / stage, tmp_path / stage)
    traces(make_cfg("traces", tmp_path, "teacher.gold_share=0.5"))
    kept = list(read_traces(tmp_path / "traces" / "traces.jsonl"))
    gold = [t for t in kept if t["metadata"]["search"] == "gold"]
    assert 0.3 * len(kept) < len(gold) < 0.7 * len(kept)
    for trace in gold:
        meta = trace["metadata"]
        results = [m["content"] for m in trace["messages"] if m["role"] == "tool"]
        ids = {line[1 : line.index("]")] for r in results for line in r.splitlines() if line.startswith("[")}
        assert ids == set(meta["gold_passages"])  # nothing else, and every gold passage
        assert (
            final_answer(trace["messages"][-1]["content"]) == meta["answers"][0]
            or meta["type"] == "unanswerable"
        )
    assert {t["metadata"]["search"] for t in kept} == {"live", "gold", "unavailable"}


def test_a_miss_is_followed_by_a_reformulated_query(small_run):
    recovered = [
        t
        for t in read_traces(small_run / "traces" / "traces.jsonl")
        if t["metadata"]["type"] != "unanswerable" and "Let me rephrase" in json.dumps(t)
    ]
    assert recovered, "expected at least one trace that recovers from a missed search"
    queries = [
        json.loads(m["tool_calls"][0]["function"]["arguments"])["query"]
        for m in recovered[0]["messages"]
        if m.get("tool_calls")
    ]
    assert len(set(queries)) == len(queries)


def test_resume_after_kill_writes_no_id_twice(small_run, tmp_path):
    for stage in ("world", "index"):
        shutil.copytree(small_run / stage, tmp_path / stage)
    out = tmp_path / "traces" / "traces.jsonl"
    command = [sys.executable, "-m", "cogcore.core.cli", "traces", f"run_dir={tmp_path}", "batch_size=1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # a slow or busy machine may take minutes to load; 3 traces end the wait
    while time.time() < deadline and process.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 3:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed mid-way"
    written = out.read_bytes().count(b"\n")
    total = len(read_jsonl(small_run / "world" / "questions" / "train.jsonl"))
    assert 3 <= written < total

    traces(make_cfg("traces", tmp_path))
    for name in ("traces.jsonl", "rejected.jsonl"):
        ids = [r["id"] for r in read_jsonl(tmp_path / "traces" / name)]
        assert len(ids) == len(set(ids))
        # Same records as the uninterrupted run of the session fixture.
        assert by_id(tmp_path / "traces" / name) == by_id(small_run / "traces" / name)
    assert read_json(tmp_path / "traces" / "manifest.json")["complete"]


def test_resume_with_other_settings_is_refused(small_run, tmp_path):
    for stage in ("world", "index", "traces"):
        shutil.copytree(small_run / stage, tmp_path / stage)
    with pytest.raises(DataError, match=r"other settings \(teacher\)"):
        traces(make_cfg("traces", tmp_path, "teacher.k=2"))


def test_found_facts_are_quoted_verbatim(small_run):
    """With teacher.quote (the default) each found fact is first quoted as the exact retrieved line."""
    for trace in read_traces(small_run / "traces" / "traces.jsonl"):
        if trace["metadata"]["type"] != "lookup" or trace["metadata"]["search"] == "unavailable":
            continue
        (gold,) = trace["metadata"]["gold_passages"]
        tool_lines = [
            line for m in trace["messages"] if m["role"] == "tool" for line in m["content"].splitlines()
        ]
        quoted = next(line for line in tool_lines if line.startswith(f"[{gold}]"))
        assert quoted + " So " in trace["messages"][-1]["content"]


@pytest.mark.parametrize("near_misses", [True, False])
def test_a_near_miss_is_quoted_and_set_aside(small_run, tmp_path, near_misses):
    """With teacher.near_misses, a missed search whose results hold the needed relation about another
    entity quotes that line and says whose it is, before rephrasing or abstaining."""
    for stage in ("world", "index"):
        shutil.copytree(small_run / stage, tmp_path / stage)
    traces(make_cfg("traces", tmp_path, f"teacher.near_misses={near_misses}"))
    questions = {q["id"]: q for q in read_jsonl(small_run / "world" / "questions" / "train.jsonl")}
    seen = 0
    for trace in read_traces(tmp_path / "traces" / "traces.jsonl"):
        if trace["metadata"]["type"] != "unanswerable" or trace["metadata"]["search"] == "unavailable":
            continue
        (hop,) = questions[trace["id"]]["hops"]
        turns = trace["messages"][2:]
        for result, reply in zip(turns[1::2], turns[2::2], strict=True):
            near = [
                line
                for line in result["content"].splitlines()
                if line.split("]")[0].endswith(f"-{hop['relation']}")
            ]
            if not near or not near_misses:
                assert "That is about" not in reply["content"]
                continue
            title = near[0].split("] ", 1)[1].split(":")[0]
            assert title != hop["subject"]
            assert reply["content"].startswith(f"{near[0]} That is about {title}, not {hop['subject']}.")
            seen += 1
    assert seen or not near_misses, "expected unanswerable traces whose searches returned someone else's fact"
