#!/usr/bin/env python3
"""PyTorch baselines on attnkit_cuda_bench's shapes (bf16, BSHD), and the table.

Each timing: warm-up, then reps timed one by one with CUDA events, L2 flushed
(256 MiB memset) before each, median; decode loops (decode_loop_case) are
passes over distinct KV caches instead, with no flush. TFLOP/s count allowed pairs only
(DESIGN section 8): 2 * (D + Dv) * pairs.

  python3 torch_compare.py --attnkit attnkit.csv [--out torch.csv]

prints one table: attnkit vs SDPA FLASH, SDPA CUDNN and flex_attention
(torch.compile) with ratios; decode in microseconds and GB/s of K + V.
"""
import argparse
import csv
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

try:
    import torch._dynamo

    # Each mask shape recompiles flex_attention once; the default limit (8)
    # would silently drop later shapes to the unfused eager path.
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.cache_size_limit = 256
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex_compiled = torch.compile(flex_attention, dynamic=False)
except Exception as e:  # pragma: no cover - depends on the torch build
    print("flex_attention unavailable:", e, file=sys.stderr)
    flex_compiled = None

DEV = "cuda"
FLUSH = torch.empty(256 << 20, dtype=torch.uint8, device=DEV)


def median_ms(fn, reps=20, warmup=3, flush=True):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        if flush:
            FLUSH.zero_()
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def pairs(mask, n, arg):
    """Allowed (i, j) pairs of one (batch, head), self attention of length n."""
    if mask == "full":
        return n * n
    if mask == "causal":
        return n * (n + 1) // 2
    if mask == "window":
        w = arg
        return w * (w + 1) // 2 + (n - w) * w
    if mask == "prefix":
        p = arg
        return p * p + (n * (n + 1) // 2 - p * (p + 1) // 2)
    if mask == "document":  # `arg` equal documents, causal inside
        l = n // arg
        return arg * l * (l + 1) // 2
    raise ValueError(mask)


def bshd(b, n, h, d, seed):
    g = torch.Generator(device=DEV).manual_seed(seed)
    return torch.rand(b, n, h, d, device=DEV, dtype=torch.bfloat16, generator=g) * 2 - 1


def run_sdpa(backend, q, k, v, causal, gqa):
    # BSHD storage viewed as BHSD (strided), as FlashAttention is called.
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def fn():
        with sdpa_kernel([backend]):
            F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, enable_gqa=gqa)

    return fn


def mask_mod_for(mask, arg, n):
    if mask == "full":
        return lambda b, h, qi, ki: qi >= 0
    if mask == "causal":
        return lambda b, h, qi, ki: qi >= ki
    if mask == "window":
        return lambda b, h, qi, ki: (qi >= ki) & (qi - ki < arg)
    if mask == "prefix":
        return lambda b, h, qi, ki: (ki < arg) | (qi >= ki)
    if mask == "document":
        l = n // arg
        return lambda b, h, qi, ki: (qi // l == ki // l) & (qi >= ki)
    raise ValueError(mask)


def time_or_none(make, reps, **kw):
    try:
        return median_ms(make(), reps, **kw)
    except Exception as e:
        print("  skipped:", type(e).__name__, str(e).splitlines()[0][:120], file=sys.stderr)
        return None


def prefill_case(mask, arg, b, n, hq, hkv, d, reps, with_flex):
    q, k, v = bshd(b, n, hq, d, 1), bshd(b, n, hkv, d, 2), bshd(b, n, hkv, d, 3)
    fl = 2.0 * (2 * d) * pairs(mask, n, arg) * b * hq
    gqa = hq != hkv
    res = {}
    if mask in ("full", "causal"):
        for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
            ms = time_or_none(lambda: run_sdpa(be, q, k, v, mask == "causal", gqa), reps)
            res[name] = fl / (ms * 1e-3) / 1e12 if ms else None
    if with_flex and flex_compiled is not None:
        def make():
            bm = create_block_mask(mask_mod_for(mask, arg, n), None, None, n, n, device=DEV)
            qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            return lambda: flex_compiled(qt, kt, vt, block_mask=bm, enable_gqa=gqa)

        ms = time_or_none(make, reps)
        res["flex"] = fl / (ms * 1e-3) / 1e12 if ms else None
        res["flex_ms"] = ms
    del q, k, v
    torch.cuda.empty_cache()
    return res


def decode_case(b, kv, reps):
    hq, hkv, d = 32, 8, 128
    q, k, v = bshd(b, 1, hq, d, 4), bshd(b, kv, hkv, d, 5), bshd(b, kv, hkv, d, 6)
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    ms = time_or_none(lambda: (lambda: F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True)), reps)
    return ms


def decode_loop_case(b, kv, reps):
    """attnkit_cuda_bench's decode loop: one call per layer, each layer its own
    KV cache (>= 200 MB in all, so every call reads DRAM), back to back on one
    stream, events around whole passes; per call, median over passes."""
    hq, hkv, d = 32, 8, 128
    layers = max(4, -(-200_000_000 // (b * kv * hkv * d * 4)))
    rounds = max(1, -(-32 // layers))
    q = bshd(b, 1, hq, d, 4).transpose(1, 2)
    caches = [(bshd(b, kv, hkv, d, 5 + 2 * l).transpose(1, 2), bshd(b, kv, hkv, d, 6 + 2 * l).transpose(1, 2))
              for l in range(layers)]

    def step():
        for _ in range(rounds):
            for k, v in caches:
                F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    ms = time_or_none(lambda: step, max(3, reps // 3), warmup=1, flush=False)
    del caches
    torch.cuda.empty_cache()
    return ms / (rounds * layers) if ms else None


def fmt(x, w=7, p=1):
    return f"{x:{w}.{p}f}" if x is not None else " " * (w - 3) + "n/a"


def ratio(a, b):
    return f"{a / b:5.2f}x" if (a and b) else "  n/a "


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attnkit", required=True, help="CSV from attnkit_cuda_bench --csv")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = list(csv.DictReader(open(args.attnkit)))
    print("torch", torch.__version__, torch.cuda.get_device_name(), flush=True)

    table, dec_table = [], []
    for r in rows:
        kind, mask_name = r["kind"], r["mask"]
        B, N, Hq, Hkv, D = (int(r[x]) for x in ("B", "N", "Hq", "Hkv", "D"))
        if kind == "prefill":
            mask, arg = mask_name, 0
            if mask_name.startswith("window"):
                mask, arg = "window", int(mask_name[6:])
            elif mask_name.startswith("prefix"):
                mask, arg = "prefix", int(mask_name[6:])
            elif mask_name.startswith("document"):
                mask, arg = "document", int(mask_name[8:])
            with_flex = mask in ("window", "prefix", "document", "causal")
            t = prefill_case(mask, arg, B, N, Hq, Hkv, D, args.reps, with_flex)
            table.append((r, t))
            print("done", r["name"], mask_name, t, flush=True)
        elif kind == "decode":
            ms = decode_case(B, N, args.reps)
            dec_table.append((r, ms))
            print("done", r["name"], ms, flush=True)
        elif kind == "decode-loop":
            ms = decode_loop_case(B, N, args.reps)
            dec_table.append((r, ms))
            print("done", r["name"], ms, flush=True)

    print()
    print("=" * 118)
    print(f"{'shape':<30} {'mask':<11} {'attnkit':>8} {'FLASH':>7} {'CUDNN':>7} {'flex':>7}  "
          f"{'/FLASH':>6} {'/CUDNN':>6} {'/flex':>6}   (TFLOP/s, allowed pairs only)")
    for r, t in table:
        ak = float(r["tflops"])
        print(f"{r['name']:<30} {r['mask']:<11} {ak:8.1f} {fmt(t.get('flash'))} {fmt(t.get('cudnn'))} "
              f"{fmt(t.get('flex'))}  {ratio(ak, t.get('flash'))} {ratio(ak, t.get('cudnn'))} {ratio(ak, t.get('flex'))}")
    copy = next((float(r["gbps"]) for r in rows if r["kind"] == "copy"), None)
    def of_copy(gbs):
        return f"{100 * gbs / copy:5.1f}%" if (copy and gbs) else "  n/a "
    print(f"{'decode shape':<30} {'attnkit us':>10} {'GB/s':>7} {'%copy':>6} {'torch us':>9} {'GB/s':>7} "
          f"{'%copy':>6} {'speedup':>8}")
    for r, ms in dec_table:
        bytes_ = float(r["B"]) * float(r["N"]) * float(r["Hkv"]) * float(r["D"]) * 4
        ak_ms = float(r["ms"])
        t_gbs = bytes_ / (ms * 1e-3) / 1e9 if ms else None
        print(f"{r['name']:<30} {ak_ms * 1e3:10.1f} {float(r['gbps']):7.0f} {of_copy(float(r['gbps']))} "
              f"{fmt(ms * 1e3 if ms else None, 9)} {fmt(t_gbs, 7, 0)} {of_copy(t_gbs)} {ratio(ms, ak_ms)}")
    for r in rows:
        if r["kind"] == "decode-clean":
            print(f"{r['name']:<30} {float(r['ms']) * 1e3:10.1f} {float(r['gbps']):7.0f} "
                  f"{of_copy(float(r['gbps']))} (clean flush; attnkit only)")
        if r["kind"] == "copy":
            print(f"{r['name']:<30} {float(r['ms']) * 1e3:10.1f} {float(r['gbps']):7.0f} (the %copy reference)")
    for r in rows:
        if r["kind"] == "latency":
            print(f"{r['name']:<30} end-to-end {float(r['ms']) * 1e3:.1f} us (host clock, launch + sync included)")
        if r["kind"] == "host":
            print(f"{r['name']:<30} {float(r['ms']) * 1e3:.1f} us (host clock, alone)")
    if args.out:
        with open(args.out, "w") as f:
            w = csv.writer(f)
            w.writerow(["name", "mask", "attnkit_tflops", "flash", "cudnn", "flex"])
            for r, t in table:
                w.writerow([r["name"], r["mask"], r["tflops"], t.get("flash"), t.get("cudnn"), t.get("flex")])


if __name__ == "__main__":
    main()
