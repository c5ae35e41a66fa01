"""Dense-index encoding throughput on one GPU with sentence-transformers, for planning a wiki-18 index
(21,015,324 passages of 100 words, as Search-R1's e5 index).

Two encoders with random weights, built from configs (timing does not depend on the weights' values):
all-MiniLM-L6-v2's shape (BERT, 6 layers, hidden 384, 12 heads, intermediate 1536, vocab 30522) and
e5-base's (BERT-base: 12 layers, hidden 768, 12 heads, intermediate 3072, vocab 30522). Each is saved with a
WordPiece tokenizer built from a generated vocabulary to a temporary folder and loaded as a
SentenceTransformer: models.Transformer(folder, max_seq_length=256) + models.Pooling(mean).

Passages are made like wiki-18's `"Title"\\n100 words of text`, of random words drawn with Zipf
frequencies from 60,000 made-up word types; the vocabulary holds the 8,000 most frequent as whole
words and every other word splits into syllable pieces, so a passage tokenizes to about as many tokens
as a real one does (the output prints the measured tokens per passage). e5-shaped encoders get e5's
"passage: " / "query: " prefixes. Truncation at 256 tokens for both.

Per encoder, dtype (fp16 by model.half(); fp32 for MiniLM too) and batch size (256, 512):
  encode   SentenceTransformer.encode over N passages (default 20,000) after a warm-up, as an indexer
           calls it: tokenization in the loop, numpy embeddings back on the host
  forward  the model's forward and mean pooling alone on the same batches, tokenized beforehand, on
           the GPU (the ceiling of the GPU without tokenization and host copies)
and query latency: encode() of one query and of a batch of 64 (median of repeated calls).
Projection: hours to encode 21,015,324 passages at each measured rate.

    python3 benchmarks/gpu_encode.py              # on the GPU (about a minute)
    .venv/bin/python benchmarks/gpu_encode.py --tiny    # 2-layer encoders on the CPU, end to end
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from gpu_env import machine_lines, report_head

WIKI18 = 21_015_324
STARTED = time.perf_counter()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def elapsed() -> float:
    return time.perf_counter() - STARTED


class Words:
    """Made-up word types of 1-4 syllables with Zipf frequencies; the `whole` most frequent are
    vocabulary words, the rest split into syllable pieces."""

    def __init__(self, seed: int = 0, n_types: int = 60_000, whole: int = 8_000):
        rng = np.random.default_rng(seed)
        cons, vow = list("bcdfghjklmnprstvwz"), list("aeiou")
        syll = sorted(
            {c + v + (e if k else "") for c in cons for v in vow for k, e in enumerate(["", "n", "r", "s"])}
        )
        self.syllables = syll
        types, seen = [], set()
        while len(types) < n_types:  # drawn in bulk: a draw per word takes seconds
            sizes = rng.choice([1, 2, 2, 3, 3, 4], size=n_types)
            picks = rng.integers(0, len(syll), size=(n_types, 4))
            for size, row in zip(sizes, picks, strict=False):
                w = "".join(syll[j] for j in row[:size])
                if w not in seen and len(types) < n_types:
                    seen.add(w)
                    types.append(w)
        self.types = np.array(types)
        p = 1.0 / np.arange(1, n_types + 1)
        self.p = p / p.sum()
        self.whole = types[:whole]
        self.rng = rng

    def vocab(self) -> list[str]:
        letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
        punct = list(".,;:()'\"-")
        return list(
            dict.fromkeys(
                SPECIALS
                + punct
                + letters
                + [f"##{c}" for c in letters]
                + self.syllables
                + [f"##{s}" for s in self.syllables]
                + self.whole
            )
        )

    def text(self, n: int) -> list[str]:
        return self.texts([n])[0]

    def texts(self, lengths: list[int]) -> list[list[str]]:
        """Word lists of the given lengths, drawn in one go (a Zipf draw per call costs a pass over p)."""
        words = self.types[self.rng.choice(len(self.types), size=int(sum(lengths)), p=self.p)].tolist()
        stops = self.rng.random(len(words)) < 0.5
        out, at = [], 0
        for n in lengths:
            part = words[at : at + n]
            for i in range(12, n, 13):  # a comma or full stop every 13 words
                part[i] += "." if stops[at + i] else ","
            out.append(part)
            at += n
        return out

    def passages(self, n: int, n_words: int = 100) -> list[str]:
        titles = self.texts(self.rng.integers(1, 4, size=n).tolist())
        bodies = self.texts([n_words] * n)
        return [
            f'"{" ".join(w.capitalize() for w in t)}"\n' + " ".join(b) + "."
            for t, b in zip(titles, bodies, strict=False)
        ]

    def queries(self, n: int) -> list[str]:
        return [" ".join(q) + "?" for q in self.texts(self.rng.integers(6, 13, size=n).tolist())]


def save_encoder(folder: Path, vocab: list[str], layers: int, hidden: int, heads: int, inter: int):
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers import models as tm
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(tm.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    hf.save_pretrained(folder)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)


def load_st(folder: Path, device: str):
    """SentenceTransformer of Transformer(folder, 256) + mean Pooling; how it was built, for the output."""
    from sentence_transformers import SentenceTransformer

    try:
        try:  # sentence-transformers >= 5.4 (models.* is its deprecated alias)
            from sentence_transformers.base.modules.transformer import Transformer
            from sentence_transformers.sentence_transformer.modules.pooling import Pooling
        except ImportError:
            from sentence_transformers.models import Pooling, Transformer

        t = Transformer(str(folder), max_seq_length=256)
        get_dim = getattr(t, "get_embedding_dimension", None) or getattr(
            t, "get_word_embedding_dimension", None
        )
        dim = (get_dim() if get_dim else None) or t.auto_model.config.hidden_size
        p = Pooling(dim, pooling_mode="mean")
        return SentenceTransformer(
            modules=[t, p], device=device
        ), f"{type(t).__module__}.Transformer + Pooling(mean)"
    except Exception as e:  # noqa: BLE001
        st = SentenceTransformer(str(folder), device=device)
        st.max_seq_length = 256
        return st, f"SentenceTransformer(folder) default mean pooling ({type(e).__name__}: {e})"


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_encode(st, texts: list[str], bs: int) -> tuple[float, int]:
    """Seconds of one encode() of `texts` (median of 3 when one takes under 5 s), and the repeats."""
    times = []
    for _ in range(3):
        sync()
        t = time.perf_counter()
        st.encode(texts, batch_size=bs, show_progress_bar=False, convert_to_numpy=True)
        sync()
        times.append(time.perf_counter() - t)
        if times[0] > 5:
            break
    return statistics.median(times), len(times)


def pretokenized(st, texts: list[str], bs: int, device: str) -> list[dict]:
    """Batches as encode() makes them (sorted longest first, padded to the batch's longest), on device."""
    tok = st.tokenizer
    lengths = [len(x) for x in tok(texts, truncation=True, max_length=256)["input_ids"]]
    order = np.argsort(-np.array(lengths), kind="stable")
    batches = []
    for i in range(0, len(texts), bs):
        part = [texts[j] for j in order[i : i + bs]]
        enc = tok(part, padding=True, truncation=True, max_length=256, return_tensors="pt")
        batches.append({k: enc[k].to(device) for k in ("input_ids", "attention_mask")})
    return batches


@torch.inference_mode()
def time_forward(st, batches: list[dict]) -> float:
    model = st[0].auto_model

    def one_pass():
        for b in batches:
            h = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            (h * m).sum(1) / m.sum(1).clamp(min=1)

    sync()
    t = time.perf_counter()
    one_pass()  # warm-up, and the first timing when a pass is long
    sync()
    times = [time.perf_counter() - t]
    if times[0] > 5:
        return times[0]
    times = []
    for _ in range(3):
        sync()
        t = time.perf_counter()
        one_pass()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def query_latency(st, queries: list[str], tiny: bool = False) -> dict:
    single = []
    n_single, n_batch = (8, 4) if tiny else (35, 13)
    for i in range(n_single):
        sync()
        t = time.perf_counter()
        st.encode([queries[i % len(queries)]], batch_size=1, show_progress_bar=False)
        sync()
        if i >= min(5, n_single - 1):
            single.append(time.perf_counter() - t)
    batch = []
    for i in range(n_batch):
        sync()
        t = time.perf_counter()
        st.encode(queries[:64], batch_size=64, show_progress_bar=False)
        sync()
        if i >= min(3, n_batch - 1):
            batch.append(time.perf_counter() - t)
    return {"query_1_ms": statistics.median(single) * 1e3, "query_64_ms": statistics.median(batch) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="2-layer encoders, 128 passages (CPU test)")
    parser.add_argument("--passages", type=int, default=None, help="timed passages (default 20,000)")
    parser.add_argument("--budget", type=float, default=140.0, help="seconds for the whole script")
    args = parser.parse_args()
    n = args.passages or (128 if args.tiny else 20_000)
    with contextlib.suppress(Exception):
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print("# gpu_encode: dense-index encoding with sentence-transformers (random weights)")
    print()
    for line in machine_lines("transformers", "sentence_transformers"):
        print("    " + line)

    words = Words()
    passages = words.passages(n)
    queries = words.queries(64)
    vocab = words.vocab()
    shapes = {  # name: (layers, hidden, heads, intermediate, prefix)
        "MiniLM-L6 (384)": (6, 384, 12, 1536, ""),
        "e5-base (768)": (12, 768, 12, 3072, "passage: "),
    }
    if args.tiny:
        shapes = {"tiny-a (64)": (2, 64, 4, 128, ""), "tiny-b (96)": (2, 96, 4, 192, "passage: ")}
    plan = [
        (0, "fp32", 256),
        (0, "fp32", 512),
        (0, "fp16", 256),
        (0, "fp16", 512),
        (1, "fp16", 256),
        (1, "fp16", 512),
    ]
    if args.tiny:
        plan = [(0, "fp32", 32), (1, "fp16", 64)]
    rows, lat, notes = [], [], {}
    tmp = Path(tempfile.mkdtemp(prefix="gpu_encode_"))
    names = list(shapes)
    loaded = {}
    for k, name in enumerate(names):
        layers, hidden, heads, inter, _ = shapes[name]
        save_encoder(tmp / f"enc{k}", vocab, layers, hidden, heads, inter)

    st0, how = load_st(tmp / "enc0", device)
    toks = [len(x) for x in st0.tokenizer(passages, truncation=False)["input_ids"]]
    words_per = statistics.mean(len(p.split()) for p in passages)
    print(f"    encoder built as: {how}; max_seq_length {st0.max_seq_length}")
    print(
        f"    passages: {n:,}, {words_per:.1f} words each (title + text); tokens per passage (with "
        f"[CLS]/[SEP], before truncation) mean {statistics.mean(toks):.1f}, median "
        f"{statistics.median(toks):.0f}, max {max(toks)}; over 256: {sum(t > 256 for t in toks)}"
    )
    print("    fp16 = model.half(); fp32 with torch's default matmul precision; encode() returns numpy")
    print(flush=True)
    del st0

    current = (None, None)
    st = None
    for idx, dtype, bs in plan:
        name = names[idx]
        if elapsed() > args.budget * 0.85:
            rows.append({"encoder": name, "dtype": dtype, "batch": bs, "error": "skipped: budget"})
            continue
        prefix = shapes[name][4]
        texts = [prefix + p for p in passages]
        try:
            if current != (idx, dtype):
                st = None
                if device == "cuda":
                    torch.cuda.empty_cache()
                st, _ = load_st(tmp / f"enc{idx}", device)
                if dtype == "fp16":
                    st.half()
                st.eval()
                current = (idx, dtype)
                loaded[name] = sum(p.numel() for p in st.parameters())
            st.encode(texts[: 2 * bs], batch_size=bs, show_progress_bar=False)  # warm-up
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            secs, reps = time_encode(st, texts, bs)
            t = time.perf_counter()
            batches = pretokenized(st, texts, bs, device)
            tok_s = time.perf_counter() - t
            fwd = time_forward(st, batches)
            del batches
            r = {
                "encoder": name,
                "dtype": dtype,
                "batch": bs,
                "params": loaded[name],
                "encode_s": secs,
                "repeats": reps,
                "encode_per_s": n / secs,
                "forward_per_s": n / fwd,
                "tokenize_pad_s": tok_s,
                "hours_21M_encode": WIKI18 / (n / secs) / 3600,
                "hours_21M_forward": WIKI18 / (n / fwd) / 3600,
            }
            if device == "cuda":
                r["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            if (idx, dtype) not in notes:
                qprefix = "query: " if prefix else ""
                notes[(idx, dtype)] = True
                lat.append(
                    {
                        "encoder": name,
                        "dtype": dtype,
                        **query_latency(st, [qprefix + q for q in queries], args.tiny),
                    }
                )
        except Exception as e:  # noqa: BLE001
            r = {
                "encoder": name,
                "dtype": dtype,
                "batch": bs,
                "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
            }
        rows.append(r)
        print("progress " + json.dumps(r), flush=True)

    print()
    print(
        "| encoder | dtype | batch | encode() passages/s | forward-only passages/s | hours for 21,015,324 "
        "(encode / forward) | peak mem GiB | notes |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['encoder']} | {r['dtype']} | {r['batch']} | - | - | - | - | {r['error']} |")
            continue
        mem = f"{r['peak_mem_gib']:.2f}" if "peak_mem_gib" in r else "-"
        print(
            f"| {r['encoder']} | {r['dtype']} | {r['batch']} | {r['encode_per_s']:,.0f} | "
            f"{r['forward_per_s']:,.0f} | "
            f"{r['hours_21M_encode']:.2f} / {r['hours_21M_forward']:.2f} | {mem} | "
            f"{r['params'] / 1e6:.1f}M params; {n:,} passages in {r['encode_s']:.2f} s (median of "
            f"{r['repeats']}); tokenize+pad alone {r['tokenize_pad_s']:.2f} s |"
        )
    print()
    print("| encoder | dtype | 1 query, ms | 64 queries, ms |")
    print("| --- | --- | --- | --- |")
    for q in lat:
        print(f"| {q['encoder']} | {q['dtype']} | {q['query_1_ms']:.2f} | {q['query_64_ms']:.2f} |")
    print()
    summary = {
        **report_head("gpu_encode", args.tiny),
        "passages": n,
        "tokens_per_passage_mean": statistics.mean(toks),
        "wiki18_passages": WIKI18,
        "wall_s": round(elapsed(), 1),
        "rows": rows,
        "query_latency": lat,
    }
    print("JSON " + json.dumps(summary))
    with contextlib.suppress(Exception):
        import shutil

        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
