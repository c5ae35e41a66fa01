"""SmolLM2-135M-Instruct as student=smollm2 loads it (GGUF, ChatML+Hermes template), untrained, asked three
questions through the engine with the search tool offered: does it search before any distillation?

    python benchmarks/smol_smoke.py
"""

import json
import time
from pathlib import Path

from hydra import compose, initialize_config_module

from cogcore.core.engine import Engine
from cogcore.core.generation import GenerationConfig
from cogcore.core.tools import SYSTEM_PROMPT
from cogcore.distill.student import build_student, load_tokenizer

t = time.time()
with initialize_config_module("cogcore.conf", version_base=None):
    scfg = compose("distill", overrides=["student=smollm2"]).student
tok = load_tokenizer(scfg, Path("-"), Path("-"), Path("/tmp/none"))
model = build_student(scfg, tok).eval()
print("loaded", round(time.time() - t, 1), "s")
engine = Engine(model, tok)
print("format", engine.format.name)
qs = ["What is the capital of France?", "In which country is Baesteter?", "Who founded Krathur Airlines?"]
convs = [[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q}] for q in qs]


def search(row, query, k):
    print("SEARCH", row, repr(query), k)
    return [{"id": "w1-c3-country", "title": "Baesteter", "text": "Baesteter belongs to Zusaethland."}]


t = time.time()
outs = engine.generate(convs, search, GenerationConfig(max_new_tokens=160))
print("generated", round(time.time() - t, 1), "s")
for o in outs:
    print(o["stop"], json.dumps(o["messages"][2:], ensure_ascii=False)[:700])
