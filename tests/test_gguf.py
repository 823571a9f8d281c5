"""GGUF export: files written from the trained LM read back with the `gguf` library (names,
shapes, dequantised values, tokenizer, metadata) and run in llama.cpp's conventions (a numpy
reference, tests/gguf_reference.py: llama-cpp-python is not installable here); the
unsupported refused before writing; a worker killed mid-write leaves nothing; the `gguf`
recipe's child; `relman export --format gguf`; import of a .gguf file."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from relman.compress.export import gguf_writer, kquants
from relman.errors import RecipeError

gguf = pytest.importorskip("gguf")

HF_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
# relative RMS error of the whole model's matrices each type may have (half-step rounding of
# a Gaussian-like weight: F16 ~3e-4, Q8_0 ~5e-3, 4-bit ~8e-2), set independently of the
# writer's per-block bounds
RMS_LIMIT = {"F16": 1e-3, "Q8_0": 1e-2, "Q4_0": 0.12, "Q4_K_M": 0.11}


def hf_weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def expected_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    _, _, layer, rest = hf.split(".", 3)
    module = rest.rsplit(".", 1)[0]
    return f"blk.{layer}.{HF_TO_GGUF[module]}.weight"


def hf_rows(values: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's interleaved q/k rows back in Hugging Face's rotate-half order."""
    d = values.shape[0] // heads
    return values.reshape(heads, d // 2, 2, -1).transpose(0, 2, 1, 3).reshape(values.shape)


@pytest.fixture(scope="module")
def written(trained_lm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    return {t: (out / f"{t}.gguf", gguf_writer.export_gguf(trained_lm_dir, out / f"{t}.gguf", t))
            for t in gguf_writer.FILE_TYPES}


@pytest.mark.parametrize("file_type", gguf_writer.FILE_TYPES)
def test_each_type_reads_back_with_the_source_names_shapes_and_values(trained_lm_dir, written, file_type):
    path, summary = written[file_type]
    config = json.loads((trained_lm_dir / "config.json").read_text())
    source = hf_weights(trained_lm_dir)
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == {expected_name(k) for k in source}  # tied LM head: no output.weight
    err2 = ref2 = 0.0
    types = {}
    for hf, want in source.items():
        t = tensors[expected_name(hf)]
        assert tuple(int(d) for d in reversed(t.shape)) == want.shape, hf
        got = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(want.shape)
        if "q_proj" in hf:
            got = hf_rows(got, config["num_attention_heads"])
        elif "k_proj" in hf:
            got = hf_rows(got, config["num_key_value_heads"])
        types[t.name] = t.tensor_type.name
        if want.ndim == 1:
            assert t.tensor_type.name == "F32" and np.array_equal(got, want), hf
            continue
        err2 += float(((got - want) ** 2).sum())
        ref2 += float((want ** 2).sum())
    assert np.sqrt(err2 / ref2) < RMS_LIMIT[file_type]
    matrices = {n: ty for n, ty in types.items() if ty != "F32"}
    if file_type == "Q4_K_M":  # llama.cpp's mix: Q6_K for the tied embedding and use_more_bits layers 2, 3
        assert {n for n, ty in matrices.items() if ty == "Q6_K"} == {
            "token_embd.weight", "blk.2.attn_v.weight", "blk.3.attn_v.weight", "blk.2.ffn_down.weight",
            "blk.3.ffn_down.weight"}
        assert set(matrices.values()) == {"Q4_K", "Q6_K"}
    elif file_type == "Q4_0":
        assert matrices.pop("token_embd.weight") == "Q6_K" and set(matrices.values()) == {"Q4_0"}
    else:
        assert set(matrices.values()) == {file_type}
    assert summary["check"]["tensors"] == len(source)


def test_the_tokenizer_and_hyper_parameters_travel_in_the_file(trained_lm_dir, written):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(trained_lm_dir))
    raw = json.loads((trained_lm_dir / "tokenizer.json").read_text())
    reader = gguf.GGUFReader(str(written["Q4_K_M"][0]))
    kv = {k: f.contents() for k, f in reader.fields.items()}
    assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == "gpt-2"
    assert kv["tokenizer.ggml.tokens"] == tok.convert_ids_to_tokens(list(range(len(tok))))
    assert len(kv["tokenizer.ggml.merges"]) == len(raw["model"]["merges"])
    assert kv["tokenizer.ggml.merges"][0] == " ".join(raw["model"]["merges"][0])
    control = [i for i, ty in enumerate(kv["tokenizer.ggml.token_type"]) if ty == gguf.TokenType.CONTROL]
    assert control == sorted(tok.all_special_ids + tok.convert_tokens_to_ids(["<|user|>", "<|assistant|>",
                                                                               "<|system|>"]))
    assert kv["tokenizer.ggml.eos_token_id"] == tok.eos_token_id and kv["tokenizer.ggml.padding_token_id"] == \
        tok.pad_token_id
    assert kv["tokenizer.chat_template"] == (trained_lm_dir / "chat_template.jinja").read_text()
    assert (kv["llama.block_count"], kv["llama.embedding_length"], kv["llama.attention.head_count_kv"],
            kv["llama.feed_forward_length"], kv["llama.rope.dimension_count"]) == (4, 256, 2, 768, 64)
    assert kv["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_K_M


def test_the_file_runs_in_llama_cpp_conventions_like_the_source(trained_lm_dir, written):
    """F16 logits match transformers' (so names, q/k permutation, rope, heads, eps are what
    llama.cpp reads); the Q4_K_M file still knows the planted facts the source knows."""
    import torch
    from gguf_reference import GGUFReference
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relman.modelio.trained_lm import heldout_documents, planted_facts

    tok = AutoTokenizer.from_pretrained(str(trained_lm_dir))
    model = AutoModelForCausalLM.from_pretrained(str(trained_lm_dir)).eval()
    ids = tok(heldout_documents(4000)[0])["input_ids"][:96]
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    f16 = GGUFReference(written["F16"][0]).logits(ids)
    assert np.abs(f16 - ref).max() < 0.02 * np.abs(ref).max()
    q4 = GGUFReference(written["Q4_K_M"][0])

    def first_token_right(logits_of) -> int:
        right = 0
        for q, a in planted_facts():
            prompt = tok(f"Q: {q}\nA:")["input_ids"]
            right += int(logits_of(prompt)[-1].argmax()) == tok(f" {a}")["input_ids"][0]
        return right

    with torch.no_grad():
        source = first_token_right(lambda p: model(torch.tensor([p])).logits[0].numpy())
    assert source >= 15  # the trained LM knows most facts (chance: about 3 of 24)
    assert first_token_right(q4.logits) >= source - 2


def test_kquant_blocks_decode_with_the_librarys_dequantiser():
    """Our Q4_K / Q6_K bytes, read by gguf's own dequantisers: a planted ramp and outlier come
    back within the format's step, and a zero block stays zero."""
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.05, (8, 512)).astype(np.float32)
    x[0, :256] = np.linspace(-1, 1, 256)
    x[1, 7] = 3.0
    x[2, 256:] = 0.0
    for fn, qtype, step in ((kquants.quantize_q4_k, "Q4_K", 0.1), (kquants.quantize_q6_k, "Q6_K", 0.04)):
        back = gguf.quants.dequantize(fn(x), gguf.GGMLQuantizationType[qtype])
        assert back.shape == x.shape
        blocks, ref = np.abs(back - x).reshape(-1, 256), np.abs(x).reshape(-1, 256)
        assert (blocks.max(1) <= step * ref.max(1) + 1e-7).all(), qtype
        assert np.all(back[2, 256:] == 0.0) and abs(back[1, 7] - 3.0) < step * 3.0


def test_a_damaged_tensor_fails_the_read_back_check(trained_lm_dir, written, tmp_path):
    path = tmp_path / "damaged.gguf"
    path.write_bytes(written["Q8_0"][0].read_bytes())
    reader = gguf.GGUFReader(str(path))
    target = next(t for t in reader.tensors if t.name == "blk.1.ffn_up.weight")
    offset = int(target.data_offset)
    del reader
    with open(path, "r+b") as f:  # one Q8_0 block's scale byte pattern scrambled
        f.seek(offset + 34 * 100)
        f.write(bytes([0x00, 0x3C]))  # scale := 1.0 (FP16), far from the block's own
    plan = gguf_writer.plan_export(trained_lm_dir, "Q8_0")
    with pytest.raises(RecipeError, match=r"blk\.1\.ffn_up\.weight differs"):
        gguf_writer.verify_gguf(path, plan)


def test_unsupported_architectures_are_refused_before_anything_is_written(tiny_bert, tiny_gpt2, tmp_path):
    for folder, arch in ((tiny_bert, "BertForSequenceClassification"), (tiny_gpt2, "GPT2LMHeadModel")):
        dest = tmp_path / "out" / "model.gguf"
        dest.parent.mkdir(exist_ok=True)
        with pytest.raises(RecipeError) as e:
            gguf_writer.export_gguf(folder, dest, "Q8_0")
        assert str(e.value) == f"GGUF export supports {gguf_writer.supported_architectures()}; this model is {arch}"
        assert list(dest.parent.iterdir()) == []


def tiny_qwen2(folder: Path, tokenizer_from: Path) -> Path:
    """A random tiny Qwen2 (shape only) with the trained LM's BPE tokenizer (the tiny byte
    tokenizer has no merges, which llama.cpp requires)."""
    import shutil

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.08)
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tokenizer_from / name, folder / name)
    return folder


def test_qwen2_is_written_with_llama_cpps_fallbacks_for_short_rows(trained_lm_dir, tmp_path):
    """Rows of 64 values cannot hold 256-value K-quant blocks, so Q4_K_M falls back as
    llama.cpp does (Q4_K -> Q5_0, Q6_K -> Q8_0); q/k/v biases are kept; no permutation (qwen2
    uses NeoX rope), checked by the reference forward pass."""
    import torch
    from gguf_reference import GGUFReference
    from transformers import AutoModelForCausalLM

    folder = tiny_qwen2(tmp_path / "qwen2", trained_lm_dir)
    summary = gguf_writer.export_gguf(folder, tmp_path / "q.gguf", "Q4_K_M")
    assert summary["arch"] == "qwen2" and set(summary["tensor_types"]) == {"F32", "Q5_0", "Q8_0"}
    f16 = gguf_writer.export_gguf(folder, tmp_path / "f.gguf", "F16")
    assert f16["tensor_types"]["F32"] >= 6  # norms and the q/k/v biases
    ids = [5, 17, 99, 3, 42, 7, 250, 11]
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(str(folder)).eval()(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(GGUFReference(tmp_path / "f.gguf").logits(ids) - ref).max() < 0.01 * np.abs(ref).max()


# -- the recipe, the job, the export command ----------------------------------------------------
def test_the_recipe_stores_a_gguf_child_and_export_ships_it_with_card_and_modelfile(catalog, trained_lm_dir, run_cli,
                                                                                   tmp_path):
    from recipe_support import compress_job

    from relman.app.models import import_model
    from relman.errors import EvaluationError
    from relman.evaluate.plan import plan_evaluation

    parent = import_model(catalog, trained_lm_dir, "lm")
    child = compress_job(catalog, parent.id, "gguf", {"type": "Q4_K_M"})
    assert (child.format, child.task, child.dtype, child.params) == ("gguf", "causal-lm", "q4_k_m", parent.params)
    assert [(p["parent_id"], p["relation"]) for p in catalog.parents(child.id)] == [(parent.id, "gguf")]
    assert [a["path"] for a in catalog.artifacts(child.id)] == ["model.gguf"]
    assert child.meta["gguf"]["check"]["worst_block_error"]["Q4_K"] <= gguf_writer.BOUND["Q4_K"]
    assert plan_evaluation(catalog, [child.ref])[0]["suites"] == ["size"]
    with pytest.raises(EvaluationError, match="gguf version"):
        plan_evaluation(catalog, [child.ref], suites=["latency"])

    res = run_cli("export", child.ref, str(tmp_path / "ship"), "--format", "gguf")
    assert res.exit_code == 0, res.output
    ship = tmp_path / "ship"
    assert sorted(p.name for p in ship.iterdir()) == ["Modelfile", "README.md", "model.gguf"]
    blob = catalog.store.path(catalog.artifacts(child.id)[0]["sha256"])
    assert (ship / "model.gguf").read_bytes() == blob.read_bytes()
    card = (ship / "README.md").read_text()
    assert "llama-cli -m model.gguf" in card and "lms import model.gguf" in card and "ollama create" in card
    modelfile = (ship / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf\n") and 'PARAMETER stop "<|endoftext|>"' in modelfile

    back = import_model(catalog, ship / "model.gguf", "lm-gguf")  # a .gguf file imports as the gguf format
    assert (back.format, back.task, back.architecture, back.params, back.dtype) == \
        ("gguf", "causal-lm", "llama", parent.params, "q4_k")


def test_export_converts_an_hf_version_and_refuses_what_it_cannot_write(catalog, trained_lm_dir, tiny_bert, run_cli,
                                                                      tmp_path):
    from relman.app.models import import_model

    import_model(catalog, trained_lm_dir, "lm")
    res = run_cli("export", "lm@1.0.0", str(tmp_path / "q8"), "--format", "gguf", "--gguf-type", "q8_0", "--json")
    assert res.exit_code == 0, res.output
    reader = gguf.GGUFReader(str(tmp_path / "q8" / "model.gguf"))
    assert {t.tensor_type.name for t in reader.tensors} == {"F32", "Q8_0"}
    assert "## GGUF export" in (tmp_path / "q8" / "README.md").read_text()
    import_model(catalog, tiny_bert, "bert")
    before = sorted(p.name for p in tmp_path.iterdir())
    res = run_cli("export", "bert@1.0.0", str(tmp_path / "bert"), "--format", "gguf")
    assert res.exit_code != 0
    assert res.output.strip().splitlines() == [
        (f"error: cannot export bert@1.0.0 as GGUF: GGUF export supports {gguf_writer.supported_architectures()}; "
         "this model is BertForSequenceClassification")]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_worker_killed_mid_write_leaves_no_file_no_version_no_blob(catalog, trained_lm_dir, make_runner,
                                                                     monkeypatch, tmp_path):
    """Held after half the tensors are written (a hold point, not a race): the file being
    written has no name (an open, unlinked file of the worker), then kill -9."""
    from relman.app.compress import queue_compression
    from relman.app.models import import_model
    from relman.jobs import queue
    from relman.jobs.queue import get_job
    from relman.jobs.testing import HoldPoint, drive_until, job_status

    hold = HoldPoint(monkeypatch, "gguf.mid-write", tmp_path)
    parent = import_model(catalog, trained_lm_dir, "lm")
    shas = set(catalog.store.all_shas())
    job_id = queue_compression(catalog, "lm@1.0.0", "gguf", {"type": "Q8_0"}, device="cpu", evaluate=False)
    r = make_runner(grace_s=2.0, kill_after_s=1.0)
    drive_until(r, lambda: hold.reached(catalog, job_id), 120, "the GGUF write, held half way")
    pid = get_job(catalog, job_id)["pid"]
    work = queue.workdir_for(catalog, job_id)
    assert not list(work.rglob("*.gguf")) and not list(work.rglob("*.partial"))  # nothing named yet
    open_files = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert any(p.startswith(str(work / "gguf")) and p.endswith("(deleted)") for p in open_files), open_files
    os.kill(pid, signal.SIGKILL)
    drive_until(r, lambda: job_status(catalog, job_id) in queue.FINISHED, 60, "the job to end")
    job = get_job(catalog, job_id)
    assert job["status"] == "failed" and "killed by signal 9" in job["error"], job["error"]
    assert [v.id for v in catalog.versions()] == [parent.id]
    assert set(catalog.store.all_shas()) == shas and catalog.orphan_blobs() == []
    assert not work.exists()


def test_a_gguf_version_travels_in_a_signed_bundle_and_a_truncated_file_is_refused(catalog, trained_lm_dir,
                                                                                    tmp_path, monkeypatch):
    from recipe_support import compress_job

    from relman.app import bundles
    from relman.app.models import import_model
    from relman.catalog import open_catalog
    from relman.errors import BundleError
    from relman.release.bundle import check_bundle_files

    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "keys"))
    bundles.create_key("lab")
    parent = import_model(catalog, trained_lm_dir, "lm")
    child = compress_job(catalog, parent.id, "gguf", {"type": "Q4_0"})
    out = bundles.export_bundle(catalog, child, tmp_path / "lm.relman")
    target = open_catalog(tmp_path / "target")
    try:
        res = bundles.import_bundle(target, out["path"])
        back = target.resolve(res["ref"])
        assert (back.format, back.manifest_sha256) == ("gguf", child.manifest_sha256)
    finally:
        target.close()
    whole = catalog.store.path(catalog.artifacts(child.id)[0]["sha256"]).read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BundleError, match=r"model\.gguf: .*not a readable GGUF file"):
        check_bundle_files({"model.gguf": cut}, "lm.relman")


def test_a_cli_export_killed_mid_write_leaves_nothing(catalog, catalog_path, trained_lm_dir, tmp_path):
    """`relman export --format gguf` in a real process, held half way through the tensors
    (hold point export.gguf-mid-write), then kill -9: no folder, no temp name, nothing."""
    import subprocess
    import sys

    from conftest import relman_subprocess_env

    from relman.app.models import import_model

    import_model(catalog, trained_lm_dir, "lm")
    out = tmp_path / "ship"
    out.mkdir()
    from relman.jobs.testing import HoldPoint

    env = HoldPoint(None, "export.gguf-mid-write", tmp_path).env(relman_subprocess_env(catalog_path))  # never released
    proc = subprocess.Popen([sys.executable, "-m", "relman", "export", "lm@1.0.0", str(out / "lm"), "--format",
                             "gguf", "--gguf-type", "Q8_0"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stderr:  # blocks until the process writes a line or ends: no clock involved
            seen.append(line)
            if line.strip() == "held at export.gguf-mid-write":
                break
        assert seen and seen[-1].strip() == "held at export.gguf-mid-write", seen
        open_files = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")]
        assert any(p.startswith(str(out)) and p.endswith("(deleted)") for p in open_files), open_files
        assert list(out.iterdir()) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and list(out.iterdir()) == []
