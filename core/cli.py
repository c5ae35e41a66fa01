"""`cogcore <job> [hydra overrides]`: one console command, one Hydra app per job.

Each job's body is a plain function of its composed config (tests call it directly); this module only
finds the function, lazily so that `core` imports no later stage, and hands it to `hydra.main` with the
job's own primary config from `cogcore/conf/`.
"""

from __future__ import annotations

import importlib
import sys

# job -> (module, function, one line for `cogcore --help`)
JOBS = {
    "world": ("cogcore.core.worlds.world", "world", "generate synthetic worlds: corpus and questions"),
    "index": ("cogcore.retrieval.index", "index", "build the dense + BM25 index of a world or a folder"),
    "traces": ("cogcore.distill.traces", "traces", "write teacher traces for the questions"),
    "distill": ("cogcore.distill.train", "distill", "train the student on the traces (accelerate)"),
    "eval": ("cogcore.evals.run", "evaluate", "score every system on K, R, T; write the leaderboard"),
    "pipeline": ("cogcore.core.pipeline", "pipeline", "run every stage in order: the demo"),
    "chat": ("cogcore.core.terminal", "chat", "talk to the student in the terminal; it searches the index"),
    "serve": ("cogcore.core.server", "serve", "serve a checkpoint behind an OpenAI-compatible API"),
    "inspect": ("cogcore.core.show", "inspect", "what cogcore makes of a checkpoint: size, tool format"),
}

# Generation settings that moved into the `generation` group (conf/generation/): per job, each old key
# and its new one. An override of an old key fails naming the new one; Hydra alone would only say that
# the key is not in the config.
_EVAL = ("k", "max_new_tokens", "quotes", "retries", "retry_temperature", "linked", "steps")
_TEACHER_HF = ("k", "max_tool_calls", "max_new_tokens", "quotes", "temperature", "top_k", "top_p", "seed")
_ASSISTANT = ("k", "max_tool_calls", "quotes", "temperature", "top_p", "seed")
MOVED = {
    "eval": {f"eval.{name}": f"eval.generation.{name}" for name in _EVAL},
    "teacher=hf": {f"teacher.{name}": f"teacher.generation.{name}" for name in _TEACHER_HF},
    "assistant": {name: f"generation.{name}" for name in _ASSISTANT},
}
MOVED_IN = {
    "eval": ("eval",),
    "pipeline": ("eval", "teacher=hf"),
    "traces": ("teacher=hf",),
    "chat": ("assistant",),
    "serve": ("assistant",),
}


def moved_key(job: str, overrides: list[str]) -> str | None:
    """The error for the first of `overrides` that sets a generation setting by its old key, or None.
    The HF teacher's old keys count only where `teacher=hf` is among them (the other teachers keep
    `teacher.k` and `teacher.max_tool_calls`)."""
    given = [arg.lstrip("+~") for arg in overrides]
    groups = [g for g in MOVED_IN.get(job, ()) if g != "teacher=hf" or "teacher=hf" in given]
    moved = {old: new for group in groups for old, new in MOVED[group].items()}
    for arg in given:
        key = arg.split("=", 1)[0]
        if key in moved:
            return f"cogcore {job}: {key} moved to {moved[key]} (the generation group, conf/generation/)"
    return None


USAGE = """usage: cogcore <job> [key=value ...] [-m] [--help]

Jobs (each a Hydra app with its own config in cogcore/conf/<job>.yaml):
{jobs}

Examples:
  cogcore world world=tiny run_dir=runs/tiny
  cogcore index docs=~/notes run_dir=runs/notes
  cogcore traces retriever=bm25
  cogcore distill student=tiny distill.epochs=1
  cogcore world -m world.seed=1,2 'run_dir=runs/seed${{world.seed}}'
  cogcore <job> --help       show the job's config, groups and Hydra options
"""


def usage() -> str:
    width = max(map(len, JOBS))
    jobs = "\n".join(f"  {name:<{width}}  {line}" for name, (_, _, line) in JOBS.items())
    return USAGE.format(jobs=jobs)


def job_function(name: str):
    module, function, _ = JOBS[name]
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in JOBS:
        print(f"cogcore: unknown job {name!r}; choose one of: {', '.join(JOBS)}\n", file=sys.stderr)
        print(usage(), file=sys.stderr)
        sys.exit(2)

    moved = moved_key(name, rest)
    if moved:
        print(moved, file=sys.stderr)
        sys.exit(2)

    import hydra

    function = job_function(name)
    sys.argv = [f"cogcore {name}", *rest]
    # Hydra's wrapper is built per job so that each one keeps its own primary config.
    hydra.main(version_base=None, config_path="pkg://cogcore.conf", config_name=name)(function)()


if __name__ == "__main__":
    main()
