import numpy as np
import pytest

from cogcore.evals.scoring import (
    abstained,
    bootstrap_ci,
    exact_match,
    grade,
    normalize_answer,
    score,
    summarize,
    token_f1,
)


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("The Quick, Brown Fox!", "quick brown fox"),
        ("  A  cat's   toy. ", "cats toy"),
        ("An apple and the pear", "apple and pear"),
        ("Theatre another", "theatre another"),  # articles only as whole words
        ("1,878", "1878"),
        ("UNKNOWN.", "unknown"),
        ("the", ""),
    ],
)
def test_normalize_answer_is_squad(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_exact_match_takes_the_best_alias():
    assert exact_match("the Bipi.", ["Bipi"]) == 1.0
    assert exact_match("bipi", ["Kelvar", "Bipi"]) == 1.0
    assert exact_match("Bipi city", ["Bipi"]) == 0.0
    assert exact_match("Bipi", "Bipi") == 1.0  # a single gold string is one alias, not its letters
    assert exact_match(None, ["Bipi"]) == 0.0


def test_token_f1_by_hand():
    # 1 shared token of 3 predicted and 2 gold: P = 1/3, R = 1/2, F1 = 2PR / (P + R) = 0.4.
    assert token_f1("Liagathun Mining Company", ["Liagathun Institute"]) == pytest.approx(0.4)
    # A second alias shares 2 tokens: P = 2/3, R = 1, F1 = 0.8; the best alias counts.
    aliases = ["Liagathun Institute", "Liagathun Mining"]
    assert token_f1("Liagathun Mining Company", aliases) == pytest.approx(0.8)
    # Overlap is a multiset: a repeated token is matched once. P = 1/2, R = 1, F1 = 2/3.
    assert token_f1("Bipi bipi", ["Bipi"]) == pytest.approx(2 / 3)
    assert token_f1("The Bipi!", ["bipi"]) == 1.0
    assert token_f1("Kelvar", ["Bipi"]) == 0.0
    assert token_f1(None, ["Bipi"]) == 0.0
    assert token_f1("", ["Bipi"]) == 0.0
    assert token_f1("the", ["a"]) == 1.0  # both empty after normalisation: SQuAD counts a match


def test_gold_answers_are_required():
    with pytest.raises(ValueError, match="at least one answer"):
        exact_match("Bipi", [])


def test_abstention():
    assert abstained("unknown") and abstained(" Unknown. ")
    assert not abstained("unknown city") and not abstained(None) and not abstained("")


@pytest.mark.parametrize(
    "prediction, golds, expected",
    [
        ("Bipi", ["Bipi"], "correct"),
        ("the bipi", ["Kelvar", "Bipi"], "correct"),
        ("Kelvar", ["Bipi"], "incorrect"),
        ("unknown", ["Bipi"], "not_attempted"),
        (None, ["Bipi"], "incorrect"),  # no Answer line: a format failure, not an abstention
        ("", ["Bipi"], "incorrect"),
        # Unanswerable questions: abstaining is the right answer, anything else is wrong.
        ("unknown", ["unknown"], "correct"),
        ("Unknown.", ["unknown"], "correct"),
        ("Bipi", ["unknown"], "incorrect"),
        (None, ["unknown"], "incorrect"),
    ],
)
def test_grade_table(prediction, golds, expected):
    assert grade(prediction, golds) == expected


def test_score_reads_the_answer_line():
    question = {"id": "h000-q001", "type": "lookup", "answers": ["Liagathun Institute"]}
    record = score("It is Liagathun [h000-p7].\nAnswer: Liagathun Mining Company", question)
    assert record == {
        "id": "h000-q001",
        "type": "lookup",
        "prediction": "Liagathun Mining Company",
        "grade": "incorrect",
        "em": 0.0,
        "f1": pytest.approx(0.4),
    }
    assert score("I could not finish.", question)["grade"] == "incorrect"
    assert score("Nothing found.\nAnswer: unknown", question)["grade"] == "not_attempted"


def rec(qtype, grade, em=None, f1=None):
    em = float(grade == "correct") if em is None else em
    return {"type": qtype, "grade": grade, "em": em, "f1": em if f1 is None else f1}


def test_summarize_by_hand():
    records = [
        rec("lookup", "correct"),
        rec("lookup", "correct"),
        rec("lookup", "incorrect", f1=0.5),
        rec("lookup", "not_attempted"),
        rec("compose", "incorrect"),
        rec("compose", "incorrect"),
        rec("compose", "not_attempted"),
        rec("compose", "correct"),
        rec("unanswerable", "correct"),
        rec("unanswerable", "correct"),
    ]
    s = summarize(records)
    assert list(s) == ["compose", "lookup", "unanswerable", "overall"]
    lookup = s["lookup"]
    assert (lookup["n"], lookup["correct"], lookup["incorrect"], lookup["not_attempted"]) == (4, 2, 1, 1)
    assert lookup["accuracy"] == lookup["correct_share"] == 0.5
    assert lookup["incorrect_share"] == lookup["not_attempted_share"] == 0.25
    assert lookup["em"] == 0.5 and lookup["f1"] == pytest.approx(2.5 / 4)
    assert lookup["accuracy_given_attempted"] == pytest.approx(2 / 3)
    assert lookup["deferral"] == 0.5
    compose = s["compose"]
    assert compose["accuracy_given_attempted"] == pytest.approx(1 / 3)
    assert compose["deferral"] == pytest.approx(1 / 3)
    # Everything correct: no non-correct answer to defer on, so D is undefined rather than 0 or 1.
    assert s["unanswerable"]["accuracy"] == 1.0 and s["unanswerable"]["deferral"] is None
    overall = s["overall"]
    assert (overall["n"], overall["correct"], overall["incorrect"], overall["not_attempted"]) == (10, 5, 3, 2)
    assert overall["accuracy"] == 0.5
    assert overall["accuracy_given_attempted"] == pytest.approx(5 / 8)
    assert overall["deferral"] == pytest.approx(2 / 5)


def test_summarize_degenerate_cases():
    all_abstain = summarize([rec("lookup", "not_attempted")] * 3)["overall"]
    assert all_abstain["accuracy"] == 0.0 and all_abstain["accuracy_given_attempted"] is None
    assert all_abstain["deferral"] == 1.0
    empty = summarize([])
    assert list(empty) == ["overall"]
    assert empty["overall"]["n"] == 0 and empty["overall"]["accuracy"] is None
    with pytest.raises(ValueError, match=r"records\[0\].grade: 'right'"):
        summarize([rec("lookup", "right")])


def test_bootstrap_ci():
    correct = [1.0] * 30 + [0.0] * 20
    low, high = bootstrap_ci(correct)
    assert low < np.mean(correct) < high
    assert 0.3 < low and high < 0.75  # roughly 0.6 +- 2 * sqrt(0.24 / 50) = 0.6 +- 0.14
    assert bootstrap_ci(correct) == (low, high)  # same seed, same interval
    spread = np.linspace(0.0, 1.0, 37) ** 2  # continuous values: another seed shows in the interval
    assert bootstrap_ci(spread, seed=3) == bootstrap_ci(spread, seed=3) != bootstrap_ci(spread, seed=4)
    assert bootstrap_ci(correct, alpha=0.5)[1] - bootstrap_ci(correct, alpha=0.5)[0] < high - low
    assert bootstrap_ci(correct, stat=np.max) == (1.0, 1.0)  # any statistic of a sample
    assert bootstrap_ci([1.0]) == (1.0, 1.0)
    assert bootstrap_ci([0.0] * 10) == (0.0, 0.0)
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_ci([])


def _trace(question: str, results: list[str], reasoning: str) -> list[dict]:
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": "Searching."},
        {"role": "tool", "content": "\n".join(results)},
        {"role": "assistant", "content": reasoning},
    ]


SPOUSES = [
    "[p1-spouse] Pae Tobras: The spouse of Pae Tobras is Sun Lolux.",
    "[p2-works_for] Vex Tobras: Vex Tobras works for Acme &amp; Sons.",
    "[o1-hq] Acme &amp; Sons: Acme &amp; Sons is based in Kelvar.",
]


@pytest.mark.parametrize(
    "question, reasoning, answer, plain, linked",
    [
        # a quote about another person of the same last name: retrieved, so supported, but not linked
        (
            "Who is Vex Tobras married to?",
            "[p1-spouse] Pae Tobras: ...\nAnswer: Sun Lolux",
            "Sun Lolux",
            True,
            False,
        ),
        # a chain: the second passage's title is named in the first cited passage (escaped there)
        (
            "Where is the employer of Vex Tobras based?",
            "[p2-works_for] Vex Tobras: ...\n[o1-hq] Acme &amp; Sons: ...\nAnswer: Kelvar",
            "Kelvar",
            True,
            True,
        ),
        # the same second passage cited without the first: nothing names Acme & Sons
        (
            "Where is the employer of Vex Tobras based?",
            "[o1-hq] Acme: ...\nAnswer: Kelvar",
            "Kelvar",
            True,
            False,
        ),
        # retrieved but never cited: linked support counts only citations
        (
            "Where does Vex Tobras work?",
            "He works for Acme & Sons.\nAnswer: Acme & Sons",
            "Acme & Sons",
            True,
            False,
        ),
        # one unlinked citation spoils a trace whose answer a linked one holds
        (
            "Where does Vex Tobras work?",
            "[p2-works_for] Vex Tobras: ...\n[p1-spouse] Pae Tobras: ...\nAnswer: Acme & Sons",
            "Acme & Sons",
            True,
            False,
        ),
        ("Who is Vex Tobras married to?", "Nothing says.\nAnswer: unknown", "unknown", True, True),
    ],
)
def test_linked_support_counts_only_citations_that_link_to_the_question(
    question, reasoning, answer, plain, linked
):
    from cogcore.core.answers import grounded
    from cogcore.core.worlds.linked import linked_grounded

    messages = _trace(question, SPOUSES, reasoning)
    assert grounded(messages).passed is plain
    assert linked_grounded(messages).passed is linked
