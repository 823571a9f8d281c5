"""How fast datasets register and load (rows/s), per format.

Run: .venv/bin/python benchmarks/bench_datasets.py [--rows 100000] [--images 2000]
Prints one line per format: register time (parse + checks + hashing + commit) and
load time (read back from the blob store with the stored mapping), each as rows/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000, help="rows of the text datasets")
    ap.add_argument("--images", type=int, default=1797, help="images of the image folder (digits, repeated)")
    args = ap.parse_args()

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from relman.app.datasets import load_dataset, register_dataset
    from relman.catalog import open_catalog
    from relman.data import demo

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cat = open_catalog(tmp / "catalog")
        rows = demo.sentiment_rows(args.rows, seed=0)
        csv_path = demo.sentiment_csv(tmp / "s.csv", n=args.rows)
        jsonl_path = tmp / "s.jsonl"
        jsonl_path.write_text("".join(json.dumps({"text": t, "label": l, "group": g}) + "\n" for t, l, g in rows),
                              encoding="utf-8")
        pq_path = tmp / "s.parquet"
        pq.write_table(pa.table({"text": [r[0] for r in rows], "label": [r[1] for r in rows],
                                 "group": [r[2] for r in rows]}), pq_path)
        text_path = demo.lm_text(tmp / "t.txt", n=args.rows)
        npz_path = demo.write_digits_npz(tmp / "d.npz")
        images, labels = demo._digit_arrays()
        reps = -(-args.images // len(images))
        big = np.concatenate([images] * reps)[:args.images]
        big_y = np.concatenate([labels] * reps)[:args.images]
        folder = tmp / "folder"
        from PIL import Image

        for i, (img, y) in enumerate(zip(big, big_y)):
            (folder / str(y)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[:, :, 0], mode="L").save(folder / str(y) / f"{i:06d}.png")

        cases = [("csv", csv_path, {"group_col": "group"}), ("jsonl", jsonl_path, {"group_col": "group"}),
                 ("parquet", pq_path, {"group_col": "group"}), ("text", text_path, {}),
                 ("npz", npz_path, {"x_key": "images", "y_key": "labels"}), ("images", folder, {})]
        print(f"{'format':<8} {'rows':>8} {'register s':>11} {'rows/s':>10} {'load s':>8} {'rows/s':>10}")
        for fmt, path, kw in cases:
            t0 = time.perf_counter()
            row = register_dataset(cat, path, fmt, **kw)
            t1 = time.perf_counter()
            ds = load_dataset(cat, fmt)
            t2 = time.perf_counter()
            n = row["n_rows"]
            assert len(ds) == n
            print(f"{fmt:<8} {n:>8} {t1 - t0:>11.3f} {n / (t1 - t0):>10.0f} {t2 - t1:>8.3f} {n / (t2 - t1):>10.0f}")
        cat.close()


if __name__ == "__main__":
    main()
