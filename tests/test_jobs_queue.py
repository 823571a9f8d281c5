"""The queue API, the app layer, the CLI, the launch command and device choice."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from relman.app.jobs import cancel_job, job_log_tail, queue_job, retry_job
from relman.errors import JobError, NotFound
from relman.jobs import launch, queue
from relman.jobs.devices import Devices, choose_device
from relman.jobs.queue import enqueue, get_job
from relman.jobs.wait import wait_for_jobs, wait_or_raise

from import_probe import heavy_loaded_by


def event_kinds(catalog) -> list[str]:
    return [e["kind"] for e in catalog.events()]


# -- queueing ---------------------------------------------------------------------------------

def test_enqueue_records_the_row_and_an_audit_event(catalog):
    job_id = queue_job(catalog, "sleep", {"seconds": 0.1}, device="cuda", actor="ana")
    job = get_job(catalog, job_id)
    assert job["status"] == "queued" and job["kind"] == "sleep" and job["params"] == {"seconds": 0.1}
    assert job["device"] == "cuda:0" and job["created_by"] == "ana" and job["attempts"] == 0
    assert job["log_path"] == str(catalog.root / "logs" / f"{job_id}.log")
    ev = catalog.events()[-1]
    assert ev["kind"] == "job-queued" and ev["actor"] == "ana" and ev["payload"]["job"] == job_id
    assert catalog.verify_audit() == []


@pytest.mark.parametrize("kind, params, device, message", [
    ("bogus", {}, "auto", "unknown job kind 'bogus' (known: "),
    ("noop", {}, "gpu", "device 'gpu' is not one of: auto, cpu, cuda:N"),
    ("noop", {}, "cuda:x", "device 'cuda:x' is not one of"),
    ("noop", {"when": object()}, "cpu", "parameters of a 'noop' job must be plain JSON values"),
])
def test_bad_jobs_are_refused_with_one_line_and_leave_nothing(catalog, kind, params, device, message):
    with pytest.raises(JobError) as e:
        enqueue(catalog, kind, params, device=device)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert catalog.query("SELECT * FROM jobs") == [] and catalog.events() == []


def test_unknown_parent_and_unknown_job_ids(catalog):
    with pytest.raises(NotFound, match="no job with id 42 \\(given as parent job\\)"):
        enqueue(catalog, "noop", parent_job_id=42)
    assert catalog.query("SELECT * FROM jobs") == []
    for call in (lambda: get_job(catalog, 7), lambda: cancel_job(catalog, 7), lambda: retry_job(catalog, 7)):
        with pytest.raises(NotFound, match="no job with id 7"):
            call()


def test_cancel_and_retry_rules(catalog):
    job_id = enqueue(catalog, "noop", device="cpu")
    with pytest.raises(JobError, match=f"job {job_id} is queued; only failed or cancelled jobs can be retried"):
        retry_job(catalog, job_id)
    assert cancel_job(catalog, job_id)["status"] == "cancelled"
    with pytest.raises(JobError, match=f"job {job_id} has already cancelled; nothing to cancel"):
        cancel_job(catalog, job_id)
    job = retry_job(catalog, job_id)
    assert job["status"] == "queued" and job["cancel_requested"] == 0 and job["finished_at"] is None
    assert event_kinds(catalog) == ["job-queued", "job-cancel", "job-retry"]


def test_list_jobs_filters(catalog):
    a = enqueue(catalog, "noop", device="cpu")
    b = enqueue(catalog, "sleep", device="cpu")
    queue.request_cancel(catalog, a)
    assert [j["id"] for j in queue.list_jobs(catalog)] == [b, a]
    assert [j["id"] for j in queue.list_jobs(catalog, statuses=["queued"])] == [b]
    assert [j["id"] for j in queue.list_jobs(catalog, kind="noop")] == [a]
    with pytest.raises(JobError, match="unknown job status 'done'"):
        queue.list_jobs(catalog, statuses=["done"])


def test_spawned_jobs_follow_parents_transitively(catalog):
    root = enqueue(catalog, "noop", device="cpu")
    child = enqueue(catalog, "noop", device="cpu", parent_job_id=root)
    grandchild = enqueue(catalog, "noop", device="cpu", parent_job_id=child)
    other = enqueue(catalog, "noop", device="cpu")
    assert queue.spawned_jobs(catalog, [root]) == [root, child, grandchild]
    assert queue.spawned_jobs(catalog, [other]) == [other]


# -- waiting (drives a real runner inline) ------------------------------------------------------

@pytest.mark.heavy  # starts worker processes
def test_wait_follows_the_jobs_a_job_queues(catalog):
    parent = queue_job(catalog, "spawn", {"children": [{"kind": "noop"}, {"kind": "sleep", "params": {"seconds": 0.2}}]},
                       device="cpu")
    rows = wait_for_jobs(catalog, [parent], progress=False, timeout=120)
    assert [r["kind"] for r in rows] == ["spawn", "noop", "sleep"]
    assert all(r["status"] == "succeeded" for r in rows)
    assert rows[0]["result"]["children"] == [rows[1]["id"], rows[2]["id"]]
    assert {r["parent_job_id"] for r in rows[1:]} == {parent}


@pytest.mark.heavy  # starts worker processes
def test_wait_or_raise_names_the_failed_job(catalog):
    job_id = queue_job(catalog, "fail", device="cpu")
    with pytest.raises(JobError) as e:
        wait_or_raise(catalog, [job_id], progress=False, timeout=120)
    assert str(e.value) == (f"job {job_id} (fail) failed: RuntimeError: this job fails on purpose "
                            "(details: relman jobs show ID)")
    assert "Traceback" in job_log_tail(catalog, job_id, 40)
    assert job_log_tail(catalog, job_id, 1).startswith("relman worker: job")


@pytest.mark.heavy  # starts worker processes
def test_wait_times_out_with_a_clear_error(catalog):
    job_id = queue_job(catalog, "sleep", {"seconds": 120, "steps": 1200}, device="cpu")  # outlives any pause here
    with pytest.raises(JobError, match=f"timed out after 0 s waiting for job\\(s\\) {job_id}; they keep running"):
        wait_for_jobs(catalog, [job_id], progress=False, timeout=0.3)
    cancel_job(catalog, job_id)
    rows = wait_for_jobs(catalog, [job_id], progress=False, timeout=60)
    assert rows[0]["status"] == "cancelled"


# -- CLI --------------------------------------------------------------------------------------

@pytest.mark.heavy  # starts worker processes
def test_cli_queue_wait_list_show(run_cli, catalog_path):
    r = run_cli("queue", "sleep", "--param", "seconds=0.2", "-p", "steps=2", "--device", "cpu", "--wait", "--json")
    assert r.exit_code == 0, r.output
    job = json.loads(r.stdout)
    assert job["status"] == "succeeded" and job["params"] == {"seconds": 0.2, "steps": 2} and job["result"]["steps"] == 2
    r = run_cli("jobs")
    assert r.exit_code == 0
    header, _, line = r.output.splitlines()[:3]
    assert header.split() == ["ID", "KIND", "STATUS", "PROGRESS", "DEVICE", "ELAPSED", "CAUSE", "MESSAGE"]
    assert line.split()[:5] == [str(job["id"]), "sleep", "succeeded", "100%", "cpu"]
    r = run_cli("jobs", "show", str(job["id"]))
    assert r.exit_code == 0 and "[succeeded]" in r.output and "--- last 20 log lines ---" in r.output
    assert f"relman worker: job {job['id']} succeeded" in r.output
    r = run_cli("jobs", "--status", "failed", "--json")
    assert json.loads(r.stdout) == []


@pytest.mark.heavy  # starts worker processes
def test_cli_failures_and_cancel_retry(run_cli):
    r = run_cli("queue", "fail", "--device", "cpu", "--wait")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: job 1 (fail) failed: RuntimeError: this job fails")
    r = run_cli("jobs", "cancel", "1")
    assert r.exit_code == 1 and "error: job 1 has already failed; nothing to cancel" in r.stderr
    # its typed cause: an unexpected exception is a bug, and retrying a bug is refused unless forced
    r = run_cli("jobs", "show", "1", "--json")
    assert json.loads(r.stdout)["cause"] == "bug"
    r = run_cli("jobs", "retry", "1")
    assert r.exit_code == 1 and "error: job 1 failed on unexpected error (bug)" in r.stderr and "--force" in r.stderr
    r = run_cli("jobs", "retry", "1", "--force")
    assert r.exit_code == 0 and "job 1 queued again" in r.output
    r = run_cli("jobs", "cancel", "1")
    assert r.exit_code == 0
    r = run_cli("queue", "noop", "--device", "cpu")
    assert r.stdout.strip() == "queued job 2 (noop)" and r.stderr.strip() == "job 2 (noop) runs locally"
    r = run_cli("jobs", "cancel", "2")
    assert r.exit_code == 0 and r.output.strip() == "job 2 cancelled"
    r = run_cli("jobs", "retry", "2", "--wait")
    assert r.exit_code == 0, r.output
    assert "job 2 queued again (attempt 1)" in r.output and "job 2 succeeded" in r.output
    r = run_cli("queue", "noop", "--param", "oops")
    assert r.exit_code == 1 and "error: --param 'oops' is not KEY=VALUE" in r.stderr
    r = run_cli("queue", "nope")
    assert r.exit_code == 1 and "error: unknown job kind 'nope'" in r.stderr
    r = run_cli("jobs", "show", "99")
    assert r.exit_code == 1 and "error: no job with id 99" in r.stderr


def test_hidden_commands_have_help_and_stay_hidden(run_cli):
    r = run_cli("--help")
    assert "jobs" in r.output and "queue" in r.output
    assert " worker " not in r.output and "probe-devices" not in r.output
    for args in (["jobs", "--help"], ["jobs", "run", "--help"], ["worker", "--help"], ["queue", "--help"]):
        r = run_cli(*args)
        assert r.exit_code == 0 and len(r.output) > 80


@pytest.mark.heavy  # starts worker processes
def test_a_worker_refuses_a_job_it_may_not_run(catalog, catalog_path):
    """Started by hand on a finished job, the worker changes nothing and says why."""
    job_id = enqueue(catalog, "noop", device="cpu")
    queue.request_cancel(catalog, job_id)
    out = subprocess.run(launch.worker_command(catalog_path, job_id), capture_output=True, text=True,
                         env=launch.child_env(), timeout=60)
    assert out.returncode == 4 and f"job {job_id} is cancelled; not running it" in out.stderr
    assert get_job(catalog, job_id)["status"] == "cancelled"


@pytest.mark.heavy  # starts worker processes
def test_a_worker_started_by_hand_on_a_queued_job_claims_and_runs_it(catalog, catalog_path):
    job_id = enqueue(catalog, "noop", device="cpu")
    out = subprocess.run(launch.worker_command(catalog_path, job_id), capture_output=True, text=True,
                         env=launch.child_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    job = get_job(catalog, job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1 and job["device_used"] == "cpu"


# -- launch and devices -----------------------------------------------------------------------

def test_worker_command_in_dev_and_frozen_builds(monkeypatch, tmp_path):
    assert launch.worker_command(tmp_path, 5) == [sys.executable, "-m", "relman", "--catalog", str(tmp_path),
                                                  "worker", "5"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert launch.worker_command(tmp_path, 5) == [sys.executable, "--catalog", str(tmp_path), "worker", "5"]


def test_device_choice_limits():
    two_gpus = Devices(cuda=("cuda:0", "cuda:1"))
    none = Devices()
    assert choose_device("cpu", None, {"cpu": 1}, 2) == "cpu"
    assert choose_device("cpu", None, {"cpu": 2}, 2) is None
    assert choose_device("auto", None, {}, 2) is None  # still probing
    assert choose_device("auto", none, {}, 2) == "cpu"
    assert choose_device("auto", two_gpus, {"cuda:0": 1}, 2) == "cuda:1"
    assert choose_device("auto", two_gpus, {"cuda:0": 1, "cuda:1": 1}, 2) is None  # waits for a GPU
    assert choose_device("cuda:1", two_gpus, {"cuda:0": 1}, 2) == "cuda:1"
    assert choose_device("cuda:1", two_gpus, {"cuda:1": 1}, 2) is None
    with pytest.raises(JobError, match="device cuda:3 does not exist on this machine \\(CUDA devices: cuda:0, cuda:1\\)"):
        choose_device("cuda:3", two_gpus, {}, 2)


def test_a_job_for_a_missing_gpu_fails_with_the_reason(catalog, monkeypatch):
    monkeypatch.setenv("RELMAN_CUDA_DEVICES", "")  # this machine, as far as the runner knows, has none
    from relman.jobs.runner import Runner

    job_id = enqueue(catalog, "noop", device="cuda:0")
    with Runner(catalog.root) as runner:
        assert runner.tick()["ended"] == [job_id]
    job = get_job(catalog, job_id)
    assert job["status"] == "failed" and job["error"] == "device cuda:0 does not exist on this machine (CUDA devices: none)"


def test_cpu_slots_from_the_environment(monkeypatch, catalog):
    from relman.jobs.runner import Runner

    monkeypatch.setenv("RELMAN_CPU_SLOTS", "3")
    with Runner(catalog) as r:
        assert r.cpu_slots == 3
    monkeypatch.setenv("RELMAN_CPU_SLOTS", "none")
    with pytest.raises(JobError, match="RELMAN_CPU_SLOTS must be a whole number of at least 1, not 'none'"):
        Runner(catalog)


def test_queueing_and_running_import_neither_torch_nor_qt():
    assert heavy_loaded_by("relman.cli", "relman.app.jobs", "relman.jobs.runner", "relman.jobs.wait", "relman.jobs.queue",
                           "relman.jobs.devices", "relman.jobs.launch") == []


def test_jobs_queued_from_inside_a_worker_record_it_as_their_parent(catalog, monkeypatch):
    parent = enqueue(catalog, "noop", device="cpu")
    monkeypatch.setenv("RELMAN_JOB_ID", str(parent))  # what the runner sets in a worker's environment
    child = queue_job(catalog, "noop", device="cpu")
    assert get_job(catalog, child)["parent_job_id"] == parent
    assert queue.spawned_jobs(catalog, [parent]) == [parent, child]


# -- the one writer of the jobs table ---------------------------------------------------------

def test_attempts_progress_and_the_running_jobs_the_suites_see(catalog):
    """The runner's writes through the queue on a real catalog: a queued job starts once (a
    second runner loses), a running job's progress and curve land, a relayed report does not
    touch a settled job, and `running_job_ids` is what the metric suites record beside a figure."""
    a, b, c = (enqueue(catalog, "noop", {}) for _ in range(3))
    assert queue.start_attempt(catalog, a, device="cpu", executor="local", message="starting")
    assert not queue.start_attempt(catalog, a, device="cpu", executor="local", message="starting")
    assert queue.start_attempt(catalog, b, device="cpu", executor="ray", message="submitted to Ray")
    queue.set_pid(catalog, a, 4242)
    queue.set_pid(catalog, a, 99)  # the worker named itself first: kept
    queue.report_progress(catalog, a, 0.5, "half way", heartbeat_at="2026-01-01T00:00:00+00:00")
    queue.add_points(catalog, [(a, "train_loss", 1.0, 0.7), (a, "train_loss", 2.0, 0.5)])
    job = get_job(catalog, a)
    assert (job["status"], job["attempts"], job["pid"], job["executor"]) == ("running", 1, 4242, "local")
    assert (job["progress"], job["message"], job["heartbeat_at"]) == (0.5, "half way", "2026-01-01T00:00:00+00:00")
    assert catalog.conn.execute("SELECT COUNT(*) FROM job_points WHERE job_id = ?", [a]).fetchone()[0] == 2
    assert catalog.running_job_ids(exclude=a) == [b] and catalog.running_job_ids() == [a, b]
    assert c not in catalog.running_job_ids()
    assert queue.finish(catalog, b, queue.SUCCEEDED, result={"ok": True})
    queue.report_progress(catalog, b, 0.1, "late report", only_running=True)
    queue.set_executor(catalog, b, "ray:10.0.0.2/n1", only_if="ray")
    queue.set_executor(catalog, b, "ray:10.0.0.3/n2", only_if="ray")  # settled already: not overwritten
    done = get_job(catalog, b)
    assert (done["progress"], done["executor"]) == (1, "ray:10.0.0.2/n1")
    assert catalog.running_job_ids(exclude=a) == []
    assert catalog.verify_audit() == [] and not catalog.query("SELECT 1 FROM events WHERE kind = 'state'")


def test_only_the_queue_and_the_catalog_write_the_jobs_table():
    """The jobs table's writers are relman/jobs/queue.py (and the catalog, which links a job's
    result version in its own transaction): raw SQL writing it anywhere else fails here."""
    import re
    from pathlib import Path

    root = Path(queue.__file__).resolve().parents[1]
    write = re.compile(r"\b(UPDATE\s+jobs\b|INSERT\s+(OR\s+\w+\s+)?INTO\s+jobs\b|DELETE\s+FROM\s+jobs\b)", re.I)
    allowed = {root / "jobs" / "queue.py", root / "catalog" / "catalog.py"}
    found = [f"{p.relative_to(root.parent)}:{n}" for p in sorted(root.rglob("*.py")) if p not in allowed
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if write.search(line)]
    assert found == [], found
