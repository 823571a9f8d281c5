"""Jobs on a simulated two-node Ray cluster (`ray.cluster_utils.Cluster`, loopback only): the
job row names the worker node that ran it, and removing that node mid-job fails the job with
the reason; a retry on a fresh node succeeds and leaves nothing half-written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only; read when ray is imported
ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from relman.jobs import queue  # noqa: E402
from relman.jobs.testing import HoldPoint, drive_until  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cluster(tmp_path):
    """A head node with no CPU for jobs (only the runner's channel actor lives there) and one
    worker node with 1 CPU, so every job lands on the worker node."""
    os.environ["RELMAN_RAY_CACHE"] = str(tmp_path / "ray-cache")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    worker = c.add_node(num_cpus=1)
    ray.init(address=c.address, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "RELMAN_RAY_CACHE": os.environ["RELMAN_RAY_CACHE"]}})
    c.wait_for_nodes()
    yield c, worker
    ray.shutdown()
    c.shutdown()
    os.environ.pop("RELMAN_RAY_CACHE", None)


def test_a_lost_node_fails_the_job_with_the_reason_and_a_retry_succeeds(catalog, make_runner, cluster, tmp_path, monkeypatch):
    hold = HoldPoint(monkeypatch, "sleep.end", tmp_path)
    from relman.jobs.ray_executor import RayExecutor

    c, worker = cluster
    job_id = queue.enqueue(catalog, "sleep", {"seconds": 0.0, "steps": 1}, device="cpu")
    runner = make_runner(executor=RayExecutor(c.address))
    drive_until(runner, lambda: queue.get_job(catalog, job_id)["message"] == hold.message(), 600, "the task to hold")
    job = queue.get_job(catalog, job_id)
    assert job["executor"] == f"ray:127.0.0.1/{worker.node_id}", (job["executor"], worker.node_id)
    c.remove_node(worker)
    drive_until(runner, lambda: queue.get_job(catalog, job_id)["status"] in queue.FINISHED, 600,
                "the job whose node was removed to end")
    job = queue.get_job(catalog, job_id)
    assert job["status"] == "failed" and job["error"].startswith("ray: "), job
    assert any(w in job["error"] for w in ("node", "worker process")), job["error"]
    assert not queue.workdir_for(catalog, job_id).exists()
    assert catalog.conn.execute("SELECT COUNT(*) FROM pending_blobs").fetchone()[0] == 0
    fresh = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    hold.release()
    queue.retry(catalog, job_id)
    drive_until(runner, lambda: queue.get_job(catalog, job_id)["status"] in queue.FINISHED, 600, "the retried job")
    job = queue.get_job(catalog, job_id)
    assert job["status"] == "succeeded", job
    assert job["executor"] == f"ray:127.0.0.1/{fresh.node_id}"


# -- a real token-authenticated cluster: `ray start --head --block` and a worker joining it ----
import ray_support  # noqa: E402

TOKEN_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory):
    """A head with no CPU for jobs and one worker node with 2 CPUs, token authentication on."""
    folder = tmp_path_factory.mktemp("token-cluster")
    c = ray_support.token_cluster(folder)
    try:
        c.start_head(num_cpus=0)
        c.add_worker(num_cpus=2)
        c.wait_for_cpus(2)
        yield c
    finally:
        c.stop()


@pytest.fixture
def clean_token_env(monkeypatch, tmp_path):
    """This process's token settings come back as they were (RayExecutor sets Ray's own)."""
    for var in TOKEN_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RELMAN_RAY_CACHE", str(tmp_path / "ray-cache"))
    yield
    if ray.is_initialized():
        ray.shutdown()


def test_a_wrong_token_is_refused_in_one_line_and_nothing_is_claimed(token_cluster, catalog, run_cli,
                                                                     clean_token_env, tmp_path):
    wrong = ray_support.write_token(tmp_path / "wrong-token")
    job_id = queue.enqueue(catalog, "noop", {}, device="cpu")
    r = run_cli("jobs", "run", "--once", "--ray", token_cluster.address, "--ray-token-file", str(wrong))
    assert r.exit_code != 0
    err = r.stderr.strip()
    assert err.startswith(f"error: Ray cluster at {token_cluster.address} refused the token: "), err
    assert "InvalidAuthToken" in err and len(err.splitlines()) == 1, err
    assert queue.get_job(catalog, job_id)["status"] == "queued"
    r = run_cli("jobs", "run", "--once", "--ray", token_cluster.address, "--ray-token-file", str(tmp_path / "nope"))
    assert r.exit_code != 0 and "the Ray token file" in r.stderr and "does not exist" in r.stderr, r.stderr


def test_the_catalogs_setting_with_its_token_file_runs_wait_jobs_on_the_cluster(token_cluster, catalog, run_cli,
                                                                                 clean_token_env):
    """`relman jobs executor --ray ADDR --ray-token-file PATH` stores where the token is (not the
    token), `queue --wait` with no other runner uses it, and says where the job runs."""
    r = run_cli("jobs", "executor", "--ray", token_cluster.address, "--ray-token-file", str(token_cluster.token_file))
    assert r.exit_code == 0, r.output
    stored = catalog.conn.execute("SELECT value FROM settings WHERE key = 'executor.ray_token_file'").fetchone()[0]
    assert str(token_cluster.token_file) in stored
    assert token_cluster.token_file.read_text() not in "".join(
        str(v) for row in catalog.conn.execute("SELECT * FROM settings") for v in row)
    r = run_cli("queue", "noop", "--device", "cpu", "--wait")
    assert r.exit_code == 0, r.output
    assert f"runs on Ray at {token_cluster.address}" in r.stderr, r.stderr
    job = queue.list_jobs(catalog)[-1]
    assert job["status"] == "succeeded" and re.fullmatch(r"ray:[0-9.]+/[0-9a-f]{56}", job["executor"]), job
    assert run_cli("verify").exit_code == 0


def test_a_timing_job_has_its_node_alone(token_cluster, catalog, make_runner, clean_token_env, monkeypatch, tmp_path):
    """A timing job asks for every CPU of the node; a younger job waits until it ends."""
    hold = HoldPoint(monkeypatch, "sleep.end", tmp_path)
    from relman.jobs import kinds
    from relman.jobs.ray_executor import RayExecutor

    monkeypatch.setitem(kinds.EXCLUSIVE, "sleep", True)  # `sleep` stands for a timing kind here
    timing = queue.enqueue(catalog, "sleep", {"seconds": 0.0, "steps": 1}, device="cpu")
    other = queue.enqueue(catalog, "noop", {}, device="cpu")
    runner = make_runner(executor=RayExecutor(token_cluster.address, token_file=str(token_cluster.token_file)))
    drive_until(runner, lambda: queue.get_job(catalog, timing)["message"] == hold.message(), 180, "the timing job to hold")
    for _ in range(5):  # the runner keeps ticking: the younger job stays queued while the node is taken
        runner.tick()
    assert queue.get_job(catalog, other)["status"] == "queued"
    hold.release()
    drive_until(runner, lambda: all(queue.get_job(catalog, j)["status"] in queue.FINISHED for j in (timing, other)),
                180, "both jobs to end")
    t, o = queue.get_job(catalog, timing), queue.get_job(catalog, other)
    assert t["status"] == o["status"] == "succeeded", (t, o)
    assert t["result"]["ray"]["cpus"] == 2.0, t["result"]
    assert o["started_at"] >= t["finished_at"], (t, o)


def test_rays_own_default_token_file_is_used_without_a_token_option(token_cluster, catalog, catalog_path, tmp_path):
    """The issue's case: a head that `ray start` protected with ~/.ray/auth_token, and `relman
    jobs run --ray ADDR` given no token option: relman switches Ray's token mode on, as
    `ray start` does, and the job runs on the cluster."""
    import subprocess
    import sys

    from conftest import relman_subprocess_env

    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(token_cluster.token_file.read_text())
    env = {k: v for k, v in relman_subprocess_env(catalog_path).items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(home), RELMAN_RAY_CACHE=str(tmp_path / "ray-cache"))
    job_id = queue.enqueue(catalog, "noop", {}, device="cpu")
    r = subprocess.run([sys.executable, "-m", "relman", "jobs", "run", "--once", "--ray", token_cluster.address],
                       env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    job = queue.get_job(catalog, job_id)
    assert job["status"] == "succeeded" and job["executor"].startswith("ray:"), job
