#!/bin/bash
# The 100k and 1M runs of benchmarks/scale.py, in order; each step's JSON and /usr/bin/time -v lines go to
# runs/scale/log. Run under the heavy-job lock: flock /work/heavy.lock bash benchmarks/scale.sh
set -u
# One thread per library: on a shared, oversubscribed machine two spinning OpenMP threads made a single
# query's encoding 1.3 s instead of 28 ms (measured 2026-12-06, load average 12-16 on 2 cores).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
S=${S:-runs/scale}
PY=${PY:-.venv/bin/python}
mkdir -p $S
log() { echo "== $(date -u +%H:%M:%S) $*" >> $S/log; }
timed() { /usr/bin/time -v "$@" 2> >(grep -E "Maximum resident|Elapsed|Error|error" >> $S/log) | grep -v "^Loading" >> $S/log; }
log start; lscpu | grep -E "Model name|^CPU\(s\)" >> $S/log
[ -f $S/c100k.jsonl ] || timed $PY benchmarks/scale.py corpus --n 100000 --out $S/c100k.jsonl
[ -f $S/real.npy ] || { log encoder; timed $PY benchmarks/scale.py encoder --corpus $S/c100k.jsonl --n 1024 --out $S/real.npy; }
for k in flat hnsw ivf_pq; do
  log build 100k $k; timed $PY benchmarks/scale.py build --corpus $S/c100k.jsonl --kind $k --run-dir $S/100k-$k --vectors $S/real.npy --set retriever.dense.nlist=1024
done
log search 100k
timed $PY benchmarks/scale.py search --corpus $S/c100k.jsonl --flat $S/100k-flat --approx $S/100k-hnsw $S/100k-ivf_pq --queries 128 --out $S/search100k.json
[ -f $S/c1m.jsonl ] || { log corpus 1M; timed $PY benchmarks/scale.py corpus --n 1000000 --out $S/c1m.jsonl; }
log build 1M ivf_pq
timed $PY benchmarks/scale.py build --corpus $S/c1m.jsonl --kind ivf_pq --run-dir $S/1m-ivf_pq --vectors $S/real.npy --set retriever.dense.nlist=2048
log done
