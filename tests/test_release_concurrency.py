"""Two real processes approving and promoting on one catalog at the same moment: every
change lands exactly once, no audit event is lost, and the chain still verifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, sys
from pathlib import Path
from relman.catalog import open_catalog
from relman.app import release
from relman.errors import RelmanError

catalog_path, name, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
cat = open_catalog(catalog_path, create=False)
ids = json.loads((folder / "ids.json").read_text())
print("ready", flush=True)  # start barrier, so both really run at once: block until told to go
if sys.stdin.readline().strip() != "go":
    sys.exit("no go signal")
done = {"approve": 0, "promote": 0, "rollout": 0, "refused": []}
for vid in ids:
    release.approve(cat, vid, "staging", by=name, comment="concurrent")
    done["approve"] += 1
    try:
        release.promote(cat, vid, "candidate", why=name, who=name)
        done["promote"] += 1
    except RelmanError as e:
        done["refused"].append(str(e))
# both race to put the last version into staging and step its canary
try:
    release.promote(cat, ids[-1], "staging", why=name, who=name)
    done["promote"] += 1
except RelmanError as e:
    done["refused"].append(str(e))
for share in (5, 25, 50):
    release.rollout(cat, ids[-1], share, who=name)
    done["rollout"] += 1
print(json.dumps(done))
"""


def test_two_processes_promote_and_approve_at_once(catalog, catalog_path, tiny_bert, tmp_path):
    from relman.app import release
    from relman.app.models import import_model
    from relman.release.audit import diagnose

    first = import_model(catalog, tiny_bert, "cc")
    files = {a["path"]: catalog.store.path(a["sha256"]) for a in catalog.artifacts(first.id)}
    ids = [first.id] + [catalog.add_version("cc", files, format="hf", task="text-classification").id
                        for _ in range(7)]
    # forward only, so a late "→ candidate" cannot pull the staging version back
    release.set_policy(catalog, "cc", {"transitions": {"draft": ["candidate"], "candidate": ["staging"],
                                                       "staging": ["production"]}})
    serving = tmp_path / "serving"
    serving.mkdir()
    release.set_channels_dir(catalog, serving)
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    n_before = catalog.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(catalog_path), name, str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for name in ("alice", "bob")]
    for p in procs:  # each says "ready" once its catalog is open (an empty line: it died first)
        assert p.stdout.readline().strip() == "ready", p.communicate()[1]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    # every version approved by both, promoted exactly once; the loser was told why
    assert sum(r["approve"] for r in results) == 2 * len(ids)
    assert sum(r["promote"] for r in results) == len(ids) + 1
    refusals = [msg for r in results for msg in r["refused"]]
    assert len(refusals) == len(ids) + 1
    assert all("already in" in m or "does not allow staging → candidate" in m for m in refusals), refusals
    assert sum(r["rollout"] for r in results) == 6
    # nothing lost: one event per successful change, in one unbroken chain
    events = catalog.query("SELECT seq, kind FROM events WHERE seq > ? ORDER BY seq", [n_before])
    kinds = [e["kind"] for e in events]
    assert kinds.count("approve") == 2 * len(ids)
    assert kinds.count("promote") == len(ids) + 1
    assert kinds.count("rollout") == 6
    assert len(events) == 2 * len(ids) + len(ids) + 1 + 6
    assert [e["seq"] for e in events] == list(range(n_before + 1, n_before + 1 + len(events)))
    assert catalog.verify_audit() == [] and diagnose(catalog) == []
    assert catalog.conn.execute("SELECT COUNT(*) FROM transitions").fetchone()[0] == len(ids) + 1
    assert catalog.conn.execute("SELECT COUNT(*) FROM approvals").fetchone()[0] == 2 * len(ids)
    assert [v.phase for v in catalog.versions("cc")] == ["candidate"] * (len(ids) - 1) + ["staging"]
    # the channels manifest both wrote is whole, and no temp file was left behind
    manifest = json.loads((serving / "channels.json").read_text())
    assert manifest["models"]["cc"]["canary"]["version"] == catalog.get_version(ids[-1]).version
    assert sorted(p.name for p in serving.iterdir()) == ["channels.json"]
