"""How many optimizer steps a from-scratch tiny Llama needs to learn to copy (induction heads), trained on
copy drills alone: random runs of 8 to 48 token ids, each shown twice, loss on the repeat only.

    .venv/bin/python benchmarks/induction.py --rows 8 --row-len 128 --steps 1500

Prints the loss on the repeats every 100 steps; it sits near ln(vocab) until the model finds the copy
circuit, then falls abruptly to about 0. This sized `distill.copy_drills` (BENCHMARKS.md): the traces
alone did not teach the demo student to copy within its budget.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def drill_batch(rng: random.Random, rows: int, row_len: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of drills back to back (`<bos>` = 1, a run, the run again), cut at the row end; labels are
    -100 except on the repeat after its first token."""
    ids = torch.zeros(rows, row_len, dtype=torch.long)
    labels = torch.full((rows, row_len), -100)
    for b in range(rows):
        pos = 0
        while pos < row_len:
            n = rng.randint(8, 48)
            run = [rng.randrange(10, 10 + vocab) for _ in range(n)]
            seq = ([1, *run, *run])[: row_len - pos]
            ids[b, pos : pos + len(seq)] = torch.tensor(seq)
            for j in range(n + 2, len(seq)):
                labels[b, pos + j] = seq[j]
            pos += len(seq)
    return ids, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--vocab", type=int, default=1014, help="ids drawn from 10 .. 10 + vocab")
    parser.add_argument("--init", type=float, default=0.02, help="LlamaConfig.initializer_range")
    parser.add_argument("--rows", type=int, default=8, help="rows per step")
    parser.add_argument("--row-len", type=int, default=128)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=args.hidden,
        intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=args.init,
    )
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    rng, started = random.Random(0), time.time()
    for step in range(1, args.steps + 1):
        ids, labels = drill_batch(rng, args.rows, args.row_len, args.vocab)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, step / 50)  # linear warm-up, then constant
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.2f} ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
