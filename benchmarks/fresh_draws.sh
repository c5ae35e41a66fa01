#!/bin/bash
# A trained student on worlds it never saw, one try (T@1, R@1) and verified (T, R): the validation split,
# three fresh held-out draws (world.heldout_seed=1,2,3) and one world shape the recipe never saw (twice
# the people per world, every compose chain four hops: one longer than training's longest). The training
# worlds are the run's own, so the student is re-tested, not retrained. Needs a trained run (RUN, default
# runs/demo: its student and traces); writes OUT (default runs/draws)/<name>/ and the table of
# benchmarks/fresh_draws.py. Arguments are eval overrides for every draw (eval.per_type=24: a smaller eval).
#
#   flock /work/heavy.lock bash benchmarks/fresh_draws.sh eval.per_type=24
set -euo pipefail
run=${RUN:-runs/demo}
out=${OUT:-runs/draws}
draw() {  # name split [world overrides...]
  local name=$1 split=$2; shift 2
  local dir=$out/$name
  mkdir -p "$dir"
  for part in student traces; do ln -sfn "$(realpath "$run/$part")" "$dir/$part"; done
  .venv/bin/cogcore world run_dir="$dir" "$@"
  local index
  index=$(bash benchmarks/split_index.sh "$dir" "$split")
  echo "== $name ($split) $(date -u +%H:%M:%S)"
  .venv/bin/cogcore eval run_dir="$dir" eval.split="$split" eval.index="$index" 'eval.systems=[student]' \
    'eval.suites=[R,T]' "${EVAL[@]}"
}
EVAL=("$@")
draw validation validation
for seed in 1 2 3; do draw "fresh$seed" heldout world.heldout_seed=$seed; done
draw shape heldout world.heldout_seed=4 world.heldout_shape.people=20 world.heldout_shape.compose_hops=4
.venv/bin/python benchmarks/fresh_draws.py "$out"
