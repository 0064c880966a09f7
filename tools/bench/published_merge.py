#!/usr/bin/env python3
"""published_merge.py: what one ring step of the published Python rings costs beside its
attention kernel, on this GPU (needs PyTorch with CUDA).

ring-flash-attention and the USP authors' yunchang merge each block's output into an fp32
running output with PyTorch element-wise operations inside a TorchScript function
(update_out_and_lse); usp's schedule charges one fused merge of 12 bytes an element. This
times that merge as those codes write it, unfused (eager) and under TorchScript after its
fuser has had its warm-up calls, in the two forms the codes have had (the sigmoid form of
ring-flash-attention since 2024-04 and yunchang since 2024-08; the exp/log form before), for
a whole block and for half the rows merged into a slice and copied back (zigzag's half-query
steps, stripe's steps past the diagonal); beside it a device-to-device fp32 copy of the
output (the bandwidth anchor) and SDPA's flash and cuDNN kernels at the ring step's shapes, even
and odd (stripe's 8191-row calls): the kernels' rates on the pieces a ring step runs, against
the profiles' rates of whole 16K blocks. Bytes an element = time x the copy's bandwidth / elements: 12 is
usp's model, about 10 a fused merge, about 38 (sigmoid) or 34 (exp) the operations unfused.

    python3 tools/bench/published_merge.py [--seq 8192] [--heads 32] [--head-dim 128]
        [--iters 50] [--backends flash,cudnn] [--json FILE]
"""
import argparse
import json
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:   # --help works without it; a run says what is missing
    torch = F = None


def merge_sigmoid(out, lse, block_out, block_lse):
    # out, block_out: (B, S, H, D); lse: (B, S, H, 1) fp32; block_lse: (B, H, S) fp32
    block_out = block_out.to(torch.float32)
    block_lse = block_lse.transpose(-2, -1).unsqueeze(dim=-1)
    out = out - F.sigmoid(block_lse - lse) * (out - block_out)
    lse = lse - F.logsigmoid(lse - block_lse)
    return out, lse


def merge_exp(out, lse, block_out, block_lse):
    block_out = block_out.to(torch.float32)
    block_lse = block_lse.transpose(-2, -1).unsqueeze(dim=-1)
    new_lse = lse + torch.log(1 + torch.exp(block_lse - lse))
    out = torch.exp(lse - new_lse) * out + torch.exp(block_lse - new_lse) * block_out
    return out, new_lse


def timed(fn, iters, warmup=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / iters  # us a call


def kernels_per_call(fn, calls=5):
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    n = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    return n / calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", type=int, default=8192, help="tokens a rank holds (default 8192)")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--backends", default="flash,cudnn",
                    help="SDPA backends timed at the step shapes, comma-separated (default flash,cudnn)")
    ap.add_argument("--json", help="write the figures here as one JSON object")
    a = ap.parse_args()
    if a.seq < 4 or a.seq % 2 or a.heads < 1 or a.head_dim % 8 or not 8 <= a.head_dim <= 256 or a.iters < 1:
        print("published_merge.py: --seq even >= 4, --heads >= 1, --head-dim a multiple of 8 up to 256, "
              "--iters >= 1", file=sys.stderr)
        sys.exit(2)
    backends = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION"}
    chosen = [b for b in a.backends.split(",") if b]
    if not chosen or any(b not in backends for b in chosen):
        print("published_merge.py: --backends takes flash and/or cudnn", file=sys.stderr)
        sys.exit(2)
    if torch is None or not torch.cuda.is_available():
        print("published_merge.py: needs PyTorch with a CUDA device", file=sys.stderr)
        sys.exit(2)
    dev, S, H, D = "cuda", a.seq, a.heads, a.head_dim
    n = S * H * D
    g = torch.Generator(device=dev).manual_seed(1)
    out = torch.randn(1, S, H, D, device=dev, generator=g)
    lse = torch.randn(1, S, H, 1, device=dev, generator=g)
    blk = torch.randn(1, S, H, D, device=dev, generator=g).to(torch.bfloat16)
    blk_lse = torch.randn(1, H, S, device=dev, generator=g)
    half_blk, half_lse = blk[:, S // 2:].contiguous(), blk_lse[:, :, S // 2:].contiguous()
    dst = torch.empty_like(out)

    copy_us = timed(lambda: dst.copy_(out), a.iters)
    gbps = 2 * 4 * n / copy_us * 1e-3  # read + write, GB/s
    rows = [{"what": "fp32 copy of the output (anchor)", "us": copy_us, "kernels": kernels_per_call(lambda: dst.copy_(out)),
             "bytes_per_elem": 8.0}]

    def merge_row(name, f, sliced):
        if sliced:
            def call():
                sl = (slice(None), slice(S // 2, None))
                o, l = f(out[sl], lse[sl], half_blk, half_lse)
                out[sl], lse[sl] = o, l
            elems = n // 2
        else:
            def call():
                f(out, lse, blk, blk_lse)
            elems = n
        us = timed(call, a.iters)
        rows.append({"what": name, "us": us, "kernels": kernels_per_call(call),
                     "bytes_per_elem": us * gbps * 1e3 / elems})

    scripted = {"sigmoid": torch.jit.script(merge_sigmoid), "exp": torch.jit.script(merge_exp)}
    for form, f in (("sigmoid", merge_sigmoid), ("exp", merge_exp)):
        merge_row(f"merge, {form} form, eager", f, False)
        merge_row(f"merge, {form} form, TorchScript", scripted[form], False)
        merge_row(f"merge into half the rows, {form} form, TorchScript", scripted[form], True)
    first = lambda: blk.to(torch.float32)
    us = timed(first, a.iters)
    rows.append({"what": "first block: block_out.to(fp32)", "us": us, "kernels": kernels_per_call(first),
                 "bytes_per_elem": us * gbps * 1e3 / n})
    last = lambda: out.to(torch.bfloat16)
    us = timed(last, a.iters)
    rows.append({"what": "last: out.to(bf16)", "us": us, "kernels": kernels_per_call(last),
                 "bytes_per_elem": us * gbps * 1e3 / n})

    # SDPA's kernels at the ring step's shapes (H heads for K/V too: the FLOPs of grouped heads)
    kernels = []
    q = torch.randn(1, H, S, D, device=dev, dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, H, S, D, device=dev, dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, H, S, D, device=dev, dtype=torch.bfloat16, generator=g)
    shapes = [("full block", S, S, False), ("all queries, half the keys", S, S // 2, False),
              ("half the queries, all keys", S // 2, S, False), ("causal block", S, S, True),
              (f"causal block of {S - 1} (stripe)", S - 1, S - 1, True)]
    from torch.nn.attention import SDPBackend, sdpa_kernel
    for backend in chosen:
        for name, lq, lk, causal in shapes:
            qs, ks, vs = q[:, :, :lq], k[:, :, :lk], v[:, :, :lk]
            what = f"{backend}: {name}"
            try:
                with sdpa_kernel(getattr(SDPBackend, backends[backend])):
                    call = lambda: F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal)
                    us = timed(call, a.iters)
            except RuntimeError as e:
                kernels.append({"what": what, "error": str(e).splitlines()[0]})
                continue
            flops = 4.0 * lq * lk * H * D * (0.5 if causal else 1.0)
            kernels.append({"what": what, "backend": backend, "q": lq, "k": lk, "causal": causal, "us": us,
                          "tflops": flops / us * 1e-6})

    print(f"# {torch.cuda.get_device_name()}, PyTorch {torch.__version__}: S {S}, H {H}, D {D}, "
          f"{a.iters} calls each; copy anchor {gbps:.0f} GB/s")
    print(f"{'what':<52} {'us':>9} {'kernels':>8} {'B/elem':>7}")
    for r in rows:
        print(f"{r['what']:<52} {r['us']:9.1f} {r['kernels']:8.1f} {r['bytes_per_elem']:7.1f}")
    print(f"{'SDPA at the step shapes':<52} {'us':>9} {'TFLOP/s':>8}")
    for r in kernels:
        if "error" in r:
            print(f"{r['what']:<52} refused: {r['error']}")
        else:
            print(f"{r['what']:<52} {r['us']:9.1f} {r['tflops']:8.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "seq": S, "heads": H,
                       "head_dim": D, "copy_gbps": gbps, "merge": rows, "kernels": kernels}, f, indent=1)


if __name__ == "__main__":
    main()
