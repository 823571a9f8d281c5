"""The Ray executor: the runner hands claimed jobs to a Ray cluster instead of local processes.

The runner stays the only writer of the catalog. For each job it submits a Ray task
(`relman.jobs.ray_task.run_job`) with the job's spec, a snapshot of the catalog's rows
(`relman.jobs.remote_catalog`) and ObjectRefs of the blobs the job reads (each blob is put
into Ray's object store once per runner and cached on disk once per node). Resources follow
the job's device: `num_gpus=1` for a CUDA job, `num_cpus` for a CPU job. Progress, loss points,
log lines, heartbeats and the cancel flag travel through one small channel actor that the
runner polls on every tick; when a task ends the runner replays its recorded writes on the
catalog (one transaction each, as a local worker's) or fails the job with the reason: the
task's exception and traceback tail, a dead worker process, a lost node, out of memory.

Cancel: the flag first (the job stops at its next check), then `ray.cancel(force=True)`
once the grace period is over. Ray tasks belong to the driver that submitted them and die with
it, so a runner that finds a job marked running on Ray that it did not submit fails it cleanly
("retry it"), and a retried job starts from scratch. Only job kinds whose writes go through
the recorded catalog methods (`REMOTE_KINDS`) run on Ray; the rest (imports of local files,
optimize, test kinds that write rows directly) run as local processes beside it.

Security: Ray's own protection is a cluster token (RAY_AUTH_MODE=token; the token in the file
RAY_AUTH_TOKEN_PATH names, in RAY_AUTH_TOKEN, or in ~/.ray/auth_token, which `ray start --head`
uses when it exists). relman points Ray's own loader at a token file (`--ray-token-file`, or
the catalog's setting `executor.ray_token_file`, which stores where the file is, never the
token), and checks the token once against the cluster's GCS before `ray.init`, so a refused
token is one line at once instead of Ray's 20 s of retries. relman refuses any address that is
not on the loopback interface unless `allow_remote` is given, and the README says to use that
on a trusted lab network only.

Timing jobs (`relman.jobs.kinds.needs_exclusive`) ask Ray for every CPU of the largest node, so
Ray's own resource accounting runs them alone on their node, as the local runner runs them
alone on their device; while one waits for a node to drain, no younger CPU job is submitted.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relman.errors import JobError
from relman.netaddr import is_loopback_host

if TYPE_CHECKING:
    from relman.catalog import Catalog

REMOTE_KINDS = frozenset({"noop", "sleep", "fail", "spawn", "device_info", "compress", "evaluate"})
SETTING_ADDRESS = "executor.ray_address"
SETTING_ALLOW_REMOTE = "executor.ray_allow_remote"
SETTING_TOKEN_FILE = "executor.ray_token_file"  # where the cluster's token is; never the token itself
TOKEN_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
DRAIN_WAIT_S = 0.05  # the longest a runner tick waits for the channel's reply
# Read by Ray when it is first imported: "0" makes a local instance bind and advertise 127.0.0.1
# instead of the machine's network address (Ray's own switch for single-machine use).
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _host(text: str) -> str:
    hostport = text.split("://", 1)[1] if "://" in text else text
    return hostport.rsplit(":", 1)[0].strip("[]") if ":" in hostport else hostport


def is_loopback(address: str) -> bool:
    """`local`, localhost or a loopback IP: nothing leaves this machine."""
    text = (address or "").strip()
    if text == "local":
        return True
    return is_loopback_host(_host(text))


def check_address(address: str, allow_remote: bool = False) -> str:
    """`local` (start a private Ray instance on this machine's loopback interface) or
    `HOST:PORT` / `ray://HOST:PORT` of a running cluster; non-loopback hosts need `allow_remote`."""
    text = (address or "").strip()
    if not text:
        raise JobError("a Ray address is empty (use 'local' or HOST:PORT)")
    if text == "local":
        return text
    host = _host(text)
    if not host:
        raise JobError(f"Ray address '{address}' has no host (use HOST:PORT, e.g. 127.0.0.1:6379)")
    if not is_loopback(text) and not allow_remote:
        raise JobError(f"Ray address '{address}' is not on this machine; Ray clusters have no per-user access "
                       "control, so relman only talks to a remote one when told to (--allow-remote, on a "
                       "trusted lab network only)")
    return text


def probe_address(address: str, timeout_s: float = 3.0) -> None:
    """Refuse at once an address where nothing listens (Ray itself would retry for minutes)."""
    import socket

    hostport = address.split("://", 1)[1] if "://" in address else address
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    try:
        port_n = int(port)
    except ValueError:
        raise JobError(f"Ray address '{address}' needs a port (HOST:PORT, e.g. 127.0.0.1:6379)") from None
    try:
        with socket.create_connection((host, port_n), timeout=timeout_s):
            pass
    except OSError as e:
        raise JobError(f"could not reach a Ray cluster at {address}: {e.strerror or e}") from None


def check_token_file(path: str) -> str:
    """The absolute path of a readable, non-empty token file (the token itself is not kept)."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise JobError(f"the Ray token file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise JobError(f"cannot read the Ray token file {p}: {getattr(e, 'strerror', None) or e}") from None
    if not text or len(text.split()) != 1:
        raise JobError(f"the Ray token file {p} does not hold one token (it is empty or has spaces)")
    return str(p.resolve())


def use_token(token_file: str | None) -> bool:
    """Set up Ray's own token loader in this process: with `token_file`, token mode reading that
    file; without, token mode when Ray's usual sources hold a token and RAY_AUTH_MODE is unset
    (what `ray start` itself does). Returns whether a token will be sent."""
    if token_file:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = check_token_file(token_file)
        os.environ.pop("RAY_AUTH_TOKEN", None)
    elif "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get(
            "RAY_AUTH_TOKEN_PATH") or (Path.home() / ".ray" / "auth_token").is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"
    try:  # the C++ loader caches the mode and the token: make it read them again
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # a Ray without token authentication
        return False
    return os.environ.get("RAY_AUTH_MODE", "").lower() == "token"


def refused(address: str, e: BaseException, sent: bool) -> JobError:
    text = str(e).strip().split(". ")[0] if str(e).strip() else type(e).__name__
    hint = "" if sent else " (no token given: --ray-token-file PATH, or 'relman jobs executor --ray-token-file')"
    return JobError(f"Ray cluster at {address} refused the token: {text}{hint}")


def _auth_error(e: BaseException | None) -> BaseException | None:
    """The AuthenticationError behind `e` (Ray wraps it in RuntimeError / ConnectionError)."""
    try:
        from ray.exceptions import AuthenticationError
    except ImportError:
        return None
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, AuthenticationError) or "InvalidAuthToken" in str(e):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def probe_token(address: str, sent: bool) -> None:
    """Ask the cluster's GCS once whether it takes our token (Ray's `init` would retry for 20 s
    and then say only that it could not connect)."""
    if address.startswith("ray://"):
        return  # Ray client: no GCS of its own to ask
    try:
        from ray._raylet import GcsClient
    except ImportError:
        return
    try:
        GcsClient(address=address).cluster_id  # noqa: B018 - the call is the check
    except Exception as e:  # noqa: BLE001 - only a refused token is ours to report; init reports the rest
        if _auth_error(e) is not None:
            raise refused(address, _auth_error(e) or e, sent) from None


def _relman_src() -> str | None:
    import relman
    from relman.jobs.launch import is_frozen

    return None if is_frozen() else str(Path(relman.__file__).resolve().parent.parent)


def _channel_class():
    import ray

    @ray.remote(num_cpus=0, max_restarts=0)
    class Channel:
        """Mailbox between remote jobs and the runner: the runner drains it every tick."""

        def __init__(self) -> None:
            self.updates: dict[int, dict[str, Any]] = {}
            self.cancel: set[int] = set()

        def _u(self, job_id: int) -> dict[str, Any]:
            return self.updates.setdefault(job_id, {"progress": None, "points": [], "log": [], "beat": False,
                                                    "started": None})

        def started(self, job_id: int, ip: str, node_id: str, pid: int) -> None:
            u = self._u(job_id)
            u["started"], u["beat"] = (ip, node_id, pid), True

        def report(self, job_id: int, progress: Any, points: list) -> None:
            u = self._u(job_id)
            if progress is not None:
                u["progress"] = progress
            u["points"].extend(points)
            u["beat"] = True

        def log(self, job_id: int, line: str) -> None:
            self._u(job_id)["log"].append(line)

        def beat(self, job_id: int) -> None:
            self._u(job_id)["beat"] = True

        def take(self) -> dict[int, dict[str, Any]]:
            out, self.updates = self.updates, {}
            return out

        def set_cancel(self, job_id: int) -> None:
            self.cancel.add(job_id)

        def is_cancelled(self, job_id: int) -> bool:
            return job_id in self.cancel

    return Channel


@dataclass
class RemoteJob:
    job_id: int
    ref: Any
    device: str
    shas: list[str]
    submitted: float = field(default_factory=time.monotonic)
    cancel_flagged: float | None = None
    force_sent: bool = False
    cpus: int = 1
    exclusive: bool = False
    started: bool = False


class RayExecutor:
    """Runs claimed jobs as Ray tasks; the runner drives it from its tick."""

    def __init__(self, address: str, *, allow_remote: bool = False, num_cpus: int | None = None,
                 init_kwargs: dict[str, Any] | None = None, token_file: str | None = None) -> None:
        self.address = check_address(address, allow_remote)
        self.token_file = check_token_file(token_file) if token_file else None
        if self.address == "local":  # a private instance listens on the loopback interface only
            os.environ.setdefault(LOOPBACK_ENV, "0")
        try:
            import ray
        except ImportError:
            raise JobError("running jobs on Ray needs the 'ray' extra: pip install 'relman[ray]'") from None
        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "ignore_reinit_error": True, **(init_kwargs or {})}
            src = _relman_src()
            env_vars = {"PYTHONPATH": src} if src else {}
            if os.environ.get("RELMAN_RAY_CACHE"):  # the nodes' blob cache folder (ray_task.cache_root)
                env_vars["RELMAN_RAY_CACHE"] = os.environ["RELMAN_RAY_CACHE"]
            if env_vars:
                kwargs.setdefault("runtime_env", {"env_vars": env_vars})
            if self.address == "local":
                if num_cpus is not None:
                    kwargs["num_cpus"] = num_cpus
                kwargs["address"] = "local"
            sent = use_token(self.token_file)
            if self.address != "local":
                probe_address(self.address)
                probe_token(self.address, sent)
                kwargs["address"] = self.address
            try:
                ray.init(**kwargs)
            except Exception as e:  # ConnectionError, TimeoutError, ValueError ...
                auth = _auth_error(e)
                if auth is not None:
                    raise refused(self.address, auth, sent) from None
                raise JobError(f"could not reach a Ray cluster at {self.address}: "
                               f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
            self._owns_ray = True
        self.channel = _channel_class().remote()
        from relman.jobs.ray_task import run_job

        # max_calls=1: a fresh worker process per job, as locally, so the memory and latency a job
        # measures never include another job's models or threads (Ray reuses workers otherwise).
        self._task = ray.remote(max_calls=1)(run_job)
        self.active: dict[int, RemoteJob] = {}
        self.waiting_exclusive = False  # a timing job is next in line and waits for a node to drain
        self._take_ref: Any = None
        self._blob_refs: dict[str, Any] = {}
        self.bytes_put = 0

    # -- capacity ---------------------------------------------------------------------------
    def accepts(self, kind: str) -> bool:
        return kind in REMOTE_KINDS

    def slots(self) -> tuple[int, int]:
        """(CPU jobs, GPU jobs) the cluster can run at once."""
        res = self._ray.cluster_resources()
        return max(1, int(res.get("CPU", 1))), int(res.get("GPU", 0))

    def device_for(self, requested: str) -> str | None:
        """The device a job gets on the cluster; None when the cluster has none of that kind."""
        _, gpus = self.slots()
        if requested.startswith("cuda"):
            return "cuda:0" if gpus else None
        if requested == "auto":
            return "cuda:0" if gpus else "cpu"
        return "cpu"

    def node_cpus(self) -> int:
        """CPUs of the largest alive node: what a timing job asks for, to have its node alone."""
        sizes = [int(n.get("Resources", {}).get("CPU", 0)) for n in self._ray.nodes() if n.get("Alive")]
        return max([1, *sizes])

    def has_room(self, device: str, cpus: int = 1, exclusive: bool = False) -> bool:
        """Room for a job needing `cpus` CPUs (a GPU job: one GPU). While a timing job waits for
        its node to drain (queued behind running jobs, or submitted and not yet started), nothing
        younger goes to the CPUs, so it is never starved."""
        total_cpus, gpus = self.slots()
        if device.startswith("cuda"):
            return sum(1 for j in self.active.values() if j.device.startswith("cuda")) < gpus
        cpu_jobs = [j for j in self.active.values() if not j.device.startswith("cuda")]
        if any(j.exclusive and not j.started for j in cpu_jobs):
            return False
        if self.waiting_exclusive and not exclusive:
            return False
        room = sum(j.cpus for j in cpu_jobs) + cpus <= max(total_cpus, cpus)
        if exclusive and not room:
            self.waiting_exclusive = True  # reset each tick (see ray_runner.pump)
        return room

    # -- submitting -------------------------------------------------------------------------
    def _needed_blobs(self, catalog: "Catalog", job: dict[str, Any]) -> list[str]:
        """Blobs of every version and dataset the job may read: the versions it names, their
        parents, the phase holders of their models (paired comparisons), and its dataset."""
        params = job["params"] or {}
        vids: set[int] = set()
        for key in ("version_id", "parent_version_id"):
            if isinstance(params.get(key), int):
                vids.add(params[key])
        for key in ("version_ids", "parent_version_ids"):
            vids.update(v for v in params.get(key) or [] if isinstance(v, int))
        for vid in list(vids):
            vids.update(r["parent_id"] for r in catalog.parents(vid))
        if vids:
            marks = ",".join("?" * len(vids))
            vids.update(r[0] for r in catalog.conn.execute(
                f"SELECT id FROM versions WHERE phase IN ('production', 'staging') AND model_id IN"
                f" (SELECT model_id FROM versions WHERE id IN ({marks}))", sorted(vids)))
        shas: set[str] = set()
        for vid in vids:
            shas.update(a["sha256"] for a in catalog.artifacts(vid))
        ds = params.get("dataset")
        if ds not in (None, ""):
            col, val = ("id", int(ds)) if isinstance(ds, int) or str(ds).isdigit() else ("name", str(ds))
            shas.update(r[0] for r in catalog.conn.execute(
                f"SELECT f.sha256 FROM dataset_files f JOIN datasets d ON d.id = f.dataset_id WHERE d.{col} = ?",
                [val]))
        return sorted(shas)

    def _ref(self, catalog: "Catalog", sha: str) -> Any:
        ref = self._blob_refs.get(sha)
        if ref is None:
            data = catalog.store.path(sha).read_bytes()
            ref = self._ray.put(data)
            self._blob_refs[sha] = ref
            self.bytes_put += len(data)
        return ref

    def submit(self, catalog: "Catalog", job: dict[str, Any], device: str, threads: int,
               exclusive: bool = False) -> None:
        from relman.context import hold_environment
        from relman.jobs.remote_catalog import take_snapshot

        shas = self._needed_blobs(catalog, job)
        refs = {sha: self._ref(catalog, sha) for sha in shas}
        spec = {"job_id": job["id"], "kind": job["kind"], "params": job["params"], "device": device,
                "actor": job["created_by"], "num_cpus": threads, "snapshot": take_snapshot(catalog),
                "hold": hold_environment()}  # test hold points reach the task (relman.context)
        opts: dict[str, Any] = {"max_retries": 0, "name": f"relman-job-{job['id']}"}
        if device.startswith("cuda"):
            opts.update(num_gpus=1, num_cpus=1)
        else:
            opts.update(num_cpus=threads)
        ref = self._task.options(**opts).remote(spec, [refs], self.channel)
        self.active[job["id"]] = RemoteJob(job["id"], ref, device, shas, cpus=1 if device.startswith("cuda") else threads,
                                           exclusive=exclusive)

    # -- watching ---------------------------------------------------------------------------
    def drain(self) -> dict[int, dict[str, Any]]:
        """Progress, log lines, heartbeats and start reports since the last call. Never blocks
        the runner's tick (the GUI's thread) for long: a reply that is not there yet is kept
        and collected on a later tick, so nothing the channel handed over is lost."""
        if self._take_ref is None:
            self._take_ref = self.channel.take.remote()
        ready, _ = self._ray.wait([self._take_ref], timeout=DRAIN_WAIT_S)
        if not ready:
            return {}
        ref, self._take_ref = self._take_ref, None
        try:
            updates: dict[int, dict[str, Any]] = self._ray.get(ref)
        except Exception:  # the channel actor died: the tasks' own results still settle the jobs
            return {}
        for job_id, u in updates.items():
            if u.get("started") and job_id in self.active:
                self.active[job_id].started = True
        return updates

    def finished(self) -> list[tuple[int, dict[str, Any] | None, str | None]]:
        """Jobs whose task ended: (job id, the task's return value or None, failure reason)."""
        if not self.active:
            return []
        refs = {j.ref: j.job_id for j in self.active.values()}
        ready, _ = self._ray.wait(list(refs), num_returns=len(refs), timeout=0)
        out = []
        for ref in ready:
            job_id = refs[ref]
            job = self.active.pop(job_id)
            try:
                out.append((job_id, self._ray.get(ref), None))
            except Exception as e:
                out.append((job_id, None, self.describe_failure(e, job)))
        self._forget_unused_blobs()
        return out

    def describe_failure(self, e: BaseException, job: RemoteJob) -> str:
        """A failed Ray task in one line, naming what happened to it."""
        from relman.jobs.worker import one_line

        ex = self._ray.exceptions
        if isinstance(e, ex.TaskCancelledError):
            return "cancelled (Ray task cancelled)"
        if isinstance(e, getattr(ex, "OutOfMemoryError", ())):
            return "ray: the task's node ran out of memory and Ray killed the task"
        if isinstance(e, getattr(ex, "NodeDiedError", ())) or "node" in type(e).__name__.lower():
            return f"ray: the node running the job was lost ({type(e).__name__})"
        if isinstance(e, ex.WorkerCrashedError) or isinstance(e, getattr(ex, "ActorDiedError", ())):
            return "ray: the worker process running the job died (killed or crashed)"
        if isinstance(e, ex.RayTaskError):
            cause = getattr(e, "cause", None)
            if cause is not None and not isinstance(cause, ex.RayTaskError):
                return one_line(cause)
        text = str(e).strip().splitlines()
        return f"ray: {type(e).__name__}: {text[0] if text else ''}".rstrip(": ")

    def traceback_tail(self, e: BaseException, lines: int = 15) -> str:
        return "\n".join(str(e).splitlines()[-lines:])

    def _forget_unused_blobs(self) -> None:
        """Drop the runner's references to blobs no active job needs (nodes keep their caches)."""
        wanted = {s for j in self.active.values() for s in j.shas}
        for sha in [s for s in self._blob_refs if s not in wanted]:
            del self._blob_refs[sha]

    # -- cancelling -------------------------------------------------------------------------
    def cancel(self, job_id: int, *, force: bool) -> None:
        job = self.active.get(job_id)
        if job is None:
            return
        if job.cancel_flagged is None:
            job.cancel_flagged = time.monotonic()
            self.channel.set_cancel.remote(job_id)
        if force and not job.force_sent:
            job.force_sent = True
            self._ray.cancel(job.ref, force=True)

    def close(self) -> None:
        """Disconnect. Tasks still running end with this driver (Ray's ownership rule)."""
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self.active.clear()
        self._blob_refs.clear()
        self._take_ref = None


def executor_from_settings(catalog: "Catalog", address: str | None = None,
                           allow_remote: bool | None = None, token_file: str | None = None) -> RayExecutor | None:
    """The Ray executor the catalog is set up for (or that the command line names), else None.

    The settings are rows in a SQLite file: before jobs (their rows and blobs) go to a host that
    is not this machine on the catalog's say-so, the catalog must verify (its settings are
    tracked rows) and the audit log's last `executor-set` event must name that address with
    --allow-remote (issue 26: a remote address written with sqlite3 is never used)."""
    stored = catalog.get_setting(SETTING_ADDRESS)
    from_settings = not address and bool(stored)
    address = address or stored or os.environ.get("RELMAN_RAY_ADDRESS")
    if not address:
        return None
    if allow_remote is None:
        allow_remote = bool(catalog.get_setting(SETTING_ALLOW_REMOTE, False))
        from_settings = from_settings or allow_remote
    if from_settings and not is_loopback(address):
        confirm_remote_setting(catalog, address)
    token_file = token_file or catalog.get_setting(SETTING_TOKEN_FILE) or None
    return RayExecutor(address, allow_remote=allow_remote, token_file=token_file)


def set_executor(catalog: "Catalog", address: str | None, allow_remote: bool = False,
                 token_file: str | None = None) -> str | None:
    """Store where this catalog's jobs run: the settings and their `executor-set` event in one
    transaction (the event commits the rows), as `relman jobs executor` and the GUI do. The
    token file's path is stored (a tracked setting), never the token."""
    if address:
        address = check_address(address, allow_remote)
    token_path = check_token_file(token_file) if (token_file and address) else None
    with catalog.transaction():
        catalog.set_setting(SETTING_ADDRESS, address or None)
        catalog.set_setting(SETTING_ALLOW_REMOTE, bool(address and allow_remote))
        catalog.set_setting(SETTING_TOKEN_FILE, token_path)
        catalog.log_event("executor-set", {"executor": "ray", "address": address, "allow_remote": bool(allow_remote),
                                           "token_file": token_path}
                          if address else {"executor": "local"})
    return address


def confirm_remote_setting(catalog: "Catalog", address: str) -> None:
    """Refuse a non-loopback Ray address from the catalog unless relman set it (see above)."""
    import json

    from relman.catalog.integrity import require_intact

    require_intact(catalog, f"send jobs to the Ray cluster at {address}")
    row = catalog.conn.execute("SELECT payload FROM events WHERE kind = 'executor-set' ORDER BY seq DESC LIMIT 1"
                               ).fetchone()
    payload = json.loads(row[0]) if row else {}
    if payload.get("address") != address or not payload.get("allow_remote"):
        raise JobError(f"refusing to send jobs to the Ray cluster at {address}: no 'relman jobs executor --ray "
                       f"{address} --allow-remote' set it (the catalog's setting was written some other way); "
                       "set it again with that command")
