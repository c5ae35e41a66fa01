"""Every output of the generation path on scripted models, as one JSON file, to compare two checkouts.

52 settings (greedy and sampled; no, branching and sampled retries; linked; steps; quotes on and off;
streamed) over five scripted rows that quote returned passages, slip inside a quote, cite an id no search
returned (taken back), cite an unlinked passage, and chain citations. A refactor that must not change
behaviour writes the same file before and after:

    PYTHONPATH=<a cogcore/ namespace of the old checkout> python benchmarks/engine_outputs.py old.json
    python benchmarks/engine_outputs.py new.json && cmp old.json new.json

(the namespace: a folder `cogcore/` of symlinks core, retrieval, distill, evals, conf into the checkout).
The scripted model is the engine tests' (tests/tiny_chat.py), with the tiny model's own logits added as
noise so that sampling has choices; it works with the engine before and after core.generation existed.
"""

import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_chat import BatchScriptedLM

from cogcore.core.chat import CALL, END_CALL
from cogcore.core.engine import Engine
from cogcore.core.tools import SYSTEM_PROMPT
from cogcore.distill.tokenizer import train_tokenizer

try:
    from cogcore.core.generation import GenerationConfig, generate

    NEW = True
except ImportError:
    from cogcore.core.engine import GenerationConfig

    NEW = False


def run(engine, convs, search, cfg, on_token=None):
    if NEW:
        return generate(engine, convs, search, cfg, on_token)
    return engine.generate(convs, search, cfg, on_token)


TEXTS = [
    "Ana was born in Kelvar. Kelvar is a city in Ostria. Answer: unknown",
    'I need the birthplace of Ana. {"query": "Ana born", "k": 2} search results passages',
    "Where was Ana born? In which country is Kelvar? 1953 - 1922 = 31 Bo is tall short Acme works Zed",
] * 20
tok = train_tokenizer(TEXTS, vocab_size=400)


def conversation(question):
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


CALL_BO = f'{CALL}{{"query": "Bo", "k": 3}}{END_CALL}'
PASSAGES = [
    {"id": "p1", "title": "Ana", "text": "Ana is tall."},
    {"id": "p2", "title": "Bo", "text": "Bo works at Acme."},
    {"id": "p3", "title": "Acme", "text": "Acme is in Kelvar."},
    {"id": "p4", "title": "Bo", "text": "Bo is tall."},
]
TURNS = [  # each row's final turn, in the model's order of preference
    ["[p9] Bo: Bo works at Zed.\nAnswer: Zed", "The results do not say.\nAnswer: unknown"],
    ["[p1] Ana: Ana is tall.\nAnswer: tall", "[p4] Bo: Bo is short.\nAnswer: short"],
    [
        "[p2] Bo: Bo works at Acme.\n[p3] Acme: Acme is in Kelvar.\nAnswer: Kelvar",
        "[p3] Acme: Acme is in Ostria.\nAnswer: Ostria",
    ],
    ["[p4] Bo: Bo is short. So Bo is short.\nAnswer: short", "Bo is tall.\nAnswer: tall"],
    ["Bo: Bo is short.\n[p2] Bo: Bo works at Zed.\nAnswer: Zed", "[p4] Bo: Bo is tall.\nAnswer: tall"],
]


def outputs(temperature, retries, retry_temperature, linked, steps, quotes, stream) -> dict:
    scripts = [[CALL_BO, turn] for turn in TURNS]
    batches = [scripts[n:] + scripts[:n] for n in range(5)]  # the first try's rows, then each retry's
    cfg = GenerationConfig(
        max_new_tokens=160, temperature=temperature, top_k=50, top_p=0.95, seed=3, quotes=quotes,
        retries=retries, retry_temperature=retry_temperature, linked=linked, steps=steps,
    )  # fmt: skip
    seen = []

    def on_token(row, token):
        seen.append((row, token))
        return False

    questions = [conversation(f"Where is the employer of Bo? ({i})") for i in range(len(TURNS))]
    engine = Engine(BatchScriptedLM(tok, batches, noise=0.5), tok)
    outs = run(engine, questions, lambda row, q, k: PASSAGES[:k], cfg, on_token if stream else None)
    return {"outs": outs, "seen": seen}


results = {}
for temperature, (retries, again), linked, steps, quotes, stream in itertools.product(
    (0.0, 1.0), ((0, 0.0), (4, 0.0), (3, 0.8)), (False, True), (False, True), (True, False), (False, True)
):
    if not (stream and (retries or linked or steps)):  # a streamed answer is never retried
        key = f"t{temperature}-r{retries}-{again}-l{linked}-s{steps}-q{quotes}-st{stream}"
        results[key] = outputs(temperature, retries, again, linked, steps, quotes, stream)
json.dump(results, open(sys.argv[1], "w"), sort_keys=True, default=str)
print(len(results), "settings;", sum(o.get("tries", 1) for r in results.values() for o in r["outs"]), "tries")
