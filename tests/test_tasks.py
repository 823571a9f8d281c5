"""Task adapters on tiny real models, PyTorch and ONNX, against direct transformers computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from relman.data.dataset import Dataset
from relman.errors import EvaluationError

TEXTS = ["the movie was good", "bad film", "great fun and a very fine plot, i love the actor!", "awful.",
         "the plot is not boring"]


def onnx_copy(src: Path, task: str) -> Path:
    """The ONNX export of a tiny model, made once per test session (cached next to it)."""
    from relman.compress.export.onnx_export import export_onnx

    out = src.parent / f"{src.name}-onnx"
    if not (out / "model.onnx").is_file():
        export_onnx(src, out, task)
    return out


def text_ds(labels: bool = True) -> Dataset:
    return Dataset("texts", "text", texts=list(TEXTS), labels=np.array([1, 0, 1, 0, 1]) if labels else None,
                   label_names=["negative", "positive"])


def image_ds(n: int = 6) -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset("digits", "image", images=rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8),
                   labels=np.arange(n) % 10, label_names=[str(i) for i in range(10)])


def _torch_reference(folder: Path, task: str, texts: list[str]):
    """What plain transformers computes for the texts (independent of relman.tasks)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    enc = tok(texts, padding=True, return_tensors="pt")
    cls = {"text-classification": AutoModelForSequenceClassification, "feature-extraction": AutoModel,
           "causal-lm": AutoModelForCausalLM}[task]
    model = cls.from_pretrained(folder).eval()
    with torch.no_grad():
        if task == "text-classification":
            return model(**enc).logits.numpy()
        if task == "feature-extraction":
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1)
            return torch.nn.functional.normalize(e, dim=1).numpy()
        # mean next-token loss over real tokens, via transformers' own loss (-100 = ignored)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        return float(model(**enc, labels=labels).loss)


@pytest.mark.parametrize("fixture,task", [("tiny_bert", "text-classification"),
                                          ("tiny_bert_encoder", "feature-extraction"),
                                          ("tiny_gpt2", "causal-lm")])
def test_text_adapters_match_transformers_in_both_formats(request, fixture, task):
    from relman.tasks import open_runner

    folder = request.getfixturevalue(fixture)
    ref = _torch_reference(folder, task, TEXTS)
    for path, fmt in ((folder, "hf"), (onnx_copy(folder, task), "onnx")):
        runner = open_runner(path, fmt, task, "cpu", threads=1)
        batch = runner.prepare(text_ds())
        out = runner.predict(batch)
        if task == "causal-lm":
            losses = runner.token_losses(batch, out)
            assert losses.shape == (len(TEXTS), batch.host["input_ids"].shape[1] - 1)
            assert np.nanmean(losses) == pytest.approx(ref, rel=1e-4), fmt
        else:
            np.testing.assert_allclose(out, ref, atol=2e-5, err_msg=fmt)
        if task == "feature-extraction":
            np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_onnx_inputs_come_from_the_session(tiny_bert, tiny_gpt2):
    from relman.tasks import open_runner

    bert = open_runner(onnx_copy(tiny_bert, "text-classification"), "onnx", "text-classification", "cpu", 1)
    assert bert.backend.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    gpt = open_runner(onnx_copy(tiny_gpt2, "causal-lm"), "onnx", "causal-lm", "cpu", 1)
    assert gpt.backend.input_names == ["input_ids", "attention_mask"]


def test_image_adapter_matches_transformers_in_both_formats(tiny_vit):
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from relman.tasks import open_runner

    ds = image_ds()
    proc = AutoImageProcessor.from_pretrained(tiny_vit)
    pixels = proc(images=list(ds.images), return_tensors="pt", input_data_format="channels_last")["pixel_values"]
    with torch.no_grad():
        ref = AutoModelForImageClassification.from_pretrained(tiny_vit).eval()(pixel_values=pixels).logits.numpy()
    for path, fmt in ((tiny_vit, "hf"), (onnx_copy(tiny_vit, "image-classification"), "onnx")):
        runner = open_runner(path, fmt, "image-classification", "cpu", 1)
        np.testing.assert_allclose(runner.predict_dataset(ds, batch_size=4), ref, atol=2e-5, err_msg=fmt)
        # RGB images for a grey model are averaged to one channel, not refused
        rgb = Dataset("rgb", "image", images=np.repeat(ds.images, 3, axis=-1))
        np.testing.assert_allclose(runner.predict(runner.prepare(rgb)), ref, atol=2e-5)


def test_synthetic_batches_have_the_asked_shape(tiny_bert, tiny_vit):
    from relman.tasks import open_runner

    text = open_runner(tiny_bert, "hf", "text-classification", "cpu", 1)
    b = text.prepare_synthetic(3, 16)
    assert b.host["input_ids"].shape == (3, 16) and text.predict(b).shape == (3, 2)
    # a dataset slice padded to an exact length (latency at a fixed sequence length)
    assert text.prepare(text_ds(), seq_len=24).host["input_ids"].shape == (5, 24)
    # lengths beyond the model's positions are capped, not crashed on
    assert text.prepare_synthetic(1, 10_000).host["input_ids"].shape == (1, 128)
    img = open_runner(tiny_vit, "hf", "image-classification", "cpu", 1)
    assert img.prepare_synthetic(5, None).host["pixel_values"].shape == (5, 1, 8, 8)


def test_wrong_dataset_for_the_task_is_a_clear_error(tiny_bert, tiny_vit):
    from relman.tasks import open_runner

    text = open_runner(tiny_bert, "hf", "text-classification", "cpu", 1)
    with pytest.raises(EvaluationError, match="dataset 'digits' holds image data, but a text-classification model "
                                              "needs text data"):
        text.check_dataset(image_ds())
    img = open_runner(tiny_vit, "hf", "image-classification", "cpu", 1)
    with pytest.raises(EvaluationError, match="holds text data, but a image-classification model needs image"):
        img.check_dataset(text_ds())
    odd = Dataset("odd", "text", texts=["a"], labels=np.array([0]), label_names=["maybe"])
    with pytest.raises(EvaluationError, match="labels the model does not know: maybe"):
        text.model_labels_for(odd)


def test_labels_map_by_name(tiny_bert):
    from relman.tasks import open_runner

    runner = open_runner(tiny_bert, "hf", "text-classification", "cpu", 1)
    swapped = Dataset("s", "text", texts=["a", "b"], labels=np.array([0, 1]), label_names=["positive", "negative"])
    assert runner.model_labels_for(swapped).tolist() == [1, 0]


def test_fgsm_lowers_the_true_class_score(tiny_vit):
    import torch

    from relman.tasks import open_runner

    runner = open_runner(tiny_vit, "hf", "image-classification", "cpu", 1)
    ds = image_ds()
    batch = runner.prepare(ds)
    y = runner.model_labels_for(ds)
    clean = torch.log_softmax(torch.from_numpy(runner.predict(batch)), -1).numpy()[np.arange(len(y)), y]
    adv = runner.fgsm(batch, y, 0.1)
    assert np.abs(adv.host["pixel_values"] - batch.host["pixel_values"]).max() == pytest.approx(0.1, abs=1e-6)
    attacked = torch.log_softmax(torch.from_numpy(runner.predict(adv)), -1).numpy()[np.arange(len(y)), y]
    assert np.all(attacked < clean)
    onnx = open_runner(onnx_copy(tiny_vit, "image-classification"), "onnx", "image-classification", "cpu", 1)
    with pytest.raises(EvaluationError, match="FGSM needs a differentiable PyTorch version"):
        onnx.fgsm(onnx.prepare(ds), y, 0.1)


def test_unknown_device_and_task_are_errors(tiny_bert):
    from relman.tasks import open_runner

    with pytest.raises(EvaluationError, match="unknown device 'tpu'"):
        open_runner(tiny_bert, "hf", "text-classification", "tpu", 1)
    with pytest.raises(EvaluationError, match="cannot evaluate task 'translation'"):
        open_runner(tiny_bert, "hf", "translation", "cpu", 1)
