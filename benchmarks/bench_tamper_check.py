"""How long the tamper check on the gate path takes (`integrity.check_state`: hash chain,
checkpoint, every tracked row against its record) and what committing rows + signing a
checkpoint adds to each write, on a catalog of N versions with M metrics each.

    python benchmarks/bench_tamper_check.py [N] [M]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


def main(n: int = 200, m: int = 20) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="relman-bench-"))
    os.environ.setdefault("RELMAN_KEYS_DIR", str(tmp / "keys"))
    from relman.catalog import Metric, open_catalog
    from relman.catalog.integrity import check_state

    cat = open_catalog(tmp / "cat")
    f = tmp / "w.bin"
    f.write_bytes(b"x" * 64)
    t0 = time.perf_counter()
    for _ in range(n):
        v = cat.add_version("bench", {"w.bin": f}, format="raw")
        cat.add_metrics(v.id, [Metric("quality", f"m{j}", j / m, {"device": "cpu"}) for j in range(m)])
    per_write = (time.perf_counter() - t0) / (2 * n)
    events = cat.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    times = []
    for _ in range(5):
        t = time.perf_counter()
        problems, _ = check_state(cat)
        times.append(time.perf_counter() - t)
    assert problems == [], problems
    times.sort()
    print(f"{n} versions x {m} metrics ({events} events, {n * (m + 2)} tracked rows): "
          f"check_state median {times[2] * 1000:.1f} ms (min {times[0] * 1000:.1f}); "
          f"mean write transaction {per_write * 1000:.1f} ms")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
