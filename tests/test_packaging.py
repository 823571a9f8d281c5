"""The frozen (PyInstaller) app, run the way a user without Python runs it.

`make package-test` builds dist/ when needed and runs this file (slow: a few minutes; not part
of `make test` / CI). The app is unpacked from the .tar.gz into a temporary folder outside the
repository and run with a cleared environment (`env -i`: only HOME, TMPDIR, a system PATH with
no venv, QT_QPA_PLATFORM=offscreen), so it can only work with what the bundle carries:
`--version`, `init`, `import` of a tiny real model, compression jobs in real worker processes
started from the frozen executable, and the GUI drawing a screenshot offscreen. The .deb is
checked for its layout and run through its /usr/bin link.

RELMAN_FROZEN_APP=path/to/relman runs the same checks against an existing build (CI on
Windows / macOS, where there is no .tar.gz or .deb).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import relman

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
DIST = REPO / "dist"
IS_WIN = sys.platform.startswith("win")
RUN_TIMEOUT_S = 420
# The slimmed bundle weighs 966 MiB (README "Installers"); the naive build 1366 MiB. A jump past
# this ceiling means something big was pulled in again.
MAX_BUNDLE_MIB = 1100


# --- helpers -----------------------------------------------------------------------------------

def _newest(pattern: str) -> Path:
    found = sorted(DIST.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        pytest.fail(f"no {pattern} in {DIST}: run `make package` (or `make package-test`) first")
    return found[-1]


def clean_env(home: Path) -> dict[str, str]:
    """What `env -i HOME=... TMPDIR=... PATH=/usr/bin:/bin QT_QPA_PLATFORM=offscreen` leaves."""
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {"HOME": str(home), "TMPDIR": str(tmp), "QT_QPA_PLATFORM": "offscreen", "LANG": "C.UTF-8",
           "RELMAN_USER": "packager"}
    if IS_WIN:  # Windows cannot start a process without these
        for key in ("SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "COMSPEC"):
            if key in os.environ:
                env[key] = os.environ[key]
        env.update({"PATH": os.environ.get("SYSTEMROOT", r"C:\Windows") + r"\System32", "TEMP": str(tmp),
                    "TMP": str(tmp), "USERPROFILE": str(home), "LOCALAPPDATA": str(home / "AppData" / "Local"),
                    "APPDATA": str(home / "AppData" / "Roaming")})
    else:
        env["PATH"] = "/usr/bin:/bin"
    return env


def run_app(app: Path, home: Path, *args: str, timeout: float = RUN_TIMEOUT_S,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run the frozen app with a cleared environment; on POSIX literally through `env -i`."""
    env = clean_env(home)
    if IS_WIN:
        argv, popen_env = [str(app), *args], env
    else:
        argv, popen_env = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), str(app), *args], {}
    proc = subprocess.run(argv, env=popen_env or None, cwd=str(home), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        pytest.fail(f"relman {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
                    f"stderr:\n{proc.stderr[-6000:]}")
    return proc


def run_json(app: Path, home: Path, *args: str) -> object:
    out = run_app(app, home, *args).stdout
    start = min((i for i in (out.find("{"), out.find("[")) if i >= 0), default=-1)
    assert start >= 0, f"no JSON in the output of relman {' '.join(args)}:\n{out}"
    return json.loads(out[start:])


def _dir_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `relman` executable, unpacked from the .tar.gz the way a user installs it."""
    given = os.environ.get("RELMAN_FROZEN_APP")
    if given:
        app = Path(given).resolve()
        assert app.is_file(), f"RELMAN_FROZEN_APP={given} does not exist"
        return app
    tarball = _newest("relman-*-linux-*.tar.gz")
    dest = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(dest)], check=True, timeout=600)
    (top,) = [p for p in dest.iterdir() if p.is_dir()]
    app = top / "relman"
    assert os.access(app, os.X_OK), f"{app} is not executable"
    return app


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real BERT classifier, made with the development venv (the frozen app imports it)."""
    from relman.modelio import tiny

    return tiny.tiny_bert_classifier(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def catalog(installed: Path, home: Path, tiny_model: Path) -> dict:
    """A catalog created and filled by the frozen app: init + import of the tiny model."""
    cat = home / "catalog"
    out = run_app(installed, home, "--catalog", str(cat), "init").stdout
    assert "catalog ready" in out and (cat / "catalog.db").is_file()
    version = run_json(installed, home, "--catalog", str(cat), "import", str(tiny_model), "--model", "tinybert",
                       "--version", "1.0.0", "--task", "text-classification", "--json")
    assert version["model"] == "tinybert" and version["version"] == "1.0.0", version
    # a Parquet dataset: pyarrow (slimmed: no Flight/S3) reads it inside the bundle
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"{w} film number {i}" for i in range(24) for w in (("great", "awful")[i % 2],)]
    table = pa.table({"text": texts, "label": [("positive", "negative")[i % 2] for i in range(24)]})
    parquet = home / "reviews.parquet"
    pq.write_table(table, parquet)
    data = run_json(installed, home, "--catalog", str(cat), "dataset", "add", str(parquet), "--name", "reviews",
                    "--json")
    assert data["name"] == "reviews", data
    return {"path": cat, "base": version, "dataset": "reviews"}


# --- tests -------------------------------------------------------------------------------------

def test_version_in_clean_environment(installed: Path, home: Path) -> None:
    proc = run_app(installed, home, "--version")
    assert proc.stdout.strip() == f"relman, version {relman.__version__}"


def test_help_lists_commands_without_importing_heavy_libraries(installed: Path, home: Path) -> None:
    started = time.monotonic()
    out = run_app(installed, home, "--help").stdout
    for command in ("init", "import", "ls", "show", "queue", "jobs"):
        assert f"  {command}" in out, f"'{command}' missing from --help:\n{out}"
    # start-up imports neither torch nor Qt, also frozen: generous bound for a loaded 2-core box
    assert time.monotonic() - started < 30


def test_init_and_import_tiny_model(installed: Path, home: Path, catalog: dict) -> None:
    rows = run_json(installed, home, "--catalog", str(catalog["path"]), "ls", "--json")
    refs = {f"{r['model']}@{r['version']}" for r in rows}
    assert "tinybert@1.0.0" in refs, rows
    out = run_app(installed, home, "--catalog", str(catalog["path"]), "show", "tinybert@1.0.0").stdout
    assert "model.safetensors" in out and "text-classification" in out


def _compress(installed: Path, home: Path, catalog: dict, ref: str, recipe: str, version: str,
              evaluate: bool, dataset: str | None = None, params: dict | None = None) -> dict:
    """`relman compress REF RECIPE --wait`: the CLI drives a runner, which starts the worker (and,
    with evaluation, a second worker for the child's evaluation) from the frozen executable."""
    args = ["--catalog", str(catalog["path"]), "compress", ref, recipe, "--version", version, "--wait", "--json"]
    args += ["--dataset", dataset] if dataset else []
    for key, value in (params or {}).items():
        args += ["--param", f"{key}={value}"]
    job = run_json(installed, home, *args + ([] if evaluate else ["--no-evaluate"]))
    assert job["status"] == "succeeded", job
    model = ref.split("@")[0]
    child = run_json(installed, home, "--catalog", str(catalog["path"]), "show", f"{model}@{version}", "--json")
    assert all(r in child["parents"] for r in ref.split(",")) and recipe in json.dumps(child["recipe"]), child
    return child


def test_compression_and_evaluation_jobs_run_in_frozen_workers(installed: Path, home: Path, catalog: dict) -> None:
    """torch-int8-dynamic, then the child's evaluation against its parent (a second job)."""
    child = _compress(installed, home, catalog, "tinybert@1.0.0", "torch-int8-dynamic", "1.0.1", evaluate=True)
    assert child["format"] == "torch-int8", child
    assert child["metrics"], f"the evaluation job stored no metrics: {child}"
    logs = list((catalog["path"] / "logs").glob("*.log"))
    assert len(logs) >= 2, f"expected a log per worker, found {logs}"
    run_app(installed, home, "--catalog", str(catalog["path"]), "verify")


def test_onnx_export_and_ort_int8_in_frozen_workers(installed: Path, home: Path, catalog: dict) -> None:
    """The dynamo ONNX exporter (torch.export, sympy, onnxscript) and onnxruntime quantisation
    (its shape inference, onnxruntime.transformers) are what the slimming could break."""
    onnx = _compress(installed, home, catalog, "tinybert@1.0.0", "onnx-export", "1.1.0", evaluate=False)
    assert onnx["format"] == "onnx", onnx
    q = _compress(installed, home, catalog, "tinybert@1.1.0", "ort-int8", "1.1.1", evaluate=True,
                  dataset=catalog["dataset"])
    assert q["format"] == "onnx" and q["size_bytes"] < onnx["size_bytes"], (q, onnx)
    assert q["metrics"], f"the evaluation job stored no metrics: {q}"
    assert any(m["dataset"] for m in q["metrics"]), f"no quality metric on the dataset: {q['metrics']}"


def test_lora_dp_and_adapter_merge_in_frozen_workers(installed: Path, home: Path, catalog: dict) -> None:
    """LoRA (peft), DP-LoRA (opacus) and merge-fedavg of the two adapters, each a frozen worker."""
    lora = _compress(installed, home, catalog, "tinybert@1.0.0", "finetune", "2.0.0", evaluate=False,
                     params={"dataset": "reviews", "method": "lora", "epochs": 1})
    assert lora["format"] == "peft-adapter", lora
    dp = _compress(installed, home, catalog, "tinybert@1.0.0", "finetune", "2.1.0", evaluate=False,
                   params={"dataset": "reviews", "method": "lora", "dp": "true", "epochs": 1, "delta": 0.01})
    assert dp["format"] == "peft-adapter" and "privacy" in json.dumps(dp), dp
    merged = _compress(installed, home, catalog, "tinybert@2.0.0,tinybert@2.1.0", "merge-fedavg", "2.2.0",
                       evaluate=False, params={"allow_mixed_privacy": "true"})
    assert merged["format"] == "peft-adapter", merged


@pytest.mark.parametrize("method", ["ig", "occlusion"])
def test_explain_in_a_frozen_worker(installed: Path, home: Path, catalog: dict, method: str) -> None:
    """Explanations (captum for IG) through the explain job, in a worker the app starts."""
    doc = run_json(installed, home, "--catalog", str(catalog["path"]), "explain", "tinybert@1.0.0", "--dataset",
                   catalog["dataset"], "--method", method, "--examples", "4", "--wait", "--json")
    assert doc.get("method") == method and doc.get("examples"), doc


@pytest.fixture(scope="module")
def tiny_lm(installed: Path, home: Path, catalog: dict, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Qwen2-shaped causal LM (made with the development venv), imported by the frozen app,
    with the LM test data registered as mcq and qa datasets."""
    from relman.modelio import tiny

    folder = tiny.tiny_decoder(tmp_path_factory.mktemp("lm") / "qwen2", "qwen2")
    cat = str(catalog["path"])
    run_json(installed, home, "--catalog", cat, "import", str(folder), "--model", "tinylm", "--version", "1.0.0",
             "--task", "causal-lm", "--json")
    data = REPO / "tests" / "data" / "lm_eval"
    for name, file, fmt in (("colours-mc", "colours_mcq.jsonl", "mcq"), ("colours-qa", "colours_qa.jsonl", "qa")):
        run_json(installed, home, "--catalog", cat, "dataset", "add", str(data / file), "--name", name, "--format",
                 fmt, "--json")
    return "tinylm@1.0.0"


@pytest.mark.parametrize("exporter,version", [("relman", "1.0.1"), ("genai", "1.0.2")])
def test_int4_through_both_exporters_in_frozen_workers(installed: Path, home: Path, catalog: dict, tiny_lm: str,
                                                       exporter: str, version: str) -> None:
    """INT4 via relman's exporter and via ONNX Runtime GenAI's builder, which the frozen worker
    starts as `relman run-bundled onnxruntime_genai.models.builder` (there is no python -m)."""
    child = _compress(installed, home, catalog, tiny_lm, "int4-weight-only", version, evaluate=False,
                      params={"exporter": exporter})
    assert child["format"] == "onnx", child
    assert (child["meta"].get("exporter") == "onnxruntime-genai") == (exporter == "genai"), child["meta"]


@pytest.mark.parametrize("suite,dataset,metric", [("mc", "colours-mc", "mc_acc"),
                                                  ("generate", "colours-qa", "generate_exact_match"),
                                                  ("quality", "reviews", "")])
def test_lm_suites_in_frozen_workers(installed: Path, home: Path, catalog: dict, tiny_lm: str, suite: str,
                                     dataset: str, metric: str) -> None:
    out = run_json(installed, home, "--catalog", str(catalog["path"]), "evaluate", tiny_lm, "--dataset", dataset,
                   "--suite", suite, "--wait", "--json")
    assert out.get("results"), out
    assert metric in json.dumps(out["results"]), out


def test_gui_draws_screenshots_offscreen(installed: Path, home: Path, tmp_path: Path) -> None:
    """The demo (trains a tiny ViT on the bundled digits data) then the main window, offscreen:
    Qt platform plugin, themes and icons through the resource resolver, pyqtgraph plots."""
    from PIL import Image

    shots = tmp_path / "shots"
    out = run_app(installed, home, "--catalog", str(tmp_path / "demo"), "demo", "--headless",
                  "--screenshots", str(shots), "--train-seconds", "2", "--no-jobs").stdout
    pngs = sorted(shots.glob("*.png"))
    assert len(pngs) >= 4, f"screenshots: {pngs}\n{out}"
    for png in pngs:
        with Image.open(png) as img:
            assert img.width >= 400 and img.height >= 300, (png, img.size)
            colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
            assert colours is None or len(colours) > 20, f"{png.name} looks blank ({len(colours)} colours)"
    # the dark theme is a .qss found through the resource resolver in the bundle (sys._MEIPASS):
    # if it were missing, the "dark" screenshots would be as light as the others
    from PIL import ImageStat

    def brightness(png: Path) -> float:
        with Image.open(png) as img:
            return ImageStat.Stat(img.convert("L")).mean[0]

    dark = [p for p in pngs if p.name.startswith("dark-")]
    assert dark, f"no dark-theme screenshots among {[p.name for p in pngs]}"
    assert all(brightness(p) < 100 for p in dark), {p.name: brightness(p) for p in dark}
    assert all(brightness(p) > 150 for p in pngs if p not in dark), {p.name: brightness(p) for p in pngs}


def test_bundle_is_slim(installed: Path) -> None:
    root = installed.parent
    internal = root / "_internal" if (root / "_internal").is_dir() else root
    # (matplotlib stays: captum, which the explanations use, imports it)
    for unused in ("torch/test", "torch/include", "torch/bin/test_api", "torch/bin/protoc", "tkinter", "IPython",
                   "PySide6/Qt/qml", "PySide6/Qt/translations", "transformers/models/whisper",
                   "pyarrow/libarrow_flight.so.2600"):
        assert not (internal / unused).exists(), f"{unused} should not be bundled"
    libs = [p.name for p in internal.rglob("libQt6*")]
    assert libs and not [n for n in libs if n.startswith(("libQt6Quick", "libQt6Qml", "libQt6Pdf"))], libs
    size_mib = _dir_size(root) / 2**20
    assert size_mib < MAX_BUNDLE_MIB, f"bundle is {size_mib:.0f} MiB"


@pytest.mark.skipif(IS_WIN or sys.platform == "darwin", reason=".deb is built on Linux only")
def test_deb_package_layout_and_launcher(tmp_path: Path, home: Path) -> None:
    deb = _newest("relman_*.deb")
    info = subprocess.run(["dpkg-deb", "--info", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "Package: relman" in info and f"Version: {relman.__version__}" in info and "libc6 (>= 2." in info
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=600)
    desktop = (root / "usr/share/applications/relman.desktop").read_text()
    assert "Exec=relman" in desktop and "Icon=relman" in desktop and "Type=Application" in desktop
    if shutil.which("desktop-file-validate"):
        subprocess.run(["desktop-file-validate", str(root / "usr/share/applications/relman.desktop")], check=True)
    for size in (16, 48, 256):
        assert (root / f"usr/share/icons/hicolor/{size}x{size}/apps/relman.png").is_file()
    link = root / "usr/bin/relman"
    assert link.is_symlink() and link.resolve() == (root / "opt/relman/relman").resolve()
    # through the /usr/bin link, as the menu entry starts it; a job proves workers find the executable
    assert run_app(link, home, "--version").stdout.strip() == f"relman, version {relman.__version__}"
    cat = tmp_path / "cat"
    run_app(link, home, "--catalog", str(cat), "init")
    job = run_json(link, home, "--catalog", str(cat), "queue", "noop", "--wait", "--json")
    assert job["status"] == "succeeded", job
