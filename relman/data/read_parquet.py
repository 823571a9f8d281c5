"""Parquet (pyarrow) -> text Dataset, or image Dataset when an image column is named.

Column types are checked from the schema before any row is read. An image column holds
encoded image bytes (PNG, JPEG, ...): a binary column, or a struct with a `bytes` field as
Hugging Face `datasets` writes its Image feature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from relman.data.dataset import Dataset
from relman.data.mapping import ColumnMapping
from relman.data.table import columns_to_dataset, require_columns
from relman.errors import DatasetError


def read_parquet(path: Path, mapping: ColumnMapping, *, name: str, labels: Sequence[str] | None = None,
                 where: str | None = None) -> Dataset:
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = where or Path(path).name
    if Path(path).stat().st_size == 0:
        raise DatasetError(f"{where}: file is empty")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{where}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    from relman.data.limits import max_dataset_bytes

    limit = max_dataset_bytes()  # the row groups' uncompressed size, from the footer alone
    total = sum(pf.metadata.row_group(i).total_byte_size for i in range(pf.metadata.num_row_groups))
    if total > limit:
        raise DatasetError(f"{where}: {total:,} bytes once decompressed, over the {limit:,}-byte cap "
                           "(RELMAN_MAX_DATASET_BYTES)")
    schema = pf.schema_arrow
    require_columns(schema.names, mapping, where)
    if mapping.image_col is None:
        text_type = schema.field(mapping.text_col).type
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)
                or pa.types.is_null(text_type)):
            raise DatasetError(f"{where}: text column '{mapping.text_col}' has type {text_type}, not string")
    else:
        _check_image_type(schema.field(mapping.image_col).type, where, mapping.image_col)
    wanted = list(dict.fromkeys(c for c in (mapping.text_col, mapping.image_col, mapping.label_col,
                                            mapping.group_col, mapping.split_col) if c))
    try:
        table = pf.read(columns=wanted)
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{where}: cannot read ({str(e).splitlines()[0]})") from None
    columns = {c: table.column(c).to_pylist() for c in wanted}
    images = None
    if mapping.image_col is not None and table.num_rows:
        from relman.data.read_images import decode_images

        sources = [(f"{where} row {i + 1}", _image_bytes(v, where, i, mapping.image_col))
                   for i, v in enumerate(columns.pop(mapping.image_col))]
        images = decode_images(sources, mapping.image_size)
        columns[mapping.image_col] = [None] * table.num_rows  # keeps the column named for the checks
    return columns_to_dataset(name, columns, table.num_rows, mapping, labels, where=where,
                              row_name=lambda i: f"row {i + 1}", images=images)


def _check_image_type(t: Any, where: str, column: str) -> None:
    import pyarrow as pa

    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return
    if pa.types.is_struct(t) and t.get_field_index("bytes") >= 0:
        return
    raise DatasetError(f"{where}: image column '{column}' has type {t}, not image bytes "
                       "(binary, or a struct with a 'bytes' field)")


def _image_bytes(value: Any, where: str, i: int, column: str) -> bytes:
    if isinstance(value, dict):
        value = value.get("bytes")
    if not value:
        raise DatasetError(f"{where} row {i + 1}: image column '{column}' is empty")
    return bytes(value)
