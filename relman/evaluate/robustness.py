"""Robustness suite: accuracy when the inputs are perturbed (seeded, so every version sees the
same perturbed rows), and the drop from clean accuracy.

Metrics (suite "robustness", classification only):
- `clean_accuracy` on the unperturbed rows;
- `robust_accuracy/<kind>` per perturbation — text: typo, swap, case, whitespace, punctuation
  (`perturb_rate` of the characters); images: noise (Gaussian, `noise_std` of the range),
  brightness (±`brightness`), shift (±`shift_px` pixels), and fgsm (one gradient-sign step of
  `fgsm_epsilon`, PyTorch versions only: an ONNX graph is not differentiated here, so ONNX
  versions report no fgsm figure and their mean is over the other kinds);
- `robust_accuracy`: the mean over the kinds; `robustness_drop` = clean_accuracy − robust_accuracy;
- `robust_accuracy_min`: the worst kind.
Context: seed, the kinds and their strengths, batch_size.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from relman.catalog import Metric
from relman.evaluate.env import SuiteEnv
from relman.evaluate.perturb import IMAGE_KINDS, TEXT_KINDS, perturb_images, perturb_texts
from relman.tasks.backends import TorchBackend

SUITE = "robustness"


def _accuracy(runner, ds, y, bs) -> float:
    return float(np.mean(runner.predict_dataset(ds, bs).argmax(axis=1) == y))


def run(env: SuiteEnv) -> list[Metric]:
    runner = env.runner()
    ds = env.eval_data(SUITE, labels=True)
    y = runner.model_labels_for(ds)
    bs = env.eval_batch_size
    o = env.options
    seed = int(o.get("seed", 0))
    clean = _accuracy(runner, ds, y, bs)
    scores: dict[str, float] = {}
    image = runner.spec.modality == "image"
    kinds = list(IMAGE_KINDS if image else TEXT_KINDS)
    fgsm = image and float(o.get("fgsm_epsilon", 0.05)) > 0 and isinstance(runner.backend, TorchBackend)
    total = len(kinds) + int(fgsm)
    for i, kind in enumerate(kinds):
        if image:
            pert = replace(ds, images=perturb_images(ds.images, kind, seed, noise_std=float(o.get("noise_std", 0.1)),
                                                     brightness=float(o.get("brightness", 0.3)),
                                                     shift_px=int(o.get("shift_px", 1))))
        else:
            pert = replace(ds, texts=perturb_texts(ds.texts, kind, float(o.get("perturb_rate", 0.1)), seed))
        scores[kind] = _accuracy(runner, pert, y, bs)
        env.progress((i + 1) / total, f"robustness {kind}")
    if fgsm:
        eps = float(o["fgsm_epsilon"])
        correct = 0
        for start in range(0, len(ds), bs):
            idx = np.arange(start, min(start + bs, len(ds)))
            adv = runner.fgsm(runner.prepare(ds.take(idx)), y[idx], eps)
            correct += int(np.sum(runner.predict(adv).argmax(axis=1) == y[idx]))
        scores["fgsm"] = correct / len(ds)
        env.progress(1.0, "robustness fgsm")
    robust = float(np.mean(list(scores.values())))
    ctx = {"batch_size": bs, "seed": seed, "kinds": sorted(scores)}
    ctx.update({k: o[k] for k in (("noise_std", "brightness", "shift_px", "fgsm_epsilon") if image
                                  else ("perturb_rate",)) if k in o})
    out = [env.metric(SUITE, "clean_accuracy", clean, **ctx),
           env.metric(SUITE, "robust_accuracy", robust, **ctx),
           env.metric(SUITE, "robustness_drop", clean - robust, **ctx),
           env.metric(SUITE, "robust_accuracy_min", min(scores.values()), **ctx)]
    out += [env.metric(SUITE, f"robust_accuracy/{k}", v, **ctx) for k, v in scores.items()]
    return out
