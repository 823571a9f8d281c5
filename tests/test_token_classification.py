"""token-classification end to end: entity F1 (checked against seqeval), the CoNLL reader and
its refusals, and a tiny tagger trained on a planted signal (capitalised words are people)
scored through the real evaluate and compress jobs, in PyTorch, ONNX and ONNX INT8."""

from __future__ import annotations

import random
import string
from pathlib import Path

import numpy as np
import pytest

from relman.errors import DatasetError
from relman.tasks.entity_f1 import entities, entity_scores

TAGS = ["O", "B-PER", "I-PER"]


# -- entity F1 ------------------------------------------------------------------------------------
def test_entities_follow_the_conlleval_rules():
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert entities(["B-PER", "B-PER"]) == [("PER", 0, 0), ("PER", 1, 1)]  # two adjacent people
    assert entities(["O", "I-PER", "I-PER"]) == [("PER", 1, 2)]  # an I- after O starts an entity
    assert entities(["B-PER", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 1)]  # a type change ends one
    assert entities(["O", "O"]) == []


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-LOC"]]
    s = entity_scores(gold, pred)
    # gold: PER(0-1), LOC, PER; predicted: PER(0-1) right, LOC at the wrong place
    assert s["entity_precision"] == pytest.approx(1 / 2) and s["entity_recall"] == pytest.approx(1 / 3)
    assert s["entity_f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert s["f1/PER"] == pytest.approx(2 / 3) and s["support/PER"] == 2 and s["precision/LOC"] == 0.0
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        entity_scores([["O", "O"]], [["O"]])


@pytest.mark.heavy  # seqeval imports scikit-learn (seconds)
def test_entity_scores_match_seqeval_on_random_tag_sequences():
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = random.Random(0)
    tagset = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC"]  # ill-formed I- starts included
    gold = [[rng.choice(tagset) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tagset) for t in g] for g in gold]
    s = entity_scores(gold, pred)
    assert s["entity_f1"] == pytest.approx(seqeval.f1_score(gold, pred))
    assert s["entity_precision"] == pytest.approx(seqeval.precision_score(gold, pred))
    assert s["entity_recall"] == pytest.approx(seqeval.recall_score(gold, pred))
    per_type = seqeval.classification_report(gold, pred, output_dict=True)
    assert s["f1/LOC"] == pytest.approx(per_type["LOC"]["f1-score"])
    assert s["support/PER"] == per_type["PER"]["support"]


# -- planted data ---------------------------------------------------------------------------------
def sentences(n: int, seed: int, people: int = 1) -> list[tuple[list[str], list[str]]]:
    """Lower-case filler words with `people` people in each sentence; a person is one or two
    capitalised made-up names (B-PER, I-PER). Only capitalisation tells them apart."""
    rng = random.Random(seed)
    filler = ["the", "a", "is", "was", "not", "very", "and", "movie", "plot", "actor", "fun", "good"]

    def made_up() -> str:
        return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 5)))

    def word() -> str:
        return rng.choice(filler) if rng.random() < 0.6 else made_up()

    def name() -> str:
        return rng.choice(string.ascii_uppercase) + made_up()

    out = []
    for _ in range(n):
        words: list[str] = []
        tags: list[str] = []
        for i in range(people):  # people never touch: a filler word comes between
            filler_words = [word() for _ in range(rng.randint(0 if i == 0 else 1, 3))]
            person = [name() for _ in range(rng.randint(1, 2))]
            words += filler_words + person
            tags += ["O"] * len(filler_words) + ["B-PER"] + ["I-PER"] * (len(person) - 1)
        tail = [word() for _ in range(rng.randint(1, 3))]
        words += tail
        tags += ["O"] * len(tail)
        out.append((words, tags))
    return out


def write_conll(path: Path, rows, sep: str = "\t") -> Path:
    path.write_text("-DOCSTART- O\n\n" + "\n\n".join("\n".join(f"{w}{sep}{t}" for w, t in zip(ws, ts))
                                                    for ws, ts in rows) + "\n", encoding="utf-8")
    return path


# -- the CoNLL reader -----------------------------------------------------------------------------
def test_conll_reader_reads_sentences_and_round_trips_through_the_catalog(catalog, tmp_path, run_cli):
    from relman.app.datasets import register_dataset
    from relman.data import load_dataset
    from relman.data.readers import guess_format

    rows = sentences(30, seed=3)
    path = write_conll(tmp_path / "ner.conll", rows)
    assert guess_format(path) == "conll"
    row = register_dataset(catalog, path, "ner", val_fraction=0.2)
    assert row["kind"] == "tokens" and row["n_rows"] == 30 and row["labels"] == ["B-PER", "I-PER", "O"]
    ds = load_dataset(catalog, "ner")
    assert ds.words == [w for w, _ in rows]
    assert [[ds.label_names[i] for i in t] for t in ds.tags] == [t for _, t in rows]
    assert ds.texts[0] == " ".join(rows[0][0]) and ds.has_labels
    val = load_dataset(catalog, "ner", "validation")
    assert len(val) == 6 and val.words[0] in ds.words and len(val.tags) == 6
    shown = run_cli("dataset", "show", "ner", "--rows", "1").output
    assert "conll (tokens)" in shown and f"{' '.join(rows[0][1])}" in shown

    # spaces instead of tabs, and CoNLL-2003's four columns (token first, tag last)
    spaced = tmp_path / "spaced.conll"
    spaced.write_text("Alice NNP B-NP B-PER\nsings VBZ B-VP O\n\nBob NNP B-NP B-PER\n", encoding="utf-8")
    two = register_dataset(catalog, spaced, "spaced", labels=TAGS)
    assert two["labels"] == TAGS and two["n_rows"] == 2


def test_conll_tags_are_checked_against_a_models_labels_and_aligned_to_them(catalog, tmp_path):
    from relman.app.datasets import register_dataset
    from relman.data import align_labels, load_dataset

    path = write_conll(tmp_path / "ner.conll", sentences(10, seed=4))
    with pytest.raises(DatasetError, match=r"has labels the model does not know: I-PER \(model labels: O, B-PER\)"):
        register_dataset(catalog, path, "ner", model_labels=["O", "B-PER"])
    register_dataset(catalog, path, "ner", model_labels=TAGS)
    ds = load_dataset(catalog, "ner")
    aligned = align_labels(ds, TAGS)  # the model's order: O, B-PER, I-PER (the file's: sorted)
    assert aligned.label_names == TAGS
    assert [[TAGS[i] for i in t] for t in aligned.tags] == [[ds.label_names[i] for i in t] for t in ds.tags]


@pytest.mark.parametrize("text,message", [
    ("Alice\tB-PER\nsings\n", r"bad.conll line 2: expected a token and a tag separated by a tab or spaces, got 1 "),
    ("Alice\tB-PER\nsings\tVBZ\tO\n", r"bad.conll line 2: 3 columns, but the file's first token line has 2"),
    ("Alice\tB-PER\n\nsings\tPERSON\n", r"bad.conll line 3: tag 'PERSON' is not a BIO tag \(O, B-TYPE or I-TYPE\)"),
    ("Alice\tB-PER\nParis\tB-LOC\n",
     r"bad.conll line 2: tag 'B-LOC' is not one of the given labels \(O, B-PER, I-PER\)"),
    ("\n\n-DOCSTART- O\n\n", r"bad.conll: no sentences"),
])
def test_conll_mistakes_are_one_line_errors_and_store_nothing(catalog, tmp_path, text, message):
    from relman.app.datasets import register_dataset

    path = tmp_path / "bad.conll"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=message) as err:
        register_dataset(catalog, path, "bad", labels=TAGS)
    assert "\n" not in str(err.value)
    assert catalog.query("SELECT COUNT(*) AS n FROM datasets")[0]["n"] == 0
    assert list(catalog.store.all_shas()) == []


# -- a tiny tagger trained on the planted signal --------------------------------------------------
def train_tagger(folder: Path, rows, *, epochs: int = 20, seed: int = 0) -> Path:
    """A few seconds of plain PyTorch training: each word's tag on its first sub-token."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only add contention on a busy machine
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForTokenClassification.from_pretrained(folder)
    label2id = model.config.label2id
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    order = np.random.default_rng(seed)
    for _ in range(epochs):
        for idx in np.array_split(order.permutation(len(rows)), max(1, len(rows) // 16)):
            batch = [rows[i] for i in idx]
            enc = tok([w for w, _ in batch], is_split_into_words=True, padding=True, return_tensors="pt")
            labels = torch.full(enc["input_ids"].shape, -100)
            for r, (_, tags) in enumerate(batch):
                prev = None
                for t, w in enumerate(enc.word_ids(r)):
                    if w is not None and w != prev:
                        labels[r, t] = label2id[tags[w]]
                    prev = w
            loss = model(**enc, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.set_num_threads(threads)
    model.eval().save_pretrained(folder, safe_serialization=True)
    return folder


def run_job(kind: str, catalog, params: dict):
    from relman.jobs.context import JobContext

    module = __import__(f"relman.{'evaluate' if kind == 'evaluate' else 'compress'}.job", fromlist=["run"])
    ctx = JobContext(catalog, device="cpu")
    try:
        return module.run(params, ctx)
    finally:
        ctx.cleanup()


@pytest.mark.heavy
def test_tiny_tagger_learns_names_and_keeps_them_through_onnx_and_int8(catalog, tmp_path):
    from relman.app.datasets import register_dataset
    from relman.app.models import import_model
    from relman.compress.optimize import plan_candidates
    from relman.compress.registry import get_recipe
    from relman.errors import RecipeError
    from relman.evaluate.registry import default_suites
    from relman.modelio import tiny
    from relman.release.modelcard import render_card

    untrained = tiny.tiny_bert_token_classifier(tmp_path / "untrained", TAGS)
    trained = train_tagger(tiny.tiny_bert_token_classifier(tmp_path / "tagger", TAGS), sentences(160, seed=0))
    register_dataset(catalog, write_conll(tmp_path / "test.conll", sentences(60, seed=1), sep=" "), "people")

    base = import_model(catalog, untrained, "untrained")
    ner = import_model(catalog, trained, "ner")
    assert ner.task == "token-classification"  # guessed from BertForTokenClassification
    assert default_suites(ner.task, True) == ["size", "latency", "quality"]

    # compression applicability comes from the table: generic recipes take it, label trainers do not
    for name in ("finetune", "distill"):
        with pytest.raises(RecipeError, match="its task is 'token-classification'"):
            get_recipe(name).check_parents([ner])
    planned = {c["recipe"] for c in plan_candidates(ner, objective="size")}
    assert "ort-int8" in planned and "prune-structured" in planned and "int4-weight-only" not in planned
    onnx = catalog.get_version(run_job("compress", catalog, {"recipe": "onnx-export", "params": {},
                                                             "parent_version_ids": [ner.id],
                                                             "evaluate": False})["version_id"])
    int8 = catalog.get_version(run_job("compress", catalog, {"recipe": "ort-int8", "params": {"mode": "dynamic"},
                                                             "parent_version_ids": [onnx.id],
                                                             "evaluate": False})["version_id"])
    assert (onnx.task, onnx.format, int8.format) == ("token-classification", "onnx", "onnx")

    run_job("evaluate", catalog, {"version_id": base.id, "dataset": "people", "suites": ["quality"], "threads": 1})
    for v in (ner, onnx, int8):
        suites = ["quality"] if v is ner else ["quality", "fidelity"]
        run_job("evaluate", catalog, {"version_id": v.id, "dataset": "people", "suites": suites, "threads": 1})
    # latency on real rows padded to a fixed length (the word alignment must survive the padding)
    run_job("evaluate", catalog, {"version_id": int8.id, "dataset": "people", "suites": ["latency"], "threads": 1,
                                  "batch_sizes": [4], "seq_lens": [24],
                                  "options": {"warmup": 1, "min_samples": 5, "time_budget_s": 2.0}})
    chance, got = catalog.metric_values(base.id), catalog.metric_values(ner.id)
    got_onnx, got_int8 = catalog.metric_values(onnx.id), catalog.metric_values(int8.id)

    assert got["entity_f1"] > 0.7 and got["entity_f1"] - chance["entity_f1"] > 0.4, (got, chance)
    assert got["entities"] == chance["entities"] == 60 and got["words"] > 250
    assert got["token_accuracy"] > chance["token_accuracy"]
    # the ONNX export predicts what PyTorch predicts, word for word
    assert got_onnx["agreement"] == 1.0 and got_onnx["entity_f1"] == pytest.approx(got["entity_f1"])
    assert got_onnx["kl_div"] == pytest.approx(0.0, abs=1e-6)
    # INT8 rounds the weights: nearly the same tags, a real (small) divergence
    assert got_int8["agreement"] > 0.9 and got_int8["kl_div"] > 0
    assert got_int8["entity_f1"] > 0.7
    latency = [m for m in catalog.metrics(int8.id) if m["suite"] == "latency"]
    assert latency and all(m["context"]["seq_len"] == 24 for m in latency)

    import yaml

    front = yaml.safe_load(render_card(catalog, ner).split("---")[1])
    assert front["pipeline_tag"] == "token-classification"
    result = front["model-index"][0]["results"][0]
    assert result["task"]["type"] == "token-classification" and result["dataset"]["name"] == "people"
