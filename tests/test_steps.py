"""core/worlds/steps.py: the written-out steps of a trace, and the check that finds where an answer's steps go
wrong against its own quotes."""

from __future__ import annotations

import re

import pytest

from cogcore.core.tools import render_results, search_call
from cogcore.core.trace import read_traces
from cogcore.core.worlds.steps import ORDER_MEANS, decision, fault, subtraction

ANA = {"id": "w0-ana-founded", "title": "Ana Works", "text": "Ana Works was founded in 1905."}
BO = {"id": "w0-bo-founded", "title": "Bo Mills", "text": "Bo Mills was founded in 1920."}
CY = {"id": "w0-cy-founded", "title": "Cy Labs", "text": "Cy Labs was founded in 1881."}


def line(p: dict) -> str:
    return render_results([p])


def conversation(first: str, final: str, results=((ANA, CY), (BO,))) -> list[dict]:
    """A compare-or-subtract trace as the oracle writes one: a search, a turn that quotes a line of its
    results and searches again, and a final turn."""
    messages = [{"role": "user", "content": "Which was founded earlier, Ana Works or Bo Mills?"}]
    for n, (content, passages) in enumerate(
        zip(("I need both founding years.", first), results, strict=True)
    ):
        call = search_call(f"call_{n}", "founding year", 5)
        messages.append({"role": "assistant", "content": content, "tool_calls": [call]})
        messages.append(
            {
                "role": "tool",
                "tool_call_id": f"call_{n}",
                "name": "search",
                "content": render_results(passages),
            }
        )
    messages.append({"role": "assistant", "content": final})
    return messages


FIRST = f"{line(ANA)} So Ana Works was founded in 1905."
SECOND = f"{line(BO)} So Bo Mills was founded in 1920."
COMPARE = f"{SECOND} {decision(1905, 1920, 'Ana Works', 'Bo Mills', 'founded', 'min')}\nAnswer: Ana Works"
SUBTRACT = f"{SECOND} {subtraction(1920, 1905)}\nAnswer: 15"


@pytest.mark.parametrize("final", [COMPARE, SUBTRACT])
def test_right_steps_have_no_fault(final):
    assert fault(conversation(FIRST, final)) is None


def test_oracle_traces_have_no_fault(small_run):
    traces = list(read_traces(small_run / "traces" / "traces.jsonl"))
    assert {t["metadata"]["type"] for t in traces} >= {"compare", "arithmetic", "lookup", "compose"}
    assert [t["id"] for t in traces if fault(t["messages"]) is not None] == []
    checked = 0
    for t in traces:  # and the check reads their steps: an answer line they do not give is a fault
        if t["metadata"]["type"] in ("compare", "arithmetic") and t["metadata"]["search"] != "unavailable":
            messages = [
                *t["messages"][:-1],
                {"role": "assistant", "content": t["messages"][-1]["content"] + "0"},
            ]
            checked += fault(messages) is not None
    assert checked >= 4


def test_a_difference_in_one_go_is_found_where_its_columns_should_begin():
    final = f"{SECOND} 1920 - 1905 = 25.\nAnswer: 25"
    messages = conversation(FIRST, final)
    found = fault(messages)
    assert found is not None and found.message == len(messages) - 1
    assert "differ from those 1905 and 1920" in found.why
    assert final[found.offset :].startswith(" = 25")  # "1920 - 1905" agrees, ", column by column" does not


def test_a_misread_column_is_found_at_the_digit_written():
    right = subtraction(1920, 1905)
    ones = right.index("0 - 5, borrow: 10 - 5 = 5") + len("0 - 5, borrow: 10 - 5 = ")
    wrong = right[:ones] + "6" + right[ones + 1 :]
    messages = conversation(FIRST, f"{SECOND} {wrong}\nAnswer: 15")
    found = fault(messages)
    assert (found.message, found.offset) == (len(messages) - 1, len(SECOND) + 1 + ones)


def test_a_compare_that_names_the_loser_is_found_at_the_name():
    right = decision(1905, 1920, "Ana Works", "Bo Mills", "founded", "min")
    named = right.rindex("Ana Works")
    messages = conversation(FIRST, f"{SECOND} {right[:named]}Bo Mills.\nAnswer: Bo Mills")
    found = fault(messages)
    # "0 Ana Works" is right, "0 Bo Mills" wrong from its first letter; no other way round fits better
    assert found.offset == len(SECOND) + 1 + named


@pytest.mark.parametrize(
    "restated,wrong",
    [("So Ana Works was founded in 1915.", "1915"), ("So Ana Lab was founded in 1905.", "Lab")],
)
def test_a_restatement_must_say_what_its_line_says(restated, wrong):
    first = f"{line(ANA)} {restated}"
    found = fault(conversation(first, COMPARE))
    assert found is not None and found.message == 3  # the turn that restated it
    assert f"restates {wrong!r}" in found.why
    agree = 2 if wrong == "1915" else 0  # "19" is the start of 1905; "Lab" shares no start with a word
    assert found.offset == first.index(wrong) + agree


SPOUSE = {
    "id": "w0-kro-spouse",
    "title": "Kro Kugus",
    "text": "Kro Kugus and Kro Braesex are husband and wife.",
}


def lookup(final: str) -> list[dict]:
    call = search_call("call_0", "Kro Kugus spouse", 3)
    return [
        {"role": "user", "content": "Who is Kro Kugus married to?"},
        {"role": "assistant", "content": "I need the spouse of Kro Kugus.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "name": "search", "content": render_results([SPOUSE, BO])},
        {"role": "assistant", "content": final},
    ]


def test_a_restatement_names_no_name_more_often_than_its_line():
    final = f"{line(SPOUSE)} So Kro Kugus is married to Kro Kugus.\nAnswer: Kro Kugus"
    found = fault(lookup(final))
    assert found.why == "restates 'Kugus' more often than the line it quotes names it"
    assert found.offset == final.rindex("Kugus.")  # the second Kugus, where Braesex was due


def test_an_answer_right_after_a_fact_is_what_the_fact_ends_with():
    fact = f"{line(SPOUSE)} So Kro Kugus is married to Kro Braesex."
    assert fault(lookup(f"{fact}\nAnswer: Kro Braesex")) is None
    final = f"{fact}\nAnswer: Kro Kugus"
    found = fault(lookup(final))
    assert found.offset == final.rindex("Kugus") and "ends with 'Kro Braesex'" in found.why
    assert fault(lookup(f"{fact}\nAnswer: unknown")).offset == final.index("Answer: ") + len("Answer: ")


def test_a_fact_quoted_twice_is_found_at_its_second_quote():
    final = f"{FIRST} {decision(1905, 1920, 'Ana Works', 'Bo Mills', 'founded', 'min')}\nAnswer: Ana Works"
    messages = conversation(FIRST, final, results=((ANA, CY), (ANA, BO)))
    found = fault(messages)
    assert found.message == len(messages) - 1 and found.why == f"quotes {ANA['id']} a second time"
    assert final[found.offset] == "]"


def test_steps_need_two_facts():
    final = f"{SECOND} 1920 - 1905 = 15.\nAnswer: 15"
    messages = conversation("Now the other.", final)  # the first turn quoted nothing
    found = fault(messages)
    assert found.why == "steps without two facts to take them from"
    assert found.offset == len(SECOND) + 1  # where the steps begin


def test_quotes_of_lines_not_returned_and_answers_without_steps_are_not_checked():
    made_up = {**ANA, "id": "w0-zz-founded"}  # never returned by a search: no quote, so no fact to use
    found = fault(conversation(f"{line(made_up)} So Ana Works was founded in 1999.", COMPARE))
    assert found.why == "steps without two facts to take them from"
    lookup = f"{SECOND}\nAnswer: 1920"  # a lookup writes no steps after its fact
    assert fault(conversation(FIRST, lookup)) is None
    assert fault(conversation("", "The search found nothing.\nAnswer: unknown")) is None


@pytest.mark.parametrize("big,small", [(1916, 1832), (45210, 3999), (7, 7), (10000, 1), (99999, 12345)])
def test_subtraction_is_written_out_column_by_column(big, small):
    text = subtraction(big, small)
    columns = text.split("column by column: ")[1].split(". Digits")[0].split("; ")
    assert len(columns) == len(str(big))
    for step in columns:  # every written step is true arithmetic, and a borrowed ten is paid back
        facts = re.split(r", (?:borrow: )?", step.split(": ", 1)[1])
        for expression, result in (f.split(" = ") for f in facts if " = " in f):
            assert eval(expression) == int(result)  # noqa: S307 (digits and + - only)
        lower = int(facts[-1].split(" - ")[1].split(" = ")[0])
        assert 0 <= int(facts[-1].split(" = ")[1]) <= 9 and lower <= 10
    digits = text.split("Digits from the left: ")[1].split(",")[0].replace(" ", "")
    assert int(digits) == big - small and digits == str(big - small).rjust(len(str(big)), "0")
    assert text.endswith(f"= {big - small}.")


@pytest.mark.parametrize(
    "x,y,pick,winner,digit",
    [
        (1905, 1920, "min", "Ana", "0"),
        (1905, 1920, "max", "Bo", "2"),
        (812, 4101, "max", "Bo", "4"),
        (812, 4101, "min", "Ana", "3"),
    ],
)
def test_compare_decision_writes_the_name_right_after_its_deciding_digit(x, y, pick, winner, digit):
    text = decision(x, y, "Ana", "Bo", "founded", pick)
    step, end = text.split(f" {ORDER_MEANS['founded', pick]}, so ")
    # each deciding digit (or digit count) is followed by its own name, and the chosen one by the winner
    pairs = re.findall(r"(\d) (Ana|Bo)", step)
    assert [name for _, name in pairs] == ["Ana", "Bo"] and pairs[0][0] != pairs[1][0]
    assert end.endswith(f": {digit} {winner}.") and (digit, winner) in pairs
    if len(str(x)) == len(str(y)):  # the digit pairs from the left, each marked, up to the first that differs
        scan = re.search(r"from the left: (.*): \d Ana vs", step).group(1).split(", ")
        p, q = str(x), str(y)
        read = [[u, "and", v] for u, v in zip(p, q, strict=True)][: len(scan)]
        assert [s.split()[:3] for s in scan] == read
        assert [s.split()[-1] for s in scan] == ["same"] * (len(scan) - 1) + ["differ"]
        assert p[: len(scan) - 1] == q[: len(scan) - 1] and p[len(scan) - 1] != q[len(scan) - 1]
