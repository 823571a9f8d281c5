"""The red integrity banner: tampering shows the moment the catalog changes, not when someone
thinks of pressing Verify (issue 28, item 4).

`IntegrityWatch` runs `integrity.current_problems` (chain, anchor, every tracked row against its
record; no blob is re-hashed) from the window's poll tick, only when the answer may differ:
the catalog token changed, or the database changed (`integrity.state_key`: another
connection's commit, such as `sqlite3` editing a row, which the catalog token does not see)
while no job was reporting progress; during job progress, at most every `BUSY_RECHECK_S`. The
result is cached on the catalog, so the refusals of promote and gates share it.

`IntegrityBanner` lists the first findings and their count, and offers "Review and accept…":
`ReviewAcceptDialog` shows every finding and asks who accepts, why, and with which key, then
the release controller calls `integrity.accept_state` (what `relman audit accept` calls).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QComboBox, QFrame, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton,
                               QWidget)

from relman.errors import RelmanError
from relman.ui.qt_dialogs import SimpleFormDialog

SHOWN = 3  # findings named in the banner itself; the dialog has them all
BUSY_RECHECK_S = 5.0
CATALOG_KEY = "(the catalog's key)"
RED = "#c4453b"


def summary(problems: Sequence[str]) -> str:
    """'Integrity check failed: N finding(s): first; second; third (and K more)'."""
    head = "; ".join(problems[:SHOWN])
    more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
    return f"Integrity check failed: {len(problems)} finding(s): {head}{more}"


class IntegrityBanner(QFrame):
    """Hidden while the catalog verifies; red, with the findings, while it does not."""

    review_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("integrity-banner")
        self.setStyleSheet(f"#integrity-banner {{ background: {RED}; border-radius: 4px; }}"
                           " #integrity-banner QLabel { color: white; font-weight: bold; }")
        self.problems: list[str] = []
        self.label = QLabel("")
        self.label.setObjectName("integrity-banner-text")
        self.label.setWordWrap(True)
        self.review_btn = QPushButton("Review and accept…")
        self.review_btn.setObjectName("integrity-review")
        self.review_btn.setToolTip("See every finding; if you have checked them, accept the current state "
                                   "with a reason and a key (as 'relman audit accept')")
        self.review_btn.clicked.connect(self.review_requested.emit)
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 8, 4)
        row.addWidget(self.label, 1)
        row.addWidget(self.review_btn)
        self.setVisible(False)

    def show_problems(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        self.label.setText(summary(self.problems) if self.problems else "")
        self.label.setToolTip("\n".join(self.problems))
        self.setVisible(bool(self.problems))


class IntegrityWatch:
    """Decides on each poll tick whether to re-run the check, and hands the result on."""

    def __init__(self, catalog: Callable[[], Any], show: Callable[[list[str]], None]) -> None:
        self._catalog = catalog
        self._show = show
        self._key: tuple[Any, ...] | None = None
        self._checked_at = 0.0
        self.problems: list[str] = []

    def tick(self, catalog_changed: bool, jobs_changed: bool) -> None:
        from relman.catalog import integrity

        cat = self._catalog()
        try:
            key = (id(cat), integrity.state_key(cat))
        except Exception:  # a locked / vanished database: the poller reports it
            return
        if key == self._key and not catalog_changed:
            return
        if not catalog_changed and jobs_changed and time.monotonic() - self._checked_at < BUSY_RECHECK_S:
            return  # a worker's progress: look again soon, not on every heartbeat
        self.check()

    def check(self) -> list[str]:
        """Run the (cached) check now and show its result."""
        from relman.catalog import integrity

        cat = self._catalog()
        try:
            self._key = (id(cat), integrity.state_key(cat))
            problems = integrity.current_problems(cat)
        except RelmanError as e:
            problems = [str(e)]
        except Exception:
            return self.problems
        self._checked_at = time.monotonic()
        self.problems = problems
        self._show(problems)
        return problems


def own_keys() -> list[str]:
    from relman.ui.qt_signing import own_keys as keys

    return keys()


class ReviewAcceptDialog(SimpleFormDialog):
    """Every finding, then who accepts, why, and the key that signs the new anchor."""

    def __init__(self, problems: Sequence[str], by: str, parent: QWidget | None = None) -> None:
        self.findings = QPlainTextEdit("\n".join(f"• {p}" for p in problems))
        self.findings.setObjectName("integrity-findings")
        self.findings.setReadOnly(True)
        self.findings.setMinimumWidth(560)
        self.by_edit = QLineEdit(by)
        self.reason = QPlainTextEdit()
        self.reason.setPlaceholderText("What you checked, and why the current state is right")
        self.reason.setMaximumHeight(80)
        self.key_combo = QComboBox()
        self.key_combo.addItems([CATALOG_KEY] + own_keys())

        def check(values: dict[str, Any]) -> None:
            if not values.get("Reason"):
                raise RelmanError("say what you checked and why the current state is right (Reason)")
            if not values.get("By"):
                raise RelmanError("say who accepts (By)")

        super().__init__(f"Review {len(problems)} integrity finding(s)",
                         [("Findings", self.findings), ("By", self.by_edit), ("Reason", self.reason),
                          ("Sign with", self.key_combo)], check, parent)

    def values(self) -> dict[str, Any]:
        out = super().values()
        key = out.get("Sign with", CATALOG_KEY)
        return {"who": out["By"], "why": out["Reason"], "key": None if key == CATALOG_KEY else key}
