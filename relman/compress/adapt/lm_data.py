"""Instruction rows (a Dataset of kind 'sft') -> token ids with a loss mask, for causal-LM fine-tuning.

The loss is on what the model should learn to say, never on what it is given: on the
completion of a prompt/completion row, on the assistant turns of a chat row. Everything else
is labelled -100 (ignored by the loss).

Prompt/completion rows are plain text, prompt then completion then the end-of-sequence token
(so the model learns to stop). Prompt and completion are tokenised apart, as they are at
generation time, where the prompt is tokenised alone; that keeps a BPE merge across the seam
from teaching token sequences the model never sees when prompted. Chat rows are rendered with
the tokenizer's chat template when it has one (the template decides the role markers and the
end-of-turn token), else with a plain `role: content` layout ending assistant turns with the
end-of-sequence token. Assistant spans are found in characters, by rendering the conversation
up to each assistant turn with and without the generation prompt, and mapped onto tokens by
the tokenizer's offsets; a template whose partial renderings are not prefixes of the whole is
refused rather than guessed at.

A row whose prompt (everything before the first token the loss is on) does not fit the model's
context leaves nothing to learn and is refused naming the row; a row that only runs past the
context is cut at it (the count is reported).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relman.data.dataset import Dataset
from relman.errors import RecipeError

IGNORE = -100


@dataclass
class Encoded:
    ids: list[list[int]]
    labels: list[list[int]]
    truncated: int          # rows cut at the context
    chat_template: bool     # chat rows rendered with the tokenizer's own template
    context: int


def model_context(model: Any, tokenizer: Any) -> int:
    """The longest sequence the model takes: its position table (or the tokenizer's limit)."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not n:
        n = getattr(tokenizer, "model_max_length", None)
        if not n or n > 1_000_000:  # transformers' "no limit" sentinel
            n = 2048
    return int(n)


def check_dataset(dataset: Dataset, ref: str) -> None:
    if dataset.kind != "sft" or (dataset.completions is None and dataset.messages is None):
        raise RecipeError(f"fine-tuning the language model {ref} needs instruction data: a dataset registered "
                          f"with --format sft (prompt/completion or chat messages JSON Lines); "
                          f"'{dataset.name}' holds {dataset.kind} data")
    if len(dataset) == 0:
        raise RecipeError(f"dataset '{dataset.name}' has no rows")


def _eos(tokenizer: Any) -> tuple[int, str]:
    if tokenizer.eos_token_id is None:
        raise RecipeError("the tokenizer has no end-of-sequence token, so a completion cannot be taught to end")
    return int(tokenizer.eos_token_id), str(tokenizer.eos_token)


def _render(tokenizer: Any, turns: list[dict[str, str]], generation_prompt: bool, eos: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        if not turns:
            return ""
        return str(tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt))
    text = "".join(f"{t['role']}: {t['content']}" + (eos if t["role"] == "assistant" else "") + "\n" for t in turns)
    return text + ("assistant: " if generation_prompt else "")


def chat_spans(tokenizer: Any, turns: list[dict[str, str]], eos: str, row: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    full = _render(tokenizer, turns, False, eos)
    spans = []
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        before = _render(tokenizer, turns[:i], True, eos)
        upto = _render(tokenizer, turns[:i + 1], False, eos)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise RecipeError(f"{row}: the chat template does not render the conversation turn by turn (a "
                              "partial rendering is not a prefix of the whole), so the assistant tokens cannot be "
                              "told apart")
        spans.append((len(before), len(upto)))
    return full, spans


def encode(dataset: Dataset, tokenizer: Any, context: int) -> Encoded:
    eos_id, eos = _eos(tokenizer)
    ids_out: list[list[int]] = []
    labels_out: list[list[int]] = []
    truncated = 0
    for i in range(len(dataset)):
        row = f"dataset '{dataset.name}' row {i + 1}"
        if dataset.messages is not None:
            text, spans = chat_spans(tokenizer, dataset.messages[i], eos, row)
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = list(enc["input_ids"])
            labels = [tok if any(a <= start < b for a, b in spans) else IGNORE
                      for tok, (start, _end) in zip(ids, enc["offset_mapping"])]
        else:
            prompt = list(tokenizer(dataset.texts[i])["input_ids"])  # type: ignore[index]
            completion = list(tokenizer(dataset.completions[i], add_special_tokens=False)["input_ids"]) + [eos_id]  # type: ignore[index]
            ids = prompt + completion
            labels = [IGNORE] * len(prompt) + completion
        first = next((k for k, lab in enumerate(labels) if lab != IGNORE), None)
        if first is None:
            raise RecipeError(f"{row}: no token to learn (the completion or assistant turn is empty after tokenising)")
        if first >= context:
            raise RecipeError(f"{row}: the prompt is {first} tokens, longer than the model's context of {context} "
                              "tokens, so no completion token fits; shorten it")
        if len(ids) > context:
            ids, labels = ids[:context], labels[:context]
            truncated += 1
        ids_out.append(ids)
        labels_out.append(labels)
    return Encoded(ids_out, labels_out, truncated, bool(getattr(tokenizer, "chat_template", None))
                   and dataset.messages is not None, context)


def collate(enc: Encoded, index: Any, pad_id: int, device: str) -> dict[str, Any]:
    """Right-padded input_ids, attention_mask and labels (-100 on padding) for rows `index`."""
    import torch

    rows = [int(i) for i in index]
    width = max(len(enc.ids[i]) for i in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, i in enumerate(rows):
        n = len(enc.ids[i])
        ids[k, :n] = torch.as_tensor(enc.ids[i])
        labels[k, :n] = torch.as_tensor(enc.labels[i])
        mask[k, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def example_losses(logits: Any, labels: Any) -> tuple[Any, Any, Any]:
    """Per-row mean next-token loss over the labelled tokens, plus per-row counts of labelled and
    correctly predicted tokens. Rows are weighted equally (each row's loss is its own mean), so a
    long completion does not outweigh a short one, and DP-SGD's per-example clipping sees one
    term per row."""
    import torch

    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    valid = target != IGNORE
    tok_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 target.clamp(min=0).reshape(-1), reduction="none")
    tok_loss = tok_loss.view(target.shape) * valid
    n = valid.sum(1)
    correct = ((logits.argmax(-1) == target) & valid).sum(1)
    return tok_loss.sum(1) / n.clamp(min=1), n, correct
