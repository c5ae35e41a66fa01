"""The answer suites as lm-eval tasks, and `cogcore eval eval.backend=lm_eval`.

`export_tasks` writes, into one folder that lm-eval's `--include_path` (or `TaskManager(include_path=)`)
reads:
    questions.jsonl          the questions, reduced to {id, question, answers, type, world, gold_passages}
    <prefix>_K.yaml ...      one generate_until task per suite over that file (absolute path); its
                             `process_docs` sets each doc's `search` (unavailable | oracle | live), which
                             the cogcore model reads, so one model instance serves every suite
    <prefix>.yaml            the group aggregating them, per metric, under the filter `answer`
    utils.py                 imports the hooks below, so lm-eval scores exactly as cogcore's scoring does
The filter `answer` is `core.tools.final_answer` (the final `Answer:` line, None if there is none); the
metrics are SimpleQA accuracy, exact_match, token f1 and the share not attempted, and for K the deferral D.

The same run through lm-eval's command line (the wrapper registers the model first):
    python -m cogcore.evals.lm_eval_cli --model cogcore \
        --model_args pretrained=RUN/student,index=RUN/index,retriever=hybrid \
        --include_path RUN/evals/lm_eval/tasks --tasks cogcore --output_path RUN/evals/lm_eval/results.json \
        --log_samples
"""

from __future__ import annotations

from dataclasses import asdict
from importlib.resources import files
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from cogcore.core.io import atomic_write_text, write_jsonl
from cogcore.core.tools import final_answer
from cogcore.evals.run import eval_generation, load_questions
from cogcore.evals.scoring import CORRECT, NOT_ATTEMPTED, exact_match, grade, summarize, token_f1

# What `search` returns in each suite (evals/suites.py): the exported docs name it, the model reads it.
SEARCH = {"K": "unavailable", "R": "oracle", "T": "live"}
FILTER = "answer"
METRICS = ("accuracy", "exact_match", "f1", "not_attempted")
FIELDS = ("id", "question", "answers", "type", "world", "gold_passages")


# --- hooks the exported tasks call (through their utils.py) -------------------------------------------
def _with_search(mode: str):
    def process_docs(dataset):
        return dataset.map(lambda _: {"search": mode})

    return process_docs


docs_K, docs_R, docs_T = (_with_search(SEARCH[s]) for s in "KRT")


def answers(resps: list[list[str]], docs: list[dict]) -> list[list[str | None]]:
    """The `answer` filter: each reply's final `Answer:` line."""
    return [[final_answer(r) for r in replies] for replies in resps]


def process_results(doc: dict, results: list[str | None]) -> dict:
    """Per-question metrics of one filtered prediction, graded by `evals.scoring`."""
    prediction, golds = results[0], doc["answers"]
    record = {
        "type": doc["type"],
        "grade": grade(prediction, golds),
        "em": exact_match(prediction, golds),
        "f1": token_f1(prediction, golds),
    }
    metrics = {
        "accuracy": float(record["grade"] == CORRECT),
        "exact_match": record["em"],
        "f1": record["f1"],
        "not_attempted": float(record["grade"] == NOT_ATTEMPTED),
    }
    if doc["search"] == SEARCH["K"]:
        metrics["deferral"] = record  # D needs every grade at once: aggregated by `deferral`
    return metrics


def deferral(records: list[dict]) -> float | None:
    """Contract 5's D over a task's questions, exactly as `evals.scoring.summarize` defines it."""
    return summarize(records)["overall"]["deferral"]


# --- export ------------------------------------------------------------------------------------------
class _Function(str):
    """A YAML `!function module.name` reference, resolved by lm-eval beside the YAML file."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Function, lambda dumper, ref: dumper.represent_scalar("!function", ref))

UTILS = '''"""Written by cogcore.evals.lm_eval_tasks.export_tasks: the task hooks live in cogcore, so
these tasks score exactly as cogcore's own evals do."""

from cogcore.evals.lm_eval_tasks import (  # noqa: F401
    answers,
    deferral,
    docs_K,
    docs_R,
    docs_T,
    process_results,
)
'''


def _task(name: str, suite: str, data: Path) -> dict:
    # not_attempted is a share to read, not to raise: abstaining is right only when the answer is unknown.
    metrics = [
        {"metric": m, "aggregation": "mean", "higher_is_better": m != "not_attempted"} for m in METRICS
    ]
    if suite == "K":
        metrics.append(
            {"metric": "deferral", "aggregation": _Function("utils.deferral"), "higher_is_better": True}
        )
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "process_docs": _Function(f"utils.docs_{suite}"),
        "output_type": "generate_until",
        "doc_to_text": "{{question}}",
        "doc_to_target": "{{answers[0]}}",
        "generation_kwargs": {"until": []},  # the whole final turn; the filter takes its Answer: line
        "filter_list": [
            {
                "name": FILTER,
                "filter": [
                    {"function": "custom", "filter_fn": _Function("utils.answers")},
                    {"function": "take_first"},
                ],
            }
        ],
        "process_results": _Function("utils.process_results"),
        "metric_list": metrics,
        "metadata": {"version": 1, "suite": suite, "search": SEARCH[suite]},
    }


def export_tasks(
    questions_path: str | Path, out_dir: str | Path, name_prefix: str = "cogcore", suites=("K", "R", "T")
) -> str:
    """Write the suites' lm-eval tasks and their group into `out_dir`; return the group's name (the
    tasks are `<name_prefix>_<suite>`)."""
    unknown = [s for s in suites if s not in SEARCH]
    if unknown or not suites:
        raise ValueError(f"suites={list(suites)}: choose among {', '.join(SEARCH)}")
    out = Path(out_dir).resolve()
    data = out / "questions.jsonl"
    # Only the fields the tasks read: datasets' json loader needs one type per field, and a world's hops mix
    # numbers and names in `object`.
    questions = load_questions(Path(questions_path), None)
    write_jsonl(data, [{key: q[key] for key in FIELDS if key in q} for q in questions])
    names = [f"{name_prefix}_{suite}" for suite in suites]
    for name, suite in zip(names, suites, strict=True):
        atomic_write_text(
            out / f"{name}.yaml", yaml.dump(_task(name, suite, data), Dumper=_Dumper, sort_keys=False)
        )
    group = {
        "group": name_prefix,
        "task": names,
        "aggregate_metric_list": [
            {"metric": m, "aggregation": "mean", "weight_by_size": True, "filter_list": [FILTER]}
            for m in METRICS
        ],
        "metadata": {"version": 1},
    }
    atomic_write_text(out / f"{name_prefix}.yaml", yaml.dump(group, Dumper=_Dumper, sort_keys=False))
    atomic_write_text(out / "utils.py", UTILS)
    return name_prefix


def tasks_for_command_line(argv: list[str]) -> str | None:
    """Before lm-eval's own command line runs (evals/lm_eval_cli.py): when `--include_path` names a run's
    `<run_dir>/evals/lm_eval/tasks` that holds no cogcore tasks yet, export the suites there over the run's
    `eval.split` questions, as `cogcore eval eval.backend=lm_eval` would, so that the README's command
    works on a fresh run. Returns a line saying what it wrote, or None."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("--include_path=")]
    given += [b for a, b in zip(argv, argv[1:], strict=False) if a == "--include_path"]
    if not given:
        return None
    tasks = Path(given[-1]).expanduser()
    if tasks.parts[-3:] != ("evals", "lm_eval", "tasks") or (tasks / "cogcore.yaml").exists():
        return None
    split = OmegaConf.create((files("cogcore.conf") / "eval" / "default.yaml").read_text()).split
    questions = tasks.parents[2] / "world" / "questions" / f"{split}.jsonl"
    if not questions.exists():
        raise SystemExit(
            f"--include_path {given[-1]}: no cogcore tasks there, and no {questions} to export them from; "
            "run `cogcore eval eval.backend=lm_eval` for other questions, or export_tasks(questions, folder)"
        )
    export_tasks(questions, tasks)
    return f"lm_eval_cli: exported the cogcore tasks over {questions} into {tasks}"


# --- the job -------------------------------------------------------------------------------------------
def model_args(cfg: DictConfig) -> dict:
    """The cogcore model's model_args for `cogcore eval eval.backend=lm_eval`: the student of the run, and its
    index for live search and the oracle's gold passages."""
    run_dir, ecfg = Path(cfg.run_dir), cfg.eval
    args = {
        "pretrained": str(run_dir / "student"),
        "search": ecfg.lm_eval.search,
        "retriever": OmegaConf.to_container(cfg.retriever, resolve=True),
        **asdict(eval_generation(ecfg)),  # every generation setting, as the native eval answers
    }
    index = Path(ecfg.index) if ecfg.index else run_dir / "index"
    searches = {SEARCH[s] for s in ecfg.suites} | ({ecfg.lm_eval.search} if ecfg.lm_eval.tasks else set())
    if searches & {"live", "oracle"}:
        args["index"] = str(index)
    return args


def run_lm_eval(cfg: DictConfig) -> Path:
    """`cogcore eval eval.backend=lm_eval`: export the suites (eval.suites) over the questions as lm-eval
    tasks, run them and the standard lm-eval tasks named in eval.lm_eval.tasks through
    `lm_eval.simple_evaluate`, and write lm-eval's results and samples files into
    `<run_dir>/evals/lm_eval/`. Returns the results file (`results_<date>.json`; samples beside it as
    `samples_<task>_<date>.jsonl`)."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    import cogcore.evals.lm_eval_model  # noqa: F401  registers the `cogcore` model

    run_dir, ecfg = Path(cfg.run_dir), cfg.eval
    out = run_dir / "evals" / "lm_eval"
    questions = ecfg.questions or run_dir / "world" / "questions" / f"{ecfg.split}.jsonl"
    group = export_tasks(questions, out / "tasks", suites=list(ecfg.suites))
    tracker = EvaluationTracker(output_path=str(out / "results.json"))
    results = simple_evaluate(
        model="cogcore",
        model_args=model_args(cfg),
        tasks=[group, *ecfg.lm_eval.tasks],
        batch_size=ecfg.batch_size,
        limit=ecfg.limit,
        log_samples=True,
        evaluation_tracker=tracker,
        task_manager=TaskManager(include_path=str(out / "tasks")),
        random_seed=ecfg.seed,
    )
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"]:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    print(make_table(results))
    if "groups" in results:
        print(make_table(results, "groups"))
    return out / f"results_{tracker.date_id}.json"
