"""How a dataset's files become rows: the column mapping, stored with the dataset.

The mapping is saved in the catalog (`datasets.columns`) next to the content-hashed files, so
`load_dataset` in any worker re-reads the very same files with the very same mapping (split
fractions and seed included) and gets exactly the same rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from relman.data.formats import READERS, get_reader
from relman.errors import DatasetError


@dataclass(frozen=True)
class ColumnMapping:
    """Which column/key holds what. For NPZ files `x_key`/`y_key` name the arrays, and
    `group_col`/`split_col` name optional arrays too. `label_col=None` means unlabelled."""

    format: str
    text_col: str | None = "text"
    label_col: str | None = "label"
    group_col: str | None = None
    split_col: str | None = None
    x_key: str | None = None
    y_key: str | None = None
    image_col: str | None = None                  # parquet: encoded image bytes instead of text
    image_size: tuple[int, int] | None = None     # images: resize every image to (height, width)
    chunk_chars: int | None = None                # text/lm: fixed-size chunks instead of lines
    delimiter: str = ","                          # csv
    val_fraction: float = 0.0                     # seeded split, used when there is no split column
    test_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        reader = get_reader(self.format)  # refuses an unknown format, naming the known ones
        for f in ("val_fraction", "test_fraction"):
            v = getattr(self, f)
            if not (0.0 <= float(v) < 1.0):
                raise DatasetError(f"{f.replace('_', ' ')} must be in [0, 1), got {v}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise DatasetError(f"validation + test fractions must leave rows for training "
                               f"(got {self.val_fraction} + {self.test_fraction})")
        if self.split_col and (self.val_fraction or self.test_fraction):
            raise DatasetError("give either a split column or split fractions, not both")
        if self.image_size is not None:
            h, w = self.image_size
            if int(h) < 1 or int(w) < 1:
                raise DatasetError(f"image size must be positive, got {h}x{w}")
            object.__setattr__(self, "image_size", (int(h), int(w)))
        if self.image_col and "image_col" not in reader.uses:
            where = " or ".join(r.title for r in READERS.values() if "image_col" in r.uses)
            raise DatasetError(f"an image column is read from {where} files only, not format '{self.format}'")
        if self.chunk_chars is not None and int(self.chunk_chars) < 1:
            raise DatasetError(f"chunk size must be at least 1 character, got {self.chunk_chars}")

    @property
    def kind(self) -> str:
        return "image" if self.image_col else READERS[self.format].kind

    @property
    def seeded_split(self) -> bool:
        return bool(self.val_fraction or self.test_fraction)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if self.image_size is not None:
            d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ColumnMapping":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if kw.get("image_size") is not None:
            kw["image_size"] = tuple(kw["image_size"])
        return cls(**kw)


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """'8' -> (8, 8); '32x24' -> (32, 24) (height x width)."""
    if text is None or text == "":
        return None
    parts = str(text).lower().split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise DatasetError(f"image size '{text}' is not N or HxW") from None
    if len(nums) == 1:
        return nums[0], nums[0]
    if len(nums) == 2:
        return nums[0], nums[1]
    raise DatasetError(f"image size '{text}' is not N or HxW")
