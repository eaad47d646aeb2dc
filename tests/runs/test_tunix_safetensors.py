"""Hugging Face checkpoints with the real Tunix trainer: a tiny Qwen3 written in exactly the format
of a Hub download (config.json, model.safetensors with HF Qwen3 names, tokenizer.json), fine-tuned
with LoRA through the run pipeline, exported merged and loaded back by Tunix's own loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runs import services
from runs.execution import execute_run
from runs.models import Run
from traces.parsing import render_completion
from traces.services import trace_dataset_resolve

pytest.importorskip("tunix")

TINY = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "head_dim": 8,
    "num_key_value_heads": 2,
}


def write_tiny_qwen3(folder: Path, *, seed: int = 0) -> dict[str, np.ndarray]:
    """A random-weight Qwen3 checkpoint as the Hub ships one; returns its tensors by HF name."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder.mkdir(parents=True)
    # A tiny byte-level BPE, trained on the addition traces, with Qwen3's special tokens.
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    dataset = trace_dataset_resolve(reference="addition@1")
    texts = [item["prompt"] + "\n" + render_completion(item) for item in dataset.train_items[:500]]
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))

    vocab = tokenizer.get_vocab_size()
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        **TINY,
        "vocab_size": vocab,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000,
        "tie_word_embeddings": True,  # as Qwen3-0.6B: no lm_head.weight in the file
        "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(seed)
    d, heads, kv, hd, ff = (TINY[k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads",
                                              "head_dim", "intermediate_size"))  # fmt: skip

    def w(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    tensors = {"model.embed_tokens.weight": w(vocab, d), "model.norm.weight": np.ones(d, np.float32)}
    for i in range(TINY["num_hidden_layers"]):
        p = f"model.layers.{i}"
        tensors |= {
            f"{p}.self_attn.q_proj.weight": w(heads * hd, d),
            f"{p}.self_attn.k_proj.weight": w(kv * hd, d),
            f"{p}.self_attn.v_proj.weight": w(kv * hd, d),
            f"{p}.self_attn.o_proj.weight": w(d, heads * hd),
            f"{p}.self_attn.q_norm.weight": np.ones(hd, np.float32),
            f"{p}.self_attn.k_norm.weight": np.ones(hd, np.float32),
            f"{p}.mlp.gate_proj.weight": w(ff, d),
            f"{p}.mlp.up_proj.weight": w(ff, d),
            f"{p}.mlp.down_proj.weight": w(d, ff),
            f"{p}.input_layernorm.weight": np.ones(d, np.float32),
            f"{p}.post_attention_layernorm.weight": np.ones(d, np.float32),
        }
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return tensors


def _run(user, **hyperparameters) -> Run:
    run = services.run_create(
        owner=user, trainer="tunix-sft", dataset="addition@1", hyperparameters=hyperparameters, enqueue=False
    )
    return execute_run(run.pk)


def _greedy_outputs(folder: Path, count: int) -> list[str]:
    """Load an exported folder with Tunix's loader and decode the first `count` held-out prompts
    greedily, exactly as the trainer's evaluation does."""
    from tunix.models.qwen3 import params as qwen3_params

    from runs.trainers.tunix.data import HFTokenizer
    from runs.trainers.tunix.evaluation import held_out_decoder
    from runs.trainers.tunix.hf_format import config_from_hf

    config = config_from_hf(folder)
    model = qwen3_params.create_model_from_safe_tensors(str(folder), config)
    items = trace_dataset_resolve(reference="addition@1").eval_items[:count]
    return held_out_decoder(model, config, HFTokenizer(str(folder)), items, max_new_tokens=64).decode()


@pytest.mark.django_db
def test_lora_fine_tunes_a_hugging_face_qwen3_and_exports_it_merged(user, settings, tmp_path):
    from safetensors.numpy import load_file

    settings.TUNIX_RT = {**settings.TUNIX_RT, "MODELS_DIR": tmp_path}
    base = write_tiny_qwen3(tmp_path / "tiny-qwen3")
    hp = {"max_steps": 30, "eval_interval": 15, "eval_items": 10, "learning_rate": 3e-2, "batch_size": 16}

    # pretrained_config left empty: the architecture comes from the folder's config.json.
    run = _run(user, pretrained_path="tiny-qwen3", lora_rank=4, lora_alpha=8, **hp)

    assert run.status == Run.Status.SUCCEEDED, run.error_message
    assert run.log_lines.filter(text__contains="LoRA rank 4").exists()
    losses = [p.values["eval_loss"] for p in run.metric_points.order_by("step")]
    assert losses[-1] < losses[0] - 0.2, losses  # the adapters learn
    saved = np.load(Path(run.output_dir) / "model.npz")
    adapters = [k for k in saved.files if "lora" in k]
    assert adapters and any(np.abs(saved[k]).max() > 0 for k in adapters if k.endswith("lora_b"))
    # The base stays frozen: every base weight the run saved is the checkpoint's, bit for bit.
    q = saved["layers.0.attn.q_proj.w"]
    np.testing.assert_array_equal(q.reshape(q.shape[0], -1).T, base["model.layers.0.self_attn.q_proj.weight"])
    np.testing.assert_array_equal(saved["layers.1.mlp.down_proj.kernel"].T, base["model.layers.1.mlp.down_proj.weight"])
    np.testing.assert_array_equal(saved["embedder.input_embedding"], base["model.embed_tokens.weight"])

    export = Path(run.output_dir) / "export"
    assert sorted(p.name for p in export.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"
    ]  # fmt: skip
    merged = load_file(str(export / "model.safetensors"))
    assert set(merged) == set(base)  # the same Hugging Face names, no adapter tensors
    q_name = "model.layers.0.self_attn.q_proj.weight"
    assert not np.allclose(merged[q_name], base[q_name])  # the adapters' delta is merged in
    np.testing.assert_array_equal(merged["model.norm.weight"], base["model.norm.weight"])
    # Loaded back by the same loader, the merged model answers the held-out prompts as the run did.
    details = run.evaluation.details
    assert _greedy_outputs(export, len(details)) == [d["output"] for d in details]


@pytest.mark.django_db
def test_a_run_exports_a_folder_the_loader_reads_back_with_the_same_predictions(user, settings, tmp_path):
    run = _run(user, max_steps=60, eval_interval=60, eval_items=20, learning_rate=3e-3)

    assert run.status == Run.Status.SUCCEEDED, run.error_message
    export = Path(run.output_dir) / "export"
    config = json.loads((export / "config.json").read_text())
    assert config["model_type"] == "qwen3" and config["vocab_size"] == 259 and config["num_hidden_layers"] == 2
    # The byte-level tokenizer, as a tokenizer.json: the same ids as the trainer's own.
    from tokenizers import Tokenizer

    from runs.trainers.tunix.data import ByteTokenizer

    text = "What is 47+38?\n7+8=15; 4+3+1=8 #### 85 é"
    assert Tokenizer.from_file(str(export / "tokenizer.json")).encode(text).ids == ByteTokenizer().encode(text)
    details = run.evaluation.details
    assert _greedy_outputs(export, len(details)) == [d["output"] for d in details]
    # And a new run can start from it (pretrained_path + LoRA), as from a downloaded checkpoint.
    settings.TUNIX_RT = {**settings.TUNIX_RT, "MODELS_DIR": Path(run.output_dir)}
    tuned = _run(user, pretrained_path="export", lora_rank=2, max_steps=5, eval_interval=5, eval_items=5)
    assert tuned.status == Run.Status.SUCCEEDED, tuned.error_message
    first_loss = tuned.metric_points.order_by("step").first().values["eval_loss"]
    assert first_loss < 2.0, first_loss  # it starts from the trained weights, not from scratch
