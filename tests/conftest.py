"""Shared fixtures: a fresh catalog per test and tiny real models built once per session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RELMAN_USER", "tester")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on loopback only (read at import)
os.environ.pop("RELMAN_CATALOG", None)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    return tmp_path / "catalog"


@pytest.fixture
def catalog(catalog_path: Path):
    from relman.catalog import open_catalog

    cat = open_catalog(catalog_path)
    yield cat
    cat.close()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_bert(tiny_dir: Path) -> Path:
    from relman.modelio import tiny

    return tiny.tiny_bert_classifier(tiny_dir / "bert")


@pytest.fixture(scope="session")
def tiny_bert_encoder(tiny_dir: Path) -> Path:
    from relman.modelio import tiny

    return tiny.tiny_bert_encoder(tiny_dir / "bert-encoder")


@pytest.fixture(scope="session")
def tiny_vit(tiny_dir: Path) -> Path:
    from relman.modelio import tiny

    return tiny.tiny_vit_classifier(tiny_dir / "vit")


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_dir: Path) -> Path:
    from relman.modelio import tiny

    return tiny.tiny_gpt2(tiny_dir / "gpt2")


@pytest.fixture
def run_cli(catalog_path: Path):
    """Invoke the real `relman` CLI in-process (click's runner); returns the Result."""
    from click.testing import CliRunner

    from relman.cli import cli

    def invoke(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, ["--catalog", str(catalog_path), *args], input=input,
                                  catch_exceptions=False)

    return invoke


def relman_subprocess_env(catalog_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if catalog_path is not None:
        env["RELMAN_CATALOG"] = str(catalog_path)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


RELMAN = [sys.executable, "-m", "relman"]


@pytest.fixture
def make_runner(catalog_path: Path):
    """Real runners on the test catalog; at teardown no worker of this catalog may survive."""
    from relman.jobs.runner import Runner

    made: list[Runner] = []

    def make(**kwargs) -> Runner:
        kwargs.setdefault("cpu_slots", 2)
        r = Runner(catalog_path, **kwargs)
        made.append(r)
        return r

    yield make
    leftovers = []
    for r in made:
        for w in list(r.workers.values()):
            try:  # a job recorded as ended may still be a moment away from exiting
                w.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                leftovers.append(w.job_id)
                os.killpg(w.proc.pid, signal.SIGKILL)
                w.proc.wait()
        r.close()
    assert not leftovers, f"workers still running at the end of the test: jobs {leftovers}"
