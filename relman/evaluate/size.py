"""Size suite: what the version costs to store and ship.

Metrics (suite "size"): `size_bytes` (sum of the version's files on disk), `size_mb` (the same
in MiB = 2**20 bytes), `params` (parameter count: from the catalog when import recorded it,
else counted from the weights — safetensors headers or ONNX initializers, without loading
the model). Needs no dataset.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from relman.catalog import Metric
from relman.evaluate.env import SuiteEnv

SUITE = "size"


_NOT_STORED = (".relman-base.json",)  # a materialised adapter's pointer to its base (relman.modelio.peft_adapter)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file() and f.name not in _NOT_STORED)


def count_params(folder: Path, fmt: str) -> int | None:
    """Parameters counted from the files (no model load)."""
    folder = Path(folder)
    if fmt == "onnx":
        import onnx

        from relman.modelio.loading import find_onnx

        model = onnx.load(str(find_onnx(folder)), load_external_data=False)
        return int(sum(int(np.prod(t.dims)) if len(t.dims) else 1 for t in model.graph.initializer))
    total = 0
    files = sorted(folder.glob("*.safetensors"))
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for key, meta in header.items():
            if key != "__metadata__":
                total += int(np.prod(meta["shape"])) if meta["shape"] else 1
    return total if files else None


def run(env: SuiteEnv) -> list[Metric]:
    nbytes = folder_bytes(env.model.folder)
    params = env.model.info.params if env.model.info is not None and env.model.info.params else None
    if params is None:
        params = count_params(env.model.folder, env.model.fmt)
    out = [env.metric(SUITE, "size_bytes", nbytes, uses_data=False),
           env.metric(SUITE, "size_mb", nbytes / 2**20, uses_data=False)]
    if params is not None:
        out.append(env.metric(SUITE, "params", params, uses_data=False))
    return out
