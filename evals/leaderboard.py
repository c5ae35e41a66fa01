"""The leaderboard: systems x scores, as markdown (to read), JSON (to compare) and a plot (to see).

leaderboard.json  {"systems": [{"name", "params",
                   "scores": {"K", "R", "T", "T@1", "R@1", "D", "recall@5", "G"},
                   "by_type": {type: {"K", "R", "T", "T@1", "R@1", "D", "ci": {suite: [lo, hi]},
                                      "tries": {suite: mean tries per question}}},
                   "ci": {"K": [lo, hi], ..., "T@1": [lo, hi]}, "tries": {suite: mean tries per question},
                   "questions_per_s"}], "contamination": {...}, "config": {...}}
leaderboard.md    the same systems, one row each, plus the per-type table of the T suite (T@1 / T)
leaderboard.png   knowledge (K) against reasoning (R), one point per system; T@1 beside T per system

T@1 and R@1 are one answer per question, no retries, step checks or linked support: what a streamed
assistant answer (`cogcore chat`, streamed `cogcore serve`) is. T and R may add the verified retries of
eval.generation; "tries" says how many it took on average.
"""

from __future__ import annotations

from pathlib import Path

from cogcore.core.io import atomic_write_json, atomic_write_text

COLUMNS = ("K", "R@1", "R", "T@1", "T", "D", "recall@5", "G")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def _tries(s: dict, suite: str) -> str:
    tries = (s.get("tries") or {}).get(suite)
    return "-" if tries is None else f"{tries:.2f}"


def _interval(ci: list[float] | None) -> str:
    return "" if not ci else f" ({ci[0]:.2f}-{ci[1]:.2f})"


def markdown(board: dict) -> str:
    systems = board["systems"]
    lines = [
        "| system | " + " | ".join(COLUMNS) + " | tries (T) | params | questions/s |",
        "| --- |" + " --- |" * (len(COLUMNS) + 3),
    ]
    for s in systems:
        cells = [_fmt(s["scores"].get(c)) for c in COLUMNS]
        qps = s.get("questions_per_s")
        lines.append(
            f"| {s['name']} | " + " | ".join(cells) + f" | {_tries(s, 'T')} | {_params(s['params'])} | "
            f"{'-' if qps is None else f'{qps:.1f}'} |"
        )
    types = sorted({t for s in systems for t in s["by_type"]})
    lines += ["", "T@1 / T (live search) accuracy per question type, 95% intervals, mean tries:", ""]
    lines += ["| system | " + " | ".join(types) + " |", "| --- |" + " --- |" * len(types)]
    for s in systems:
        cells = []
        for t in types:
            row = s["by_type"].get(t, {})
            if row.get("T") is None:
                cells.append("-")
                continue
            ci = row.get("ci", {})
            cells.append(
                f"{_fmt(row.get('T@1'))}{_interval(ci.get('T@1'))} / {_fmt(row['T'])}{_interval(ci.get('T'))}"
                f", {_tries(row, 'T')} tries"
            )
        lines.append(f"| {s['name']} | " + " | ".join(cells) + " |")
    ci = [
        f"{s['name']} " + ", ".join(f"{k}{_interval(s['ci'][k])}" for k in ("T@1", "T") if s["ci"].get(k))
        for s in systems
        if s["ci"].get("T")
    ]
    contamination = board.get("contamination") or {}
    lines += [
        "",
        "K closed book, R gold passages given, T live search, D deferral in the closed-book run "
        "(not_attempted / (not_attempted + incorrect)), G compositionality gap (multi-hop failures whose "
        "single hops all succeed). T@1 and R@1: one answer per question, no retries, step checks or "
        "linked support (what `cogcore chat` and streamed `cogcore serve` deliver); T and R with the "
        "verified retries of eval.generation, tries per question in `tries`. 95% bootstrap intervals: "
        + ("; ".join(ci) or "-")
        + ".",
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

    fig, (ax, bars) = plt.subplots(1, 2, figsize=(11, 5))
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
    scored = [s for s in board["systems"] if s["scores"].get("T") is not None]
    x = range(len(scored))
    for offset, key in ((-0.2, "T@1"), (0.2, "T")):
        bars.bar([i + offset for i in x], [s["scores"].get(key) or 0 for s in scored], 0.4, label=key)
    bars.set_xticks(list(x), [s["name"] for s in scored], rotation=20, ha="right")
    bars.set(ylim=(0, 1.05), ylabel="accuracy, live search", title="One try (T@1) vs verified retries (T)")
    bars.legend()
    bars.grid(alpha=0.3, axis="y")
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
