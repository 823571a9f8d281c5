"""Dataset readers (CSV, JSONL, Parquet, image folders, NPZ, plain text) and demo data."""
