"""`cogcore <job> [hydra overrides]`: one console command, one Hydra app per job.

Each job's body is a plain function of its composed config (tests call it directly); this module only
finds the function, lazily so that `core` imports no later stage, and hands it to `hydra.main` with the
job's own primary config from `cogcore/conf/`.
"""

from __future__ import annotations

import difflib
import importlib
import sys

from omegaconf import OmegaConf

# job -> (module, function, one line for `cogcore --help`)
JOBS = {
    "world": ("cogcore.core.worlds.world", "world", "generate synthetic worlds: corpus and questions"),
    "index": ("cogcore.retrieval.index", "index", "build the dense + BM25 index of a world or a folder"),
    "search": ("cogcore.retrieval.search", "search", "print an index's ranked passages for query=..."),
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


def unknown_key(job: str, overrides: list[str]) -> str | None:
    """The error for an override of a key the job's config does not have, naming the closest real key
    (Hydra alone suggests appending it with `+`, which invites the typo in); None when the overrides
    compose, or fail for another reason, which Hydra then reports."""
    from hydra import compose, initialize_config_module
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    with initialize_config_module("cogcore.conf", version_base=None):
        try:
            compose(config_name=job, overrides=overrides)
            return None
        except ConfigCompositionException as e:
            if not isinstance(e.__cause__, ConfigAttributeError | ConfigKeyError):
                return None
            missing = e.__cause__.full_key  # the key itself, or the first part of it that is missing
            key = next(
                k for k in (arg.split("=", 1)[0] for arg in overrides) if f"{k}.".startswith(f"{missing}.")
            )
            rest = [arg for arg in overrides if arg.split("=", 1)[0] != key]
            try:
                cfg = compose(config_name=job, overrides=rest)
            except ConfigCompositionException:
                return None
    keys = _dotted(OmegaConf.to_container(cfg, resolve=False))
    # close as a whole and in its last part (a shared `generation.` makes any two of its keys look alike)
    leaf = key.rpartition(".")[2]
    close = [
        k
        for k in difflib.get_close_matches(key, keys, n=5, cutoff=0.6)
        if difflib.SequenceMatcher(None, leaf, k.rpartition(".")[2]).ratio() >= 0.6
    ]
    where = key.rpartition(".")[0]
    siblings = ", ".join(k for k in keys if k.rpartition(".")[0] == where)
    hint = f"did you mean {close[0]}?" if close else f"the keys of {where or 'the config'} are: {siblings}"
    return f"cogcore {job}: {key} is not a key of its config; {hint} (`cogcore {job} --cfg job` shows all)"


def _dotted(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        keys.append(f"{prefix}{name}")
        if isinstance(value, dict):
            keys += _dotted(value, f"{prefix}{name}.")
    return keys


USAGE = """usage: cogcore <job> [key=value ...] [-m] [--help]

Jobs (each a Hydra app with its own config in cogcore/conf/<job>.yaml):
{jobs}

Examples:
  cogcore world world=tiny run_dir=runs/tiny
  cogcore index docs=~/notes run_dir=runs/notes
  cogcore search index=runs/notes/index query='who founded Acme' k=5
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

    if not any(arg.startswith("-") for arg in rest):  # hydra's own flags (-m, --cfg) compose otherwise
        unknown = unknown_key(name, rest)
        if unknown:
            print(unknown, file=sys.stderr)
            sys.exit(2)

    import hydra

    function = job_function(name)
    sys.argv = [f"cogcore {name}", *rest]
    # Hydra's wrapper is built per job so that each one keeps its own primary config.
    hydra.main(version_base=None, config_path="pkg://cogcore.conf", config_name=name)(function)()


if __name__ == "__main__":
    main()
