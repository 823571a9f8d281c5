"""Metric suites and the evaluate job on tiny real models (PyTorch and ONNX versions), each
number checked against an independent computation; failures store nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from relman.errors import EvaluationError, JobCancelled

from import_probe import heavy_loaded_by
from recipe_support import evaluate_job as evaluate

FAST_LATENCY = {"warmup": 3, "min_samples": 30, "time_budget_s": 5}


def onnx_copy(src: Path, task: str) -> Path:
    """The ONNX export of a tiny model, made once per test session (cached next to it)."""
    from relman.compress.export.onnx_export import export_onnx

    out = src.parent / f"{src.name}-onnx"
    if not (out / "model.onnx").is_file():
        export_onnx(src, out, task)
    return out


def import_pair(catalog, folder: Path, name: str, task: str):
    """The HF version and its ONNX export stored as a child (lineage: parent = HF)."""
    from relman.app.models import import_model

    hf = import_model(catalog, folder, name)
    onnx_dir = onnx_copy(folder, task)
    files = {p.relative_to(onnx_dir).as_posix(): p for p in onnx_dir.rglob("*") if p.is_file()}
    ox = catalog.add_version(name, files, format="onnx", task=task, parents=[(hf.id, None)], relation="export",
                             event_kind="derive")
    return hf, ox


def values(catalog, version_id: int) -> dict[str, float]:
    return catalog.metric_values(version_id)


def torch_logits(folder: Path, texts=None, images=None) -> np.ndarray:
    """Plain transformers predictions (no relman.tasks code), batched by 16."""
    import torch
    from transformers import (AutoImageProcessor, AutoModelForImageClassification, AutoModelForSequenceClassification,
                              AutoTokenizer)

    outs = []
    if texts is not None:
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        for i in range(0, len(texts), 16):
            with torch.no_grad():
                outs.append(model(**tok(texts[i:i + 16], padding=True, return_tensors="pt")).logits.numpy())
    else:
        proc = AutoImageProcessor.from_pretrained(folder)
        model = AutoModelForImageClassification.from_pretrained(folder).eval()
        for i in range(0, len(images), 16):
            px = proc(images=list(images[i:i + 16]), return_tensors="pt", input_data_format="channels_last")
            with torch.no_grad():
                outs.append(model(**px).logits.numpy())
    return np.concatenate(outs)


# -- quality, fidelity, fairness, robustness on text ------------------------------------------------
def test_text_classifier_suites_match_sklearn_and_fairlearn(catalog, tiny_bert):
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
    from sklearn.metrics import accuracy_score, f1_score

    from relman.app.datasets import register_demo_sentiment
    from relman.data import load_dataset

    hf, ox = import_pair(catalog, tiny_bert, "bert", "text-classification")
    register_demo_sentiment(catalog, n=32)
    ds = load_dataset(catalog, "sentiment")
    pred = torch_logits(tiny_bert, texts=ds.texts).argmax(1)
    y = ds.labels  # dataset labels negative/positive = the model's label order
    for v in (hf, ox):
        suites = ["quality", "fairness", "robustness"] + (["fidelity"] if v is ox else [])
        result = evaluate(catalog, v.id, dataset="sentiment", suites=suites, options={"eval_batch_size": 16})
        assert result["suites"] == [s for s in ("quality", "fidelity", "robustness", "fairness") if s in suites]
        got = values(catalog, v.id)
        assert got["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-9), v.format
        assert got["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-9), v.format
        pos = pred == 1
        if pos.any():
            assert got["f1/positive"] == pytest.approx(f1_score(y, pred, pos_label=1, average="binary"), abs=1e-9)
        assert got["eval_samples"] == 32 and got["eval_throughput_sps"] > 0
        # fairness: per-group accuracy and Fairlearn's differences on the same predictions
        groups = np.asarray(ds.groups).astype(str)
        accs = {g: float(np.mean(pred[groups == g] == y[groups == g])) for g in set(groups)}
        for g, a in accs.items():
            assert got[f"accuracy/{g}"] == pytest.approx(a)
        assert got["fairness_gap"] == pytest.approx(max(accs.values()) - min(accs.values()))
        assert got["demographic_parity_diff"] == pytest.approx(
            demographic_parity_difference(y, pred, sensitive_features=groups))
        assert got["equalized_odds_diff"] == pytest.approx(
            equalized_odds_difference(y, pred, sensitive_features=groups))
        # robustness: five seeded text perturbations, drop measured from the clean accuracy
        kinds = {"typo", "swap", "case", "whitespace", "punctuation"}
        assert {k.split("/", 1)[1] for k in got if k.startswith("robust_accuracy/")} == kinds
        mean = np.mean([got[f"robust_accuracy/{k}"] for k in kinds])
        assert got["robust_accuracy"] == pytest.approx(mean)
        assert got["robustness_drop"] == pytest.approx(got["clean_accuracy"] - mean)
        assert got["clean_accuracy"] == pytest.approx(got["accuracy"])
    # the ONNX child reproduces its parent exactly: fidelity ~ identity
    ox_vals = values(catalog, ox.id)
    assert ox_vals["agreement"] == 1.0 and ox_vals["kl_div"] == pytest.approx(0.0, abs=1e-6)
    # every metric carries the conditions it was measured under
    m = next(r for r in catalog.metrics(ox.id) if r["name"] == "accuracy")
    assert m["dataset"] == "sentiment"
    ctx = m["context"]
    assert ctx["device"] == "cpu" and ctx["threads"] == 1 and ctx["format"] == "onnx" and ctx["batch_size"] == 16
    assert ctx["dataset_sha"] == ds.sha256 and {"torch", "transformers", "onnxruntime"} <= set(ctx["libs"])
    fid = next(r for r in catalog.metrics(ox.id) if r["name"] == "agreement")
    assert fid["context"]["parent"] == hf.ref
    assert [e["kind"] for e in catalog.events()].count("metrics") == 2


def test_robustness_perturbations_are_seeded_and_text_changes():
    from relman.evaluate.perturb import TEXT_KINDS, perturb_texts

    texts = ["the movie was very good, i love the plot!"] * 3
    for kind in TEXT_KINDS:
        a = perturb_texts(texts, kind, 0.1, seed=3)
        assert a == perturb_texts(texts, kind, 0.1, seed=3), kind
        assert all(t != texts[0] for t in a), kind
        assert a != perturb_texts(texts, kind, 0.1, seed=4) or kind == "case", kind


# -- images --------------------------------------------------------------------------------------
def test_image_classifier_quality_robustness_in_both_formats(catalog, tiny_vit):
    from sklearn.metrics import accuracy_score, f1_score

    from relman.app.datasets import register_demo_digits
    from relman.data import load_dataset
    from relman.evaluate.perturb import perturb_images

    hf, ox = import_pair(catalog, tiny_vit, "vit", "image-classification")
    register_demo_digits(catalog, n=100)
    test = load_dataset(catalog, "digits", split="test")
    assert len(test) == 20
    pred = torch_logits(tiny_vit, images=test.images).argmax(1)
    noisy = torch_logits(tiny_vit, images=perturb_images(test.images, "noise", 0, noise_std=0.1)).argmax(1)
    for v in (hf, ox):
        evaluate(catalog, v.id, dataset="digits", suites=["quality", "robustness"])
        got = values(catalog, v.id)
        assert got["accuracy"] == pytest.approx(accuracy_score(test.labels, pred)), v.format
        assert got["macro_f1"] == pytest.approx(f1_score(test.labels, pred, average="macro")), v.format
        assert got["eval_samples"] == 20  # the test split of the seeded split
        assert got["robust_accuracy/noise"] == pytest.approx(np.mean(noisy == test.labels)), v.format
        assert {"robust_accuracy/brightness", "robust_accuracy/shift"} <= set(got)
    # FGSM needs gradients: the PyTorch version has it, the ONNX version honestly does not
    assert "robust_accuracy/fgsm" in values(catalog, hf.id)
    assert "robust_accuracy/fgsm" not in values(catalog, ox.id)
    assert values(catalog, hf.id)["robust_accuracy/fgsm"] <= values(catalog, hf.id)["clean_accuracy"]


# -- causal LM -------------------------------------------------------------------------------------
def test_perplexity_matches_a_direct_torch_computation(catalog, tiny_gpt2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relman.app.datasets import register_demo_text
    from relman.data import load_dataset

    hf, ox = import_pair(catalog, tiny_gpt2, "gpt", "causal-lm")
    register_demo_text(catalog, n=12)
    ds = load_dataset(catalog, "text")
    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    total, count = 0.0, 0
    for text in ds.texts:  # one unpadded text at a time: nothing to mask
        ids = tok(text, return_tensors="pt")["input_ids"][:, :128]
        with torch.no_grad():
            loss = float(model(input_ids=ids, labels=ids).loss)
        total += loss * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    expected = float(np.exp(total / count))
    for v in (hf, ox):
        evaluate(catalog, v.id, dataset="text", suites=["quality"] + (["fidelity"] if v is ox else []),
                 options={"eval_batch_size": 5})
        got = values(catalog, v.id)
        assert got["perplexity"] == pytest.approx(expected, rel=1e-5), v.format
        assert got["tokens"] == count
    assert values(catalog, ox.id)["agreement"] == 1.0
    assert values(catalog, ox.id)["kl_div"] == pytest.approx(0.0, abs=1e-6)


# -- embeddings ----------------------------------------------------------------------------------
def test_embedding_fidelity_is_cosine(catalog, tiny_bert_encoder, tmp_path):
    from relman.app.datasets import register_demo_sentiment
    from relman.app.models import import_model
    from relman.modelio import tiny

    hf, ox = import_pair(catalog, tiny_bert_encoder, "enc", "feature-extraction")
    other = import_model(catalog, tiny.tiny_bert_encoder(tmp_path / "enc2", seed=1), "enc2")
    register_demo_sentiment(catalog, n=20)
    evaluate(catalog, ox.id, dataset="sentiment", suites=["fidelity"])
    assert values(catalog, ox.id)["cosine"] == pytest.approx(1.0, abs=1e-5)
    evaluate(catalog, other.id, dataset="sentiment", suites=["fidelity"], parent_version_id=hf.id)
    got = values(catalog, other.id)
    assert got["cosine_min"] <= got["cosine"] < 0.999  # a different network really differs
    # an independent computation of that mean cosine
    from relman.tasks import open_runner

    ds_texts = __import__("relman.data", fromlist=["load_dataset"]).load_dataset(catalog, "sentiment").texts
    a = open_runner(tiny_bert_encoder, "hf", "feature-extraction", "cpu", 1)
    b = open_runner(tmp_path / "enc2", "hf", "feature-extraction", "cpu", 1)
    from relman.data.dataset import Dataset

    d = Dataset("s", "text", texts=ds_texts)
    ea, eb = a.predict(a.prepare(d)), b.predict(b.prepare(d))
    cos = np.sum(ea * eb, 1) / (np.linalg.norm(ea, axis=1) * np.linalg.norm(eb, axis=1))
    assert got["cosine"] == pytest.approx(float(cos.mean()), abs=1e-5)


# -- size, memory, latency -----------------------------------------------------------------------
def test_size_and_memory(catalog, tiny_bert):
    from relman.evaluate.size import count_params

    hf, ox = import_pair(catalog, tiny_bert, "bert", "text-classification")
    for v in (hf, ox):
        evaluate(catalog, v.id, suites=["size", "memory"], batch_sizes=[2], seq_lens=[16])
        got = values(catalog, v.id)
        on_disk = sum(a["size"] for a in catalog.artifacts(v.id))
        assert got["size_bytes"] == on_disk and got["size_mb"] == pytest.approx(on_disk / 2**20)
        if v.params is not None:
            assert got["params"] == v.params
        else:  # the ONNX child was stored without a count: counted from its initializers
            from relman.modelio.inspect import onnx_stats

            assert got["params"] == onnx_stats(onnx_copy(tiny_bert, "text-classification") / "model.onnx")[0]
        assert got["peak_rss_mb"] >= got["model_rss_mb"] >= 0 and got["peak_rss_mb"] > 50
        mem = next(r for r in catalog.metrics(v.id) if r["name"] == "peak_rss_mb")
        assert mem["context"]["batch_size"] == 2 and mem["context"]["seq_len"] == 16 and mem["dataset"] is None
    # parameter count read from the safetensors header = the importer's own count
    assert count_params(tiny_bert, "hf") == hf.params


def _plain_loop_ms(call, n: int) -> np.ndarray:
    for _ in range(5):
        call()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000)
    return np.asarray(out)


@pytest.mark.parametrize("fmt", ["hf", "onnx"])
def test_latency_agrees_with_a_plain_timing_loop(tiny_bert, fmt):
    from relman.evaluate import latency
    from relman.evaluate.env import ModelRef, SuiteEnv

    folder = tiny_bert if fmt == "hf" else onnx_copy(tiny_bert, "text-classification")
    env = SuiteEnv(model=ModelRef(None, folder, fmt, "text-classification"), device="cpu", threads=1,
                   options={"warmup": 5, "min_samples": 200, "time_budget_s": 30}, batch_sizes=[4, 1],
                   seq_lens=[32])
    metrics = {m.name: m for m in latency.run(env)}
    p = [metrics[f"latency_p{q}_ms"].value for q in (50, 90, 95, 99)]
    assert p == sorted(p) and p[0] > 0
    ctx = metrics["latency_p50_ms"].context
    assert ctx["batch_size"] == 4 and ctx["seq_len"] == 32 and ctx["samples"] == 200 and ctx["threads"] == 1
    assert metrics["throughput_sps"].value == pytest.approx(4000 / metrics["latency_mean_ms"].value)
    assert "latency_p50_ms@b1s32" in metrics  # the second configuration, suffixed
    # a plain loop over the very same session / model and inputs
    runner = env.runner()
    batch = runner.prepare_synthetic(4, 32)
    if fmt == "onnx":
        sess, feeds = runner.backend.session, batch.native
        call = lambda: sess.run(None, feeds)  # noqa: E731
    else:
        import torch

        model, inputs = runner.backend.model, batch.native

        def call():
            with torch.inference_mode():
                model(**inputs)
    plain = float(np.median(_plain_loop_ms(call, 200)))
    assert 0.33 < metrics["latency_p50_ms"].value / plain < 3.0, (metrics["latency_p50_ms"].value, plain)


def test_latency_time_budget_stops_early(tiny_bert):
    from relman.evaluate.latency import time_calls

    ms = time_calls(lambda: time.sleep(0.01), warmup=0, min_samples=10_000, time_budget_s=0.2)
    assert 5 <= len(ms) < 100 and np.all(ms >= 9)


@pytest.mark.gpu
def test_cuda_memory_latency_quality(catalog, tiny_bert):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from relman.app.datasets import register_demo_sentiment
    from relman.app.models import import_model

    v = import_model(catalog, tiny_bert, "bert")
    register_demo_sentiment(catalog, n=16)
    evaluate(catalog, v.id, dataset="sentiment", suites=["quality"], device="cpu")
    cpu_accuracy = values(catalog, v.id)["accuracy"]
    evaluate(catalog, v.id, dataset="sentiment", suites=["memory", "latency", "quality"], device="cuda",
             options=FAST_LATENCY)
    got = values(catalog, v.id)
    assert got["peak_gpu_mb"] > 0 and got["latency_p50_ms"] > 0
    assert got["accuracy"] == pytest.approx(cpu_accuracy)
    lat = next(r for r in catalog.metrics(v.id) if r["name"] == "latency_p50_ms")
    assert lat["context"]["timer"] == "cuda_events" and lat["context"]["device"] == "cuda"


# -- failures store nothing ----------------------------------------------------------------------
def _metric_rows(catalog) -> int:
    return catalog.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]


def test_failed_job_stores_no_partial_metrics(catalog, tiny_vit):
    from relman.app.datasets import register_demo_sentiment
    from relman.app.models import import_model

    v = import_model(catalog, tiny_vit, "vit")
    register_demo_sentiment(catalog, n=10)
    events_before = len(catalog.events())
    # size runs (and succeeds) first; latency then meets a text dataset for an image model
    with pytest.raises(EvaluationError, match="dataset 'sentiment' holds text data, but a image-classification "
                                              "model needs image data"):
        evaluate(catalog, v.id, dataset="sentiment", suites=["size", "latency", "quality"], options=FAST_LATENCY)
    assert _metric_rows(catalog) == 0 and len(catalog.events()) == events_before


def test_cancelled_job_stores_nothing(catalog, tiny_bert):
    from relman.app.models import import_model
    from relman.evaluate.job import run
    from relman.jobs.context import JobContext

    v = import_model(catalog, tiny_bert, "bert")
    ctx = JobContext(catalog, device="cpu")
    ctx.cancel()
    with pytest.raises(JobCancelled):
        run({"version_id": v.id, "suites": ["size"]}, ctx)
    assert _metric_rows(catalog) == 0


def test_bad_requests_are_clear_errors(catalog, tiny_bert, tiny_gpt2):
    from relman.app.models import import_model

    bert = import_model(catalog, tiny_bert, "bert")
    gpt = import_model(catalog, tiny_gpt2, "gpt")
    with pytest.raises(EvaluationError, match="suite 'quality' needs a dataset"):
        evaluate(catalog, bert.id, suites=["quality"])
    with pytest.raises(EvaluationError, match="unknown suite 'speed'"):
        evaluate(catalog, bert.id, suites=["speed"])
    with pytest.raises(EvaluationError, match="suite 'robustness' does not apply to gpt@1.0.0"):
        evaluate(catalog, gpt.id, dataset="x", suites=["robustness"])
    with pytest.raises(EvaluationError, match="no chosen suite \\(size\\) takes option warmup"):
        evaluate(catalog, bert.id, suites=["size"], options={"warmup": 3})
    with pytest.raises(EvaluationError, match="option 'min_samples' expects int, got 'lots'"):
        evaluate(catalog, bert.id, suites=["latency"], options={"min_samples": "lots"})
    with pytest.raises(EvaluationError, match="fidelity compares bert@1.0.0 with its parent, but it has none"):
        evaluate(catalog, bert.id, dataset="x", suites=["fidelity"])
    assert _metric_rows(catalog) == 0


# -- queueing and the CLI --------------------------------------------------------------------------
def test_queue_evaluation_one_job_per_version_same_settings(catalog, tiny_bert, tiny_gpt2):
    from relman.app.datasets import register_demo_sentiment
    from relman.app.evaluate import queue_evaluation
    from relman.app.models import import_model

    a = import_model(catalog, tiny_bert, "bert")
    b = import_model(catalog, tiny_bert, "bert", version="2.0.0")
    gpt = import_model(catalog, tiny_gpt2, "gpt")
    register_demo_sentiment(catalog, n=10)
    ids = queue_evaluation(catalog, ["bert@1.0.0", "bert@2.0.0"], dataset="sentiment",
                           suites=["latency", "quality"], batch_sizes=[1, 4], seq_lens=[64], max_samples=8,
                           options={"min_samples": 50})
    rows = catalog.query("SELECT * FROM jobs ORDER BY id")
    assert [r["id"] for r in rows] == ids and {r["kind"] for r in rows} == {"evaluate"}
    params = [json.loads(r["params"]) for r in rows]
    assert [p.pop("version_id") for p in params] == [a.id, b.id]
    assert params[0] == params[1] == {"dataset": 1, "suites": ["latency", "quality"], "batch_sizes": [1, 4],
                                      "seq_lens": [64], "max_samples": 8, "options": {"min_samples": 50}}
    # a request that is wrong for any one version queues nothing at all
    with pytest.raises(EvaluationError, match="suite 'quality' does not apply|does not apply"):
        queue_evaluation(catalog, ["bert@1.0.0", "gpt@1.0.0"], dataset="sentiment", suites=["robustness"])
    with pytest.raises(Exception, match="unknown dataset 'nope'"):
        queue_evaluation(catalog, ["bert@1.0.0"], dataset="nope", suites=["quality"])
    assert len(catalog.query("SELECT id FROM jobs")) == 2
    assert gpt.task == "causal-lm"


def test_queueing_refuses_data_that_cannot_serve_the_suites(catalog, tiny_bert, tiny_vit):
    from relman.app.datasets import register_demo_digits, register_demo_text
    from relman.app.evaluate import queue_evaluation
    from relman.app.models import import_model

    import_model(catalog, tiny_bert, "bert")
    import_model(catalog, tiny_vit, "vit")
    register_demo_digits(catalog, n=30)
    register_demo_text(catalog, n=5)
    with pytest.raises(EvaluationError, match="dataset 'digits' holds image data, but bert@1.0.0 is a "
                                              "text-classification model and needs text data"):
        queue_evaluation(catalog, ["bert"], dataset="digits", suites=["latency"])
    with pytest.raises(EvaluationError, match="suite 'fairness' needs a group column, but dataset 'digits' has none"):
        queue_evaluation(catalog, ["vit"], dataset="digits", suites=["fairness"])
    with pytest.raises(EvaluationError, match="holds lm data, but bert@1.0.0 is a text-classification model"):
        queue_evaluation(catalog, ["bert"], dataset="text", suites=["quality"])
    assert catalog.query("SELECT COUNT(*) AS n FROM jobs")[0]["n"] == 0


def test_cli_evaluate_runs_in_a_worker_and_show_prints_metrics(catalog, run_cli, tiny_bert):
    from relman.app.datasets import register_demo_sentiment
    from relman.app.models import import_model

    import_model(catalog, tiny_bert, "bert")
    register_demo_sentiment(catalog, n=12)
    res = run_cli("evaluate", "bert@1.0.0", "--dataset", "sentiment", "--suite", "size,quality,latency",
                  "--max-samples", "12", "--device", "cpu", "-b", "2", "--seq-len", "16", "-o", "min_samples=20",
                  "-o", "warmup=2", "--wait")
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and "size_mb" in res.output and "latency_p95_ms" in res.output
    lat = next(m for m in catalog.metrics(catalog.resolve("bert@1.0.0").id) if m["name"] == "latency_p50_ms")
    assert lat["job_id"] is not None and lat["context"]["concurrent_jobs"] == 0
    assert lat["context"]["samples"] == 20 and lat["context"]["seq_len"] == 16
    shown = run_cli("show", "bert@1.0.0")
    assert "quality" in shown.output and "macro_f1" in shown.output and "sentiment" in shown.output
    bad = run_cli("evaluate", "bert@1.0.0", "--suite", "quality")
    assert bad.exit_code == 1 and "suite 'quality' needs a dataset" in bad.output
    listed = run_cli("suites")
    assert "robustness" in listed.output and "fgsm_epsilon" in listed.output


def test_registry_and_cli_modules_stay_light():
    assert heavy_loaded_by("relman.cli", "relman.evaluate.registry", "relman.app.evaluate", "relman.commands.evaluate_cmds",
                           "relman.evaluate.job", also=("sklearn",)) == []
