"""Model import: each format, and every bad input the foundation issue lists.

Each bad input must give a one-line error naming the file and the problem, a non-zero exit
code from the CLI, and leave the catalog as it was (no row, no orphan blob)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from relman.app.models import import_model
from relman.errors import ModelImportError, UnsafeModelError

from conftest import RELMAN, relman_subprocess_env
from import_probe import heavy_loaded_by


def _state(cat) -> tuple:
    return (len(cat.versions()), len(cat.models()), sorted(cat.store.all_shas()), len(cat.events()))


# -- good imports -----------------------------------------------------------------------------
def test_import_hf_folder_records_metadata(catalog, tiny_bert: Path) -> None:
    v = import_model(catalog, tiny_bert, "bert")
    assert (v.format, v.task, v.architecture, v.dtype) == ("hf", "text-classification",
                                                           "BertForSequenceClassification", "float32")
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, local_files_only=True)
    assert v.params == sum(p.numel() for p in model.state_dict().values())
    files = {a["path"]: a for a in catalog.artifacts(v.id)}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert v.size_bytes == sum(a["size"] for a in files.values())
    assert v.meta["labels"] == ["negative", "positive"]
    del torch


def test_task_guess_and_override(catalog, tiny_vit: Path, tiny_gpt2: Path, tiny_bert_encoder: Path) -> None:
    assert import_model(catalog, tiny_vit, "vit").task == "image-classification"
    assert import_model(catalog, tiny_gpt2, "gpt").task == "causal-lm"
    assert import_model(catalog, tiny_bert_encoder, "enc").task == "feature-extraction"
    assert import_model(catalog, tiny_bert_encoder, "enc2", task="text-classification").task == "text-classification"
    with pytest.raises(ModelImportError, match="unknown task 'translation'"):
        import_model(catalog, tiny_bert_encoder, "enc3", task="translation")


def test_import_single_safetensors(catalog, tiny_bert: Path) -> None:
    v = import_model(catalog, tiny_bert / "model.safetensors", "st")
    assert v.format == "safetensors" and v.params and v.dtype == "float32"
    assert [a["path"] for a in catalog.artifacts(v.id)] == ["model.safetensors"]


@pytest.mark.heavy  # loads torch
def test_import_torch_state_dict(catalog, tmp_path: Path) -> None:
    import torch

    sd = {"layer.weight": torch.zeros(4, 3), "layer.bias": torch.zeros(4, dtype=torch.float16)}
    torch.save(sd, tmp_path / "weights.pt")
    v = import_model(catalog, tmp_path / "weights.pt", "sd")
    assert (v.format, v.params, v.dtype) == ("torch", 16, "float32")


def test_import_hf_folder_with_pytorch_model_bin(catalog, tiny_bert: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "bin-model"
    shutil.copytree(tiny_bert, folder)
    sd = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(sd, folder / "pytorch_model.bin")
    v = import_model(catalog, folder, "binmodel")
    assert v.format == "hf" and v.params == sum(t.numel() for t in sd.values())


def _export_onnx(folder: Path, out: Path, external: bool) -> Path:
    import onnx
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    ids = torch.ones(1, 8, dtype=torch.long)

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return self.m(input_ids=input_ids).logits

    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    torch.onnx.export(Wrap(model), (ids,), str(path), input_names=["input_ids"], output_names=["logits"],
                      dynamo=False)
    if external:
        m = onnx.load(str(path))
        onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx.data", size_threshold=0)
    return path


def test_import_onnx_with_external_data(catalog, tiny_bert: Path, tmp_path: Path) -> None:
    path = _export_onnx(tiny_bert, tmp_path / "onnx", external=True)
    v = import_model(catalog, path, "onnx")
    assert v.format == "onnx" and v.params > 20000
    assert [a["path"] for a in catalog.artifacts(v.id)] == ["model.onnx", "model.onnx.data"]
    out = catalog.materialize(v.id, tmp_path / "mat")
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input_ids": np.ones((1, 8), dtype=np.int64)})[0].shape == (1, 2)


def test_importing_the_same_model_twice_stores_blobs_once(catalog, tiny_bert: Path) -> None:
    import_model(catalog, tiny_bert, "bert")
    n = len(list(catalog.store.all_shas()))
    v2 = import_model(catalog, tiny_bert, "bert")
    assert v2.version == "1.1.0"
    assert len(list(catalog.store.all_shas())) == n


# -- bad inputs -------------------------------------------------------------------------------
def _bad_folder_cases(tmp_path: Path, tiny_bert: Path) -> dict[str, tuple[Path, str]]:
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (tmp_path / "does-not-exist", "no such file or folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases["empty folder"] = (empty, "folder is empty")
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    shutil.copy(tiny_bert / "config.json", noweights / "config.json")
    cases["no weights"] = (noweights, "no weights found")
    data = (tiny_bert / "model.safetensors").read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) // 2])
    cases["truncated safetensors"] = (trunc, "truncated")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\xff" * 64)
    cases["corrupt safetensors"] = (corrupt, "corrupt safetensors header")
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"this is not protobuf \x00\x01\x02" * 10)
    cases["onnx that does not parse"] = (bad_onnx, "not a valid ONNX model")
    remote = tmp_path / "remote"
    shutil.copytree(tiny_bert, remote)
    cfg = json.loads((remote / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (remote / "config.json").write_text(json.dumps(cfg))
    cases["auto_map needs remote code"] = (remote, "needs trust_remote_code")
    return cases


def _evil_pickle(path: Path, marker: Path) -> None:
    """A torch file whose pickle would run a shell command when loaded without weights_only."""
    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"weight": torch.zeros(2), "payload": Evil()}, path)


@pytest.mark.heavy  # loads torch
def test_pickle_that_would_run_code_is_refused(catalog, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _evil_pickle(tmp_path / "evil.bin", marker)
    before = _state(catalog)
    with pytest.raises(UnsafeModelError, match="evil.bin: refused, the pickle would run code"):
        import_model(catalog, tmp_path / "evil.bin", "evil")
    assert not marker.exists()
    assert _state(catalog) == before


def test_each_bad_input_gives_one_line_error_and_changes_nothing(catalog, tmp_path: Path, tiny_bert: Path) -> None:
    import_model(catalog, tiny_bert, "ok")
    before = _state(catalog)
    for label, (path, message) in _bad_folder_cases(tmp_path, tiny_bert).items():
        with pytest.raises(ModelImportError) as info:
            import_model(catalog, path, "bad")
        text = str(info.value)
        assert message in text, label
        assert path.name in text, label
        assert "\n" not in text, label
        assert _state(catalog) == before, label
        assert catalog.orphan_blobs() == [], label


def test_cli_bad_inputs_exit_nonzero_with_one_line(catalog_path: Path, tmp_path: Path, tiny_bert: Path) -> None:
    env = relman_subprocess_env(catalog_path)
    subprocess.run(RELMAN + ["init"], env=env, check=True, capture_output=True)
    marker = tmp_path / "pwned"
    _evil_pickle(tmp_path / "evil.bin", marker)
    cases = _bad_folder_cases(tmp_path, tiny_bert)
    cases["pickle"] = (tmp_path / "evil.bin", "would run code")
    for label, (path, message) in cases.items():
        r = subprocess.run(RELMAN + ["import", str(path), "--model", "bad"], env=env, capture_output=True, text=True)
        assert r.returncode != 0, label
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (label, r.stderr)
    assert not marker.exists()
    r = subprocess.run(RELMAN + ["ls", "--json"], env=env, capture_output=True, text=True, check=True)
    assert json.loads(r.stdout) == []


def test_duplicate_version_and_unknown_model_via_cli(run_cli, tiny_bert: Path) -> None:
    assert run_cli("import", str(tiny_bert), "--model", "m", "--version", "2.0.0").exit_code == 0
    r = run_cli("import", str(tiny_bert / "model.safetensors"), "--model", "m", "--version", "2.0.0")
    assert r.exit_code == 1 and "already has version 2.0.0" in r.output
    r = run_cli("show", "ghost@latest")
    assert r.exit_code == 1 and "unknown model 'ghost'" in r.output


def test_catalog_db_that_is_not_sqlite_via_cli(catalog_path: Path) -> None:
    catalog_path.mkdir()
    (catalog_path / "catalog.db").write_text("hello, I am a text file" * 50)
    r = subprocess.run(RELMAN + ["ls"], env=relman_subprocess_env(catalog_path), capture_output=True, text=True)
    assert r.returncode == 1
    assert "catalog.db is not a usable SQLite catalog" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _run_readonly(folder: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run relman with `folder` read-only. Root ignores file modes, so as root the folder is
    bind-mounted read-only in a private mount namespace; otherwise its mode is dropped to 0555."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        try:
            return subprocess.run(RELMAN + args, env=env, capture_output=True, text=True)
        finally:
            os.chmod(folder, 0o755)
    if not shutil.which("unshare"):
        pytest.skip("running as root without unshare: cannot make a folder read-only for root")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    probe = subprocess.run(["unshare", "-m", "sh", "-c", script, str(folder), "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {probe.stderr.decode().strip()}")
    return subprocess.run(["unshare", "-m", "sh", "-c", script, str(folder)] + RELMAN + args, env=env,
                          capture_output=True, text=True)


def test_catalog_folder_not_writable(tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    env = relman_subprocess_env()
    r = _run_readonly(parent, ["--catalog", str(parent / "catalog"), "init"], env)
    assert r.returncode == 1, r.stderr
    assert "cannot create catalog folder" in r.stderr and str(parent / "catalog") in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # an existing catalog whose folder became read-only
    ok = tmp_path / "cat"
    subprocess.run(RELMAN + ["--catalog", str(ok), "init"], env=env, check=True, capture_output=True)
    r = _run_readonly(ok, ["--catalog", str(ok), "ls"], env)
    assert r.returncode == 1 and "is not writable" in r.stderr and str(ok) in r.stderr, r.stderr


def test_verify_detects_a_blob_changed_after_import(run_cli, catalog_path: Path, tiny_bert: Path) -> None:
    assert run_cli("import", str(tiny_bert), "--model", "m").exit_code == 0
    r = run_cli("verify")
    assert r.exit_code == 0 and "ok:" in r.output
    from relman.catalog import open_catalog

    cat = open_catalog(catalog_path)
    sha = [a for a in cat.artifacts(cat.resolve("m").id) if a["path"] == "config.json"][0]["sha256"]
    blob = cat.store.path(sha)
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[5] ^= 1
    blob.write_bytes(bytes(data))
    r = run_cli("verify")
    assert r.exit_code == 1 and "m@1.0.0: config.json" in r.output and "content changed" in r.output


def test_cli_commands_and_json(run_cli, tiny_bert: Path) -> None:
    assert run_cli("init").exit_code == 0
    r = run_cli("import", str(tiny_bert), "--model", "bert", "--json")
    assert json.loads(r.output)["version"] == "1.0.0"
    ls = json.loads(run_cli("ls", "--json").output)
    assert [(x["model"], x["version"], x["phase"]) for x in ls] == [("bert", "1.0.0", "draft")]
    show = json.loads(run_cli("show", "bert@draft", "--json").output)
    assert show["task"] == "text-classification" and len(show["files"]) >= 3
    text = run_cli("show", "bert").output
    assert "model.safetensors" in text and "BertForSequenceClassification" in text
    log = json.loads(run_cli("log", "--json").output)
    assert log[-1]["kind"] == "import" and log[-1]["version"] == "1.0.0"


def test_every_command_has_help() -> None:
    import click

    from relman.cli import cli

    def walk(cmd: click.Command, path: list[str]):
        yield path, cmd
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from walk(sub, path + [name])

    for path, cmd in walk(cli, []):
        if cmd.hidden:
            continue
        assert (cmd.help or cmd.short_help or "").strip(), f"relman {' '.join(path)} has no help text"
        r = __import__("click.testing").testing.CliRunner().invoke(cli, path + ["--help"])
        assert r.exit_code == 0, (path, r.output)


def test_cli_startup_imports_neither_qt_nor_torch() -> None:
    assert heavy_loaded_by("relman.cli", "relman.catalog", also=("sklearn",)) == []


@pytest.mark.heavy  # loads torch
def test_full_disk_gives_a_clear_error_and_leaves_the_catalog_intact(tmp_path: Path) -> None:
    """An import that runs out of space mid-copy: one-line error, no row, no blob, no temp file.
    The catalog sits on a 1 MiB tmpfs mounted in a private mount namespace (root only)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to mount a small tmpfs")
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.randn(1024, 1024)}, str(tmp_path / "big.safetensors"))  # 4 MiB
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    relman = " ".join(RELMAN) + f" --catalog {mnt}/cat"
    script = (f"mount -t tmpfs -o size=1m tmpfs {mnt} || exit 99; {relman} init >/dev/null || exit 98; "
              f"{relman} import {tmp_path}/big.safetensors --model big; echo rc=$?; {relman} ls --json; "
              f"{relman} verify >/dev/null; echo verify=$?; ls -A {mnt}/cat/objects/tmp | wc -l; "
              f"find {mnt}/cat/objects -type f | wc -l")
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], env=relman_subprocess_env(), capture_output=True,
                       text=True, timeout=120)
    if r.returncode in (98, 99):
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()[:200]}")
    out = r.stdout.split()
    assert "rc=1" in out, r.stdout + r.stderr
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "big.safetensors: could not be copied into the catalog store" in err[0], r.stderr
    assert "No space left on device" in err[0]
    assert "[]" in out and "verify=0" in out  # no version; blobs and audit chain intact
    assert out[-2:] == ["0", "0"], r.stdout  # no temp file, no blob
