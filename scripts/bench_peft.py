#!/usr/bin/env python3
"""PyTorch + PEFT fp32 LoRA training throughput: the peer `scripts/bench_train_peer.sh` compares
`lowra bench train` with (a benchmark, not a test; needs torch, transformers, peft and gguf from PyPI).

The same model (the unquantized GGUF, dequantized to fp32 by transformers), LoRA of the same rank on
the same seven linear layers of every block (no dropout), AdamW, batches of BATCH windows of SEQ
tokens of the same text, the loss on every token, and the same number of threads. Prints one JSON
object: the fastest step's seconds, tokens/s and the loss of every step.
"""
import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--data", default="data/train.txt")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up; the fastest is kept")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    folder, name = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(r=args.rank, lora_alpha=args.rank, lora_dropout=0.0, target_modules=targets)
    model = get_peft_model(model, config)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)

    with open(args.data, encoding="utf-8") as f:
        ids = tok(f.read(), return_tensors="pt").input_ids[0]
    need = args.batch * args.seq
    if len(ids) < need + 1:
        sys.exit(f"{args.data}: {len(ids)} tokens, fewer than one batch of {need}")
    g = torch.Generator().manual_seed(0)

    def batch():
        starts = torch.randint(0, len(ids) - args.seq, (args.batch,), generator=g)
        return torch.stack([ids[s:s + args.seq] for s in starts])

    times, losses = [], []
    for step in range(args.steps + 1):
        x = batch()
        t0 = time.perf_counter()
        out = model(input_ids=x, labels=x)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(out.loss.item())
        if step > 0:
            times.append(dt)
    best = min(times)
    print(json.dumps({
        "framework": f"torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "batch": args.batch, "seq": args.seq, "rank": args.rank,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "step_seconds": best, "tokens_per_s": need / best, "losses": losses,
    }))


if __name__ == "__main__":
    main()
