"""`cogcore traces`: a teacher writes one trace per question into `<run_dir>/traces/`.

Questions come from the synthetic world (`data=world`, the default: `<run_dir>/world/questions/`) or from
your own file (`data=qa path=<file.jsonl>`: one {"question", "answers", "id"?, "type"?} per line, searched
against the index `cogcore index docs=<folder>` built). The teacher is the oracle (worlds only), an
OpenAI-compatible endpoint (`teacher=openai`) or a local checkpoint (`teacher=hf`). Every trace then goes
through the filter (distill/filtering.py) before it is kept.

    traces.jsonl    kept traces (valid, right, supported by what they retrieved, no duplicates)
    rejected.jsonl  {id, type, reason, detail, question, messages}: every question the teacher could not
                    trace or the filter refused, with a short reason code, what happened, and the trace so far
    manifest.json   settings, counts kept and rejected per question type and per reason
    cache/          teacher=openai: every response, by the sha256 of its request (a re-run calls nothing)
    topk/           teacher=hf with teacher.topk > 0: the teacher's top-k log-probs of the kept traces

Resumable: each record is appended and flushed as soon as it is finished, a re-run skips the ids
already in either file, and a torn last line from a killed process is cut off and redone, so a crash
loses at most the records in flight and no id is ever written twice.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cogcore.core.io import (
    DataError,
    JsonlAppender,
    atomic_write_json,
    atomic_write_text,
    iter_qa,
    read_jsonl,
    sha256_file,
)
from cogcore.core.stage import decide
from cogcore.core.trace import Rejected
from cogcore.distill.filtering import TraceFilter
from cogcore.distill.teachers import drawn
from cogcore.distill.teachers.hf import load_teacher, run_hf, save_topk
from cogcore.distill.teachers.openai import EndpointError, run_openai
from cogcore.distill.teachers.oracle import oracle_trace
from cogcore.retrieval.retriever import Retriever

TEACHERS = ("oracle", "openai", "hf")
# Teacher keys that do not shape a trace (where and how fast the teacher runs, what else it saves): a
# resumed run may change them.
RUNTIME_KEYS = ("client", "device", "topk", "topk_batch")


def select_questions(world_dir: Path, split: str, limit: int | None) -> list[dict]:
    splits = ["train", "heldout"] if split == "all" else [split]
    questions = []
    for name in splits:
        path = world_dir / "questions" / f"{name}.jsonl"
        if not path.exists():
            raise DataError(f"{path}: no questions; run `cogcore world run_dir={world_dir.parent}` first")
        questions += read_jsonl(path)
    return questions[:limit] if limit else questions


def read_qa(path: str | Path, limit: int | None, fields: dict | None = None) -> list[dict]:
    """Your own questions: a jsonl file (one {"question", "answers", "id"?, "type"?} per line; FlashRAG's
    `golden_answers` is read too), a `datasets` folder saved with `save_to_disk`, or parquet; `fields`
    names the question and answers fields where they are called otherwise. A question without an id gets
    `line-<n>`, one without a type `qa`. Only those fields are kept: a QA set searches one collection,
    whatever `world` its lines may name."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(
            f"path={path}: no such file or folder; give a JSONL file with one {{question, answers}} per "
            "line, a datasets folder or parquet"
        )
    questions = [
        {key: q[key] for key in ("id", "type", "question", "answers")}
        for q in iter_qa(path, **(fields or {}))
    ]
    return questions[:limit] if limit else questions


def load_inputs(cfg: DictConfig) -> tuple[list[dict], Retriever]:
    """The questions the data config names, and the index to search for them."""
    run_dir = Path(cfg.run_dir)
    if cfg.data.name == "qa":
        if OmegaConf.is_missing(cfg, "path"):
            raise DataError("data=qa needs the questions file: cogcore traces data=qa path=<questions.jsonl>")
        if cfg.teacher.name == "oracle":
            raise DataError(
                "teacher=oracle writes traces for synthetic-world questions only (data=world); "
                "use teacher=openai or teacher=hf for data=qa"
            )
        questions = read_qa(cfg.data.path, cfg.limit, cfg.data.get("fields"))
        retriever = Retriever.load(run_dir / "index", cfg.retriever)
        if len(retriever.collections) != 1:
            raise DataError(
                f"{run_dir}/index holds {len(retriever.collections)} collections; data=qa questions search "
                f"one: index your documents alone with `cogcore index docs=<folder> run_dir={run_dir}`"
            )
        return questions, retriever
    if cfg.data.name != "world":
        raise DataError(f"data={cfg.data.name}: choose data=world or data=qa")
    corpus = run_dir / "world" / "corpus.jsonl"
    if not corpus.exists():
        raise DataError(
            f"{corpus}: no world; run `cogcore world run_dir={run_dir}` and `cogcore index` first, "
            "or trace your own questions with data=qa path=<questions.jsonl>"
        )
    questions = select_questions(run_dir / "world", cfg.split, cfg.limit)
    return questions, Retriever.load(run_dir / "index", cfg.retriever, corpus_sha256=sha256_file(corpus))


def run_oracle(questions: list[dict], retriever: Retriever, tcfg: DictConfig, batch_size: int, write) -> None:
    """Drive one oracle generator per question, `batch_size` at a time, batching their searches across
    questions (and worlds) into single `search_batch` calls. `write(question, trace)` or
    `write(question, None, rejected)` is called as each question finishes."""
    pending = iter(questions)
    active: dict[str, tuple[dict, object, tuple[str, int]]] = {}

    passages_by_id = retriever.passages_by_id() if tcfg.gold_share else {}
    gold: dict[str, list[dict]] = {}  # the questions whose searches return their gold passages

    def start(question: dict) -> None:
        offline = drawn(question["id"], tcfg.unavailable_share)
        if not offline and drawn(f"gold:{question['id']}", tcfg.gold_share):
            gold[question["id"]] = [passages_by_id[p] for p in question.get("gold_passages", [])]
        gen = oracle_trace(
            question,
            tcfg.k,
            tcfg.reformulations,
            tcfg.system_prompt,
            tcfg.quote,
            offline,
            gold=question["id"] in gold,
            near_misses=tcfg.near_misses,
        )
        advance(question, gen, None)

    def advance(question: dict, gen, passages) -> None:
        try:
            request = gen.send(passages)
        except StopIteration as done:
            active.pop(question["id"], None)
            write(question, done.value)
        except Rejected as e:
            active.pop(question["id"], None)
            write(question, None, e)
        else:
            active[question["id"]] = (question, gen, request)

    def refill() -> None:
        for question in pending:
            start(question)
            if len(active) >= batch_size:
                return

    refill()
    while active:
        batch = list(active.values())
        queries = [request[0] for _, _, request in batch]
        ks = {request[1] for _, _, request in batch}
        results = retriever.search_batch(queries, max(ks), [q["world"] for q, _, _ in batch])
        for (question, gen, (_, k)), passages in zip(batch, results, strict=True):
            advance(question, gen, gold.get(question["id"], passages[:k]))
        refill()


def traces(cfg: DictConfig) -> Path:
    out = Path(cfg.run_dir) / "traces"
    tcfg = cfg.teacher
    if tcfg.name not in TEACHERS:
        raise DataError(f"teacher={tcfg.name}: choose one of {', '.join(TEACHERS)}")
    missing = sorted(OmegaConf.missing_keys(tcfg))  # full keys, e.g. teacher.model
    if missing:
        raise DataError(f"teacher={tcfg.name} needs {', '.join(missing)}: set it, e.g. {missing[0]}=...")
    questions, retriever = load_inputs(cfg)

    # The settings that shape a trace; a resumed run must use the same ones, or the files would mix.
    teacher = OmegaConf.to_container(tcfg, resolve=True)
    settings = {
        "teacher": {key: value for key, value in teacher.items() if key not in RUNTIME_KEYS},
        "retriever": OmegaConf.to_container(cfg.retriever, resolve=True),
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "split": cfg.split,
        "filter": OmegaConf.to_container(cfg.filter, resolve=True),
        "corpus_sha256": retriever.manifest["corpus_sha256"],
    }
    manifest_path = out / "manifest.json"
    decide(manifest_path, settings, key="settings", resumable=True)  # other settings raise DataError
    atomic_write_json(manifest_path, {"settings": settings, "complete": False})
    model = tokenizer = None
    if tcfg.name == "hf":
        model, tokenizer = load_teacher(tcfg)

    failures: list[str] = []
    with JsonlAppender(out / "traces.jsonl") as kept, JsonlAppender(out / "rejected.jsonl") as rejected:
        done = kept.ids | rejected.ids
        todo = [q for q in questions if q["id"] not in done]
        keep = TraceFilter(cfg.filter, read_jsonl(kept.path))  # a resumed run knows what it kept
        with tqdm(total=len(questions), initial=len(questions) - len(todo), desc="traces", unit="q") as bar:
            counts, stats = Counter(), Counter()  # stats: the teacher's calls, cached, tokens, errors

            def write(question: dict, trace: dict | None, failure: Rejected | None = None) -> None:
                if failure is None:
                    failure = keep.check(trace)
                if failure is None:
                    kept.write(trace)
                    counts["kept"] += 1
                else:
                    rejected.write(
                        {
                            "id": question["id"],
                            "type": question["type"],
                            "reason": failure.reason,
                            "detail": failure.detail,
                            "question": question["question"],
                            "messages": failure.messages,
                        }
                    )
                    counts["rejected"] += 1
                bar.update()
                bar.set_postfix({**counts, **stats}, refresh=False)

            if tcfg.name == "oracle":
                run_oracle(todo, retriever, tcfg, cfg.batch_size, write)
            elif tcfg.name == "openai":
                failures = run_openai(todo, retriever, tcfg, out / "cache", write, stats)
            else:
                run_hf(todo, retriever, tcfg, cfg.batch_size, write, model, tokenizer)

    if tcfg.name == "hf" and tcfg.topk:
        scored = save_topk(out / "traces.jsonl", out / "topk", model, tokenizer, tcfg.topk, tcfg.topk_batch)
        print(f"traces: top-{tcfg.topk} log-probs of {scored} traces -> {out / 'topk'}")
    manifest = summarize(out, settings, questions)
    atomic_write_json(manifest_path, manifest)
    teacher_stats = f" ({', '.join(f'{k} {v}' for k, v in sorted(stats.items()))})" if stats else ""
    print(f"traces: {manifest['kept']} kept, {manifest['rejected']} rejected{teacher_stats} -> {out}")
    unanswered = out / "unanswered.txt"  # '<id>: <last error>' per question the endpoint never answered
    if failures:
        atomic_write_text(unanswered, "".join(f"{line}\n" for line in failures))
        raise EndpointError(
            f"traces: {len(failures)} questions got no response from {tcfg.client.base_url}, each listed "
            f"with its last error in {unanswered} (first: {failures[0]}); they are in neither traces file: "
            "run the same command again to retry them"
        )
    unanswered.unlink(missing_ok=True)  # a resumed run answered them
    return out


def summarize(out: Path, settings: dict, questions: list[dict]) -> dict:
    """Counts from the files themselves, so a resumed run reports what is really on disk."""
    kept = read_jsonl(out / "traces.jsonl")
    rejected = read_jsonl(out / "rejected.jsonl")
    types = sorted({q["type"] for q in questions})
    by_type = {
        t: {
            "kept": sum(r["metadata"]["type"] == t for r in kept),
            "rejected": sum(r["type"] == t for r in rejected),
            "rejected_by_reason": dict(Counter(r["reason"] for r in rejected if r["type"] == t)),
        }
        for t in types
    }
    reasons = Counter(r["reason"] for r in rejected)
    return {
        "settings": settings,
        "complete": len(kept) + len(rejected) == len(questions),
        "questions": len(questions),
        "kept": len(kept),
        "rejected": len(rejected),
        "by_type": by_type,
        "rejected_by_reason": dict(reasons),
        "searches": sum(m["role"] == "tool" for r in kept for m in r["messages"]),
    }
