#!/usr/bin/env python3
"""PyTorch eager fp32 baseline for rrj.bench.GpuBench: the same shapes on the same card.

BERT-base shape (768 hidden, 12 heads, 3072 FFN, 12 layers), random weights, fp32 with TF32
off (cuBLAS fp32 GEMMs, as our backend uses them), no autograd (inference_mode). The forward
pass mirrors rrj.model.Bert.forward op for op: embeddings + LayerNorm, per layer Q/K/V,
attention, output dense + residual + LayerNorm, FFN with exact-erf GELU + residual +
LayerNorm, then mean pooling; all sequences have the same length, so no mask is needed.

Prints medians of --reps timed runs after 3 warm-ups (wall clock around a
torch.cuda.synchronize, like GpuBench's sync per run):
  - forward at 128 x 128 and 1 x 16, with attention written out (softmax(q·kᵀ/√D)·v) and with
    F.scaled_dot_product_attention, and the GEMMs of the same forward alone (torch's floor);
  - LoRA r=8 on query and value at 128 x 128: none, 1 expert, 8 experts, applied the eager way,
    a Python loop over the experts' row segments (y[rows] += s·(x[rows]·Aᵀ)·Bᵀ).

Usage: python3 bench/gpu/torch_eager.py [--reps 20] [--layers 12] [--quick]
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

C, H, FFN, VOCAB, MAX_POS, R = 768, 12, 3072, 30522, 512, 8
D = C // H


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--quick", action="store_true", help="tiny shapes: checks the script, gives no figures")
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    dev = torch.device("cuda")
    torch.manual_seed(1)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(dev)}, fp32, TF32 off, eager, inference_mode")

    def normal(*shape, std=0.02, mean=0.0):
        return torch.randn(*shape, device=dev) * std + mean

    emb = dict(word=normal(VOCAB, C), pos=normal(MAX_POS, C), type=normal(2, C),
               g=normal(C, std=0.1, mean=1.0), b=normal(C, std=0.1))
    layers = []
    for _ in range(args.layers):
        w = {}
        for t in ("q", "k", "v", "o"):
            w["w" + t] = normal(C, C, std=0.04)
            w["b" + t] = normal(C, std=0.05)
        w.update(ln1g=normal(C, std=0.1, mean=1.0), ln1b=normal(C, std=0.1),
                 wi=normal(FFN, C, std=0.04), bi=normal(FFN, std=0.05),
                 wf=normal(C, FFN, std=0.04), bf=normal(C, std=0.05),
                 ln2g=normal(C, std=0.1, mean=1.0), ln2b=normal(C, std=0.1))
        layers.append(w)

    def add_lora(y, x, experts):
        """The eager LoRA baseline: one small GEMM pair per expert segment, in a Python loop."""
        for r0, r1, a, b, s in experts:
            y[r0:r1].add_((x[r0:r1] @ a.t()) @ b.t(), alpha=s)

    def attention(q, k, v, nseq, t, sdpa):
        q, k, v = (z.view(nseq, t, H, D).transpose(1, 2) for z in (q, k, v))
        if sdpa:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = torch.softmax((q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D)), dim=-1) @ v
        return o.transpose(1, 2).reshape(nseq * t, C)

    def forward(ids, lora=None, sdpa=False):
        nseq, t = ids.shape
        x = emb["word"][ids.reshape(-1)] + emb["pos"][:t].repeat(nseq, 1) + emb["type"][0]
        x = F.layer_norm(x, (C,), emb["g"], emb["b"], 1e-12)
        for li, w in enumerate(layers):
            q = F.linear(x, w["wq"], w["bq"])
            k = F.linear(x, w["wk"], w["bk"])
            v = F.linear(x, w["wv"], w["bv"])
            if lora is not None:
                add_lora(q, x, lora[li][0])
                add_lora(v, x, lora[li][1])
            ctx = attention(q, k, v, nseq, t, sdpa)
            h1 = F.layer_norm(F.linear(ctx, w["wo"], w["bo"]) + x, (C,), w["ln1g"], w["ln1b"], 1e-12)
            f = F.gelu(F.linear(h1, w["wi"], w["bi"]))  # approximate="none": the exact erf GELU
            x = F.layer_norm(F.linear(f, w["wf"], w["bf"]) + h1, (C,), w["ln2g"], w["ln2b"], 1e-12)
        return x.view(nseq, t, C).mean(1)

    def gemms(nseq, t):
        """The GEMMs of one forward pass alone, on preallocated operands (torch's floor)."""
        n = nseq * t
        x, y, f = normal(n, C, std=1.0), torch.empty(n, C, device=dev), torch.empty(n, FFN, device=dev)
        wc, wi, wf = normal(C, C), normal(FFN, C), normal(C, FFN)
        q = normal(nseq * H, t, D, std=1.0)
        s = torch.empty(nseq * H, t, t, device=dev)
        o = torch.empty(nseq * H, t, D, device=dev)

        def run():
            for _ in range(args.layers):
                for _ in range(4):
                    torch.mm(x, wc.t(), out=y)
                torch.bmm(q, q.transpose(1, 2), out=s)
                torch.bmm(s, q, out=o)
                torch.mm(x, wi.t(), out=f)
                torch.mm(f, wf.t(), out=y)
        return run

    def median_ms(fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        ms = []
        for _ in range(args.reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            ms.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ms)

    def lora_plan(experts, rows, seed):
        g = torch.Generator(device=dev).manual_seed(seed)
        per = rows // experts
        return [[[(e * per, (e + 1) * per, torch.randn(R, C, device=dev, generator=g) * 0.03,
                   torch.randn(C, R, device=dev, generator=g) * 0.03, 4.0) for e in range(experts)]
                 for _ in range(2)] for _ in range(args.layers)]

    shapes = [(8, 8), (1, 4)] if args.quick else [(128, 128), (1, 16)]
    with torch.inference_mode():
        print()
        print("shape        eager (median)  eager+SDPA     GEMMs alone    eager/GEMMs   seq/s (eager)")
        for nseq, t in shapes:
            ids = torch.randint(0, VOCAB, (nseq, t), device=dev)
            eager = median_ms(lambda: forward(ids))
            sdpa = median_ms(lambda: forward(ids, sdpa=True))
            floor = median_ms(gemms(nseq, t))
            print(f"{nseq:4d} x {t:<4d}  {eager:9.3f} ms   {sdpa:9.3f} ms   {floor:9.3f} ms   {eager / floor:8.2f}   {nseq / (eager / 1e3):9.1f}")

        nseq, t = shapes[0]
        ids = torch.randint(0, VOCAB, (nseq, t), device=dev)
        print()
        print(f"LoRA r=8 on query+value, {nseq} x {t}, per-expert loop   median      overhead vs none")
        none = median_ms(lambda: forward(ids))
        print(f"  no LoRA                                      {none:9.3f} ms")
        for experts in (1, 8):
            plan = lora_plan(experts, nseq * t, 10 + experts)
            ms = median_ms(lambda: forward(ids, lora=plan))
            print(f"  {experts} expert{' ' if experts == 1 else 's'}                                    {ms:9.3f} ms   {(ms / none - 1) * 100:+6.1f} %")


if __name__ == "__main__":
    main()
