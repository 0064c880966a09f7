#!/usr/bin/env python3
"""bench_usp_torch_cp.py: PyTorch's own context parallel, the baseline of tools/bench-usp.

torch.distributed.tensor.experimental.context_parallel: ring attention over
SDPA (FLASH_ATTENTION or CUDNN_ATTENTION), causal with its default load
balancing, bf16, batch 1, (B, H, L, D) buffers sharded on L. Run it with
torchrun, one process per GPU:

  python3 -m torch.distributed.run --nproc_per_node 2 tools/bench/bench_usp_torch_cp.py \
      --seqs 32768,65536,131072 --json cp.json

Forward is timed with gradients on (what a training step runs); forward+
backward calls out.backward(dout). Per run, the slowest rank's CUDA-event
time; the median over --iters runs after --warmup. One case that fails
(memory, a backend refusing the shape) is recorded with its error and the
others go on.
"""
import argparse
import json
import os
import statistics
import sys
import traceback

import torch
import torch.distributed as dist
import torch.nn.functional as F


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--seqs", default="32768,65536,131072")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--backends", default="flash,cudnn")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--rotate", default="", help="allgather or alltoall (default: PyTorch's)")
    p.add_argument("--json", default="")
    return p.parse_args()


def sdpa_backend(name):
    from torch.nn.attention import SDPBackend
    return {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[name]


def slowest_rank_ms(fn, warmup, iters):
    """Median over runs of the slowest rank's time of fn(), in ms."""
    times = []
    for i in range(warmup + iters):
        torch.cuda.synchronize()
        dist.barrier()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        t = torch.tensor([a.elapsed_time(b)], device="cuda")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if i >= warmup:
            times.append(t.item())
    return statistics.median(times)


def bench_one(mesh, seq, backend, args):
    from torch.distributed.tensor.experimental import context_parallel
    from torch.nn.attention import sdpa_kernel

    shape = (1, args.heads, seq, args.head_dim)
    gen = torch.Generator(device="cuda").manual_seed(1234)
    q, k, v, dout = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(4))
    result = {"seq": seq, "backend": backend}
    with sdpa_kernel([sdpa_backend(backend)]):
        with context_parallel(mesh, buffers=[q, k, v, dout], buffer_seq_dims=[2, 2, 2, 2],
                              no_restore_buffers={q, k, v, dout}):
            qs, ks, vs = (t.detach().requires_grad_() for t in (q, k, v))

            def forward():
                return F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)

            def forward_backward():
                for t in (qs, ks, vs):
                    t.grad = None
                forward().backward(dout)

            result["fwd_ms"] = slowest_rank_ms(forward, args.warmup, args.iters)
            result["fwdbwd_ms"] = slowest_rank_ms(forward_backward, args.warmup, args.iters)
    return result


def main():
    args = parse()
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cuda", (world,), mesh_dim_names=("cp",))
    if args.rotate:
        from torch.distributed.tensor.experimental._attention import set_rotate_method
        set_rotate_method(args.rotate)
    results = []
    for seq in [int(s) for s in args.seqs.split(",")]:
        for backend in args.backends.split(","):
            try:
                r = bench_one(mesh, seq, backend, args)
            except Exception as e:  # one case failing must not end the others
                if rank == 0:
                    traceback.print_exc()
                r = {"seq": seq, "backend": backend, "error": f"{type(e).__name__}: {e}"[:300]}
            results.append(r)
            if rank == 0:
                print(f"torch-cp {backend:5s} L={seq:<7d} " +
                      (f"fwd {r['fwd_ms']:9.3f} ms  fwd+bwd {r['fwdbwd_ms']:9.3f} ms" if "fwd_ms" in r
                       else f"error: {r['error']}"), flush=True)
            torch.cuda.empty_cache()
    if rank == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump({"gpus": world, "torch": torch.__version__, "heads": args.heads, "head_dim": args.head_dim,
                       "rotate": args.rotate or "default", "warmup": args.warmup, "iters": args.iters,
                       "cases": results}, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
