import json

import pytest

from cogcore.core.io import DataError, JsonlAppender, atomic_dir, read_jsonl


def test_appender_cuts_a_torn_tail_and_refuses_a_second_write(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(json.dumps({"id": "a"}) + "\n" + '{"id": "b", "tr')  # killed mid-write
    with JsonlAppender(path) as out:
        assert out.ids == {"a"}
        out.write({"id": "b"})
        with pytest.raises(ValueError, match="already written"):
            out.write({"id": "a"})
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]


def test_atomic_dir_keeps_the_old_artifact_when_the_build_fails(tmp_path):
    target = tmp_path / "index"
    with atomic_dir(target) as tmp:
        (tmp / "manifest.json").write_text("{}")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.bin").write_text("x")
        raise RuntimeError("crash mid-build")
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["index"]


def test_bad_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": 1}\n\n[1, 2]\n')
    with pytest.raises(DataError, match=r"q\.jsonl:3: expected a JSON object"):
        read_jsonl(path)
    path.write_text('{"id": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"q\.jsonl:2: not valid JSON"):
        read_jsonl(path)
