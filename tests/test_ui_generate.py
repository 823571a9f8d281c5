"""The Generate view, used as a user would: tick versions, write prompts with expected answers,
press Generate; the window's own runner runs the "generate" job in a worker process (never in
the GUI), and the view shows the answers side by side.

Planted signal: the trained LM answers most planted facts, its ONNX child must give the very
same answers (no cell marked as different, the same exact-match count), and a random-weight LM
must differ almost everywhere and match (almost) nothing."""

from __future__ import annotations


import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402

from recipe_support import compress_job as compress  # noqa: E402

pytestmark = pytest.mark.heavy
FACTS = 8


@pytest.fixture
def lm_versions(catalog, trained_lm_dir, tiny_gpt2):
    from relman.app.models import import_model

    parent = import_model(catalog, trained_lm_dir, "tlm", task="causal-lm")
    child = compress(catalog, parent.id, "onnx-export")
    noise = import_model(catalog, tiny_gpt2, "noise", task="causal-lm")
    return parent, child, noise


def _prompt_text() -> str:
    from relman.app.generation import format_prompt_lines
    from relman.modelio.trained_lm import planted_facts

    return format_prompt_lines([{"prompt": f"Q: {q}\nA:", "answer": a} for q, a in planted_facts()[:FACTS]])


def _tick(view, refs: set[str]) -> None:
    for i in range(view.versions.count()):
        item = view.versions.item(i)
        item.setCheckState(Qt.CheckState.Checked if item.text() in refs else Qt.CheckState.Unchecked)


def test_generate_view_runs_a_job_and_marks_answers_side_by_side(qtbot, catalog_path, lm_versions, tmp_path):
    from relman.ui.qt_main import MainWindow

    parent, child, noise = lm_versions
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "g.ini"), QSettings.Format.IniFormat),
                   run_jobs=True, poll_ms=250, runner_ms=200)
    qtbot.addWidget(w)
    w.show()
    try:
        w.set_selection([parent.id, child.id])
        view = w.show_view("generate")
        listed = {view.versions.item(i).text() for i in range(view.versions.count())}
        assert listed == {parent.ref, child.ref, noise.ref}  # the causal LMs only
        ticked = set(view.chosen_refs())
        assert ticked == {parent.ref, child.ref}  # the selection is ticked
        # nothing ticked: refused at once, nothing queued
        _tick(view, set())
        qtbot.mouseClick(view.run_button, Qt.MouseButton.LeftButton)
        assert w.messages[-1][0] == "error" and "choose at least one version" in w.messages[-1][1]
        assert w.catalog.conn.execute("SELECT COUNT(*) FROM jobs WHERE kind = 'generate'").fetchone()[0] == 0
        _tick(view, {parent.ref, child.ref, noise.ref})
        view.prompts.setPlainText(_prompt_text())
        view.max_tokens.setValue(6)
        with qtbot.waitSignal(view.results_shown, timeout=240_000):
            qtbot.mouseClick(view.run_button, Qt.MouseButton.LeftButton)
            assert not view.run_button.isEnabled()  # queued, not run here
        refs = [view.table.horizontalHeaderItem(2 + k).text().split("\n")[0] for k in range(3)]
        order = {r: k for k, r in enumerate(refs)}
        assert set(refs) == {parent.ref, child.ref, noise.ref}
        headers = {r: view.table.horizontalHeaderItem(2 + k).text() for r, k in order.items()}
        result = view.result
        em = {v["ref"]: v["exact_match"] for v in result["versions"]}
        assert em[parent.ref] >= 0.6 * FACTS and em[child.ref] == em[parent.ref]  # the trained LM's answers
        assert em[noise.ref] <= 1  # random weights: (almost) never the planted answer
        assert f"EM {em[parent.ref]}/{FACTS}" in headers[parent.ref] and "tok/s" in headers[parent.ref]
        assert "TTFT" in headers[child.ref]
        texts = {r: [view.cell(i, order[r]).text() for i in range(FACTS)] for r in refs}
        assert texts[child.ref] == texts[parent.ref]
        marks = {r: [view.cell(i, order[r]).data(Qt.ItemDataRole.UserRole)["differs"] for i in range(FACTS)]
                 for r in refs}
        first = refs[0]
        assert not any(marks[first])  # the reference column
        same_pair = {parent.ref, child.ref}
        if first in same_pair:
            other = (same_pair - {first}).pop()
            assert not any(marks[other])  # identical answers are not marked
        if first != noise.ref:
            assert sum(marks[noise.ref]) >= FACTS - 1  # random weights: different answers, marked
        assert all(t.startswith(("✓ ", "✗ ")) for t in texts[parent.ref])
        engines = {v["ref"]: v["engine"] for v in result["versions"]}
        assert engines[child.ref] == "relman-onnx-kv" and engines[parent.ref] == "torch"
    finally:
        w.shutdown()


def test_prompt_files_and_lines_round_trip(tmp_path):
    from relman.app.generation import exact_match, format_prompt_lines, parse_prompt_lines, read_prompt_file
    from relman.errors import EvaluationError

    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "Q: a?\\nA:", "answer": "blue"}\n\n{"question": "Hi"}\n', encoding="utf-8")
    items = read_prompt_file(f)
    assert items == [{"prompt": "Q: a?\nA:", "answer": "blue"}, {"prompt": "Hi"}]
    assert parse_prompt_lines(format_prompt_lines(items)) == items
    assert exact_match(" Blue.\nQ: next", "blue") and not exact_match(" blue green", "blue")
    f.write_text('{"answer": "x"}\n', encoding="utf-8")
    with pytest.raises(EvaluationError, match='line 1: no "prompt" string'):
        read_prompt_file(f)


def test_compare_offers_lm_metrics_for_a_causal_lm(qtbot, catalog, catalog_path, tmp_path):
    """Planted figures on three causal-LM versions: Compare puts the LM measures first, plots
    perplexity against size and against the paired time-to-first-token ratio, and finds the
    front with both lower-is-better (the slow, worse one is off it)."""
    from relman.catalog import Metric
    from relman.ui.qt_main import MainWindow

    f = tmp_path / "config.json"
    f.write_text("{}", encoding="utf-8")
    figures = {"1.0.0": (200.0, 0.75, 1.0, 900.0), "1.0.1": (210.0, 0.70, 0.6, 1500.0),
               "1.0.2": (260.0, 0.50, 1.4, 700.0)}  # perplexity, exact match, ttft ratio, tokens/s
    ids = {}
    for ver, (ppl, em, ttft, tps) in figures.items():
        v = catalog.add_version("lm", {"config.json": f}, format="hf", task="causal-lm", version=ver)
        catalog.add_metrics(v.id, [Metric("quality", "perplexity", ppl), Metric("generate", "exact_match", em),
                                   Metric("latency", "ttft_ratio_vs_parent", ttft),
                                   Metric("latency", "decode_tokens_per_s", tps),
                                   Metric("latency", "latency_p50_ms", 3.0)])
        ids[ver] = v.id
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "c.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    try:
        compare = w.show_view("compare")
        compare.set_model("lm")
        assert compare.size_panel.y_combo.currentText() == "perplexity"
        assert compare.latency_panel.x_combo.currentText() == "ttft_ratio_vs_parent"
        offered = [compare.latency_panel.y_combo.itemText(i) for i in range(compare.latency_panel.y_combo.count())]
        offered = [t for t in offered if t]  # the separators between groups (quality | speed | size)
        assert offered[:4] == ["perplexity", "exact_match", "ttft_ratio_vs_parent", "decode_tokens_per_s"]
        assert compare.latency_panel.points_shown == 3
        # lower perplexity and lower ttft ratio are both better: 1.0.2 (worse, slower) is dominated
        assert set(compare.latency_panel.front_ids) == {ids["1.0.0"], ids["1.0.1"]}
        compare.latency_panel.set_axes("decode_tokens_per_s", "exact_match")  # the user's pick
        assert compare.latency_panel.x_combo.currentText() == "decode_tokens_per_s"
        assert set(compare.latency_panel.front_ids) == {ids["1.0.0"], ids["1.0.1"]}
    finally:
        w.shutdown()
