"""The cognitive-core curve (issue 32, section 3): students of growing size by one depth dial, each
trained at the same budget in tokens on the same traces, and for each:

- T@1 and T on held-out worlds (reasoning with lookup: the student with its tool);
- closed-book accuracy K of the same architecture trained on question -> answer pairs, on the training
  worlds it memorised and on held-out worlds (memorised knowledge, and whether it transfers);
- D, the student's deferral with the tool down.

The depth dial d sets everything, as nanochat's depth does: d layers of width 32 d, 2 d heads of 16,
an MLP 3 times as wide (d=2: 0.17M parameters, 4: 0.98M (the demo student), 7: 4.8M, 10: 13.6M). Every
size trains `--steps` steps of distill's rows (distill.global_batch x distill.seq_len tokens each): the
same tokens. The closed-book baseline keeps eval.closed_book's own schedule (30 epochs of its pairs).

    python benchmarks/curve.py --run runs/demo --depths 2 4 7 10 --steps 4576 --per-type 12 --out runs/curve

Writes <out>/d<d>/ (a run per size, world, index and traces linked from --run), <out>/curve.json and
<out>/curve.png. Each size is resumable: a finished student or baseline is reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hydra import compose, initialize_config_module


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


def one_size(run: Path, out: Path, depth: int, steps: int, per_type: int | None, extra: list[str]) -> dict:
    from cogcore.distill.train import distill
    from cogcore.evals.run import evaluate

    run_dir = out / f"d{depth}"
    run_dir.mkdir(parents=True, exist_ok=True)
    for part in ("world", "index", "traces"):
        link = run_dir / part
        if not link.exists():
            link.symlink_to((run / part).resolve())
    is_eval = [o.lstrip("+").startswith("eval.") for o in extra]
    size = [*arch(depth), *(o for o, e in zip(extra, is_eval, strict=True) if not e)]
    eval_only = [o for o, e in zip(extra, is_eval, strict=True) if e]
    distill(cfg_of("distill", run_dir, [*size, f"distill.max_steps={steps}"]))
    evaluate(
        cfg_of(
            "eval",
            run_dir,
            [
                *size,
                *eval_only,
                "eval.systems=[student,closed_book]",
                *([f"eval.per_type={per_type}"] if per_type else []),
            ],
        )
    )
    board = json.loads((run_dir / "evals" / "leaderboard.json").read_text())
    by_name = {s["name"]: s for s in board["systems"]}
    student, closed = by_name["student"], by_name["closed_book"]
    return {
        "depth": depth,
        "params": student["params"],
        "T@1": student["scores"]["T@1"],
        "T": student["scores"]["T"],
        "D": student["scores"]["D"],
        "closed_book_heldout": closed["scores"]["K"],
        "closed_book_train": by_name.get("closed_book (training worlds)", {}).get("scores", {}).get("K"),
        "ci": {"T@1": student["ci"]["T@1"], "T": student["ci"]["T"]},
    }


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    params = [p["params"] for p in points]
    for key, label in (
        ("T@1", "T@1: reasoning with lookup, one try (held out)"),
        ("T", "T: with verified retries (held out)"),
        ("closed_book_train", "closed book, training worlds (memorised)"),
        ("closed_book_heldout", "closed book, held-out worlds"),
        ("D", "D: deferral with the tool down"),
    ):
        ax.plot(params, [p[key] for p in points], marker="o", label=label)
    ax.set(xscale="log", ylim=(-0.05, 1.05), xlabel="parameters", ylabel="accuracy")
    ax.set_title("The cognitive-core curve: reasoning saturates small, memorising needs size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="a run with world, index, traces")
    parser.add_argument("--out", type=Path, default=Path("runs/curve"))
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 7, 10])
    parser.add_argument("--steps", type=int, default=4576, help="optimizer steps per size: the token budget")
    parser.add_argument("--per-type", type=int, default=None, help="eval questions per type (default all)")
    parser.add_argument(
        "overrides", nargs="*", help="more hydra overrides for every size (eval.* ones go to the eval only)"
    )
    args = parser.parse_args()
    points = [one_size(args.run, args.out, d, args.steps, args.per_type, args.overrides) for d in args.depths]
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    (args.out / "curve.json").write_text(json.dumps({"settings": settings, "points": points}, indent=1))
    plot(points, args.out / "curve.png")
    for p in points:
        print(json.dumps(p))


if __name__ == "__main__":
    main()
