"""GGUF export: a Hugging Face causal LM written as one llama.cpp file (F16, Q8_0, Q4_0, Q4_K_M).

GGUF is what llama.cpp, LM Studio and Ollama run, so a release that ships one reaches the
tools small teams actually use. The file is written with the `gguf` library (llama.cpp's own
Python package): tensor names come from its per-architecture tensor-name maps, the
hyper-parameters are the keys llama.cpp's loader reads, and the tokenizer (vocabulary, merges,
token types, special ids, chat template) travels inside the file.

Why it is built this way:

- **Refuse before writing.** `plan_export` reads only config.json, the tokenizer files and the
  safetensors headers; an architecture, rope scaling, tokenizer or tensor it does not know is a
  one-line `RecipeError` before any byte is written (never a silently dropped tensor).
- **Nothing half-written.** The file is written to an anonymous file (`O_TMPFILE`) in the
  target folder and linked under its name only when complete, flushed and read back, so a process killed
  mid-write (kill -9 included) leaves nothing at all; where the file system cannot do that, a
  `.partial` temp name is used and removed on any error.
- **Streamed.** Tensors are read from the safetensors files one at a time (our own header
  reader + a memory map, no torch, BF16 included), quantised and appended, so peak memory is
  one tensor, not the model.
- **Checked by reading back** (`verify_gguf`): every tensor is read with the library's reader,
  dequantised with the library's dequantisers, and compared block by block with the source
  (names, shapes, types, values within the format's bound), the metadata and the tokenizer
  too. The recipe stores a child only after this check passes.

Q4_K_M follows llama.cpp's `llama_tensor_get_type`: Q4_K for most matrices, Q6_K for the
output matrix (the token embedding when it is tied), and for `attn_v` / `ffn_down` in the
layers `use_more_bits` picks; rows that are not a multiple of 256 fall back as llama.cpp
does (Q4_K → Q5_0, Q6_K → Q8_0). The K-quant quantisers are ours (`kquants.py`): the library
only dequantises them.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np

from relman.context import hold_here
from relman.errors import RecipeError

if TYPE_CHECKING:
    from relman.compress.registry import ModelSource, RecipeOutput
    from relman.context import WorkContext

GGUF_FILE = "model.gguf"
FILE_TYPES = ("F16", "Q8_0", "Q4_0", "Q4_K_M")
# config.json architecture -> (gguf architecture, whether q/k rows are permuted for llama.cpp's rope)
ARCHITECTURES: dict[str, tuple[str, bool]] = {
    "LlamaForCausalLM": ("llama", True),
    "MistralForCausalLM": ("llama", True),
    "Qwen2ForCausalLM": ("qwen2", False),
}
# the pre-tokenizer llama.cpp must use, by what tokenizer.json says (byte-level BPE only)
_GPT2_PRE = "gpt-2"  # llama.cpp's name (llama-vocab.cpp); "gpt2" is refused: unknown pre-tokenizer
_QWEN2_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
_LLAMA3_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
_SPLIT_PRE = {_QWEN2_REGEX: "qwen2", _LLAMA3_REGEX: "llama-bpe"}

# Each stored value may differ from its source by at most BOUND[type] x the largest |value| of
# its block of BLOCK[type] values: half a quantisation step (a whole one in Q4_0 / Q5_0 / Q6_K,
# whose grids have one more level on the side of the block's extreme, so the opposite extreme
# is clipped), plus the rounding of the FP16 and 6-/8-bit scales, with a small margin. A wrong
# layout, name, permutation or shape is off by about the block's whole magnitude.
BOUND = {"F32": 0.0, "F16": 2.0 ** -10, "Q8_0": 0.006, "Q5_0": 0.066, "Q4_0": 0.13, "Q6_K": 0.04, "Q4_K": 0.1}
BLOCK = {"F32": 32, "F16": 32, "Q8_0": 32, "Q5_0": 32, "Q4_0": 32, "Q6_K": 256, "Q4_K": 256}
_ABS_FLOOR = 1e-7  # FP16 subnormals: tiny values keep an absolute, not relative, precision


def supported_architectures() -> str:
    return ", ".join(ARCHITECTURES)


# -- the plan: everything decided before a byte is written -------------------------------------
@dataclass
class TensorPlan:
    source: str  # the safetensors name
    name: str  # the GGUF name
    shape: tuple[int, ...]  # numpy order (rows, cols)
    qtype: str  # F32 | F16 | Q8_0 | Q4_0 | Q5_0 | Q4_K | Q6_K
    permute_heads: int = 0  # >0: rows permuted for llama.cpp's rope with this many heads


@dataclass
class ExportPlan:
    file_type: str
    arch: str
    config: dict[str, Any]
    tensors: list[TensorPlan]
    tokenizer: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)  # safetensors name -> file

    @property
    def params(self) -> int:
        return sum(int(np.prod(t.shape)) for t in self.tensors)

    def type_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.qtype] = out.get(t.qtype, 0) + 1
        return dict(sorted(out.items()))


def _load_json(path: Path) -> Any:
    from relman import jsonlimits

    return jsonlimits.loads(path.read_bytes(), str(path), error=RecipeError)


def check_architecture(config: dict[str, Any]) -> tuple[str, bool]:
    """(gguf architecture, permute q/k) for a config.json, or a one-line refusal."""
    archs = config.get("architectures") or []
    arch = archs[0] if isinstance(archs, list) and archs else config.get("model_type") or "unknown"
    if arch not in ARCHITECTURES:
        raise RecipeError(f"GGUF export supports {supported_architectures()}; this model is {arch}")
    rope = config.get("rope_scaling") or {}
    rope_type = (config.get("rope_parameters") or {}).get("rope_type") or rope.get("rope_type") or rope.get("type")
    if rope_type not in (None, "default"):
        raise RecipeError(f"GGUF export writes plain RoPE only; this model uses rope scaling '{rope_type}'")
    return ARCHITECTURES[arch]


def _safetensors_files(src: Mapping[str, Path], where: str) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (headers checked by relman's reader)."""
    from relman.modelio.inspect import read_safetensors_header

    out: dict[str, Path] = {}
    for rel, path in sorted(src.items()):
        if rel.endswith(".safetensors"):
            for name in read_safetensors_header(path):
                if name != "__metadata__":
                    out[name] = path
    if not out:
        raise RecipeError(f"{where} has no safetensors weights to write as GGUF")
    return out


def _use_more_bits(i_layer: int, n_layer: int) -> bool:
    """llama.cpp's choice of the layers that keep more bits in Q4_K_M (C integer division)."""
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


def tensor_type(name: str, shape: tuple[int, ...], file_type: str, n_layer: int, is_output: bool) -> str:
    """The GGUF type of one tensor under `file_type`, as llama.cpp's quantiser picks it."""
    if len(shape) < 2 or file_type == "F16":
        return "F32" if len(shape) < 2 else "F16"
    cols = shape[-1]
    if file_type == "Q8_0":
        wanted = "Q8_0"
    elif is_output:
        wanted = "Q6_K"  # llama.cpp keeps the output matrix at Q6_K below Q8_0
    elif file_type == "Q4_0":
        wanted = "Q4_0"
    else:  # Q4_K_M
        wanted = "Q4_K"
        layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
        if layer >= 0 and name.endswith(("attn_v.weight", "ffn_down.weight")) and _use_more_bits(layer, n_layer):
            wanted = "Q6_K"
    if wanted in ("Q4_K", "Q6_K") and cols % 256:
        wanted = {"Q4_K": "Q5_0", "Q6_K": "Q8_0"}[wanted]
    if cols % 32:
        wanted = "F16"
    return wanted


def source_files(folder: Path | str) -> dict[str, Path]:
    """The top-level files of a model folder, by name."""
    return {p.name: p for p in sorted(Path(folder).iterdir()) if p.is_file()}


def plan_export(source: Path | str | Mapping[str, Path], file_type: str) -> ExportPlan:
    """Decide every tensor's name, shape and type and read the tokenizer; raises before writing.
    `source` is a model folder or its files by name (e.g. a version's blobs, read in place)."""
    import gguf

    src = dict(source) if isinstance(source, Mapping) else source_files(source)
    where = str(source) if not isinstance(source, Mapping) else "the version"
    if file_type not in FILE_TYPES:
        raise RecipeError(f"unknown GGUF type '{file_type}' (known: {', '.join(FILE_TYPES)})")
    if "config.json" not in src:
        raise RecipeError(f"{where} has no config.json; GGUF export needs a Hugging Face causal LM")
    config = _load_json(src["config.json"])
    if not isinstance(config, dict):
        raise RecipeError(f"{where}: config.json is not an object")
    arch, permute = check_architecture(config)
    tokenizer = read_tokenizer(src, config, where)
    files = _safetensors_files(src, where)
    n_layer = int(config["num_hidden_layers"])
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    tied = bool(config.get("tie_word_embeddings", False)) or "lm_head.weight" not in files
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_layer)
    from relman.modelio.inspect import read_safetensors_header

    headers = {p: read_safetensors_header(p) for p in set(files.values())}
    tensors: list[TensorPlan] = []
    for hf_name, path in sorted(files.items()):
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed by llama.cpp from rope_freq_base
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd
        info = headers[path][hf_name]
        if info["dtype"] not in ("F32", "F16", "BF16"):
            raise RecipeError(f"GGUF export reads float weights; tensor '{hf_name}' is {info['dtype']}")
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise RecipeError(f"GGUF export does not know where tensor '{hf_name}' goes in a {arch} file")
        shape = tuple(int(d) for d in info["shape"])
        is_output = name == "output.weight" or (tied and name == "token_embd.weight")
        heads = 0
        if permute and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            heads = n_head
        elif permute and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            heads = n_kv
        tensors.append(TensorPlan(hf_name, name, shape, tensor_type(name, shape, file_type, n_layer, is_output),
                                  heads))
    embd = next((t for t in tensors if t.name == "token_embd.weight"), None)
    if embd is None or embd.shape[0] != len(tokenizer["tokens"]):
        raise RecipeError(f"{where}: the embedding has {embd.shape[0] if embd else 'no'} rows but the tokenizer "
                          f"{len(tokenizer['tokens'])} tokens; llama.cpp needs one row per token")
    return ExportPlan(file_type, arch, config, tensors, tokenizer, files)


# -- tokenizer ---------------------------------------------------------------------------------
def read_tokenizer(src: Mapping[str, Path], config: dict[str, Any], where: str = "the model") -> dict[str, Any]:
    """The byte-level BPE tokenizer as GGUF wants it: tokens by id, merges, types, specials."""
    import gguf

    if "tokenizer.json" not in src:
        raise RecipeError(f"{where} has no tokenizer.json; GGUF export writes byte-level BPE tokenizers only")
    tok = _load_json(src["tokenizer.json"])
    model = tok.get("model") or {}
    if model.get("type") != "BPE":
        raise RecipeError(f"GGUF export writes byte-level BPE tokenizers; this one is {model.get('type')}")
    pre = _pre_tokenizer(tok.get("pre_tokenizer") or {})
    vocab: dict[str, int] = dict(model.get("vocab") or {})
    added = {int(a["id"]): a for a in tok.get("added_tokens") or []}
    for i, a in added.items():
        vocab.setdefault(a["content"], i)
    n_vocab = max(int(config.get("vocab_size") or 0), max(vocab.values()) + 1)
    by_id: dict[int, str] = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
        elif i in added:
            tokens.append(by_id[i])
            types.append(int(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED))
        else:
            tokens.append(by_id[i])
            types.append(int(gguf.TokenType.NORMAL))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    if not merges:
        raise RecipeError(f"{where}: the tokenizer has no BPE merges, and llama.cpp refuses a gpt2-style "
                          "vocabulary without them")
    tcfg = _load_json(src["tokenizer_config.json"]) if "tokenizer_config.json" in src else {}
    specials: dict[str, int] = {}
    for key in ("bos", "eos", "unk", "pad"):
        content = tcfg.get(f"{key}_token")
        if isinstance(content, dict):
            content = content.get("content")
        if isinstance(content, str) and content in vocab:
            specials[key] = vocab[content]
        elif config.get(f"{key}_token_id") is not None and key != "unk":
            specials[key] = int(config[f"{key}_token_id"])
    template = tcfg.get("chat_template")
    if "chat_template.jinja" in src:
        template = src["chat_template.jinja"].read_text(encoding="utf-8")
    # does encoding put BOS in front? tokenizer_config says so, else the post-processor names it
    add_bos = tcfg.get("add_bos_token")
    if not isinstance(add_bos, bool):
        post = json.dumps(tok.get("post_processor") or {})
        add_bos = specials.get("bos") is not None and json.dumps(tokens[specials["bos"]]) in post
    stops = [a["content"] for i, a in sorted(added.items()) if a.get("special") and i != specials.get("pad")]
    return {"pre": pre, "tokens": tokens, "types": types, "merges": merges, "specials": specials,
            "chat_template": template if isinstance(template, str) else None, "add_bos": bool(add_bos),
            "stop_tokens": stops}


def _pre_tokenizer(pre: dict[str, Any]) -> str:
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return _GPT2_PRE
    if pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers") or []
        regexes = [((s.get("pattern") or {}).get("Regex")) for s in steps if s.get("type") == "Split"]
        if len(regexes) == 1 and regexes[0] in _SPLIT_PRE and any(s.get("type") == "ByteLevel" for s in steps):
            return _SPLIT_PRE[regexes[0]]
    raise RecipeError("GGUF export does not recognise this tokenizer's pre-tokenizer (llama.cpp must know it); "
                      "byte-level BPE as in GPT-2, Qwen2 or Llama 3 is supported")


# -- tensors -----------------------------------------------------------------------------------
def read_tensor(path: Path, name: str) -> np.ndarray:
    """One tensor of a safetensors file as float32, through a memory map (no torch; BF16 too)."""
    import struct

    from relman.modelio.inspect import read_safetensors_header

    info = read_safetensors_header(path)[name]
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    begin, end = info["data_offsets"]
    dtype = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[info["dtype"]]
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n + begin, shape=(end - begin,)).view(dtype)
    if info["dtype"] == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])
    return np.asarray(raw, dtype=np.float32).reshape(info["shape"])


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k layout -> llama.cpp's interleaved one (convert_hf_to_gguf's permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def quantize(values: np.ndarray, qtype: str) -> np.ndarray:
    import gguf

    from relman.compress.export import kquants

    if qtype == "Q4_K":
        return kquants.quantize_q4_k(values)
    if qtype == "Q6_K":
        return kquants.quantize_q6_k(values)
    return gguf.quants.quantize(values, gguf.GGMLQuantizationType[qtype])


def _source_values(plan: ExportPlan, t: TensorPlan) -> np.ndarray:
    w = read_tensor(plan.files[t.source], t.source)
    return permute_rows(w, t.permute_heads) if t.permute_heads else w


def _nbytes(t: TensorPlan) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t.qtype]]
    return int(np.prod(t.shape)) // block * size


# -- writing -----------------------------------------------------------------------------------
def _add_metadata(w: Any, plan: ExportPlan, name: str) -> None:
    import gguf

    c = plan.config
    n_head = int(c["num_attention_heads"])
    hidden = int(c["hidden_size"])
    head_dim = int(c.get("head_dim") or hidden // n_head)
    theta = (c.get("rope_parameters") or {}).get("rope_theta") or c.get("rope_theta") or 10000.0
    w.add_name(name)
    w.add_context_length(int(c.get("max_position_embeddings") or 2048))
    w.add_embedding_length(hidden)
    w.add_block_count(int(c["num_hidden_layers"]))
    w.add_feed_forward_length(int(c["intermediate_size"]))
    w.add_head_count(n_head)
    w.add_head_count_kv(int(c.get("num_key_value_heads") or n_head))
    w.add_rope_freq_base(float(theta))
    w.add_layer_norm_rms_eps(float(c.get("rms_norm_eps") or 1e-6))
    w.add_rope_dimension_count(head_dim)
    if head_dim != hidden // n_head:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_vocab_size(len(plan.tokenizer["tokens"]))
    w.add_file_type(int(getattr(gguf.LlamaFileType, "ALL_F32" if plan.file_type == "F32" else
                                "MOSTLY_" + plan.file_type)))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tok = plan.tokenizer
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(tok["pre"])
    w.add_token_list(tok["tokens"])
    w.add_token_types(tok["types"])
    w.add_token_merges(tok["merges"])
    for key, tid in tok["specials"].items():
        getattr(w, f"add_{key}_token_id")(tid)
    w.add_add_bos_token(tok["add_bos"])
    if tok["chat_template"]:
        w.add_chat_template(tok["chat_template"])


def _open_anonymous(folder: Path) -> tuple[int, Path | None]:
    """(fd, None) for an unnamed file in `folder` (vanishes if the process dies), or
    (fd, temp path) where the file system has no O_TMPFILE."""
    flag = getattr(os, "O_TMPFILE", 0)
    if flag:
        try:
            return os.open(folder, flag | os.O_RDWR, 0o644), None
        except OSError:
            pass
    tmp = folder / f".{GGUF_FILE}.{os.getpid()}-{secrets.token_hex(4)}.partial"
    return os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644), tmp


def write_gguf(plan: ExportPlan, dest: Path | str, *, name: str = "model",
               on_tensor: Callable[[int, int], None] | None = None,
               check: Callable[[Path], Any] | None = None) -> Any:
    """Write `plan` to `dest` (which must not exist); returns what `check` returns.

    `on_tensor(done, total)` runs after each tensor (progress, cancel, test hold points);
    `check(path)` reads the complete file back before it gets its name. If either raises (or
    the process dies), nothing is left behind."""
    import gguf

    dest = Path(dest)
    if dest.exists():
        raise RecipeError(f"{dest} already exists")
    fd, tmp = _open_anonymous(dest.parent)
    linked = False
    try:
        w = gguf.GGUFWriter(path=None, arch=plan.arch)
        _add_metadata(w, plan, name)
        for t in plan.tensors:
            qtype = gguf.GGMLQuantizationType[t.qtype]
            if t.qtype in ("F32", "F16"):
                w.add_tensor_info(t.name, t.shape, np.dtype(t.qtype.replace("F", "float")), _nbytes(t), raw_dtype=qtype)
            else:  # quantised: the library wants the shape in bytes
                w.add_tensor_info(t.name, gguf.quant_shape_to_byte_shape(t.shape, qtype), np.dtype(np.uint8),
                                  _nbytes(t), raw_dtype=qtype)
        w.write_header_to_file(Path(f"/proc/self/fd/{fd}") if tmp is None else tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for i, t in enumerate(plan.tensors):
            data = quantize(_source_values(plan, t), t.qtype)
            w.write_tensor_data(np.ascontiguousarray(data))
            if on_tensor is not None:
                w.flush()
                on_tensor(i + 1, len(plan.tensors))
        w.close()
        os.fsync(fd)
        result = check(Path(f"/proc/self/fd/{fd}") if tmp is None else tmp) if check is not None else None
        if dest.exists():
            raise RecipeError(f"{dest} appeared while the GGUF file was written; not replacing it")
        if tmp is None:
            # with a dir fd, os.link calls linkat(AT_SYMLINK_FOLLOW), which links the unnamed file
            dir_fd = os.open(dest.parent, os.O_RDONLY)
            try:
                os.link(f"/proc/self/fd/{fd}", dest.name, dst_dir_fd=dir_fd, follow_symlinks=True)
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        else:
            os.replace(tmp, dest)
        linked = True
    finally:
        os.close(fd)
        if tmp is not None and not linked:
            tmp.unlink(missing_ok=True)
    return result


# -- reading back ------------------------------------------------------------------------------
def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def verify_gguf(path: Path | str, plan: ExportPlan) -> dict[str, Any]:
    """Read `path` back with the gguf library and compare it with the source the plan came
    from: every tensor (name, shape, type, dequantised values within BOUND of its block's
    magnitude), the hyper-parameters and the tokenizer. Raises RecipeError naming the first
    difference; returns the worst error per type (as a share of the block's magnitude)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:
        raise RecipeError(f"{path}: the gguf library cannot read it back ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    arch = _field(reader, "general.architecture")
    if arch != plan.arch:
        raise RecipeError(f"{path}: architecture {arch!r}, expected {plan.arch!r}")
    c = plan.config
    expect = {f"{arch}.block_count": int(c["num_hidden_layers"]), f"{arch}.embedding_length": int(c["hidden_size"]),
              f"{arch}.attention.head_count": int(c["num_attention_heads"]),
              f"{arch}.feed_forward_length": int(c["intermediate_size"]),
              "tokenizer.ggml.tokens": plan.tokenizer["tokens"], "tokenizer.ggml.merges": plan.tokenizer["merges"],
              "tokenizer.ggml.token_type": plan.tokenizer["types"], "tokenizer.ggml.model": "gpt2",
              "tokenizer.ggml.pre": plan.tokenizer["pre"]}
    expect.update({f"tokenizer.ggml.{'padding' if k == 'pad' else k}_token_id" if k != "unk" else
                   "tokenizer.ggml.unknown_token_id": v for k, v in plan.tokenizer["specials"].items()})
    if plan.tokenizer["chat_template"]:
        expect["tokenizer.chat_template"] = plan.tokenizer["chat_template"]
    for key, want in expect.items():
        got = _field(reader, key)
        if got != want:
            shown = f"{len(got)} entries" if isinstance(got, list) else repr(got)[:60]
            raise RecipeError(f"{path}: metadata {key} is {shown}, expected "
                              f"{f'{len(want)} entries' if isinstance(want, list) else repr(want)[:60]}")
    found = {t.name: t for t in reader.tensors}
    wanted = {t.name for t in plan.tensors}
    if set(found) != wanted:
        extra, missing = sorted(set(found) - wanted), sorted(wanted - set(found))
        raise RecipeError(f"{path}: tensors differ from the source (missing {missing[:3]}, extra {extra[:3]})")
    worst: dict[str, float] = {}
    for t in plan.tensors:
        rt = found[t.name]
        if rt.tensor_type.name != t.qtype:
            raise RecipeError(f"{path}: tensor {t.name} is {rt.tensor_type.name}, expected {t.qtype}")
        shape = tuple(int(d) for d in reversed(rt.shape))
        if shape != t.shape:
            raise RecipeError(f"{path}: tensor {t.name} has shape {shape}, the source {t.source} {t.shape}")
        values = gguf.quants.dequantize(np.asarray(rt.data), rt.tensor_type).astype(np.float32).reshape(t.shape)
        if t.permute_heads:
            values = unpermute_rows(values, t.permute_heads)
        source = read_tensor(plan.files[t.source], t.source)
        share = block_error(values, source, t.qtype)
        if share > BOUND[t.qtype] + 1e-9:
            raise RecipeError(f"{path}: tensor {t.name} differs from {t.source} by {share:.4f} of a block's "
                              f"magnitude, more than {t.qtype} allows ({BOUND[t.qtype]})")
        worst[t.qtype] = max(worst.get(t.qtype, 0.0), share)
    return {"tensors": len(plan.tensors), "worst_block_error": worst, "bounds": {k: BOUND[k] for k in worst}}


def block_error(values: np.ndarray, source: np.ndarray, qtype: str) -> float:
    """The largest |stored - source| as a share of its block's largest |source| (per row blocks)."""
    block = BLOCK[qtype]
    cols = source.shape[-1]
    if source.ndim < 2 or cols % block:
        a, b = source.reshape(1, -1), values.reshape(1, -1)
    else:
        a, b = source.reshape(-1, block), values.reshape(-1, block)
    err = np.abs(b.astype(np.float64) - a).max(axis=1)
    scale = np.abs(a).max(axis=1)
    if qtype == "F32":
        return float(err.max() / max(scale.max(), 1e-30))
    return float((np.maximum(err - _ABS_FLOOR, 0.0) / np.maximum(scale, 1e-30)).max())


def describe(plan: ExportPlan) -> dict[str, Any]:
    """What a model card and a Modelfile say about the file (a gguf version's meta["gguf"])."""
    return {"file_type": plan.file_type, "arch": plan.arch, "params": plan.params,
            "tensor_types": plan.type_counts(), "vocab": len(plan.tokenizer["tokens"]),
            "stop_tokens": plan.tokenizer["stop_tokens"], "file": GGUF_FILE}


# -- one call for the recipe and the export command --------------------------------------------
def export_gguf(source: Path | str | Mapping[str, Path], dest: Path | str, file_type: str, *, name: str = "model",
                on_tensor: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Plan (refusing what cannot be written), write, read back; returns a summary."""
    plan = plan_export(source, file_type)
    check = write_gguf(plan, dest, name=name, on_tensor=on_tensor, check=lambda p: verify_gguf(p, plan))
    return {**describe(plan), "bytes": Path(dest).stat().st_size, "check": check}


def run(sources: list["ModelSource"], params: dict[str, Any], ctx: "WorkContext") -> "RecipeOutput":
    """Recipe "gguf": the parent as one GGUF file, read back and compared before it is stored."""
    from relman.compress.registry import RecipeOutput

    src = sources[0]
    file_type = str(params.get("type") or "Q4_K_M").upper()
    out = ctx.workdir / "gguf"
    out.mkdir(parents=True, exist_ok=True)
    ctx.progress(0.05, f"gguf: planning {file_type}")

    def on_tensor(done: int, total: int) -> None:
        ctx.progress(0.05 + 0.75 * done / total, f"gguf: wrote {done}/{total} tensors")
        if done == max(1, total // 2):
            hold_here("gguf.mid-write", ctx)  # tests kill -9 here: the file is half written

    summary = export_gguf(src.folder, out / GGUF_FILE, file_type, name=src.version.model, on_tensor=on_tensor)
    ctx.progress(0.9, f"gguf: read back, every tensor within {file_type}'s bounds")
    ctx.log_json("gguf", summary)
    return RecipeOutput(out, format="gguf", params=summary["params"], dtype=file_type.lower(),
                        meta={"gguf": summary})


def iter_kv(path: Path | str) -> Iterator[tuple[str, Any]]:
    """(key, value) of a GGUF file's metadata, arrays longer than 8 entries summarised."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    for key, f in reader.fields.items():
        value = f.contents()
        yield key, (f"[{len(value)} entries]" if isinstance(value, list) and len(value) > 8 else value)
