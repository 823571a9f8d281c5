"""The demo catalog: real tiny models, built locally, no network."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

from relman.catalog import Catalog


def build_demo(catalog: Catalog) -> Iterator[str]:
    from relman.app.models import import_model
    from relman.modelio import tiny

    with tempfile.TemporaryDirectory(dir=catalog.tmp_dir) as tmp:
        for name, build in (("demo-bert", tiny.tiny_bert_classifier), ("demo-vit", tiny.tiny_vit_classifier),
                            ("demo-gpt2", tiny.tiny_gpt2)):
            if any(m["name"] == name for m in catalog.models()):
                yield f"{name}: already in the catalog"
                continue
            folder = build(Path(tmp) / name)
            v = import_model(catalog, folder, name)
            yield f"imported {v.ref} ({v.task}, {v.params:,} params)"
