#!/bin/bash
# How fast the copy warm-up learns to copy: runs the real `cogcore distill` (its schedule and data) and
# stops it at step 1,200 or when the warm-up ends (`distill.copy_drills.warmup_steps`), then prints the loss
# on the drills' repeats at steps 600, 900 and 1,200 of the warm-up (chance is ln(vocab) = 6.9; a student
# that copies scores about 0.05) and the first logged step below 3. Needs a run whose world, index and
# traces exist (RUN, default runs/demo). The default warm-up is 700 steps; BENCHMARKS.md's table ran 1,200.
#
#   bash benchmarks/copy_warmup.sh NAME SEED [hydra overrides...]
#   bash benchmarks/copy_warmup.sh short 2 distill.copy_drills.warmup_steps=1200 distill.copy_drills.max_len=24
set -euo pipefail
name=$1; seed=$2; shift 2
run=${RUN:-runs/demo}
out=runs/warm/$name-s$seed
rm -rf "$out"; mkdir -p "$out"
for part in world index traces; do ln -sfn "$(realpath "$run/$part")" "$out/$part"; done
.venv/bin/cogcore distill run_dir="$out" distill.seed="$seed" "$@" > "$out.log" 2>&1 &
pid=$!
while sleep 3; do
  if grep -qE '"step": 1200,|"phase": "traces"' "$out/student/metrics.jsonl" 2>/dev/null; then
    kill "$pid"; break
  fi
  kill -0 "$pid" 2>/dev/null || break
done
wait "$pid" 2>/dev/null || true
.venv/bin/python - "$out" <<'PY'
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1] + "/student/metrics.jsonl")]
rows = [r for r in rows if r.get("phase") == "copy" and "loss" in r]  # the warm-up's own steps
at = {r["step"]: r["loss"] for r in rows}
first = next((r["step"] for r in rows if r["loss"] < 3.0), None)
print(sys.argv[1], " ".join(f"loss@{s} {at[s]:.2f}" for s in (600, 900, 1200) if s in at), "first<3:", first)
PY
