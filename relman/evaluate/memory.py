"""Memory suite: the peak memory of loading the version and running inference on it.

Metrics (suite "memory"):
- CPU: `peak_rss_mb` — the process's peak resident set size (MiB) while the model is loaded
  and `memory_batches` batches are run; `model_rss_mb` — that peak minus the RSS just before
  loading (what the model itself costs; the rest is the interpreter and libraries). On Linux
  the kernel's high-water mark (VmHWM) is reset first through /proc/self/clear_refs, so the
  peak belongs to this measurement; elsewhere a 1 ms sampling thread watches RSS.
- CUDA (PyTorch versions): `peak_gpu_mb` — torch.cuda.max_memory_allocated after a reset.
Context: batch_size, seq_len of the inference batches. The suite opens its own copy of the
model, and runs first in a job, so nothing loaded earlier hides the cost; the measurement is
per process, which is why each version is evaluated in its own worker process.
"""

from __future__ import annotations

import gc
import re
import threading
from pathlib import Path

import numpy as np

from relman.catalog import Metric
from relman.evaluate.env import SuiteEnv

SUITE = "memory"
MIB = 2**20


def current_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _read_hwm() -> int | None:
    try:
        m = re.search(r"VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _read_hwm() is not None


class PeakRSS:
    """Context manager: the peak RSS of this process inside the block."""

    def __init__(self) -> None:
        self.peak = 0
        self.method = ""

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        self.baseline = current_rss()
        self._kernel = _reset_hwm()
        self.method = "VmHWM" if self._kernel else "sampling"
        if not self._kernel:
            self._stop = threading.Event()
            self.peak = self.baseline
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, current_rss())

    def __exit__(self, *exc: object) -> None:
        if self._kernel:
            self.peak = max(_read_hwm() or 0, current_rss())
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, current_rss())


def run(env: SuiteEnv) -> list[Metric]:
    from relman.tasks import open_runner

    bs = env.batch_sizes[0]
    seq = env.seq_lens[0]
    n_batches = int(env.options.get("memory_batches", 3))
    cuda = env.device.startswith("cuda")
    torch = None
    if cuda and env.model.fmt != "onnx":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        runner = open_runner(env.model.folder, env.model.fmt, env.model.task, env.device, env.threads)
        if env.dataset is not None:
            runner.check_dataset(env.dataset)
            idx = np.arange(bs) % len(env.dataset)
            batch = runner.prepare(env.dataset.take(idx), seq)
        else:
            batch = runner.prepare_synthetic(bs, seq)
        for i in range(n_batches):
            runner.predict(batch)
            env.progress((i + 1) / n_batches, "memory")
        runner.backend.synchronize()
    used_seq = int(batch.host["input_ids"].shape[1]) if "input_ids" in batch.host else None
    ctx = {"batch_size": bs, "seq_len": used_seq, "batches": n_batches, "rss_method": rss.method}
    uses_data = env.dataset is not None
    out = [env.metric(SUITE, "peak_rss_mb", rss.peak / MIB, uses_data=uses_data, **ctx),
           env.metric(SUITE, "model_rss_mb", max(0, rss.peak - rss.baseline) / MIB, uses_data=uses_data, **ctx)]
    if torch is not None:
        out.append(env.metric(SUITE, "peak_gpu_mb", torch.cuda.max_memory_allocated() / MIB,
                              uses_data=uses_data, **ctx))
    del runner, batch
    gc.collect()
    return out
