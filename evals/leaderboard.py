"""The leaderboard: systems x scores, as markdown (to read), JSON (to compare) and a plot (to see).

leaderboard.json  {"systems": [{"name", "params", "scores": {"K", "R", "T", "D", "recall@5", "G"},
                   "by_type": {type: {"K", "R", "T", "D"}}, "ci": {"K": [lo, hi], ...},
                   "questions_per_s"}], "contamination": {...}, "config": {...}}
leaderboard.md    the same systems, one row each, plus the per-type table of the T suite
leaderboard.png   knowledge (K) against reasoning (R), one point per system
"""

from __future__ import annotations

from pathlib import Path

from cogcore.core.io import atomic_write_json, atomic_write_text

COLUMNS = ("K", "R", "T", "D", "recall@5", "G")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def markdown(board: dict) -> str:
    systems = board["systems"]
    lines = [
        "| system | " + " | ".join(COLUMNS) + " | params | questions/s |",
        "| --- |" + " --- |" * (len(COLUMNS) + 2),
    ]
    for s in systems:
        cells = [_fmt(s["scores"].get(c)) for c in COLUMNS]
        qps = s.get("questions_per_s")
        lines.append(
            f"| {s['name']} | " + " | ".join(cells) + f" | {_params(s['params'])} | "
            f"{'-' if qps is None else f'{qps:.1f}'} |"
        )
    types = sorted({t for s in systems for t in s["by_type"]})
    lines += ["", "T (live search) accuracy per question type:", ""]
    lines += ["| system | " + " | ".join(types) + " |", "| --- |" + " --- |" * len(types)]
    for s in systems:
        lines.append(
            f"| {s['name']} | " + " | ".join(_fmt(s["by_type"].get(t, {}).get("T")) for t in types) + " |"
        )
    ci = [f"{s['name']} T {s['ci']['T'][0]:.2f}-{s['ci']['T'][1]:.2f}" for s in systems if s["ci"].get("T")]
    contamination = board.get("contamination") or {}
    lines += [
        "",
        "K closed book, R gold passages given, T live search, D deferral in the closed-book run "
        "(not_attempted / (not_attempted + incorrect)), G compositionality gap (multi-hop failures whose "
        "single hops all succeed). 95% bootstrap intervals: " + ("; ".join(ci) or "-") + ".",
    ]
    if contamination:
        lines.append(
            f"Contamination ({contamination['n']}-gram overlap with the training traces): "
            f"{contamination['leaked']} of {contamination['questions']} eval questions."
        )
    return "\n".join(lines) + "\n"


def plot(board: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for s in board["systems"]:
        k, r = s["scores"].get("K"), s["scores"].get("R")
        if k is None or r is None:
            continue
        ax.scatter(k, r, s=60)
        ax.annotate(s["name"], (k, r), textcoords="offset points", xytext=(6, 4))
    ax.set(
        xlim=(-0.05, 1.05),
        ylim=(-0.05, 1.05),
        xlabel="K: knowledge (closed book)",
        ylabel="R: reasoning (gold passages given)",
        title="What a model knows vs what it can do",
    )
    ax.plot([0, 1], [0, 1], color="0.85", linewidth=1, zorder=0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write_leaderboard(board: dict, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(board)
    atomic_write_json(out / "leaderboard.json", board)
    atomic_write_text(out / "leaderboard.md", text)
    plot(board, out / "leaderboard.png")
    return text
