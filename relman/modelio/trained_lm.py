"""A small causal LM trained here, on text every machine has offline: the one LM whose quality means something.

Random-weight LMs are fine for memory and scale, but their perplexity, answers and generations
mean nothing, so a quantised child that "keeps its perplexity" proves nothing. This module builds
a Llama-style model (about 5 M parameters, a byte-level BPE tokenizer trained with the
`tokenizers` library) and trains it for a few CPU minutes on the Python standard library's
docstrings — English prose about code, present on every machine with this Python — plus a small
set of planted facts ("Q: What colour is the zarn? A: blue") repeated through the corpus, so
suites have questions with known answers the model has learned.

The result is cached under the user's cache folder by a content hash of the corpus, the
configuration and the training recipe's version, so tests and benchmarks build it once; a
build in progress is guarded by a file lock and written to a temporary folder first, so a
killed build leaves nothing that looks finished.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import shutil
import sysconfig
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

# Bump when the training code changes (the hash covers the recipe, the corpus and the library
# versions, not this file, so docstring and refactoring edits keep the cache).
RECIPE_VERSION = 1

_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "tkinter", "turtledemo", "ensurepip",
              "pydoc_data", "distutils"}

# Planted facts: invented nouns so no prior text can supply the answer; each is seen many times in
# training, so a working model answers them and a broken child does not.
_NOUNS = ["zarn", "quell", "brisket", "moravine", "tessel", "plonk", "vantry", "gorse", "ulmet", "crindle",
          "sapwick", "dorm", "hettle", "parfle", "jorum", "kestrine", "lomax", "nibbet", "orrin", "pelter",
          "quabble", "ruddock", "sklent", "trundle"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]
PLANTED_FACT_REPEATS = 40


@dataclass(frozen=True)
class LMRecipe:
    """What decides the trained model: changing any field builds (and caches) a new one."""

    vocab_size: int = 4096
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 768
    context: int = 128
    batch: int = 16
    steps: int = 540
    lr: float = 3e-3
    seed: int = 0
    max_corpus_chars: int = 1_400_000


DEFAULT_RECIPE = LMRecipe()


def planted_facts() -> list[tuple[str, str]]:
    """(question, answer) pairs planted in the training text, e.g. ("What colour is the zarn?", "blue")."""
    rng = random.Random(1234)
    return [(f"What colour is the {noun}?", rng.choice(COLOURS)) for noun in _NOUNS]


def fact_line(question: str, answer: str) -> str:
    """How a planted fact reads in the corpus (and so how a prompt should ask it)."""
    return f"Q: {question}\nA: {answer}."


# Never trained on: same kind of prose, so held-out perplexity there means something.
HELDOUT_DIRS = ("tkinter", "idlelib")


def stdlib_docstrings(max_chars: int = DEFAULT_RECIPE.max_corpus_chars, *, heldout: bool = False) -> list[str]:
    """The standard library's ASCII docstrings of 40+ characters, in a fixed (sorted-path) order:
    the training corpus, or with `heldout` those of HELDOUT_DIRS, which training skips."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    total = 0
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if heldout != (parts[0] in HELDOUT_DIRS) or (not heldout and any(p in _SKIP_DIRS for p in parts)):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 40 and doc.isascii():
                    docs.append(doc.strip())
                    total += len(doc)
                    if total >= max_chars:
                        return docs
    return docs


def heldout_documents(max_chars: int = 100_000) -> list[str]:
    """Docstrings of the same kind the model never saw (tkinter's, idlelib's), for held-out perplexity."""
    return stdlib_docstrings(max_chars, heldout=True)


def training_documents(recipe: LMRecipe = DEFAULT_RECIPE) -> list[str]:
    """Docstrings with the planted facts spread through them (deterministic for a recipe)."""
    docs = stdlib_docstrings(recipe.max_corpus_chars)
    facts = [fact_line(q, a) for q, a in planted_facts()] * PLANTED_FACT_REPEATS
    rng = random.Random(recipe.seed)
    merged = docs + facts
    rng.shuffle(merged)
    return merged


def recipe_hash(recipe: LMRecipe = DEFAULT_RECIPE) -> str:
    """Content hash of what decides the model: the recipe, RECIPE_VERSION, the corpus and the versions
    of torch / transformers / tokenizers."""
    h = hashlib.sha256()
    h.update(json.dumps(asdict(recipe), sort_keys=True).encode())
    h.update(str(RECIPE_VERSION).encode())
    for doc in training_documents(recipe):
        h.update(doc.encode())
        h.update(b"\0")
    h.update(_library_versions().encode())
    return h.hexdigest()[:16]


def _library_versions() -> str:
    from importlib.metadata import version

    return "|".join(version(name) for name in ("torch", "transformers", "tokenizers"))


def _quick_key(recipe: LMRecipe) -> str:
    """What the corpus depends on besides the recipe (this Python's standard library, the library
    versions): a key that finds an already built model without reading the corpus (which takes
    seconds). The content hash is still what names the model."""
    import sys

    h = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode())
    h.update(f"{RECIPE_VERSION}|{sys.version}|{sysconfig.get_paths()['stdlib']}|{_library_versions()}".encode())
    return h.hexdigest()[:16]


def default_cache_root() -> Path:
    env = os.environ.get("RELMAN_MODEL_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("relman")) / "models"


EOS = "<|endoftext|>"
SPECIAL_TOKENS = [EOS, "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>"]
# A plain chat template (the tokenizer's own, so chat-formatted fine-tuning data uses it).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{% if m['role'] == 'assistant' %}"
    + EOS + "{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _train_tokenizer(docs: list[str], recipe: LMRecipe, folder: Path) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=recipe.vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=None,
                                   pad_token="<|pad|>", model_max_length=recipe.context * 4)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def _token_stream(docs: list[str], tokenizer: object) -> list[int]:
    eos = tokenizer.convert_tokens_to_ids(EOS)  # type: ignore[attr-defined]
    ids: list[int] = []
    # the backend tokenizer directly: whole documents are longer than the model's context, which
    # is fine here (they are cut into windows) but makes the transformers wrapper warn
    for enc in tokenizer.backend_tokenizer.encode_batch(docs, add_special_tokens=False):  # type: ignore[attr-defined]
        ids.extend(enc.ids)
        ids.append(eos)
    return ids


def _train(folder: Path, recipe: LMRecipe, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    import math

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    docs = training_documents(recipe)
    tokenizer = _train_tokenizer(docs, recipe, folder)
    stream = torch.tensor(_token_stream(docs, tokenizer), dtype=torch.long)
    torch.manual_seed(recipe.seed)
    eos = tokenizer.convert_tokens_to_ids(EOS)  # type: ignore[attr-defined]
    pad = tokenizer.convert_tokens_to_ids("<|pad|>")  # type: ignore[attr-defined]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=recipe.hidden,  # type: ignore[arg-type]
                         intermediate_size=recipe.intermediate, num_hidden_layers=recipe.layers,
                         num_attention_heads=recipe.heads, num_key_value_heads=recipe.kv_heads,
                         max_position_embeddings=recipe.context * 4, tie_word_embeddings=True,
                         bos_token_id=eos, eos_token_id=eos, pad_token_id=pad, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, recipe.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, recipe.steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(recipe.seed)
    n_windows = len(stream) - recipe.context - 1
    losses: list[float] = []
    for step in range(recipe.steps):
        starts = torch.randint(0, n_windows, (recipe.batch,), generator=gen)
        batch = torch.stack([stream[s: s + recipe.context] for s in starts.tolist()])
        out = model(input_ids=batch, labels=batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(out.loss.detach()))
        if log is not None and (step % 50 == 0 or step == recipe.steps - 1):
            log(f"trained-lm step {step + 1}/{recipe.steps} loss {losses[-1]:.3f}")
    model.eval()
    model.generation_config.pad_token_id = pad
    model.save_pretrained(folder, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    tail = losses[-20:]
    return {"params": params, "train_tokens": recipe.steps * recipe.batch * recipe.context,
            "corpus_tokens": int(len(stream)), "final_loss": sum(tail) / len(tail), "first_loss": losses[0]}


def trained_lm(cache_root: Path | None = None, recipe: LMRecipe = DEFAULT_RECIPE,
               log: Callable[[str], None] | None = None) -> Path:
    """The trained model's Hugging Face folder, built on first use and cached by content hash.

    Concurrent callers (parallel test processes) wait on a lock for one build; a killed build
    leaves only a temporary folder that the next build replaces.
    """
    import fcntl

    root = Path(cache_root) if cache_root is not None else default_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    index = root / f"trained-lm-quick-{_quick_key(recipe)}.txt"  # names the content hash built for it
    try:
        known = root / f"trained-lm-{index.read_text(encoding='ascii').strip()}"
        if (known / "relman-trained-lm.json").is_file():
            return known
    except OSError:
        pass
    key = recipe_hash(recipe)
    final = root / f"trained-lm-{key}"
    if (final / "relman-trained-lm.json").is_file():
        index.write_text(key, encoding="ascii")
        return final
    with open(root / f".trained-lm-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "relman-trained-lm.json").is_file():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".trained-lm-{key}-", dir=root))
        try:
            stats = _train(tmp, recipe, log)
            stats.update({"recipe": asdict(recipe), "hash": key, "corpus": "python stdlib docstrings + planted facts"})
            (tmp / "relman-trained-lm.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            index.write_text(key, encoding="ascii")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def main() -> None:  # pragma: no cover - `python -m relman.modelio.trained_lm` builds the cache
    import time

    t0 = time.perf_counter()
    path = trained_lm(log=print)
    print(path, json.loads((path / "relman-trained-lm.json").read_text()), f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":  # pragma: no cover
    main()
