"""How long housekeeping takes on a catalog with many versions (issue 15).

Builds a catalog of N versions (each 4 small files: 2 shared across its model, 2 unique),
then times, each over R repeats (median, min-max):

- `disk_usage` (what `relman du` does: stat every blob + attribute by SQL),
- `catalog_footprint` + `space_status` (what the GUI status bar pays per refresh),
- `delete_plan` of one version (what the GUI's delete confirmation pays on its thread),
- a `gc` sweep with nothing to remove (mark of every reference + store listing), and one
  with 10 % of the blobs unreferenced (their versions deleted with release=False),
- `search` with a metric condition over all versions.

Usage: python benchmarks/bench_housekeeping.py [N_VERSIONS] [REPEATS]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relman.catalog import Metric, open_catalog  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float, float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), min(out), max(out)


def fmt(t: tuple[float, float, float]) -> str:
    return f"{t[0] * 1000:8.1f} ms  ({t[1] * 1000:.1f}-{t[2] * 1000:.1f})"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    from relman.app.disk import disk_usage, space_status
    from relman.app.housekeeping import delete_plan, delete_version
    from relman.app.search import search
    from relman.catalog import gc

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cat = open_catalog(root / "cat")
        src = root / "src"
        src.mkdir()
        t0 = time.perf_counter()
        refs = []
        for i in range(n):
            model = f"m{i % 20}"
            files = {}
            for j, shared in enumerate((True, True, False, False)):
                p = src / f"{i}-{j}.bin"
                p.write_bytes((f"{model}-{j}" if shared else f"{i}-{j}-{os.urandom(8).hex()}").encode() * 64)
                files[f"f{j}.bin"] = p
            v = cat.add_version(model, files, format="safetensors")
            cat.add_metrics(v.id, [Metric("quality", "accuracy", (i % 100) / 100)])
            refs.append(v.ref)
        build = time.perf_counter() - t0
        print(f"catalog of {n} versions, {len(list(cat.store.all_shas()))} blobs built in {build:.1f} s")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}")
        print("disk_usage (relman du)     ", fmt(timed(lambda: disk_usage(cat), repeats)))
        print("space_status (status bar)  ", fmt(timed(lambda: space_status(cat), repeats)))
        print("delete_plan (confirmation) ", fmt(timed(lambda: delete_plan(cat, refs[n // 2]), repeats)))
        print("gc sweep, nothing to remove", fmt(timed(lambda: gc.sweep(cat), repeats)))
        print("search accuracy>0.9        ", fmt(timed(lambda: search(cat, "accuracy>0.9"), repeats)))
        for ref in refs[: n // 10]:
            delete_version(cat, ref, why="bench", release=False)
        t0 = time.perf_counter()
        r = gc.sweep(cat)
        print(f"gc sweep removing {r['blobs']} blobs ({r['bytes']} bytes): {(time.perf_counter() - t0) * 1000:.1f} ms")
        cat.close()


if __name__ == "__main__":
    main()
