#!/bin/bash
# Index only the worlds of one split of a run (its questions/<split>.jsonl's worlds) into
# <run>/split_index/<split>/index, for `cogcore eval eval.index=...`: an eval searches one world's
# collection at a time, and each collection is indexed on its own (FAISS and BM25 per world), so its
# results are those of the whole index, at a fraction of the embedding time (8 worlds, not 128).
#
#   bash benchmarks/split_index.sh RUN SPLIT      # prints the index path
set -euo pipefail
run=$1 split=$2
sub=$run/split_index/$split
mkdir -p "$sub/world"
.venv/bin/python - "$run" "$split" "$sub/world/corpus.jsonl" <<'PY'
import json
import sys

run, split, out = sys.argv[1:4]
worlds = {json.loads(line)["world"] for line in open(f"{run}/world/questions/{split}.jsonl")}
lines = [line for line in open(f"{run}/world/corpus.jsonl") if json.loads(line)["world"] in worlds]
with open(out + ".tmp", "w") as f:
    f.writelines(lines)
PY
cmp -s "$sub/world/corpus.jsonl.tmp" "$sub/world/corpus.jsonl" 2>/dev/null || mv "$sub/world/corpus.jsonl.tmp" "$sub/world/corpus.jsonl"
rm -f "$sub/world/corpus.jsonl.tmp"
.venv/bin/cogcore index run_dir="$sub" >&2
echo "$sub/index"
