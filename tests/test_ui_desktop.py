"""The desktop app from a new user's chair (issue 17): a release without the terminal, dialogs
that offer what applies and keep their input, messages that do not block, Compare that
selects, a window that fits a laptop, and the Ray executor setting."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

from ui_support import accept_with, build_family  # noqa: E402


@pytest.fixture
def family(catalog, tiny_vit):
    return build_family(catalog, tiny_vit)


@pytest.fixture
def window(qtbot, catalog_path, family, tmp_path):
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


# -- item 3: everything a release needs, in the window ------------------------------------------------
def test_export_with_a_key_made_in_the_dialog_card_fields_and_the_full_audit_event(window, family, catalog,
                                                                                   tmp_path, monkeypatch):
    from relman.release.modelcard import card_fields
    from relman.ui.qt_dialogs import SUCCESS_COLOR
    from relman.ui.qt_export import CardDialog, ExportDialog

    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "keys"))
    base = family["base"]
    window.set_selection([base.id])
    out = tmp_path / "b.relman"
    seen: dict[str, Any] = {}

    def fill(d: Any) -> None:
        seen["dialog"] = d
        if isinstance(d, ExportDialog):
            assert d.key.count() == 0 and "New key" in d.no_key.text()  # no key yet: the dialog says how
            d.accept()  # refused inline, the path typed stays
            assert d.result() == 0 and "signing key" in d.error_label.text()
            d.path.setText(str(out))
            d.add_key("lab")  # what "New key…" does after asking the name
            assert d.key.currentText() == "lab" and d.error_label.text().startswith("created key lab")
            assert SUCCESS_COLOR in d.error_label.styleSheet()  # said as a success (green), not in the refusal red
        elif isinstance(d, CardDialog):
            d.set_field("intended_use", "Sorting handwritten digits in the lab; not for medical forms.")
            d.set_field("license", "apache-2.0")

    window.dialog_runner = accept_with(fill)
    window.actions_by_key["export"].trigger()
    assert (tmp_path / "keys" / "lab.key").exists() and (tmp_path / "keys" / "lab.p256.key").exists()  # both halves
    job = catalog.query("SELECT kind, params FROM jobs ORDER BY id DESC")[0]
    assert job["kind"] == "export_bundle" and '"key": "lab"' in job["params"]
    assert any("Created signing key lab" in text for _, text in window.messages)

    window.actions_by_key["card"].trigger()
    fields = card_fields(catalog, catalog.get_version(base.id))
    assert fields["intended_use"].startswith("Sorting handwritten digits") and fields["license"] == "apache-2.0"
    assert "intended use" in window.messages[-1][1]

    # the audit view shows a long event in full in its detail pane, wrapped
    long_reason = "a reason that goes on " * 40
    catalog.log_event("override", {"reason": long_reason.strip()}, model=base.model, version=base.version)
    audit = window.show_view("audit")
    window.refresh(force=True)
    qtbot_row = next(r for r, e in enumerate(audit.shown_rows) if e["kind"] == "override")
    audit.table.selectRow(qtbot_row)
    assert long_reason.strip() in audit.detail.toPlainText()
    assert audit.detail.lineWrapMode() == audit.detail.LineWrapMode.WidgetWidth


def test_evaluate_dialog_offers_the_parent_for_fidelity(window, family, catalog):
    from relman.app.datasets import register_demo_digits
    from relman.ui.qt_dialogs import EvaluateDialog

    register_demo_digits(catalog, "digits", n=40)
    window.set_selection([family["merged"].id])
    base = family["base"]

    def fill(d: Any) -> None:
        assert isinstance(d, EvaluateDialog)
        parents = [d.parent_ref.itemText(i) for i in range(d.parent_ref.count())]
        assert base.ref in parents and family["merged"].ref not in parents
        d.suite_boxes["fidelity"].setChecked(True)
        d.parent_ref.setCurrentText(base.ref)

    window.dialog_runner = accept_with(fill)
    window.actions_by_key["evaluate"].trigger()
    job = catalog.query("SELECT kind, params FROM jobs ORDER BY id DESC")[0]
    assert job["kind"] == "evaluate" and f'"parent_version_id": {base.id}' in job["params"], job["params"]


# -- item 4: dialogs offer what applies, keep their input, clear old errors ---------------------------
def test_dialogs_offer_only_what_applies_and_keep_their_input(qtbot, catalog, catalog_path, tmp_path,
                                                              tiny_bert_encoder, family):
    from relman.app.datasets import register_demo_digits
    from relman.app.models import import_model
    from relman.ui.qt_dialogs import CompressDialog, EvaluateDialog
    from relman.ui.qt_main import MainWindow

    enc = import_model(catalog, tiny_bert_encoder, "encoder")
    assert enc.task == "feature-extraction"
    register_demo_digits(catalog, "digits", n=40)
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "g.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    try:
        # an embedding model: no quality suite offered (nor ticked), fidelity and latency are
        w.set_selection([enc.id])
        d = w.work.evaluate_dialog(w.selected_versions())
        assert "quality" not in d.suite_boxes and "fidelity" in d.suite_boxes and "latency" in d.suite_boxes
        assert "quality" in d.findChild(type(d.error_label), "hint").text()
        assert d.dataset.currentText() == "(none)"  # the image dataset does not fit a text model
        # an error of the app layer (fidelity needs data) stays in the dialog with the input
        d.suite_boxes["fidelity"].setChecked(True)
        d.suite_boxes["latency"].setChecked(False)
        d.device.setCurrentText("cpu")
        d.submit = lambda vals: w.work.queue_evaluation(**vals)
        d.accept()
        assert d.result() == 0 and "needs a dataset" in d.error_label.text()
        assert d.suite_boxes["fidelity"].isChecked() and d.device.currentText() == "cpu"  # input kept
        assert not catalog.query("SELECT id FROM jobs WHERE kind = 'evaluate'")

        # a classifier: quality offered and ticked by default (a dataset exists)
        w.set_selection([family["base"].id])
        d2 = w.work.evaluate_dialog(w.selected_versions())
        assert isinstance(d2, EvaluateDialog) and d2.suite_boxes["quality"].isChecked()

        # compress: one parent selected -> opens on a one-parent recipe; recipes fit the task
        recipes = w.work.recipes_for(w.selected_versions())
        assert all(r.tasks is None or family["base"].task in r.tasks for r in recipes)
        c = CompressDialog(recipes, [family["base"].ref], w, ["digits"])
        assert not c.current_recipe().multi_parent
        merge = next(r for r in recipes if r.multi_parent)
        c.select_recipe(merge.name)
        c.accept()
        assert c.result() == 0 and "at least two" in c.error_label.text()
        c.select_recipe(next(r for r in recipes if not r.multi_parent).name)
        assert c.error_label.text() == ""  # the previous recipe's error went with it
        # two parents selected -> opens on a merge
        c2 = CompressDialog(recipes, [family["base"].ref, family["pruned"].ref], w, ["digits"])
        assert c2.current_recipe().multi_parent
        # a bad typed value: the registry's parser (as the CLI's) refuses it in the dialog
        r, p = next((r, p) for r in recipes if not r.multi_parent for p in r.params
                    if p.type is float and p.max is not None and not p.shown_when)  # a field shown by default
        c.select_recipe(r.name)
        c.form.editors[p.name].setMaximum(p.max + 10)
        c.form.editors[p.name].setValue(p.max + 5)
        assert p.name in c.error_label.text()  # inline, as soon as the value is typed
        c.accept()
        assert c.result() == 0 and p.name in c.error_label.text()
        assert c.form.editors[p.name].value() == p.max + 5  # kept
        c.form.editors[p.name].setValue(p.max)
        assert c.error_label.text() == ""  # fixed: the error goes
    finally:
        w.shutdown()


# -- item 5: messages that do not block; jobs that end say so; closing with jobs running -------------
def test_successes_are_toasts_job_ends_are_announced_and_closing_says_jobs_keep_running(
        qtbot, catalog, catalog_path, tmp_path, family):
    from relman.jobs.queue import enqueue, finish
    from relman.ui.qt_main import MainWindow

    for _ in range(60):  # a long list: the new job must be scrolled into view
        assert finish(catalog, enqueue(catalog, "noop", {}), "succeeded", from_status="queued")
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "g.ini"), QSettings.Format.IniFormat),
                   run_jobs=False, poll_ms=100)
    qtbot.addWidget(w)
    w.resize(1024, 700)
    w.show()
    jobs = w.show_view("jobs")
    jobs.table.scrollToBottom()
    job = w.job_actions.track(enqueue(catalog, "noop", {}), "Tidy up")
    qtbot.waitUntil(lambda: jobs.selected_job == job, timeout=10_000)
    rect = jobs.table.visualRect(jobs.model.index(0, 0))
    assert jobs.model.jobs[0]["id"] == job and jobs.table.viewport().rect().intersects(rect)

    assert finish(catalog, job, "succeeded", from_status="queued")
    qtbot.waitUntil(lambda: ("info", "Tidy up: done") in w.messages, timeout=10_000)
    assert not w.open_boxes, "a success opens no message box"
    assert w.messages_log.toast.isVisible() and "Tidy up: done" in w.messages_log.toast.text()
    assert w.messages_log.notifications[-1] == (f"relman: job {job} succeeded", "Tidy up: done")
    assert "Messages (" in w.messages_log.button.text()

    failing = w.job_actions.track(enqueue(catalog, "noop", {}), "Break things")
    assert finish(catalog, failing, "failed", error="planted failure", from_status="queued")
    qtbot.waitUntil(lambda: any("planted failure" in t for lvl, t in w.messages if lvl == "error"), timeout=10_000)
    # a failed job asks for attention without a box to dismiss (issue 28 item 10): a desktop
    # note, and its error inline in the Jobs view, which selects it
    assert not w.open_boxes, "a failed job opens no message box"
    assert w.messages_log.notifications[-1][0] == f"relman: job {failing} failed"
    qtbot.waitUntil(lambda: jobs.failure.job_id == failing and jobs.failure.isVisible(), timeout=10_000)
    assert "planted failure" in jobs.failure.text.text()

    # the "(job job 2)" wording is gone
    from relman.ui.controllers import job_label
    assert "job job" not in f"Queued x on m@1 ({job_label(7)})"

    # closing with work left: the window says what happens to it, and does not ask
    enqueue(catalog, "noop", {})
    w.close()
    assert any("queued job starts when relman is opened again" in t for _, t in w.messages), w.messages[-3:]


# -- item 6: Compare selects, follows the task's quality metric, reads well --------------------------
def _click_point(qtbot: Any, panel: Any, x: float, y: float) -> None:
    """A real mouse click on the plot where the point (x, y) is drawn."""
    from PySide6.QtCore import QPointF, Qt

    vb = panel.plot.getPlotItem().getViewBox()
    scene = vb.mapViewToScene(QPointF(x, y))
    pos = panel.plot.mapFromScene(scene)
    qtbot.mouseClick(panel.plot.viewport(), Qt.MouseButton.LeftButton, pos=pos)


def test_compare_clicks_on_front_and_star_select_and_axes_follow_the_task(qtbot, window, family, catalog,
                                                                          tiny_bert_encoder):
    from relman.app.models import import_model
    from relman.app.release import promote
    from relman.catalog import Metric

    base, pruned = family["base"], family["pruned"]
    for phase in ("candidate", "staging", "production"):
        promote(catalog, base.ref, phase, why="test set-up", override=True)
    window.resize(1600, 1000)
    window.refresh(force=True)
    window.set_selection([family["merged"].id])
    compare = window.show_view("compare")
    compare.set_model(base.model)
    panel = compare.size_panel
    panel.plot.getPlotItem().getViewBox().autoRange()
    qtbot.waitExposed(panel.plot)
    assert pruned.id in panel.front_ids  # smallest size, a front point (the ring over it)
    p = window.snapshot.by_id()[pruned.id]
    _click_point(qtbot, panel, p.value(panel.x_combo.currentText()), p.value(panel.y_combo.currentText()))
    qtbot.waitUntil(lambda: window.selection.ids == [pruned.id], timeout=5000)
    b = window.snapshot.by_id()[base.id]  # the production star sits over the base's point
    _click_point(qtbot, panel, b.value(panel.x_combo.currentText()), b.value(panel.y_combo.currentText()))
    qtbot.waitUntil(lambda: window.selection.ids == [base.id], timeout=5000)

    # the comparison table: quality first, counts as integers with thousands separators
    catalog.add_metrics(base.id, [Metric("latency", f"latency_p{q}_ms_b{b_}", 1.0, {}) for q in (50, 95)
                                  for b_ in (1, 8, 32)] + [Metric("latency", "throughput_sps", 18220.0, {})])
    window.refresh(force=True)
    window.set_selection([base.id, pruned.id])
    compare = window.show_view("compare")
    labels = [compare.table.verticalHeaderItem(r).text() for r in range(compare.table.rowCount())]
    assert labels[2] == "accuracy", labels
    row = labels.index("throughput_sps")
    assert compare.table.item(row, 0).text() == "18,220"
    params_row = labels.index("params")
    assert "e+" not in compare.table.item(params_row, 0).text()

    # an embedding model: Y follows its task (fidelity cosine), never throughput; one point spans sensibly
    enc = import_model(catalog, tiny_bert_encoder, "encoder")
    catalog.add_metrics(enc.id, [Metric("fidelity", "cosine", 0.99, {}), Metric("size", "size_mb", 0.5, {}),
                                 Metric("latency", "throughput_sps", 900.0, {})])
    window.refresh(force=True)
    window.set_selection([enc.id])
    compare = window.show_view("compare")
    assert compare.model_combo.currentText() == "encoder"
    assert compare.size_panel.y_combo.currentText() == "cosine"
    (x0, x1), (y0, y1) = compare.size_panel.plot.getPlotItem().getViewBox().viewRange()
    assert 0.4 < x0 < 0.5 < x1 < 0.6 and 0.8 < y0 < 0.99 < y1 < 1.1, ((x0, x1), (y0, y1))


# -- item 7: a laptop screen ---------------------------------------------------------------------------
def test_every_view_fits_1024x700_and_the_window_never_resizes_itself(qtbot, catalog, catalog_path, tmp_path,
                                                                      family, tiny_bert_encoder):
    from PySide6.QtWidgets import QApplication

    from relman.app.models import import_model
    from relman.ui.qt_main import MainWindow
    from relman.ui.views import view_names

    import_model(catalog, tiny_bert_encoder, "a-sentence-encoder-with-a-long-name")
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "g.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    try:
        w.resize(1024, 700)
        w.show()
        qtbot.waitExposed(w)
        assert w.current_view_name() == "overview"  # several models: the overview first
        assert w.minimumSizeHint().width() <= 1024 and w.minimumSizeHint().height() <= 700
        for dark in (False, True):
            w.set_theme(dark)
            for name in view_names():
                view = w.show_view(name)
                QApplication.processEvents()
                assert w.width() == 1024 and w.height() == 700, (name, dark, w.size())
                page = w.tabs.currentWidget()
                assert view.minimumSizeHint().width() <= page.viewport().width(), (name, dark, view.minimumSizeHint())
        # the board's button text changes with the selection: the window keeps its size
        w.set_selection([family["base"].id])
        w.show_view("board")
        QApplication.processEvents()
        assert "Promote → " in w.board.promote_btn.text() and w.width() == 1024
        # the Models dock shows whole phase names
        fm = w.tree.fontMetrics()
        assert w.tree.header().sectionSize(1) >= fm.horizontalAdvance("production")
        assert w.tree.header().sectionSize(0) + w.tree.header().sectionSize(1) <= w.tree.viewport().width() + 1
    finally:
        w.shutdown()


# -- item 8: small but visible ---------------------------------------------------------------------------
def test_tooltips_explain_gate_badges_list_failing_rules_and_progress_reads_in_the_dark(
        qtbot, window, family, catalog):
    from PySide6.QtGui import QColor

    from relman.jobs.queue import enqueue

    for key in ("compress", "evaluate", "export", "card", "promote"):
        act = window.actions_by_key[key]
        assert len(act.toolTip()) > len(act.text()) + 20, (key, act.toolTip())
    # a policy whose gate fails for the candidate: the badge's tooltip names the rule and why
    from relman.app.release import promote, set_policy

    base = family["base"]
    promote(catalog, base.ref, "candidate", why="set-up", override=True)
    set_policy(catalog, base.model, {"gates": {"staging": ["accuracy >= 0.99"]}})
    window.refresh(force=True)
    window.set_selection([base.id])
    board = window.show_view("board")
    card = board.find_card(base.id)[1]
    qtbot.waitUntil(lambda: card.gate_checked or board.find_card(base.id)[1].gate_checked, timeout=10_000)
    card = board.find_card(base.id)[1]
    assert card.gate_state == "fail"
    tip = card.badge.toolTip()
    assert "accuracy >= 0.99" in tip and "0.91" in tip, tip

    # a half-done job in the dark theme: a dark cell with light text, not a white box
    job = enqueue(catalog, "noop", {})
    catalog.conn.execute("UPDATE jobs SET status = 'running', progress = 0.5 WHERE id = ?", [job])
    catalog.conn.commit()
    window.set_theme(True)
    jobs = window.show_view("jobs")
    window.refresh(force=True)
    row = next(r for r, j in enumerate(jobs.model.jobs) if j["id"] == job)
    rect = jobs.table.visualRect(jobs.model.index(row, jobs.model.PROGRESS_COLUMN))
    image = jobs.table.viewport().grab(rect).toImage()
    pixels = [QColor(image.pixel(x, y)).lightnessF() for x in range(0, image.width(), 2)
              for y in range(0, image.height(), 2)]
    assert sum(pixels) / len(pixels) < 0.6, "the progress cell is a light box in the dark theme"
    assert max(pixels) > 0.7, "the percentage is drawn in a light colour"


# -- issue 16's GUI part: where jobs run ----------------------------------------------------------------
def test_ray_executor_setting_is_checked_stored_and_a_failed_connection_falls_back(qtbot, catalog, catalog_path,
                                                                                    tmp_path, family):
    import subprocess
    import sys

    from relman.jobs.queue import enqueue
    from relman.ui.qt_dialogs import SimpleFormDialog
    from relman.ui.qt_main import MainWindow
    from relman.ui.qt_models import JOB_COLUMNS

    settings = QSettings(str(tmp_path / "g.ini"), QSettings.Format.IniFormat)
    w = MainWindow(catalog_path, settings=settings, run_jobs=True, cpu_slots=1)
    qtbot.addWidget(w)
    try:
        # the dialog refuses a remote address unless allowed (the CLI's check), keeping the input
        def fill(d: Any) -> None:
            assert isinstance(d, SimpleFormDialog)
            d.fields["Run jobs on a Ray cluster at"].setText("10.1.2.3:6379")
            d.accept()
            assert d.result() == 0 and "not on this machine" in d.error_label.text()
            assert d.fields["Run jobs on a Ray cluster at"].text() == "10.1.2.3:6379"
            d.fields["Run jobs on a Ray cluster at"].setText("127.0.0.1:1")  # nothing listens there
            d.fields["Token file"].setText(str(tmp_path / "no-token"))  # the CLI's check of the token file
            d.accept()
            assert d.result() == 0 and "does not exist" in d.error_label.text()
            (tmp_path / "token").write_text("t" * 64)
            d.fields["Token file"].setText(str(tmp_path / "token"))

        w.dialog_runner = accept_with(fill)
        w.actions_by_key["executor"].trigger()
        assert catalog.get_setting("executor.ray_address") == "127.0.0.1:1"
        assert catalog.get_setting("executor.ray_token_file") == str((tmp_path / "token").resolve())
        assert w.runner is not None and w.runner.remote is None  # fell back to local processes
        level, text = w.messages[-1]
        assert level == "error" and "Jobs run as local processes" in text and "127.0.0.1:1" in text, text
        for box in list(w.open_boxes):
            box.close()
        w.job_actions.set_executor(None)
        assert catalog.get_setting("executor.ray_address") is None and "local worker processes" in w.messages[-1][1]
    finally:
        w.shutdown()

    # the Executor column shows where a job ran
    job = enqueue(catalog, "noop", {})
    catalog.conn.execute("UPDATE jobs SET executor = 'ray:127.0.0.1/0a1b2c' WHERE id = ?", [job])
    catalog.conn.commit()
    w2 = MainWindow(catalog_path, settings=settings, run_jobs=False)
    qtbot.addWidget(w2)
    try:
        jobs = w2.show_view("jobs")
        col = JOB_COLUMNS.index("Executor")
        row = next(r for r, j in enumerate(jobs.model.jobs) if j["id"] == job)
        assert jobs.model.index(row, col).data() == "ray:127.0.0.1/0a1b2c"
    finally:
        w2.shutdown()

    # with a Ray address set, opening the window imports no ray (the connection comes after)
    catalog.set_setting("executor.ray_address", "127.0.0.1:1")
    code = ("import sys; from PySide6.QtWidgets import QApplication; app = QApplication([]); "
            "from relman.ui.qt_main import MainWindow; "
            f"w = MainWindow({str(catalog_path)!r}, run_jobs=True, cpu_slots=1); "
            "print('ray' in sys.modules); w.shutdown()")
    env = {**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen", "RELMAN_GUI_SETTINGS": str(tmp_path / "s.ini")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]


def test_screenshot_matrix_writes_every_view_light_and_dark_at_the_window_size(window, tmp_path):
    from PySide6.QtGui import QImage

    from relman.ui.app import screenshot_matrix
    from relman.ui.views import view_names

    paths = screenshot_matrix(window, tmp_path / "shots", sizes=((1024, 700),))
    names = {p.relative_to(tmp_path / "shots").as_posix() for p in paths}
    assert names == {f"1024x700/{t}-{v}.png" for t in ("light", "dark") for v in view_names()}
    image = QImage(str(tmp_path / "shots" / "1024x700" / "dark-board.png"))
    assert (image.width(), image.height()) == (1024, 700)
