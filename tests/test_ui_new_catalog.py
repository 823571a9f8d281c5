"""File → New catalog…, Open catalog… that refuses a folder which is not a catalog, Recent
catalogs and the empty-catalog hint, driven through the menus like a user (issue 28, item 7).

The folder chooser (QFileDialog.getExistingDirectory) is patched to return the folder the user
would pick — the native dialog is not what is under test; the question box is answered by
clicking its buttons (QTimer.singleShot) while it runs modally."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, catalog_path, catalog, settings):
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=settings, run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


def pick(monkeypatch: pytest.MonkeyPatch, folder: Path | str) -> list[str]:
    """The user picks `folder` in the folder chooser (records the chooser's titles)."""
    titles: list[str] = []

    def chooser(parent, title, start="", *a, **k):
        titles.append(title)
        return str(folder)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(chooser))
    return titles


def menu_action(window, menu_title: str, text: str):
    for top in window.menuBar().actions():
        if top.text().replace("&", "") == menu_title:
            for act in top.menu().actions():
                if act.text() == text or (act.menu() is not None and act.menu().title() == text):
                    return act
    raise AssertionError(f"no {menu_title} → {text}")


def answer_question(button: QMessageBox.StandardButton, seen: list[str]) -> None:
    """Click `button` on the question box once it is up (it runs modally)."""
    def click() -> None:
        box = next((w for w in QApplication.topLevelWidgets()
                    if isinstance(w, QMessageBox) and w.objectName() == "confirm-create-catalog" and w.isVisible()), None)
        if box is None:
            QTimer.singleShot(20, click)
            return
        seen.append(box.text())
        box.button(button).click()
    QTimer.singleShot(20, click)


def errors(window) -> list[str]:
    return [t for level, t in window.messages if level == "error"]


# -- New catalog… -----------------------------------------------------------------------------------
def test_new_catalog_in_a_new_folder_switches_to_it(window, monkeypatch, tmp_path, catalog_path):
    target = tmp_path / "projects" / "fresh-catalog"
    titles = pick(monkeypatch, target)
    menu_action(window, "File", "New catalog…").trigger()
    assert "empty or new folder" in titles[0]
    assert (target / "catalog.db").is_file()
    assert window.catalog.root == target.absolute()
    assert str(target.absolute()) in window.windowTitle()
    assert any("New catalog at" in t for _lvl, t in window.messages)
    assert not errors(window)


def test_new_catalog_refuses_a_working_folder_and_writes_nothing(window, monkeypatch, tmp_path, catalog_path):
    work = tmp_path / "my-project"
    work.mkdir()
    (work / "train.py").write_text("print('mine')\n")
    pick(monkeypatch, work)
    menu_action(window, "File", "New catalog…").trigger()
    assert sorted(p.name for p in work.iterdir()) == ["train.py"]  # no catalog.db, objects/, logs/
    assert window.catalog.root == catalog_path.absolute()
    [msg] = errors(window)
    assert "not a relman catalog and is not empty" in msg and str(work) in msg and "\n" not in msg


def test_new_catalog_on_an_existing_catalog_points_at_open(window, monkeypatch, tmp_path):
    from relman.catalog import open_catalog

    other = tmp_path / "other-catalog"
    open_catalog(other).close()
    pick(monkeypatch, other)
    menu_action(window, "File", "New catalog…").trigger()
    [msg] = errors(window)
    assert "already is a relman catalog" in msg and "Open catalog" in msg


def test_cancelling_the_chooser_changes_nothing(window, monkeypatch, catalog_path):
    pick(monkeypatch, "")
    assert menu_action(window, "File", "New catalog…").trigger() is None
    assert window.catalog.root == catalog_path.absolute() and not errors(window)


# -- Open catalog… ----------------------------------------------------------------------------------
def test_open_refuses_a_folder_that_is_not_a_catalog(window, monkeypatch, tmp_path, catalog_path):
    work = tmp_path / "src"
    work.mkdir()
    (work / "README.md").write_text("# my code\n")
    pick(monkeypatch, work)
    window.actions_by_key["open"].trigger()
    assert not (work / "catalog.db").exists() and sorted(p.name for p in work.iterdir()) == ["README.md"]
    assert window.catalog.root == catalog_path.absolute()
    assert "not a relman catalog" in errors(window)[0]


def test_open_on_an_empty_folder_asks_and_no_creates_nothing(window, monkeypatch, tmp_path, catalog_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    pick(monkeypatch, empty)
    seen: list[str] = []
    answer_question(QMessageBox.StandardButton.No, seen)
    window.actions_by_key["open"].trigger()
    assert seen and "Create a new catalog there?" in seen[0]
    assert list(empty.iterdir()) == []
    assert window.catalog.root == catalog_path.absolute()


def test_open_on_an_empty_folder_creates_when_the_user_confirms(window, monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    pick(monkeypatch, empty)
    seen: list[str] = []
    answer_question(QMessageBox.StandardButton.Yes, seen)
    window.actions_by_key["open"].trigger()
    assert seen and (empty / "catalog.db").is_file()
    assert window.catalog.root == empty.absolute()


def test_the_question_defaults_to_no(window, monkeypatch, tmp_path):
    """Enter in the question box (its default button) must not create a catalog either."""
    from PySide6.QtCore import Qt

    empty = tmp_path / "empty"
    empty.mkdir()
    pick(monkeypatch, empty)

    def press_enter() -> None:
        box = next((w for w in QApplication.topLevelWidgets()
                    if isinstance(w, QMessageBox) and w.objectName() == "confirm-create-catalog" and w.isVisible()), None)
        if box is None:
            QTimer.singleShot(20, press_enter)
            return
        from pytestqt.qtbot import QtBot

        QtBot.keyClick(box, Qt.Key.Key_Return)
    QTimer.singleShot(20, press_enter)
    window.actions_by_key["open"].trigger()
    assert list(empty.iterdir()) == []


def test_open_a_catalog_opens_it_without_a_question(window, monkeypatch, tmp_path):
    from relman.catalog import open_catalog

    other = tmp_path / "other"
    open_catalog(other).close()
    pick(monkeypatch, other)
    window.actions_by_key["open"].trigger()  # a question box would block here: none is shown
    assert window.catalog.root == other.absolute()


# -- Recent catalogs --------------------------------------------------------------------------------
def test_recent_catalogs_newest_first_missing_greyed_and_removed(window, monkeypatch, tmp_path, catalog_path):
    import shutil

    from relman.catalog import open_catalog

    a, b = tmp_path / "cat-a", tmp_path / "cat-b"
    for folder in (a, b):
        open_catalog(folder).close()
        pick(monkeypatch, folder)
        window.actions_by_key["open"].trigger()
    assert window.catalog.root == b.absolute()
    menu = menu_action(window, "File", "Recent catalogs").menu()
    menu.aboutToShow.emit()  # what opening the submenu does
    entries = [act for act in menu.actions() if act.objectName() == "recent-catalog"]
    assert [act.data() for act in entries] == [str(a.absolute()), str(catalog_path.absolute())]  # newest first
    assert all(act.isEnabled() for act in entries)

    entries[1].trigger()  # back to the first catalog, from the menu
    assert window.catalog.root == catalog_path.absolute()

    window.settings.sync()
    reread = QSettings(window.settings.fileName(), QSettings.Format.IniFormat)  # kept across sessions
    from relman.ui.catalog_chooser import recent_catalogs

    assert recent_catalogs(reread)[:3] == [str(catalog_path.absolute()), str(b.absolute()), str(a.absolute())]

    shutil.rmtree(a)  # a catalog that went away
    menu.aboutToShow.emit()
    by_path = {act.data(): act for act in menu.actions() if act.objectName() == "recent-catalog"}
    assert not by_path[str(a.absolute())].isEnabled() and "(missing)" in by_path[str(a.absolute())].text()
    assert by_path[str(b.absolute())].isEnabled()
    remove = next(act for act in menu.actions() if act.objectName() == "recent-remove-missing")
    assert remove.isEnabled()
    remove.trigger()
    assert str(a.absolute()) not in [act.data() for act in menu.actions() if act.objectName() == "recent-catalog"]
    assert str(a.absolute()) not in recent_catalogs(window.settings)


# -- the empty-catalog hint ---------------------------------------------------------------------------
def test_empty_catalog_shows_the_hint_and_its_import_button_opens_the_import_dialog(window, qtbot, catalog, tmp_path):
    from PySide6.QtCore import Qt

    from relman.ui.qt_dialogs import ImportDialog

    hint = window.empty_hint
    assert hint.isVisible() and "No models yet" in hint.title.text()
    shown: list[object] = []
    window.dialog_runner = lambda d: (shown.append(d), 0)[1]  # the user cancels the dialog
    qtbot.mouseClick(hint.import_btn, Qt.MouseButton.LeftButton)
    assert len(shown) == 1 and isinstance(shown[0], ImportDialog)

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"\x08\x07")  # a version's files as stored, not loaded here
    catalog.add_version("tiny", {"model.onnx": folder / "model.onnx"}, format="onnx")
    qtbot.waitUntil(lambda: not hint.isVisible(), timeout=10000)  # the poll sees the new model


@pytest.mark.heavy
def test_load_the_demo_catalog_builds_it_in_a_child_and_switches(window, qtbot, tmp_path):
    """The real `relman demo --build-only` in a child process (a short training, no jobs)."""
    from PySide6.QtCore import Qt

    hint = window.empty_hint
    hint.demo_folder = tmp_path / "demo-catalog"
    hint.demo_extra_args = ("--no-jobs", "--no-lm", "--train-seconds", "1")
    qtbot.mouseClick(hint.demo_btn, Qt.MouseButton.LeftButton)
    assert hint.proc is not None and not hint.demo_btn.isEnabled()  # the window is not blocked
    qtbot.waitUntil(lambda: window.catalog.root == hint.demo_folder.absolute(), timeout=240000)
    assert "digits-vit" in window.snapshot.models()
    assert not hint.isVisible()
