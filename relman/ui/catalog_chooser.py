"""Choosing a catalog folder from the window: File → New catalog…, Open catalog…, Recent catalogs.

Why this module exists: the folder chooser used to open whatever folder it returned, creating
a catalog there, and pressing Enter in it returns the folder it was opened on — so a user's
working folder (their source tree, their home) silently became a catalog. Now:

- **New catalog…** takes only a new (missing) or empty folder; a folder that already is a
  catalog is refused with a pointer to Open, and a non-empty folder that is not a catalog is
  refused with a one-line reason, nothing written;
- **Open catalog…** opens a folder that is a catalog (`catalog.db` inside); for an empty or
  missing folder it asks before creating one; a non-empty folder that is not a catalog is
  refused as for New;
- **Recent catalogs** (QSettings key `recent_catalogs`, newest first, at most
  `MAX_RECENT`): entries whose folder no longer holds a catalog are shown greyed ("missing"),
  and "Remove missing" drops them.

The folder checks (`folder_kind`, `check_new_catalog_folder`) need no Qt; the Qt parts only ask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relman.errors import RelmanError

MAX_RECENT = 8
RECENT_KEY = "recent_catalogs"


# -- folder checks (no Qt) --------------------------------------------------------------------------
def is_catalog(folder: Path | str) -> bool:
    return (Path(folder) / "catalog.db").is_file()


def folder_kind(folder: Path | str) -> str:
    """"catalog", "missing" (does not exist yet), "empty", "file" or "other" (a folder with
    files in it that is not a catalog)."""
    p = Path(folder)
    if not p.exists():
        return "missing"
    if not p.is_dir():
        return "file"
    if is_catalog(p):
        return "catalog"
    try:
        next(p.iterdir())
    except StopIteration:
        return "empty"
    except OSError as e:
        raise RelmanError(f"cannot read the folder {p} ({e.strerror or e})") from None
    return "other"


def not_a_catalog_message(folder: Path | str) -> str:
    return (f"{folder} is not a relman catalog and is not empty: choose an empty or new folder for a "
            "new catalog (File → New catalog…), or a folder that holds one (with catalog.db)")


def check_new_catalog_folder(folder: Path | str) -> Path:
    """The folder a new catalog may be made in (missing or empty), else a one-line error."""
    p = Path(folder).expanduser().absolute()
    kind = folder_kind(p)
    if kind == "catalog":
        raise RelmanError(f"{p} already is a relman catalog: open it with File → Open catalog… "
                          "(or File → Recent catalogs)")
    if kind == "file":
        raise RelmanError(f"{p} is a file, not a folder: choose an empty or new folder for the catalog")
    if kind == "other":
        raise RelmanError(not_a_catalog_message(p))
    return p


# -- recent catalogs (QSettings) --------------------------------------------------------------------
def recent_catalogs(settings: Any) -> list[str]:
    """The remembered catalog folders, newest first (an INI file gives a lone entry back as a str)."""
    raw = settings.value(RECENT_KEY, [])
    if isinstance(raw, str):
        raw = [raw] if raw else []
    return [str(x) for x in (raw or []) if str(x)]


def remember_catalog(settings: Any, folder: Path | str) -> list[str]:
    path = str(Path(folder).expanduser().absolute())
    items = [path] + [p for p in recent_catalogs(settings) if p != path]
    settings.setValue(RECENT_KEY, items[:MAX_RECENT])
    return items[:MAX_RECENT]


def forget_missing(settings: Any) -> list[str]:
    items = [p for p in recent_catalogs(settings) if is_catalog(p)]
    settings.setValue(RECENT_KEY, items)
    return items


# -- the window's actions ---------------------------------------------------------------------------
def choose_folder(window: Any, title: str) -> str:
    from PySide6.QtWidgets import QFileDialog

    start = str(window.catalog.root.parent)  # not the open catalog itself, nor the working folder
    return QFileDialog.getExistingDirectory(window, title, start)


def new_catalog(window: Any) -> bool:
    """File → New catalog…: a new or empty folder becomes a catalog and the window switches to it."""
    folder = choose_folder(window, "New catalog: choose an empty or new folder")
    if not folder:
        return False
    path = check_new_catalog_folder(folder)
    window.open_catalog(path)
    window.show_info(f"New catalog at {path}")
    return True


def open_catalog_checked(window: Any, folder: str | Path | None = None) -> bool:
    """File → Open catalog…: open a catalog; offer to create one only in an empty or new folder."""
    from PySide6.QtWidgets import QMessageBox

    if folder is None:
        folder = choose_folder(window, "Open catalog folder")
        if not folder:
            return False
    path = Path(folder).expanduser().absolute()
    kind = folder_kind(path)
    if kind == "other":
        raise RelmanError(not_a_catalog_message(path))
    if kind == "file":
        raise RelmanError(f"{path} is a file, not a catalog folder")
    if kind in ("empty", "missing"):
        box = QMessageBox(QMessageBox.Icon.Question, "Not a catalog",
                          f"{path} is not a relman catalog ({'empty' if kind == 'empty' else 'it does not exist'}).\n"
                          "Create a new catalog there?",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, window)
        box.setObjectName("confirm-create-catalog")
        box.setDefaultButton(QMessageBox.StandardButton.No)  # Enter does not create a catalog
        answer = window.dialog_runner(box)
        yes = QMessageBox.StandardButton.Yes
        if box.clickedButton() is not box.button(yes) and getattr(answer, "value", answer) != yes.value:
            return False
    window.open_catalog(path)
    return True


def install_recent_menu(window: Any) -> Any:
    """File → Recent catalogs, right after Open catalog…; rebuilt each time it opens."""
    from PySide6.QtWidgets import QMenu

    file_menu = window.menuBar().actions()[0].menu()
    menu = QMenu("Recent catalogs", window)
    menu.setObjectName("recent-catalogs")
    open_action = window.actions_by_key.get("open")
    acts = file_menu.actions()
    after = acts.index(open_action) + 1 if open_action in acts else 0
    file_menu.insertMenu(acts[after] if after < len(acts) else None, menu)
    menu.aboutToShow.connect(lambda: fill_recent_menu(window, menu))
    fill_recent_menu(window, menu)
    return menu


def fill_recent_menu(window: Any, menu: Any) -> None:
    menu.clear()
    here = str(window.catalog.root.absolute())
    shown = [p for p in recent_catalogs(window.settings) if p != here]
    for path in shown:
        missing = not is_catalog(path)
        act = menu.addAction(f"{path}  (missing)" if missing else path)
        act.setObjectName("recent-catalog")
        act.setData(path)
        act.setEnabled(not missing)
        act.setToolTip("This folder no longer holds a catalog" if missing else f"Open the catalog at {path}")
        act.triggered.connect(lambda _=False, p=path: window.guarded("open", open_catalog_checked, window, p))
    if not shown:
        none = menu.addAction("(no other catalogs yet)")
        none.setEnabled(False)
    menu.addSeparator()
    drop = menu.addAction("Remove missing")
    drop.setObjectName("recent-remove-missing")
    drop.setEnabled(any(not is_catalog(p) for p in shown))

    def remove_missing() -> None:
        forget_missing(window.settings)
        fill_recent_menu(window, menu)
    drop.triggered.connect(remove_missing)
