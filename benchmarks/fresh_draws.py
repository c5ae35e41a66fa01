"""The table of benchmarks/fresh_draws.sh: the student's T@1, T, R@1 and R overall and per question type
on the validation split, on each fresh held-out draw with their mean and spread (min-max), and on the
unseen world shape, read from each draw's leaderboard.json.

    python benchmarks/fresh_draws.py runs/draws
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = ("T@1", "T", "R@1", "R")


def student(path: Path) -> dict:
    board = json.loads((path / "evals" / "leaderboard.json").read_text())
    return next(s for s in board["systems"] if s["name"] == "student")


def rows_of(entry: dict) -> dict[str, dict]:
    """overall and per type: {key: score}, plus the questions and the mean tries in T."""
    rows = {"overall": {k: entry["scores"][k] for k in KEYS} | {"tries": entry["tries"]["T"]}}
    for t, row in entry["by_type"].items():
        rows[t] = {k: row[k] for k in KEYS} | {"tries": row["tries"]["T"]}
    return rows


def main(out: Path) -> None:
    draws = {p.name: rows_of(student(p)) for p in sorted(out.iterdir()) if (p / "evals").exists()}
    fresh = [draws[n] for n in sorted(draws) if n.startswith("fresh")]
    parts = sorted(next(iter(draws.values())))
    parts.remove("overall")
    parts.insert(0, "overall")
    print("| split | part | T@1 | T | R@1 | R | tries (T) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, rows in draws.items():
        for part in parts:
            r = rows[part]
            print(f"| {name} | {part} | " + " | ".join(f"{r[k]:.3f}" for k in (*KEYS, "tries")) + " |")
    if fresh:
        for part in parts:
            cells = []
            for k in (*KEYS, "tries"):
                values = [d[part][k] for d in fresh]
                mean = sum(values) / len(values)
                cells.append(f"{mean:.3f} ({min(values):.3f}-{max(values):.3f})")
            print(f"| mean of {len(fresh)} fresh draws (min-max) | {part} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/draws"))
