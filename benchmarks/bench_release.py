"""Release workflow costs: audit-chain verification, gate evaluation, promotion, and signed
bundle export/import throughput.

Run: .venv/bin/python benchmarks/bench_release.py [--events 20000] [--mb 200]
Prints: events/s for `diagnose` (the check behind `relman audit verify`) on a log of N
events; milliseconds per gate evaluation and per approve+promote round; MB/s for exporting
and importing (verify + store) a bundle whose weights file is --mb megabytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=20_000, help="audit events to verify")
    ap.add_argument("--mb", type=int, default=200, help="size of the bundled weights file in MB")
    ap.add_argument("--rounds", type=int, default=50, help="approve+promote rounds")
    args = ap.parse_args()

    from relman.app import bundles, release
    from relman.catalog import Metric, open_catalog
    from relman.catalog import integrity
    from relman.catalog.catalog import utcnow
    from relman.release.audit import diagnose

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["RELMAN_KEYS_DIR"] = str(tmp / "keys")
        cat = open_catalog(tmp / "cat")
        with cat.transaction():
            for i in range(args.events):
                integrity.commit_event(cat.db, at=utcnow(), actor="bench", kind="bench", model="m", version="1.0.0",
                                       payload={"i": i, "note": "x" * 40})
        t = time.perf_counter()
        assert diagnose(cat) == []
        dt = time.perf_counter() - t
        print(f"audit verify: {args.events} events in {dt:.2f} s = {args.events / dt:,.0f} events/s")

        weights = tmp / "model.safetensors"
        with open(weights, "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1 << 20))
        cfg = tmp / "config.json"
        cfg.write_text('{"architectures": ["BertModel"]}')
        v = cat.add_version("m", {"model.safetensors": weights, "config.json": cfg}, format="hf",
                            task="feature-extraction")
        cat.add_metrics(v.id, [Metric("q", "accuracy", 0.9), Metric("lat", "latency_p95_ms", 5.0)])
        release.set_policy(cat, "m", {"gates": {"candidate": ["accuracy >= 0.5", "latency_p95_ms <= 10"]},
                                      "verify_artifacts": []})
        t = time.perf_counter()
        for _ in range(200):
            release.gates(cat, v, "candidate")
        print(f"gate evaluation (2 rules + approvals): {(time.perf_counter() - t) / 200 * 1000:.2f} ms")

        release.set_policy(cat, "m", {"gates": {"candidate": ["approvals >= 1"]}, "verify_artifacts": []})
        files = {"config.json": cfg}
        ids = [cat.add_version("m", files, format="hf", task="feature-extraction").id for _ in range(args.rounds)]
        t = time.perf_counter()
        for vid in ids:
            release.approve(cat, vid, "candidate", by="bench")
            release.promote(cat, vid, "candidate", why="bench")
        print(f"approve + promote: {(time.perf_counter() - t) / args.rounds * 1000:.1f} ms per round")

        t = time.perf_counter()
        release.set_policy(cat, "m", {"verify_artifacts": ["staging"]})
        from relman.release.gates import check_artifacts

        check_artifacts(cat, v.id)
        dt = time.perf_counter() - t
        print(f"artifact re-hash before promotion: {args.mb / dt:,.0f} MB/s")

        bundles.create_key("bench")
        t = time.perf_counter()
        res = bundles.export_bundle(cat, v, tmp / "b.relman")
        dt = time.perf_counter() - t
        print(f"bundle export ({res['bytes'] / 1e6:,.0f} MB): {dt:.2f} s = {res['bytes'] / 1e6 / dt:,.0f} MB/s")
        other = open_catalog(tmp / "other")
        t = time.perf_counter()
        bundles.import_bundle(other, tmp / "b.relman")
        dt = time.perf_counter() - t
        print(f"bundle import (verify signature + checksums, store): {dt:.2f} s = "
              f"{res['bytes'] / 1e6 / dt:,.0f} MB/s")


if __name__ == "__main__":
    main()
