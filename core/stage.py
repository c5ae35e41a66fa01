"""Is a stage's artifact up to date for this config, a run to resume, or one to refuse? One answer for all.

Each stage records what shaped its artifact (config sections, input checksums) in a JSON file beside it:
its `manifest.json`, or a checkpoint's `trainer_state.json`. `decide` compares that record with the
settings of this run. Two kinds of artifact:
- finished ones (world, index, a trained baseline), whose record is written last: a record of these
  settings means the artifact is complete and the stage can be skipped; other settings mean it is
  rebuilt;
- runs in progress (traces, training checkpoints), whose record is written first: a record of these
  settings means the run continues where it stopped; other settings are refused, since the old and new
  records would mix in one file.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from cogcore.core.io import DataError, read_json


class Decision(Enum):
    BUILD = "build"  # nothing recorded, `force`, or a finished artifact of other settings: build afresh
    UP_TO_DATE = "up to date"  # a finished artifact of these settings: skip the stage
    RESUME = "resume"  # a run of these settings was started: continue it


def decide(
    record: Path, settings: dict, *, key: str | None = None, force: bool = False, resumable: bool = False
) -> Decision:
    """What to do with the artifact `record` describes, for a run of `settings`.

    `key`: the section of `record` that holds the settings (e.g. "config"); None: they are top-level keys
    among the record's other fields, and only `settings`' own keys are compared.
    `force`: build afresh whatever is recorded.
    `resumable`: the record marks a run in progress (RESUME, or DataError for other settings) rather than
    a finished artifact (UP_TO_DATE, or BUILD for other settings)."""
    if force or not record.exists():
        return Decision.BUILD
    fields = read_json(record)
    recorded = fields[key] if key is not None else {name: fields.get(name) for name in settings}
    changed = sorted(
        name for name in recorded.keys() | settings.keys() if recorded.get(name) != settings.get(name)
    )
    if not changed:
        return Decision.RESUME if resumable else Decision.UP_TO_DATE
    if not resumable:
        return Decision.BUILD
    raise DataError(
        f"{record}: this run was started with other settings ({', '.join(changed)}); resume with the "
        "same settings, or write to another run_dir"
    )
