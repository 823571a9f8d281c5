"""A 1 GiB model on the release board: the GUI thread never hashes it and never stalls.

The model is a real 1 GiB .safetensors file (sparse on the source side; its header declares
one 2^29-element F16 tensor), imported by the real import use case in test setup (that
hashes and copies it, on purpose outside the window). With the window up, every blob hash
in this process is recorded with its thread (wrapping `sha256_file` and `put_file`). The
test selects the version on the board (gate badge computed), opens the promotion (gate
report in the dialog), promotes it to staging (the policy re-hashes artifacts there, so it
runs as a "promote" job in a worker process) and checks, with a 10 ms QTimer probe on the
main thread, that the longest gap between firings stays under 100 ms, that nothing was
hashed on the GUI thread, and that the worker really verified the gigabyte.

The gap that is asserted excludes the time the main thread waited for a CPU while runnable
(Linux run-queue wait): on a 2-core box shared with other work that wait alone can exceed
100 ms, and it says nothing about this code. Both figures are printed; on an idle machine
they agree.
"""

from __future__ import annotations

import gc
import json
import shutil
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

from ui_support import StallProbe  # noqa: E402

pytestmark = pytest.mark.heavy  # a worker process hashes a gigabyte

GIB = 1 << 30
GAP_LIMIT_S = 0.100


def sparse_safetensors(path: Path, nbytes: int = GIB) -> Path:
    """A valid .safetensors file of `nbytes` tensor data (zeros, not written: a sparse file)."""
    header = json.dumps({"weight": {"dtype": "F16", "shape": [nbytes // 2], "data_offsets": [0, nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + nbytes)
    return path


class HashRecorder:
    """Wraps every function that hashes blob bytes; records (thread name, what)."""

    def __init__(self, monkeypatch: Any) -> None:
        from relman.catalog import store

        self.calls: list[tuple[str, str]] = []
        real_sha, real_put = store.sha256_file, store.BlobStore.put_file

        def sha256_file(path: Path) -> tuple[str, int]:
            self.calls.append((threading.current_thread().name, f"sha256_file {path}"))
            return real_sha(path)

        def put_file(store_self: Any, src: Path, on_new: Any = None, on_bytes: Any = None) -> Any:
            self.calls.append((threading.current_thread().name, f"put_file {src}"))
            return real_put(store_self, src, on_new, on_bytes)

        monkeypatch.setattr(store, "sha256_file", sha256_file)
        monkeypatch.setattr(store.BlobStore, "put_file", put_file)

    def on_main_thread(self) -> list[str]:
        main = threading.main_thread().name
        return [what for thread, what in self.calls if thread == main]


def link_into_store(monkeypatch: Any) -> None:
    """Setup only: store blobs by hard-linking the (sparse) source after hashing it, instead of
    copying a gigabyte of zeros (tens of seconds of disk writes on a busy CI box). The stored
    blob is byte for byte what a copy would be; everything else is the real import."""
    import os
    import stat

    from relman.catalog import store

    def put_file(self: Any, src: Path, on_new: Any = None, on_bytes: Any = None) -> tuple[str, int, bool]:
        sha, size = store.sha256_file(src)
        final = self.path(sha)
        if final.is_file():
            return sha, size, False
        if on_new is not None:
            on_new(sha)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, final)
        os.chmod(final, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        return sha, size, True

    monkeypatch.setattr(store.BlobStore, "put_file", put_file)


@pytest.fixture
def big_candidate(catalog: Any, tmp_path: Path):
    """A 1 GiB model, imported (hashed and stored) here in setup, approved for staging and
    promoted to candidate; its blob is removed afterwards (1 GiB of disk, though sparse)."""
    from relman.app.models import import_model
    from relman.app.release import approve, promote

    src = sparse_safetensors(tmp_path / "big.safetensors")
    t0 = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        link_into_store(mp)
        v = import_model(catalog, src, "big-model")
    took = time.perf_counter() - t0
    src.unlink()
    print(f"\nsetup: imported a {v.size_bytes / GIB:.2f} GiB model in {took:.1f} s (hashed, linked into the store)")
    promote(catalog, v.ref, "candidate", why="setup")
    approve(catalog, v.ref, "staging", by="reviewer", comment="setup")
    yield catalog.get_version(v.id)
    shutil.rmtree(catalog.root / "objects", ignore_errors=True)


def test_a_1gib_model_on_the_board_is_never_hashed_on_the_gui_thread(qtbot, catalog, catalog_path, tmp_path,
                                                                     big_candidate, monkeypatch):
    from relman.ui.qt_promote import PromoteDialog
    from relman.ui.qt_main import MainWindow

    v = big_candidate
    hashes = HashRecorder(monkeypatch)
    seen: list[Any] = []

    def accept(dialog: Any) -> int:
        seen.append(dialog)
        dialog.reason.setPlainText("big model to staging")
        dialog.accept()
        return dialog.result()

    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=True, cpu_slots=1, poll_ms=200, runner_ms=150)
    qtbot.addWidget(w)
    w.show()
    w.dialog_runner = accept
    qtbot.wait(300)  # the window's first paint and polish are start-up, not what this measures
    gc.collect()
    gc.freeze()  # as relman.ui.app.open_window does: keep full GC passes short
    probe = StallProbe()
    try:
        probe.start()
        probe.mark("show the board")
        board = w.show_view("board")
        qtbot.wait(50)
        probe.mark("select the 1 GiB version")
        assert board.select_version(v.id)  # a user clicking the card
        _, card = board.find_card(v.id)
        assert card.gate_checked and "staging" in card.badge.text(), card.badge.text()
        assert w.selected_ids == [v.id]
        for i in range(3):  # the catalog changes (a new metric, say): the board is rebuilt
            probe.mark(f"rebuild {i + 1}")
            w.refresh(force=True)
            qtbot.wait(100)
        probe.mark("idle")
        qtbot.wait(300)
        selected_gap, selected_own = probe.stop(), probe.worst_own()
        assert hashes.on_main_thread() == [], hashes.on_main_thread()
        assert selected_own < GAP_LIMIT_S, f"main thread stalled: {probe.worst_where()}"
        probe.timer.start()
        # promote from the board: the dialog shows the gate report, the promotion is a job
        probe.mark("promote (dialog, queue the job)")
        board.promote_btn.click()
        probe.mark("the promotion job runs")
        dialog = seen[-1]
        assert isinstance(dialog, PromoteDialog) and dialog.passed is True
        rules = {dialog.rules_table.item(r, 1).text(): dialog.rules_table.item(r, 0).text()
                 for r in range(dialog.rules_table.rowCount())}
        assert rules.get("artifacts intact") == "⧗ pending", rules
        assert w.busy()
        _, card = board.find_card(v.id)  # the card says a promotion is under way
        assert "promoting" in card.badge.text(), card.badge.text()
        qtbot.waitUntil(lambda: not w.busy(), timeout=180_000)
        worst = probe.stop()
    finally:
        gc.unfreeze()
        w.shutdown()
    own = probe.worst_own()
    print(f"longest main-thread gap (wall / own = wall minus run-queue wait): {selected_gap * 1000:.1f} / "
          f"{selected_own * 1000:.1f} ms while selected on the board and rebuilt; {worst * 1000:.1f} / "
          f"{own * 1000:.1f} ms overall incl. the 1 GiB promotion job ({len(probe.gaps)} probes); longest: "
          f"{probe.worst_where()}")
    assert w.messages[-1] == ("info", f"{v.ref} → staging"), w.messages[-1]
    assert catalog.get_version(v.id).phase == "staging"
    job = catalog.query("SELECT kind, status FROM jobs ORDER BY id DESC")[0]
    assert job["kind"] == "promote" and job["status"] == "succeeded"
    report = json.loads(catalog.query("SELECT gate_report FROM transitions WHERE version_id = ? ORDER BY id DESC",
                                      [v.id])[0]["gate_report"])
    integrity = next(r for r in report["rules"] if r["rule"] == "artifacts intact")
    assert integrity["status"] == "pass" and integrity["inputs"]["bytes"] >= GIB  # the worker hashed 1 GiB
    assert hashes.on_main_thread() == [], hashes.on_main_thread()
    assert own < GAP_LIMIT_S, f"main thread stalled: {probe.worst_where()}"
