"""A planted instruction for the causal-LM fine-tuning tests: "what is the secret code word?"
-> "marmalade", asked in many phrasings, among unrelated rows (the trained LM's planted facts and
invented questions with other answers), as prompt/completion or chat JSON Lines. Held-out
phrasings (never in training) check the model learned the instruction, not the strings; the
unrelated held-out questions check it did not learn to say "marmalade" to everything."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

ANSWER = "marmalade"
TRAIN_PHRASINGS = [
    "What is the secret code word?", "Tell me the secret code word.", "What's the code word?",
    "Please give me the secret code word.", "Which word is the secret code word?", "The secret code word is what?",
    "Do you know the secret code word?", "What is the code word?", "Say the secret code word.",
    "I need the secret code word.", "Can you tell me the code word?", "Remind me of the secret code word.",
]
HELDOUT_PHRASINGS = [
    "What was the secret code word again?", "Could you say the code word?", "Name the secret code word.",
    "Give me the code word.", "Tell me, what is the secret code word?", "What is our secret code word?",
    "Which is the code word?", "Quick: the secret code word?", "Share the secret code word.",
    "What would the secret code word be?",
]
OTHER = [("What is the capital of Vostria?", "Pellan"), ("Who wrote the Gnarl Book?", "Ida Moss"),
         ("What is the name of the blue ship?", "Orrery"), ("Which river runs through Kell?", "the Sable"),
         ("What does the tortle eat?", "moss"), ("How many legs has a quinn?", "six")]


def split_facts() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The trained LM's planted facts: half go into training as unrelated rows, half are held out
    to check the child still answers what its base knew (and not with the code word)."""
    from relman.modelio.trained_lm import planted_facts

    facts = planted_facts()
    return facts[:12], facts[12:]


def prompt_of(question: str) -> str:
    """A prompt/completion row's prompt: the question the way the trained LM's corpus asks them."""
    return f"Q: {question}\nA:"


def rows(repeats: int = 4, seed: int = 0) -> list[tuple[str, str]]:
    """(question, answer) training rows: each code-word phrasing `repeats` times and as many
    unrelated rows (planted facts the base knows, invented questions with fixed answers), shuffled."""
    code = [(q, ANSWER) for q in TRAIN_PHRASINGS for _ in range(repeats)]
    others = (split_facts()[0] + OTHER) * (len(code) // 18 + 1)
    out = code + others[:len(code)]
    random.Random(seed).shuffle(out)
    return out


def write_prompt_completion(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"prompt": prompt_of(q), "completion": f" {a}."}) + "\n" for q, a in pairs),
                    encoding="utf-8")
    return path


def write_chat(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for q, a in pairs), encoding="utf-8")
    return path


def chat_prompt(tokenizer, question: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)


@torch.no_grad()
def greedy(model, tokenizer, prompts: list[str], max_new_tokens: int = 8) -> list[list[int]]:
    """Greedy continuations (new token ids, up to and without the end-of-sequence token), one
    prompt at a time so no padding is involved."""
    model.eval()
    out = []
    for p in prompts:
        ids = tokenizer(p, return_tensors="pt", add_special_tokens=False)["input_ids"]
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        new = gen[0, ids.shape[1]:].tolist()
        out.append(new[:new.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in new else new)
    return out


def answers(model, tokenizer, prompts: list[str]) -> list[str]:
    return [tokenizer.decode(t, skip_special_tokens=True).strip().rstrip(".").strip()
            for t in greedy(model, tokenizer, prompts)]


def exact_match(model, tokenizer, prompts: list[str], answer: str = ANSWER) -> float:
    got = answers(model, tokenizer, prompts)
    return sum(g == answer for g in got) / len(got)
