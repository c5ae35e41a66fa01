import pytest
from conftest import make_cfg

from cogcore.core.tools import SYSTEM_PROMPT, render_results, search_call
from cogcore.core.worlds.world import generate
from cogcore.evals.contamination import (
    DEFAULT_N,
    ContaminationError,
    check_contamination,
    contamination_report,
    question_grams,
)


def trace(tid, question, passage="Fafu Institute was founded by Tix Tiful.", answer="Tix Tiful"):
    """A small trace shaped like the oracle teacher's: system, user, search, result, answer."""
    return {
        "id": tid,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
            {"role": "assistant", "content": "I need a fact.", "tool_calls": [search_call("c0", "fact", 3)]},
            {
                "role": "tool",
                "tool_call_id": "c0",
                "name": "search",
                "content": render_results([{"id": f"{tid}-p", "title": "T", "text": passage}]),
            },
            {"role": "assistant", "content": f"Found it [{tid}-p].\nAnswer: {answer}"},
        ],
        "metadata": {"question": question, "type": "lookup", "answers": [answer], "teacher": "oracle"},
    }


# Training worlds and a held-out world ask with the same templates about different entities; the
# held-out person "Rubrel Braluth" shares a first name with the training person "Rubrel Thufial".
TRAIN = [
    trace("t0-q0", "What is the population of the city where Rubrel Thufial was born?"),
    trace("t0-q1", "In which country was the spouse of Kou Biavax born?"),
    trace("t0-q2", "What is the difference between the populations of Bofa and Bipi?"),
    trace("t1-q0", "Who founded Fafu Institute?"),
]
HELDOUT = [
    {"id": "h0-q0", "question": "What is the population of the city where Rubrel Braluth was born?"},
    {"id": "h0-q1", "question": "In which country was the spouse of Rubrel Braluth born?"},
    {"id": "h0-q2", "question": "What is the difference between the populations of Faefol and Drazor?"},
    {"id": "h0-q3", "question": "Who founded Fafu Bank?"},
]


def test_held_out_questions_on_shared_templates_are_clean():
    report = check_contamination(TRAIN, HELDOUT)
    assert report["n"] == DEFAULT_N == 10
    assert (report["questions"], report["traces"], report["leaked"], report["share"]) == (4, 4, 0, 0.0)
    assert report["ids"] == [] and report["examples"] == [] and report["exact_duplicates"] == 0


def test_shorter_grams_match_on_templates_alone():
    # Why n is 10: 8 template words, or 8 plus a shared first name, are not a leak.
    at_8 = contamination_report(TRAIN, HELDOUT, n=8)
    assert at_8["ids"] == ["h0-q0", "h0-q2"]
    assert at_8["examples"][1]["ngram"] == "what is the difference between the populations of"
    at_9 = contamination_report(TRAIN, HELDOUT, n=9)
    assert at_9["ids"] == ["h0-q0"]
    assert at_9["examples"][0]["ngram"] == "what is the population of the city where rubrel"


def test_planted_question_in_a_user_turn_fails_loudly():
    leaked = HELDOUT[1]["question"]
    planted = [*TRAIN, trace("t2-q5", f"Please help: {leaked.lower()} Thanks!")]
    with pytest.raises(ContaminationError, match="1 of 4 eval questions") as e:
        check_contamination(planted, HELDOUT)
    message = str(e.value)
    assert "h0-q1" in message and "t2-q5" in message and "a user turn" in message
    assert "regenerate the eval world" in message and "remove the leaked traces" in message
    assert isinstance(e.value, ValueError)
    report = check_contamination(planted, HELDOUT, max_share=0.25)  # a tolerated share reports only
    assert report["ids"] == ["h0-q1"] and report["leaked_in_user_turns"] == 1
    assert report["examples"][0]["ngram"] == "in which country was the spouse of rubrel braluth born"
    assert report["examples"][0] == {**report["examples"][0], "trace": "t2-q5", "where": "user"}


def test_leak_outside_user_turns_counts():
    # The held-out fact sits in a retrieved passage of a training trace: the whole text is checked too.
    passage = "Records say: What is the difference between the populations of Faefol and Drazor? 412."
    report = contamination_report([*TRAIN, trace("t3-q0", "Who founded Bank?", passage=passage)], HELDOUT)
    assert report["ids"] == ["h0-q2"]
    assert report["leaked_in_user_turns"] == 0 and report["examples"][0]["where"] == "text"


def test_short_questions_register_on_their_whole_text():
    assert question_grams("Who founded Fafu Bank?", 10) == {("who", "founded", "fafu", "bank")}
    assert question_grams("?!", 10) == set()
    # Fewer words than n: the whole question must appear, here in the reasoning of a trace.
    reasoning = trace("t4-q0", "Who is older?", answer="x")
    reasoning["messages"][-1]["content"] = "Someone asked who founded Fafu Bank.\nAnswer: x"
    report = contamination_report([*TRAIN, reasoning], HELDOUT)
    assert report["ids"] == ["h0-q3"] and report["examples"][0]["ngram"] == "who founded fafu bank"
    # An exact duplicate of a training question counts, as a leak and as a duplicate.
    dup = {"id": "h0-q9", "question": "who founded FAFU institute"}
    report = contamination_report(TRAIN, [*HELDOUT, dup])
    assert report["ids"] == ["h0-q9"] and report["exact_duplicates"] == 1


def test_report_lists_at_most_twenty():
    questions = [{"id": f"q{i}", "question": f"Who founded Org{i} Labs?"} for i in range(25)]
    traces = [trace(f"t{i}", q["question"]) for i, q in enumerate(questions)]
    report = contamination_report(traces, questions)
    assert report["leaked"] == 25 and report["share"] == 1.0
    assert len(report["ids"]) == len(report["examples"]) == 20


def test_generated_held_out_world_is_clean():
    # The default world's templates and name pools (generation only, well under a second): held-out
    # questions against the training questions, as user turns, and the training passages. At n = 8
    # this world shows 11 of 120 held-out questions "leaking" through templates, at n = 9 two.
    cfg = make_cfg("world", "unused", "world.train_worlds=40", "world.heldout_worlds=2").world
    worlds, questions = generate(cfg)
    passages = [p["text"] for w in worlds if w.split == "train" for p in w.passages.values()]
    traces = [trace(q["id"], q["question"]) for q in questions["train"]]
    traces += [trace(f"p{i}", "Who?", passage=p) for i, p in enumerate(passages)]
    assert check_contamination(traces, questions["heldout"])["share"] == 0.0
    with pytest.raises(ContaminationError):
        check_contamination(traces, questions["train"][:5])
