"""distill: a smaller student learns from the teacher; the loss falls and the curve is reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from relman.compress.registry import get_recipe
from relman.data import demo
from relman.data.dataset import Dataset
from relman.errors import RecipeError
from relman.jobs.context import JobContext
from relman.modelio import tiny
from relman.modelio.loading import load_preprocessor, load_torch_model

from recipe_support import source


class RecordingContext(JobContext):
    """A real JobContext that also keeps the loss-curve points a direct call would drop."""

    def __init__(self, catalog) -> None:
        super().__init__(catalog)
        self.curve: list[tuple[str, float, float]] = []

    def point(self, series: str, step: float, value: float) -> None:
        self.curve.append((series, step, value))
        super().point(series, step, value)


def run_recipe(sources, raw: dict, catalog, dataset: Dataset, ctx: JobContext | None = None):
    recipe = get_recipe("distill")
    params = recipe.resolve_params(raw)
    params["dataset"] = dataset
    return recipe.function()(sources, params, ctx or JobContext(catalog))


def sentiment(n: int = 96, labelled: bool = True) -> Dataset:
    rows = demo.sentiment_rows(n, seed=5)
    names = demo.SENTIMENT_LABELS
    labels = np.array([names.index(r[1]) for r in rows]) if labelled else None
    return Dataset(name="sentiment", kind="text", texts=[r[0] for r in rows], labels=labels,
                   label_names=list(names) if labelled else [])


@pytest.fixture(scope="module")
def sharp_teacher(tmp_path_factory) -> Path:
    """A tiny BERT trained on the sentiment sentences: a teacher with something to teach."""
    folder = tiny.tiny_bert_classifier(tmp_path_factory.mktemp("sharp") / "bert", seed=4)
    model = load_torch_model(folder, "text-classification").train()
    tok = load_preprocessor(folder, "text-classification")
    data = sentiment(160)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(8):
        for start in range(0, len(data), 8):
            enc = tok(data.texts[start:start + 8], padding=True, return_tensors="pt")
            loss = torch.nn.functional.cross_entropy(model(**enc).logits,
                                                     torch.as_tensor(data.labels[start:start + 8]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval().save_pretrained(str(folder))
    return folder


def test_narrower_shallower_student_learns_from_classifier_teacher(catalog, sharp_teacher, tmp_path):
    teacher = source(catalog, sharp_teacher, "bert", tmp_path)
    ctx = RecordingContext(catalog)
    out = run_recipe([teacher], {"student_layers": 1, "student_hidden": 16, "epochs": 4, "lr": 3e-3,
                                 "batch_size": 8, "temperature": 2.0, "alpha": 0.7}, catalog, sentiment(), ctx)
    assert out.params < out.meta["teacher_params"] * 0.6
    assert out.meta["student_layers"] == 1 and out.meta["student_hidden"] == 16 and out.meta["labels_used"]
    losses = out.meta["epoch_losses"]
    assert losses[-1] < losses[0] * 0.9, losses
    curve = [v for s, _, v in ctx.curve if s == "train_loss"]
    assert len(curve) == 4 * -(-out.meta["train_samples"] // 8) and all(np.isfinite(curve))
    student = load_torch_model(out.folder, "text-classification", fmt=out.format)
    assert sum(p.numel() for p in student.parameters()) == out.params
    assert student.config.id2label == {0: "negative", 1: "positive"}
    tok = load_preprocessor(out.folder, "text-classification")
    assert student(**tok(["the film was good"], return_tensors="pt")).logits.shape == (1, 2)


def test_feature_extractor_student_matches_embeddings_and_starts_from_teacher_layers(
        catalog, tiny_bert_encoder, tmp_path):
    teacher = source(catalog, tiny_bert_encoder, "enc", tmp_path)
    out = run_recipe([teacher], {"student_layers": 1, "epochs": 3, "lr": 2e-3}, catalog,
                     sentiment(64, labelled=False))
    assert out.meta["tensors_from_teacher"] > 10 and not out.meta["labels_used"]
    assert out.meta["epoch_losses"][-1] < out.meta["epoch_losses"][0]
    assert out.params < out.meta["teacher_params"]
    cos = next(m.value for m in out.metrics if m.name == "teacher_cosine")
    assert 0.5 < cos <= 1.0
    student = load_torch_model(out.folder, "feature-extraction", fmt=out.format)
    assert student.config.num_hidden_layers == 1


def test_existing_version_as_student(catalog, tiny_bert, tmp_path):
    small = tiny.tiny_bert_classifier(tmp_path / "small", layers=1, intermediate=32, seed=2)
    teacher, student = source(catalog, tiny_bert, "bert", tmp_path), source(catalog, small, "small", tmp_path)
    out = run_recipe([teacher, student], {"epochs": 2, "lr": 3e-3}, catalog, sentiment(48))
    assert out.meta["student"] == "small@1.0.0" and out.params == student.version.params
    before = load_torch_model(student.folder, "text-classification").classifier.weight
    after = load_torch_model(out.folder, "text-classification", fmt=out.format).classifier.weight
    assert not torch.equal(before, after)


def test_impossible_distillations_are_refused(catalog, tiny_bert, tiny_bert_encoder, tiny_vit, tmp_path):
    teacher = source(catalog, tiny_bert, "bert", tmp_path)
    with pytest.raises(RecipeError, match="alpha=0 trains on labels only, but dataset 'sentiment' has no labels"):
        run_recipe([teacher], {"student_layers": 1, "alpha": 0.0}, catalog, sentiment(16, labelled=False))
    enc = source(catalog, tiny_bert_encoder, "enc", tmp_path)
    with pytest.raises(RecipeError, match="feature-extraction student must keep the teacher's embedding width"):
        run_recipe([enc], {"student_hidden": 16}, catalog, sentiment(16, labelled=False))
    with pytest.raises(RecipeError, match="describe the student"):
        run_recipe([teacher], {}, catalog, sentiment(16))
    three = tiny.tiny_bert_classifier(tmp_path / "three", labels=("a", "b", "c"), layers=1)
    with pytest.raises(RecipeError, match="predicts 3 labels .* their logits cannot be compared"):
        run_recipe([teacher, source(catalog, three, "three", tmp_path)], {}, catalog, sentiment(16))
    with pytest.raises(RecipeError, match="must not be larger than the teacher"):
        run_recipe([teacher], {"student_layers": 5}, catalog, sentiment(16))
    vit = source(catalog, tiny_vit, "vit", tmp_path)
    with pytest.raises(RecipeError, match="holds text rows but a image-classification model needs image"):
        run_recipe([vit], {"student_layers": 1}, catalog, sentiment(16))


@pytest.mark.gpu
def test_distillation_runs_on_the_gpu(catalog, tiny_bert, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    teacher = source(catalog, tiny_bert, "bert", tmp_path)
    ctx = RecordingContext(catalog)
    ctx.device = "cuda"
    out = run_recipe([teacher], {"student_layers": 1, "epochs": 2, "lr": 3e-3, "batch_size": 8}, catalog,
                     sentiment(48), ctx)
    assert any(s == "train_loss" for s, _, _ in ctx.curve)
    student = load_torch_model(out.folder, "text-classification", device="cuda", fmt=out.format)
    assert next(student.parameters()).device.type == "cuda"
    tok = load_preprocessor(out.folder, "text-classification")
    enc = {k: v.to("cuda") for k, v in tok(["a good film"], return_tensors="pt").items()}
    assert student(**enc).logits.shape == (1, 2)


@pytest.mark.gpu
def test_finetune_and_structured_recovery_run_on_the_gpu(catalog, tiny_bert, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    src = source(catalog, tiny_bert, "bert", tmp_path)
    recipe = get_recipe("prune-structured")
    params = recipe.resolve_params({"heads": 0.5, "ffn": 0.5, "epochs": 1, "batch_size": 8})
    params["dataset"] = sentiment(32)
    out = recipe.function()([src], params, JobContext(catalog, device="cuda"))
    assert len(out.meta["recovery_epoch_losses"]) == 1
    child = load_torch_model(out.folder, "text-classification", device="cuda", fmt=out.format)
    assert next(child.parameters()).device.type == "cuda"
