"""Killed writers leave no temp file behind for good (issue 26, item 12).

A real `relman` process is held at a named point (`relman.context.hold_here`: its temp file
or folder is complete, not yet renamed) and killed with SIGKILL there. The catalog is
unchanged, the temp file is there (the defect, reproduced), and then: `relman gc` removes a
killed bundle import's scratch folder, and the next export or archive to the same folder
removes the temp files of the writer that died. `relman verify` is clean afterwards."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

import pytest

from conftest import RELMAN, relman_subprocess_env
from test_hostile_inputs import snapshot, tiny_st

HELD_WITHIN_S = 120.0


def held_relman(catalog_path: Path, args: list[str], point: str, tmp_path: Path) -> subprocess.Popen:
    """Start `relman ARGS` and return once it says it is held at `point` (read from its stderr)."""
    from relman.jobs.testing import HoldPoint

    hold = HoldPoint(None, point, tmp_path)  # never released: the test kills the process there
    env = hold.env(relman_subprocess_env())
    proc = subprocess.Popen(RELMAN + ["--catalog", str(catalog_path), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + HELD_WITHIN_S
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            line = proc.stderr.readline()
            if line.strip() == hold.message():
                return proc
            if not line:  # it ended without reaching the point
                break
            seen.append(line)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"relman {' '.join(args)} did not reach {point}: rc={proc.returncode} {''.join(seen)}{err}{out}")


def kill9(proc: subprocess.Popen) -> None:
    proc.kill()  # SIGKILL: no finally block, no atexit
    proc.communicate()
    assert proc.returncode == -9


@pytest.fixture(autouse=True)
def signing_key(tmp_path, monkeypatch):
    from relman.release import keys

    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "keys"))
    keys.create_key("lab")


def verify_clean(run_cli) -> None:
    r = run_cli("verify")
    assert r.exit_code == 0, r.output


def one_version(catalog, tmp_path: Path):
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "bert"}')
    return catalog.add_version("tiny", {"model.safetensors": tiny_st(tmp_path / "w.safetensors"),
                                        "config.json": cfg}, format="hf")


def test_gc_and_a_retry_remove_a_killed_bundle_imports_scratch(catalog, catalog_path, tmp_path, run_cli):
    from relman.catalog import open_catalog
    from relman.release import bundle

    source = open_catalog(tmp_path / "source")
    try:
        v = one_version(source, tmp_path)
        b = bundle.export_bundle(source, v.id, tmp_path / "b.relman")["path"]
    finally:
        source.close()
    before = snapshot(catalog)
    for attempt in ("gc", "retry"):
        kill9(held_relman(catalog_path, ["import-bundle", b], "import-bundle.extracted", tmp_path))
        left = [p for p in (catalog_path / "tmp").iterdir() if p.name.startswith("bundle-")]
        assert len(left) == 1 and any(f.is_file() for f in left[0].rglob("*")), left  # the leftover, reproduced
        assert snapshot(catalog) == before
        if attempt == "gc":
            r = run_cli("gc")
            assert r.exit_code == 0 and "1 scratch folders of killed bundle imports" in r.output, r.output
            assert snapshot(catalog) == before  # only the scratch went
        else:
            r = run_cli("import-bundle", b)
            assert r.exit_code == 0 and "imported tiny@" in r.output, r.output
        assert not left[0].exists()
        verify_clean(run_cli)
    assert not [p for p in (catalog_path / "tmp").iterdir() if p.name.startswith("bundle-")]


@pytest.mark.parametrize("how,point", [("bundle", "export.bundle-written"), ("hf", "export.folder-written")])
def test_the_next_export_removes_a_killed_exports_temp_file(catalog, catalog_path, tmp_path, run_cli, how, point):
    v = one_version(catalog, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    args = ["export", v.ref, "-o", str(out / "b.relman")] if how == "bundle" else \
        ["export", v.ref, str(out / "folder"), "--format", "hf"]
    (out / ".someone-elses.tmp").write_text("not relman's")  # a name of another pattern stays
    before = snapshot(catalog)
    proc = held_relman(catalog_path, args, point, tmp_path)
    pid = proc.pid
    kill9(proc)
    stale = [p for p in out.iterdir() if p.name.endswith(".tmp") and f".{pid}-" in p.name]
    assert len(stale) == 1, list(out.iterdir())  # the leftover, reproduced
    assert snapshot(catalog) == before
    again = ["export", v.ref, "-o", str(out / "b2.relman")] if how == "bundle" else \
        ["export", v.ref, str(out / "folder2"), "--format", "hf"]
    r = run_cli(*again)
    assert r.exit_code == 0, r.output
    assert not stale[0].exists()
    written = "b2.relman" if how == "bundle" else "folder2"
    assert sorted(p.name for p in out.iterdir()) == [".someone-elses.tmp", written]
    verify_clean(run_cli)


def test_the_next_archive_removes_a_killed_archives_part_file(catalog, catalog_path, tmp_path, run_cli):
    v = one_version(catalog, tmp_path)
    arch = tmp_path / "archive"
    before = snapshot(catalog)
    proc = held_relman(catalog_path, ["archive", v.ref, "--to", str(arch)], "archive.blob-copied", tmp_path)
    pid = proc.pid
    kill9(proc)
    parts = [p for p in arch.rglob("*.part") if p.name.endswith(f".{pid}.part")]
    assert len(parts) == 1, list(arch.rglob("*"))  # the leftover, reproduced
    assert snapshot(catalog) == before
    r = run_cli("archive", v.ref, "--to", str(arch))
    assert r.exit_code == 0 and "archived tiny@" in r.output, r.output
    assert not list(arch.rglob("*.part")) and not list(arch.rglob(".*.tmp"))
    verify_clean(run_cli)
    r = run_cli("restore", v.ref)
    assert r.exit_code == 0, r.output
    verify_clean(run_cli)


def test_gc_removes_a_day_old_scratch_folder_named_before_the_pid(catalog, catalog_path, run_cli):
    """Folders that killed imports of earlier versions left (tmp/bundle-<random>, no PID)."""
    old, new = catalog_path / "tmp" / "bundle-k2j4h5g6", catalog_path / "tmp" / "bundle-a1b2c3d4"
    for p in (old, new):
        p.mkdir(parents=True)
        (p / "artifacts").mkdir()
        (p / "artifacts" / "w.bin").write_bytes(b"x" * 1000)
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    r = run_cli("gc")
    assert r.exit_code == 0 and "1 scratch folders" in r.output, r.output
    assert not old.exists() and new.exists()


def test_a_live_writers_temp_file_is_kept(tmp_path):
    from relman.fsutil import remove_stale_temp

    live = subprocess.Popen(["sleep", "60"])
    try:
        mine = tmp_path / f".a.{os.getpid()}-0123abcd.tmp"
        theirs = tmp_path / f".b.{live.pid}.part"
        other = tmp_path / ".c.notapid.tmp"
        for p in (mine, theirs, other):
            p.write_text("x")
        assert remove_stale_temp(tmp_path) == []
    finally:
        live.kill()
        live.wait()
    assert remove_stale_temp(tmp_path) == [theirs] and mine.exists() and other.exists()
