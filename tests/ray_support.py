"""Real Ray clusters for tests: `ray start --head --block` and `ray start --address --block`
processes on 127.0.0.1, token authentication on, every port chosen free and a private
--temp-dir, so a test cluster never meets another Ray instance on the machine (other test runs
may have their own). Each node is a process group of its own; stopping one kills that group by
process id (never `ray stop`, which would stop every Ray instance of the user).

The token lives in a file of the test's own (RAY_AUTH_TOKEN_PATH), never in ~/.ray."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from relman.jobs.testing import wait_until

RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports (held open together, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_token(path: Path) -> Path:
    path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    return path


@dataclass
class Node:
    proc: subprocess.Popen
    log: Path
    killed: bool = False

    def kill(self) -> None:
        """kill -9 the `ray start` process group: its raylet, object store and workers."""
        self.killed = True
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class TokenCluster:
    """A head (0 CPUs for jobs unless told) and worker nodes joining it, all token-protected."""

    token_file: Path
    temp_dir: Path
    port: int
    logs: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file),
                    "RAY_USAGE_STATS_ENABLED": "0"})
        env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # "0" refuses to join a worker node
        return env

    def _start(self, args: list[str], name: str, num_cpus: int, resources: str | None) -> Node:
        p = free_ports(8)
        log = self.logs / f"{name}.log"
        cmd = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", "--num-gpus=0",
               f"--node-manager-port={p[0]}", f"--object-manager-port={p[1]}",
               f"--metrics-export-port={p[2]}", f"--dashboard-agent-listen-port={p[3]}",
               f"--dashboard-agent-grpc-port={p[4]}", f"--runtime-env-agent-port={p[5]}",
               f"--min-worker-port={p[6]}", f"--max-worker-port={p[6] + 40}",
               "--object-store-memory=100000000", "--disable-usage-stats", *args]
        if resources:
            cmd.append(f"--resources={resources}")
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self._env(),
                                    start_new_session=True)
        node = Node(proc, log)
        self.nodes.append(node)
        return node

    def start_head(self, num_cpus: int = 0) -> Node:
        return self._start(["--head", f"--port={self.port}", "--include-dashboard=false",
                            f"--temp-dir={self.temp_dir}"],
                           "head", num_cpus, None)

    def add_worker(self, num_cpus: int = 1) -> Node:
        return self._start([f"--address={self.address}"], f"worker{len(self.nodes)}", num_cpus, None)

    def wait_for_cpus(self, cpus: int, timeout: float = START_TIMEOUT_S) -> None:
        """Poll (as a token-holding client in a child process) until the cluster has `cpus` CPUs."""
        code = ("import ray,sys\n"
                "from relman.jobs.testing import wait_until\n"
                "ray.init(address=sys.argv[1], log_to_driver=False)\n"
                "wait_until(lambda: ray.cluster_resources().get('CPU',0)==float(sys.argv[2]), float(sys.argv[3]),\n"
                "           'the cluster to report its CPUs', describe=lambda: str(ray.cluster_resources()))\n")
        deadline = time.monotonic() + timeout

        def listening() -> bool:
            dead = [n for n in self.nodes if not n.killed and not n.alive()]
            if dead:
                raise AssertionError(f"a ray node exited: {dead[0].log.read_text(errors='replace')[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_until(listening, timeout, "the Ray head to listen")
        left = max(5.0, deadline - time.monotonic())
        r = subprocess.run([sys.executable, "-c", code, self.address, str(cpus), str(left)], env=self._env(),
                           capture_output=True, text=True, timeout=left + 30)
        assert r.returncode == 0, r.stderr[-3000:]

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def token_cluster(folder: Path) -> TokenCluster:
    """A cluster description with a fresh token file in `folder` and a short private temp dir
    (Ray's socket paths must stay under ~107 characters)."""
    temp = Path(tempfile.mkdtemp(prefix="rr-", dir="/tmp"))
    return TokenCluster(write_token(folder / "ray-token"), temp, free_port(), folder)
