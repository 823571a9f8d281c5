"""`relman diff A B`: what changed between two versions, found on planted changes.

The plant: a child of the tiny BERT whose one attention matrix is scaled by 1.5 (relative
change exactly 0.5, cosine 1), whose one FFN matrix has every other row zeroed (sparsity 0 ->
~0.5), and which gains one tensor; everything else bit-identical. The diff must name exactly
those, with those figures, most changed first; a structurally pruned child shows its reshaped
tensors and the surgery record in its config; bad input is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from relman.app.diff import diff_versions, queue_diff, render
from relman.app.models import import_model
from relman.errors import RelmanError

pytestmark = pytest.mark.heavy
SCALED = "bert.encoder.layer.0.attention.self.query.weight"
SPARSE = "bert.encoder.layer.1.intermediate.dense.weight"


def _planted_child(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    (weights,) = list(dest.glob("*.safetensors"))
    tensors = load_file(str(weights))
    assert SCALED in tensors and SPARSE in tensors, sorted(tensors)[:8]
    tensors[SCALED] = tensors[SCALED] * np.float32(1.5)
    sparse = tensors[SPARSE].copy()
    sparse[::2] = 0.0
    tensors[SPARSE] = sparse
    tensors["extra.bias"] = np.ones(4, dtype=np.float32)
    save_file(tensors, str(weights))
    return dest


@pytest.fixture
def planted(catalog, tiny_bert, tmp_path):
    parent = import_model(catalog, tiny_bert, "bert")
    child = import_model(catalog, _planted_child(tiny_bert, tmp_path / "child"), "bert")
    return parent, child


def test_the_diff_finds_exactly_the_planted_changes(catalog, planted):
    parent, child = planted
    res = diff_versions(catalog, parent.ref, child.ref)
    by_name = {t["name"]: t for t in res["tensors"]}
    changed = {t["name"] for t in res["tensors"] if t["status"] == "changed"}
    assert changed == {SCALED, SPARSE}
    assert by_name[SCALED]["relative_norm"] == pytest.approx(0.5, rel=1e-5)
    assert by_name[SCALED]["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert by_name[SPARSE]["sparsity_a"] < 0.01 and by_name[SPARSE]["sparsity_b"] >= 0.49
    assert by_name["extra.bias"]["status"] == "only_b"
    assert res["summary"]["unchanged"] == len(res["tensors"]) - 3 and res["summary"]["config_changes"] == 0
    ranked = [t["name"] for t in res["tensors"] if t["status"] == "changed"]
    first = max((SCALED, SPARSE), key=lambda n: by_name[n]["relative_norm"])
    assert ranked[0] == first  # the most changed first
    text = render(res)
    assert "2 tensors changed" in text and "1 only in" in text and SCALED in text
    same = diff_versions(catalog, parent.ref, parent.ref)
    assert same["summary"]["changed"] == 0 and same["summary"]["unchanged"] == len(same["tensors"])


def test_a_pruned_child_shows_its_reshaped_tensors_and_surgery(catalog, tiny_bert):
    from recipe_support import compress_job as compress

    parent = import_model(catalog, tiny_bert, "bert")
    child = compress(catalog, parent.id, "prune-structured", {"heads": 0.5, "ffn": 0.5, "epochs": 0})
    res = diff_versions(catalog, parent.ref, child.ref)
    reshaped = [t for t in res["tensors"] if t["status"] == "reshaped"]
    assert reshaped and all(t["shape_a"] != t["shape_b"] for t in reshaped)
    assert any("intermediate.dense" in t["name"] for t in reshaped)
    assert any(c["key"].startswith("relman_surgery") for c in res["config"])


def test_the_cli_prints_the_diff_and_refuses_bad_input_in_one_line(run_cli, catalog, planted, tmp_path):
    parent, child = planted
    catalog.close()
    out = run_cli("diff", parent.ref, child.ref, "--top", "1")
    assert out.exit_code == 0, out.output
    assert "2 tensors changed" in out.output and "more (--top 0 for all)" in out.output
    js = run_cli("diff", parent.ref, child.ref, "--json")
    assert json.loads(js.output)["summary"]["changed"] == 2
    bad = run_cli("diff", parent.ref, "nosuch@9.9.9")
    assert bad.exit_code != 0 and len(bad.output.strip().splitlines()) == 1


def test_a_corrupt_weight_file_is_a_one_line_error(tmp_path, tiny_bert):
    from relman.modelio.weight_diff import DiffError, diff_folders

    broken = shutil.copytree(tiny_bert, tmp_path / "broken")
    (weights,) = list(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(DiffError) as e:
        diff_folders(Path(tiny_bert), "hf", broken, "hf")
    assert "\n" not in str(e.value)
    with pytest.raises(RelmanError, match="cannot be compared"):
        diff_folders(Path(tiny_bert), "hf", broken, "torch-int8")


def test_the_diff_runs_as_a_job(catalog, planted):
    from relman.app.diff import diff_job, result_of
    from relman.jobs.context import JobContext

    parent, child = planted
    job_id = queue_diff(catalog, parent.ref, child.ref)
    row = catalog.query("SELECT kind, params FROM jobs WHERE id = ?", [job_id])[0]
    params = json.loads(row["params"]) if isinstance(row["params"], str) else row["params"]
    assert row["kind"] == "diff_versions" and params == {"a": parent.id, "b": child.id}
    ctx = JobContext(catalog)
    try:
        res = diff_job(params, ctx)
    finally:
        ctx.cleanup()
    assert res["summary"]["changed"] == 2 and result_of(catalog, job_id) is None  # the runner stores it


def test_the_diff_view_compares_a_selection_through_a_job(qtbot, catalog_path, planted, tmp_path):
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QSettings, Qt

    from relman.ui.qt_main import MainWindow

    parent, child = planted
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "d.ini"), QSettings.Format.IniFormat),
                   run_jobs=True, poll_ms=250, runner_ms=200)
    qtbot.addWidget(w)
    w.show()
    try:
        w.set_selection([parent.id, child.id])
        view = w.show_view("diff")
        assert (view.a.currentText(), view.b.currentText()) == (parent.ref, child.ref)
        with qtbot.waitSignal(view.results_shown, timeout=120_000):
            qtbot.mouseClick(view.run_button, Qt.MouseButton.LeftButton)
        assert set(view.row_names()) == {SCALED, SPARSE, "extra.bias"}  # unchanged ones hidden
        assert "2 tensors changed" in view.status.text()
        view.all.setChecked(True)
        assert len(view.row_names()) > 3
    finally:
        w.close()
