import re

import pytest
from tiny_chat import tiny_tokenizer

from cogcore.core.worlds.drills import step_drills
from cogcore.core.worlds.steps import decision, subtraction
from cogcore.core.worlds.templates import FACT
from cogcore.core.worlds.world import ARITHMETIC_QUESTIONS, COMPARE_QUESTIONS
from cogcore.distill.drills import RECORD_MAX_LEN, copy_drills, match_drills, record_drills


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def test_copy_drills_train_only_the_repeat(tokenizer):
    vocab = list(range(20, 60))
    drills = copy_drills(2_000, vocab, tokenizer.bos_token_id, 8, 16, seed=3)
    assert 2_000 <= sum(len(ids) for ids, _ in drills) < 2_000 + 1 + 2 * 16
    assert drills == copy_drills(2_000, vocab, tokenizer.bos_token_id, 8, 16, seed=3)
    assert drills != copy_drills(2_000, vocab, tokenizer.bos_token_id, 8, 16, seed=4)
    for ids, mask in drills:
        n = (len(ids) - 1) // 2
        assert 8 <= n <= 16 and ids[0] == tokenizer.bos_token_id and set(ids[1:]) <= set(vocab)
        assert ids[1 : 1 + n] == ids[1 + n :]
        # trained: the repeat after its first token, each predictable from the first run
        assert mask == [0] * (n + 2) + [1] * (n - 1)


def test_copy_drills_from_small_alphabets_repeat_tokens(tokenizer):
    vocab = list(range(20, 1020))

    def distinct(drills):
        return [len(set(ids[1:])) / ((len(ids) - 1) // 2) for ids, _ in drills]

    wide = distinct(copy_drills(20_000, vocab, tokenizer.bos_token_id, 16, 32, seed=0))
    small = copy_drills(20_000, vocab, tokenizer.bos_token_id, 16, 32, seed=0, min_alphabet=4)
    # A run of 16+ tokens from all 1,000 rarely repeats one; from 4-token alphabets, every token repeats.
    assert sum(wide) / len(wide) > 0.95 and min(distinct(small)) < 0.3
    assert sum(distinct(small)) / len(small) < 0.9
    for ids, mask in small:
        n = (len(ids) - 1) // 2
        assert ids[1 : 1 + n] == ids[1 + n :] and mask == [0] * (n + 2) + [1] * (n - 1)
    for bad in (1, 1001):
        with pytest.raises(ValueError, match="use 2 to 1000"):
            copy_drills(100, vocab, tokenizer.bos_token_id, 8, 16, seed=0, min_alphabet=bad)


@pytest.mark.parametrize("marks", [((), ()), ((7, 8), (9,))])
def test_record_drills_repeat_one_line_whose_place_must_be_kept(tokenizer, marks):
    vocab = list(range(20, 1020))
    drills = record_drills(5_000, vocab, tokenizer.bos_token_id, 1, marks)
    assert drills == record_drills(5_000, vocab, tokenizer.bos_token_id, 1, marks)
    assert 5_000 <= sum(len(ids) for ids, _ in drills) < 5_000 + RECORD_MAX_LEN
    ambiguous = 0
    for ids, mask in drills:
        assert ids[0] == tokenizer.bos_token_id and len(ids) <= RECORD_MAX_LEN
        n = sum(mask) + len(marks[0]) + 1  # the repeated line: trained after its marks and first key token
        line, context = ids[-n:], ids[1:-n]
        assert mask == [0] * (len(ids) - n + len(marks[0]) + 1) + [1] * (n - len(marks[0]) - 1)
        assert line[: len(marks[0])] == list(marks[0]) and set(marks[1]) <= set(line)
        assert any(context[k : k + n] == line for k in range(len(context)))  # a line it was shown
        # somewhere in the line, the token before says nothing: the context follows it with several tokens
        ambiguous += any(
            len({context[i + 1] for i, t in enumerate(context[:-1]) if t == line[j]}) > 1
            for j in range(len(marks[0]) + 1, n - 1)
        )
    assert ambiguous == len(drills)


def test_match_drills_answer_the_line_with_the_name_or_none(tokenizer):
    vocab, marks, none = list(range(20, 1020)), ((7, 8), (9,)), [5, 6]
    drills = match_drills(20_000, vocab, tokenizer.bos_token_id, 1, marks, none)
    assert drills == match_drills(20_000, vocab, tokenizer.bos_token_id, 1, marks, none)
    assert drills != match_drills(20_000, vocab, tokenizer.bos_token_id, 2, marks, none)
    assert 20_000 <= sum(len(ids) for ids, _ in drills) < 20_000 + RECORD_MAX_LEN
    hits = near = 0
    for ids, mask in drills:
        assert ids[0] == tokenizer.bos_token_id and len(ids) <= RECORD_MAX_LEN
        # lines open with marks[0]: split the context into the name and the lines
        starts = [i for i in range(len(ids) - 1) if ids[i : i + 2] == [7, 8]]
        answer_at = starts[-1] if ids[-len(none) :] != none else len(ids) - len(none)
        name = ids[1 : starts[0]]
        lines = [ids[a:b] for a, b in zip(starts, [*starts[1:], len(ids)], strict=True) if a < answer_at]
        lines[-1] = ids[starts[len(lines) - 1] : answer_at]
        names = [line[line.index(9) + 1 : line.index(9) + 1 + len(name)] for line in lines]
        answer = ids[answer_at:]
        assert mask == [0] * answer_at + [1] * len(answer)  # trained whole: its start is the choice
        if answer == none:
            assert name not in names
        else:  # the line whose name it is
            hits += 1
            assert answer in lines and answer[answer.index(9) + 1 :][: len(name)] == name
        near += sum(sum(a != b for a, b in zip(n, name, strict=False)) == 1 for n in names)
    assert 0.4 < hits / len(drills) < 0.6 and near > len(drills)  # near misses, one token off, are common


def test_step_drills_write_the_oracles_steps_on_random_numbers(tokenizer):
    drills = step_drills(tokenizer, 20_000, seed=0)
    assert drills == step_drills(tokenizer, 20_000, seed=0) != step_drills(tokenizer, 20_000, seed=1)
    assert 20_000 <= sum(len(ids) for ids, _ in drills) < 21_000
    subtractions = shared_start = 0
    for ids, mask in drills:
        assert ids[0] == tokenizer.bos_token_id
        cut = mask.index(1)
        assert mask == [0] * cut + [1] * (len(ids) - cut)  # the context given, every step trained
        given, steps = tokenizer.decode(ids[1:cut]).strip(), tokenizer.decode(ids[cut:]).strip()
        # the question on two made-up names and its two facts, then the steps
        question, fact_a, fact_b = re.fullmatch(r"(.*\?) So (.+)\. So (.+)\.", given).groups()
        x, y = int(fact_a.rsplit(" ", 1)[1]), int(fact_b.rsplit(" ", 1)[1])
        if "column by column" in steps:  # an arithmetic question's subtraction
            a, b = (fact.split(" was ")[0].split(" has ")[0] for fact in (fact_a, fact_b))
            attribute = next(
                attr for attr, asked in ARITHMETIC_QUESTIONS.items() if asked.format(a=a, b=b) == question
            )
            expected = subtraction(max(x, y), min(x, y))
            subtractions += 1
        else:  # a compare question's last step
            a, b = re.fullmatch(r".*, (.+) or (.+)\?", question).groups()
            attribute, pick = next(
                (attr, pick)
                for attr, asked in COMPARE_QUESTIONS.items()
                for t, pick in asked
                if t.format(a=a, b=b) == question
            )
            expected = decision(x, y, a, b, attribute, pick)
            winner = a if (x < y) == (pick == "min") else b  # the question's pick of the two, by number
            assert steps.endswith(f" {winner}.")
        assert a != b
        assert fact_a == FACT[attribute].format(s=a, o=x) and fact_b == FACT[attribute].format(s=b, o=y)
        assert steps == expected
        assert x != y and all(1_000 <= n < 100_000 for n in (x, y))
        shared_start += str(x)[0] == str(y)[0] and len(str(x)) == len(str(y))
    # both kinds, and many pairs that differ only after their first digit (as years do)
    assert 0.55 < subtractions / len(drills) < 0.8 and shared_start / len(drills) > 0.4
