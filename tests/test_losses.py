"""Distillation losses against their formulas, computed independently with numpy loops on tiny tensors."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cogcore.core.io import DataError
from cogcore.distill.losses import (
    distill_loss,
    load_topk_shard,
    masked_ce,
    save_topk_shard,
    teacher_topk,
    token_kd,
)

B, T, V = 2, 3, 5
KINDS = ["forward_kl", "reverse_kl", "jsd"]
MASK = torch.tensor([[True, True, False], [False, True, True]])


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    student = 2 * torch.randn(B, T, V, generator=g, dtype=torch.float64)
    teacher = 2 * torch.randn(B, T, V, generator=g, dtype=torch.float64)
    labels = torch.randint(0, V, (B, T), generator=g)
    return student, teacher, labels


def softmax(z, temperature=1.0):
    e = np.exp((z - z.max()) / temperature)
    return e / e.sum()


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def divergence(kind, p, q, beta=0.5):
    """p: teacher, q: student probabilities."""
    if kind == "forward_kl":
        return kl(p, q)
    if kind == "reverse_kl":
        return kl(q, p)
    m = beta * p + (1 - beta) * q
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def positions(mask=MASK):
    return [(b, t) for b in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[b, t]]


def ref_ce(student, labels):
    return np.mean([-math.log(softmax(student[b, t].numpy())[labels[b, t]]) for b, t in positions()])


def ref_kd(student, teacher, kind, beta=0.5, temperature=1.0):
    return temperature**2 * np.mean(
        [
            divergence(
                kind,
                softmax(teacher[b, t].numpy(), temperature),
                softmax(student[b, t].numpy(), temperature),
                beta,
            )
            for b, t in positions()
        ]
    )


def test_masked_ce_matches_formula(batch):
    student, _, labels = batch
    assert masked_ce(student, labels, MASK).item() == pytest.approx(ref_ce(student, labels), rel=1e-12)
    # the mean is over trained positions only, not over all B * T
    full = np.mean(
        [-math.log(softmax(student[b, t].numpy())[labels[b, t]]) for b in range(B) for t in range(T)]
    )
    assert masked_ce(student, labels, MASK).item() != pytest.approx(full)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("kind", KINDS)
def test_token_kd_matches_formula(batch, kind, temperature):
    student, teacher, _ = batch
    for beta in [0.5, 0.2] if kind == "jsd" else [0.5]:
        got = token_kd(student, teacher, MASK, kind, beta=beta, temperature=temperature).item()
        assert got == pytest.approx(ref_kd(student, teacher, kind, beta, temperature), rel=1e-10)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl"])
def test_temperature_squared_scaling_tends_to_logit_matching(batch, kind):
    # Hinton et al.: as T grows, T^2 * KL(p_T || q_T) -> sum_i (d_i - mean d)^2 / (2V) with d the logit
    # difference. Without the T^2 factor the loss would vanish like 1 / T^2.
    student, teacher, _ = batch
    d = (teacher - student)[MASK]
    expected = ((d - d.mean(-1, keepdim=True)) ** 2).sum(-1).mean().item() / (2 * V)
    got = token_kd(student, teacher, MASK, kind, temperature=1000.0).item()
    assert got == pytest.approx(expected, rel=1e-2)


def test_alpha_mixes_kd_and_ce(batch):
    student, teacher, labels = batch
    ce, kd = ref_ce(student, labels), ref_kd(student, teacher, "forward_kl", temperature=2.0)
    for alpha in [0.0, 0.3, 1.0]:
        out = distill_loss(student, labels, MASK, teacher_logits=teacher, temperature=2.0, alpha=alpha)
        assert out["ce"].item() == pytest.approx(ce, rel=1e-12)
        assert out["kd"].item() == pytest.approx(kd, rel=1e-10)
        assert out["loss"].item() == pytest.approx(alpha * kd + (1 - alpha) * ce, rel=1e-10)
    # without a teacher it is sequence-level distillation: plain CE on the traces, whatever alpha says
    out = distill_loss(student, labels, MASK, alpha=0.9)
    assert set(out) == {"loss", "ce"} and out["loss"].item() == pytest.approx(ce, rel=1e-12)


@pytest.mark.parametrize("teacher_as", ["logits", "topk", "topk_k2"])
@pytest.mark.parametrize("kind", KINDS)
def test_masked_positions_contribute_nothing(batch, kind, teacher_as):
    student, teacher, labels = batch

    def run(student, teacher, labels, scramble):
        student = student.clone().requires_grad_(True)
        kwargs = {"teacher_logits": teacher}
        if teacher_as != "logits":
            ids, logprobs = teacher_topk(teacher, V if teacher_as == "topk" else 2)
            if scramble:  # garbage ids at padding must neither raise nor leak in
                ids[~MASK] = 10**6
            kwargs = {"teacher_topk": (ids, logprobs)}
        out = distill_loss(student, labels, MASK, kind=kind, temperature=2.0, alpha=0.5, **kwargs)
        out["loss"].backward()
        return out["loss"], student.grad

    loss, grad = run(student, teacher, labels, scramble=False)
    garbage_student, garbage_teacher, garbage_labels = student.clone(), teacher.clone(), labels.clone()
    garbage_student[~MASK] = torch.tensor([float("nan"), float("inf"), -1e9, 3.0, 0.0], dtype=torch.float64)
    garbage_teacher[~MASK] = 123.0 * torch.randn(V, dtype=torch.float64)
    garbage_labels[~MASK] = -100
    if teacher_as == "logits":
        garbage_teacher[0, 2, 0] = float("nan")
    loss2, grad2 = run(garbage_student, garbage_teacher, garbage_labels, scramble=True)

    assert torch.isfinite(loss) and torch.equal(loss, loss2)
    assert torch.equal(grad[MASK], grad2[MASK])
    assert torch.all(grad[~MASK] == 0) and torch.all(grad2[~MASK] == 0)
    assert torch.all(grad[MASK] != 0)  # the trained positions do get a gradient


def test_empty_mask_gives_zero_loss_and_zero_gradient(batch):
    student, teacher, labels = batch
    student = student.clone().requires_grad_(True)
    none = torch.zeros(B, T, dtype=torch.bool)
    out = distill_loss(student, labels, none, teacher_logits=teacher, kind="jsd")
    out["loss"].backward()
    assert out["loss"].item() == 0.0 and torch.all(student.grad == 0)


def test_jsd_symmetry_and_bounds(batch):
    a, b, _ = batch
    half_ab = token_kd(a, b, MASK, "jsd", beta=0.5)
    assert half_ab.item() == pytest.approx(token_kd(b, a, MASK, "jsd", beta=0.5).item(), rel=1e-12)
    assert 0 < half_ab.item() < math.log(2)
    # JSD_beta(P || Q) = JSD_{1-beta}(Q || P), and not JSD_beta(Q || P) when beta != 0.5
    ab = token_kd(a, b, MASK, "jsd", beta=0.2).item()
    assert ab == pytest.approx(token_kd(b, a, MASK, "jsd", beta=0.8).item(), rel=1e-12)
    assert ab != pytest.approx(token_kd(b, a, MASK, "jsd", beta=0.2).item(), rel=1e-3)
    assert token_kd(a, a.clone(), MASK, "jsd").item() == pytest.approx(0.0, abs=1e-15)
    # forward and reverse KL are not symmetric: the swap above could have failed
    assert token_kd(a, b, MASK).item() != pytest.approx(token_kd(b, a, MASK).item(), rel=1e-3)


def test_jsd_edges_are_the_kl_limits(batch):
    student, teacher, _ = batch
    forward = token_kd(student, teacher, MASK, "forward_kl").item()
    reverse = token_kd(student, teacher, MASK, "reverse_kl").item()
    assert forward != pytest.approx(reverse, rel=1e-3)
    assert token_kd(student, teacher, MASK, "jsd", beta=0.0).item() == pytest.approx(forward, rel=1e-12)
    assert token_kd(student, teacher, MASK, "jsd", beta=1.0).item() == pytest.approx(reverse, rel=1e-12)
    eps = 1e-5
    assert token_kd(student, teacher, MASK, "jsd", beta=eps).item() / eps == pytest.approx(forward, rel=1e-3)
    assert token_kd(student, teacher, MASK, "jsd", beta=1 - eps).item() / eps == pytest.approx(
        reverse, rel=1e-3
    )


@pytest.mark.parametrize("kind", ["forward_kl", "jsd"])
def test_zero_probability_teacher_tokens_give_no_nan(batch, kind):
    student, teacher, _ = batch
    teacher = teacher.clone()
    teacher[..., 1:3] = float("-inf")  # e.g. a teacher that forbids tokens outright
    student = student.clone().requires_grad_(True)
    loss = token_kd(student, teacher, MASK, kind, beta=0.3)
    loss.backward()
    assert loss.item() == pytest.approx(ref_kd(student.detach(), teacher, kind, beta=0.3), rel=1e-10)
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("kind", KINDS)
def test_topk_with_k_equal_v_is_the_full_path(batch, kind, temperature):
    student, teacher, _ = batch
    full_s, top_s = student.clone().requires_grad_(True), student.clone().requires_grad_(True)
    full = token_kd(full_s, teacher, MASK, kind, beta=0.3, temperature=temperature)
    top = token_kd(top_s, teacher_topk(teacher, V), MASK, kind, beta=0.3, temperature=temperature)
    (full + top).backward()
    assert top.item() == pytest.approx(full.item(), rel=1e-10)
    assert torch.allclose(top_s.grad, full_s.grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("kind", KINDS)
def test_topk_rest_bucket_matches_formula(batch, kind, temperature):
    student, teacher, _ = batch
    k = 2
    expected = []
    for b, t in positions():
        p, q = softmax(teacher[b, t].numpy()), softmax(student[b, t].numpy())
        top = np.argsort(-p)[:k]
        pc = np.append(p[top], 1 - p[top].sum()) ** (1 / temperature)
        qc = np.append(q[top], 1 - q[top].sum()) ** (1 / temperature)
        expected.append(divergence(kind, pc / pc.sum(), qc / qc.sum(), beta=0.3))
    got = token_kd(student, teacher_topk(teacher, k), MASK, kind, beta=0.3, temperature=temperature)
    assert got.item() == pytest.approx(temperature**2 * np.mean(expected), rel=1e-9)
    if temperature == 1.0:  # coarsening never increases a divergence
        assert got.item() <= token_kd(student, teacher, MASK, kind, beta=0.3).item()


def test_topk_teacher_holding_all_its_mass(batch):
    # A peaked teacher whose top-k sums to 1 in float: forward KL is the full one, and reverse KL and
    # JSD stay finite, although the computed leftover mass is 0.
    student, teacher, _ = batch
    teacher = teacher.clone()
    teacher[..., 2:] = float("-inf")
    top = teacher_topk(teacher, 2)
    assert torch.allclose(top[1].exp().sum(-1), torch.ones(B, T, dtype=torch.float64), rtol=0, atol=1e-15)
    forward = token_kd(student, top, MASK, "forward_kl").item()
    assert forward == pytest.approx(token_kd(student, teacher, MASK, "forward_kl").item(), abs=1e-12)
    for kind in ["reverse_kl", "jsd"]:
        s = student.clone().requires_grad_(True)
        loss = token_kd(s, top, MASK, kind)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_vocabulary_mismatch_is_refused(batch):
    student, teacher, labels = batch
    bigger = torch.cat([teacher, teacher[..., :2]], dim=-1)
    with pytest.raises(ValueError, match=r"size 7.*size 5.*share the student's tokenizer"):
        distill_loss(student, labels, MASK, teacher_logits=bigger)
    ids, logprobs = teacher_topk(bigger, 3)
    ids[0, 1, 0] = 6  # a trained position
    with pytest.raises(ValueError, match=r"span \[\d, 6\].*size 5.*share the student's tokenizer"):
        distill_loss(student, labels, MASK, teacher_topk=(ids, logprobs))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "kl"}, "expected one of forward_kl, reverse_kl, jsd"),
        ({"kind": "jsd", "beta": 1.5}, r"beta=1\.5"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"alpha": -0.1}, r"alpha=-0\.1"),
    ],
)
def test_bad_settings_are_refused(batch, kwargs, message):
    student, teacher, labels = batch
    with pytest.raises(ValueError, match=message):
        distill_loss(student, labels, MASK, teacher_logits=teacher, **kwargs)


def test_bad_inputs_are_refused(batch):
    student, teacher, labels = batch
    with pytest.raises(ValueError, match="not both"):
        distill_loss(student, labels, MASK, teacher_logits=teacher, teacher_topk=teacher_topk(teacher, 2))
    with pytest.raises(ValueError, match="bool"):
        masked_ce(student, labels, MASK.long())


def test_teacher_topk_and_shard_round_trip(batch, tmp_path):
    student, teacher, labels = batch
    teacher = teacher.float()
    ids, logprobs = teacher_topk(teacher, 3)
    full = F.log_softmax(teacher, dim=-1)
    assert ids.dtype == torch.int64 and logprobs.dtype == torch.float32 and ids.shape == (B, T, 3)
    assert torch.equal(ids[..., 0], teacher.argmax(-1))
    assert torch.equal(logprobs, full.gather(-1, ids))
    assert torch.all(logprobs[..., :-1] >= logprobs[..., 1:])

    path = tmp_path / "shards" / "topk-00000.safetensors"
    save_topk_shard(path, {"topk_ids": ids, "topk_logprobs": logprobs, "labels": labels, "mask": MASK})
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    shard = load_topk_shard(path)
    assert set(shard) == {"topk_ids", "topk_logprobs", "labels", "mask"}
    for key, value in {"topk_ids": ids, "topk_logprobs": logprobs, "labels": labels, "mask": MASK}.items():
        assert shard[key].dtype == value.dtype and torch.equal(shard[key], value)
    from_disk = distill_loss(
        student, shard["labels"], shard["mask"], teacher_topk=(shard["topk_ids"], shard["topk_logprobs"])
    )
    in_memory = distill_loss(student, labels, MASK, teacher_topk=(ids, logprobs))
    assert torch.equal(from_disk["loss"], in_memory["loss"])

    with pytest.raises(ValueError, match="missing topk_logprobs"):
        save_topk_shard(tmp_path / "bad.safetensors", {"topk_ids": ids})
    from safetensors.torch import save_file

    save_file({"topk_ids": ids}, tmp_path / "foreign.safetensors")
    with pytest.raises(DataError, match=r"foreign\.safetensors: not a top-k shard, missing topk_logprobs"):
        load_topk_shard(tmp_path / "foreign.safetensors")


@pytest.mark.parametrize("teacher_as", ["logits", "topk_k2"])
def test_kd_mask_takes_kd_where_the_teacher_is_known_and_ce_everywhere(batch, teacher_as):
    """A position in the mask but not in kd_mask (a copy drill with no teacher top-k) carries CE only."""
    student, teacher, labels = batch
    known = MASK.clone()
    known[1, 2] = False
    if teacher_as == "logits":
        kwargs, garbage = {"teacher_logits": teacher}, {"teacher_logits": teacher.clone()}
        garbage["teacher_logits"][1, 2] = float("nan")
    else:
        ids, logprobs = teacher_topk(teacher, 2)
        kwargs = {"teacher_topk": (ids, logprobs)}
        bad_ids = ids.clone()
        bad_ids[1, 2] = 10**6  # what an unknown position holds must not matter
        garbage = {"teacher_topk": (bad_ids, logprobs)}
    out = distill_loss(student, labels, MASK, kd_mask=known, alpha=0.5, **kwargs)
    assert out["ce"].item() == pytest.approx(ref_ce(student, labels), rel=1e-12)
    assert out["kd"].item() == pytest.approx(
        distill_loss(student, labels, known, alpha=0.5, **kwargs)["kd"].item(), rel=1e-12
    )
    assert torch.equal(
        distill_loss(student, labels, MASK, kd_mask=known, alpha=0.5, **garbage)["loss"], out["loss"]
    )
    with pytest.raises(ValueError, match="kd_mask must"):
        distill_loss(student, labels, MASK, kd_mask=~MASK, **kwargs)
