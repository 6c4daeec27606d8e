"""LoRA adapters for the local test model, written here in the PEFT format vLLM loads.

Random weights from a seeded generator: building twice gives the same files. The adapters touch
the attention projections (q, k, v, o) of every layer, with weights large enough that greedy
outputs differ between adapters and from the base model.
"""

from __future__ import annotations

import json
from pathlib import Path

RANK = 8
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def build(directory: Path, model_dir: str, seed: int, scale: float = 0.3) -> Path:
    """Writes an adapter for the model in ``model_dir`` to ``directory``; returns it."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((Path(model_dir) / "config.json").read_text())
    hidden = config["hidden_size"]
    head_dim = hidden // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    shapes = {"q_proj": (hidden, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden)}
    shapes["o_proj"] = (hidden, hidden)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for name in TARGETS:
            out_features, in_features = shapes[name]
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{name}"
            a = torch.randn(RANK, in_features, generator=g) * scale / in_features**0.5
            b = torch.randn(out_features, RANK, generator=g) * scale
            tensors[f"{prefix}.lora_A.weight"] = a.contiguous()
            tensors[f"{prefix}.lora_B.weight"] = b.contiguous()
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": model_dir,
        "r": RANK,
        "lora_alpha": RANK,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": list(TARGETS),
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    (directory / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    return directory
