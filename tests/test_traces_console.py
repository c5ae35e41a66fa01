"""What an openai-teacher traces run prints: its progress without a log line per HTTP request, and at the
end every question the endpoint never answered, in a file it names."""

from __future__ import annotations

import logging

import pytest
from fault_server import FaultServer, Plan
from test_teachers import KEY, MATRIX, docs_index, openai_cfg, run_dir, write_questions  # noqa: F401

from cogcore.distill.teachers.openai import EndpointError
from cogcore.distill.traces import traces


def test_unanswered_questions_are_all_named_and_requests_are_not_logged(run_dir, caplog):  # noqa: F811
    down = Plan(MATRIX["ok"][2].turns, ["500"] * 4)
    rows = {
        "fine": MATRIX["ok"],
        "down1": ("Who is down one?", ["x"], down),
        "down2": ("Down two?", ["x"], down),
    }
    questions = write_questions(run_dir, rows)
    unanswered = run_dir / "traces" / "unanswered.txt"
    with FaultServer({q: plan for q, _, plan, *_ in rows.values()}, api_key=KEY) as server:
        with (
            caplog.at_level(logging.INFO),
            pytest.raises(EndpointError, match=f"2 questions .* in {unanswered} "),
        ):
            traces(openai_cfg(run_dir, server, questions))
        lines = unanswered.read_text().splitlines()
        assert sorted(line.split(":")[0] for line in lines) == ["down1", "down2"]
        assert all("HTTP 500 on each of 4 tries" in line for line in lines)
        assert not [r for r in caplog.records if r.name.startswith("httpx")]  # as under Hydra's INFO logging

        traces(openai_cfg(run_dir, server, questions))  # the endpoint recovered: nothing left unanswered
        assert not unanswered.exists()
