"""Which compute devices this machine has, found without importing torch here.

The GUI and CLI must not import torch (seconds of start-up, hundreds of MB), so detection
runs `relman probe-devices` in a child process, which imports torch and prints JSON. The
runner starts the probe without waiting (`DeviceProbe.poll()` is non-blocking, so the GUI's
timer never stalls) and caches the answer for its lifetime. `RELMAN_CUDA_DEVICES` (e.g. ``""``
or ``"0,1"``) skips the probe, e.g. on a machine where torch is known to be CPU-only.

Device choice per job: `auto` (a CUDA device if there is any, else the CPU), `cpu`, `cuda:N`.
Concurrency: one job per CUDA device, `cpu_slots` jobs on the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CPU_SLOTS = 2


@dataclass(frozen=True)
class Devices:
    cuda: tuple[str, ...] = ()  # "cuda:0", ...
    names: dict[str, str] = field(default_factory=dict)  # "cuda:0" -> "NVIDIA H100 ..."
    error: str | None = None  # why the probe found nothing, if it failed

    @property
    def has_cuda(self) -> bool:
        return bool(self.cuda)

    def as_dict(self) -> dict[str, Any]:
        return {"cuda": list(self.cuda), "names": dict(self.names), "error": self.error}


def probe_in_process() -> dict[str, Any]:
    """What `relman probe-devices` prints. Imports torch: call only in a child process."""
    out: dict[str, Any] = {"cuda": [], "names": {}, "error": None}
    try:
        import torch
    except Exception as e:  # no torch at all: CPU only
        out["error"] = f"torch not importable ({e})"
        return out
    try:
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                out["cuda"].append(f"cuda:{i}")
                out["names"][f"cuda:{i}"] = torch.cuda.get_device_name(i)
    except Exception as e:  # a broken driver is "no GPU", with the reason kept
        out["error"] = f"CUDA not usable ({e})"
    out["torch"] = torch.__version__
    return out


def _from_env() -> Devices | None:
    text = os.environ.get("RELMAN_CUDA_DEVICES")
    if text is None:
        return None
    ids = [t.strip() for t in text.split(",") if t.strip()]
    return Devices(cuda=tuple(f"cuda:{int(i)}" for i in ids))


def _parse(stdout: str, returncode: int, stderr: str) -> Devices:
    try:
        data = json.loads(stdout.strip().splitlines()[-1])
        return Devices(cuda=tuple(data.get("cuda", ())), names=dict(data.get("names", {})), error=data.get("error"))
    except (ValueError, IndexError):
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        return Devices(error=f"device probe failed (exit code {returncode}): {last}")


class DeviceProbe:
    """A device probe running in the background; `poll()` returns Devices once it is done."""

    def __init__(self) -> None:
        self._result: Devices | None = _from_env()
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self._result is not None or self._proc is not None:
            return
        from relman.jobs.launch import child_env, relman_argv

        self._proc = subprocess.Popen(relman_argv("probe-devices"), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())

    def poll(self) -> Devices | None:
        """Non-blocking: the devices once known, else None (starting the probe if needed)."""
        if self._result is not None:
            return self._result
        self.start()
        assert self._proc is not None
        if self._proc.poll() is None:
            return None
        out, err = self._proc.communicate()
        self._result = _parse(out, self._proc.returncode, err)
        self._proc = None
        return self._result

    def wait(self, timeout: float = 120.0) -> Devices:
        if self._result is None:
            self.start()
            assert self._proc is not None
            try:
                out, err = self._proc.communicate(timeout=timeout)
                self._result = _parse(out, self._proc.returncode, err)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.communicate()
                self._result = Devices(error=f"device probe did not answer within {timeout:.0f} s")
            self._proc = None
        return self._result

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()
        self._proc = None


def detect_devices(timeout: float = 120.0) -> Devices:
    """Blocking detection (CLI `relman jobs devices`, tests)."""
    return DeviceProbe().wait(timeout)


def cpu_slots_default() -> int:
    """`RELMAN_CPU_SLOTS`, else 2."""
    text = os.environ.get("RELMAN_CPU_SLOTS")
    if text:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            from relman.errors import JobError

            raise JobError(f"RELMAN_CPU_SLOTS must be a whole number of at least 1, not '{text}'")
        return n
    return DEFAULT_CPU_SLOTS


def threads_per_cpu_job(cpu_slots: int) -> int:
    """Split the cores between concurrent CPU jobs, so two jobs do not oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // max(1, cpu_slots))


def target_device(requested: str, devices: Devices | None, busy: dict[str, int]) -> str | None:
    """The device a job would use, busy or not (None while the probe is still running): what an
    exclusive job reserves while it waits for that device to drain."""
    if requested == "cpu":
        return "cpu"
    if devices is None:
        return None
    if requested == "auto":
        if not devices.has_cuda:
            return "cpu"
        return min(devices.cuda, key=lambda d: busy.get(d, 0))
    return requested if requested in devices.cuda else None


def choose_device(requested: str, devices: Devices | None, busy: dict[str, int], cpu_slots: int) -> str | None:
    """The device a queued job should start on now, or None to keep it waiting.

    Raises JobError when the requested device does not exist on this machine."""
    from relman.errors import JobError

    if requested == "cpu":
        return "cpu" if busy.get("cpu", 0) < cpu_slots else None
    if devices is None:  # still probing: cuda/auto jobs wait for the answer
        return None
    if requested == "auto":
        if not devices.has_cuda:
            return "cpu" if busy.get("cpu", 0) < cpu_slots else None
        for d in devices.cuda:
            if busy.get(d, 0) < 1:
                return d
        return None
    if requested not in devices.cuda:
        have = ", ".join(devices.cuda) or "none"
        why = f"; {devices.error}" if devices.error else ""
        raise JobError(f"device {requested} does not exist on this machine (CUDA devices: {have}{why})")
    return requested if busy.get(requested, 0) < 1 else None
