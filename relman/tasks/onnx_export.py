"""Export a Hugging Face folder to an ONNX folder that the task adapters can run.

Why here: evaluation needs the ONNX form of a model to prove that PyTorch and ONNX versions are
scored by the same code. (The compression recipes may ship their own exporter; this one is
small and only does what the adapters need.)

The exporter is torch's dynamo exporter with explicit dynamic batch and sequence dimensions:
the older TorchScript tracer bakes the traced sequence length into the attention-mask code of
recent transformers, so its graphs silently give wrong logits at other lengths. The output
folder holds `model.onnx` plus the config and tokenizer / image-processor files copied from
the source, so `relman.tasks.open_runner(folder, "onnx", task)` can run it.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch

from relman.errors import ModelImportError
from relman.modelio.loading import load_torch_model

# Files besides the weights that describe how to feed the model.
_SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "preprocessor_config.json")

_OUTPUT = {"text-classification": "logits", "image-classification": "logits",
           "feature-extraction": "last_hidden_state", "causal-lm": "logits"}


class _Wrapper(torch.nn.Module):
    """Positional inputs in, one named output tensor out (no cache, no tuples)."""

    def __init__(self, model: torch.nn.Module, names: list[str], output: str, causal: bool) -> None:
        super().__init__()
        self.model = model
        self.names = names
        self.output = output
        self.causal = causal

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(self.names, args))
        if self.causal:
            kwargs["use_cache"] = False
        return self.model(**kwargs, return_dict=True)[self.output]


def export_onnx(hf_folder: Path, out_folder: Path, task: str, *, opset: int = 18) -> Path:
    """Write `out_folder/model.onnx` (+ side files) for the HF model in `hf_folder`; returns
    `out_folder`. Inputs: input_ids, attention_mask[, token_type_ids] or pixel_values."""
    hf_folder, out_folder = Path(hf_folder), Path(out_folder)
    if task not in _OUTPUT:
        raise ModelImportError(f"cannot export task '{task}' to ONNX (known: {', '.join(_OUTPUT)})")
    model = load_torch_model(hf_folder, task, "cpu")
    cfg = model.config
    if task == "image-classification":
        size = getattr(cfg, "image_size", 224)
        size = size if isinstance(size, int) else size[0]
        names = ["pixel_values"]
        example: tuple[torch.Tensor, ...] = (torch.randn(2, getattr(cfg, "num_channels", 3), size, size),)
        batch = torch.export.Dim("batch", min=1, max=4096)
        dims: tuple[dict[int, object], ...] = ({0: batch},)
    else:
        names = ["input_ids", "attention_mask"]
        if task != "causal-lm" and getattr(cfg, "type_vocab_size", 0):
            names.append("token_type_ids")
        ids = torch.ones(2, 8, dtype=torch.long)
        # A padded example row: exporting with an all-ones mask lets transformers drop the
        # mask altogether ("nothing is padded"), and the graph would then ignore padding.
        mask = torch.ones(2, 8, dtype=torch.long)
        mask[1, 5:] = 0
        example = tuple({"input_ids": ids, "attention_mask": mask}.get(n, torch.zeros_like(ids)) for n in names)
        max_pos = int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 512))
        batch = torch.export.Dim("batch", min=1, max=4096)
        seq = torch.export.Dim("seq", min=2, max=max_pos)
        dims = tuple({0: batch, 1: seq} for _ in names)
    wrapper = _Wrapper(model, names, _OUTPUT[task], task == "causal-lm").eval()
    out_folder.mkdir(parents=True, exist_ok=True)
    tmp = out_folder / "model.onnx.partial"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, example, str(tmp), input_names=names, output_names=[_OUTPUT[task]],
                              dynamic_shapes=(dims,), dynamo=True, opset_version=opset, external_data=False,
                              verbose=False)
        tmp.replace(out_folder / "model.onnx")
    finally:
        tmp.unlink(missing_ok=True)
    for name in _SIDE_FILES:
        if (hf_folder / name).is_file():
            shutil.copy2(hf_folder / name, out_folder / name)
    return out_folder
