import copy
import json

import pytest

from cogcore.core.io import DataError
from cogcore.core.tools import search_call
from cogcore.core.trace import check_trace, read_traces, trace_errors

GOOD = {
    "id": "w-q0",
    "messages": [
        {"role": "system", "content": "Use search."},
        {"role": "user", "content": "Where was Ana born?"},
        {
            "role": "assistant",
            "content": "I need her birthplace.",
            "tool_calls": [search_call("c0", "Ana born", 3)],
        },
        {
            "role": "tool",
            "tool_call_id": "c0",
            "name": "search",
            "content": "[p1] Ana: Ana was born in Kelvar.",
        },
        {"role": "assistant", "content": "Ana was born in Kelvar [p1].\nAnswer: Kelvar"},
    ],
    "metadata": {
        "question": "Where was Ana born?",
        "type": "lookup",
        "answers": ["Kelvar"],
        "teacher": "oracle",
    },
}


def broken(change):
    trace = copy.deepcopy(GOOD)
    change(trace)
    return trace_errors(trace)


def test_valid_trace_passes():
    assert trace_errors(GOOD) == []


def test_errors_name_the_field():
    def bad_args(t):
        t["messages"][2]["tool_calls"][0]["function"]["arguments"] = "{oops"

    (error,) = broken(bad_args)
    assert error.startswith("messages[2].tool_calls[0].function: search arguments are not valid JSON")
    assert broken(lambda t: t["metadata"].pop("answers")) == ["metadata: 'answers' is a required property"]
    assert broken(lambda t: t["messages"][1].update(role="robot"))[0].startswith("messages[1].role:")
    errors = broken(lambda t: t["messages"][3].update(tool_call_id="c9"))
    assert errors == ["messages[3].tool_call_id: expected 'c0', got 'c9'"]
    errors = broken(lambda t: t["messages"][4].update(content="It is Kelvar."))
    assert errors == ["messages[4].content: the final turn must end with a line 'Answer: <text>'"]
    errors = broken(lambda t: t["messages"].pop(3))
    assert errors[0] == "messages[3].role: tool call 'c0' is not answered before this turn"
    errors = broken(lambda t: t["messages"].pop())
    assert errors == ["messages[3]: the last turn must be the assistant's final answer"]


def test_read_traces_names_file_and_line(tmp_path):
    bad = copy.deepcopy(GOOD)
    del bad["messages"][4]["content"]
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"traces\.jsonl:2: messages\[4\]: 'content' is a required property"):
        list(read_traces(path))
    assert check_trace(GOOD) is GOOD
