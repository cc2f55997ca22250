#!/usr/bin/env python3
"""A Hugging Face PEFT LoRA adapter for the tiny fixture model, made independently of LowRA (numpy and
safetensors, PEFT's key naming and adapter_config.json), and the logits of the merged model
W + scale·B·A from the float64 numpy forward (scripts/reference.py): what `lowra adapter import` must
reproduce. rsLoRA scaling (lora_alpha / sqrt(r)) on a subset of the modules.

Writes Tests/Fixtures/peft_tiny/ and Tests/Fixtures/peft_tiny_logits.json. Run: python3 scripts/make_peft_fixture.py
"""
import json
import os

import numpy as np
from safetensors.numpy import load_file, save_file

import reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "Tests", "Fixtures")
R, ALPHA = 4, 6.0
TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
MODULES = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def main():
    cfg = json.load(open(os.path.join(FIX, "tiny_hf", "config.json")))
    w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(FIX, "tiny_hf", "model.safetensors")).items()}
    rng = np.random.default_rng(2026)
    scale = ALPHA / np.sqrt(R)
    tensors, merged = {}, dict(w)
    for layer in range(cfg["num_hidden_layers"]):
        for name in TARGETS:
            key = f"model.layers.{layer}.{MODULES[name]}.{name}"
            out_f, in_f = w[key + ".weight"].shape
            a = rng.normal(0, 0.2, (R, in_f)).astype(np.float32)
            b = rng.normal(0, 0.2, (out_f, R)).astype(np.float32)
            tensors[f"base_model.model.{key}.lora_A.weight"] = a
            tensors[f"base_model.model.{key}.lora_B.weight"] = b
            merged[key + ".weight"] = w[key + ".weight"] + scale * (b.astype(np.float64) @ a.astype(np.float64))
    out = os.path.join(FIX, "peft_tiny")
    os.makedirs(out, exist_ok=True)
    save_file(tensors, os.path.join(out, "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": R, "lora_alpha": ALPHA, "use_rslora": True,
        "target_modules": TARGETS, "lora_dropout": 0.05, "bias": "none", "fan_in_fan_out": False,
        "base_model_name_or_path": "tiny_hf", "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {},
        "inference_mode": True,
    }
    json.dump(config, open(os.path.join(out, "adapter_config.json"), "w"), indent=2, sort_keys=True)
    tokens = json.load(open(os.path.join(FIX, "tiny_logits.json")))["tokens"]
    with_adapter = reference.forward(merged, cfg, tokens)
    without = reference.forward(w, cfg, tokens)
    assert np.abs(with_adapter - without).max() > 0.1, "the adapter must change the logits"
    json.dump({"tokens": tokens, "scale": scale, "vocab": int(with_adapter.shape[1]),
               "logits": [float(x) for x in with_adapter.reshape(-1)]},
              open(os.path.join(FIX, "peft_tiny_logits.json"), "w"))
    change = np.abs(with_adapter - without).max()
    print(f"peft_tiny: {len(tensors)} tensors, scale {scale}, max logit change {change:.3f}")


if __name__ == "__main__":
    main()
