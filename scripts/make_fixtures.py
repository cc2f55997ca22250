#!/usr/bin/env python3
"""Writes the small test fixtures under Tests/Fixtures from independent implementations:
numpy (model forward, float64), the `tokenizers` package (token ids), `gguf` (GGUF writing and
ggml dequantization) and `safetensors` (file writing). Run from the repository root after
`scripts/setup.sh`:

    python3 -m pip install -r scripts/requirements-fixtures.txt
    python3 scripts/make_fixtures.py            # tiny models, tokenizers, GGUF types
    python3 scripts/make_fixtures.py --smollm2  # also the SmolLM2 perplexity reference (~1 min)
    python3 scripts/make_fixtures.py --qwen2    # only Qwen2.5-Coder-0.5B tokens and perplexity (make setup-qwen)
"""
import json
import os
import sys

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT
from safetensors.numpy import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

sys.path.insert(0, os.path.dirname(__file__))
import reference  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "Tests", "Fixtures")
GGUF_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
SHAKESPEARE = os.path.join(ROOT, "data", "tinyshakespeare.txt")
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TEXTS = [
    "Hello world",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "  two leading spaces, trailing three   ",
    "tabs\tand\nnewlines\n\n\nand\r\nCRLF",
    "Numbers: 3.14159, 2024-11-23, 1,000,000 and x2y3",
    "I'm sure you've heard they'll say it's done, we'd go; I'M LOUD",
    "Punctuation!!! ...? (brackets) [square] {curly} <angle> @#$%^&*",
    "Unicode: naïve café résumé — “quotes” ‘single’ … Ünïcödé",
    "CJK 你好，世界。日本語のテキスト 한국어",
    "Emoji 😀👍🏽 and ZWJ 👨‍👩‍👧 family",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "special inside<|endoftext|>text",
    "mixed   \n  whitespace \u00a0nbsp\u2003emspace",
    "Arabic: مرحبا بالعالم and Greek: Καλημέρα",
    "fractions ½ ¾ and superscripts x² and roman Ⅻ",
    "",
    " ",
    "a",
]


# Extra texts for the Qwen2 / Llama 3 tokenizers: code, digit runs, whitespace runs, NFD input.
CODE_TEXTS = [
    "def reverse(s: str) -> str:\n    return s[::-1]\n\n\nprint(reverse('hello'))\n",
    "for (int i = 0; i < 100; ++i) {\n\tsum += a[i] * 31415926;\n}\r\n",
    "    indented    spaces\n\n\t\ttabs  \n  \n",
    "cafe\u0301 and \u212b (decomposed) vs caf\u00e9",
    "HE'S here, they'RE gone; 'quoted' and don'T",
]

QWEN_GGUF = os.path.join(ROOT, "models", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")


def word_piece_pattern(max_digits):
    """The Split regex of Qwen2 (one digit a piece) and Llama 3 (up to three) tokenizer.json files."""
    digits = r"\p{N}" if max_digits == 1 else r"\p{N}{1,%d}" % max_digits
    return (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|" + digits
            + r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def finish_gguf(wr):
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def write_json(name, obj):
    with open(os.path.join(FIX, name), "w") as f:
        json.dump(obj, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")


def gguf_bpe(path):
    """A BPE tokenizer from a GGUF's vocabulary and merges, with its tokens and their types."""
    r = gguf.GGUFReader(path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    vocab = {t: i for i, t in enumerate(tokens)}
    return Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges])), tokens, types


def smollm2_tokenizer():
    tok, tokens, types = gguf_bpe(GGUF_MODEL)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], special=True) for i, t in enumerate(types) if t == 3])
    return tok


def tokenizer_fixtures():
    tok = smollm2_tokenizer()
    text = open(SHAKESPEARE, encoding="utf-8").read()
    texts = TEXTS + [text[:3000], text[500000:503000]]
    write_json("tokenizer_smollm2.json", [{"text": t, "ids": tok.encode(t).ids} for t in texts])


def split_fixtures():
    """Pieces of the Llama 3 (3 digits) and Qwen2 (1 digit) Split regex, from `tokenizers`."""
    out = {}
    for digits in (1, 3):
        split = pre_tokenizers.Split(Regex(word_piece_pattern(digits)), behavior="isolated", invert=False)
        out[str(digits)] = [{"text": t, "pieces": [p for p, _ in split.pre_tokenize_str(t)]} for t in TEXTS + CODE_TEXTS]
    write_json("pretokenizer_splits.json", out)


def tiny_tokenizer():
    text = open(SHAKESPEARE, encoding="utf-8").read()[:20000]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text, " ".join(TEXTS)], trainer)
    return tok


def random_weights(cfg, rng, bias):
    c, f, h, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = c // h
    w = {"model.embed_tokens.weight": rng.normal(0, 1, (cfg["vocab_size"], c)), "model.norm.weight": 1 + 0.1 * rng.normal(size=c)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        for name, shape in [("q", (h * d, c)), ("k", (kv * d, c)), ("v", (kv * d, c)), ("o", (c, h * d))]:
            w[p + f"self_attn.{name}_proj.weight"] = rng.normal(0, 1 / np.sqrt(shape[1]), shape)
            if bias and name != "o":
                w[p + f"self_attn.{name}_proj.bias"] = rng.normal(0, 0.1, shape[0])
        for name, shape in [("gate", (f, c)), ("up", (f, c)), ("down", (c, f))]:
            w[p + f"mlp.{name}_proj.weight"] = rng.normal(0, 1 / np.sqrt(shape[1]), shape)
        w[p + "input_layernorm.weight"] = 1 + 0.1 * rng.normal(size=c)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.normal(size=c)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = rng.normal(0, 1 / np.sqrt(c), (cfg["vocab_size"], c))
    return w


def write_hf_dir(path, cfg, w, tok, dtype):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    save_file({k: v.astype(dtype) for k, v in w.items()}, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": CHATML, "eos_token": "<|im_end|>"}, f, indent=1)


def write_bf16_shards(path, w, shards):
    """A sharded bf16 safetensors checkpoint written by hand (numpy has no bfloat16): the
    float32 values rounded to nearest even, `shards` files and model.safetensors.index.json.
    Returns the weights as stored, in float64."""
    names = sorted(w)
    stored, weight_map, total = {}, {}, 0
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
        for name in names[i::shards]:
            u = w[name].astype(np.float32).view(np.uint32).astype(np.uint64)
            u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
            stored[name] = (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
            blob = u.tobytes()
            header[name] = {"dtype": "BF16", "shape": list(w[name].shape), "data_offsets": [offset, offset + len(blob)]}
            blobs.append(blob)
            offset += len(blob)
            weight_map[name] = fname
            total += len(blob)
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * (-len(h) % 8)
        with open(os.path.join(path, fname), "wb") as f:
            f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1, sort_keys=True)
    return stored


def write_gguf(path, cfg, w, tok, arch="llama", extra=None):
    """llama-arch files store Q/K permuted for interleaved RoPE; qwen2 files keep the HF rows."""
    h, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    wr = gguf.GGUFWriter(path, arch)
    wr.add_block_count(cfg["num_hidden_layers"])
    wr.add_context_length(cfg["max_position_embeddings"])
    wr.add_embedding_length(cfg["hidden_size"])
    wr.add_feed_forward_length(cfg["intermediate_size"])
    wr.add_head_count(h)
    wr.add_head_count_kv(kv)
    wr.add_rope_freq_base(cfg["rope_theta"])
    wr.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    wr.add_vocab_size(cfg["vocab_size"])
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    tokens = [None] * cfg["vocab_size"]
    for t, i in vocab.items():
        tokens[i] = t
    special = {a["id"] for a in spec["added_tokens"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("smollm")
    wr.add_token_list(tokens)
    wr.add_token_merges(merges)
    wr.add_token_types([3 if i in special else 1 for i in range(len(tokens))])
    wr.add_eos_token_id(2)
    wr.add_add_bos_token(False)
    wr.add_chat_template(CHATML)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    per_layer = {
        "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
        "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.bias": "attn_v.bias",
    }
    for k, v in w.items():
        if k.startswith("model.layers."):
            l, rest = k[len("model.layers."):].split(".", 1)
            name = f"blk.{l}.{per_layer[rest]}"
            if arch == "llama" and rest == "self_attn.q_proj.weight":
                v = reference.permute_qk(v, h)
            if arch == "llama" and rest == "self_attn.k_proj.weight":
                v = reference.permute_qk(v, kv)
        else:
            name = names[k]
        wr.add_tensor(name, v.astype(np.float32))
    for name, v in (extra or {}).items():
        wr.add_tensor(name, v.astype(np.float32))
    finish_gguf(wr)


def tiny_models(gguf_only=False):
    tok = tiny_tokenizer()
    vocab = tok.get_vocab_size()
    rng = np.random.default_rng(1234)
    base = dict(
        model_type="llama", vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
        max_position_embeddings=64,
    )
    tokens = tok.encode("First Citizen:\nBefore we proceed any further, hear me speak. 12 3").ids[:24]
    cases = {}
    # A: tied head, GQA, fp32; written as a Hugging Face directory and as GGUF (permuted Q/K).
    cfg_a = dict(base, tie_word_embeddings=True)
    w_a = random_weights(cfg_a, rng, bias=False)
    if not gguf_only:
        write_hf_dir(os.path.join(FIX, "tiny_hf"), cfg_a, w_a, tok, np.float32)
    write_gguf(os.path.join(FIX, "tiny.gguf"), cfg_a, w_a, tok)
    if gguf_only:
        return
    w32 = {k: v.astype(np.float32).astype(np.float64) for k, v in w_a.items()}
    logits_a = reference.forward(w32, cfg_a, tokens)
    # The interleaved layout must give the same logits on permuted weights: checks the permutation.
    wp = dict(w32)
    for l in range(cfg_a["num_hidden_layers"]):
        wp[f"model.layers.{l}.self_attn.q_proj.weight"] = reference.permute_qk(w32[f"model.layers.{l}.self_attn.q_proj.weight"], 4)
        wp[f"model.layers.{l}.self_attn.k_proj.weight"] = reference.permute_qk(w32[f"model.layers.{l}.self_attn.k_proj.weight"], 2)
    assert np.allclose(reference.forward(wp, cfg_a, tokens, rope=reference.rope_interleaved), logits_a, atol=1e-9)
    cases["tiny_hf"] = logits_a
    cases["tiny.gguf"] = logits_a
    # B: untied head, q/k/v bias (Qwen2-style), MHA, stored as F16.
    cfg_b = dict(base, tie_word_embeddings=False, attention_bias=True, num_key_value_heads=4, num_hidden_layers=3)
    w_b = random_weights(cfg_b, rng, bias=True)
    write_hf_dir(os.path.join(FIX, "tiny_hf_bias_f16"), cfg_b, w_b, tok, np.float16)
    w16 = {k: v.astype(np.float16).astype(np.float64) for k, v in w_b.items()}
    cases["tiny_hf_bias_f16"] = reference.forward(w16, cfg_b, tokens)
    write_json("tiny_logits.json", {
        "tokens": tokens,
        "models": {k: {"vocab": int(v.shape[1]), "logits": [float(x) for x in v.reshape(-1)]} for k, v in cases.items()},
    })
    write_json("tokenizer_tiny.json", [{"text": t, "ids": tok.encode(t).ids} for t in TEXTS])


def tiny_families(gguf_only=False):
    """Tiny random models of the other families, each as a Hugging Face directory and a GGUF:
    Qwen2 (q/k/v bias from the family default, untied head, RoPE base 1e6, eps 1e-6, sharded
    bf16; its GGUF keeps the half-split rows) and Llama 3 (rope_scaling "llama3", whose GGUF
    stores the frequency factors as rope_freqs.weight and Q/K permuted)."""
    tok = tiny_tokenizer()
    vocab = tok.get_vocab_size()
    rng = np.random.default_rng(4321)
    tokens = tok.encode("First Citizen:\nBefore we proceed any further, hear me speak. 12 3").ids[:24]
    cases = {}
    qwen = dict(
        model_type="qwen2", vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1000000.0,
        max_position_embeddings=64, tie_word_embeddings=False, hidden_act="silu", sliding_window=64,
        use_sliding_window=False, max_window_layers=2,
    )
    w_q = random_weights(qwen, rng, bias=True)
    llama3 = dict(
        model_type="llama", vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, rms_norm_eps=1e-5, rope_theta=500000.0,
        max_position_embeddings=64, tie_word_embeddings=True, hidden_act="silu", mlp_bias=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64},
    )
    w_l = random_weights(llama3, rng, bias=False)
    d = llama3["hidden_size"] // llama3["num_attention_heads"]
    base_inv = reference.inv_freq(llama3["rope_theta"], d)
    factors = {"rope_freqs.weight": base_inv / reference.inv_freq(llama3["rope_theta"], d, llama3["rope_scaling"])}
    write_gguf(os.path.join(FIX, "tiny_qwen2.gguf"), qwen, w_q, tok, arch="qwen2")
    write_gguf(os.path.join(FIX, "tiny_llama3.gguf"), llama3, w_l, tok, extra=factors)
    if gguf_only:
        return
    hf_q = os.path.join(FIX, "tiny_qwen2_hf")
    os.makedirs(hf_q, exist_ok=True)
    for f in os.listdir(hf_q):
        os.remove(os.path.join(hf_q, f))
    stored = write_bf16_shards(hf_q, w_q, 2)
    with open(os.path.join(hf_q, "config.json"), "w") as f:
        json.dump(qwen, f, indent=1)
    tok.save(os.path.join(hf_q, "tokenizer.json"))
    cases["tiny_qwen2_hf"] = reference.forward(stored, qwen, tokens)
    cases["tiny_qwen2.gguf"] = reference.forward({k: v.astype(np.float32).astype(np.float64) for k, v in w_q.items()}, qwen, tokens)
    write_hf_dir(os.path.join(FIX, "tiny_llama3_hf"), llama3, w_l, tok, np.float32)
    w32 = {k: v.astype(np.float32).astype(np.float64) for k, v in w_l.items()}
    cases["tiny_llama3_hf"] = reference.forward(w32, llama3, tokens)
    # The GGUF's factors are float32: the reference uses them as stored.
    stored_factors = factors["rope_freqs.weight"].astype(np.float32).astype(np.float64)
    no_scaling = dict(llama3, rope_scaling=None)
    orig = reference.inv_freq
    reference.inv_freq = lambda theta, dim, scaling=None: orig(theta, dim) / stored_factors
    cases["tiny_llama3.gguf"] = reference.forward(w32, no_scaling, tokens)
    reference.inv_freq = orig
    assert np.allclose(cases["tiny_llama3.gguf"], cases["tiny_llama3_hf"], rtol=1e-5, atol=1e-6)
    write_json("families_logits.json", {
        "tokens": tokens,
        "models": {k: {"vocab": int(v.shape[1]), "logits": [float(x) for x in v.reshape(-1)]} for k, v in cases.items()},
    })


def gguf_types(gguf_only=False):
    """One tensor of every readable ggml type, with random block contents, and metadata of every
    value type; the expected values come from gguf-py's own dequantization."""
    rng = np.random.default_rng(7)
    path = os.path.join(FIX, "types.gguf")
    wr = gguf.GGUFWriter(path, "test")
    meta = {}
    for kind, key, value in [
        ("uint8", "t.u8", 200), ("int8", "t.i8", -100), ("uint16", "t.u16", 60000), ("int16", "t.i16", -30000),
        ("uint32", "t.u32", 4000000000), ("int32", "t.i32", -2000000000), ("float32", "t.f32", 1.5),
        ("bool", "t.bool", True), ("string", "t.str", "héllo\nworld"), ("uint64", "t.u64", 2**62 + 3),
        ("int64", "t.i64", -(2**62)), ("float64", "t.f64", 2.718281828459045),
    ]:
        getattr(wr, "add_" + kind)(key, value)
        meta[key] = value
    wr.add_array("t.arr_i32", [1, -2, 3])
    wr.add_array("t.arr_str", ["a", "bc", ""])
    meta["t.arr_i32"] = [1, -2, 3]
    meta["t.arr_str"] = ["a", "bc", ""]
    expected = {}
    rows, cols = 3, 64
    for qt in [QT.F32, QT.F16, QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0]:
        n = rows * cols
        if qt == QT.F32:
            raw = rng.normal(size=n).astype(np.float32).view(np.uint8)
        elif qt == QT.F16:
            raw = rng.normal(size=n).astype(np.float16).view(np.uint8)
        elif qt == QT.BF16:
            raw = (rng.normal(size=n).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        else:
            block_size, type_size = gguf.GGML_QUANT_SIZES[qt]
            nb = n // block_size
            blocks = rng.integers(0, 256, size=(nb, type_size), dtype=np.uint8)
            scales = (rng.uniform(0.01, 0.1, size=(nb, 2)) * rng.choice([-1, 1], size=(nb, 2))).astype(np.float16)
            n_scales = 2 if qt in (QT.Q4_1, QT.Q5_1) else 1
            blocks[:, : 2 * n_scales] = scales[:, :n_scales].view(np.uint8).reshape(nb, 2 * n_scales)
            raw = blocks.reshape(-1)
        values = gguf.quants.dequantize(raw.reshape(rows, -1), qt).reshape(-1)
        name = "w_" + qt.name.lower()
        if qt == QT.F32:
            wr.add_tensor(name, raw.view(np.float32).reshape(rows, cols))
        else:  # gguf-py takes quantized tensors as bytes, (rows, bytes per row)
            wr.add_tensor(name, raw.reshape(rows, -1), raw_dtype=qt)
        expected[name] = {"type": qt.name, "shape": [rows, cols], "values": [float(v) for v in values]}
    finish_gguf(wr)
    if not gguf_only:
        write_json("types_gguf.json", {"metadata": meta, "tensors": expected})


def gguf_kquants(gguf_only=False):
    """One tensor of each k-quant type (and IQ4_NL) with random block contents and finite f16
    scales; the expected values come from gguf-py's numpy dequantizers."""
    rng = np.random.default_rng(11)
    path = os.path.join(FIX, "kquants.gguf")
    wr = gguf.GGUFWriter(path, "test")
    expected = {}
    # Byte offsets of the f16 scale fields (d, and dmin where there is one) in each block.
    scale_offsets = {QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208],
                     QT.IQ4_NL: [0]}
    for qt, (rows, cols) in [(QT.Q2_K, (2, 512)), (QT.Q3_K, (2, 512)), (QT.Q4_K, (2, 512)), (QT.Q5_K, (2, 512)),
                             (QT.Q6_K, (2, 512)), (QT.IQ4_NL, (3, 64))]:
        block_size, type_size = gguf.GGML_QUANT_SIZES[qt]
        nb = rows * cols // block_size
        blocks = rng.integers(0, 256, size=(nb, type_size), dtype=np.uint8)
        for off in scale_offsets[qt]:
            s = (rng.uniform(0.001, 0.05, size=nb) * rng.choice([-1, 1], size=nb)).astype(np.float16)
            blocks[:, off:off + 2] = s.view(np.uint8).reshape(nb, 2)
        raw = blocks.reshape(-1)
        values = gguf.quants.dequantize(raw.reshape(rows, -1), qt).reshape(-1)
        name = "w_" + qt.name.lower()
        wr.add_tensor(name, raw.reshape(rows, -1), raw_dtype=qt)
        expected[name] = {"type": qt.name, "shape": [rows, cols], "values": [float(v) for v in values]}
    finish_gguf(wr)
    if not gguf_only:
        write_json("kquants_gguf.json", {"tensors": expected})


def gguf_reference_weights(path, unpermute):
    """Every tensor of a GGUF file dequantized by gguf-py into float64 under its Hugging Face name;
    llama-arch Q/K rows are un-permuted to the half-split layout."""
    r = gguf.GGUFReader(path)
    arch = r.fields["general.architecture"].contents()
    f = {k[len(arch) + 1:]: r.fields[k].contents() for k in r.fields if k.startswith(arch + ".")}
    cfg = dict(
        num_attention_heads=f["attention.head_count"], num_key_value_heads=f["attention.head_count_kv"],
        rms_norm_eps=f["attention.layer_norm_rms_epsilon"], rope_theta=f["rope.freq_base"],
        hidden_size=f["embedding_length"], num_hidden_layers=f["block_count"],
    )
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    per_layer = {
        "attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
        "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight", "ffn_down.weight": "mlp.down_proj.weight",
        "attn_output.weight": "self_attn.o_proj.weight",
    }
    for x in "qkv":
        per_layer[f"attn_{x}.weight"] = f"self_attn.{x}_proj.weight"
        per_layer[f"attn_{x}.bias"] = f"self_attn.{x}_proj.bias"
    w = {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))
        v = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)
        if t.name.startswith("blk."):
            _, l, rest = t.name.split(".", 2)
            if unpermute and rest == "attn_q.weight":
                v = reference.unpermute_qk(v, cfg["num_attention_heads"])
            if unpermute and rest == "attn_k.weight":
                v = reference.unpermute_qk(v, cfg["num_key_value_heads"])
            w[f"model.layers.{l}.{per_layer[rest]}"] = v
        else:
            w[names[t.name]] = v
    return w, cfg


def perplexity_reference(path, tok, unpermute, out_name, n_tokens=512):
    """Perplexity on the first 512 tokens of Tiny Shakespeare, in float64, from gguf-py's weights."""
    w, cfg = gguf_reference_weights(path, unpermute)
    tokens = tok.encode(open(SHAKESPEARE, encoding="utf-8").read()).ids[:n_tokens]
    logits = reference.forward(w, cfg, tokens)
    ppl, acc = reference.perplexity(logits, tokens)
    print(f"{out_name}: perplexity {ppl:.4f}, accuracy {acc:.4f} on {len(tokens)} tokens")
    top = np.argsort(-logits[0])[:5]
    write_json(out_name, {
        "data": "data/tinyshakespeare.txt", "tokens": tokens, "perplexity": ppl, "accuracy": acc,
        "first_row_top5": [int(i) for i in top], "first_row_top5_logits": [float(logits[0, i]) for i in top],
        "last_row_top5": [int(i) for i in np.argsort(-logits[-1])[:5]],
    })


def smollm2_reference():
    """SmolLM2: Q/K un-permuted to the Hugging Face layout."""
    perplexity_reference(GGUF_MODEL, smollm2_tokenizer(), True, "smollm2_reference.json")


def qwen2_tokenizer():
    """Qwen2's tokenizer as its tokenizer.json defines it (NFC, the Split regex with single
    digits, byte-level), built by the `tokenizers` package from the GGUF's vocabulary and merges."""
    tok, tokens, types = gguf_bpe(QWEN_GGUF)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(word_piece_pattern(1)), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t in (3, 4)])
    return tok


def qwen2_fixtures():
    """Token ids of 23 texts and the perplexity reference of Qwen2.5-Coder-0.5B (make setup-qwen)."""
    tok = qwen2_tokenizer()
    texts = TEXTS + CODE_TEXTS
    write_json("tokenizer_qwen2.json", [{"text": t, "ids": tok.encode(t).ids} for t in texts])
    perplexity_reference(QWEN_GGUF, tok, False, "qwen2_reference.json")


if __name__ == "__main__":
    os.makedirs(FIX, exist_ok=True)
    if "--gguf-only" in sys.argv:
        # Setup's mode: only the two synthetic GGUF fixtures, which are not committed; the
        # committed JSON expectations were made from the same seeds.
        tiny_models(gguf_only=True)
        tiny_families(gguf_only=True)
        gguf_types(gguf_only=True)
        gguf_kquants(gguf_only=True)
        sys.exit(0)
    if "--qwen2" in sys.argv:  # only the Qwen2 fixtures (needs make setup-qwen)
        qwen2_fixtures()
        sys.exit(0)
    tokenizer_fixtures()
    split_fixtures()
    tiny_models()
    tiny_families()
    gguf_types()
    gguf_kquants()
    if "--smollm2" in sys.argv:
        smollm2_reference()
