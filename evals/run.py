"""`cogcore eval`: every system on the same questions, every suite, then the leaderboard.

Reads `<run_dir>/world/questions/<split>.jsonl` (or `eval.questions`, a user QA jsonl), the index, the
student, and trains the closed-book baseline if it is asked for and missing. Writes `<run_dir>/evals/`:

    results.json          per system and suite: summaries per question type, recall, G, timings
    leaderboard.{md,json,png}
    samples/<system>/<suite>.jsonl   every question with its trace, prediction and grade
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cogcore.core.generation import GenerationConfig, generation_config
from cogcore.core.io import DataError, atomic_write_json, atomic_write_text, sha256_file
from cogcore.evals.scoring import CORRECT, bootstrap_ci, search_r1_score, summarize
from cogcore.evals.suites import SUITES, at_one, compositionality_gap, recall_at_k, run_suite


def load_questions(path: Path, limit: int | None, per_type: int | None = None, **fields: str) -> list[dict]:
    """World questions or a user QA file (checked line by line as `cogcore traces data=qa` checks it), with
    every field kept: `world`, `gold_passages` and `hops` are what the suites need. `per_type`: only the
    first that many of each question type (every world's share drawn in turn), then `limit`."""
    from cogcore.core.io import iter_qa

    if not path.exists():
        raise DataError(
            f"{path}: no questions; run `cogcore world` (a world written before validation worlds existed "
            "has no validation.jsonl: run it again) or set eval.questions=<file.jsonl>"
        )
    questions = list(iter_qa(path, **fields))
    if per_type:
        by_world: dict = {}
        for q in questions:
            by_world.setdefault((q.get("type", "qa"), q.get("world")), []).append(q)
        kept, taken = [], {}
        for rank in range(max(map(len, by_world.values()), default=0)):  # round robin over the worlds
            for (qtype, _), group in by_world.items():
                if rank < len(group) and taken.get(qtype, 0) < per_type:
                    kept.append(group[rank])
                    taken[qtype] = taken.get(qtype, 0) + 1
        order = {id(q): i for i, q in enumerate(questions)}
        questions = sorted(kept, key=lambda q: order[id(q)])
    return questions[:limit] if limit else questions


def eval_generation(ecfg: DictConfig, **overrides) -> GenerationConfig:
    """eval.generation as a GenerationConfig, `overrides` winning. `linked: auto` is on for world questions
    (a world passage's title is the entity it is about) and off for a user QA file, whose documents'
    titles a question need not name."""
    return generation_config(
        ecfg.generation, "eval.generation", auto_linked=ecfg.questions is None, **overrides
    )


KV_BUDGET = 2 * 1024**3  # bytes of KV cache that eval.batch_size=auto fills
ROW_TOKENS = 2048  # a long tool conversation: the row length auto sizes for
MAX_ROWS = 256


def batch_rows(setting, model) -> int:
    """eval.batch_size as rows: a number as given; `auto`, as many rows (at most 256) as a 2 GiB KV cache
    holds at 2,048 tokens a row. That is 256 for the demo student and 22 for SmolLM2-135M in fp32."""
    if setting == "auto":
        c = model.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        row = 2 * c.num_hidden_layers * kv_heads * head_dim * model.dtype.itemsize * ROW_TOKENS
        return int(max(1, min(MAX_ROWS, KV_BUDGET // row)))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise DataError(f"eval.batch_size={setting!r}: give a number of questions (>= 1) or auto")
    return setting


def _tool_user(cls, name: str, path: Path, ecfg: DictConfig, gen: GenerationConfig, **extra):
    from cogcore.core.checkpoint import load_model
    from cogcore.core.engine import Engine

    model, tokenizer = load_model(path, key=f"eval.checkpoints.{name}" if name in ecfg.checkpoints else name)
    params = sum(p.numel() for p in model.parameters())
    batch = batch_rows(ecfg.batch_size, model)
    return cls(name=name, engine=Engine(model, tokenizer), gen=gen, batch=batch, params=params, **extra)


def build_systems(cfg: DictConfig) -> list:
    from cogcore.evals.systems import ClosedBook, Oracle, RetrieveThenRead, ToolUser

    ecfg, run_dir = cfg.eval, Path(cfg.run_dir)
    # One k for every system: the passages of a search (retrieve-then-read's one, the oracle's) and of a
    # model's call that names none.
    gen = eval_generation(ecfg)
    systems = []
    for name in ecfg.systems:
        if name == "oracle":
            systems.append(Oracle(k=gen.k))
        elif name == "student":
            systems.append(_tool_user(ToolUser, name, run_dir / "student", ecfg, gen))
        elif name == "retrieve_then_read":
            systems.append(_tool_user(RetrieveThenRead, name, run_dir / "student", ecfg, gen, k=gen.k))
        elif name == "closed_book":
            from cogcore.evals.baselines import train_closed_book

            systems.append(_tool_user(ClosedBook, name, train_closed_book(cfg), ecfg, gen))
        else:
            raise DataError(
                f"eval.systems: unknown system {name!r}; choose from oracle, student, retrieve_then_read, "
                "closed_book, or add it under eval.checkpoints.<name>=<path>"
            )
    for name, path in (ecfg.checkpoints or {}).items():
        systems.append(_tool_user(ToolUser, name, Path(path), ecfg, gen))
    return systems


ONE_TRY = ("T", "R")  # the suites also scored at the first try, as T@1 and R@1
SCORED = (*SUITES, *(f"{s}@1" for s in ONE_TRY))


def _ci(records: list[dict], seed: int) -> list[float]:
    return list(bootstrap_ci([r["grade"] == CORRECT for r in records], seed=seed))


def _mean_tries(records: list[dict]) -> float:
    return sum(r["tries"] for r in records) / len(records)


def evaluate_system(system, questions, retriever, passages, ecfg: DictConfig) -> tuple[dict, dict]:
    """The system's leaderboard entry and its graded records per suite. Every number of it is recomputable
    from the records: a suite's grades, their `at1` grades for T@1 and R@1, and their tries."""
    runs = {s: run_suite(system, s, questions, retriever, passages) for s in ecfg.suites}
    graded = {s: run["records"] for s, run in runs.items()}
    graded |= {f"{s}@1": at_one(graded[s]) for s in ONE_TRY if s in graded}
    summaries = {s: summarize(records) for s, records in graded.items()}
    scores = {s: summaries[s]["overall"]["accuracy"] if s in summaries else None for s in SCORED}
    scores["D"] = summaries["K"]["overall"]["deferral"] if "K" in summaries else None
    scores["recall@5"] = scores["G"] = None
    # The Search-R1 / FlashRAG table's number: EM over golden_answers with the live search tool.
    scores["EM"] = search_r1_score(runs["T"]["records"], questions) if "T" in runs else None
    if "T" in runs and retriever is not None and system.searches:
        scores["recall@5"] = recall_at_k(runs["T"]["records"], questions, retriever, ecfg.recall_k)
    gap = {}
    if "T" in runs and retriever is not None:
        gap = compositionality_gap(system, runs["T"]["records"], questions, retriever, passages)
        scores["G"] = gap["G"]
    types = sorted({q.get("type", "qa") for q in questions})
    by_type = {}
    for t in types:
        of_type = {s: [r for r in records if r["type"] == t] for s, records in graded.items()}
        by_type[t] = {
            **{s: summaries[s][t]["accuracy"] for s in summaries},
            "D": summaries["K"][t]["deferral"] if "K" in summaries else None,
            "ci": {s: _ci(records, ecfg.seed) for s, records in of_type.items()},
            "tries": {s: _mean_tries(of_type[s]) for s in runs},
        }
    t_run = runs.get("T")
    entry = {
        "name": system.name,
        "params": system.params,
        "scores": scores,
        "by_type": by_type,
        "ci": {s: _ci(records, ecfg.seed) for s, records in graded.items()},
        "tries": {s: _mean_tries(run["records"]) for s, run in runs.items()},
        "questions_per_s": len(questions) / t_run["seconds"] if t_run and t_run["seconds"] > 0 else None,
        "grades": {
            s: {k: summaries[s]["overall"][k] for k in ("correct", "incorrect", "not_attempted")}
            for s in summaries
        },
        "gap": gap,
    }
    return entry, {s: run["records"] for s, run in runs.items()}


def _board_entry(entry: dict) -> dict:
    """What the leaderboard shows of a system's entry (results.json keeps the rest)."""
    return {k: entry[k] for k in ("name", "params", "scores", "by_type", "ci", "tries", "questions_per_s")}


def write_samples(out: Path, name: str, records: dict[str, list[dict]]) -> None:
    for suite, rows in records.items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        atomic_write_text(out / "samples" / name / f"{suite}.jsonl", text)


def contamination(cfg: DictConfig, questions: list[dict]) -> dict | None:
    from cogcore.core.trace import read_traces
    from cogcore.evals.contamination import check_contamination

    traces = Path(cfg.run_dir) / "traces" / "traces.jsonl"
    if not traces.exists():
        return None
    report = check_contamination(read_traces(traces), questions, cfg.eval.contamination_n, cfg.eval.max_leak)
    return {
        k: report[k]
        for k in ("n", "questions", "leaked", "share", "leaked_in_user_turns", "exact_duplicates")
    }


def evaluate(cfg: DictConfig) -> Path:
    from cogcore.evals.leaderboard import write_leaderboard
    from cogcore.retrieval.retriever import Retriever

    ecfg, run_dir = cfg.eval, Path(cfg.run_dir)
    out = run_dir / "evals"
    if ecfg.backend == "lm_eval":
        from cogcore.evals.lm_eval_tasks import run_lm_eval

        return run_lm_eval(cfg)
    if ecfg.backend != "native":
        raise DataError(f"eval.backend={ecfg.backend!r}: choose native or lm_eval")

    qpath = (
        Path(ecfg.questions) if ecfg.questions else run_dir / "world" / "questions" / f"{ecfg.split}.jsonl"
    )
    questions = load_questions(qpath, ecfg.limit, ecfg.get("per_type"), **ecfg.get("fields", {}))
    index = Path(ecfg.index) if ecfg.index else run_dir / "index"
    corpus = run_dir / "world" / "corpus.jsonl"
    retriever = None
    if (index / "manifest.json").exists():
        sha = sha256_file(corpus) if corpus.exists() and not ecfg.index else None
        retriever = Retriever.load(index, cfg.retriever, corpus_sha256=sha)
    passages = retriever.passages_by_id() if retriever else {}
    missing = sorted({g for q in questions for g in q.get("gold_passages", []) if g not in passages})
    if "R" in ecfg.suites and missing:
        raise DataError(f"{qpath}: gold passages {missing[:5]} are not in the index {index}; rebuild it")
    leak = contamination(cfg, questions)

    systems = build_systems(cfg)
    board = {"systems": [], "contamination": leak, "config": OmegaConf.to_container(ecfg, resolve=True)}
    results = {"questions": str(qpath), "n": len(questions), "systems": {}}
    for system in systems:
        print(f"== eval {system.name}")
        entry, records = evaluate_system(system, questions, retriever, passages, ecfg)
        write_samples(out, system.name, records)
        board["systems"].append(_board_entry(entry))
        results["systems"][system.name] = entry
        if system.name == "closed_book" and ecfg.closed_book.score_training_worlds:
            board["systems"].append(closed_book_on_training(cfg, system, retriever, passages))
    atomic_write_json(out / "results.json", results)
    print(write_leaderboard(board, out))
    return out


def closed_book_on_training(cfg: DictConfig, system, retriever, passages) -> dict:
    """The closed-book baseline on the training-world questions it was trained on: what memorising buys
    on a world it has seen (K only; the contrast with the held-out K is the point)."""
    from cogcore.evals.baselines import closed_book_questions

    questions = closed_book_questions(Path(cfg.run_dir), cfg.eval.closed_book.worlds)
    rng = np.random.default_rng(cfg.eval.seed)
    n = min(len(questions), cfg.eval.closed_book.score_training_worlds)
    questions = [questions[i] for i in sorted(rng.choice(len(questions), n, replace=False))]
    k_only = OmegaConf.merge(cfg.eval, {"suites": ["K"]})
    entry, _ = evaluate_system(system, questions, retriever, passages, k_only)
    return {**_board_entry(entry), "name": f"{system.name} (training worlds)"}
