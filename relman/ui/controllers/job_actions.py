"""Jobs from the window: the runner it drives, cancel and retry, and the jobs it queued.

`track(job_id, label, on_done)` remembers a job the window queued (an import, a promotion
with artifact checks, an export…); each poll that sees the jobs table change looks up the
tracked jobs and, for each that ended, shows what happened (or runs `on_done`). This is how
the window learns the outcome of file work without waiting on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from relman.errors import RelmanError
from relman.ui.controllers import Controller

FINISHED = ("succeeded", "failed", "cancelled")


@dataclass
class Tracked:
    label: str
    on_done: Callable[[dict[str, Any]], None] | None
    version_id: int | None = None  # the version it works on (the board marks it…)
    badge: str = ""  # …with this text until the job ends


class JobActions(Controller):
    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.runner: Any = None
        self.runner_error = ""
        self.tracked: dict[int, Tracked] = {}

    # -- the runner ----------------------------------------------------------------------------
    def start_runner(self, cpu_slots: int | None) -> bool:
        from relman.jobs.runner import Runner

        try:
            self.runner = Runner(self.window.catalog_path, cpu_slots)
        except RelmanError as e:
            self.runner_error = str(e)
            self.error(f"The job runner could not start: {e}")
            return False
        self.runner_error = ""
        return True

    def close_runner(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None

    def tick(self) -> bool:
        """One runner round; False when the runner stopped (the window stops its timer)."""
        if self.runner is None:
            return True
        try:
            report = self.runner.tick()
        except RelmanError as e:
            self.error(f"The job runner stopped: {e}")
            return False
        if not self.runner.has_lock:  # e.g. `relman jobs run` in a terminal drives this catalog
            holder = self.runner.lock.holder_pid()
            text = f"Jobs are run by another runner{f' (pid {holder})' if holder else ''}; this window only shows them"
            if self.window.statusBar().currentMessage() != text:
                self.window.messages_log.status(text)
        if report and (report.get("started") or report.get("ended")):
            self.window.poll()
        return True

    # -- jobs the window queued ----------------------------------------------------------------------
    def track(self, job_id: int, label: str, on_done: Callable[[dict[str, Any]], None] | None = None,
              version_id: int | None = None, badge: str = "") -> int:
        self.tracked[int(job_id)] = Tracked(label, on_done, version_id, badge or f"⧗ {label}…")
        self.window.messages_log.status(f"{label}: queued (job {job_id})…")
        return int(job_id)

    def working_on(self, version_id: int) -> tuple[int, str] | None:
        """(job id, badge text) of a tracked job working on `version_id`, if any."""
        for job_id, t in self.tracked.items():
            if t.version_id == version_id:
                return job_id, t.badge
        return None

    def busy(self) -> bool:
        """Whether a job the window queued has not ended yet."""
        return bool(self.tracked)

    def check_tracked(self) -> None:
        if not self.tracked:
            return
        ids = sorted(self.tracked)
        rows = self.catalog.query(f"SELECT id, status, message, error, result FROM jobs WHERE id IN "
                                  f"({','.join('?' * len(ids))})", ids)
        import json

        for row in rows:
            if row["status"] not in FINISHED:
                continue
            t = self.tracked.pop(row["id"])
            try:
                row["result"] = json.loads(row["result"] or "{}")
            except ValueError:
                row["result"] = {}
            if t.on_done is not None and row["status"] == "succeeded":
                t.on_done(row)
            elif row["status"] == "succeeded":
                self.info(f"{t.label}: done")
            elif row["status"] == "cancelled":
                self.info(f"{t.label}: cancelled")
            else:
                self.error(f"{t.label} failed: {row['error'] or 'see the job log'}")
        missing = set(ids) - {r["id"] for r in rows}
        for job_id in missing:  # e.g. another catalog was opened
            self.tracked.pop(job_id, None)

    def forget_tracked(self) -> None:
        self.tracked.clear()

    # -- cancel / retry --------------------------------------------------------------------------------
    def cancel_job(self, job_id: int) -> None:
        def do() -> None:
            from relman.app.jobs import cancel_job

            cancel_job(self.catalog, job_id)
            self.window.refresh(force=True)
        self.window.guarded("cancel", do)

    def retry_job(self, job_id: int) -> None:
        def do() -> None:
            from relman.app.jobs import retry_job

            retry_job(self.catalog, job_id)
            self.window.refresh(force=True)
        self.window.guarded("retry", do)
