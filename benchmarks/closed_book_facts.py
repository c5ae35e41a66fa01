"""Closed-book answers of a chat checkpoint to 20 real-world questions (capitals, people, dates), no tools:
does a pretrained student keep what it knew while it learns to look up what it cannot know?

    python benchmarks/closed_book_facts.py <checkpoint dir> [gguf_file] > answers.jsonl

Greedy, 40 new tokens, through the checkpoint's own chat template with no system prompt and no tools; an
answer counts when it contains one of the accepted forms as a whole word, case-insensitive ("7" in
"129.99977" does not count). Prints one JSON line per question and a last line with the count."""

import json
import re
import sys

import torch

from cogcore.core.checkpoint import load_model

QUESTIONS = [
    ("What is the capital of France?", ["Paris"]),
    ("What is the capital of Japan?", ["Tokyo"]),
    ("What is the capital of Italy?", ["Rome"]),
    ("What is the capital of Germany?", ["Berlin"]),
    ("What is the capital of Spain?", ["Madrid"]),
    ("What is the capital of the United Kingdom?", ["London"]),
    ("What is the capital of Russia?", ["Moscow"]),
    ("What is the capital of Egypt?", ["Cairo"]),
    ("What is the capital of Canada?", ["Ottawa"]),
    ("What is the capital of Australia?", ["Canberra"]),
    ("Who wrote Romeo and Juliet?", ["Shakespeare"]),
    ("Who painted the Mona Lisa?", ["Leonardo", "da Vinci"]),
    ("Who developed the theory of relativity?", ["Einstein"]),
    ("Who was the first president of the United States?", ["Washington"]),
    ("Who discovered penicillin?", ["Fleming"]),
    ("What is the largest planet in the solar system?", ["Jupiter"]),
    ("What is the chemical symbol for gold?", ["Au"]),
    ("How many continents are there on Earth?", ["seven", "7"]),
    ("In which year did World War II end?", ["1945"]),
    ("What is the longest river in Africa?", ["Nile"]),
]


def accepts(accepted: list[str], answer: str) -> bool:
    return any(re.search(rf"\b{re.escape(a)}\b", answer, re.IGNORECASE) for a in accepted)


def main() -> None:
    path, gguf = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
    model, tokenizer = load_model(path, "cpu", "float32", gguf_file=gguf)
    correct = 0
    for question, accepted in QUESTIONS:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=40, do_sample=False)
        answer = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        ok = accepts(accepted, answer)
        correct += ok
        print(json.dumps({"question": question, "answer": answer, "correct": ok}), flush=True)
    print(json.dumps({"correct": correct, "of": len(QUESTIONS)}))


if __name__ == "__main__":
    main()
