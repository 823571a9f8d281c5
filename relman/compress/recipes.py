"""Registration of the built-in recipes (data only: no torch import here)."""

from __future__ import annotations

from dataclasses import replace

from relman.compress.registry import Param, Recipe, register  # noqa: F401
from relman.tasks.specs import tasks_with_recipe

# `shown_when` (relman.compress.registry.Param): when a parameter applies at all; the GUI's
# form shows it only then (LoRA's rank under method=lora, DP's budget with dp=true).
_LORA = (("method", ("lora",)),)
_DP = (("dp", (True,)),)
_NO_DP = (("dp", (False,)),)
_ADV = (("adversarial", (True,)),)

# A recipe that applies to some tasks only takes `tasks=tasks_with_recipe(NAME)`: the task
# table (relman.tasks.specs, each task's `recipes`) says which tasks those are.

# -- pruning, low-rank, distillation, fine-tuning, merging (weight-editing recipes) ----------
_TORCH_FORMATS = ("hf", "hf-reshaped")

register(Recipe(
    name="prune-magnitude", hub_relation="finetune", compresses=True, title="Unstructured magnitude pruning", target="relman.compress.prune.magnitude:run",
    input_formats=_TORCH_FORMATS,
    params=(
        Param("sparsity", float, 0.5, "fraction of the selected weights set to zero (0.5 = 50 %)", min=0.0, max=0.99),
        Param("scope", str, "global", "global: one threshold over all layers; layer: the same share in each layer",
              choices=("global", "layer")),
        Param("exclude", list, ["classifier", "score", "lm_head"], "layers whose name contains one of these are kept"),
    ),
    description="Zeroes the smallest-magnitude Linear weights (masks made permanent); records the sparsity.",
))
register(Recipe(
    name="prune-structured", hub_relation="finetune", compresses=True, title="Structured pruning (heads + FFN neurons)",
    target="relman.compress.prune.structured:run", input_formats=_TORCH_FORMATS,
    output_format="hf-reshaped",  # plain "hf" when only FFN neurons are removed
    params=(
        Param("heads", float, 0.25, "fraction of attention heads removed in each layer", min=0.0, max=0.9),
        Param("ffn", float, 0.25, "fraction of feed-forward neurons removed in each layer", min=0.0, max=0.95),
        Param("importance", str, "weight-norm", "how heads and neurons are ranked", choices=("weight-norm",)),
        Param("dataset", str, "", "registered dataset for a short recovery fine-tune against the parent (optional)"),
        Param("epochs", int, 1, "recovery fine-tune epochs", min=0, max=100),
        Param("lr", float, 1e-4, "recovery fine-tune learning rate", min=0.0),
        Param("batch_size", int, 16, "recovery fine-tune batch size", min=1, max=4096),
        Param("max_length", int, 128, "token limit for text", min=8),
        Param("seed", int, 0, "random seed", min=0, max=2**31 - 1),
    ),
    description="Removes whole attention heads and FFN neurons, so parameters, size and latency drop.",
))
register(Recipe(
    name="lowrank-svd", hub_relation="finetune", compresses=True, title="Low-rank factorisation (truncated SVD)", target="relman.compress.prune.lowrank:run",
    input_formats=_TORCH_FORMATS, output_format="hf-reshaped",
    params=(
        Param("rank", int, 0, "rank of every factorised layer (0 = choose by energy)", min=0),
        Param("energy", float, 0.9, "share of spectral energy kept when rank is 0", min=0.01, max=1.0,
              shown_when=(("rank", (0,)),)),
        Param("exclude", list, ["classifier", "score", "lm_head"], "layers whose name contains one of these are kept"),
        Param("dataset", str, "", "registered dataset for a short recovery distillation from the parent (optional)"),
        Param("epochs", int, 0, "recovery epochs (0 = none)", min=0, max=100),
        Param("lr", float, 1e-4, "recovery learning rate", min=0.0),
        Param("batch_size", int, 16, "recovery batch size", min=1, max=4096),
        Param("max_length", int, 128, "token limit for text", min=8),
        Param("seed", int, 0, "random seed", min=0, max=2**31 - 1),
    ),
    description="Replaces Linear layers by two smaller ones where that saves parameters.",
))
register(Recipe(
    name="distill", hub_relation="finetune", title="Knowledge distillation", target="relman.compress.adapt.distill:run",
    input_formats=_TORCH_FORMATS, multi_parent=True,
    tasks=tasks_with_recipe("distill"),
    params=(
        Param("dataset", str, "", "registered dataset the student learns on (labels used when present)"),
        Param("student_layers", int, 0, "layers of a new student (0 = teacher's; ignored with a second parent)", min=0),
        Param("student_hidden", int, 0, "hidden size of a new student (0 = teacher's)", min=0),
        Param("temperature", float, 2.0, "softmax temperature of the soft-target loss", min=0.05),
        Param("alpha", float, 0.5, "weight of the soft-target loss (1 - alpha for the label loss)", min=0.0, max=1.0),
        Param("epochs", int, 3, "passes over the training split", min=1, max=1000),
        Param("lr", float, 5e-4, "learning rate", min=0.0),
        Param("batch_size", int, 16, "batch size", min=1, max=4096),
        Param("max_length", int, 128, "token limit for text", min=8),
        Param("seed", int, 0, "random seed", min=0, max=2**31 - 1),
    ),
    description="Trains a smaller student (new config or a second parent) on the teacher's softened outputs.",
))
_LORA_PARAMS = (
    Param("r", int, 8, "LoRA rank (method=lora)", min=1, max=1024, shown_when=_LORA),
    Param("alpha", float, 16.0, "LoRA scaling numerator: the update is (alpha / r) B A (method=lora)", min=0.0,
          shown_when=_LORA),
    Param("target_modules", list, [], "layer names LoRA wraps, e.g. query,value (default: PEFT's choice for the "
                                      "architecture; names matching no layer are refused)", shown_when=_LORA),
    Param("lora_dropout", float, 0.0, "dropout on the LoRA input (method=lora)", min=0.0, max=0.9, shown_when=_LORA),
)
_DP_PARAMS = (
    Param("dp", bool, False, "train with differential privacy (DP-SGD with Opacus); records a privacy ledger"),
    Param("target_epsilon", float, 8.0, "privacy budget ε the whole training may spend (dp=true)", min=0.0,
          shown_when=_DP),
    Param("delta", float, 1e-5, "δ of the (ε, δ) guarantee; below 1 / training rows (dp=true)", min=0.0, max=1.0,
          shown_when=_DP),
    Param("max_grad_norm", float, 1.0, "per-example gradient clipping norm (dp=true)", min=0.0, shown_when=_DP),
)
register(Recipe(
    name="finetune", hub_relation="finetune", title="Fine-tune / transfer (full or LoRA, optionally DP)", target="relman.compress.adapt.finetune:run",
    input_formats=_TORCH_FORMATS, tasks=tasks_with_recipe("finetune"),
    params=(
        Param("dataset", str, "", "registered labelled dataset (causal-lm: an sft dataset of prompt/completion or "
                                  "chat messages rows; the loss is on completions / assistant turns)"),
        Param("method", str, "full", "full: train every weight (an hf child); lora: train a LoRA adapter "
                                     "(a peft-adapter child pinned to this base)", choices=("full", "lora")),
        *_LORA_PARAMS,
        *_DP_PARAMS,
        Param("epochs", int, 3, "maximum passes over the training split (exactly this many with dp)", min=1,
              max=1000),
        Param("lr", float, 0.0, "learning rate (0 = the method's default, recorded on the child: "
                                "classifiers full 5e-5, lora 3e-3, dp full 5e-4, dp lora 5e-3; causal-lm "
                                "full 5e-4, lora 5e-3)", min=0.0),
        Param("batch_size", int, 16, "batch size (expected batch size under dp's Poisson sampling)", min=1,
              max=4096),
        Param("patience", int, 2, "epochs without validation improvement before stopping (not with dp)", min=1,
              shown_when=_NO_DP),
        Param("val_fraction", float, 0.2, "hold-out share when the dataset has no validation split", min=0.0, max=0.9),
        Param("weight_decay", float, 0.01, "AdamW weight decay", min=0.0),
        Param("max_length", int, 128, "token limit for text (causal-lm: the model's context; a longer prompt "
                                      "is refused)", min=8),
        Param("adversarial", bool, False, "also train on FGSM-perturbed inputs (embeddings / pixels)"),
        Param("epsilon", float, 0.01, "FGSM step size", min=0.0, shown_when=_ADV),
        Param("adv_weight", float, 0.5, "share of the adversarial loss", min=0.0, max=1.0, shown_when=_ADV),
        Param("seed", int, 0, "random seed", min=0, max=2**31 - 1),
    ),
    description="Trains on a labelled dataset (every weight, or a LoRA adapter; DP-SGD on request); an encoder "
                "becomes a classifier; new head when the labels differ; a causal LM learns prompt/completion or "
                "chat rows.",
))
register(Recipe(
    name="merge-fedavg", hub_relation="merge", title="Merge (federated averaging)", target="relman.compress.adapt.merge:run",
    input_formats=_TORCH_FORMATS + ("peft-adapter",), multi_parent=True,
    params=(
        Param("weights", list, [], "one sample count per parent (default: their recorded train_samples, else equal)"),
        Param("adapter_rank", int, 0, "adapters: rank of the merged adapter (0 = the parents' r); the average "
                                      "update is re-factorised to it by SVD", min=0),
        Param("allow_mixed_privacy", bool, False, "merge DP-trained and non-DP parents anyway (no ε is recorded)"),
        Param("masked", list, [], "secure aggregation: every site's masked update file of one round (absolute "
                                  "paths; `relman federated mask`); the one parent is the adapters' base"),
    ),
    description="Weighted average of several versions of the same architecture, or of LoRA adapters of one base "
                "(average of the updates BA, re-factorised by SVD); composes the parents' privacy ledgers.",
))
register(Recipe(
    name="ensemble", hub_relation="merge", title="Ensemble (several versions as one)",
    target="relman.compress.ensemble:run", input_formats=_TORCH_FORMATS + ("torch-int8", "peft-adapter"),
    tasks=tasks_with_recipe("ensemble"), output_format="ensemble", multi_parent=True, same_task=True,
    params=(
        Param("combine", str, "mean", "mean: weighted mean of the members' probabilities; vote: weighted "
                                      "majority vote", choices=("mean", "vote")),
        Param("weights", list, [], "one weight per member, in order (default: equal)"),
    ),
    description="Runs every member on the same inputs and combines their class probabilities; stores a manifest "
                "pinning the members by manifest sha256 (no weights are copied).",
))
register(Recipe(
    name="merge-adapter", hub_relation="merge", title="Merge a LoRA adapter into its base", target="relman.compress.adapt.merge_adapter:run",
    input_formats=("peft-adapter", "hf", "hf-reshaped", "torch-int8", "onnx", "safetensors", "torch"),
    multi_parent=True,
    params=(
        Param("tolerance", float, 1e-4, "max abs logit difference allowed between the adapter and the merged model",
              min=0.0),
    ),
    description="Folds the adapter's B A into the base weights: an hf version with the adapter and the base as "
                "parents. A second parent names the base to merge into; quantised bases are refused.",
))

# -- quantisation, export, half precision (format-changing recipes) -------------------------
_EXPORTABLE = ("hf", "hf-reshaped")  # what relman.compress.export.onnx_export can trace
_EXPORT_TOL = Param("export_tolerance", float, 1e-4,
                    "max abs difference allowed between PyTorch and the ONNX export (when the parent is not ONNX)",
                    min=0.0)
_EXPORTER = Param("exporter", str, "auto",
                  "who writes the ONNX graph of a causal LM: 'genai' = ONNX Runtime GenAI's model builder (Llama, "
                  "Qwen, Phi, Mistral, Gemma...; fused, with a KV cache), 'relman' = relman's exporter (any model), "
                  "'auto' = the builder where it applies and is installed",
                  choices=("auto", "relman", "genai"))

register(Recipe(
    name="torch-int8-dynamic", hub_relation="quantized", compresses=True, title="Dynamic INT8 (PyTorch, Linear layers)",
    target="relman.compress.quantize.quant_torch:int8_dynamic", input_formats=("hf",), output_format="torch-int8",
    params=(
        Param("keep_float", list, [], "Linear layers whose name contains one of these stay float "
                                      "(e.g. classifier)"),
        Param("activations", str, "dynamic", "dynamic: activations quantised to INT8 per token at run time; "
                                             "float: weight-only INT8 (closer to the parent)",
              choices=("dynamic", "float")),
    ),
    description="torchao INT8: per-row INT8 weights (safetensors), activations quantised on the fly; CPU only.",
))
register(Recipe(
    name="onnx-export", hub_relation="quantized", compresses=True, title="ONNX export (verified)", target="relman.compress.export.onnx_recipe:export_recipe",
    input_formats=_EXPORTABLE + ("ensemble",), output_format="onnx",
    params=(
        Param("opset", int, 17, "ONNX opset", min=14, max=21),
        Param("tolerance", float, 1e-4, "refuse the export when ONNX and PyTorch outputs differ by more "
                                        "(max abs, on inputs of other shapes than the traced ones)", min=0.0),
        replace(_EXPORTER, default="relman"),  # a plain export stays relman's graph unless asked
        Param("kv_cache", bool, True, "causal LMs: also past/present key-value inputs and outputs, so "
                                      "generation feeds one new token per step and reuses the cache"),
    ),
    description="Dynamic batch and sequence axes; the max abs difference to PyTorch is recorded.",
))
register(Recipe(
    name="ort-int8", hub_relation="quantized", compresses=True, title="INT8 with onnxruntime (dynamic or static)", target="relman.compress.quantize.quant_ort:ort_int8",
    input_formats=_EXPORTABLE + ("onnx",), output_format="onnx",
    params=(
        Param("mode", str, "dynamic", "dynamic: weights INT8, activations on the fly; static: calibrated "
                                      "activation scales (QDQ)", choices=("dynamic", "static")),
        Param("per_channel", bool, False, "one scale per output channel instead of per tensor"),
        Param("nodes_to_exclude", list, [], "node names kept in float"),
        Param("op_types", list, [], "op types to quantise (default: MatMul,Gemm,Conv,Gather in static mode; "
                                    "onnxruntime's dynamic set in dynamic mode)"),
        Param("op_types_to_exclude", list, [], "op types kept in float (e.g. Gather to keep embeddings)"),
        Param("keep_sensitive", int, 0, "also keep the N most INT8-sensitive weight nodes in float", min=0),
        Param("sensitivity", str, "weights", "how keep_sensitive ranks layers: weights (rounding error of the "
                                             "weight alone) or outputs (model output error with only that layer "
                                             "quantised, on calibration data; cached)",
              choices=("weights", "outputs")),
        Param("smooth", bool, False, "SmoothQuant: migrate activation outliers into the weights, folded into "
                                     "the preceding LayerNorms (exact in FP32; needs calibration data)"),
        Param("smooth_alpha", float, 0.5, "smoothing migration strength", min=0.0, max=1.0,
              shown_when=(("smooth", (True,)),)),
        Param("fusion", bool, False, "apply ONNX Runtime's transformer fusions (Attention, SkipLayerNorm, ...) "
                                     "before quantising (BERT-, GPT-2- and ViT-style models)"),
        Param("optimize", bool, True, "run onnxruntime's graph optimisation (quant_pre_process) first"),
        Param("dataset", str, "", "registered dataset for calibration (static scales, smoothing, sensitivity; "
                                  "default: the job's --dataset; random inputs when none)"),
        Param("calibration_samples", int, 64, "rows of the dataset used for calibration", min=1),
        Param("calibration_batch", int, 8, "calibration batch size", min=1),
        Param("calibrate_method", str, "minmax", "how activation ranges are chosen (static mode)",
              choices=("minmax", "entropy", "percentile"), shown_when=(("mode", ("static",)),)),
        Param("activation_type", str, "uint8", "static mode activation type", choices=("uint8", "int8"),
              shown_when=(("mode", ("static",)),)),
        Param("max_length", int, 128, "token limit for calibration texts", min=8),
        _EXPORT_TOL,
    ),
    description="onnxruntime quantize_dynamic / quantize_static after graph optimisation.",
))
register(Recipe(
    name="qat", hub_relation="quantized", title="Quantisation-aware training (torchao) to ONNX INT8 / INT4",
    target="relman.compress.quantize.qat:run", input_formats=("hf",), output_format="onnx",
    tasks=("text-classification", "image-classification", "causal-lm"),
    params=(
        Param("dataset", str, "", "registered dataset to train on (required): labelled rows for a classifier, "
                                  "plain text for a causal LM"),
        Param("precision", str, "auto", "int8 (weights and activations; classifiers) or int4 (weight-only; causal "
                                        "LMs); auto = int4 for causal LMs, int8 otherwise",
              choices=("auto", "int8", "int4")),
        Param("epochs", int, 3, "passes over the training split", min=1, max=1000),
        Param("max_steps", int, 0, "stop after this many optimiser steps (0 = all epochs; int4 only)", min=0),
        Param("fake_quant_start", int, 0, "float warm-up epochs before fake quantisation starts", min=0),
        Param("lr", float, 0.0, "learning rate; 0 = the default (5e-5 for int8 classifiers, 1e-3 for int4 LMs)",
              min=0.0),
        Param("block_size", int, 32, "int4: weights per quantisation block (fake quantiser and rtn conversion)",
              choices=(16, 32, 64, 128, 256)),
        Param("symmetric", bool, True, "int4: symmetric blocks (no zero point), for training and conversion"),
        Param("grid", str, "onnxruntime", "int4: the grid trained for: onnxruntime (MatMulNBits rtn, the one "
                                          "stored) or torchao (its own int4 grid)", choices=("onnxruntime", "torchao")),
        _EXPORTER,
        Param("batch_size", int, 16, "batch size", min=1, max=4096),
        Param("weight_decay", float, 0.0, "AdamW weight decay", min=0.0),
        Param("val_fraction", float, 0.2, "hold-out share when the dataset has no validation split", min=0.0,
              max=0.9),
        Param("max_length", int, 128, "token limit for text", min=8),
        Param("int8_mode", str, "dynamic", "the ort-int8 conversion: dynamic (weights INT8, activations on the "
                                           "fly) or static (calibrated on the dataset)", choices=("dynamic", "static")),
        Param("per_channel", bool, True, "one weight scale per output channel (what the fake quantisers train for)"),
        Param("compare_ptq", bool, True, "also quantise the parent post-training and record the share of its "
                                         "accuracy loss QAT recovered"),
        Param("seed", int, 0, "random seed", min=0, max=2**31 - 1),
    ),
    description="Fine-tunes with fake-quantised weights and activations (torchao QATConfig prepare/convert), then "
                "converts with ort-int8; records the schedule and, against the parent's PTQ INT8, the loss recovered.",
))
register(Recipe(
    name="half", hub_relation="quantized", compresses=True, title="Half precision (PyTorch FP16 / BF16)", target="relman.compress.quantize.half:half_torch",
    input_formats=("hf",), output_format="hf",
    params=(
        Param("dtype", str, "float16", "float16 (older GPUs) or bfloat16 (float32's range; Ampere+ GPUs, CPUs)",
              choices=("float16", "bfloat16")),
    ),
    description="Casts the weights; the dtype is recorded in config.json. The useful one on a GPU.",
))
register(Recipe(
    name="onnx-fp16", hub_relation="quantized", compresses=True, title="Half precision (ONNX FP16)", target="relman.compress.quantize.half:half_onnx",
    input_formats=_EXPORTABLE + ("onnx",), output_format="onnx",
    params=(
        Param("op_block_list", list, [], "extra op types kept in float32 (besides the converter's defaults)"),
        _EXPORT_TOL,
        _EXPORTER,
    ),
    description="float16 weights and compute with float32 inputs/outputs; for GPU inference.",
))
register(Recipe(
    name="int4-weight-only", hub_relation="quantized", compresses=True, title="Weight-only INT4 (causal LMs)", target="relman.compress.quantize.int4:int4_weight_only",
    input_formats=_EXPORTABLE + ("onnx",), tasks=tasks_with_recipe("int4-weight-only"), output_format="onnx",
    params=(
        Param("algo", str, "rtn", "rtn: round to nearest; k_quant: llama.cpp's K-quant scale search; hqq: "
              "half-quadratic zero-point fit; gptq: Hessian-guided rounding calibrated on `dataset`",
              choices=("rtn", "k_quant", "hqq", "gptq")),
        Param("block_size", int, 32, "weights per quantisation block", choices=(16, 32, 64, 128, 256)),
        Param("symmetric", bool, True, "symmetric blocks (no zero point); rtn and gptq only (k_quant and hqq "
              "always fit a zero point)", shown_when=(("algo", ("rtn", "gptq")),)),
        Param("int8_layers", list, [], "MatMul layers kept in 8-bit blocks: parts of node names, e.g. lm_head"),
        Param("int8_sensitive", int, 0, "also keep in 8 bits the N layers whose 4-bit rounding alone moves the "
              "model's output most (measured on `dataset`, or random inputs)", min=0, max=512),
        Param("dataset", str, "", "registered text dataset for gptq's calibration and int8_sensitive's ranking"),
        Param("calibration_samples", int, 64, "rows of the dataset used for calibration", min=1),
        Param("calibration_batch", int, 8, "calibration batch size", min=1),
        Param("max_length", int, 128, "token limit for calibration texts", min=8),
        Param("accuracy_level", int, 0, "MatMulNBits compute type (4 = int8 compute on CPU; 0 = the exporter's "
              "default: 4 with the GenAI builder, float32 with relman's)",
              choices=(0, 1, 2, 3, 4)),
        Param("nodes_to_exclude", list, [], "MatMul node names kept in float (the builder's names with exporter "
              "genai, e.g. /lm_head/MatMul)"),
        _EXPORT_TOL,
        _EXPORTER,
    ),
    description="blockwise 4-bit MatMul weights (rtn / k_quant / hqq / gptq, optionally some layers in 8 bits), "
                "written one weight at a time, on the ONNX graph of the LM (ONNX Runtime GenAI's builder writes it "
                "for the families it knows).",
))
register(Recipe(
    name="gguf", hub_relation="quantized", compresses=True, title="GGUF for llama.cpp / LM Studio / Ollama (F16, Q8_0, Q4_0, Q4_K_M)",
    target="relman.compress.export.gguf_writer:run", input_formats=("hf",), tasks=tasks_with_recipe("gguf"),
    output_format="gguf",
    params=(
        Param("type", str, "Q4_K_M", "tensor types: F16, Q8_0 (8-bit blocks), Q4_0 (4-bit blocks), Q4_K_M "
                                     "(llama.cpp's 4-bit K-quant mix: Q4_K, Q6_K for the output matrix and some "
                                     "attn_v / ffn_down)", choices=("F16", "Q8_0", "Q4_0", "Q4_K_M")),
    ),
    description="One .gguf file with the tokenizer and chat template inside (Llama, Mistral, Qwen2); read back and "
                "compared tensor by tensor with the parent before it is stored.",
))

# -- post-processing (a rule over a pinned parent; no weights) --------------------------------
register(Recipe(
    # "adapter": like a LoRA adapter, a small add-on that runs only with its pinned base loaded
    name="fair-threshold", hub_relation="adapter", title="Fairness: per-group decision thresholds (Fairlearn)",
    needs_groups=True,
    target="relman.compress.fairness_threshold:run",
    input_formats=("hf", "hf-reshaped", "onnx", "torch-int8", "peft-adapter"), output_format="fair-threshold",
    tasks=("text-classification", "image-classification"),
    params=(
        Param("dataset", str, "", "registered labelled dataset with a group column (default: the job's --dataset)"),
        Param("constraint", str, "demographic_parity", "the fairness constraint Fairlearn's ThresholdOptimizer meets",
              choices=("demographic_parity", "equalized_odds", "true_positive_rate_parity",
                       "false_positive_rate_parity", "true_negative_rate_parity", "false_negative_rate_parity")),
        Param("objective", str, "accuracy_score", "what the thresholds maximise under the constraint",
              choices=("accuracy_score", "balanced_accuracy_score")),
        Param("positive_label", str, "", "the label whose rate is equalised (default: the second label)"),
        Param("fit_split", str, "train", "split the thresholds are fitted on (all rows when the dataset has none)",
              choices=("train", "validation", "test")),
        Param("grid_size", int, 1000, "thresholds Fairlearn tries per group", min=10, max=100_000),
        Param("batch_size", int, 32, "batch size for scoring the fit rows", min=1, max=4096),
        Param("seed", int, 0, "seed of the per-row hash that randomises between two thresholds", min=0,
              max=2**31 - 1),
    ),
    description="Fits per-group thresholds on the parent's scores under a fairness constraint; the child is a "
                "JSON rule over the pinned parent, applied by every suite. The group attribute is needed at "
                "prediction time.",
))
