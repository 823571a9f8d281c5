"""What the frozen build leaves out, and which transformers architectures it carries.

Kept out of the spec so the lists can be read (and reviewed) on their own. Every entry here is
something relman never runs: test suites and test binaries, C/C++ headers, developer tools,
other Qt modules (QML/Quick, PDF, virtual keyboard, designer), network-only parts of
pyarrow (Flight, S3, Substrait), and interactive tools (IPython, matplotlib, tkinter,
tensorboard). What stays is checked by tests/test_packaging.py, which runs the frozen app:
import, a compression job in a worker, ONNX export and the GUI.
"""

from __future__ import annotations

import fnmatch
import os
import plistlib
from pathlib import Path

# transformers resolves an architecture from config.json's model_type at run time, so the
# import scan cannot see it. These families cover relman's four tasks (text / image
# classification, feature extraction, causal LM) for the models our users bring most often;
# RELMAN_EXTRA_MODELS adds more at build time. Bundling all ~550 families would add ~200 MB.
TRANSFORMERS_MODELS = (
    # text encoders (classification, feature extraction)
    "bert", "distilbert", "roberta", "xlm_roberta", "camembert", "albert", "electra", "deberta",
    "deberta_v2", "mpnet", "modernbert", "mobilebert",
    # vision (image classification, features)
    "vit", "deit", "beit", "dinov2", "convnext", "convnextv2", "resnet", "swin", "mobilevit",
    "mobilenet_v2", "efficientnet",
    # causal language models
    "gpt2", "gpt_neo", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "phi", "phi3", "opt",
    "gemma", "gemma2", "smollm3",
    # peft.utils.constants imports BloomPreTrainedModel at module level (LoRA fails without it)
    "bloom",
)


def _transformers_models_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


_SKIPPED_FILES = ("modeling_tf_", "modeling_flax_", "convert_")


def transformers_families(extra: str = "") -> list[str]:
    """The bundled families plus every family their code imports (`from ..llama.modeling_llama
    import ...` in generated "modular" files), found by reading the files."""
    import re

    models = _transformers_models_dir()
    if models is None:
        return []
    wanted = ["auto"] + list(TRANSFORMERS_MODELS) + [f.strip() for f in extra.split(",") if f.strip()]
    for family in wanted:
        if not (models / family).is_dir():
            raise SystemExit(f"relman.spec: transformers has no model family '{family}' ({models / family})")
    pattern = re.compile(r"from \.\.(\w+)(?:\.| import)|from transformers\.models\.(\w+)")
    found, todo = set(wanted), list(wanted)
    while todo:
        for py in (models / todo.pop()).glob("*.py"):
            if py.stem.startswith(_SKIPPED_FILES):
                continue
            for groups in pattern.findall(py.read_text(encoding="utf-8", errors="replace")):
                other = groups[0] or groups[1]
                if other not in found and (models / other).is_dir():
                    found.add(other)
                    todo.append(other)
    return sorted(found)


def transformers_excludes(extra: str = "") -> list[str]:
    """Every other family. Needed because transformers/models/__init__.py imports all ~550
    families under `if TYPE_CHECKING:`, which PyInstaller follows (~100 MB of code)."""
    models = _transformers_models_dir()
    if models is None:
        return []
    keep = set(transformers_families(extra))
    return [f"transformers.models.{d.name}" for d in sorted(models.iterdir())
            if d.is_dir() and not d.name.startswith("_") and d.name not in keep]


def transformers_hiddenimports(extra: str = "") -> list[str]:
    """Module names of the bundled transformers families, found by listing files: importing
    each package to list it (PyInstaller's collect_submodules) costs a transformers import per
    family, minutes on a small machine."""
    models = _transformers_models_dir()
    if models is None:
        return []
    names = ["transformers.models", "transformers.modeling_utils", "transformers.generation"]
    for family in transformers_families(extra):
        folder = models / family
        names.append(f"transformers.models.{family}")
        for py in sorted(folder.glob("*.py")):
            if py.stem == "__init__" or py.stem.startswith(_SKIPPED_FILES):
                continue
            names.append(f"transformers.models.{family}.{py.stem}")
    return names


def excluded_modules(flavour: str = "full", extra_models: str = "") -> list[str]:
    """Python packages PyInstaller would otherwise follow into the bundle."""
    names = [
        # interactive / plotting / GUI toolkits we do not use
        # (not matplotlib: captum imports it at module level, so explanations need it)
        "tkinter", "_tkinter", "IPython", "ipykernel", "jupyter_client", "tensorboard",
        "torch.utils.tensorboard", "jedi", "notebook",
        # test and dev tools (they come in through optional imports)
        "pytest", "_pytest", "pytestqt", "pip", "Cython",
        # hub downloads: the installed app is offline (relman_entry sets HF_HUB_OFFLINE)
        "hf_xet",
        # Ray is an optional extra (relman[ray]); the installed app runs jobs as local processes
        "ray",
        # torch: only tensorboard. Not torch.testing._internal (torch.utils.checkpoint and
        # torch.distributed.fsdp import from it at module level, and transformers imports those),
        # not torch.utils.benchmark (the profiler imports it), not torch.distributed.
        "torch.utils.tensorboard",
        # pyarrow parts that talk to servers or cloud storage
        "pyarrow.flight", "pyarrow._flight", "pyarrow._s3fs", "pyarrow._gcsfs", "pyarrow._azurefs",
        "pyarrow._hdfs", "pyarrow.substrait", "pyarrow._substrait", "pyarrow.cuda", "pyarrow._cuda",
        "pyarrow.gandiva", "pyarrow.tests", "pyarrow.interchange",
        # Qt: only QtCore, QtGui, QtWidgets, QtSvg (+ QtOpenGL* that pyqtgraph's GL items import)
        "PySide6.QtQml", "PySide6.QtQuick", "PySide6.QtQuickWidgets", "PySide6.QtQuickControls2",
        "PySide6.QtNetwork", "PySide6.QtPdf", "PySide6.QtPdfWidgets", "PySide6.QtDesigner",
        "PySide6.QtHelp", "PySide6.QtSql", "PySide6.QtTest", "PySide6.QtXml", "PySide6.QtPrintSupport",
        "PySide6.QtDBus", "PySide6.QtConcurrent", "PySide6.QtUiTools", "PySide6.QtStateMachine",
        "PySide6.QtSvgWidgets", "PySide6.QtNetworkAuth", "PySide6.QtWebSockets", "PySide6.QtMultimedia",
        "pyqtgraph.opengl", "pyqtgraph.examples", "pyqtgraph.jupyter", "pyqtgraph.canvas",
        "PyQt5", "PyQt6", "PySide2",
        # other backends some libraries probe for
        "tensorflow", "jax", "flax", "keras", "triton",
    ]
    # not onnxruntime.transformers: quantization's shape inference imports its onnx_utils
    return names + transformers_excludes(extra_models)


# Destination paths (as laid out in the bundle, '/'-separated) that are never used at run time.
_DROP_PATTERNS = (
    # torch: C++ test binaries, headers, cmake files, test-only shared libraries, protoc
    "torch/test/*", "torch/bin/*", "torch/include/*", "torch/share/*", "torch/lib/*test*",
    "torch/lib/libbackend_with_compiler*", "torch/lib/libaoti_custom_ops*", "torch/lib/*.a",
    "torch/_inductor/codegen/aoti_runtime/*", "torch/testing/_internal/generated/*",
    "torch/utils/model_dump/*",
    # headers and sources shipped as data by several wheels
    "*.h", "*.hpp", "*.cuh", "*.pyx", "*.pxd", "*.pxi", "*.c", "*.cpp", "*.cmake", "*.lib",
    "pyarrow/include/*", "pyarrow/src/*", "pyarrow/tests/*", "numpy/_core/include/*",
    "numpy/_core/tests/*", "scipy/*/tests/*", "sklearn/*/tests/*", "pandas/tests/*",
    # pyarrow libraries for servers and cloud storage
    # (not libarrow_substrait: libarrow_python and every pyarrow extension link it)
    "pyarrow/libarrow_flight*", "pyarrow/libarrow_python_flight*", "pyarrow/libarrow_s3*",
    "pyarrow/libgandiva*", "pyarrow/libarrow_cuda*", "pyarrow/_flight*", "pyarrow/_s3fs*",
    "pyarrow/_substrait*", "pyarrow/_gcsfs*", "pyarrow/_azurefs*", "pyarrow/_hdfs*",
    # Qt: QML/Quick, PDF, virtual keyboard, designer, SQL drivers, translations (the UI is English)
    "PySide6/Qt/qml/*", "PySide6/Qt/translations/*", "PySide6/Qt/plugins/qmltooling/*",
    "PySide6/Qt/plugins/designer/*", "PySide6/Qt/plugins/sqldrivers/*",
    "PySide6/Qt/plugins/platforminputcontexts/libqtvirtualkeyboard*",
    "PySide6/Qt/plugins/imageformats/libqpdf*", "PySide6/Qt/plugins/printsupport/*",
    "PySide6/Qt/plugins/egldeviceintegrations/*", "PySide6/Qt/plugins/platforms/libqeglfs*",
    "PySide6/Qt/plugins/platforms/libqlinuxfb*", "PySide6/Qt/plugins/platforms/libqvnc*",
    "PySide6/Qt/plugins/platforms/libqvkkhrdisplay*", "PySide6/Qt/plugins/platforms/libqminimalegl*",
    "PySide6/Qt/plugins/tls/*", "PySide6/Qt/plugins/networkinformation/*",
    "PySide6/Qt/lib/libQt6Quick*", "PySide6/Qt/lib/libQt6Qml*", "PySide6/Qt/lib/libQt6Pdf*",
    "PySide6/Qt/lib/libQt6VirtualKeyboard*", "PySide6/Qt/lib/libQt6Designer*",
    "PySide6/Qt/lib/libQt6EglFS*", "PySide6/Qt/lib/libQt6Network*",
    "PySide6/Qt/libexec/*", "PySide6/Qt/metatypes/*", "PySide6/*.pyi", "PySide6/include/*",
    "PySide6/typesystems/*", "PySide6/glue/*",
    # stub files, caches
    "*.pyi", "*/__pycache__/*",
)
# Never dropped, whatever the patterns above say: the GPU libraries of a CUDA build.
_KEEP_PATTERNS = (
    "torch/lib/libtorch_cuda*", "torch/lib/libc10_cuda*", "nvidia/*",
    "torch/bin/torch_shm_manager",  # `import torch` checks that it exists
)

# Libraries whose symbol tables we strip after the build (PyInstaller's own strip=True strips
# everything, which corrupts auditwheel-patched libraries such as numpy's OpenBLAS: "ELF load
# command address/offset not page-aligned"). Each of these was checked to load after stripping;
# libtorch_cpu alone goes 434 -> 345 MB, libpython 23 -> 6 MB, pyarrow's ~20 MB less.
STRIP_GLOBS = ("torch/lib/libtorch_cpu.so", "torch/lib/libtorch_python.so", "libpython3*.so*",
               "pyarrow/libarrow.so.*", "pyarrow/libarrow_compute.so.*", "pyarrow/libarrow_dataset.so.*",
               "pyarrow/libarrow_acero.so.*", "pyarrow/libparquet.so.*")


def strip_selected(internal: Path) -> int:
    """Strip the STRIP_GLOBS libraries of the built bundle in place; returns the bytes saved."""
    import shutil
    import subprocess

    if not shutil.which("strip"):
        print("relman.spec: no `strip` on PATH; libraries left as they are")
        return 0
    saved, count = 0, 0
    for pattern in STRIP_GLOBS:
        for path in sorted(internal.glob(pattern)):
            if not path.is_file() or path.is_symlink():
                continue
            before = path.stat().st_size
            subprocess.run(["strip", "--strip-unneeded", str(path)], check=True)
            saved += before - path.stat().st_size
            count += 1
    print(f"relman.spec: stripped {count} libraries, {saved / 2**20:.1f} MiB saved")
    return saved


def _dropped(dest: str) -> bool:
    dest = dest.replace(os.sep, "/").replace("\\", "/")
    if any(fnmatch.fnmatch(dest, p) for p in _KEEP_PATTERNS):
        return False
    return any(fnmatch.fnmatch(dest, p) for p in _DROP_PATTERNS)


def filter_toc(toc, flavour: str = "full"):
    """(kept, dropped) entries of a PyInstaller TOC (list of (dest, src, typecode))."""
    kept, dropped = [], []
    for entry in toc:
        (dropped if _dropped(entry[0]) else kept).append(entry)
    return kept, dropped


def report_dropped(dropped, out: Path) -> None:
    """Write what was dropped and how much it weighed, for the README's size table."""
    total = 0
    lines = []
    for dest, src, _kind in sorted(dropped):
        try:
            size = os.path.getsize(src)
        except OSError:
            size = 0
        total += size
        lines.append(f"{size:>12}  {dest}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines + [f"{total:>12}  TOTAL ({total / 2**20:.1f} MiB, {len(dropped)} files)"]) + "\n")
    print(f"relman.spec: dropped {len(dropped)} files, {total / 2**20:.1f} MiB (list: {out})")


def mac_info_plist(root: Path) -> dict:
    """Info.plist keys for relman.app (PyInstaller fills in the executable and identifiers)."""
    import re

    path = root / "packaging" / "macos" / "Info.plist"
    with open(path, "rb") as f:
        plist = plistlib.load(f)
    init = (root / "relman" / "__init__.py").read_text(encoding="utf-8")
    version = re.search(r'__version__ = "([^"]+)"', init).group(1)
    plist["CFBundleShortVersionString"] = plist["CFBundleVersion"] = version
    return plist
