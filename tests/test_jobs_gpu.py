"""Device `auto` with real torch in the worker: the GPU when there is one, else the CPU."""

from __future__ import annotations

import pytest

from relman.jobs.devices import threads_per_cpu_job
from relman.jobs.queue import enqueue, get_job
from relman.jobs.runner import Runner
from relman.jobs.testing import drive_until, job_status
from relman.jobs.wait import wait_for_jobs


def cuda_available() -> bool:
    torch = pytest.importorskip("torch")
    return torch.cuda.is_available()


@pytest.mark.gpu
def test_auto_device_reports_the_gpu_and_runs_there(catalog):
    if not cuda_available():
        pytest.skip("no CUDA device here (torch.cuda.is_available() is False)")
    import torch

    job_id = enqueue(catalog, "device_info", device="auto")
    (row,) = wait_for_jobs(catalog, [job_id], progress=False, timeout=300)
    assert row["status"] == "succeeded", row["error"]
    assert row["device_used"] == "cuda:0"
    assert row["result"]["device"] == "cuda:0" and row["result"]["sum"] == 56.0
    assert row["result"]["name"] == torch.cuda.get_device_name(0)
    assert row["message"] == "computed on cuda:0"


@pytest.mark.gpu
def test_one_job_at_a_time_per_gpu(catalog):
    if not cuda_available():
        pytest.skip("no CUDA device here (torch.cuda.is_available() is False)")
    import torch

    if torch.cuda.device_count() != 1:
        pytest.skip("written for a machine with exactly one GPU")
    a = enqueue(catalog, "sleep", {"seconds": 1.0, "steps": 5}, device="auto")
    b = enqueue(catalog, "sleep", {"seconds": 0.2, "steps": 2}, device="cuda:0")
    with Runner(catalog.root, cpu_slots=2) as runner:
        drive_until(runner, lambda: job_status(catalog, a) == "running", 120, "the first GPU job to start")
        assert job_status(catalog, b) == "queued"  # the GPU is taken; the CPU slots do not matter
        drive_until(runner, lambda: job_status(catalog, b) == "succeeded" and not runner.workers, 120, "both jobs")
    ja, jb = get_job(catalog, a), get_job(catalog, b)
    assert ja["device_used"] == jb["device_used"] == "cuda:0"
    assert jb["started_at"] >= ja["finished_at"]


def test_auto_device_without_cuda_runs_on_the_cpu(catalog):
    if cuda_available():
        pytest.skip("this machine has CUDA; the GPU tests cover device auto here")
    job_id = enqueue(catalog, "device_info", device="auto")
    (row,) = wait_for_jobs(catalog, [job_id], progress=False, timeout=300)
    assert row["status"] == "succeeded", row["error"]
    assert row["device_used"] == "cpu" and row["result"]["device"] == "cpu"
    assert row["result"]["threads"] == threads_per_cpu_job(2)  # the runner split the cores between 2 CPU slots
