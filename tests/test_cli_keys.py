"""A mistyped config key fails naming the closest real one, before Hydra suggests appending it with `+`."""

from __future__ import annotations

import subprocess
import sys

from cogcore.core.cli import unknown_key


def test_a_mistyped_key_names_the_closest_real_key():
    assert unknown_key("eval", ["eval.sytems=[student]"]) == (
        "cogcore eval: eval.sytems is not a key of its config; did you mean eval.systems? "
        "(`cogcore eval --cfg job` shows all)"
    )
    # a missing parent is found through the whole key; a hopeless one lists its siblings
    assert "did you mean eval.generation.retries?" in unknown_key("eval", ["generation.retrys=2"])
    assert "the keys of serve are:" not in unknown_key("serve", ["generation.retrys=1"])
    far = unknown_key("serve", ["generation.qwxyvbnmpl=1"])
    assert "the keys of generation are: generation.max_new_tokens, " in far
    assert unknown_key("eval", ["eval.systems=[student]", "+eval.extra=1"]) is None  # real or appended


def test_the_command_line_prints_it_instead_of_hydras_hint():
    run = subprocess.run(
        [sys.executable, "-m", "cogcore.core.cli", "eval", "eval.sytems=[student]"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "did you mean eval.systems?" in run.stderr and "+eval" not in run.stderr
