"""The 'before' checkpoint of the SmolLM2 run: SmolLM2-135M-Instruct as student=smollm2 loads it (GGUF,
dequantised), with cogcore's ChatML+Hermes template and tool format, saved as an HF checkpoint untrained,
so the evals run it exactly as they run the distilled student.

    python benchmarks/smol_before.py <out dir>
"""

import sys
from pathlib import Path

from hydra import compose, initialize_config_module

from cogcore.distill.student import build_student, load_tokenizer

with initialize_config_module("cogcore.conf", version_base=None):
    scfg = compose("distill", overrides=["student=smollm2"]).student
out = Path(sys.argv[1])
tokenizer = load_tokenizer(scfg, Path("-"), Path("-"), out)
build_student(scfg, tokenizer).save_pretrained(out)
tokenizer.save_pretrained(out)
print(f"saved {out}")
