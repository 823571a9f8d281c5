"""Release decisions from the window: promote (button, drag on the board, menu), reject,
approve, canary share, roll back; the gate badges of the board; audit verification.

Nothing here reads an artifact on the GUI thread: badges and the promotion dialog use the
gate report with `rehash=False` (artifact checks answered from earlier verifications, else
"pending"), and a promotion whose policy re-hashes the artifacts (`verify_artifacts`) is
queued as a "promote" job and tracked; the others are one quick transaction, run inline.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from PySide6.QtWidgets import QDoubleSpinBox, QLabel, QPlainTextEdit

from relman.errors import RelmanError
from relman.ui.controllers import ActionSpec, Controller, needs
from relman.ui.qt_board import NEXT_PHASE
from relman.ui.snapshot import VersionRow

GateStatus = tuple[str, str]


class ReleaseActions(Controller):
    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self._gate_cache: dict[tuple[Any, int], GateStatus] = {}
        self._gate_tips: dict[int, str] = {}  # version id -> what the badge means (failing rules)

    def actions(self) -> list[ActionSpec]:
        return [
            ActionSpec("promote", "Promote…", "Ctrl+P", self.action_promote),
            ActionSpec("rollback", "Roll back production", "Ctrl+Shift+R", lambda: self._rollback(None)),
            ActionSpec("verify", "Verify audit chain", "Ctrl+Shift+V", self.action_verify),
            ActionSpec("policy", "Edit release policy…", "Ctrl+Shift+L", self.action_policy,
                       "The current model's transitions, gate rules and approvals (relman.ui.qt_policy)"),
        ]

    def action_policy(self) -> Any:
        from relman.ui.qt_policy import open_policy_editor

        self.forget()  # gate badges follow the saved policy
        return open_policy_editor(self.window)

    def forget(self) -> None:
        """Drop cached gate badges (the catalog changed or another one was opened)."""
        self._gate_cache.clear()
        self._gate_tips.clear()

    # -- gate badges -------------------------------------------------------------------------------
    def gate_status(self, v: VersionRow) -> GateStatus:
        """("pass" | "fail" | "unknown" | "none", short text) for `v`'s next phase, from the
        gate report without reading any artifact (cached per catalog state)."""
        from relman.app.release import gates

        to = NEXT_PHASE.get(v.phase)
        if v.phase == "production":
            return "pass", f"in production{f' · {v.canary_share:g}%' if v.canary_share else ''}"
        if to is None:
            return "none", v.phase
        busy = self.window.job_actions.working_on(v.id)
        if busy is not None:
            return "unknown", f"{busy[1]} (job {busy[0]})"
        key = (self.window.snapshot.token, v.id)
        if key in self._gate_cache:
            return self._gate_cache[key]
        try:
            report = gates(self.catalog, v.id, to, rehash=False)
            failing = len(report.failing)
            if not report.allowed:
                status = ("none", f"→ {to} not allowed by policy")
                tip = f"The policy of {v.model} does not allow {v.phase} → {to}."
            elif report.nothing_checked:
                status = ("skipped", f"○ {report.applied_text()} → {to}")
                tip = (f"Nothing was checked for {v.phase} → {to}: every rule was skipped "
                       "(skipped is not passed):\n" + "\n".join(f"○ {r.rule}: {r.reason}" for r in report.rules))
            elif report.passed:
                status = ("pass", f"✓ gates pass → {to} · {len(report.applied)}/{len(report.rules)}")
                tip = f"Every gate rule for {v.phase} → {to} passes:\n" + "\n".join(
                    f"✓ {r.rule}" + (f" ({r.reason})" if r.reason else "") for r in report.rules)
            else:
                status = ("fail", f"✗ {failing} gate{'s' if failing != 1 else ''} FAIL → {to}")
                tip = f"Failing gate rules for {v.phase} → {to}:\n" + "\n".join(
                    f"✗ {r.rule}: {r.reason}" for r in report.failing)
        except RelmanError as e:
            status = ("unknown", f"gates → {to}: {str(e)[:40]}")
            tip = f"The gates → {to} could not be checked: {e}"
        self._gate_tips[v.id] = tip + "\nSelect the card and press Promote for the full gate report."
        self._gate_cache[key] = status
        return status

    def gate_tip(self, v: VersionRow) -> str:
        """The badge's tooltip: the rules behind it (failing ones first), once checked."""
        if v.phase == "production":
            return f"{v.ref} is in production" + (f", serving {v.canary_share:g}% as canary" if v.canary_share else "")
        return self._gate_tips.get(v.id, "Select the card to check its gates toward the next phase.")

    # -- promote / reject ------------------------------------------------------------------------------
    def action_promote(self) -> None:
        v = self.selected_or_error("promote it")[0]
        if v.phase not in NEXT_PHASE:
            raise RelmanError(f"{v.ref} is {v.phase}; only draft, candidate and staging versions can be promoted")
        self.request_transition(v.id, NEXT_PHASE[v.phase])

    def approvals_for(self, version_id: int, to_phase: str) -> list[dict[str, Any]]:
        from relman.app.release import approvals

        return list(approvals(self.catalog, version_id, to_phase))

    # -- hooks the changes trigger (relman/release/hooks.py): reported when their jobs end ----------------
    def _report_hooks(self, result: Any) -> None:
        from relman.ui.qt_hooks import track_hooks

        track_hooks(self.window, result if isinstance(result, dict) else None)

    @contextlib.contextmanager
    def _hooks_reported(self) -> Iterator[None]:
        """A refusal (gates, a catalog failing verification) may trigger hooks: track them too."""
        try:
            yield
        except RelmanError as e:
            self._report_hooks(getattr(e, "hooks", None))
            raise

    def request_transition(self, version_id: int, to_phase: str) -> None:
        self.window.guarded("promote", self._transition, version_id, to_phase)

    def _version(self, version_id: int) -> VersionRow:
        v = self.window.snapshot.by_id().get(version_id)
        if v is not None:
            return v
        from relman.ui.snapshot import row_from_catalog

        return row_from_catalog(self.catalog, version_id)

    def _transition(self, version_id: int, to_phase: str) -> None:
        from relman.app import release
        from relman.ui.qt_dialogs import SimpleFormDialog
        from relman.ui.qt_promote import PromoteDialog

        v = self._version(version_id)
        if v.phase == to_phase:
            return
        if to_phase == "rejected":
            why = QPlainTextEdit()
            vals = self.run_dialog(SimpleFormDialog(f"Reject {v.ref}", [("Reason", why)], needs("Reason"),
                                                    self.window))
            if vals:
                with self._hooks_reported():
                    res = release.reject(self.catalog, v.ref, why=vals["Reason"])
                self.info(f"{v.ref} rejected")
                self._report_hooks(res)
            self.window.refresh(force=True)
            return
        report, gate_error = None, ""
        try:
            report = release.gates(self.catalog, v.ref, to_phase, rehash=False)
        except RelmanError as e:
            gate_error = str(e)
        vals = self.run_dialog(PromoteDialog(v.ref, v.phase, to_phase, report, self.approvals_for(v.id, to_phase),
                                             self.window, gate_error))
        if not vals:
            return
        done_text = f"{v.ref} → {to_phase}" + (" (gates overridden)" if vals["override"] else "")
        if release.verifies_artifacts(self.catalog, v.ref, to_phase):
            from relman.app.background import queue_promotion

            job = queue_promotion(self.catalog, v.ref, to_phase, why=vals["why"], override=vals["override"])

            def done(row: dict[str, Any]) -> None:
                self.info(done_text)
                self._report_hooks(row.get("result"))
                self.window.refresh(force=True)
            self.window.job_actions.track(job, f"Promote {v.ref} → {to_phase}", done, version_id=v.id,
                                          badge=f"⧗ promoting → {to_phase}, checking artifacts…")
            self.window.refresh(force=True)
            return
        try:
            with self._hooks_reported():
                res = release.promote(self.catalog, v.ref, to_phase, why=vals["why"], override=vals["override"])
        finally:
            self.window.refresh(force=True)
        self.info(done_text)
        self._report_hooks(res)

    # -- rollback, canary share, approvals ---------------------------------------------------------------
    def request_rollback(self, model: str | None = None) -> None:
        self.window.guarded("rollback", self._rollback, model)

    def _rollback(self, model: str | None) -> None:
        """The confirmation names the version that returns to production and where the current
        one goes (`rollback_plan`), before anything changes; the result says it again."""
        from relman.app.release import rollback, rollback_plan
        from relman.ui.qt_dialogs import SimpleFormDialog

        model = model or self.window.current_model()
        if not model:
            raise RelmanError("no model to roll back")
        plan = rollback_plan(self.catalog, model)  # refusals (nothing to roll back to) before the dialog
        summary = QLabel(f"{plan['restores']} returns to production ({plan['restored_from']} now); "
                         f"{plan['removes']} leaves production and becomes {plan['removed_to']}.")
        summary.setObjectName("rollback-summary")
        summary.setWordWrap(True)
        why = QPlainTextEdit()
        vals = self.run_dialog(SimpleFormDialog(f"Roll back {model} to {plan['restores']}",
                                                [("What happens", summary), ("Reason", why)],
                                                needs("Reason"), self.window))
        if vals:
            try:
                with self._hooks_reported():
                    result = rollback(self.catalog, model, why=vals["Reason"])
            finally:
                self.window.refresh(force=True)
            self.info(f"{model}: rolled back; {result['ref']} is back in production, "
                      f"{model}@{result['removed']} is {result['removed_to']}")
            self._report_hooks(result)

    def request_rollout(self, version_id: int) -> None:
        self.window.guarded("rollout", self._rollout, version_id)

    def _rollout(self, version_id: int) -> None:
        from relman.app.release import rollout
        from relman.ui.qt_dialogs import SimpleFormDialog

        v = self._version(version_id)
        share = QDoubleSpinBox()
        share.setRange(0.0, 100.0)
        share.setValue(min(100.0, (v.canary_share or 0) * 2 or 5.0))
        share.setSuffix(" %")
        why = QPlainTextEdit()
        why.setObjectName("canary-reason")
        why.setPlaceholderText("why this share now (recorded in the audit log)")
        vals = self.run_dialog(SimpleFormDialog(f"Canary share for {v.ref}", [("Share", share), ("Reason", why)],
                                                needs("Reason"), self.window))
        if vals:
            try:
                rollout(self.catalog, v.ref, vals["Share"], why=vals["Reason"])
            finally:
                self.window.refresh(force=True)
            self.info(f"{v.ref}: canary share {vals['Share']:g}% ({vals['Reason']})")

    def request_approve(self, version_id: int) -> None:
        self.window.guarded("approve", self._approve, version_id)

    def _approve(self, version_id: int) -> None:
        from relman.app.release import approve
        from relman.catalog.catalog import current_user

        v = self._version(version_id)
        to = NEXT_PHASE.get(v.phase)
        if to is None:
            raise RelmanError(f"{v.ref} is {v.phase}; there is no next phase to approve")
        from relman.ui.qt_signing import SignedApproveDialog  # By, Comment, Sign with (a key), New key

        vals = self.run_dialog(SignedApproveDialog(v.ref, to, current_user(), self.window))
        if vals:
            try:
                approve(self.catalog, v.ref, to, by=vals["By"], comment=vals["Comment"], key=vals["key"])
            finally:
                self.window.refresh(force=True)
            self.info(f"{v.ref}: approved for {to} by {vals['By']}")

    # -- audit ------------------------------------------------------------------------------------------
    def action_verify(self) -> None:
        ok, text = self.window.show_view("audit").verify()
        (self.info if ok else self.error)(text)

    def action_accept_integrity(self) -> Any:
        """The banner's "Review and accept…": every finding, then who, why and which key; OK calls
        `integrity.accept_state` (what `relman audit accept` calls), errors show in the dialog."""
        from relman.catalog.catalog import current_user
        from relman.catalog.integrity import accept_state
        from relman.ui.qt_integrity_banner import ReviewAcceptDialog

        problems = self.window.integrity.check()
        if not problems:
            self.info("the catalog verifies: nothing to accept")
            return None
        dialog = ReviewAcceptDialog(problems, current_user(), self.window)
        values = self.run_dialog(dialog, lambda v: accept_state(self.catalog, who=v["who"], why=v["why"],
                                                                key_name=v["key"]))
        if values is None:
            return None
        res = dialog.submitted
        self.forget()
        self.window.integrity.check()
        self.window.refresh(force=True)
        self.info(f"accepted the current state ({len(res['problems'])} finding(s) recorded, "
                  f"{res['superseded_checkpoints']} checkpoint(s) set aside)")
        return res
