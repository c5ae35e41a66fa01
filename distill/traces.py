"""`cogcore traces`: a teacher writes one trace per question into `<run_dir>/traces/`.

    traces.jsonl    valid traces (the trace contract, validated before writing)
    rejected.jsonl  {id, type, reason, detail, question, messages}: every question the teacher could not
                    trace, with a short reason code, what happened, and the trace so far
    manifest.json   teacher config, index, counts kept and rejected per question type and per reason

Resumable: each record is appended and flushed as soon as it is finished, a re-run skips the ids
already in either file, and a torn last line from a killed process is cut off and redone, so a crash
loses at most the records in flight and no id is ever written twice.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cogcore.core.io import DataError, JsonlAppender, atomic_write_json, read_json, read_jsonl, sha256_file
from cogcore.core.trace import trace_errors
from cogcore.distill.teachers.oracle import Rejected, oracle_trace
from cogcore.retrieval.retriever import Retriever


def select_questions(world_dir: Path, split: str, limit: int | None) -> list[dict]:
    splits = ["train", "heldout"] if split == "all" else [split]
    questions = []
    for name in splits:
        path = world_dir / "questions" / f"{name}.jsonl"
        if not path.exists():
            raise DataError(f"{path}: no questions; run `cogcore world run_dir={world_dir.parent}` first")
        questions += read_jsonl(path)
    return questions[:limit] if limit else questions


def _drawn(key: str, share: float) -> bool:
    """A stable draw of `share` of the keys: the same questions whatever the batch size or resume point."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) < share * 0x100000000


def run_oracle(questions: list[dict], retriever: Retriever, tcfg: DictConfig, batch_size: int, write) -> None:
    """Drive one oracle generator per question, `batch_size` at a time, batching their searches across
    questions (and worlds) into single `search_batch` calls. `write(question, trace)` or
    `write(question, None, rejected)` is called as each question finishes."""
    pending = iter(questions)
    active: dict[str, tuple[dict, object, tuple[str, int]]] = {}

    def start(question: dict) -> None:
        offline = _drawn(question["id"], tcfg.unavailable_share)
        gen = oracle_trace(question, tcfg.k, tcfg.reformulations, tcfg.system_prompt, tcfg.quote, offline)
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
            advance(question, gen, passages[:k])
        refill()


def traces(cfg: DictConfig) -> Path:
    run_dir = Path(cfg.run_dir)
    out = run_dir / "traces"
    corpus = run_dir / "world" / "corpus.jsonl"
    if not corpus.exists():
        raise DataError(
            f"{corpus}: no world; run `cogcore world run_dir={run_dir}` and `cogcore index` first"
        )
    if cfg.teacher.name != "oracle":
        raise DataError(f"teacher={cfg.teacher.name}: only the oracle teacher exists so far")
    questions = select_questions(run_dir / "world", cfg.split, cfg.limit)
    retriever = Retriever.load(run_dir / "index", cfg.retriever, corpus_sha256=sha256_file(corpus))

    # The settings that shape a trace; a resumed run must use the same ones, or the files would mix.
    settings = {
        "teacher": OmegaConf.to_container(cfg.teacher, resolve=True),
        "retriever": OmegaConf.to_container(cfg.retriever, resolve=True),
        "split": cfg.split,
        "corpus_sha256": retriever.manifest["corpus_sha256"],
    }
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        previous = read_json(manifest_path)["settings"]
        if previous != settings:
            changed = sorted(key for key in settings if settings[key] != previous.get(key))
            raise DataError(
                f"{manifest_path}: these traces were written with other settings ({', '.join(changed)}); "
                f"resume with the same settings, or write to another run_dir"
            )
    atomic_write_json(manifest_path, {"settings": settings, "complete": False})

    with JsonlAppender(out / "traces.jsonl") as kept, JsonlAppender(out / "rejected.jsonl") as rejected:
        done = kept.ids | rejected.ids
        todo = [q for q in questions if q["id"] not in done]
        bar = tqdm(total=len(questions), initial=len(questions) - len(todo), desc="traces", unit="q")
        counts = Counter()

        def write(question: dict, trace: dict | None, failure: Rejected | None = None) -> None:
            if trace is not None and (errors := trace_errors(trace)):
                failure = Rejected("invalid_trace", "; ".join(errors), trace["messages"])
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
            bar.set_postfix(counts, refresh=False)

        run_oracle(todo, retriever, cfg.teacher, cfg.batch_size, write)
        bar.close()

    manifest = summarize(out, settings, questions)
    atomic_write_json(manifest_path, manifest)
    print(f"traces: {manifest['kept']} kept, {manifest['rejected']} rejected -> {out}")
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
