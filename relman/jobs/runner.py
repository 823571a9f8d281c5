"""The runner: turns queued job rows into worker processes and watches them.

`Runner.tick()` does one quick, non-blocking round (the GUI calls it from a QTimer;
`relman jobs run` and `--wait` call it in a loop):

1. reap workers that ended; a job whose worker ended without recording an outcome is marked
   failed with the reason read from the exit status ("killed by signal 9, SIGKILL");
2. check running jobs it did not start (a previous runner's, e.g. before a GUI restart)
   through pid + heartbeat: a pid that is gone or now belongs to another program (machine
   restart), or a heartbeat that stopped, fails the job with the reason;
3. enforce cancel: once the grace period after the request has passed, SIGTERM the worker's
   process group, then SIGKILL it;
4. start queued jobs, oldest first, within the per-device limits (one job per CUDA device,
   `cpu_slots` on the CPU). Jobs that time things (`relman.jobs.kinds.EXCLUSIVE`: latency /
   memory evaluations, optimize) get their device alone: such a job starts only on an idle
   device, nothing else starts there while it runs, and once it is the oldest job waiting for
   a device no younger job starts there, so running jobs drain and it cannot starve (FIFO).

After any job ends, its scratch folder and the blobs it staged without committing are removed.
Only one runner drives a catalog at a time: an OS file lock on `<catalog>/runner.lock`; a
runner that cannot get it does nothing but retries on its next tick. Claiming a job is a single
`UPDATE ... WHERE status = 'queued'` inside BEGIN IMMEDIATE, so a job starts at most once.
Workers live in their own sessions: closing the runner leaves them running, and the next
runner adopts them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from relman.errors import JobError
from relman.jobs import causes, queue
from relman.jobs.devices import DeviceProbe, choose_device, cpu_slots_default, target_device, threads_per_cpu_job

if TYPE_CHECKING:
    from relman.catalog import Catalog

DEFAULT_GRACE_S = 5.0
DEFAULT_KILL_AFTER_S = 3.0
DEFAULT_HEARTBEAT_STALE_S = 30.0
DEFAULT_START_TIMEOUT_S = 60.0
BUSY_TIMEOUT_MS = 1000  # a tick waits at most this long for another writer, then tries next tick
SIGKILL = getattr(signal, "SIGKILL", signal.SIGTERM)  # Windows has no SIGKILL


class RunnerLock:
    """An exclusive, non-blocking OS lock on a file; released by the OS if the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self) -> bool:
        if self._fh is not None:
            return True
        fh = open(self.path, "a+")
        try:
            if os.name == "nt":
                import msvcrt

                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is None:
            return
        try:
            if os.name == "nt":
                import msvcrt

                self._fh.seek(0)
                msvcrt.locking(self._fh.fileno(), msvcrt.LK_UNLCK, 1)
            else:
                import fcntl

                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        finally:
            self._fh.close()
            self._fh = None

    def holder_pid(self) -> int | None:
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None


@dataclass
class _Worker:
    job_id: int
    proc: subprocess.Popen
    device: str
    peak_rss: int = 0  # the largest RSS of the worker's process tree the runner saw (evidence for `oom`)

    def sample_rss(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            rss = root.memory_info().rss + sum(c.memory_info().rss for c in root.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return
        self.peak_rss = max(self.peak_rss, rss)


def _age_s(iso: str | None) -> float | None:
    if not iso:
        return None
    return (datetime.now(timezone.utc) - datetime.fromisoformat(iso)).total_seconds()


def signal_group(pid: int, sig: int) -> bool:
    """Send `sig` to the worker's process group (the worker is its leader). False if gone."""
    try:
        if os.name == "nt":
            import psutil

            procs = [psutil.Process(pid)]
            procs += procs[0].children(recursive=True)
            for p in procs:
                p.terminate() if sig == signal.SIGTERM else p.kill()
        else:
            os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    except Exception:  # psutil.NoSuchProcess on Windows
        return False


class Runner:
    def __init__(self, catalog: "Catalog | Path | str", cpu_slots: int | None = None, *,
                 grace_s: float | None = None, kill_after_s: float = DEFAULT_KILL_AFTER_S,
                 heartbeat_stale_s: float = DEFAULT_HEARTBEAT_STALE_S,
                 start_timeout_s: float = DEFAULT_START_TIMEOUT_S, executor: Any = None) -> None:
        from relman.catalog import Catalog, open_catalog

        if isinstance(catalog, Catalog):
            self.catalog, self._owns_catalog = catalog, False
        else:  # our own connection, so a tick never waits long behind another process's write
            self.catalog, self._owns_catalog = open_catalog(catalog), True
            self.catalog.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.cpu_slots = int(cpu_slots) if cpu_slots is not None else cpu_slots_default()
        if self.cpu_slots < 1:
            raise JobError(f"cpu slots must be at least 1, not {self.cpu_slots}")
        env_grace = os.environ.get("RELMAN_CANCEL_GRACE_S")
        try:
            self.grace_s = float(grace_s if grace_s is not None else (env_grace or DEFAULT_GRACE_S))
        except ValueError:
            raise JobError(f"RELMAN_CANCEL_GRACE_S must be a number of seconds, not '{env_grace}'") from None
        self.kill_after_s = kill_after_s
        self.heartbeat_stale_s = heartbeat_stale_s
        self.start_timeout_s = start_timeout_s
        self.lock = RunnerLock(self.catalog.root / "runner.lock")
        self.probe = DeviceProbe()
        self.workers: dict[int, _Worker] = {}
        self._term_sent: dict[int, float] = {}
        self._kill_sent: dict[int, float] = {}
        self._cleaned_at_start = False
        self._closed = False
        # A remote executor (relman.jobs.ray_executor.RayExecutor) takes the kinds it accepts;
        # everything else runs as local worker processes.
        self.remote = executor

    # -- public ----------------------------------------------------------------------------
    @property
    def has_lock(self) -> bool:
        return self.lock.held

    def tick(self) -> dict[str, list[int]]:
        """One quick, non-blocking round. Returns what happened: {'started': [...], 'ended': [...]}

        Pass a catalog *path* to the Runner (not a shared Catalog) so that it has its own
        connection with a short busy timeout: while another process holds the write lock a
        tick then gives up after ~1 s and the next tick carries on where it stopped."""
        report: dict[str, list[int]] = {"started": [], "ended": []}
        if self._closed or not self.lock.acquire():
            return report
        try:
            self._tick(report)
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
        return report

    def _tick(self, report: dict[str, list[int]]) -> None:
        if not self._cleaned_at_start:
            self._cleaned_at_start = True
            self.catalog.clean_stale()
        self._reap(report)
        if self.remote is not None:
            from relman.jobs.ray_runner import pump

            pump(self, report)
        running = queue.list_jobs(self.catalog, statuses=[queue.RUNNING])
        for job in running:
            if job["id"] not in self.workers:
                self._check_adopted(job, report)
        for job in running:
            if job["id"] in report["ended"]:
                continue
            if self.remote is not None and job["id"] in self.remote.active:
                if job["cancel_requested"]:
                    self.remote.cancel(job["id"], force=(_age_s(job["cancel_requested_at"]) or 0.0) >= self.grace_s)
                continue
            if job["cancel_requested"]:
                self._enforce_cancel(job)
            self._check_heartbeat(job, report)
        self._start_queued(report)

    def idle(self) -> bool:
        """No worker of ours running and nothing queued or running in the catalog."""
        if self.workers or (self.remote is not None and self.remote.active):
            return False
        row = self.catalog.conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)", [queue.QUEUED, queue.RUNNING]).fetchone()
        return row[0] == 0

    def run_forever(self, stop_when_idle: bool = False, poll_s: float = 0.2,
                    should_stop: Callable[[], bool] | None = None) -> None:
        """Drive the queue until stopped (or, with `stop_when_idle`, until nothing is left)."""
        if not self.lock.acquire():
            holder = self.lock.holder_pid()
            raise JobError(f"another runner{f' (pid {holder})' if holder else ''} is already driving the catalog at "
                           f"{self.catalog.root}")
        while True:
            self.tick()
            if should_stop is not None and should_stop():
                return
            if stop_when_idle and self.idle():
                return
            time.sleep(poll_s)

    def close(self) -> None:
        """Let go of the catalog. Running workers keep running; the next runner adopts them."""
        if self._closed:
            return
        self._closed = True
        try:
            for w in list(self.workers.values()):  # reap what already ended, so no zombies remain
                if w.proc.poll() is not None:
                    self._on_exit(w.job_id, w.proc.returncode, {"started": [], "ended": []})
        except sqlite3.OperationalError:  # catalog busy: the next runner settles them
            pass
        self.probe.close()
        if self.remote is not None:
            self.remote.close()
        self.lock.release()
        if self._owns_catalog:
            self.catalog.close()

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ending -----------------------------------------------------------------------------
    def _reap(self, report: dict[str, list[int]]) -> None:
        for job_id, w in list(self.workers.items()):
            rc = w.proc.poll()
            if rc is not None:
                self._on_exit(job_id, rc, report)
            else:
                w.sample_rss()

    def _on_exit(self, job_id: int, returncode: int, report: dict[str, list[int]]) -> None:
        w = self.workers.pop(job_id)
        if os.name != "nt":  # anything the job started and left in its group goes too
            signal_group(w.proc.pid, SIGKILL)
        from relman.jobs.worker import describe_exit

        cause, evidence = causes.from_exit(returncode, peak_rss=w.peak_rss or None)
        if cause == causes.OOM:
            reason = (f"worker process ran out of memory (killed by SIGKILL at a peak of {evidence['peak_rss_mb']:.0f} "
                      f"MiB of {evidence['memory_limit_mb']:.0f} MiB)")
        else:
            reason = describe_exit(returncode)
        self._settle_dead(job_id, reason, cause, evidence)
        report["ended"].append(job_id)

    def _settle_dead(self, job_id: int, reason: str, cause: str = causes.WORKER_KILLED,
                     evidence: dict[str, Any] | None = None) -> None:
        """A worker is gone: if it did not record an outcome, record one (with its typed cause and
        the evidence: the exit, the last heartbeat); then clean up; then retry it by itself when
        the catalog says so and the cause lies in the infrastructure."""
        row = self.catalog.conn.execute(
            "SELECT status, cancel_requested, result_version_id, heartbeat_at, attempts FROM jobs WHERE id = ?",
            [job_id]).fetchone()
        retry = False
        if row and row[0] == queue.RUNNING:
            if row[1]:
                queue.finish(self.catalog, job_id, queue.CANCELLED, message=f"cancelled ({reason})")
            else:
                if row[2] is not None:
                    v = self.catalog.get_version(row[2])
                    reason += f" after committing its result {v.ref}"
                evidence = {**(evidence or {}), "last_heartbeat": row[3], "attempt": row[4]}
                queue.finish(self.catalog, job_id, queue.FAILED, error=reason, cause=cause, evidence=evidence)
                retry = cause in causes.INFRASTRUCTURE and self._auto_retry_allows(int(row[4] or 0))
        self._term_sent.pop(job_id, None)
        self._kill_sent.pop(job_id, None)
        self._cleanup(job_id)
        if retry:
            attempts = queue.retry(self.catalog, job_id, actor="relman-runner (auto-retry)")
            log = queue.log_path_for(self.catalog, job_id)
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"relman runner: job {job_id} lost to {cause} ({reason}); retried automatically "
                        f"(attempt {attempts + 1}; setting {causes.SETTING_AUTO_RETRY})\n")

    def _auto_retry_allows(self, attempts: int) -> bool:
        """`jobs.auto_retry` on (off by default) and fewer than `jobs.auto_retry_max` attempts made."""
        if self.catalog.get_setting(causes.SETTING_AUTO_RETRY, False) is not True:
            return False
        limit = self.catalog.get_setting(causes.SETTING_AUTO_RETRY_MAX, causes.DEFAULT_AUTO_RETRY_MAX)
        return isinstance(limit, int) and not isinstance(limit, bool) and attempts < limit

    def _cleanup(self, job_id: int) -> None:
        shutil.rmtree(queue.workdir_for(self.catalog, job_id), ignore_errors=True)
        self.catalog.release_pending(f"job:{job_id}")
        self.catalog.clean_stale()  # half-written blob files of the dead process

    # -- watching ---------------------------------------------------------------------------
    def _worker_process(self, job: dict[str, Any]):
        """The live worker process of `job`, or (None, why it is gone)."""
        import psutil

        pid = job["pid"]
        try:
            p = psutil.Process(pid)
            if p.status() == psutil.STATUS_ZOMBIE:
                return None, f"worker process {pid} died"
            cmd = p.cmdline()
        except psutil.NoSuchProcess:
            return None, f"worker process {pid} is gone (killed, crashed, or the machine restarted)"
        except psutil.AccessDenied:
            return None, f"worker process {pid} is gone (its pid now belongs to another user's program)"
        if "worker" not in cmd or str(job["id"]) != cmd[-1]:
            return None, f"worker process {pid} is gone (its pid now belongs to another program; machine restarted?)"
        return p, ""

    def _check_adopted(self, job: dict[str, Any], report: dict[str, list[int]]) -> None:
        if self.remote is not None and job["id"] in self.remote.active:
            return
        if (job.get("executor") or "").startswith("ray") and (self.remote is None or job["id"] not in self.remote.active):
            # Ray tasks die with the driver that submitted them: nothing to re-attach to.
            self._settle_dead(job["id"], "its Ray task ended with the runner that submitted it; retry the job",
                              causes.WORKER_KILLED, {"executor": job.get("executor")})
            report["ended"].append(job["id"])
            return
        if job["pid"] is None:
            age = _age_s(job["heartbeat_at"] or job["started_at"])
            if age is not None and age > self.start_timeout_s:
                self._settle_dead(job["id"], f"worker never started (claimed {age:.0f} s ago)", causes.TIMEOUT,
                                  {"claimed_s_ago": round(age, 1)})
                report["ended"].append(job["id"])
            return
        proc, why = self._worker_process(job)
        if proc is None:
            self._settle_dead(job["id"], why, causes.WORKER_KILLED, {"pid": job["pid"], "found": "gone"})
            report["ended"].append(job["id"])

    def _check_heartbeat(self, job: dict[str, Any], report: dict[str, list[int]]) -> None:
        if job["pid"] is None:
            return
        age = _age_s(job["heartbeat_at"])
        if age is None or age <= self.heartbeat_stale_s:
            return
        reason = f"worker stopped responding (no heartbeat for {age:.0f} s)"
        if job["id"] in self.workers:
            signal_group(self.workers[job["id"]].proc.pid, SIGKILL)
            return  # reaped on a later tick; the row is settled there with the exit status
        proc, _ = self._worker_process(job)
        if proc is not None:
            signal_group(proc.pid, SIGKILL)
        self._settle_dead(job["id"], reason, causes.TIMEOUT, {"no_heartbeat_s": round(age, 1)})
        report["ended"].append(job["id"])

    def _enforce_cancel(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        asked_age = _age_s(job["cancel_requested_at"]) or 0.0
        if asked_age < self.grace_s:
            return
        if job_id in self.workers:
            pid = self.workers[job_id].proc.pid
        else:
            proc, _ = self._worker_process(job) if job["pid"] else (None, "")
            if proc is None:
                return
            pid = proc.pid
        now = time.monotonic()
        if job_id not in self._term_sent:
            self._term_sent[job_id] = now
            signal_group(pid, signal.SIGTERM)
        elif job_id not in self._kill_sent and now - self._term_sent[job_id] >= self.kill_after_s:
            self._kill_sent[job_id] = now
            signal_group(pid, SIGKILL)

    # -- starting ---------------------------------------------------------------------------
    def _busy(self) -> tuple[dict[str, int], set[str]]:
        """Running jobs per device, and the devices held by a running exclusive (timing) job."""
        busy: dict[str, int] = {}
        held: set[str] = set()
        for device, kind, params in self.catalog.conn.execute(
                "SELECT device_used, kind, params FROM jobs WHERE status = ? AND device_used IS NOT NULL",
                [queue.RUNNING]):
            busy[device] = busy.get(device, 0) + 1
            if self._exclusive(kind, params):
                held.add(device)
        return busy, held

    def _exclusive(self, kind: str, params: Any) -> bool:
        from relman.jobs.kinds import needs_exclusive

        try:
            return needs_exclusive(kind, json.loads(params) if isinstance(params, str) else dict(params or {}))
        except Exception:  # noqa: BLE001 - unreadable params: the job fails on its own when it runs
            return False

    def _start_queued(self, report: dict[str, list[int]]) -> None:
        """Start queued jobs oldest first. A timing job (exclusive) runs alone on its device: it
        starts only when nothing else runs there, and from the moment it is next in line no
        younger job starts on that device (the running ones drain), so it is never starved.
        Jobs the Ray executor accepts go to the cluster instead (exclusivity is local)."""
        queued = self.catalog.query("SELECT id, kind, params, device FROM jobs WHERE status = ? ORDER BY id LIMIT 200",
                                    [queue.QUEUED])
        if not queued:
            return
        busy, held = self._busy()
        devices = self.probe.poll() if any(j["device"] != "cpu" for j in queued
                                           if self.remote is None or not self.remote.accepts(j["kind"])) else None
        for job in queued:
            if self.remote is not None and self.remote.accepts(job["kind"]):
                from relman.jobs.ray_runner import launch_remote

                launch_remote(self, job, report)
                continue
            exclusive = self._exclusive(job["kind"], job["params"])
            try:
                target = target_device(job["device"], devices, busy)
                device = None if target in held else choose_device(job["device"], devices, busy, self.cpu_slots)
            except JobError as e:
                queue.finish(self.catalog, job["id"], queue.FAILED, error=str(e), from_status=queue.QUEUED,
                             cause=causes.BAD_INPUT, evidence={"device": job["device"]})
                report["ended"].append(job["id"])
                continue
            if exclusive and target is not None:
                if device is None or busy.get(target, 0) > 0:
                    held.add(target)  # waits for the device to drain; nothing younger starts there
                    continue
                device = target
            if device is None:
                continue
            if self._launch(job["id"], device):
                busy[device] = busy.get(device, 0) + 1
                if exclusive:
                    held.add(device)
                report["started"].append(job["id"])

    def _launch(self, job_id: int, device: str) -> bool:
        from relman.catalog.catalog import utcnow
        from relman.jobs.launch import start_worker

        now = utcnow()
        with self.catalog.transaction():
            if not queue.start_attempt(self.catalog, job_id, device=device, executor="local", message="starting", at=now):
                return False  # cancelled (or taken) in the meantime
            row = self.catalog.conn.execute("SELECT log_path, attempts FROM jobs WHERE id = ?", [job_id]).fetchone()
        log_path = Path(row[0] or queue.log_path_for(self.catalog, job_id))
        threads = threads_per_cpu_job(self.cpu_slots) if device == "cpu" else (os.cpu_count() or 1)
        env = {"RELMAN_JOB_ID": str(job_id), "RELMAN_TORCH_THREADS": str(threads),
               "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        try:
            if row[1] > 1:
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(f"\n=== attempt {row[1]} ({now}) ===\n")
            proc = start_worker(self.catalog.root, job_id, log_path, env=env)
        except OSError as e:
            import errno

            disk = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
            queue.finish(self.catalog, job_id, queue.FAILED, error=f"could not start the worker process ({e})",
                         cause=causes.DISK_FULL if disk else causes.BUG, evidence={"exception": type(e).__name__})
            return False
        self.workers[job_id] = _Worker(job_id, proc, device)
        queue.set_pid(self.catalog, job_id, proc.pid)
        return True
