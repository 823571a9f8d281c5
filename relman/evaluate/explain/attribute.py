"""Attribution of one version's decisions to the features of its inputs (worker-only: Captum, torch).

A *feature* is what a person can point at: a token of a text (special tokens such as [CLS]
are not features; they are always kept) or a patch of an image (the ViT patch grid, else an
8 x 8 grid). What is explained, per task:

- classification: the log-odds of the class the version predicts (log p / (1 - p): the
  probability itself saturates near 1, hiding what a confident model still depends on);
- causal LM: the log-probability of the next token the version predicts after the prompt;
- feature extraction: the cosine between the embedding and the unperturbed input's embedding.

Removing a feature means replacing it with the baseline, chosen per modality (issue 27):

- text: the padding token (else unk / eos), at the token's position, attention unchanged: a
  token the model sees as "nothing here", so a feature's score is what the word itself adds;
- images (`baseline="blur"`, the default): a Gaussian-blurred copy of the image (sigma = one
  patch side), through the model's own preprocessing. A black baseline (`"black"`, the old
  default) makes every black pixel of the input identical to the baseline, so it gets zero
  attribution from *any* model: on 8 x 8 digits that is most of the image, and agreement over
  all features then measures the input, not the model. Blurring keeps the image's coarse
  layout and removes what a patch adds at its own scale.

Features whose input equals the baseline anyway (a background patch the blur leaves black, a
token that is the padding token) get attribution 0 from every model and method: each record
lists them as `inert`, and the agreement measure (`compare`) leaves them out. The same baseline
serves Integrated Gradients (its starting point), occlusion, KernelSHAP and the faithfulness
scores, so the methods explain the same question.

`ig` differentiates the PyTorch model (LayerIntegratedGradients over the input embeddings for
text, IntegratedGradients over pixels summed per patch for images). `occlusion` (Captum's
FeatureAblation: the score drop when one feature is removed) and `shap` (KernelSHAP over the
features' presence) only call the task adapter's forward pass (`runner.predict`), so an ONNX
or torch-int8 version is explained by exactly the code that evaluates it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from relman.data.dataset import Dataset
from relman.errors import EvaluationError
from relman.evaluate.explain import METHOD_TITLES, METHODS, check_task
from relman.evaluate.explain.selection import select_examples  # noqa: F401  (re-exported)
from relman.tasks.base import Batch, Runner

AOPC_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)
IMAGE_BASELINES = ("blur", "black")
PATCH_GRID_FALLBACK = 8
IMAGE_THUMB_MAX = 64


def differentiable(runner: Runner) -> bool:
    """True for a PyTorch version whose modules all have gradients (not ONNX, not INT8)."""
    from relman.tasks.backends import TorchBackend

    backend = runner.backend
    if not isinstance(backend, TorchBackend) or not getattr(backend.model, "explain_gradients", True):
        return False  # ONNX; an ensemble (no one embedding layer to integrate over)
    for m in backend.model.modules():
        if type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.nn.quantized")):
            return False
        if any(quantised_parameter(p) for p in m.parameters(recurse=False)):  # torchao's int8 weights
            return False
    return True


def quantised_parameter(p: Any) -> bool:
    """A torchao quantised weight (e.g. torch-int8's Int8Tensor): no gradients, no in-place init."""
    return type(p).__module__.startswith("torchao")


def has_attention(runner: Runner) -> bool:
    """True for a PyTorch transformer (its config names attention heads)."""
    from relman.tasks.backends import TorchBackend

    if not isinstance(runner.backend, TorchBackend) or not getattr(runner.backend.model, "explain_gradients", True):
        return False
    cfg = getattr(runner.backend.model, "config", None)
    return any(getattr(cfg, a, None) for a in ("num_attention_heads", "n_head", "num_heads"))


def default_method(runner: Runner) -> str:
    return "ig" if differentiable(runner) else "occlusion"


def check_method_fits(runner: Runner, method: str, ref: str) -> None:
    """A clear refusal when a gradient method is asked of a version without gradients."""
    if method not in METHODS:
        raise EvaluationError(f"unknown attribution method '{method}' (use {', '.join(METHODS)})")
    if method in ("ig", "attention") and runner.fmt == "ensemble":
        raise EvaluationError(f"{METHOD_TITLES[method]} is not supported for ensembles ({ref} combines several "
                              "models, with no one embedding layer or attention map); explain it with --method "
                              "occlusion (or shap, lime), which needs only the forward pass")
    if method == "attention" and not has_attention(runner):
        raise EvaluationError(f"{METHOD_TITLES['attention']} reads the attention weights of a PyTorch transformer, "
                              f"but {ref} is {'an ONNX graph' if runner.fmt == 'onnx' else 'not one'}; explain it with "
                              "--method occlusion (or shap, lime), which needs only the forward pass")
    if method == "ig" and not differentiable(runner):
        kind = "an ONNX graph" if runner.fmt == "onnx" else f"a {runner.fmt} version with quantised layers"
        raise EvaluationError(f"{METHOD_TITLES['ig']} needs gradients, but {ref} is {kind} (no gradients here); "
                              "explain it with --method occlusion (or shap), which needs only the forward pass")


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Prepared:
    """One example ready to perturb: its model inputs, which positions are features, and the
    target the explanation is about."""

    index: int
    arrays: dict[str, np.ndarray]
    names: list[str]
    positions: Any  # text: token positions (np.ndarray); image: list of (row slice, col slice)
    target: int | None
    prediction: str
    confidence: float | None
    base_score: float = 0.0
    reference: np.ndarray | None = None  # feature extraction: the unperturbed embedding
    baseline: np.ndarray | None = None  # images: the pixel values of "removed" (a black image)
    last: int = 0  # causal LM: the position whose next token is explained
    inert: list[int] = field(default_factory=list)  # features equal to the baseline: 0 for any model
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return len(self.names)


class Explainer:
    """Attributions of one version (its task adapter) with one method."""

    def __init__(self, runner: Runner, method: str, *, ref: str = "", ig_steps: int = 32, shap_samples: int = 64,
                 seed: int = 0, batch_size: int = 32, baseline: str = "blur") -> None:
        check_task(runner.task, ref or str(runner.folder))
        self.runner = runner
        self.ref = ref or str(runner.folder)
        self.method = default_method(runner) if method == "auto" else method
        check_method_fits(runner, self.method, self.ref)
        self.ig_steps = int(ig_steps)
        self.shap_samples = int(shap_samples)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.task = runner.task
        self.image = self.task == "image-classification"
        if baseline not in IMAGE_BASELINES:
            raise EvaluationError(f"unknown image baseline '{baseline}' (use {', '.join(IMAGE_BASELINES)})")
        self.baseline = baseline

    # -- preparing one example -------------------------------------------------------------
    def _replacement_id(self) -> int:
        tok = self.runner.preprocessor
        for attr in ("pad_token_id", "unk_token_id", "eos_token_id"):
            v = getattr(tok, attr, None)
            if v is not None:
                return int(v)
        return 0

    def _patch_grid(self, height: int, width: int) -> list[tuple[slice, slice]]:
        p = self.runner.config.get("patch_size")
        p = int(p if isinstance(p, int) else (p[0] if p else 0)) if p else 0
        rows = height // p if p and height % p == 0 else min(PATCH_GRID_FALLBACK, height)
        cols = width // p if p and width % p == 0 else min(PATCH_GRID_FALLBACK, width)
        rb = np.array_split(np.arange(height), rows)
        cb = np.array_split(np.arange(width), cols)
        return [(slice(int(r[0]), int(r[-1]) + 1), slice(int(c[0]), int(c[-1]) + 1)) for r in rb for c in cb]

    def prepare(self, ds: Dataset, index: int) -> Prepared:
        row = ds.take([int(index)])
        arrays = self.runner.encode(row)
        if self.image:
            h, w = arrays["pixel_values"].shape[-2:]
            grid = self._patch_grid(int(h), int(w))
            cols = len({(g[1].start) for g in grid})
            names = [f"patch {i // cols},{i % cols}" for i in range(len(grid))]
            prep = Prepared(int(index), arrays, names, grid, None, "", None)
            prep.extra["grid"] = [len(grid) // cols, cols]
            prep.extra["image"] = _thumbnail(np.asarray(row.images[0]))
            raw = np.asarray(row.images)
            base = (np.zeros_like(raw) if self.baseline == "black"
                    else blurred(raw, sigma=max(1.0, raw.shape[1] / max(1, len(grid) // cols))))
            prep.baseline = self.runner.encode_images(base)["pixel_values"]
            px = arrays["pixel_values"][0]
            prep.inert = [j for j, (rs, cs) in enumerate(grid)
                          if np.allclose(px[:, rs, cs], prep.baseline[0][:, rs, cs], atol=1e-6)]
        else:
            tok = self.runner.preprocessor
            ids = arrays["input_ids"][0]
            mask = arrays.get("attention_mask", np.ones_like(arrays["input_ids"]))[0].astype(bool)
            special = set(int(i) for i in getattr(tok, "all_special_ids", []) or [])
            positions = np.array([i for i in range(len(ids)) if mask[i] and int(ids[i]) not in special], dtype=np.int64)
            if self.task == "causal-lm":  # every real prompt token is a feature, even a BOS/EOS symbol
                positions = np.flatnonzero(mask).astype(np.int64)
            if len(positions) == 0:
                raise EvaluationError(f"example {index} of dataset '{ds.name}' has no tokens to explain")
            tokens = tok.convert_ids_to_tokens([int(ids[i]) for i in positions])
            names = [_token_name(tok, t) for t in tokens]
            prep = Prepared(int(index), arrays, names, positions, None, "", None)
            prep.last = int(np.flatnonzero(mask)[-1])
            prep.inert = [j for j, pos in enumerate(positions) if int(ids[pos]) == self._replacement_id()]
        self._set_target(prep)
        return prep

    def _set_target(self, prep: Prepared) -> None:
        out = self._predict(prep.arrays)
        if self.task == "feature-extraction":
            prep.reference = out[0].astype(np.float32)
            prep.prediction, prep.confidence = "embedding", None
        elif self.task == "causal-lm":
            logp = _log_softmax(out[0, prep.last].astype(np.float64))
            prep.target = int(np.argmax(logp))
            prep.prediction = self.runner.preprocessor.decode([prep.target])
            prep.confidence = float(np.exp(logp[prep.target]))
        else:
            p = softmax(out[0].astype(np.float64))
            prep.target = int(np.argmax(p))
            names = self.runner.label_names
            prep.prediction = names[prep.target] if prep.target < len(names) else str(prep.target)
            prep.confidence = float(p[prep.target])
        prep.base_score = float(self._scores(prep, out)[0])

    # -- the forward pass, through the task adapter -----------------------------------------
    def _predict(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(arrays.values())))
        batch = Batch(native=self.runner.backend.to_native(arrays), host=arrays, size=n)
        return self.runner.predict(batch)

    def _scores(self, prep: Prepared, out: np.ndarray) -> np.ndarray:
        if self.task == "feature-extraction":
            return out.astype(np.float64) @ prep.reference.astype(np.float64)
        if self.task == "causal-lm":
            return _log_softmax(out[:, prep.last].astype(np.float64))[:, prep.target]
        return log_odds(out.astype(np.float64), prep.target)

    def perturbed(self, prep: Prepared, presence: np.ndarray) -> dict[str, np.ndarray]:
        """Model inputs for each row of `presence` (m x features; 1 keeps a feature, 0 replaces
        it with the baseline)."""
        presence = np.asarray(presence, dtype=np.float64)
        m = presence.shape[0]
        if self.image:
            px = np.repeat(prep.arrays["pixel_values"], m, axis=0).copy()
            base = prep.baseline[0]
            for j, (rs, cs) in enumerate(prep.positions):
                gone = presence[:, j] < 0.5
                px[gone, :, rs, cs] = base[:, rs, cs]
            return {"pixel_values": px}
        out = {k: np.repeat(v, m, axis=0).copy() for k, v in prep.arrays.items()}
        ids = out["input_ids"]
        removed = presence < 0.5
        for j, pos in enumerate(prep.positions):
            ids[removed[:, j], pos] = self._replacement_id()
        return out

    def score_presence(self, prep: Prepared, presence: np.ndarray) -> np.ndarray:
        """The explained score for each presence pattern, batched."""
        presence = np.atleast_2d(presence)
        outs = []
        for start in range(0, len(presence), self.batch_size):
            chunk = presence[start:start + self.batch_size]
            outs.append(self._scores(prep, self._predict(self.perturbed(prep, chunk))))
        return np.concatenate(outs)

    # -- methods ----------------------------------------------------------------------------
    def attribute(self, prep: Prepared) -> np.ndarray:
        """One score per feature (input order): how much it supports the explained output."""
        if self.method == "ig":
            return self._integrated_gradients(prep)
        if self.method == "attention":
            return self._attention_rollout(prep)
        import torch

        def forward(presence: "torch.Tensor") -> "torch.Tensor":
            return torch.as_tensor(self.score_presence(prep, presence.detach().cpu().numpy()), dtype=torch.float32)

        full = torch.ones((1, prep.n_features), dtype=torch.float32)
        base = torch.zeros_like(full)
        per_eval = max(1, min(self.batch_size, prep.n_features))
        if self.method == "occlusion":
            from captum.attr import FeatureAblation

            attr = FeatureAblation(forward).attribute(full, baselines=base, perturbations_per_eval=per_eval)
        elif self.method == "lime":
            from captum.attr import Lime

            torch.manual_seed(self.seed + prep.index)
            attr = Lime(forward).attribute(full, baselines=base, n_samples=self.shap_samples,
                                           perturbations_per_eval=per_eval)
        else:
            from captum.attr import KernelShap

            torch.manual_seed(self.seed + prep.index)
            attr = KernelShap(forward).attribute(full, baselines=base, n_samples=self.shap_samples,
                                                 perturbations_per_eval=per_eval)
        return attr.detach().cpu().numpy().reshape(-1).astype(np.float64)

    def _torch_score(self, prep: Prepared, out: Any, attention_mask: Any = None) -> Any:
        import torch

        out = out.float()
        if self.task == "feature-extraction":
            m = attention_mask.float()[..., None]
            pooled = (out * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            return pooled @ torch.as_tensor(prep.reference, device=pooled.device)
        if self.task == "causal-lm":
            return torch.log_softmax(out[:, prep.last], dim=-1)[:, prep.target]
        others = torch.cat([out[:, :prep.target], out[:, prep.target + 1:]], dim=-1)
        return out[:, prep.target] - torch.logsumexp(others, dim=-1)

    def _integrated_gradients(self, prep: Prepared) -> np.ndarray:
        import torch

        backend = self.runner.backend
        native = backend.to_native(prep.arrays)
        steps = self.ig_steps
        with torch.enable_grad():
            if self.image:
                from captum.attr import IntegratedGradients

                def fwd_px(px: "torch.Tensor") -> "torch.Tensor":
                    return self._torch_score(prep, backend.forward({"pixel_values": px}))

                x = native["pixel_values"].detach().float().clone()
                base = torch.as_tensor(prep.baseline, dtype=x.dtype, device=x.device)
                attr = IntegratedGradients(fwd_px).attribute(x, baselines=base, n_steps=steps,
                                                             internal_batch_size=steps)
                a = attr.detach().float().cpu().numpy()[0].sum(axis=0)  # sum over channels
                return np.array([a[rs, cs].sum() for rs, cs in prep.positions], dtype=np.float64)
            from captum.attr import LayerIntegratedGradients

            names = [n for n in ("attention_mask", "token_type_ids") if n in native]

            def fwd_ids(ids: "torch.Tensor", *rest: "torch.Tensor") -> "torch.Tensor":
                feeds = {"input_ids": ids, **dict(zip(names, rest))}
                return self._torch_score(prep, backend.forward(feeds), feeds.get("attention_mask"))

            ids = native["input_ids"]
            base_ids = ids.clone()
            base_ids[0, torch.as_tensor(prep.positions, device=ids.device)] = self._replacement_id()
            lig = LayerIntegratedGradients(fwd_ids, backend.model.get_input_embeddings())
            attr = lig.attribute(ids, baselines=base_ids, additional_forward_args=tuple(native[n] for n in names),
                                 n_steps=steps, internal_batch_size=steps)
            per_token = attr.detach().float().sum(dim=-1).cpu().numpy()[0]
        return per_token[prep.positions].astype(np.float64)

    def _attention_rollout(self, prep: Prepared) -> np.ndarray:
        """Attention rollout (Abnar & Zuidema, 2020): per layer the head-averaged attention plus
        the residual path (0.5 A + 0.5 I, rows renormalised), multiplied through the layers; a
        feature's score is how much of the explained position's final representation flows
        from it ([CLS] for classifiers and ViTs, the last prompt token for a causal LM, the mean
        over tokens for embeddings). Non-negative and class-blind: it says where the model
        looks, not which way a feature pushes."""
        import torch

        backend = self.runner.backend
        model = backend.model
        native = backend.to_native(prep.arrays)
        before = getattr(model.config, "_attn_implementation", None)
        try:
            if before not in (None, "eager") and hasattr(model, "set_attn_implementation"):
                model.set_attn_implementation("eager")  # sdpa kernels return no attention weights
            with torch.inference_mode():
                kwargs = dict(native, output_attentions=True, return_dict=True)
                if self.task == "causal-lm":
                    kwargs["use_cache"] = False
                attentions = model(**kwargs).attentions
        finally:
            if before not in (None, "eager") and hasattr(model, "set_attn_implementation"):
                model.set_attn_implementation(before)
        if not attentions:
            raise EvaluationError(f"{self.ref} returned no attention weights, so attention rollout cannot run; "
                                  "use --method occlusion")
        rollout = None
        for layer in attentions:
            a = layer[0].float().mean(dim=0).cpu().numpy().astype(np.float64)  # seq x seq, heads averaged
            a = 0.5 * a + 0.5 * np.eye(a.shape[0])
            a /= a.sum(axis=-1, keepdims=True)
            rollout = a if rollout is None else a @ rollout
        assert rollout is not None
        if self.image:
            n = len(prep.positions)
            if rollout.shape[0] != n + 1:
                raise EvaluationError(f"attention rollout needs one token per patch, but {self.ref} has "
                                      f"{rollout.shape[0] - 1} patch tokens for {n} patches; use --method occlusion")
            return rollout[0, 1:].copy()
        if self.task == "causal-lm":
            row = rollout[prep.last]
        elif self.task == "feature-extraction":
            mask = prep.arrays.get("attention_mask", np.ones_like(prep.arrays["input_ids"]))[0].astype(bool)
            row = rollout[mask].mean(axis=0)
        else:
            row = rollout[0]
        return row[prep.positions].astype(np.float64)

    # -- faithfulness -----------------------------------------------------------------------
    def aopc(self, prep: Prepared, scores: np.ndarray) -> tuple[float, float]:
        """(comprehensiveness, sufficiency): the mean drop of the explained score when the
        top-k features (by attribution) are removed / are the only ones kept, over k = 10 %
        .. 50 % of the features (at least one). Higher comprehensiveness and lower sufficiency
        mean the attribution found what the prediction rests on."""
        n = prep.n_features
        ks = sorted({max(1, math.ceil(f * n)) for f in AOPC_FRACTIONS})
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        masks = []
        for k in ks:
            top = np.zeros(n)
            top[order[:k]] = 1.0
            masks.append(1.0 - top)  # top-k removed
            masks.append(top)  # only top-k kept
        got = self.score_presence(prep, np.array(masks))
        comp = float(np.mean(prep.base_score - got[0::2]))
        suff = float(np.mean(prep.base_score - got[1::2]))
        return comp, suff

    # -- many examples ----------------------------------------------------------------------
    def explain(self, ds: Dataset, indices: list[int], *, faithfulness: bool = True,
                progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
        """One record per example: index, prediction, confidence, features (input order)."""
        out = []
        for i, index in enumerate(indices):
            prep = self.prepare(ds, index)
            scores = self.attribute(prep)
            rec: dict[str, Any] = {"index": int(index), "prediction": prep.prediction, "confidence": prep.confidence,
                                   "target": prep.target, "score": prep.base_score,
                                   "features": [{"name": n, "score": float(s)} for n, s in zip(prep.names, scores)],
                                   "inert": list(prep.inert)}
            if self.method == "attention":
                rec["flow"] = True  # scores are shares of attention flow, not units of the explained score
            if faithfulness:
                rec["comprehensiveness"], rec["sufficiency"] = self.aopc(prep, scores)
            rec.update(prep.extra)
            out.append(rec)
            if progress is not None:
                progress(i + 1, len(indices))
        return out


def log_odds(logits: np.ndarray, target: int) -> np.ndarray:
    """log(p / (1 - p)) of class `target`: the logit minus the log-sum-exp of the others. Unlike
    the probability it does not saturate near 1, so a confident model's small dependencies
    still show."""
    others = np.delete(logits, target, axis=-1)
    m = others.max(axis=-1, keepdims=True)
    return logits[:, target] - (m[:, 0] + np.log(np.exp(others - m).sum(axis=-1)))


def blurred(images: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of N x H x W x C images (separable, edges repeated), same dtype."""
    radius = max(1, int(round(2 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    out = np.asarray(images, dtype=np.float64)
    for axis in (1, 2):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        out = sum(k[i] * np.take(padded, np.arange(i, i + out.shape[axis]), axis=axis) for i in range(len(k)))
    if np.issubdtype(np.asarray(images).dtype, np.integer):
        out = np.clip(np.rint(out), 0, 255)
    return out.astype(np.asarray(images).dtype)


def _token_name(tok: Any, token: str) -> str:
    """A token as a person reads it ('##ing' stays, GPT-2's 'Ġgood' → 'good', a bare space → '␣')."""
    text = tok.convert_tokens_to_string([token])
    return text.strip() or ("␣" if text else str(token))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _thumbnail(image: np.ndarray) -> list:
    """The example's image (uint8, H x W x C), strided down to at most 64 px a side, for overlays."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    step = max(1, math.ceil(max(img.shape[0], img.shape[1]) / IMAGE_THUMB_MAX))
    return img[::step, ::step].astype(np.uint8).tolist()
