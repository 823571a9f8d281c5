"""INT4 weight-only quantisation-aware training for causal LMs (recipe "qat", causal-LM parents).

Post-training INT4 rounds each block of `block_size` weights onto 16 levels whose step is set by
the block's largest weight; one large weight in a block (an outlier channel) puts the other
weights of its block onto a grid too coarse for them, and perplexity climbs. QAT fine-tunes the
LM on plain text with every Linear weight rounded in the forward pass (straight-through
gradients), so the float weights move to where their rounded copies still model the text.

How: torchao 0.18's `QATConfig(weight_config=IntxFakeQuantizeConfig(torch.int4, group_size=B,
is_symmetric=S), step="prepare")` swaps every Linear (the LM head included: the INT4 recipe
quantises it too) for a `FakeQuantizedLinear`; no activation fake quantiser (weight-only). The
fake quantiser then decides which grid is trained for (`grid`):

- `onnxruntime` (default): the weight quantiser torchao installs is replaced by
  `OrtRtnFakeQuantizer`, which rounds exactly as onnxruntime's blockwise kernel behind
  `MatMulNBits` rtn does (`quantize_matmul_4bits`): symmetric blocks take the block's
  largest-magnitude weight, sign included, as level -8 (scale = w_max / -8); asymmetric blocks
  span [min(w, 0), max(w, 0)] over 15 steps with a rounded zero point. Measured against the
  kernel on random and outlier weights: identical dequantised values (to 1.2e-7).
- `torchao`: torchao's own grid. Its symmetric INT4 scale is amax / 7.5, which agreed with the
  kernel's levels on only 11 % of random weights (asymmetric: 97 %), so training for it means
  training for a grid that is not the one stored; kept to measure against.

Then `QATConfig(step="convert")` removes the fake quantisers, the float weights (trained for the
grid) are saved as an `hf` folder and go through exactly the `int4-weight-only` recipe with
`algo=rtn`, the same `block_size` and `symmetric`: the grid trained for is the grid stored. With
`compare_ptq` the parent goes through the same recipe too, and the child records the validation
perplexity of the float parent, of its PTQ INT4 and of the QAT INT4, and the share of the
perplexity increase QAT recovered (`qat_recovered_fraction`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from relman.catalog import Metric
from relman.compress.adapt import training as tr
from relman.compress.registry import ModelSource, RecipeOutput, get_recipe
from relman.context import WorkContext
from relman.errors import RecipeError

TASK = "causal-lm"
TEXT_KINDS = ("text", "lm")
GRIDS = ("onnxruntime", "torchao")
DEFAULT_LR = 1e-3  # measured on the planted trained LM: 4 steps recover 82 % of PTQ's perplexity increase


def ort_rtn_dequantize(w: Any, block: int, symmetric: bool) -> Any:
    """`w` [out, in] rounded to onnxruntime's blockwise 4-bit rtn grid (blocks of `block`
    consecutive input weights per output row) and dequantised; `in` must be a multiple of
    `block` (checked before training)."""
    import torch

    n, k = w.shape
    g = w.reshape(n, k // block, block)
    if symmetric:
        extreme = torch.gather(g, -1, g.abs().argmax(-1, keepdim=True))  # signed largest magnitude
        scale = extreme / -8.0
        inv = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
        q = torch.clamp(torch.round(g * inv) + 8, 0, 15)
        out = (q - 8) * scale
    else:
        lo = torch.clamp(g.amin(-1, keepdim=True), max=0)
        hi = torch.clamp(g.amax(-1, keepdim=True), min=0)
        scale = (hi - lo) / 15.0
        inv = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
        zero = torch.clamp(torch.round(-lo * inv), 0, 15)
        out = (torch.clamp(torch.round(g * inv) + zero, 0, 15) - zero) * scale
    return out.reshape(n, k)


def _ort_fake_quantizer(block: int, symmetric: bool, config: Any) -> Any:
    from torch import nn

    class OrtRtnFakeQuantizer(nn.Module):
        """Forward: the weight on onnxruntime's rtn grid; backward: identity (straight through).
        Scales come from the current weight each step (nothing to observe or freeze)."""

        def __init__(self) -> None:
            super().__init__()
            self.block, self.symmetric, self.enabled = block, symmetric, True
            self.config = config  # torchao's convert step reads it

        def forward(self, w: Any) -> Any:
            if not self.enabled:
                return w
            return w + (ort_rtn_dequantize(w.detach(), self.block, self.symmetric) - w).detach()

    return OrtRtnFakeQuantizer()


def prepare(model: Any, block: int, symmetric: bool, grid: str) -> int:
    """Fake-quantise every Linear weight (INT4, blocks of `block` along the input); returns how
    many Linear layers were prepared."""
    import torch
    from torch import nn
    from torchao.quantization import quantize_
    from torchao.quantization.qat import IntxFakeQuantizeConfig, QATConfig

    before = sum(1 for m in model.modules() if type(m) is nn.Linear)
    weight = IntxFakeQuantizeConfig(torch.int4,  # type: ignore[attr-defined]
                                     group_size=block, is_symmetric=symmetric)
    quantize_(model, QATConfig(weight_config=weight, step="prepare"))
    prepared = [m for m in model.modules() if hasattr(m, "weight_fake_quantizer")]
    if grid == "onnxruntime":
        for m in prepared:
            m.weight_fake_quantizer = _ort_fake_quantizer(block, symmetric, weight)
    after = sum(1 for m in model.modules() if type(m) is nn.Linear)
    return before - after


def convert(model: Any) -> None:
    """Remove the fake quantisers (plain Linear layers holding the QAT-trained weights)."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    quantize_(model, QATConfig(step="convert"))


def check(source: ModelSource, params: dict[str, Any]) -> None:
    """One-line refusals that need no model: before anything is loaded."""
    ref = source.version.ref
    if params["precision"] == "int8":
        raise RecipeError(f"qat precision=int8 trains classifiers; for the causal LM {ref} use precision=int4 "
                          "(weight-only)")
    if source.format != "hf":
        raise RecipeError(f"qat needs a plain Hugging Face parent; {ref} is '{source.format}'")
    if not params["dataset"]:
        raise RecipeError("qat for a language model trains on text: pass --param dataset=NAME (a registered text "
                          "dataset)")
    if params["grid"] not in GRIDS:
        raise RecipeError(f"grid must be one of {', '.join(GRIDS)}, not '{params['grid']}'")
    if int(params["fake_quant_start"]) >= int(params["epochs"]):
        raise RecipeError(f"fake_quant_start={params['fake_quant_start']} leaves no epoch with fake quantisation "
                          f"(epochs={params['epochs']})")


def check_blocks(model: Any, block: int, ref: str) -> None:
    """Every Linear's input width must be a whole number of blocks (the fake quantiser and the
    INT4 kernel must cut the same blocks)."""
    from torch import nn

    bad = sorted({m.in_features for m in model.modules() if isinstance(m, nn.Linear) and m.in_features % block})
    if bad:
        raise RecipeError(f"block_size={block} does not divide the input width of every Linear layer of {ref} "
                          f"(widths {', '.join(map(str, bad))}); pick a block size that divides them")


def encode_texts(dataset: Any, tokenizer: Any, max_length: int) -> list[list[int]]:
    """Token ids of each text, cut at `max_length`; rows under two tokens (nothing to predict) dropped."""
    out = []
    for text in dataset.texts or []:
        ids = list(tokenizer(text, truncation=True, max_length=max_length)["input_ids"])
        if len(ids) >= 2:
            out.append(ids)
    return out


def _collate(rows: list[list[int]], index: Any, pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    picked = [rows[int(i)] for i in index]
    width = max(len(r) for r in picked)
    ids = torch.full((len(picked), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(picked), width), dtype=torch.long)
    for k, r in enumerate(picked):
        ids[k, :len(r)] = torch.as_tensor(r)
        mask[k, :len(r)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def _token_nll(model: Any, ids: Any, mask: Any, labels: Any) -> tuple[Any, int]:
    """(summed next-token NLL, tokens) over the real tokens of a batch."""
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                             ignore_index=-100, reduction="sum")
    return loss, int((target != -100).sum())


def torch_perplexity(model: Any, rows: list[list[int]], pad_id: int, batch_size: int = 16) -> float:
    import torch

    was = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            loss, n = _token_nll(model, *_collate(rows, range(start, min(start + batch_size, len(rows))), pad_id))
            total += float(loss)
            count += n
    model.train(was)
    return math.exp(total / max(count, 1))


def onnx_perplexity(folder: Any, fmt: str, dataset: Any, batch_size: int = 8) -> float:
    """Perplexity as the quality suite computes it (the runner's own tokenisation and scoring)."""
    from relman.tasks import open_runner

    runner = open_runner(folder, fmt, TASK, device="cpu")
    return float(runner.quality(dataset, batch_size)["perplexity"])


def _int4(ctx: WorkContext, source: ModelSource, params: dict[str, Any], sub: str) -> RecipeOutput:
    """`source` through the int4-weight-only recipe (rtn, the trained block size and symmetry)."""
    recipe = get_recipe("int4-weight-only")
    p = recipe.resolve_params({"algo": "rtn", "block_size": params["block_size"], "symmetric": params["symmetric"],
                               "exporter": params["exporter"]})
    saved = ctx.workdir
    ctx.workdir = saved / sub
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    try:
        return recipe.function()([source], p, ctx)
    finally:
        ctx.workdir = saved


def run(sources: list[ModelSource], params: dict[str, Any], ctx: WorkContext) -> RecipeOutput:
    """Recipe "qat" for a causal LM: INT4 weight-only QAT, then the int4-weight-only rtn recipe."""
    import torch

    from relman.compress.surgery import load_parent, save_child
    from relman.modelio.loading import load_preprocessor

    source = sources[0]
    check(source, params)
    ref = source.version.ref
    dataset = tr.load_recipe_dataset(ctx, params["dataset"])
    if dataset.kind not in TEXT_KINDS or not dataset.texts:
        raise RecipeError(f"qat for the language model {ref} trains on plain text; dataset '{dataset.name}' holds "
                          f"{dataset.kind} data" + ("" if dataset.texts else " with no rows"))
    block, symmetric, grid = int(params["block_size"]), bool(params["symmetric"]), str(params["grid"])
    max_len, bs = int(params["max_length"]), int(params["batch_size"])
    epochs, start, lr = int(params["epochs"]), int(params["fake_quant_start"]), float(params["lr"])
    train, val = tr.train_val_split(dataset, float(params["val_fraction"]), int(params["seed"]))
    if val is None:
        raise RecipeError(f"qat needs validation text to measure what quantisation costs; dataset '{dataset.name}' "
                          "has no validation split and val_fraction is 0")
    rng = tr.set_seed(int(params["seed"]))
    ctx.progress(0.02, "loading parent")
    model = load_parent(source, "cpu").float()
    check_blocks(model, block, ref)
    tokenizer = load_preprocessor(source.folder, TASK)
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    rows, val_rows = encode_texts(train, tokenizer, max_len), encode_texts(val, tokenizer, max_len)
    if not rows or not val_rows:
        raise RecipeError(f"dataset '{dataset.name}': no {'training' if not rows else 'validation'} text of two "
                          "tokens or more to learn from")
    max_steps = int(params["max_steps"])
    per_epoch = tr.steps_per_epoch(len(rows), bs)
    total = min(epochs * per_epoch, max_steps) if max_steps else epochs * per_epoch
    optimizer = tr.make_optimizer(model, lr, float(params["weight_decay"]))
    step, prepared, epochs_run = 0, 0, 0
    model.train()
    for epoch in range(epochs):
        if epoch == start:
            prepared = prepare(model, block, symmetric, grid)
            optimizer = tr.make_optimizer(model, lr, float(params["weight_decay"]))  # the swapped layers' params
            ctx.log("epoch %d: INT4 fake quantisation on (%d Linear layers, block %d, %s, %s grid)", epoch + 1,
                    prepared, block, "symmetric" if symmetric else "asymmetric", grid)
        for idx in tr.batches(len(rows), bs, shuffle=True, rng=rng):
            if step >= total:
                break
            step += 1
            ids, mask, labels = _collate(rows, idx, pad_id)
            loss_sum, n = _token_nll(model, ids, mask, labels)
            loss = loss_sum / max(n, 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ctx.point("train_loss", step, float(loss.detach()))
            ctx.progress(0.05 + 0.5 * step / total, f"epoch {epoch + 1}/{epochs}, loss {float(loss.detach()):.4f}")
        epochs_run = epoch + 1
        ctx.check_cancelled()
        ppl = torch_perplexity(model, val_rows, pad_id)
        ctx.point("val_perplexity_fake_quant" if epoch >= start else "val_perplexity", step, ppl)
        ctx.log("epoch %d: validation perplexity %.3f (%s)", epoch + 1, ppl,
                "fake-quantised INT4" if epoch >= start else "float")
        if step >= total:
            break
    if epochs_run <= start:
        raise RecipeError(f"max_steps={max_steps} ended training before fake quantisation started "
                          f"(fake_quant_start={start}); nothing stored")
    convert(model)
    if any(hasattr(m, "weight_fake_quantizer") for m in model.modules()):
        raise RecipeError("torchao's QAT convert left fake-quantised layers behind; nothing stored")
    trained = ctx.workdir / "qat-float"
    with torch.no_grad():
        save_child(model, source.folder, trained)
    del model
    ctx.progress(0.6, f"converting to ONNX INT4 (rtn, block {block})")
    qat_source = ModelSource(dataclasses.replace(source.version, format="hf"), trained)
    out = _int4(ctx, qat_source, params, "convert")
    qat_ppl = onnx_perplexity(out.folder, "onnx", val)
    context = {"dataset": dataset.name, "dataset_sha256": dataset.sha256, "split": "validation",
               "int4": f"int4-weight-only algo=rtn block_size={block} symmetric={symmetric}"}
    metrics = [m for m in out.metrics if m.name not in ("max_abs_diff_vs_parent", "top1_agreement_vs_parent")]
    metrics.append(Metric("compress", "val_perplexity", qat_ppl, context))
    schedule: dict[str, Any] = {
        "precision": "int4 weight-only", "epochs": epochs, "epochs_run": epochs_run, "steps": step,
        "max_steps": max_steps, "lr": lr, "batch_size": bs, "weight_decay": float(params["weight_decay"]),
        "max_length": max_len, "fake_quant_start_epoch": start + 1, "float_warmup_epochs": start,
        "freeze_observers": "not applicable: each block's scale comes from the current weight every step",
        "weights": f"INT4 {'symmetric' if symmetric else 'asymmetric'}, blocks of {block} input weights "
                   f"({grid} grid; torchao QATConfig + IntxFakeQuantizeConfig(int4, group_size={block}))",
        "activations": "float (weight-only)", "grid": grid, "prepared_linear_layers": prepared,
        "train_texts": len(rows), "validation_texts": len(val_rows),
        "conversion": f"torchao QATConfig convert, then int4-weight-only algo=rtn block_size={block} "
                      f"symmetric={symmetric} exporter={params['exporter']}"}
    meta: dict[str, Any] = {**out.meta, "qat": schedule, "dataset": dataset.name}
    if params["compare_ptq"]:
        ctx.progress(0.8, "measuring the parent and its post-training INT4")
        ptq = _int4(ctx, source, params, "ptq")
        ptq_ppl = onnx_perplexity(ptq.folder, "onnx", val)
        fp32_ppl = onnx_perplexity(source.folder, "hf", val)
        increase = ptq_ppl - fp32_ppl
        recovered = (ptq_ppl - qat_ppl) / increase if increase > 0 else None
        schedule.update({"val_perplexity_parent_fp32": fp32_ppl, "val_perplexity_ptq_int4": ptq_ppl,
                         "val_perplexity_qat_int4": qat_ppl, "recovered_fraction": recovered})
        metrics += [Metric("compress", "val_perplexity_parent_fp32", fp32_ppl, context),
                    Metric("compress", "val_perplexity_ptq_int4", ptq_ppl, context)]
        if recovered is not None:
            metrics.append(Metric("compress", "qat_recovered_fraction", recovered,
                                  {**context, "rule": "(PTQ INT4 ppl - QAT INT4 ppl) / (PTQ INT4 ppl - parent ppl)"}))
        ctx.log("validation perplexity: parent %.3f, PTQ INT4 %.3f, QAT INT4 %.3f", fp32_ppl, ptq_ppl, qat_ppl)
    ctx.progress(1.0, f"QAT INT4, validation perplexity {qat_ppl:.3f}")
    return RecipeOutput(folder=out.folder, format=out.format, params=out.params, dtype="int4", task=TASK,
                        meta=meta, metrics=metrics)

