"""Shared fixtures: a fresh catalog per test and tiny real models built once per session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RELMAN_USER", "tester")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on loopback only (read at import)
os.environ.pop("RELMAN_CATALOG", None)
# catalogs make their own signing key on first open: keep the test run's keys out of ~/.config
os.environ.setdefault("RELMAN_KEYS_DIR", tempfile.mkdtemp(prefix="relman-test-keys-"))

REPO = Path(__file__).resolve().parent.parent

# -- the fast tier (`make test-fast`, `pytest -m fast`) -------------------------------------------
# A test is "fast" unless it is marked slow / heavy / gpu, lives in one of HEAVY_FILES (files
# about workers and models as a whole), or uses a fixture that builds a model or starts workers.
# When the fast tier runs on its own (`-m fast`), a fast test that starts a worker process or
# imports torch, transformers or onnxruntime fails, saying to mark it `heavy`; the full suite
# applies no such guard (its order would decide whether torch is already loaded).
HEAVY_FIXTURES = {"make_runner", "tiny_dir", "tiny_bert", "tiny_bert_encoder", "tiny_vit", "tiny_gpt2", "trained_lm_dir"}
HEAVY_FILES = {
    "test_compress_distill.py", "test_qat_lm.py", "test_compress_finetune.py", "test_compress_finetune_job.py",
    "test_compress_job.py", "test_compress_lowrank.py", "test_compress_merge.py", "test_compress_prune.py",
    "test_compress_prune_structured.py", "test_compress_quant.py", "test_gui_cmds.py", "test_jobs_gpu.py",
    "test_jobs_runner.py", "test_optimize.py", "test_packaging.py", "test_release_concurrency.py",
    "test_tasks.py", "test_ui_jobs.py", "test_jobs_ray.py", "test_jobs_ray_cluster.py",
    "test_compress_lora.py", "test_compress_dp.py", "test_modelcard_lineage.py", "test_adapter_job.py",
    "test_genai_export.py", "test_gguf.py", "test_onnx_generation.py", "test_lm_latency.py",
    "test_compress_lm_finetune.py", "test_int4_lm.py", "test_optimize_lm.py", "test_ui_crash.py",
    "test_qat.py", "test_finetune_defaults.py", "test_ensemble.py",
}
MODEL_LIBRARIES = ("torch", "transformers", "onnxruntime", "ray")
HEAVY_HINT = "mark it @pytest.mark.heavy (it then runs in `make test`, not in `make test-fast`)"


def _fast_tier(config: pytest.Config) -> bool:
    return (config.getoption("markexpr", "") or "").strip() == "fast"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """In the fast tier, heavy files are not even imported (several import torch at the top)."""
    if _fast_tier(config) and collection_path.name in HEAVY_FILES:
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(m) for m in ("slow", "heavy", "gpu")):
            continue
        if item.path.name in HEAVY_FILES or HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            continue
        item.add_marker(pytest.mark.fast)


class _NoModelLibraries:
    """A meta-path finder that refuses the model libraries (only while a fast test runs)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MODEL_LIBRARIES:
            raise ImportError(f"a fast test imported {name}: {HEAVY_HINT}")
        return None


@pytest.fixture(autouse=True)
def _fast_tests_stay_fast(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    if not _fast_tier(request.config) or request.node.get_closest_marker("fast") is None:
        yield
        return
    from relman.jobs import launch

    def refuse(*args, **kwargs):
        raise AssertionError(f"a fast test started a worker process: {HEAVY_HINT}")

    monkeypatch.setattr(launch, "start_worker", refuse)
    blocker = None
    if not any(m in sys.modules for m in MODEL_LIBRARIES):
        blocker = _NoModelLibraries()
        sys.meta_path.insert(0, blocker)
    try:
        yield
    finally:
        if blocker is not None:
            sys.meta_path.remove(blocker)


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    return tmp_path / "catalog"


@pytest.fixture
def catalog(catalog_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh catalog whose signing key lives in this test's own keys folder (tmp_path/keys,
    the folder tests that make a person's key use too): where the catalog's key is held, its
    checkpoints must verify with keys trusted here, so the two must not drift apart."""
    from relman.catalog import open_catalog

    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "keys"))
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
def trained_lm_dir() -> Path:
    """The small LM trained on the stdlib's docstrings (relman.modelio.trained_lm): built once per
    machine (a few CPU minutes), then read from the cache. Use it wherever quality must mean
    something; tiny_gpt2 / tiny_decoder have random weights."""
    from relman.modelio.trained_lm import trained_lm

    return trained_lm()


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
