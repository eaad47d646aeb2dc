"""Model weights of the Tunix trainers: build a fresh tiny Qwen3, load a checkpoint (a Tunix RT
run's own, or a Hugging Face safetensors folder), apply LoRA, save the final weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from tunix.models.qwen3 import model as qwen3_lib

from runs.trainers.base import RunContext

from .trainer import pretrained_folder


def checkpoint_format(hp: dict) -> str:
    """ "" (no checkpoint), "tunix-rt" (model.npz + model_config.json) or "hf" (a Hugging Face folder).
    An empty `pretrained_config` means: what the folder holds (config.json first)."""
    if not hp["pretrained_path"]:
        return ""
    if hp["pretrained_config"] == "tunix-rt":
        return "tunix-rt"
    if hp["pretrained_config"]:
        return "hf"
    folder = pretrained_folder(hp["pretrained_path"])
    if (folder / "config.json").is_file():
        return "hf"
    if (folder / "model_config.json").is_file():
        return "tunix-rt"
    raise FileNotFoundError(
        f"{folder} holds neither a Hugging Face checkpoint (config.json, *.safetensors, tokenizer.json) "
        "nor a Tunix RT run's model (model.npz, model_config.json)"
    )


def hf_checkpoint(hp: dict) -> bool:
    return checkpoint_format(hp) == "hf"


def _load_tunix_rt_checkpoint(folder: Path):
    """A model saved by a Tunix RT run (`_save`): rebuild it from its config, then load its weights."""
    if not (folder / "model.npz").is_file() or not (folder / "model_config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no Tunix RT checkpoint (model.npz and model_config.json)")
    saved = json.loads((folder / "model_config.json").read_text())
    fields = {f.name for f in dataclasses.fields(qwen3_lib.ModelConfig)}
    config = qwen3_lib.ModelConfig(**{k: v for k, v in saved["config"].items() if k in fields})
    model = qwen3_lib.Qwen3(config, rngs=nnx.Rngs(params=0))
    arrays = np.load(folder / "model.npz")
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    for path, variable in flat:
        variable.value = jax.numpy.asarray(arrays[".".join(str(k) for k in path)])
    nnx.update(model, nnx.from_flat_state(flat))
    return model, config


def build_model(hp: dict, vocab_size: int):
    if hp["pretrained_path"]:
        folder = pretrained_folder(hp["pretrained_path"])
        if checkpoint_format(hp) == "tunix-rt":
            model, config = _load_tunix_rt_checkpoint(folder)
        else:
            from tunix.models.qwen3 import params as qwen3_params

            from .hf_format import config_from_hf

            # A named Tunix preset, or (empty) the architecture in the folder's config.json.
            preset = hp["pretrained_config"]
            config = getattr(qwen3_lib.ModelConfig, preset)() if preset else config_from_hf(folder)
            model = qwen3_params.create_model_from_safe_tensors(str(folder), config)
        if hp["lora_rank"]:
            import qwix

            provider = qwix.LoraProvider(
                module_path=".*q_proj|.*k_proj|.*v_proj|.*o_proj|.*gate_proj|.*down_proj|.*up_proj",
                rank=hp["lora_rank"],
                alpha=hp["lora_alpha"],
            )
            model = qwix.apply_lora_to_model(
                model, provider, rngs=nnx.Rngs(params=hp["seed"]), **model.get_model_input()
            )
        return model, config
    config = qwen3_lib.ModelConfig(
        num_layers=hp["num_layers"],
        vocab_size=vocab_size,
        embed_dim=hp["embed_dim"],
        hidden_dim=hp["hidden_dim"],
        num_heads=hp["num_heads"],
        head_dim=hp["head_dim"],
        num_kv_heads=hp["num_kv_heads"],
        rope_theta=10_000,
        norm_eps=1e-6,
        use_tied_embedding=False,
    )
    # Not tunix's dummy_model_creator: it sets norm weights near zero and the model does not learn.
    return qwen3_lib.Qwen3(config, rngs=nnx.Rngs(params=hp["seed"])), config


def save(ctx: RunContext, model, config, hp: dict) -> None:
    """The final weights as a flat .npz of named arrays, with the config to rebuild the model."""
    state = nnx.state(model, nnx.Param)
    flat = {".".join(str(k) for k in path): np.asarray(value) for path, value in nnx.to_flat_state(state)}
    np.savez(ctx.output_dir / "model.npz", **flat)
    description = {
        "architecture": "tunix.models.qwen3.Qwen3",
        "config": {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(config)
            if isinstance(getattr(config, f.name), (int, float, str, bool, type(None)))
        },
        "tokenizer": "pretrained" if hf_checkpoint(hp) else "byte-level (PAD=0, BOS=1, EOS=2, byte+3)",
        "hyperparameters": hp,
    }
    (ctx.output_dir / "model_config.json").write_text(json.dumps(description, indent=2, default=str))
