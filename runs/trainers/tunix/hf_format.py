"""Hugging Face checkpoint folders for the Tunix trainer: read a Qwen3 `config.json`, and export a
trained model as `model.safetensors` + `config.json` + `tokenizer.json` (LoRA merged) that Tunix's
own loader (`tunix.models.qwen3.params.create_model_from_safe_tensors`) reads back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flax import nnx
from tunix.models.qwen3 import model as qwen3_lib

from .data import ByteTokenizer

EXPORT_DIR = "export"
# Names of the byte-level tokenizer's special tokens in the exported tokenizer.json.
BYTE_SPECIALS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"}


def config_from_hf(folder: Path) -> qwen3_lib.ModelConfig:
    """Tunix's Qwen3 config for a dense Qwen3 checkpoint, read from the folder's config.json."""
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json (a Hugging Face Qwen3 checkpoint folder)")
    hf = json.loads(path.read_text())
    if hf.get("model_type", "qwen3") != "qwen3":
        raise ValueError(f"{path}: model_type {hf.get('model_type')!r} is not supported (dense Qwen3 only)")
    try:
        return qwen3_lib.ModelConfig(
            num_layers=hf["num_hidden_layers"],
            vocab_size=hf["vocab_size"],
            embed_dim=hf["hidden_size"],
            hidden_dim=hf["intermediate_size"],
            num_heads=hf["num_attention_heads"],
            head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
            num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
            rope_theta=int(hf.get("rope_theta", 1_000_000)),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            use_tied_embedding=bool(hf.get("tie_word_embeddings", False)),
        )
    except KeyError as exc:
        raise ValueError(f"{path} lacks {exc.args[0]!r}") from None


def config_to_hf(config: qwen3_lib.ModelConfig, tokenizer) -> dict:
    """The config.json of a Hugging Face Qwen3ForCausalLM with this architecture."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "num_hidden_layers": config.num_layers,
        "vocab_size": config.vocab_size,
        "hidden_size": config.embed_dim,
        "intermediate_size": config.hidden_dim,
        "num_attention_heads": config.num_heads,
        "head_dim": config.head_dim,
        "num_key_value_heads": config.num_kv_heads,
        "rope_theta": config.rope_theta,
        "rms_norm_eps": config.norm_eps,
        "tie_word_embeddings": config.use_tied_embedding,
        "hidden_act": "silu",
        "attention_bias": False,
        "torch_dtype": "float32",
        "bos_token_id": tokenizer.bos_id(),
        "eos_token_id": tokenizer.eos_id(),
        "pad_token_id": tokenizer.pad_id(),
    }


def _hf_name_and_array(path: str, value: np.ndarray, config) -> tuple[str, np.ndarray]:
    """The inverse of Tunix's Qwen3 key mapping (tunix/models/qwen3/params.py): HF name, torch layout."""
    parts = path.split(".")
    if path == "embedder.input_embedding":
        return "model.embed_tokens.weight", value
    if path == "final_norm.w":
        return "model.norm.weight", value
    if path == "lm_head.w":
        return "lm_head.weight", value.T
    layer, module, name = parts[1], parts[2], ".".join(parts[3:])
    prefix = f"model.layers.{layer}"
    if module in ("input_layernorm", "post_attention_layernorm"):
        return f"{prefix}.{module}.weight", value
    if module == "mlp":  # gate_proj.kernel, up_proj.kernel, down_proj.kernel: (in, out)
        return f"{prefix}.mlp.{parts[3]}.weight", value.T
    if module == "attn":
        proj = parts[3]
        if proj in ("q_norm", "k_norm"):
            return f"{prefix}.self_attn.{proj}.weight", value
        if proj == "o_proj":  # (heads, head_dim, embed) -> (embed, heads * head_dim)
            return f"{prefix}.self_attn.o_proj.weight", value.reshape(-1, config.embed_dim).T
        # q/k/v: (embed, heads, head_dim) -> (heads * head_dim, embed)
        return f"{prefix}.self_attn.{proj}.weight", value.reshape(config.embed_dim, -1).T
    raise ValueError(f"no Hugging Face name for parameter {path} ({name})")


def merged_weights(model, lora_alpha: float, lora_rank: int) -> dict[str, np.ndarray]:
    """Every base weight by its Tunix path, with each LoRA adapter's delta (a @ b · alpha/rank,
    as Tunix's own merge in tunix/models/safetensors_saver.py) added to the weight it adapts."""
    weights: dict[str, np.ndarray] = {}
    adapters: dict[str, dict[str, np.ndarray]] = {}
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        name, value = ".".join(str(k) for k in path), np.asarray(variable.get_value())
        if isinstance(variable, nnx.LoRAParam):  # qwix: <module>.<weight>_lora_a / _lora_b
            target, part = name.rsplit("_lora_", 1)
            adapters.setdefault(target, {})[part] = value
        else:
            weights[name] = value
    for target, pair in adapters.items():
        a, b = pair["a"], pair["b"]  # a: (in..., rank), b: (rank, out...), in the weight's layout
        delta = (a.reshape(-1, a.shape[-1]) @ b.reshape(b.shape[0], -1)) * (lora_alpha / lora_rank)
        weights[target] = weights[target] + delta.reshape(weights[target].shape).astype(weights[target].dtype)
    return weights


def byte_tokenizer_json():
    """A `tokenizers` Tokenizer equivalent to ByteTokenizer (PAD 0, BOS 1, EOS 2, byte + 3)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()  # the 256 printable stand-ins for bytes, GPT-2 style
    byte_to_char = _bytes_to_unicode()
    assert set(byte_to_char.values()) == set(alphabet)
    vocab = {BYTE_SPECIALS["pad_token"]: 0, BYTE_SPECIALS["bos_token"]: 1, BYTE_SPECIALS["eos_token"]: 2}
    vocab.update({byte_to_char[b]: b + ByteTokenizer.OFFSET for b in range(256)})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(BYTE_SPECIALS.values()))
    return tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte -> printable character table, which tokenizers' ByteLevel uses.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def export(folder: Path, model, config, tokenizer, *, source: Path | None, lora_alpha: float, lora_rank: int) -> Path:
    """Write `folder/export/`: model.safetensors (HF Qwen3 names, float32, LoRA merged), config.json,
    tokenizer.json and tokenizer_config.json. `source` is the HF folder the run started from (its
    tokenizer files are copied), or None for the byte-level tokenizer."""
    import shutil

    from safetensors.numpy import save_file

    out = folder / EXPORT_DIR
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    weights = merged_weights(model, lora_alpha, max(lora_rank, 1))
    tensors = {}
    for path, value in weights.items():
        name, array = _hf_name_and_array(path, value, config)
        tensors[name] = np.ascontiguousarray(array, dtype=np.float32)
    # Tunix's optimised loader reads every tensor with the dtype of the first: one dtype throughout.
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config_to_hf(config, tokenizer), indent=2))
    if source is not None:
        shutil.copy(source / "tokenizer.json", out / "tokenizer.json")
        if (source / "tokenizer_config.json").is_file():
            shutil.copy(source / "tokenizer_config.json", out / "tokenizer_config.json")
        else:  # the special tokens the run used, so the folder reads back the same
            (out / "tokenizer_config.json").write_text(json.dumps(tokenizer.special_tokens(), indent=2))
    else:
        byte_tokenizer_json().save(str(out / "tokenizer.json"))
        (out / "tokenizer_config.json").write_text(json.dumps(BYTE_SPECIALS, indent=2))
    return out
