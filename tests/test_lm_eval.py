"""The mc and generate suites on the trained LM (relman.modelio.trained_lm), and the default
causal-lm gates over them.

Planted signals: the model saw 24 invented facts ("Q: What colour is the zarn?\\nA: blue.") many
times, so it must pick their colour among four (chance 1/4) and say it greedily; a shuffled
answer key must bring mc back to chance; questions it never saw must get (almost) no exact
match; a child with one attention projection scrambled keeps its perplexity within a few per
cent but loses its answers, and the default gate must refuse it by the generation rule.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relman.app.datasets import register_dataset
from relman.app.models import import_model
from relman.modelio import trained_lm as tlm
from tests.recipe_support import evaluate_job

pytestmark = pytest.mark.heavy

DATA = Path(__file__).parent / "data" / "lm_eval"


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _docstring_items(n: int = 60) -> list[dict]:
    """A training docstring's first ten words vs its true next word and the next words of 3 other
    docstrings (OpenCompass mcq rows). The model is weak (about one pass over the corpus), so the
    signal is local: one word, where a long continuation's likelihood is mostly its own frequency."""
    docs = [d for d in tlm.training_documents() if len(d.split()) >= 40 and "Q: " not in d and d.isascii()]
    picked = random.Random(3).sample(docs, n)
    cut = [(" ".join(w[:10]), w[10]) for w in (d.split() for d in picked)]
    rng = random.Random(1)
    rows = []
    for i, (ctx, cont) in enumerate(cut):
        others = rng.sample([c for j, (_, c) in enumerate(cut) if j != i], 3)
        gold = rng.randrange(4)
        choices = others[:gold] + [cont] + others[gold:]
        rows.append({"question": ctx, **dict(zip("ABCD", choices)), "answer": "ABCD"[gold]})
    return rows


def _metrics(catalog, version_id: int) -> dict[str, dict]:
    return {m["name"]: m for m in catalog.metrics(version_id)}


@pytest.fixture
def lm(catalog, trained_lm_dir: Path):
    return import_model(catalog, trained_lm_dir, "lm")


def test_mc_far_above_chance_on_what_it_saw_and_at_chance_on_a_shuffled_key(catalog, lm, tmp_path: Path) -> None:
    facts = [json.loads(line) for line in (DATA / "colours_mcq.jsonl").read_text().splitlines()]
    docs = _docstring_items()
    rng = random.Random(11)
    shuffled = [dict(r, answer=rng.choice("ABCD")) for r in facts + docs]
    register_dataset(catalog, DATA / "colours_mcq.jsonl", "facts-mc", format="mcq")
    register_dataset(catalog, _write_jsonl(tmp_path / "docs.jsonl", docs), "docs-mc", format="mcq")
    register_dataset(catalog, _write_jsonl(tmp_path / "shuffled.jsonl", shuffled), "shuffled-mc", format="mcq")
    found = {}
    for name in ("facts-mc", "docs-mc", "shuffled-mc"):
        evaluate_job(catalog, lm.id, suites=["mc"], dataset=name)
        m = _metrics(catalog, lm.id)
        found[name] = (m["mc_acc"]["value"], m["mc_acc"]["context"]["interval"], m["mc_acc_norm"]["value"])
    print(found)
    facts_acc, facts_ci, _ = found["facts-mc"]
    docs_acc, docs_ci, _ = found["docs-mc"]
    assert facts_ci[0] > 0.5 and facts_acc >= 0.75, found  # chance 0.25
    assert docs_ci[0] > 0.3 and docs_acc >= 0.45, found  # measured 0.57 of 60
    sh_acc, sh_ci, _ = found["shuffled-mc"]
    assert sh_ci[0] <= 0.25 <= sh_ci[1] and sh_acc < 0.45, found


def test_generate_exact_match_high_on_planted_facts_near_zero_on_unseen(catalog, lm, tmp_path: Path) -> None:
    register_dataset(catalog, DATA / "colours_qa.jsonl", "facts-qa", format="qa")
    rng = random.Random(5)
    unseen = [{"question": f"Q: Who keeps the {w} of {v}?\nA:", "answer": rng.choice(["Orlan", "Brevik", "Tamsin"])}
              for w, v in zip(["lantern", "ledger", "anchor", "bell", "map", "seal", "crown", "gate", "drum", "loom",
                               "kiln", "harp"], ["Pell", "Ostra", "Vane", "Idris", "Moro", "Tull", "Quen", "Saro",
                                                  "Hask", "Lute", "Dremm", "Fiel"])]
    register_dataset(catalog, _write_jsonl(tmp_path / "unseen.jsonl", unseen), "unseen-qa", format="qa")
    evaluate_job(catalog, lm.id, suites=["generate"], dataset="facts-qa")
    facts = _metrics(catalog, lm.id)["generate_exact_match"]
    evaluate_job(catalog, lm.id, suites=["generate"], dataset="unseen-qa")
    unseen_em = _metrics(catalog, lm.id)["generate_exact_match"]
    print(facts["value"], unseen_em["value"])
    assert facts["value"] >= 0.6 and facts["context"]["interval"][0] > 0.35, facts
    assert unseen_em["value"] <= 1 / 12, unseen_em
    # every output is stored; the newest artifact is the unseen run's
    arts = catalog.evaluation_artifacts(lm.id, kind="generations")
    assert len(arts) == 2
    doc = json.loads(catalog.read_blob(arts[0]["sha256"]))
    assert len(doc["items"]) == 24 and sum(i["correct"] for i in doc["items"]) == round(facts["value"] * 24)
    assert all(i["output"] and i["token_ids"] for i in doc["items"])


def _child(catalog, parent, trained_lm_dir: Path, tmp_path: Path, name: str, scramble: bool,
           recipe: str = "test-edit"):
    """A new hf version of `lm` whose parent is `parent`: the same weights, or with layer 3's
    attention output projection's rows permuted (a 'scrambled layer')."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / name
    shutil.copytree(trained_lm_dir, folder)
    weights = folder / "model.safetensors"
    state = load_file(weights)
    key = "model.layers.3.self_attn.o_proj.weight"
    if scramble:
        g = torch.Generator().manual_seed(0)
        state[key] = state[key][torch.randperm(state[key].shape[0], generator=g)].contiguous()
    save_file(state, weights, metadata={"format": "pt"})
    files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    return catalog.add_version("lm", files, format="hf", task="causal-lm", architecture=parent.architecture,
                               params=parent.params, parents=[(parent.id, None)], relation=recipe,
                               recipe={"name": recipe}, event_kind="derive")


def test_default_gate_refuses_a_scrambled_child_whose_perplexity_barely_moves(catalog, lm, trained_lm_dir: Path,
                                                                              tmp_path: Path) -> None:
    from relman.release.gates import evaluate_gates

    register_dataset(catalog, DATA / "colours_qa.jsonl", "facts-qa", format="qa")
    register_dataset(catalog, DATA / "colours_mcq.jsonl", "facts-mc", format="mcq")
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("\n".join(" ".join(d.split())[:300] for d in tlm.heldout_documents(40_000)[:64]))
    register_dataset(catalog, heldout, "heldout", format="text")
    honest = _child(catalog, lm, trained_lm_dir, tmp_path, "honest", scramble=False)
    broken = _child(catalog, lm, trained_lm_dir, tmp_path, "broken", scramble=True)
    for v in (honest, broken):
        evaluate_job(catalog, v.id, suites=["quality"], dataset="heldout")
        evaluate_job(catalog, v.id, suites=["mc"], dataset="facts-mc")
        evaluate_job(catalog, v.id, suites=["generate"], dataset="facts-qa")
    evaluate_job(catalog, lm.id, suites=["quality"], dataset="heldout")
    ppl = {v.ref: _metrics(catalog, v.id)["perplexity"]["value"] for v in (lm, honest, broken)}
    bm = _metrics(catalog, broken.id)
    print(ppl, {k: bm[k]["value"] for k in ("generate_exact_match", "generate_exact_match_delta_vs_parent",
                                             "generate_agreement_vs_parent", "mc_acc_delta_vs_parent",
                                             "loss_delta_vs_parent")})
    pm = _metrics(catalog, lm.id)  # bits per byte: the summed NLL over the scored text's UTF-8 bytes
    text_bytes = sum(len(line.encode()) for line in heldout.read_text().splitlines())
    assert 0.8 * text_bytes <= pm["bytes"]["value"] <= text_bytes
    assert pm["bits_per_byte"]["value"] == pytest.approx(
        pm["loss"]["value"] * pm["tokens"]["value"] / (math.log(2) * pm["bytes"]["value"]), rel=1e-9)
    assert ppl[broken.ref] < 1.15 * ppl[lm.ref]  # perplexity moves little ...
    assert bm["generate_exact_match_delta_vs_parent"]["context"]["interval"][1] < -0.2  # ... the answers go
    hm = _metrics(catalog, honest.id)
    assert hm["generate_agreement_vs_parent"]["value"] == 1.0 and hm["generate_exact_match_delta_vs_parent"]["value"] == 0

    refused = evaluate_gates(catalog, broken, "candidate")
    failed = {r.rule for r in refused.rules if r.status == "fail"}
    assert not refused.passed
    assert "generate_exact_match_delta_vs_parent.upper >= -0.01 when causal_lm and has_parent and not has_production" \
        in failed, refused.rules
    accepted = evaluate_gates(catalog, honest, "candidate")
    assert accepted.passed, [(r.rule, r.status, r.reason) for r in accepted.rules]

    # the flipped answers are listed from what the child's evaluation stored
    from click.testing import CliRunner

    from relman.cli import cli

    r = CliRunner().invoke(cli, ["--catalog", str(catalog.root), "generations", broken.ref, "--flips", "--json"],
                           catch_exceptions=False)
    flips = json.loads(r.output)
    lost = bm["generate_exact_match_delta_vs_parent"]["context"]["child_only_wrong"]
    assert len([f for f in flips if f["flip"] == "lost"]) == lost > 0
    assert all(f["reference_output"] != f["output"] for f in flips)


_GUARD = '''
import os, socket
_log = os.environ["RELMAN_TEST_NET_LOG"]
with open(_log, "a") as f:
    f.write(f"loaded {os.getpid()}\\n")
_real = socket.socket.connect
def _refuse(self, address, *a, **k):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        with open(_log, "a") as f:
            f.write(f"connect {os.getpid()} {address!r}\\n")
        raise OSError("network cut off by the test")
    return _real(self, address, *a, **k)
socket.socket.connect = _refuse
socket.socket.connect_ex = lambda self, address: _refuse(self, address) or 0
socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError("network cut off by the test"))
'''


def test_cli_evaluates_mc_and_generate_with_the_network_cut_off(catalog, lm, catalog_path: Path,
                                                                tmp_path: Path) -> None:
    """`relman evaluate X --suite mc,generate --dataset D --wait` in a subprocess whose Python (and
    its worker's) fails every internet connect: the job succeeds, nothing tried to connect."""
    from tests.conftest import REPO, relman_subprocess_env

    register_dataset(catalog, DATA / "colours.yaml", "facts-harness")
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(_GUARD)
    log = tmp_path / "net.log"
    env = relman_subprocess_env(catalog_path)
    env["PYTHONPATH"] = f"{guard}{os.pathsep}{REPO}"
    env["RELMAN_TEST_NET_LOG"] = str(log)
    env.pop("HF_HUB_OFFLINE", None)  # the code itself must not reach for the hub
    env["RELMAN_TORCH_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-m", "relman", "--catalog", str(catalog_path), "evaluate", lm.ref,
                        "--suite", "mc,generate", "--dataset", "facts-harness", "--wait"], env=env,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    register_dataset(catalog, DATA / "colours_qa.jsonl", "facts-qa", format="qa")
    r = subprocess.run([sys.executable, "-m", "relman", "--catalog", str(catalog_path), "evaluate", lm.ref,
                        "--suite", "mc", "--dataset", "facts-qa"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode != 0 and "suite 'mc' reads mcq items, but dataset 'facts-qa' holds qa data" in r.stderr
    lines = log.read_text().splitlines()
    pids = {line.split()[1] for line in lines if line.startswith("loaded")}
    workers = {str(row[0]) for row in catalog.conn.execute("SELECT pid FROM jobs WHERE kind = 'evaluate'")}
    assert workers and workers <= pids, (workers, lines)  # the guard ran in the worker process too
    assert not [line for line in lines if line.startswith("connect")], lines
    shown = subprocess.run([sys.executable, "-m", "relman", "--catalog", str(catalog_path), "metrics", lm.ref],
                           env=env, capture_output=True, text=True, timeout=120, check=False)
    assert "mc_acc_norm" in shown.stdout and "generate_exact_match" in shown.stdout, shown.stdout
    em = _metrics(catalog, lm.id)["generate_exact_match"]["value"]  # the right choice, said greedily
    assert em >= 0.6, em


def test_agreement_rule_for_compressed_lms(catalog, lm, trained_lm_dir: Path, tmp_path: Path) -> None:
    """A real compression (bfloat16 weights) keeps its greedy answers: generate_agreement_vs_parent
    clears the policy's share. A child stamped as the same recipe whose weights are scrambled (a
    faulty quantiser) is refused by that rule by name."""
    from relman.release.gates import evaluate_gates
    from relman.release.policy import GENERATION_AGREEMENT_SHARE
    from tests.recipe_support import compress_job

    register_dataset(catalog, DATA / "colours_qa.jsonl", "facts-qa", format="qa")
    half = compress_job(catalog, lm.id, "half", {"dtype": "bfloat16"})
    faulty = _child(catalog, lm, trained_lm_dir, tmp_path, "faulty", scramble=True, recipe="half")
    rule = f"generate_agreement_vs_parent >= {GENERATION_AGREEMENT_SHARE} when causal_lm and compressed"
    status = {}
    for v in (half, faulty):
        evaluate_job(catalog, v.id, suites=["generate"], dataset="facts-qa")
        report = evaluate_gates(catalog, v, "candidate", rehash=False)
        status[v.ref] = (_metrics(catalog, v.id)["generate_agreement_vs_parent"]["value"],
                         next(r.status for r in report.rules if r.rule == rule))
    print(status)
    assert status[half.ref][0] >= GENERATION_AGREEMENT_SHARE and status[half.ref][1] == "pass", status
    assert status[faulty.ref] == (0.0, "fail"), status
