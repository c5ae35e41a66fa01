"""The machine a GPU benchmark ran on, as lines for its report: versions, nvidia-smi, torch.cuda."""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import sys

import torch


def machine_lines(*packages: str) -> list[str]:
    """Python, torch and each of `packages` (those importable) with their versions, then the GPU."""
    versions = [f"python {sys.version.split()[0]}", f"torch {torch.__version__}"]
    for name in packages:
        with contextlib.suppress(ImportError):
            versions.append(f"{name} {importlib.import_module(name).__version__}")
    lines = [", ".join(versions)]
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,clocks.max.sm", "--format=csv"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        lines += smi.stdout.strip().splitlines() or [f"nvidia-smi: {smi.stderr.strip()}"]
    except (OSError, subprocess.SubprocessError) as e:
        lines.append(f"nvidia-smi: not available ({type(e).__name__})")
    if torch.cuda.is_available():
        lines.append(f"torch.cuda: {torch.cuda.get_device_name(0)}, cuda {torch.version.cuda}")
    else:
        lines.append("torch.cuda: not available (CPU run)")
    return lines


def report_head(bench: str, tiny: bool) -> dict:
    """The first keys of a benchmark's JSON summary: which, at what size, on what."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"bench": bench, "tiny": tiny, "device": device, "torch": torch.__version__}
