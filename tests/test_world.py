import re
from collections import defaultdict

import pytest
from conftest import SMALL_WORLD, make_cfg

from cogcore.core.io import read_jsonl
from cogcore.core.worlds.world import PASSAGES, QUESTION_TYPES, generate, world_ids


def world_cfg(*overrides):
    return make_cfg("world", "unused", *SMALL_WORLD, *overrides).world


def as_records(worlds, questions):
    return [p for w in worlds for p in w.passages.values()], questions


def test_same_seed_same_world_other_seed_other_world():
    assert as_records(*generate(world_cfg())) == as_records(*generate(world_cfg()))
    assert as_records(*generate(world_cfg())) != as_records(*generate(world_cfg("world.seed=1")))


def test_world_ids_are_short_distinct_and_drawn_over_all_digits():
    """The demo's 124 ids: not numbered in order (where "w120".. held out followed "w000".."w119", so "2"
    never came after "w1" in training), but drawn so that nearly every digit pair occurs in training ids
    at each place, and a student copies a held-out number rather than meeting a pair it never saw."""
    ids = world_ids(124, seed=0)
    assert ids == world_ids(124, seed=0) != world_ids(124, seed=1)
    assert len(set(ids)) == 124 and all(re.fullmatch(r"w\d{3}", i) for i in ids)
    train = ids[:120]
    for place in range(1, 4):
        assert len({i[place] for i in train}) == 10  # every digit at every place
    pairs = {(i[place], i[place + 1]) for i in train for place in (1, 2)}
    assert len(pairs) >= 90
    assert re.fullmatch(r"w\d{5}", world_ids(2000, seed=0)[0])  # wider ids for more worlds


def test_every_type_in_the_configured_numbers():
    cfg = world_cfg()
    worlds, questions = generate(cfg)
    splits = (
        ("train", cfg.train_worlds),
        ("validation", cfg.validation_worlds),
        ("heldout", cfg.heldout_worlds),
    )
    for split, n_worlds in splits:
        for qtype in QUESTION_TYPES:
            made = [q for q in questions[split] if q["type"] == qtype]
            assert len(made) == n_worlds * cfg.questions[split][qtype], (split, qtype)
    ids = [q["id"] for qs in questions.values() for q in qs]
    assert len(ids) == len(set(ids))


def numbers_in(text):
    return [int(n) for n in re.findall(r"\d+", text)]


def test_gold_passages_hold_the_answer():
    worlds, questions = generate(world_cfg())
    corpus = {p["id"]: p for w in worlds for p in w.passages.values()}
    by_world = defaultdict(list)
    for p in corpus.values():
        by_world[p["world"]].append(p["text"])
    for q in questions["train"] + questions["validation"] + questions["heldout"]:
        gold = [corpus[g]["text"] for g in q["gold_passages"]]
        if q["type"] != "unanswerable":
            for hop, text in zip(q["hops"], gold, strict=True):
                assert hop["subject"] in text and str(hop["object"]) in text, q
        answer = q["answers"][0]
        if q["type"] in ("lookup", "compose"):
            assert answer in gold[-1]
        elif q["type"] == "compare":
            (a, ya), (b, yb) = [
                (h["subject"], numbers_in(t)[-1]) for h, t in zip(q["hops"], gold, strict=True)
            ]
            expected = (a if ya < yb else b) if q["pick"] == "min" else (a if ya > yb else b)
            assert answer == expected, q
        elif q["type"] == "arithmetic":
            x, y = (numbers_in(t)[-1] for t in gold)
            assert answer == str(abs(x - y)), q
        else:
            assert answer == "unknown" and gold == []
            hop = q["hops"][0]
            texts = by_world[q["world"]]
            if q["missing"] == "entity":  # no passage of the world mentions the entity at all
                assert not any(hop["subject"] in t for t in texts), q
            else:  # the entity exists but no passage states the relation
                assert any(hop["subject"] in t for t in texts)
                assert not any(
                    hop["subject"] in t and ("married" in t or "spouse" in t or "wed " in t or "husband" in t)
                    for t in texts
                ), q


def names_by_split(worlds) -> dict[str, dict[str, set]]:
    names = {split: defaultdict(set) for split in ("train", "validation", "heldout")}
    for w in worlds:
        for kind_names in w.entities.values():
            for name in kind_names:
                names[w.split][name].add(w.id)
    return names


def test_heldout_and_validation_share_no_entity_with_training_or_each_other_but_training_names_recur():
    worlds, _ = generate(world_cfg("world.train_worlds=40"))
    names = names_by_split(worlds)
    assert not set(names["train"]) & set(names["heldout"])
    assert not set(names["train"]) & set(names["validation"])
    assert not set(names["validation"]) & set(names["heldout"])
    assert len({w.id for w in worlds}) == len(worlds)
    recurring = [n for n, ids in names["train"].items() if len(ids) > 1]
    assert recurring
    # A recurring name carries different facts in different worlds.
    facts = defaultdict(set)
    for w in worlds:
        for (subject, relation), obj in w.facts.items():
            if subject in recurring:
                facts[subject, relation].add(obj)
    assert any(len(objs) > 1 for objs in facts.values())


def test_several_phrasings_per_relation():
    worlds, _ = generate(world_cfg())
    used = defaultdict(set)
    for w in worlds:
        for (subject, relation), passage in w.passages.items():
            obj = w.facts[subject, relation]
            used[relation].add(passage["text"].replace(subject, "{s}").replace(str(obj), "{o}"))
    for relation, phrasings in used.items():
        assert len(phrasings & set(PASSAGES[relation])) >= 2, relation


def test_world_job_writes_the_artifact(tmp_path):
    from cogcore.core.worlds.world import world

    out = world(make_cfg("world", tmp_path, *SMALL_WORLD))
    assert (out / "manifest.json").exists()
    corpus = read_jsonl(out / "corpus.jsonl")
    heldout = read_jsonl(out / "questions" / "heldout.jsonl")
    assert {p["world"] for p in corpus} >= {q["world"] for q in heldout}
    assert all(g in {p["id"] for p in corpus} for q in heldout for g in q["gold_passages"])


def test_the_demo_heldout_is_the_same_with_validation_worlds_beside_it(tmp_path):
    """Validation worlds are drawn after the others, from their own seed: the training and held-out worlds
    are exactly what they were before validation worlds existed (the demo's heldout.jsonl sha256 at
    b39bc7e, and as with world.validation_worlds=0)."""
    import hashlib

    from cogcore.core.io import write_jsonl

    cfg = make_cfg("world", "unused").world
    worlds, questions = generate(cfg)
    write_jsonl(tmp_path / "heldout.jsonl", questions["heldout"])
    digest = hashlib.sha256((tmp_path / "heldout.jsonl").read_bytes()).hexdigest()
    assert digest == "2ab4b875d30b28f3e93b03f8e08a6db2383fd27c8aad41f761aa1ba33f2dbb87"
    none_worlds, none_questions = generate(make_cfg("world", "unused", "world.validation_worlds=0").world)
    assert as_records(none_worlds, {s: none_questions[s] for s in ("train", "heldout")}) == as_records(
        [w for w in worlds if w.split != "validation"], {s: questions[s] for s in ("train", "heldout")}
    )
    assert len(questions["validation"]) == 240 and not none_questions["validation"]


def test_a_fresh_heldout_draw_leaves_training_and_validation_as_they_are():
    worlds, questions = generate(world_cfg())
    fresh_worlds, fresh = generate(world_cfg("world.heldout_seed=1"))
    for split in ("train", "validation"):
        assert fresh[split] == questions[split]
        assert as_records([w for w in fresh_worlds if w.split == split], {}) == as_records(
            [w for w in worlds if w.split == split], {}
        )
    assert fresh["heldout"] != questions["heldout"]
    held = [w.id for w in fresh_worlds if w.split == "heldout"]
    assert len(held) == 2 and not set(held) & {w.id for w in worlds}
    names = names_by_split(fresh_worlds)
    assert not set(names["heldout"]) & (set(names["train"]) | set(names["validation"]))
    assert generate(world_cfg("world.heldout_seed=2"))[1]["heldout"] != fresh["heldout"]


def test_a_heldout_shape_the_recipe_never_saw():
    """Twice the people per held-out world, and every compose chain one hop longer than training's."""
    worlds, questions = generate(
        world_cfg(
            "world.heldout_seed=1", "world.heldout_shape.people=20", "world.heldout_shape.compose_hops=4"
        )
    )
    people = {w.split: len(w.entities["person"]) for w in worlds}
    assert people == {"train": 10, "validation": 10, "heldout": 20}
    longest = max(len(q["hops"]) for q in questions["train"] if q["type"] == "compose")
    composed = [q for q in questions["heldout"] if q["type"] == "compose"]
    assert composed and all(len(q["hops"]) == longest + 1 == 4 for q in composed)
    corpus = {p["id"]: p["text"] for w in worlds for p in w.passages.values()}
    for q in composed:  # each hop's object is in its passage, and the last hop's is the answer
        assert all(str(h["object"]) in corpus[h["passage"]] for h in q["hops"])
        assert q["answers"][0] == str(q["hops"][-1]["object"])
    with pytest.raises(ValueError, match="set world.heldout_seed"):
        generate(world_cfg("world.heldout_shape.people=20"))
