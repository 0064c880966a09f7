#!/usr/bin/env python3
"""traces/te-ring-whatif.py: what TransformerEngine's context-parallel ring costs beyond
the planner's USP ring, per mix of the USP report's LLAMA3-8B table on 2 x 8 A800
(usp-paper-a800x16-llama3-8b.json) and the ring rows of its LLAMA2-7B table on one node
(usp-paper-a800x8-llama2-7b.json, 16 micro-batches of 30K a step). Simulated arithmetic, not a measurement, not a fit.

Run from the repository root after tools/build: python3 traces/te-ring-whatif.py
It prints a Markdown table (traces/README.md, "The ring-heavy rows: what TransformerEngine's
ring costs"). The code read: TransformerEngine v1.3-v1.6 AttnFuncWithCP (identical ring,
transformer_engine/pytorch/attention.py), flash-attention v2.4-v2.5 mha_varlen_bwd
(csrc/flash_attn/flash_api.cpp, flash_bwd_launch_template.h); sim/SOURCES.md, "Training
frameworks' defaults".

Per ring step, on the rank with the whole query block (every step has one), per layer:
  (1) HBM bytes TransformerEngine moves that the planner's USP steps do not, less what the
      planner charges that TransformerEngine does not (at the a800 profile's 1780 GB/s):
      forward: the output corrections after the loop, 6 B per query element (bf16 read of the
      step's output, read and write of the output; the LSE correction is fp64 but per row),
      against the planner's fp32 merge in the loop, 12 B;
      backward: flash-attention's per-call dot(dO, O) (4 B), fp32 dQ accumulator cleared (4 B)
      and converted (6 B), TransformerEngine's dQ add (6 B) per query element, its dK/dV add
      (6 B per K/V element, both) and the half-K/V copy (4 B per K/V element), against the
      planner's fp32 dK/dV block init and accumulation (32 B per K/V element);
  (2) flash-attention's backward with grouped K/V heads (GQA) writes dK, dV for every query
      head and sums them per group (at::sum_out): about 8 B per query element and step;
  (3) kernel launches: about 4 per forward step and 8 per backward step against the
      planner's 2 and 3, at the profile's 5 us each;
  (4) the backward's wire: TransformerEngine sends K, V and the running dK, dV in one bf16
      message (2 K/V-sized tensors a step) where the planner sends K, V in bf16 and dK, dV in
      fp32 (3): at most a third of the planner's backward ring time, and no more than the
      backward communication the planner leaves exposed (usp run --no-numerics on a800-2n,
      the attention of TP rank 0's GPUs).
"""
import json, os, subprocess, tempfile

USP = os.path.join('build', 'usp')
HBM, LAUNCH, LAYERS, H, D = 1780e9, 5e-6, 32, 32, 128
# seq, tp, ulysses, ring, predicted step ms and error of `usp validate --published` (main, 2026-12-07);
# LLAMA3-8B has 8 K/V heads, LLAMA2-7B 32; the rows below ROWS_7B run 16 micro-batches a step
ROWS = [(65536, 1, 8, 2, 2615.93, 5.3), (65536, 1, 4, 4, 2656.92, 2.8), (65536, 1, 2, 8, 2759.47, 5.1),
        (65536, 1, 1, 16, 2711.89, 13.6), (65536, 8, 1, 2, 2570.17, 12.6), (65536, 4, 2, 2, 2641.38, 16.1),
        (65536, 4, 1, 4, 2639.80, 16.0), (65536, 2, 1, 8, 2713.84, 36.5),
        (81920, 1, 8, 2, 3546.58, 2.3), (81920, 1, 4, 4, 3590.58, 0.1), (81920, 1, 2, 8, 3615.74, 5.6),
        (81920, 1, 1, 16, 3573.58, 12.7), (81920, 4, 1, 4, 3593.43, 14.3), (81920, 8, 1, 2, 3575.29, 9.9)]
ROWS_7B = [(30720, 1, 1, 8, 20782.76, 19.3), (30720, 2, 1, 4, 20325.10, 17.3)]


def exposed_backward(tmp, L, tp, u, r, hkv, platform):
    """Largest backward time a rank waits for communication, and its ring transfers' time (s)."""
    hm, tr = os.path.join(tmp, 'hosts'), os.path.join(tmp, 'trace.json')
    with open(hm, 'w') as f:
        for g in range(u * r):  # TP innermost: TP rank 0 of USP rank g is GPU g * tp
            gpu = g * tp
            f.write(('node%d-gpu%d\n' % (gpu // 8, gpu % 8)) if platform == 'a800-2n' else ('gpu%d\n' % gpu))
    subprocess.run([USP, 'run', '--no-numerics', '--platform', platform, '--profile', 'a800', '--hostmap', hm,
                    '--seq', str(L), '--heads', str(H // tp), '--kv-heads', str(hkv // tp), '--head-dim', str(D),
                    '--dtype', 'bf16', '--ulysses', str(u), '--ring', str(r), '--trace', tr],
                   check=True, capture_output=True)
    ev = [e for e in json.load(open(tr))['traceEvents'] if e.get('ph') == 'X' and e['name'].startswith('bwd')]
    worst, ring = 0.0, 0.0
    for pid in sorted({e['pid'] for e in ev}):
        xs = [e for e in ev if e['pid'] == pid]
        span = max(e['ts'] + e['dur'] for e in xs) - min(e['ts'] for e in xs)
        waited = span - sum(e['dur'] for e in xs if e['tid'] == 0)
        if waited > worst:
            worst = waited
            ring = sum(e['dur'] for e in xs if '.kv' in e['name'] or '.dkv' in e['name'])
    return worst * 1e-6, ring * 1e-6


def main():
    print('| seq | tp x ulysses x ring | error now | (1) HBM ms/step | (2) GQA dK/dV ms/step | (3) launches ms/step '
          '| (4) bf16 dK/dV wire ms/step | sum ms/step | error with (1)-(4) |')
    print('|---|---|---|---|---|---|---|---|---|')
    with tempfile.TemporaryDirectory() as tmp:
        for L, tp, u, r, step_ms, err, hkv, mb, platform in (
                [row + (8, 1, 'a800-2n') for row in ROWS] + [row + (32, 16, 'a800x8') for row in ROWS_7B]):
            q = L / r * H / (tp * u) * D    # query elements per rank (also O, dO, dQ)
            kv = L / r * hkv / (tp * u) * D  # K (or V) elements per rank
            mem = ((6 - 12) * q + (14 + 6) * q + 12 * kv + 4 * kv - 32 * kv) * r / HBM * LAYERS * mb
            gqa = (8 * q * r / HBM * LAYERS * mb) if hkv < H else 0.0
            launch = ((4 - 2) + (8 - 3)) * r * LAUNCH * LAYERS * mb
            exposed, ring = exposed_backward(tmp, L, tp, u, r, hkv, platform)
            wire = -min(exposed, ring / 2 / 3) * LAYERS * mb  # kv and dkv share the link: half the summed time
            tot = mem + gqa + launch + wire
            new = ((1 + err / 100) * step_ms / (step_ms + tot * 1e3) - 1) * 100
            print('| %dK | %d x %d x %d | %+.1f%% | %+.0f | %+.0f | %+.0f | %+.0f | %+.0f | %+.1f%% |'
                  % (L // 1024, tp, u, r, err, mem * 1e3, gqa * 1e3, launch * 1e3, wire * 1e3, tot * 1e3, new))


if __name__ == '__main__':
    main()
