#!/usr/bin/env python3
"""predict_masks.py: the simulator against `tools/bench-gpu --mask`, case by case.

bench-gpu's masked mode times our kernels on one GPU under per-row masks (packed documents,
causal windows) and our causal kernel on the same shape beside them. This re-predicts each
of its cases with `usp run --no-numerics` (one rank, the device profile given) and prints
measured against simulated:
  forward   bench-gpu's fwd_ms (the call: mask plan and kernel) against the attn_fwd steps;
  backward  its bwd_kernel_ms (DELTA and the kernel, without the caller's zeroing) against
            the attn_bwd and bwd_prep steps.
The masks are rebuilt as bench-gpu builds them: docs:L1,L2,... repeats the lengths until L
is covered (the last document cut short), window:LEFT is --window LEFT,0; causal inside.
A profile from the same card's `usp calibrate` makes the masked rows held out (calibrate
times full and causal blocks and packed documents of equal length, not these masks) and
the causal rows its own calibration. Every predicted figure is simulated.

    tools/bench/predict_masks.py BENCH_MASK.json --profile PROFILE [--usp build/usp]
        [--platform h100x8] [--json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fail(msg):
    print(f"predict_masks.py: {msg}", file=sys.stderr)
    sys.exit(2)


def mask_args(spec, L):
    """usp run's options for bench-gpu's mask spec over L tokens."""
    kind, _, arg = spec.partition(":")
    try:
        values = [int(x) for x in arg.split(",")]
    except ValueError:
        values = []
    if kind == "docs" and values and min(values) > 0:
        lens, total, i = [], 0, 0
        while total < L:
            n = min(values[i % len(values)], L - total)
            lens.append(n)
            total, i = total + n, i + 1
        return ["--seqlens", ",".join(map(str, lens))]
    if kind == "window" and len(values) == 1 and values[0] >= 0:
        return ["--window", f"{values[0]},0"]
    fail(f"mask '{spec}': docs:L1,L2,... or window:LEFT")


def simulate(usp, platform, profile, L, D, H, B, extra, tmp):
    """Simulated ms of the forward's attention steps and of the backward's DELTA + attention."""
    trace = os.path.join(tmp, "t.json")
    cmd = [usp, "run", "--no-numerics", "--platform", platform, "--profile", profile, "--causal",
           "--batch", str(B), "--seq", str(L), "--heads", str(H), "--head-dim", str(D), "--dtype", "bf16",
           "--ulysses", "1", "--ring", "1", "--trace", trace] + extra
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"usp run exit {out.returncode}: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    with open(trace) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    us = lambda *names: sum(e.get("dur", 0) for e in events if e.get("ph") == "X" and e.get("pid") == 0 and
                            e.get("cat") in names)
    return us("attn_fwd") * 1e-3, us("attn_bwd", "bwd_prep") * 1e-3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="See the top of the file for what is compared.")
    ap.add_argument("measured", help="bench-gpu --mask ... --json FILE")
    ap.add_argument("--profile", required=True, help="device profile: a file (usp calibrate --profile-out) or a name")
    ap.add_argument("--usp", default=os.path.join(ROOT, "build", "usp"), help="the usp binary (default build/usp)")
    ap.add_argument("--platform", default="h100x8", help="platform preset (one rank of it is used; default h100x8)")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    a = ap.parse_args()
    try:
        with open(a.measured) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{a.measured}: {e}")
    cases = doc.get("masked") if isinstance(doc, dict) else None
    if not cases:
        fail(f"{a.measured}: no 'masked' cases (bench-gpu --mask ... --json FILE writes them)")
    if not os.access(a.usp, os.X_OK):
        fail(f"{a.usp}: not an executable usp (build it, or pass --usp)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in cases:
            try:
                spec, L, D, H, B = c["mask"], int(c["L"]), int(c["D"]), int(c["H"]), int(c["B"])
            except (KeyError, TypeError, ValueError):
                fail(f"{a.measured}: a case without mask, L, D, H, B")
            if sys.stderr.isatty():
                print(f"\rpredict_masks.py: {spec[:40]} L={L} D={D} ...", end="", file=sys.stderr, flush=True)
            for name, extra in (("ours", mask_args(spec, L)), ("ours_causal", [])):
                m = c.get(name)
                if not m or "fwd_ms" not in m or "bwd_kernel_ms" not in m:
                    continue
                fwd, bwd = simulate(a.usp, a.platform, a.profile, L, D, H, B, extra, tmp)
                rows.append({"mask": spec if name == "ours" else "causal (anchor)", "L": L, "D": D,
                             "held_out": name == "ours", "fwd_ms": m["fwd_ms"], "fwd_sim_ms": fwd,
                             "fwd_err_pct": 100 * (fwd / m["fwd_ms"] - 1), "bwd_ms": m["bwd_kernel_ms"],
                             "bwd_sim_ms": bwd, "bwd_err_pct": 100 * (bwd / m["bwd_kernel_ms"] - 1)})
        if sys.stderr.isatty():
            print("\r" + " " * 79 + "\r", end="", file=sys.stderr)
    if not rows:
        fail(f"{a.measured}: no case has fwd_ms and bwd_kernel_ms")
    held = [r for r in rows if r["held_out"]]
    summary = {k: max(abs(r[k]) for r in held) if held else None for k in ("fwd_err_pct", "bwd_err_pct")}
    if a.json:
        json.dump({"measured": a.measured, "device": doc.get("device"), "profile": a.profile,
                   "platform": a.platform, "rows": rows, "held_out_max_abs_pct": summary}, sys.stdout, indent=1)
        print()
        return
    print(f"# measured: {doc.get('device', '?')} ({a.measured}); simulated: profile {a.profile}, one rank of "
          f"{a.platform}")
    print(f"{'mask':>28} {'L':>6} {'D':>4} | {'fwd ms':>7} {'sim':>7} {'err':>7} | {'bwd ms':>7} {'sim':>7} "
          f"{'err':>7}")
    for r in rows:
        print(f"{r['mask'][:28]:>28} {r['L']:>6} {r['D']:>4} | {r['fwd_ms']:7.3f} {r['fwd_sim_ms']:7.3f} "
              f"{r['fwd_err_pct']:+6.1f}% | {r['bwd_ms']:7.3f} {r['bwd_sim_ms']:7.3f} {r['bwd_err_pct']:+6.1f}%")
    if held:
        print(f"held out (the masks): largest |error| forward {summary['fwd_err_pct']:.1f}%, "
              f"backward {summary['bwd_err_pct']:.1f}% (simulated against measured)")


if __name__ == "__main__":
    main()
