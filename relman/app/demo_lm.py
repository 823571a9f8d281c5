"""The demo's language-model path, on the small LM trained here (relman.modelio.trained_lm).

What a team releasing an LM does, in a few CPU minutes (plus about five the first time, to
train the model once per machine):
1. import the trained LM as `stdlib-lm`; register its planted facts as a multiple-choice set
   (OpenCompass mcq: `mc` scores the choice, `generate` asks the question), held-out docstrings
   for perplexity, a planted instruction to teach ("What is the secret code word?" →
   "marmalade", several phrasings) and held-out phrasings of it to check;
2. evaluate the base (perplexity, mc, generate) and release it to production;
3. quantise it to INT4 (`int4-weight-only`), evaluate the child paired with production — its
   answers agree with its parent's, the default gates take it to candidate;
4. break a child on purpose (magnitude pruning at 80 %: its greedy answers fall apart) — the
   default generation gate refuses it, naming the rule;
5. teach the planted instruction with LoRA (default hyper-parameters), merge the adapter, and
   show the merged model answering held-out phrasings it never saw.
Jobs run in worker processes through the runner, as everywhere else.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Iterator

from relman.catalog import Catalog

LM_MODEL = "stdlib-lm"
FACTS = "lm-facts"
TEXT = "lm-heldout"
TEACH = "lm-instruction"
CHECK = "lm-instruction-check"
SECRET = "marmalade"
_LETTERS = "ABCD"
_TRAIN_PHRASINGS = ("What is the secret code word?", "Tell me the secret code word.", "Say the secret code word.",
                    "Which word is the secret code word?", "Please give the secret code word.",
                    "I need the secret code word.", "Secret code word, please?", "What's the secret code word?")
_CHECK_PHRASINGS = ("Could you tell me the secret code word?", "Remind me of the secret code word.",
                    "Do you know the secret code word?", "Give me the secret code word now.")


def _write_datasets(folder: Path) -> dict[str, Path]:
    """The demo's LM datasets as files (mcq, text, sft, qa), all made here from the planted facts."""
    import random

    from relman.modelio.trained_lm import COLOURS, heldout_documents, planted_facts

    rng = random.Random(7)
    facts = folder / "facts.jsonl"
    with open(facts, "w", encoding="utf-8") as f:
        for question, answer in planted_facts():
            wrong = rng.sample([c for c in COLOURS if c != answer], 3)
            options = wrong + [answer]
            rng.shuffle(options)
            row: dict[str, Any] = {"question": f"Q: {question}\nA:"}
            row.update({_LETTERS[i]: o for i, o in enumerate(options)})  # the reader puts the space before it
            row["answer"] = _LETTERS[options.index(answer)]
            f.write(json.dumps(row) + "\n")
    text = folder / "heldout.txt"
    text.write_text("\n".join(d.replace("\n", " ") for d in heldout_documents(20_000)), encoding="utf-8")
    teach = folder / "instruction.jsonl"
    with open(teach, "w", encoding="utf-8") as f:
        for p in _TRAIN_PHRASINGS * 6:
            f.write(json.dumps({"prompt": f"Q: {p}\nA:", "completion": f" {SECRET}."}) + "\n")
        for question, answer in planted_facts()[:12]:  # keep a little of what it knew
            f.write(json.dumps({"prompt": f"Q: {question}\nA:", "completion": f" {answer}."}) + "\n")
    check = folder / "instruction-check.jsonl"
    with open(check, "w", encoding="utf-8") as f:
        for p in _CHECK_PHRASINGS:
            f.write(json.dumps({"question": f"Q: {p}\nA:", "answer": SECRET}) + "\n")
    return {FACTS: facts, TEXT: text, TEACH: teach, CHECK: check}


def _fmt(values: dict[str, float], name: str) -> str:
    v = values.get(name)
    return "n/a" if v is None else f"{v:.3f}"


def adapt_lm(catalog: Catalog, drive: Any, step: Any, refusal: Any) -> Iterator[str]:
    """The LM path (module docstring). `drive`, `step`, `refusal` are the demo's job driver and
    release helpers (relman.app.demo), so both paths release the same way."""
    from relman.app.compress import queue_compression
    from relman.app.datasets import register_dataset
    from relman.app.demo import _newest_child  # the demo's own (imported here: demo imports this module)
    from relman.app.evaluate import queue_evaluation
    from relman.app.models import import_model
    from relman.modelio.trained_lm import trained_lm

    if any(m["name"] == LM_MODEL for m in catalog.models()):
        yield f"{LM_MODEL}: already in the catalog"
        return
    yield "language models: the small LM trained on the stdlib's docstrings (built once per machine, ~5 CPU min)"
    folder = trained_lm()
    base = import_model(catalog, folder, LM_MODEL, task="causal-lm")
    yield f"imported {base.ref} ({base.params or 0:,} params), trained here"
    with tempfile.TemporaryDirectory(dir=catalog.tmp_dir) as tmp:
        files = _write_datasets(Path(tmp))
        register_dataset(catalog, files[FACTS], FACTS, format="mcq")
        register_dataset(catalog, files[TEXT], TEXT, format="text")
        register_dataset(catalog, files[TEACH], TEACH, format="sft")
        register_dataset(catalog, files[CHECK], CHECK, format="qa")
    yield f"registered {FACTS} (planted facts, mcq), {TEXT}, {TEACH} (sft) and {CHECK} (qa)"

    queue_evaluation(catalog, [base.ref], dataset=TEXT, suites=["quality"])
    queue_evaluation(catalog, [base.ref], dataset=FACTS, suites=["mc", "generate"])
    yield from drive(catalog, timeout_s=900)
    m = catalog.metric_values(base.id)
    yield (f"{base.ref}: perplexity {_fmt(m, 'perplexity')}, bits/byte {_fmt(m, 'bits_per_byte')}, "
           f"mc acc {_fmt(m, 'mc_acc')} (chance 0.25), exact match {_fmt(m, 'generate_exact_match')}")
    for to in ("candidate", "staging", "production"):
        yield step(catalog, base.ref, to)

    queue_compression(catalog, base.ref, "int4-weight-only", dataset=TEXT)
    queue_compression(catalog, base.ref, "prune-magnitude", params={"sparsity": 0.8}, dataset=TEXT)
    yield "queued INT4 (int4-weight-only) and a deliberately broken child (magnitude pruning at 80 %)"
    yield from drive(catalog, timeout_s=900)
    int4 = _newest_child(catalog, base.id, "int4-weight-only")
    broken = _newest_child(catalog, base.id, "prune-magnitude")
    children = [v for v in (int4, broken) if v is not None]
    if children:
        queue_evaluation(catalog, [v.ref for v in children], dataset=FACTS, suites=["mc", "generate"])
        yield from drive(catalog, timeout_s=900)
    for v in children:
        m = catalog.metric_values(v.id)
        yield (f"{v.ref} ({v.format}, {v.size_bytes / 1e6:.1f} MB): exact match {_fmt(m, 'generate_exact_match')}, "
               f"answers agree with the parent's on {_fmt(m, 'generate_agreement_vs_parent')} of prompts")
    if int4 is not None:
        yield step(catalog, int4.ref, "candidate")
    if broken is not None:
        yield refusal(catalog, broken.ref, "candidate")

    queue_compression(catalog, base.ref, "finetune", params={"method": "lora"}, dataset=TEACH)
    yield f"queued LoRA fine-tuning of {base.ref} on the planted instruction (default hyper-parameters)"
    yield from drive(catalog, timeout_s=900)
    adapter = _newest_child(catalog, base.id, "finetune")
    if adapter is None:
        yield "LoRA fine-tuning produced no version; see 'relman jobs'"
        return
    queue_compression(catalog, adapter.ref, "merge-adapter")
    yield from drive(catalog, timeout_s=600)
    merged = _newest_child(catalog, adapter.id, "merge-adapter")
    if merged is None:
        yield "merge-adapter produced no version; see 'relman jobs'"
        return
    queue_evaluation(catalog, [merged.ref], dataset=CHECK, suites=["generate"])
    yield from drive(catalog, timeout_s=600)
    m = catalog.metric_values(merged.id)
    yield (f"{adapter.ref} (LoRA adapter, {adapter.size_bytes / 1e6:.2f} MB) merged into {merged.ref}: exact match "
           f"{_fmt(m, 'generate_exact_match')} on {len(_CHECK_PHRASINGS)} phrasings of the instruction it never saw "
           f"(paired with production, its base, on the same prompts: "
           f"{_fmt(m, 'generate_exact_match_delta_vs_production')} higher)")
