"""Distillation losses: masked cross-entropy on traces (sequence-level distillation) and token-level
distillation against a teacher that shares the student's tokenizer, given either as full logits or as
top-k log-probs written to disk beforehand, so the teacher need not sit in memory while the student trains.

Conventions shared by every function here:
- Alignment: `logits[:, t]` predicts `labels[:, t]`. The caller shifts (labels = input_ids[:, 1:] against
  logits[:, :-1]); nothing here shifts again.
- `mask` is a bool [B, T] tensor, True where a token is trained (the loss-mask contract). Rows are picked
  with `x[mask]` before any arithmetic, so a masked position contributes exactly nothing to the loss or
  to any gradient, whatever its logits (even inf or NaN), label (-100 is fine) or top-k ids hold.
- Reduction: mean over the masked-in positions of the whole batch, every trained token weighing the same;
  a batch with no trained token gives 0.
- P is the teacher and Q the student, both softened by `temperature` (KD terms are then scaled by T^2,
  Hinton et al. 2015, so their gradients keep their size as T changes; cross-entropy is never softened):
    forward_kl  KL(P || Q)   mass-covering: the student spreads over everything the teacher allows
    reverse_kl  KL(Q || P)   mode-seeking: the student commits to what the teacher likes most
    jsd         JSD_beta(P || Q) = beta * KL(P || M) + (1 - beta) * KL(Q || M),  M = beta * P + (1 - beta) * Q
                (generalised JSD of GKD, Agarwal et al. 2024). JSD_beta(P || Q) = JSD_{1-beta}(Q || P).
                beta -> 0: JSD_beta / beta -> KL(P || Q);  beta -> 1: JSD_beta / (1 - beta) -> KL(Q || P).
                JSD itself is 0 at both ends, so beta = 0 and beta = 1 are taken to mean those limits:
                exactly forward KL and reverse KL (as in GKD and TRL), not their beta-scaled versions.

Top-k teacher (a `teacher_topk` pair, for `token_kd` and `distill_loss`): each position keeps the
teacher's K most likely ids and their log-probs under the full vocabulary (not renormalised). The
divergence is taken between two distributions over K + 1 outcomes: the K ids and one "rest" bucket holding
everything else, for teacher and student alike. This is the exact divergence between the two coarsened
distributions, so it is 0 only when the student matches the teacher on each kept id and on the leftover
mass, and at temperature 1 it never exceeds the full-vocabulary divergence (data processing inequality).
The student's rest comes exactly from its own logits; the teacher's is 1 - sum(top-k), floored at the
float resolution `eps`, because a peaked teacher's top-k can sum to 1.0 in float and a 0 there would make
reverse KL infinite. A temperature softens the K + 1 buckets (the teacher's distribution inside its rest
is unknown). With K == V there is no rest bucket and the result equals that of the full logits at any
temperature.

Top-k shard format (`save_topk_shard` / `load_topk_shard`): one safetensors file per batch holding
    topk_ids       int64   [B, T, K]  teacher ids, most likely first (from `teacher_topk`)
    topk_logprobs  float32 [B, T, K]  the teacher's log_softmax at temperature 1 at those ids (float64 if
                                      the logits were)
plus any other same-batch tensors the writer keeps beside them (input_ids, labels, mask), so a shard can
be trained on alone. The training temperature is applied when the loss is computed, not when writing.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from cogcore.core.io import DataError

KINDS = ("forward_kl", "reverse_kl", "jsd")
SHARD_KEYS = ("topk_ids", "topk_logprobs")


def _wide(x: torch.Tensor) -> torch.Tensor:
    # bf16/fp16 cannot hold the small differences of log-probs a KL is made of; float64 stays float64.
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _rows(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The trained rows [N, V] of [B, T, V] logits, in at least float32."""
    if mask.dtype != torch.bool:
        # An integer mask would index rows 0 and 1 instead of selecting positions: a silent wrong loss.
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}; pass mask.bool()")
    if logits.dim() != 3 or mask.shape != logits.shape[:-1]:
        raise ValueError(
            f"logits have shape {tuple(logits.shape)} and mask {tuple(mask.shape)}; expected logits "
            "[B, T, V] and mask [B, T]"
        )
    return _wide(logits[mask])


def _nll(student_logp: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.nll_loss(student_logp, labels, reduction="sum") / max(len(labels), 1)


def masked_ce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of `logits` [B, T, V] against `labels` [B, T] (logits[:, t] predicts labels[:, t]),
    averaged over the positions where the bool `mask` [B, T] is True."""
    if labels.shape != mask.shape:
        raise ValueError(f"labels have shape {tuple(labels.shape)} but mask {tuple(mask.shape)}")
    return _nll(F.log_softmax(_rows(logits, mask), dim=-1), labels[mask])


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row. Terms where p == 0 are 0; they are filled before the arithmetic so that
    0 * (-inf) makes no NaN, neither in the value nor in the gradient."""
    keep = logp > float("-inf")
    logp, logq = logp.masked_fill(~keep, 0.0), logq.masked_fill(~keep, 0.0)
    return torch.where(keep, logp.exp() * (logp - logq), 0.0).sum(-1)


def _divergence(student_logp: torch.Tensor, teacher_logp: torch.Tensor, kind: str, beta: float):
    """Per-row divergence between teacher P and student Q, given as log-probs [N, V]."""
    if kind == "forward_kl" or (kind == "jsd" and beta == 0.0):
        return _kl(teacher_logp, student_logp)
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1.0):
        return _kl(student_logp, teacher_logp)
    # log M in log space: mixing probabilities directly would underflow to log(0) on unlikely tokens.
    log_m = torch.logaddexp(teacher_logp + math.log(beta), student_logp + math.log1p(-beta))
    return beta * _kl(teacher_logp, log_m) + (1 - beta) * _kl(student_logp, log_m)


def _check_kd_args(kind: str, beta: float, temperature: float) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta}: the JSD mixing weight must lie in [0, 1]")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature}: must be > 0")


def _vocab_error(what: str, student_vocab: int) -> ValueError:
    return ValueError(
        f"{what}, but the student's vocabulary has size {student_vocab}: the teacher must share the "
        "student's tokenizer (same vocabulary, same ids). If both use one tokenizer but pad their embedding "
        "tables differently, slice both logits to len(tokenizer) first."
    )


def _teacher_rows(teacher_logits: torch.Tensor, student_vocab: int, mask: torch.Tensor) -> torch.Tensor:
    if teacher_logits.shape[-1] != student_vocab:
        raise _vocab_error(f"teacher logits have vocabulary size {teacher_logits.shape[-1]}", student_vocab)
    # The teacher is a target, never trained: no gradient flows back into it.
    return _rows(teacher_logits.detach(), mask)


def _topk_rows(topk_ids, topk_logprobs, student_vocab: int, mask: torch.Tensor):
    if topk_ids.shape != topk_logprobs.shape or topk_ids.shape[:-1] != mask.shape:
        raise ValueError(
            f"teacher top-k ids {tuple(topk_ids.shape)} and log-probs {tuple(topk_logprobs.shape)} must both "
            f"be [B, T, K] with [B, T] = mask {tuple(mask.shape)}"
        )
    ids = topk_ids[mask].long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= student_vocab):
        raise _vocab_error(f"teacher top-k ids span [{int(ids.min())}, {int(ids.max())}]", student_vocab)
    return ids, _wide(topk_logprobs.detach()[mask])


def _full_kd(student_rows, student_logp1, teacher_rows, kind, beta, temperature) -> torch.Tensor:
    # At temperature 1 the student's log-softmax is the one cross-entropy already made: reuse it, since
    # at a large vocabulary each [N, V] copy kept for backward is a big share of memory.
    if temperature == 1 and student_logp1 is not None:
        s = student_logp1
    else:
        s = F.log_softmax(student_rows / temperature, dim=-1)
    t = F.log_softmax(teacher_rows / temperature, dim=-1)
    div = _divergence(s, t, kind, beta)
    return temperature**2 * div.sum() / max(len(div), 1)


def _topk_kd(student_logp1, ids, teacher_logp, kind, beta, temperature) -> torch.Tensor:
    s = student_logp1.gather(-1, ids)
    t = teacher_logp
    if ids.shape[-1] < student_logp1.shape[-1]:
        # The rest bucket. The student's is exact: logsumexp over the ids outside the top-k, no 1 - sum.
        s_rest = torch.logsumexp(student_logp1.scatter(-1, ids, float("-inf")), dim=-1, keepdim=True)
        t_rest_mass = -torch.expm1(torch.logsumexp(t, dim=-1, keepdim=True))
        t_rest = t_rest_mass.clamp(min=torch.finfo(t.dtype).eps).log()
        s, t = torch.cat([s, s_rest], dim=-1), torch.cat([t, t_rest], dim=-1)
    # log_softmax softens the buckets and also renormalises away the teacher's rounding and eps floor.
    div = _divergence(
        F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1), kind, beta
    )
    return temperature**2 * div.sum() / max(len(div), 1)


def token_kd(
    student_logits: torch.Tensor,
    teacher: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor,
    kind: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Token-level distillation alone: T^2 * the mean over masked-in positions of the divergence `kind`
    between teacher and student softened by `temperature`. `teacher` is its full logits [B, T, V], or its
    top-k ids and log-probs (topk_ids, topk_logprobs) [B, T, K] (see `teacher_topk`), whose divergence is
    taken over the K ids plus one rest bucket, as the module docstring says."""
    rows = _rows(student_logits, mask)
    return _kd(rows, F.log_softmax(rows, dim=-1), teacher, mask, kind, beta, temperature)


def _kd(rows, student_logp, teacher, mask: torch.Tensor, kind: str, beta: float, temperature: float):
    """The distillation term on the student's trained `rows` [N, V] and their log-softmax, against
    `teacher` (full logits, or a top-k pair) at the positions of `mask`."""
    _check_kd_args(kind, beta, temperature)
    vocab = rows.shape[-1]
    if isinstance(teacher, torch.Tensor):
        return _full_kd(rows, student_logp, _teacher_rows(teacher, vocab, mask), kind, beta, temperature)
    ids, teacher_logp = _topk_rows(*teacher, vocab, mask)
    return _topk_kd(student_logp, ids, teacher_logp, kind, beta, temperature)


def distill_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    kind: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    alpha: float = 0.5,
    kd_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The trainer's loss: {"loss": alpha * kd + (1 - alpha) * ce, "ce": ce, "kd": kd}.

    The teacher is `teacher_logits` [B, T, V] or `teacher_topk` = (topk_ids, topk_logprobs) [B, T, K],
    or neither: then this is sequence-level distillation on the teacher's traces, loss = ce, alpha is
    unused and there is no "kd" key. `kd_mask` (a subset of `mask`, default all of it) is where the
    teacher is known: the copy drills packed beside the traces have no teacher top-k, so they carry
    cross-entropy only; kd is the mean over kd_mask's positions."""
    if teacher_logits is not None and teacher_topk is not None:
        raise ValueError("give the teacher as teacher_logits or as teacher_topk, not both")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha}: the weight of the distillation term must lie in [0, 1]")
    if labels.shape != mask.shape:
        raise ValueError(f"labels have shape {tuple(labels.shape)} but mask {tuple(mask.shape)}")
    rows = _rows(student_logits, mask)
    student_logp = F.log_softmax(rows, dim=-1)
    ce = _nll(student_logp, labels[mask])
    if teacher_logits is None and teacher_topk is None:
        return {"loss": ce, "ce": ce}
    if kd_mask is not None:
        if kd_mask.shape != mask.shape or bool((kd_mask & ~mask).any()):
            raise ValueError("kd_mask must have the mask's shape and mark only positions the mask trains")
        # The student's rows where the teacher is known, picked from the rows already made (no new [N, V]
        # log-softmax when kd_mask is the whole mask).
        if not bool(kd_mask[mask].all()):
            keep = kd_mask[mask]
            rows, student_logp = rows[keep], student_logp[keep]
    else:
        kd_mask = mask
    teacher = teacher_logits if teacher_logits is not None else teacher_topk
    kd = _kd(rows, student_logp, teacher, kd_mask, kind, beta, temperature)
    return {"loss": alpha * kd + (1 - alpha) * ce, "ce": ce, "kd": kd}


def teacher_topk(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What a teacher writer saves: (topk_ids int64, topk_logprobs) [B, T, k], the k most likely ids
    first, with their log-probs under the full vocabulary at temperature 1."""
    logprobs, ids = torch.topk(F.log_softmax(_wide(teacher_logits.detach()), dim=-1), k, dim=-1)
    return ids, logprobs


def save_topk_shard(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write one batch's tensors (at least `topk_ids` and `topk_logprobs`) as one safetensors file."""
    missing = [key for key in SHARD_KEYS if key not in tensors]
    if missing:
        raise ValueError(f"a top-k shard needs {', '.join(SHARD_KEYS)}; missing {', '.join(missing)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({key: t.detach().contiguous().cpu() for key, t in tensors.items()}, tmp)
    # Rename only once complete: a writer killed mid-shard leaves no torn file for a trainer to read.
    os.replace(tmp, path)


def load_topk_shard(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a shard written by `save_topk_shard` (on the CPU), checking that its top-k tensors fit."""
    tensors = load_file(path)
    missing = [key for key in SHARD_KEYS if key not in tensors]
    if missing:
        raise DataError(
            f"{path}: not a top-k shard, missing {', '.join(missing)}; write it with save_topk_shard "
            "from the ids and log-probs of teacher_topk"
        )
    ids, logprobs = tensors["topk_ids"], tensors["topk_logprobs"]
    if ids.shape != logprobs.shape or ids.dim() != 3:
        raise DataError(
            f"{path}: topk_ids {tuple(ids.shape)} and topk_logprobs {tuple(logprobs.shape)} must both be "
            "[B, T, K]; rewrite the shard"
        )
    return tensors
