"""Parquet (pyarrow) -> text Dataset. Column types are checked from the schema first."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

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
    schema = pf.schema_arrow
    require_columns(schema.names, mapping, where)
    text_type = schema.field(mapping.text_col).type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)
            or pa.types.is_null(text_type)):
        raise DatasetError(f"{where}: text column '{mapping.text_col}' has type {text_type}, not string")
    wanted = list(dict.fromkeys(c for c in (mapping.text_col, mapping.label_col, mapping.group_col,
                                            mapping.split_col) if c))
    try:
        table = pf.read(columns=wanted)
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{where}: cannot read ({str(e).splitlines()[0]})") from None
    columns = {c: table.column(c).to_pylist() for c in wanted}
    return columns_to_dataset(name, columns, table.num_rows, mapping, labels, where=where,
                              row_name=lambda i: f"row {i + 1}")
