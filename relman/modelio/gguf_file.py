"""The `gguf` format: one llama.cpp file (weights, hyper-parameters, tokenizer, chat template).

A gguf version is stored as its `.gguf` file(s). Import and bundle checks parse the file with
the `gguf` library's reader (header, metadata, tensor table, offsets within the file) before
anything is stored, so a truncated or foreign file is a one-line refusal. relman runs a gguf
version only where llama.cpp's Python binding (`llama-cpp-python`, extra `gguf-run`) is
installed, and no relman task runner drives that binding yet (it could not be installed where
this was built: no wheel, and llama.cpp's build did not fit), so a gguf version is measured by
size only for now; evaluation planning says so instead of failing in a worker.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from math import prod
from pathlib import Path

from relman.errors import ModelImportError

FORMAT = "gguf"
SUFFIX = ".gguf"
# GGUF architectures that are encoders (embedding models); every other one is a causal LM
_ENCODER_ARCHS = ("bert", "nomic-bert", "jina-bert-v2", "t5encoder", "modern-bert", "neo-bert")


@dataclass(frozen=True)
class GGUFInfo:
    architecture: str
    params: int
    file_type: str  # the dominant tensor type, e.g. "q4_k" / "f16"
    tensors: int
    has_tokenizer: bool

    @property
    def task(self) -> str:
        return "feature-extraction" if self.architecture in _ENCODER_ARCHS else "causal-lm"


def read_info(path: Path | str) -> GGUFInfo:
    """Parse `path` with the gguf library; raises ModelImportError naming the file."""
    path = Path(path)
    try:
        import gguf
    except ImportError:
        raise ModelImportError(f"{path}: reading GGUF files needs the 'gguf' package (pip install gguf)") from None
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelImportError(f"{path}: not a readable GGUF file ({first[:160]})") from None
    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        raise ModelImportError(f"{path}: GGUF file has no general.architecture")
    counts: dict[str, int] = {}
    params = 0
    for t in reader.tensors:
        n = int(prod(int(d) for d in t.shape))
        params += n
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + n
    if not reader.tensors:
        raise ModelImportError(f"{path}: GGUF file holds no tensors")
    main = max(counts, key=lambda k: counts[k]).lower()
    return GGUFInfo(str(arch_field.contents()), params, main, len(reader.tensors),
                    "tokenizer.ggml.tokens" in reader.fields)


def find_gguf(folder: Path | str) -> Path:
    files = sorted(Path(folder).glob(f"*{SUFFIX}"))
    if not files:
        raise ModelImportError(f"{folder} holds no {SUFFIX} file")
    return ([f for f in files if f.name == "model.gguf"] or files)[0]


def runtime_available() -> bool:
    """Whether llama.cpp's Python binding is installed (it runs a gguf version)."""
    return importlib.util.find_spec("llama_cpp") is not None


def evaluable_suites() -> tuple[str, ...]:
    """The suites a gguf version can be measured with: those that read only its files."""
    return ("size",)
