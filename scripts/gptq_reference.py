#!/usr/bin/env python3
"""An independent GPTQ (Frantar et al. 2023, Algorithm 1) in numpy float64, on a small random layer
with the paper's uniform grid (per-row asymmetric min-max, `bits` bits), lazy batch updates in
blocks of `block` columns and damping `percdamp` of the mean diagonal. Writes the layer, H and the
quantized weights as a fixture: ErrorFeedbackTests checks LowRA's error feedback (run with the
same grid written as per-row codebooks) against it.

usage: gptq_reference.py OUT.json
"""
import json, sys
import numpy as np


def gptq(w, h, bits, block, percdamp):
    w = w.copy()
    rows, cols = w.shape
    maxq = 2**bits - 1
    lo = np.minimum(w.min(axis=1), 0)
    hi = np.maximum(w.max(axis=1), 0)
    scale = (hi - lo) / maxq
    zero = np.round(-lo / scale)

    def quantize(x):
        q = np.clip(np.round(x / scale) + zero, 0, maxq)
        return scale * (q - zero)

    h = h.copy()
    h[np.diag_indices(cols)] += percdamp * np.mean(np.diag(h))
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: H^-1 = U^T U
    q = np.zeros_like(w)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = w[:, i1:i2].copy()
        err1 = np.zeros_like(w1)
        for i in range(i2 - i1):
            col = w1[:, i]
            d = hinv[i1 + i, i1 + i]
            qc = quantize(col)
            q[:, i1 + i] = qc
            e = (col - qc) / d
            w1[:, i:] -= np.outer(e, hinv[i1 + i, i1 + i:i2])
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return q, scale, zero


def main():
    rng = np.random.default_rng(7)
    rows, cols, tokens = 12, 80, 400
    mix = rng.normal(size=(cols, cols)) / np.sqrt(cols) + np.eye(cols)
    x = rng.normal(size=(tokens, cols)) @ mix  # correlated inputs
    # Rounded to float32 first: LowRA reads these values in float32.
    h = (x.T @ x / tokens).astype(np.float32).astype(np.float64)
    w = (rng.normal(size=(rows, cols)) * 0.1).astype(np.float32).astype(np.float64)
    bits, block, percdamp = 3, 16, 0.01
    q, scale, zero = gptq(w, h, bits, block, percdamp)
    def numbers(a):
        return "[" + ",".join(format(v, ".9g") for v in np.ravel(a)) + "]"

    fields = {"w": w, "h": h, "q": q, "scale": scale, "zero": zero}
    with open(sys.argv[1], "w") as f:
        f.write(f'{{"rows": {rows}, "cols": {cols}, "bits": {bits}, "block": {block}, "percdamp": {percdamp}, ')
        f.write(", ".join(f'"{k}": {numbers(v)}' for k, v in fields.items()) + "}\n")


if __name__ == "__main__":
    main()
