"""Independent numpy reference of the Llama forward pass (float64), used by the fixture scripts.

Written from the Hugging Face definition: half-split RoPE (pairs i, i + D/2), grouped-query
attention, SwiGLU MLP, RMSNorm. GGUF checkpoints store Q/K permuted for interleaved RoPE;
`unpermute_qk` turns them back into the Hugging Face layout before this forward runs.
"""
import numpy as np


def permute_qk(w, n_head):
    """Hugging Face (half-split) rows -> llama.cpp (interleaved) rows, as llama.cpp's converter."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def inv_freq(theta, d, scaling=None):
    """RoPE inverse frequencies (D/2), with Hugging Face's `rope_scaling` rules "linear" and
    "llama3" (high frequencies kept, low ones divided by `factor`, a smooth blend between)."""
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "linear":
        return inv / scaling["factor"]
    if kind == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        wavelen = 2 * np.pi / inv
        smooth = (old / wavelen - low) / (high - low)
        blended = (1 - smooth) * inv / factor + smooth * inv
        return np.where(wavelen < old / high, inv, np.where(wavelen > old / low, inv / factor, blended))
    assert kind == "default", kind
    return inv


def rope_half_split(x, theta, inv=None):
    # x: (T, H, D)
    t, _, d = x.shape
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d) if inv is None else inv  # (D/2)
    ang = np.arange(t, dtype=np.float64)[:, None] * inv[None, :]  # (T, D/2)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def rope_interleaved(x, theta, inv=None):
    t, _, d = x.shape
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d) if inv is None else inv
    ang = np.arange(t, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out


def forward(w, cfg, tokens, rope=rope_half_split):
    """w: dict of HF tensor names -> float64 arrays; returns logits (T, V)."""
    h, kvh, eps, theta = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rms_norm_eps"], cfg["rope_theta"]
    d = cfg.get("head_dim") or cfg["hidden_size"] // h
    inv = inv_freq(theta, d, cfg.get("rope_scaling"))
    x = w["model.embed_tokens.weight"][np.asarray(tokens)]
    t = x.shape[0]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        a = rmsnorm(x, w[p + "input_layernorm.weight"], eps)

        def proj(name):
            y = a @ w[p + f"self_attn.{name}_proj.weight"].T
            b = w.get(p + f"self_attn.{name}_proj.bias")
            return y if b is None else y + b

        q = rope(proj("q").reshape(t, h, d), theta, inv)
        k = rope(proj("k").reshape(t, kvh, d), theta, inv)
        v = proj("v").reshape(t, kvh, d)
        k = np.repeat(k, h // kvh, axis=1)
        v = np.repeat(v, h // kvh, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", s, v).reshape(t, h * d)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        m = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = m @ w[p + "mlp.gate_proj.weight"].T
        u = m @ w[p + "mlp.up_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T


def perplexity(logits, tokens):
    tokens = np.asarray(tokens)
    z = logits[:-1]
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    nll = lse - z[np.arange(len(z)), tokens[1:]]
    acc = float(np.mean(z.argmax(-1) == tokens[1:]))
    return float(np.exp(nll.mean())), acc
