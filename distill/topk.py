"""Token-level distillation from disk: the teacher's top-k log-probs, written beside the traces by
`teacher=hf teacher.topk=K` (distill/teachers/hf.py: `topk/index.jsonl` and safetensors shards), laid out
along the trainer's packed rows so that the teacher need not sit in memory while the student trains
(`distill=kd_topk`, or `distill.kd.topk=<folder>`).

Shards are opened lazily (safetensors memory maps) and each step reads only the rows of the traces in
its batch. Every trace is checked once, at start, against the ids the student's tokenizer gives it: a
top-k list is only meaningful over the same token ids, so a teacher with another tokenizer, or traces
edited after scoring, stop the job before training with the trace and the shard named.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from cogcore.core.io import DataError, read_jsonl
from cogcore.distill.losses import SHARD_KEYS
from cogcore.distill.packing import PackedRows


class TopkTeacher:
    """The top-k teacher of the first `n_traces` examples packed into `rows` (the traces of
    `pack_traces`, in the order given to it; examples after them, the copy drills, have no teacher)."""

    def __init__(self, folder: Path, traces: list[dict], rows: PackedRows):
        index_path = folder / "index.jsonl"
        if not index_path.exists():
            raise DataError(
                f"{index_path}: no teacher top-k here; write it with `cogcore traces teacher=hf "
                "teacher.topk=K`, or set distill.kd.topk to the folder that holds index.jsonl"
            )
        index = {r["id"]: r for r in read_jsonl(index_path)}
        missing = [t["id"] for t in traces if t["id"] not in index]
        if missing:
            raise DataError(
                f"{index_path}: no top-k for {len(missing)} of {len(traces)} traces (first: {missing[0]}); "
                "re-run `cogcore traces` with teacher.topk to score them"
            )
        self.folder, self.records = folder, [index[t["id"]] for t in traces]
        self._files: dict[str, object] = {}
        self.k = self._open(self.records[0]["shard"]).get_slice("topk_ids").get_shape()[-1]
        self._check(rows)

    def _open(self, shard: str):
        if shard not in self._files:
            path = self.folder / shard
            if not path.exists():
                raise DataError(
                    f"{path}: named in {self.folder / 'index.jsonl'} but missing; re-run the scoring"
                )
            handle = safe_open(str(path), framework="pt")
            if absent := [key for key in (*SHARD_KEYS, "input_ids") if key not in handle.keys()]:
                raise DataError(f"{path}: not a top-k shard, missing {', '.join(absent)}")
            self._files[shard] = handle
        return self._files[shard]

    def _traces_in(self, rows: PackedRows, r: int):
        for example, start in rows.placements[r]:
            if example < len(self.records):
                yield self.records[example], start

    def _check(self, rows: PackedRows) -> None:
        for r in range(len(rows)):
            for record, start in self._traces_in(rows, r):
                n = record["tokens"]
                scored = self._open(record["shard"]).get_slice("input_ids")[
                    record["row"] : record["row"] + 1, :n
                ]
                if not torch.equal(scored[0], rows.input_ids[r, start : start + n]):
                    raise DataError(
                        f"{self.folder / record['shard']}: trace {record['id']} was scored with other token "
                        "ids than the student's tokenizer gives it; top-k distillation needs the teacher's "
                        "tokenizer (student=hf path=<a model sharing it>) and the traces as scored"
                    )

    def batch(self, rows: PackedRows, indices: list[int]) -> dict[str, torch.Tensor]:
        """For rows `indices`: `topk_ids` and `topk_logprobs` [b, seq_len, K], where position t holds the
        teacher's top-k for the token at t + 1 (the alignment of logits[:, t]), and `known` [b, seq_len],
        True where it does (every position of a trace but its last)."""
        b, length = len(indices), rows.input_ids.shape[1]
        ids = torch.zeros((b, length, self.k), dtype=torch.long)
        logprobs = torch.zeros((b, length, self.k), dtype=torch.float32)
        known = torch.zeros((b, length), dtype=torch.bool)
        for i, r in enumerate(indices):
            for record, start in self._traces_in(rows, r):
                shard, row, n = self._open(record["shard"]), record["row"], record["tokens"] - 1
                ids[i, start : start + n] = shard.get_slice("topk_ids")[row : row + 1, :n][0]
                logprobs[i, start : start + n] = shard.get_slice("topk_logprobs")[row : row + 1, :n][
                    0
                ].float()
                known[i, start : start + n] = True
        return {"topk_ids": ids, "topk_logprobs": logprobs, "known": known}
