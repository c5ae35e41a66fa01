"""The stage helper: a stage is skipped when its artifact is up to date, rebuilt on `force` or other
settings, and a run in progress resumes, or is refused with other settings."""

import pytest
from conftest import make_cfg

from cogcore.core.io import DataError, atomic_write_json
from cogcore.core.stage import Decision, decide

SETTINGS = {"teacher": {"k": 3}, "corpus_sha256": "abc"}


def test_a_finished_artifact_is_up_to_date_until_force_or_other_settings(tmp_path):
    record = tmp_path / "manifest.json"
    assert decide(record, SETTINGS, key="config") is Decision.BUILD  # nothing there yet
    atomic_write_json(record, {"config": SETTINGS, "passages": 12})
    assert decide(record, SETTINGS, key="config") is Decision.UP_TO_DATE
    assert decide(record, SETTINGS, key="config", force=True) is Decision.BUILD
    assert decide(record, {**SETTINGS, "teacher": {"k": 5}}, key="config") is Decision.BUILD
    assert decide(record, {**SETTINGS, "extra": 1}, key="config") is Decision.BUILD


def test_settings_among_a_records_top_level_fields(tmp_path):
    record = tmp_path / "manifest.json"
    atomic_write_json(record, {**SETTINGS, "dim": 384, "count": 232})  # fields no run sets are not compared
    assert decide(record, SETTINGS) is Decision.UP_TO_DATE
    assert decide(record, {**SETTINGS, "corpus_sha256": "def"}) is Decision.BUILD
    assert decide(record, {**SETTINGS, "format": 2}) is Decision.BUILD  # a field the record lacks


def test_a_run_in_progress_resumes_or_is_refused_with_other_settings(tmp_path):
    record = tmp_path / "manifest.json"
    assert decide(record, SETTINGS, key="settings", resumable=True) is Decision.BUILD
    atomic_write_json(record, {"settings": SETTINGS, "complete": False})
    assert decide(record, SETTINGS, key="settings", resumable=True) is Decision.RESUME
    other = {"teacher": {"k": 5}, "corpus_sha256": "abc", "split": "all"}
    with pytest.raises(DataError) as refused:
        decide(record, other, key="settings", resumable=True)
    message = str(refused.value)
    assert message.startswith(f"{record}: ") and "other settings (split, teacher)" in message
    assert "another run_dir" in message


def test_world_stage_skips_rebuilds_on_force_and_on_another_config(tmp_path, capsys):
    from cogcore.core.worlds.world import world

    lines = []
    for overrides in ((), (), ("force=true",), ("world.seed=1",), ("world.seed=1",)):
        world(make_cfg("world", tmp_path, "world=tiny", *overrides))
        lines.append(capsys.readouterr().out.strip())
    out = tmp_path / "world"
    assert lines == [
        f"world: wrote {out}",
        f"world: {out} is up to date",
        f"world: wrote {out}",
        f"world: wrote {out}",
        f"world: {out} is up to date",
    ]


def test_index_stage_skips_rebuilds_on_force_and_on_other_dense_settings(tmp_path, capsys):
    from cogcore.retrieval.index import index

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "garden.md").write_text("# Garden\n\nThe tomatoes were planted on May 3.")
    runs = ((), (), ("force=true",), ("retriever.dense.kind=hnsw",), ("retriever.dense.kind=hnsw",))
    skipped = []
    for overrides in runs:
        index(make_cfg("index", tmp_path, f"docs={docs}", *overrides))
        skipped.append("is up to date" in capsys.readouterr().out)
    assert skipped == [False, True, False, False, True]
