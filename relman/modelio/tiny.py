"""Tiny real models built from configs, for tests, the demo and benchmarks (no network).

Each builder writes a complete Hugging Face folder (config, safetensors weights, tokenizer or
image processor) that `transformers` loads with `local_files_only=True`, so every code path
that handles a user's model is exercised on the real thing, only smaller.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Sequence

# A word-piece vocabulary that covers the demo/test sentences character by character plus a
# few whole words, so tokenisation is real but the embedding table stays small.
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = ["good", "bad", "great", "awful", "movie", "film", "the", "a", "is", "was", "not", "very",
          "love", "hate", "fine", "plot", "actor", "boring", "fun", "and"]


def _write_wordpiece_vocab(folder: Path, cased: bool = False) -> Path:
    letters = string.ascii_letters if cased else string.ascii_lowercase
    chars = list(letters + string.digits + string.punctuation)
    vocab = _SPECIAL + _WORDS + chars + ["##" + c for c in letters + string.digits]
    path = folder / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    return path


def _save_bert_tokenizer(folder: Path, max_len: int, cased: bool = False) -> None:
    from transformers import BertTokenizerFast

    vocab_path = _write_wordpiece_vocab(folder, cased)
    vocab = {tok: i for i, tok in enumerate(vocab_path.read_text(encoding="utf-8").splitlines())}
    tok = BertTokenizerFast(vocab=vocab, do_lower_case=not cased, model_max_length=max_len)
    tok.save_pretrained(folder)


def _tiny_labelled_bert(folder: Path, head: str, labels: Sequence[str], *, cased: bool, hidden: int, layers: int,
                        heads: int, intermediate: int, seed: int) -> Path:
    """A tiny BERT with a labelled head (`head`: a transformers class name) and its tokenizer."""
    import torch
    import transformers
    from transformers import BertConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save_bert_tokenizer(folder, max_len=128, cased=cased)
    vocab_size = len((folder / "vocab.txt").read_text(encoding="utf-8").splitlines())
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=128,
                        num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={l: i for i, l in enumerate(labels)})
    getattr(transformers, head)(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_bert_classifier(folder: Path, labels: Sequence[str] = ("negative", "positive"), *, hidden: int = 32,
                         layers: int = 2, heads: int = 4, intermediate: int = 64, seed: int = 0) -> Path:
    """A BERT sequence classifier (text-classification)."""
    return _tiny_labelled_bert(folder, "BertForSequenceClassification", labels, cased=False, hidden=hidden,
                               layers=layers, heads=heads, intermediate=intermediate, seed=seed)


def tiny_bert_token_classifier(folder: Path, labels: Sequence[str] = ("O", "B-PER", "I-PER"), *,
                               hidden: int = 32, layers: int = 2, heads: int = 4, intermediate: int = 64,
                               seed: int = 0) -> Path:
    """A BERT token classifier (token-classification, BIO tags) with a CASED tokenizer, so a
    capital letter is something the model can see (named entities)."""
    return _tiny_labelled_bert(folder, "BertForTokenClassification", labels, cased=True, hidden=hidden,
                               layers=layers, heads=heads, intermediate=intermediate, seed=seed)


def tiny_bert_encoder(folder: Path, *, hidden: int = 32, layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """A bare BERT encoder (feature-extraction / sentence embeddings)."""
    import torch
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save_bert_tokenizer(folder, max_len=128)
    vocab_size = len((folder / "vocab.txt").read_text(encoding="utf-8").splitlines())
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=128)
    BertModel(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_vit_classifier(folder: Path, num_labels: int = 10, *, image_size: int = 8, patch_size: int = 2,
                        channels: int = 1, hidden: int = 32, layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """A ViT image classifier; defaults fit scikit-learn's 8x8 grey digits."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    labels = [str(i) for i in range(num_labels)]
    config = ViTConfig(image_size=image_size, patch_size=patch_size, num_channels=channels, hidden_size=hidden,
                       num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=hidden * 2,
                       num_labels=num_labels, id2label=dict(enumerate(labels)),
                       label2id={l: i for i, l in enumerate(labels)})
    ViTForImageClassification(config).eval().save_pretrained(folder, safe_serialization=True)
    write_image_processor(folder, image_size=image_size, channels=channels)
    return folder


def write_image_processor(folder: Path, *, image_size: int, channels: int) -> None:
    """A preprocessor_config.json: resize to the model's size, scale to [0,1], normalise."""
    cfg = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": image_size, "width": image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5] * channels,
        "image_std": [0.5] * channels,
    }
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each of the 256 byte values, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    extra = 0
    out = []
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def save_byte_tokenizer(folder: Path) -> int:
    """A byte-level BPE tokenizer over the 256 byte symbols (no merges) plus an end-of-text
    token; returns the vocabulary size."""
    from transformers import GPT2TokenizerFast

    vocab = {s: i for i, s in enumerate(_byte_symbols())}
    vocab["<|endoftext|>"] = len(vocab)
    GPT2TokenizerFast(vocab=vocab, merges=[], model_max_length=128).save_pretrained(folder)
    return len(vocab)


def tiny_gpt2(folder: Path, *, hidden: int = 32, layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """A GPT-2 causal LM with a byte-level BPE tokenizer over the 256 byte symbols (no merges)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = save_byte_tokenizer(folder)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=128, n_embd=hidden, n_layer=layers, n_head=heads,
                        bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
    GPT2LMHeadModel(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_decoder(folder: Path, family: str = "qwen2", *, hidden: int = 64, layers: int = 2, heads: int = 4,
                 kv_heads: int = 2, intermediate: int = 128, seed: int = 0) -> Path:
    """A Llama-family causal LM (`family` "qwen2" or "llama": RMSNorm, rotary positions, grouped
    KV heads, SwiGLU) with the byte-level tokenizer: the shape of today's foundation LMs, and an
    architecture ONNX Runtime GenAI's builder exports. Qwen2 ties the LM head to the embedding,
    as Qwen2.5-0.5B does."""
    import torch
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = save_byte_tokenizer(folder)
    cls, cfg_cls = {"qwen2": ("Qwen2ForCausalLM", "Qwen2Config"),
                    "llama": ("LlamaForCausalLM", "LlamaConfig")}[family]
    torch.manual_seed(seed)
    config = getattr(transformers, cfg_cls)(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=128,
        tie_word_embeddings=family == "qwen2", bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
    model = getattr(transformers, cls)(config).eval()
    with torch.no_grad():  # larger than the default init, so logits differ visibly between tokens
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.08)
    model.save_pretrained(folder, safe_serialization=True)
    return folder
