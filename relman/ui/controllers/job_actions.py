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
from relman.ui.controllers import ActionSpec, Controller

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
        self.focus_job: int | None = None  # the Jobs view selects and scrolls to it when it next reads the jobs
        self.executor_text = "local worker processes"
        self.standby: Any = None  # the stand-by runner process (relman.ui.runner_standby)
        self._cpu_slots: int | None = None

    def actions(self) -> list[ActionSpec]:
        return [ActionSpec("executor", "Where jobs run…", "", self.action_executor,
                           "Run this catalog's jobs as local worker processes or on a Ray cluster at an address")]

    # -- the runner ----------------------------------------------------------------------------
    def start_runner(self, cpu_slots: int | None) -> bool:
        from relman.jobs.runner import Runner

        self._cpu_slots = cpu_slots
        try:
            self.runner = Runner(self.window.catalog_path, cpu_slots)
        except RelmanError as e:
            self.runner_error = str(e)
            self.error(f"The job runner could not start: {e}")
            return False
        self.runner_error = ""
        if self.window.catalog.get_setting("executor.ray_address"):
            # connect after the window is up: importing ray and joining a cluster takes seconds
            from PySide6.QtCore import QTimer

            QTimer.singleShot(0, self.connect_executor)
        return True

    def connect_executor(self) -> bool:
        """Attach the catalog's Ray executor (`relman jobs executor --ray`) to the runner; a
        failure is a message and jobs keep running as local processes."""
        from relman.jobs.ray_executor import executor_from_settings

        if self.runner is None:
            return False
        if self.runner.remote is not None:
            self.runner.remote.close()
            self.runner.remote = None
        self.executor_text = "local worker processes"
        try:
            executor = executor_from_settings(self.window.catalog)
        except RelmanError as e:
            self.error(f"Jobs run as local processes: {e}")
            return False
        if executor is None:
            return False
        self.runner.remote = executor
        self.executor_text = f"the Ray cluster at {executor.address}"
        self.window.messages_log.status(f"Jobs run on {self.executor_text}", 10000)
        return True

    def action_executor(self) -> None:
        from PySide6.QtWidgets import QCheckBox, QLineEdit

        from relman.jobs.ray_executor import (SETTING_ADDRESS, SETTING_ALLOW_REMOTE, SETTING_TOKEN_FILE, check_address,
                                              check_token_file)
        from relman.ui.qt_dialogs import SimpleFormDialog

        cat = self.window.catalog
        address = QLineEdit(cat.get_setting(SETTING_ADDRESS) or "")
        address.setObjectName("ray-address")
        address.setPlaceholderText("empty: local worker processes; 'local' or HOST:PORT for Ray")
        remote = QCheckBox("Allow an address that is not on this machine (trusted lab network only)")
        remote.setChecked(bool(cat.get_setting(SETTING_ALLOW_REMOTE, False)))
        token = QLineEdit(cat.get_setting(SETTING_TOKEN_FILE) or "")
        token.setObjectName("ray-token-file")
        token.setPlaceholderText("empty: Ray's own (RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)")

        def check(values: dict[str, Any]) -> None:  # the CLI's validation ('relman jobs executor --ray')
            if values["Run jobs on a Ray cluster at"]:
                check_address(values["Run jobs on a Ray cluster at"], values["Remote"])
                if values["Token file"]:
                    check_token_file(values["Token file"])
        vals = self.run_dialog(SimpleFormDialog("Where jobs run", [("Run jobs on a Ray cluster at", address),
                                                                   ("Remote", remote), ("Token file", token)],
                                                check, self.window))
        if vals is not None:
            self.set_executor(vals["Run jobs on a Ray cluster at"] or None, vals["Remote"], vals["Token file"] or None)

    def set_executor(self, address: str | None, allow_remote: bool = False, token_file: str | None = None) -> None:
        """Store where this catalog's jobs run (as `relman jobs executor` does) and reconnect."""
        from relman.jobs.ray_executor import set_executor

        address = set_executor(self.window.catalog, address, allow_remote, token_file)
        if address and self.runner is not None:
            self.connect_executor()
        else:
            if self.runner is not None and self.runner.remote is not None:
                self.runner.remote.close()
                self.runner.remote = None
            self.executor_text = "local worker processes"
            self.info("Jobs run as local worker processes")

    def closing_note(self) -> str:
        """What happens to unfinished jobs when the window closes ('' when there are none)."""
        try:
            counts = dict(self.window.catalog.conn.execute(
                "SELECT status, COUNT(*) FROM jobs WHERE status IN ('running', 'queued') GROUP BY status").fetchall())
        except Exception:  # a vanished catalog: nothing to say
            return ""
        running, queued = counts.get("running", 0), counts.get("queued", 0)
        parts = []
        if running:
            one = running == 1
            parts.append(f"{running} running job{'' if one else 's'} keep{'s' if one else ''} running in "
                         f"{'its' if one else 'their'} worker process{'' if one else 'es'}")
        if queued:
            standby = self.standby is not None and self.standby.poll() is None
            where = (f"in the stand-by runner (pid {self.standby.pid}), which ends when the queue is empty" if standby
                     else "when relman is opened again (or 'relman jobs run' runs)")
            parts.append(f"{queued} queued job{'s' if queued != 1 else ''} start{'s' if queued == 1 else ''} {where}")
        if not parts:
            return ""
        return "; ".join(parts) + ". Their results are recorded in the catalog."

    def close_runner(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None
        self.release_standby()

    # -- the stand-by runner: queued jobs outlive the window -------------------------------------
    def ensure_standby(self) -> None:
        """Start the stand-by runner once the catalog has unfinished jobs and this window runs
        them (see relman.ui.runner_standby): if this process dies, it runs what is left."""
        if self.runner is None or not self.runner.has_lock:
            return
        if self.standby is not None and self.standby.poll() is None:
            return
        row = self.window.catalog.conn.execute(
            "SELECT 1 FROM jobs WHERE status IN ('queued', 'running') LIMIT 1").fetchone()
        if row is None:
            return
        from relman.ui.runner_standby import start

        try:
            self.standby = start(self.window.catalog.root, self._cpu_slots)
        except OSError as e:
            self.standby = None
            self.window.messages_log.status(f"No stand-by runner ({e}): queued jobs wait for the next window")

    def release_standby(self) -> None:
        from relman.ui.runner_standby import release

        release(self.standby)

    def where_jobs_run(self) -> str:
        """One line for the Jobs view: who runs this catalog's jobs now and after the window."""
        if self.runner is None:
            return "This window does not run jobs; 'relman jobs run' or another window does"
        if not self.runner.has_lock:
            holder = self.runner.lock.holder_pid()
            return f"Jobs run in another runner{f' (pid {holder})' if holder else ''}"
        if self.standby is not None and self.standby.poll() is None:
            return (f"Jobs run from this window; if it closes or crashes, the stand-by runner (pid {self.standby.pid}) "
                    "runs the queued ones until the queue is empty")
        return "Jobs run from this window"

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
        self.ensure_standby()
        return True

    # -- jobs the window queued ----------------------------------------------------------------------
    def track(self, job_id: int, label: str, on_done: Callable[[dict[str, Any]], None] | None = None,
              version_id: int | None = None, badge: str = "") -> int:
        self.tracked[int(job_id)] = Tracked(label, on_done, version_id, badge or f"⧗ {label}…")
        self.window.messages_log.status(f"{label}: queued as job {job_id}, {self.where_it_runs(int(job_id))}…")
        self.show_job(int(job_id))
        return int(job_id)

    def where_it_runs(self, job_id: int) -> str:
        """"runs locally" / "runs on Ray at ADDR": where this window's runner will run the job."""
        remote = getattr(self.runner, "remote", None)
        try:
            kind = self.window.catalog.conn.execute("SELECT kind FROM jobs WHERE id = ?", [job_id]).fetchone()
        except Exception:  # noqa: BLE001 - a vanished catalog: say nothing wrong
            kind = None
        if remote is not None and kind is not None and remote.accepts(kind[0]):
            return f"runs on Ray at {remote.address}"
        return "runs locally"

    def show_job(self, job_id: int) -> None:
        """Have the Jobs view select and scroll to `job_id` (now if it is built, else when it is)."""
        self.focus_job = int(job_id)
        jobs = self.window.built_views().get("jobs")
        if jobs is not None:
            jobs.on_jobs(self.window.catalog)

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
                before = len(self.window.messages)
                t.on_done(row)
                text = self.window.messages[-1][1] if len(self.window.messages) > before else f"{t.label}: done"
            elif row["status"] == "succeeded":
                text = f"{t.label}: done"
                self.info(text)
            elif row["status"] == "cancelled":
                text = f"{t.label}: cancelled"
                self.info(text)
            else:  # no box to dismiss: the Jobs view shows the error inline, the traceback behind Details
                text = f"{t.label} failed: {row['error'] or 'see the job log'} (job {row['id']}, see Jobs)"
                self.window.messages_log.error(text, modal=False)
                self.show_job(int(row["id"]))
            self.window.messages_log.notify(f"relman: job {row['id']} {row['status']}", text,
                                            error=row["status"] == "failed")
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
