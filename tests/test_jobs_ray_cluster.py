"""Jobs on a simulated two-node Ray cluster (`ray.cluster_utils.Cluster`, loopback only): the
job row names the worker node that ran it, and removing that node mid-job fails the job with
the reason; a retry on a fresh node succeeds and leaves nothing half-written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only; read when ray is imported
ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from relman.jobs import queue  # noqa: E402
from relman.jobs.testing import drive_until  # noqa: E402

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


def test_a_lost_node_fails_the_job_with_the_reason_and_a_retry_succeeds(catalog, make_runner, cluster, tmp_path):
    from relman.jobs.ray_executor import RayExecutor

    c, worker = cluster
    release = tmp_path / "release"
    job_id = queue.enqueue(catalog, "sleep", {"seconds": 0.0, "steps": 1, "hold_file": str(release)}, device="cpu")
    runner = make_runner(executor=RayExecutor(c.address))
    drive_until(runner, lambda: queue.get_job(catalog, job_id)["message"] == "holding", 600, "the task to hold")
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
    release.touch()
    queue.retry(catalog, job_id)
    drive_until(runner, lambda: queue.get_job(catalog, job_id)["status"] in queue.FINISHED, 600, "the retried job")
    job = queue.get_job(catalog, job_id)
    assert job["status"] == "succeeded", job
    assert job["executor"] == f"ray:127.0.0.1/{fresh.node_id}"
