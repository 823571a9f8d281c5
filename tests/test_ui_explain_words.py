"""The Explain view shows words, not WordPiece pieces (issue 28 item 12): a word the tiny BERT's
vocabulary splits (`zorblat` → z ##o ##r ...) is shown once, coloured by the sum of its pieces'
attributions, with the pieces in its tooltip; and a legend says what red and blue mean. The
attributions are stored by the real explain job (occlusion) on a real catalog. pytest-qt."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

WORD = "zorblat"


@pytest.fixture
def explained_text(catalog, tiny_bert, tmp_path):
    from relman.app.datasets import register_dataset
    from relman.app.explain import plan_explain
    from relman.app.models import import_model
    from relman.evaluate.explain import job
    from relman.jobs.context import JobContext

    v = import_model(catalog, tiny_bert, "tb")
    csv = tmp_path / "words.csv"
    csv.write_text(f"text,label\nthe {WORD} film,positive\na {WORD} is good,negative\n", encoding="utf-8")
    register_dataset(catalog, csv, "words")
    ctx = JobContext(catalog, device="cpu")
    try:
        job.run(plan_explain(catalog, v.ref, "words", examples=2, method="occlusion"), ctx)
    finally:
        ctx.cleanup()
    return v


def _stored_example(catalog_path, version_id: int) -> dict:
    from relman.app.explain import explanation_pair
    from relman.catalog import open_catalog

    with open_catalog(catalog_path) as cat:
        return explanation_pair(cat, version_id)["version"]["examples"][0]


def test_explain_view_merges_word_pieces_and_shows_a_legend(qtbot, catalog_path, explained_text, tmp_path):
    from relman.ui.qt_explain import heat_color, shared_scale
    from relman.ui.qt_main import MainWindow

    stored = _stored_example(catalog_path, explained_text.id)
    names = [f["name"] for f in stored["features"]]
    assert any(n.startswith("##") for n in names), names  # the tokenizer really split the word
    start = names.index(WORD[0])
    pieces = stored["features"][start:start + 1 + sum(1 for n in names[start + 1:] if n.startswith("##"))]
    assert "".join(p["name"].removeprefix("##") for p in pieces) == WORD
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "g.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    try:
        w.set_selection([explained_text.id])
        view = w.show_view("explain")
        view.reload()
        qtbot.waitUntil(lambda: not view.loading and view.example_list.count() == 2, timeout=20000)
        view.example_list.setCurrentRow(0)
        shown = view.left.body.text()
        words = re.findall(r'<span style="background:(#[0-9a-f]{6})" title="([^"]*)">([^<]*)</span>', shown)
        assert [text for *_, text in words] in (["the", WORD, "film"], ["a", WORD, "is", "good"])  # words, no ##
        colour, title = next((c, t) for c, t, text in words if text == WORD)
        total = sum(p["score"] for p in pieces)
        assert float(title.split(" ", 1)[0]) == pytest.approx(total, abs=1e-4)  # the word's score: the sum
        assert colour == heat_color(total, shared_scale(stored))  # and its colour is the sum's
        assert all(p["name"] in title for p in pieces)  # the pieces stay readable on hover
        legend = view.legend
        assert legend.isVisible() and "red" in legend.text() and "blue" in legend.text()
        assert "supports the prediction" in legend.text() and "against" in legend.text()
    finally:
        w.shutdown()


def test_word_pieces_add_up_and_patches_pass_through():
    from relman.ui.qt_explain import display_features, merge_word_pieces, shared_scale

    feats = [{"name": "the", "score": 0.5}, {"name": "z", "score": 1.0}, {"name": "##or", "score": -3.0},
             {"name": "##bla", "score": 0.25}, {"name": "##t", "score": 0.25}, {"name": "##", "score": 0.1}]
    words = merge_word_pieces(feats)
    assert [(w["name"], w["score"]) for w in words] == [("the", 0.5), ("zorblat", -1.5), ("##", 0.1)]
    assert [n for n, _ in words[1]["pieces"]] == ["z", "##or", "##bla", "##t"]
    assert shared_scale({"score": 1.0, "features": feats}) == 1.5  # the scale of what is drawn: words
    image = {"grid": [1, 2], "features": [{"name": "##p0", "score": 1.0}, {"name": "##p1", "score": 2.0}]}
    assert display_features(image) == image["features"]
