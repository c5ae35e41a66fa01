"""The cognitive-core curve (issue 32, section 3): students of growing size by one depth dial, each
trained at the same budget in tokens on the same traces, and for each:

- T@1 and T on held-out worlds (reasoning with lookup: the student with its tool);
- closed-book accuracy K of the same architecture trained on question -> answer pairs, on the training
  worlds it memorised and on held-out worlds (memorised knowledge, and whether it transfers);
- D, the student's deferral with the tool down.

The depth dial d sets everything, as nanochat's depth does: d layers of width 32 d, 2 d heads of 16,
an MLP 3 times as wide (d=2: 0.17M parameters, 4: 0.98M (the demo student), 7: 4.8M, 10: 13.6M). Every
size trains distill's copy warm-up, then `--steps` steps of trace rows (distill.global_batch x
distill.seq_len tokens each): the same tokens. The curve in README ran 3,876 trace steps of 2 rows of
1,024 tokens (`distill.seq_len=1024`, 6 epochs, the demo's budget of its time); a size
this machine cannot afford at that budget gets fewer with `--steps-at D=N`, or none with
`--closed-book-only D` (its memorising alone), and the table says so. `--closed-book-lrs` trains the
closed-book baseline at more learning rates: one rate does not suit every size, and each size reports
the rate that memorises best (and what every rate gave, in curve.json). The
closed-book baseline keeps eval.closed_book's own schedule (30 epochs of its pairs).

    python benchmarks/curve.py --run runs/demo --depths 2 4 7 --steps 3876 --per-type 24 --out runs/curve \
        distill.seq_len=1024

Writes <out>/d<d>/ (a run per size; world, index and traces linked from --run), <out>/curve.json,
<out>/curve.md and <out>/curve.png. Each size is resumable: a student trained to its budget and an eval
of it with the same eval config are reused, so a later call can add sizes to the picture (a call at
another row length than a finished size's is refused: the curve would mix two budgets).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from cogcore.core.io import DataError, atomic_write_json, atomic_write_text


def arch(depth: int) -> list[str]:
    width = 32 * depth
    return [
        f"student.arch.hidden_size={width}",
        f"student.arch.intermediate_size={3 * width}",
        f"student.arch.num_hidden_layers={depth}",
        f"student.arch.num_attention_heads={2 * depth}",
        f"student.arch.num_key_value_heads={2 * depth}",
    ]


def cfg_of(job: str, run_dir: Path, overrides: list[str]):
    with initialize_config_module("cogcore.conf", version_base=None):
        return compose(config_name=job, overrides=[f"run_dir={run_dir}", *overrides])


def quiet_libraries() -> None:
    """The library log levels the CLI's jobs set (conf/base.yaml), which a composed config does not apply."""
    with initialize_config_module("cogcore.conf", version_base=None):
        hydra_cfg = compose(config_name="base", return_hydra_config=True).hydra
    for name, logger in hydra_cfg.job_logging.loggers.items():
        logging.getLogger(name).setLevel(logger.level)


def _manifest(run_dir: Path) -> dict | None:
    path = run_dir / "student" / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None


def _board(run_dir: Path, ecfg) -> dict | None:
    """The size's leaderboard if it scored the student as saved now, with this eval config."""
    path, manifest = run_dir / "evals" / "leaderboard.json", run_dir / "student" / "manifest.json"
    if not path.exists() or (manifest.exists() and path.stat().st_mtime < manifest.stat().st_mtime):
        return None
    board = json.loads(path.read_text())
    return board if board["config"] == OmegaConf.to_container(ecfg, resolve=True) else None


def _tokens(dcfg, steps: int | None) -> int:
    """Tokens a student of `steps` trace steps trains on: the copy warm-up's rows, then the trace rows."""
    if not steps:
        return 0
    drills = dcfg.copy_drills
    return drills.warmup_steps * drills.rows * drills.row_len + steps * dcfg.global_batch * dcfg.seq_len


def _linked(run: Path, run_dir: Path) -> Path:
    """run_dir with the world, index and traces of `run` linked in."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for part in ("world", "index", "traces"):
        link = run_dir / part
        if not link.exists():
            link.symlink_to((run / part).resolve())
    return run_dir


def _scored(run_dir: Path, overrides: list[str]) -> dict:
    """The leaderboard of an eval with these overrides (reused when up to date)."""
    from cogcore.evals.run import evaluate

    ecfg = cfg_of("eval", run_dir, overrides)
    board = _board(run_dir, ecfg.eval)
    if board is None:
        evaluate(ecfg)
        board = _board(run_dir, ecfg.eval)
    return board


def _systems(board: dict) -> dict:
    return {s["name"]: s for s in board["systems"]}


def _memorised(board: dict) -> tuple[float, dict]:
    """The closed-book baseline's learning rate, and what it memorised of the training worlds and of the
    held-out ones."""
    by_name = _systems(board)
    return board["config"]["closed_book"]["distill"]["lr"], {
        "train": by_name.get("closed_book (training worlds)", {}).get("scores", {}).get("K"),
        "heldout": by_name["closed_book"]["scores"]["K"],
    }


def one_size(run: Path, out: Path, depth: int, steps: int | None, args: argparse.Namespace) -> dict:
    """Train and score one size; steps None: its closed-book baseline only (no student)."""
    from cogcore.distill.train import distill

    run_dir = _linked(run, out / f"d{depth}")
    is_eval = [o.lstrip("+").startswith("eval.") for o in args.overrides]
    size = [*arch(depth), *(o for o, e in zip(args.overrides, is_eval, strict=True) if not e)]
    eval_only = [o for o, e in zip(args.overrides, is_eval, strict=True) if e]
    eval_only += [f"eval.per_type={args.per_type}"] if args.per_type else []
    dcfg = cfg_of("distill", run_dir, [*size, f"distill.max_steps={steps}"] if steps else size)
    total = steps + dcfg.distill.copy_drills.warmup_steps if steps else 0
    manifest = _manifest(run_dir)
    if steps and manifest is not None and manifest["seq_len"] != dcfg.distill.seq_len:
        raise DataError(
            f"{run_dir / 'student'}: trained on rows of {manifest['seq_len']} tokens, and this call asks for "
            f"{dcfg.distill.seq_len} (distill.seq_len): pass distill.seq_len={manifest['seq_len']}, or "
            "another --out for a curve at the new row length"
        )
    if steps and (manifest is None or manifest["final"]["step"] != total):
        distill(dcfg)
        manifest = _manifest(run_dir)
    systems = "eval.systems=[student,closed_book]" if steps else "eval.systems=[closed_book]"
    board = _scored(run_dir, [*size, *eval_only, systems])
    by_name = _systems(board)
    # The closed-book baseline at each learning rate asked for, beside the config's; the size's memorising
    # is the best of them on the training worlds it memorises (the quantity measured, not a held-out one).
    by_lr = dict([_memorised(board)])
    for lr in args.closed_book_lrs:
        lr_dir = _linked(run, run_dir / f"closed_book_lr{lr:g}")
        lr_key = f"eval.closed_book.distill.lr={lr}"
        by_lr.update([_memorised(_scored(lr_dir, [*size, *eval_only, "eval.systems=[closed_book]", lr_key]))])
    best = max(by_lr, key=lambda lr: by_lr[lr]["train"] or 0.0)
    student = by_name.get("student")
    scores = student["scores"] if student else {}
    return {
        "depth": depth,
        "params": by_name["student" if student else "closed_book"]["params"],
        "trace_steps": steps,
        "tokens": _tokens(dcfg.distill, steps),
        "tokens_per_s": manifest["final"]["tokens_per_s"] if steps else None,
        **{k: scores.get(k) for k in ("T@1", "T", "R@1", "R", "D")},
        "closed_book_train": by_lr[best]["train"],
        "closed_book_heldout": by_lr[best]["heldout"],
        "closed_book_lr": best,
        "closed_book_by_lr": {f"{lr:g}": v for lr, v in by_lr.items()},
        "ci": {"T@1": student["ci"]["T@1"], "T": student["ci"]["T"]} if student else None,
        "tries_T": student["tries"]["T"] if student else None,
    }


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def table(points: list[dict], budget: int) -> str:
    """The curve as a markdown table; sizes trained below the common budget are marked."""
    rows = [
        "| depth | parameters | trace steps | T@1 (95% CI) | T (95% CI) | D | closed book, training worlds "
        "| closed book, held out | closed-book lr | tries per T question |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in points:
        if p["trace_steps"] is None:
            steps, t1, t, tries = "no student", "-", "-", "-"
        else:
            steps = f"{p['trace_steps']}" + ("" if p["trace_steps"] == budget else " (fewer)")
            t1, t = ("{} ({:.2f}-{:.2f})".format(_f(p[k]), *p["ci"][k]) for k in ("T@1", "T"))
            tries = f"{p['tries_T']:.2f}"
        rows.append(
            f"| {p['depth']} | {p['params'] / 1e6:.2f}M | {steps} | {t1} | {t} | {_f(p['D'])} | "
            f"{_f(p['closed_book_train'])} | {_f(p['closed_book_heldout'])} | {p['closed_book_lr']:g} | "
            f"{tries} |"
        )
    return "\n".join(rows) + "\n"


def plot(points: list[dict], budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    params = [p["params"] for p in points]
    for key, label in (
        ("T@1", "T@1: reasoning with lookup, one try (held out)"),
        ("T", "T: with verified retries (held out)"),
        ("closed_book_train", "closed book, training worlds (memorised)"),
        ("closed_book_heldout", "closed book, held-out worlds"),
        ("D", "D: deferral with the tool down"),
    ):
        ys = [float("nan") if p[key] is None else p[key] for p in points]
        ax.plot(params, ys, marker="o", label=label)
    for p in points:
        if p["trace_steps"] not in (budget, None):
            ax.annotate(f"{p['trace_steps']} steps", (p["params"], 0.0), fontsize=7, ha="center")
    ax.set(xscale="log", ylim=(-0.05, 1.05), xlabel="parameters", ylabel="accuracy")
    ax.set_title(f"The cognitive-core curve ({budget} trace steps a size)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def depth_steps(pairs: list[str]) -> dict[int, int]:
    """--steps-at D=N pairs as {depth: steps}."""
    out = {}
    for pair in pairs:
        depth, sep, steps = pair.partition("=")
        if not sep or not depth.isdigit() or not steps.isdigit():
            raise SystemExit(f"--steps-at {pair!r}: write DEPTH=STEPS, e.g. 10=1000")
        out[int(depth)] = int(steps)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="a run with world, index, traces")
    parser.add_argument("--out", type=Path, default=Path("runs/curve"))
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 7])
    parser.add_argument("--steps", type=int, default=3876, help="trace steps per size: the token budget")
    parser.add_argument(
        "--steps-at", action="append", default=[], metavar="DEPTH=STEPS", help="fewer for a size, marked"
    )
    parser.add_argument(
        "--closed-book-only", type=int, nargs="*", default=[], metavar="DEPTH", help="no student at these"
    )
    parser.add_argument(
        "--closed-book-lrs",
        type=float,
        nargs="*",
        default=[],
        metavar="LR",
        help="closed-book baselines at these learning rates too; each size reports its best memoriser",
    )
    parser.add_argument("--per-type", type=int, default=None, help="eval questions per type (default all)")
    parser.add_argument(
        "overrides", nargs="*", help="more hydra overrides for every size (eval.* ones go to the eval only)"
    )
    args = parser.parse_args(argv)
    quiet_libraries()
    steps_at = depth_steps(args.steps_at)
    steps_of = {d: None if d in args.closed_book_only else steps_at.get(d, args.steps) for d in args.depths}
    points = [one_size(args.run, args.out, d, steps_of[d], args) for d in steps_of]
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    atomic_write_json(args.out / "curve.json", {"settings": settings, "points": points})
    atomic_write_text(args.out / "curve.md", table(points, args.steps))
    plot(points, args.steps, args.out / "curve.png")
    print(table(points, args.steps))
    return points


if __name__ == "__main__":
    main()
