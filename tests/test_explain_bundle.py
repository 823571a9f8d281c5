"""Bundles carry a version's stored attributions (issue 27, item 4): exported beside the files,
listed and hashed in the signed manifest, checked on import; a swapped attributions member
refuses the whole import and leaves the target catalog as it was."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from relman.errors import BundleError

pytestmark = pytest.mark.heavy  # imports a model, runs the explain job (Captum)


@pytest.fixture
def explained(catalog, tiny_bert, tmp_path, monkeypatch):
    from relman.app import bundles
    from relman.app.datasets import register_demo_sentiment
    from relman.app.explain import plan_explain
    from relman.app.models import import_model
    from relman.evaluate.explain import job
    from relman.jobs.context import JobContext

    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "keys"))
    v = import_model(catalog, tiny_bert, "sent")
    register_demo_sentiment(catalog, "sentiment", n=12)
    ctx = JobContext(catalog, device="cpu")
    try:
        job.run(plan_explain(catalog, v.ref, "sentiment", examples=2, method="occlusion"), ctx)
    finally:
        ctx.cleanup()
    bundles.create_key("lab-a")
    return catalog, v, Path(bundles.export_bundle(catalog, v, tmp_path / "v.relman")["path"])


def members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tf:
        return [(m, tf.extractfile(m).read()) for m in tf.getmembers()]


def test_a_bundle_carries_the_attributions_and_import_restores_them(explained, tmp_path):
    from relman.app.bundles import import_bundle
    from relman.app.explain import latest_attributions
    from relman.catalog import open_catalog

    cat, v, path = explained
    names = [m.name for m, _ in members(path)]
    manifest = json.loads(members(path)[0][1])
    [entry] = manifest["attributions"]
    assert entry["path"] in names and entry["method"] == "occlusion"
    with open_catalog(tmp_path / "target") as target:
        res = import_bundle(target, path)
        assert res["attributions"] == 1
        doc = latest_attributions(target, res["id"])
        assert doc["examples"] == latest_attributions(cat, v.id)["examples"]
        assert target.verify_store() == [] and target.orphan_blobs() == []


def test_a_swapped_attributions_member_is_refused(explained, tmp_path):
    from relman.app.bundles import import_bundle
    from relman.catalog import open_catalog

    _, _, path = explained
    items = members(path)
    i = next(i for i, (m, _) in enumerate(items) if m.name.startswith("evaluations/"))
    data = bytearray(items[i][1])  # one digit of a feature's score changed: same size, other bytes
    at = data.index(b'"score":') + len(b'"score":')
    at += data[at:at + 1] == b"-"
    data[at] = ord("7") if data[at] != ord("7") else ord("3")
    json.loads(bytes(data))  # still a valid document: only the hash can tell
    items[i] = (items[i][0], bytes(data))
    bad = tmp_path / "bad.relman"
    with tarfile.open(bad, "w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in items:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with open_catalog(tmp_path / "target") as target:
        before = target.conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0]
        with pytest.raises(BundleError, match=r"evaluations/.*does not match its sha256"):
            import_bundle(target, bad)
        assert target.conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0] == before
        assert target.conn.execute("SELECT COUNT(*) FROM evaluation_artifacts").fetchone()[0] == 0
