"""Synthetic worlds: entities with typed relations and numbers, rendered to passages and questions.

A world is small (a dozen people, a few cities, organisations and countries) and fully determined by
(seed, split, index). Training worlds draw names from one pool and held-out worlds from a disjoint one,
so a held-out world shares no entity with training, while the same name recurs across training worlds
with different facts: memorising facts stops paying, looking them up does not.

Three splits: `train`; `validation`, where every recipe and engine choice is made; and `heldout`, only
reported. Validation worlds draw from the held-out pool less the names of the held-out worlds of `seed`,
with ids and facts drawn apart, so neither split shares an entity with the other or with training.
`heldout_seed` draws fresh held-out worlds (from that pool less the validation names) and
`heldout_shape` changes their shape, the training and validation worlds staying exactly as they are.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cogcore.core.io import atomic_dir, atomic_write_json, sha256_file, write_jsonl
from cogcore.core.stage import Decision, decide

QUESTION_TYPES = ("lookup", "compose", "compare", "arithmetic", "unanswerable")
SPLITS = ("train", "validation", "heldout")
POOLS = ("train", "heldout")  # the name pools: validation worlds draw from the held-out one

# ---------------------------------------------------------------------------------------------------
# Relations: (subject kind, object kind or "number"), passage phrasings and question phrasings.
# Several phrasings per relation so that retrieval is not an exact-string match with the question.
RELATIONS = {
    "born_in": ("person", "city"),
    "spouse": ("person", "person"),
    "works_for": ("person", "org"),
    "birth_year": ("person", "number"),
    "country": ("city", "country"),
    "population": ("city", "number"),
    "headquarters": ("org", "city"),
    "founded": ("org", "number"),
    "founder": ("org", "person"),
}

PASSAGES = {
    "born_in": [
        "{s} was born in {o}.",
        "{s} is a native of the city of {o}.",
        "The birthplace of {s} is {o}.",
        "{s} came into the world in {o} and spent a childhood there.",
    ],
    "spouse": [
        "{s} is married to {o}.",
        "{s} and {o} are husband and wife.",
        "The spouse of {s} is {o}.",
        "{s} wed {o} in a small ceremony.",
    ],
    "works_for": [
        "{s} works for {o}.",
        "{s} is employed by {o}.",
        "{s} holds a job at {o}.",
        "The employer of {s} is {o}.",
    ],
    "birth_year": [
        "{s} was born in the year {o}.",
        "{s} was born in {o}.",
        "The birth year of {s} is {o}.",
        "Records give {o} as the year of birth of {s}.",
    ],
    "country": [
        "{s} is a city in {o}.",
        "{s} lies in the country of {o}.",
        "The city of {s} is located in {o}.",
        "{s} belongs to {o}.",
    ],
    "population": [
        "{s} has a population of {o}.",
        "{o} people live in {s}.",
        "The population of {s} is {o}.",
        "A census counted {o} residents in {s}.",
    ],
    "headquarters": [
        "{s} is headquartered in {o}.",
        "{s} has its head office in {o}.",
        "The headquarters of {s} are in {o}.",
        "{s} is based in the city of {o}.",
    ],
    "founded": [
        "{s} was founded in {o}.",
        "{s} was established in the year {o}.",
        "The founding year of {s} is {o}.",
        "{s} opened its doors in {o}.",
    ],
    "founder": [
        "{s} was founded by {o}.",
        "{o} founded {s}.",
        "The founder of {s} is {o}.",
        "{o} started {s}.",
    ],
}

LOOKUP_QUESTIONS = {
    "born_in": ["Where was {s} born?", "In which city was {s} born?", "What is the birthplace of {s}?"],
    "spouse": ["Who is {s} married to?", "Who is the spouse of {s}?"],
    "works_for": ["Which organisation does {s} work for?", "Who employs {s}?"],
    "birth_year": ["In what year was {s} born?", "What is the birth year of {s}?"],
    "country": ["In which country is {s}?", "Which country is the city of {s} in?"],
    "population": ["What is the population of {s}?", "How many people live in {s}?"],
    "headquarters": ["Where is {s} headquartered?", "In which city is {s} based?"],
    "founded": ["In what year was {s} founded?", "When was {s} established?"],
    "founder": ["Who founded {s}?", "Who is the founder of {s}?"],
}

# Compose questions follow a chain of relations from a person or organisation.
COMPOSE_QUESTIONS = {
    ("spouse", "born_in"): "Where was the spouse of {s} born?",
    ("born_in", "country"): "In which country was {s} born?",
    ("works_for", "headquarters"): "In which city is the employer of {s} headquartered?",
    ("works_for", "founder"): "Who founded the organisation that {s} works for?",
    ("born_in", "population"): "What is the population of the city where {s} was born?",
    ("founder", "birth_year"): "In what year was the founder of {s} born?",
    ("spouse", "works_for"): "Which organisation does the spouse of {s} work for?",
    ("spouse", "born_in", "country"): "In which country was the spouse of {s} born?",
    ("works_for", "headquarters", "country"): "In which country is the employer of {s} headquartered?",
    ("founder", "born_in", "country"): "In which country was the founder of {s} born?",
}
# Four-hop chains, one hop longer than any of the above: training never sees them; a held-out draw asks
# them with `heldout_shape.compose_hops: 4` (a world shape the recipe never saw).
LONG_COMPOSE_QUESTIONS = {
    ("spouse", "works_for", "headquarters", "country"): (
        "In which country is the employer of the spouse of {s} headquartered?"
    ),
    ("works_for", "founder", "born_in", "country"): (
        "In which country was the founder of the organisation that {s} works for born?"
    ),
    (
        "founder",
        "spouse",
        "born_in",
        "country",
    ): "In which country was the spouse of the founder of {s} born?",
    ("spouse", "works_for", "founder", "birth_year"): (
        "In what year was the founder of the organisation that the spouse of {s} works for born?"
    ),
    ("works_for", "founder", "born_in", "population"): (
        "What is the population of the city where the founder of the organisation that {s} works for "
        "was born?"
    ),
}


def compose_chains(hops: int | None) -> dict[tuple[str, ...], str]:
    """The compose questions with `hops` hops (None: the training chains, of 2 and 3)."""
    if hops is None:
        return COMPOSE_QUESTIONS
    chains = {c: q for c, q in {**COMPOSE_QUESTIONS, **LONG_COMPOSE_QUESTIONS}.items() if len(c) == hops}
    if not chains:
        raise ValueError(f"world.heldout_shape.compose_hops={hops}: choose 2, 3 or 4 (or null)")
    return chains


# Compare and arithmetic questions over one numeric attribute of two entities of the same kind.
# For compare, `pick` says whether the answer is the entity with the smaller or the larger number.
COMPARE_QUESTIONS = {
    "birth_year": [("Who was born first, {a} or {b}?", "min"), ("Who is younger, {a} or {b}?", "max")],
    "population": [
        ("Which city has more people, {a} or {b}?", "max"),
        ("Which city is smaller by population, {a} or {b}?", "min"),
    ],
    "founded": [
        ("Which organisation was founded earlier, {a} or {b}?", "min"),
        ("Which organisation is newer, {a} or {b}?", "max"),
    ],
}
ARITHMETIC_QUESTIONS = {
    "birth_year": "How many years apart were {a} and {b} born?",
    "population": "What is the difference between the populations of {a} and {b}?",
    "founded": "How many years apart were {a} and {b} founded?",
}

# ---------------------------------------------------------------------------------------------------
# Names: pronounceable, invented (so no real-world knowledge helps), from small pools so that names
# recur across training worlds. A stable hash puts every name in exactly one of the two splits.
ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "th", "st"]
VOWELS = ["a", "e", "i", "o", "u", "ae", "ia", "ou"]
CODAS = ["", "", "n", "r", "l", "s", "th", "m", "x"]
ORG_SUFFIXES = ["Labs", "Mining Company", "Bank", "Press", "Shipping", "Institute", "Foundry", "Airlines"]
COUNTRY_SUFFIXES = ["ia", "land", "ar", "ovia", "stan"]


def _split_of(name: str, heldout_share: float) -> str:
    bucket = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "heldout" if bucket < heldout_share else "train"


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(CODAS)).capitalize()


def made_up_name(rng: random.Random, kind: str) -> str:
    """A name of `kind` (person, city or org) shaped as the worlds' are, from no pool: for drills."""
    if kind == "person":
        return f"{_word(rng, rng.choice([1, 2]))} {_word(rng, 2)}"
    root = _word(rng, rng.choice([2, 3]))
    return root if kind == "city" else f"{root} {rng.choice(ORG_SUFFIXES)}"


def name_pools(seed: int, cfg: DictConfig) -> dict[str, dict[str, list[str]]]:
    """Pools of names per split and entity kind; the same seed gives the same pools."""
    rng = random.Random(f"names-{seed}")
    firsts = sorted({_word(rng, rng.choice([1, 2])) for _ in range(cfg.pool.first_names)})
    lasts = sorted({_word(rng, 2) for _ in range(cfg.pool.last_names)})
    roots = sorted({_word(rng, rng.choice([2, 3])) for _ in range(cfg.pool.places)})
    candidates = {
        "person": [f"{f} {last}" for f in firsts for last in lasts],
        "city": roots,
        "org": [f"{r} {s}" for r in roots for s in ORG_SUFFIXES],
        "country": [r[:-1] + s if r[-1] in "aeiou" else r + s for r in roots for s in COUNTRY_SUFFIXES],
    }
    pools: dict[str, dict[str, list[str]]] = {s: {} for s in POOLS}
    for kind, names in candidates.items():
        for split in POOLS:
            pools[split][kind] = [n for n in names if _split_of(n, cfg.heldout_share) == split]
    return pools


# ---------------------------------------------------------------------------------------------------
@dataclass
class World:
    id: str
    split: str
    entities: dict[str, list[str]]  # kind -> names
    facts: dict[tuple[str, str], str | int] = field(default_factory=dict)  # (subject, relation) -> object
    passages: dict[tuple[str, str], dict] = field(default_factory=dict)  # (subject, relation) -> passage

    def kind_of(self, name: str) -> str:
        return next(k for k, names in self.entities.items() if name in names)


def build_world(
    world_id: str,
    split: str,
    pools: dict[str, list[str]],
    cfg: DictConfig,
    seed: int | str,
    position: int,
    people: int | None = None,
) -> World:
    # Drawn from its position among the worlds, not its id (as when the ids were "w<position>").
    rng = random.Random(f"world-{seed}-w{position:03d}")
    used: set[str] = set()

    def draw(kind: str, n: int) -> list[str]:
        names = [x for x in rng.sample(pools[kind], n + len(used)) if x not in used][:n]
        used.update(names)
        return names

    sizes = cfg.entities
    world = World(
        world_id,
        split,
        {
            "country": draw("country", sizes.countries),
            "city": draw("city", sizes.cities),
            "org": draw("org", sizes.orgs),
            "person": draw("person", people or sizes.people),
        },
    )
    people, cities, orgs = world.entities["person"], world.entities["city"], world.entities["org"]
    f = world.facts
    for city in cities:
        f[city, "country"] = rng.choice(world.entities["country"])
        f[city, "population"] = rng.randrange(1_000, 100_000)
    for person in people:
        f[person, "born_in"] = rng.choice(cities)
        f[person, "birth_year"] = rng.randrange(1900, 2005)
        f[person, "works_for"] = rng.choice(orgs)
    singles = people[:]
    rng.shuffle(singles)
    n_married = int(len(people) * cfg.married_share) // 2 * 2
    for a, b in zip(singles[:n_married:2], singles[1:n_married:2], strict=True):
        f[a, "spouse"], f[b, "spouse"] = b, a
    for org in orgs:
        f[org, "headquarters"] = rng.choice(cities)
        f[org, "founded"] = rng.randrange(1700, 2020)
        f[org, "founder"] = rng.choice(people)
    for (subject, relation), obj in sorted(f.items()):
        text = rng.choice(PASSAGES[relation]).format(s=subject, o=obj)
        slug = f"{world.kind_of(subject)[0]}{world.entities[world.kind_of(subject)].index(subject)}"
        world.passages[subject, relation] = {
            "id": f"{world_id}-{slug}-{relation}",
            "world": world_id,
            "title": subject,
            "text": text,
        }
    return world


def _hop(world: World, subject: str, relation: str) -> dict:
    return {
        "subject": subject,
        "relation": relation,
        "object": world.facts[subject, relation],
        "passage": world.passages[subject, relation]["id"],
    }


def _answer(value: str | int) -> list[str]:
    return [str(value)]


def _question_maker(world: World, rng: random.Random, ghosts: list[str], chains: dict | None = None):
    """Return a function type -> question dict (or None when this world cannot make one right now).
    `chains`: the compose questions to ask (default the training chains)."""
    f = world.facts
    chains = chains or COMPOSE_QUESTIONS

    def lookup():
        subject, relation = rng.choice(sorted(f))
        hop = _hop(world, subject, relation)
        text = rng.choice(LOOKUP_QUESTIONS[relation]).format(s=subject)
        return text, _answer(hop["object"]), [hop], {}

    def compose():
        chain = rng.choice(sorted(chains))
        first_kind = RELATIONS[chain[0]][0]
        starts = [s for s in world.entities[first_kind] if (s, chain[0]) in f]
        subject = rng.choice(starts)
        hops, current = [], subject
        for relation in chain:
            if (current, relation) not in f:
                return None
            hops.append(_hop(world, current, relation))
            current = hops[-1]["object"]
        return chains[chain].format(s=subject), _answer(current), hops, {"chain": list(chain)}

    def pair(attribute: str):
        kind = RELATIONS[attribute][0]
        a, b = rng.sample(world.entities[kind], 2)
        if f[a, attribute] == f[b, attribute]:
            return None
        return a, b, [_hop(world, a, attribute), _hop(world, b, attribute)]

    def compare():
        attribute = rng.choice(sorted(COMPARE_QUESTIONS))
        template, pick = rng.choice(COMPARE_QUESTIONS[attribute])
        made = pair(attribute)
        if made is None:
            return None
        a, b, hops = made
        chooser = min if pick == "min" else max
        winner = chooser((a, b), key=lambda x: f[x, attribute])
        return template.format(a=a, b=b), [winner], hops, {"attribute": attribute, "pick": pick}

    def arithmetic():
        attribute = rng.choice(sorted(ARITHMETIC_QUESTIONS))
        made = pair(attribute)
        if made is None:
            return None
        a, b, hops = made
        diff = abs(f[a, attribute] - f[b, attribute])
        return ARITHMETIC_QUESTIONS[attribute].format(a=a, b=b), _answer(diff), hops, {"attribute": attribute}

    def unanswerable():
        # Either an entity this world does not hold, or a relation it does not hold (an unmarried
        # person's spouse, directly or as the first hop of a chain).
        unmarried = [p for p in world.entities["person"] if (p, "spouse") not in f]
        if unmarried and rng.random() < 0.5:
            subject = rng.choice(unmarried)
            chain = rng.choice([c for c in sorted(COMPOSE_QUESTIONS) if c[0] == "spouse"] + [("spouse",)])
            if len(chain) == 1:
                text = rng.choice(LOOKUP_QUESTIONS["spouse"]).format(s=subject)
            else:
                text = COMPOSE_QUESTIONS[chain].format(s=subject)
            hop = {"subject": subject, "relation": "spouse", "object": None, "passage": None}
            return text, ["unknown"], [hop], {"missing": "relation"}
        relation = rng.choice(sorted(r for r, (kind, _) in RELATIONS.items() if kind == "person"))
        subject = rng.choice(ghosts)
        text = rng.choice(LOOKUP_QUESTIONS[relation]).format(s=subject)
        hop = {"subject": subject, "relation": relation, "object": None, "passage": None}
        return text, ["unknown"], [hop], {"missing": "entity"}

    makers = {
        "lookup": lookup,
        "compose": compose,
        "compare": compare,
        "arithmetic": arithmetic,
        "unanswerable": unanswerable,
    }
    return makers


def make_questions(
    world: World,
    counts: dict[str, int],
    ghosts: list[str],
    seed: int | str,
    position: int,
    chains: dict | None = None,
) -> list[dict]:
    """`counts[type]` distinct questions of each type; the gold passages of each hold its answer."""
    rng = random.Random(f"questions-{seed}-w{position:03d}")  # by position, as build_world
    makers = _question_maker(world, rng, ghosts, chains)
    questions, seen = [], set()
    for qtype in QUESTION_TYPES:
        made, attempts = 0, 0
        while made < counts.get(qtype, 0) and attempts < 200 * max(1, counts[qtype]):
            attempts += 1
            result = makers[qtype]()
            if result is None or result[0] in seen:
                continue
            text, answers, hops, extra = result
            seen.add(text)
            questions.append(
                {
                    "id": f"{world.id}-q{len(questions):03d}",
                    "world": world.id,
                    "split": world.split,
                    "type": qtype,
                    "question": text,
                    "answers": answers,
                    "gold_passages": [h["passage"] for h in hops if h["passage"]],
                    "hops": hops,
                    **extra,
                }
            )
            made += 1
    return questions


def world_ids(n: int, seed: int) -> list[str]:
    """`n` short world ids ("w417"), copied into every citation a student writes. Their numbers are drawn
    at random from a range about eight times larger than `n`, so the training worlds' ids hold every digit
    at every place and nearly every pair of digits (95 of 100 for the demo's 120), and a student learns
    to copy a held-out world's number. Numbered in order ("w000".."w119", then "w120".. held out), "2"
    never followed "w1" in training, and a 5-epoch demo student wrote "[w102-" for "[w120-"."""
    width = max(3, len(str(8 * n)))
    numbers = random.Random(f"{seed}-world-ids").sample(range(10**width), n)
    return [f"w{number:0{width}d}" for number in numbers]


def more_world_ids(n: int, like: list[str], seed: str) -> list[str]:
    """`n` more world ids as wide as those of `like`, none of them among `like`, drawn from `seed`."""
    width = len(like[0]) - 1
    taken = {int(i[1:]) for i in like}
    free = [x for x in range(10**width) if x not in taken]
    return [f"w{number:0{width}d}" for number in random.Random(seed).sample(free, n)]


def _without(pools: dict[str, list[str]], worlds: list[World]) -> dict[str, list[str]]:
    """The name pools less every name the `worlds` hold."""
    held = {n for w in worlds for names in w.entities.values() for n in names}
    return {kind: [n for n in names if n not in held] for kind, names in pools.items()}


def generate(cfg: DictConfig) -> tuple[list[World], dict[str, list[dict]]]:
    """All worlds of every split and their questions, from `cfg` (a `world` config group node).

    The training worlds and the held-out worlds of `seed` are drawn exactly as before validation worlds
    existed (same ids, names, facts and questions). Validation worlds come after them, drawn from their own
    seed; with `heldout_seed` the held-out worlds are fresh ones, drawn after the validation worlds."""
    pools = name_pools(cfg.seed, cfg)
    worlds, questions = [], {split: [] for split in SPLITS}
    counts = {split: dict(cfg.questions[split]) for split in SPLITS}
    shape = cfg.get("heldout_shape") or {}
    ids = world_ids(cfg.train_worlds + cfg.heldout_worlds, cfg.seed)
    fresh = cfg.get("heldout_seed")
    if fresh is None and any(v is not None for v in shape.values()):
        raise ValueError(
            "world.heldout_shape changes freshly drawn held-out worlds only: set world.heldout_seed=<n> too"
        )
    total = cfg.train_worlds + cfg.validation_worlds + cfg.heldout_worlds * (2 if fresh is not None else 1)

    def draw(split, count, pool, seed, first, world_id, people=None, chains=None, out=True):
        """`count` worlds of `split` (kept among the output if `out`), their rng strings from `seed` and
        their positions from `first`."""
        made = []
        for i in range(count):
            position = first + i
            world = build_world(world_id(i), split, pool, cfg, seed, position, people)
            held = {n for names in world.entities.values() for n in names}
            people_n = people or cfg.entities.people
            ghosts = [n for n in pool["person"][: 4 * people_n + 50] if n not in held]
            made.append(world)
            if out:
                worlds.append(world)
                questions[split] += make_questions(world, counts[split], ghosts, seed, position, chains)
            bar.update()
        return made

    with tqdm(total=total, desc="worlds", unit="world", disable=total < 20) as bar:
        draw("train", cfg.train_worlds, pools["train"], cfg.seed, 0, lambda i: ids[i])
        heldout = draw(
            "heldout",
            cfg.heldout_worlds,
            pools["heldout"],
            cfg.seed,
            cfg.train_worlds,
            lambda i: ids[cfg.train_worlds + i],
            out=fresh is None,
        )
        validation_ids = more_world_ids(cfg.validation_worlds, ids, f"{cfg.seed}-validation-ids")
        validation = draw(
            "validation",
            cfg.validation_worlds,
            _without(pools["heldout"], heldout),
            f"{cfg.seed}-validation",
            0,
            lambda i: validation_ids[i],
        )
        if fresh is not None:
            fresh_ids = more_world_ids(
                cfg.heldout_worlds, ids + validation_ids, f"{cfg.seed}-heldout-{fresh}-ids"
            )
            draw(
                "heldout",
                cfg.heldout_worlds,
                _without(pools["heldout"], validation),
                f"{cfg.seed}-heldout-{fresh}",
                0,
                lambda i: fresh_ids[i],
                people=shape.get("people"),
                chains=compose_chains(shape.get("compose_hops")),
            )
    return worlds, questions


def write_world(cfg: DictConfig, out_dir: str | Path) -> Path:
    """Write corpus.jsonl, questions/{train,heldout}.jsonl and manifest.json atomically."""
    worlds, questions = generate(cfg)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        corpus = [p for w in worlds for p in w.passages.values()]
        write_jsonl(tmp / "corpus.jsonl", corpus)
        for split in SPLITS:
            write_jsonl(tmp / "questions" / f"{split}.jsonl", questions[split])
        by_type = {
            split: {t: sum(q["type"] == t for q in questions[split]) for t in QUESTION_TYPES}
            for split in SPLITS
        }
        atomic_write_json(
            tmp / "manifest.json",
            {
                "config": OmegaConf.to_container(cfg, resolve=True),
                "worlds": {split: [w.id for w in worlds if w.split == split] for split in SPLITS},
                "passages": len(corpus),
                "questions": by_type,
                "corpus_sha256": sha256_file(tmp / "corpus.jsonl"),
            },
        )
    return out_dir


def world(cfg: DictConfig) -> Path:
    """`cogcore world`: write `<run_dir>/world/` (skipped when it already holds this config's worlds)."""
    out = Path(cfg.run_dir) / "world"
    settings = OmegaConf.to_container(cfg.world, resolve=True)
    if decide(out / "manifest.json", settings, key="config", force=cfg.force) is Decision.UP_TO_DATE:
        print(f"world: {out} is up to date")
        return out
    write_world(cfg.world, out)
    print(f"world: wrote {out}")
    return out
