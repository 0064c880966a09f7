#!/usr/bin/env python3
"""predict_bench_usp.py: the simulator's prediction of tools/bench-usp's cases.

tools/bench-usp measures, on 2 GPUs: causal, bf16, batch 1, 32 heads, D 128,
forward + backward, at 32K, 64K and 128K tokens, the whole problem on 1 GPU,
ring 2 with every ring_impl (basic, zigzag, stripe, allgather) and ulysses 2.
This predicts the same cases with `usp run --no-numerics` on the 2 x H200
platform and the H200 kernel profile that traces/ was calibrated with, for
the schedule of today (double-buffered dK/dV, 16-bit wire) and, beside it,
for the schedule the recorded runs used (--dkv-serial --wire fp32), so a
re-measurement has a prediction to meet. Two more columns swap the profile's
bf16 D-128 kernel rates: for today's kernels as `usp calibrate --gpus 1`
measured them (--kernels, default sim/profiles/h100-calibrated.json), and for cuDNN's (what the schedule gives once the kernels
reach cuDNN's speed); each 2-GPU row is set beside PyTorch context parallel's
measured fwd+bwd on 2 x H200 over cuDNN (ANCHORS.md). All times are simulated.

  tools/bench/predict_bench_usp.py [--usp build/usp] [--seqs 32768,65536,131072] [--kernels PROFILE.json] [--json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLATFORM = "sim/platforms/h200x2-calibrated.xml"
PROFILE = "h200-calibrated"
CASES = [("1gpu", 1, 1, "basic"), ("ring2-basic", 1, 2, "basic"), ("ring2-zigzag", 1, 2, "zigzag"),
         ("ring2-stripe", 1, 2, "stripe"), ("ring2-allgather", 1, 2, "allgather"), ("ulysses2", 2, 1, "basic")]


CUDNN_FWD, CUDNN_BWD = 625.0, 534.0  # TFLOP/s, ANCHORS.md: cuDNN, bf16, L 16384, D 128, non-causal
# Today's kernels: the bf16 D-128 rates (fixed times, short lengths) of a profile `usp calibrate
# --gpus 1` measured, and their masked-block efficiencies, by default sim/profiles/h100-calibrated.json
# (one H100, 2026-12-07; the calibrated
# H200 profile's 404.9 / 324.3 TFLOP/s are the kernels of the calibration traces, 2026-11-30).
# An H100's rates stand for the H200's: the same kernels measured on both the same day ran
# within the few percent a card drifts within one process (gpu/NOTES.md, v15).
KERNELS = os.path.join(ROOT, "sim", "profiles", "h100-calibrated.json")
# PyTorch context parallel, ring of 2 over SDPA cuDNN, fwd+bwd ms on 2 x H200 (ANCHORS.md)
CP_CUDNN = {32768: 35.6, 65536: 126.8, 131072: 484.2}


def rate_profile(directory, label, kernel, masked=None):
    """A copy of the calibrated profile with its bf16 D-128 kernel entry updated by `kernel`
    (fwd, bwd and any of fixed times and short lengths) and, where given, its masked-block
    efficiencies."""
    with open(os.path.join(ROOT, "sim", "profiles", PROFILE + ".json")) as f:
        prof = json.load(f)
    prof["name"] = PROFILE + "-" + label
    prof["attention_tflops"]["bf16"]["128"].update(kernel)
    if masked:
        prof["masked_block_efficiency"] = masked
    path = os.path.join(directory, label + ".json")
    with open(path, "w") as f:
        json.dump(prof, f)
    return path


def predict(usp, seq, ulysses, ring, impl, older, profile=PROFILE):
    cmd = [usp, "run", "--no-numerics", "--platform", os.path.join(ROOT, PLATFORM), "--profile", profile,
           "--dtype", "bf16", "--causal", "--seq", str(seq), "--heads", "32", "--head-dim", "128",
           "--ulysses", str(ulysses), "--ring", str(ring), "--ring-impl", impl, "--json"]
    if older:
        cmd += ["--dkv-serial", "--wire", "fp32"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        sys.exit("predict_bench_usp: %s: %s" % (" ".join(cmd), out.stderr.strip()))
    sim = json.loads(out.stdout)["sim"]
    return sim["time_fwd_s"] * 1e3, sim["time_total_s"] * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--usp", default=os.path.join(ROOT, "build", "usp"))
    p.add_argument("--seqs", default="32768,65536,131072")
    p.add_argument("--json", action="store_true")
    p.add_argument("--kernels", default=KERNELS,
                   help="profile whose bf16 D-128 kernel rates are today's (default "
                        "sim/profiles/h100-calibrated.json)")
    a = p.parse_args()
    try:
        with open(a.kernels) as f:
            kp = json.load(f)
        k = kp["attention_tflops"]["bf16"]["128"]
        # the whole entry (a field it lacks is 0, as in a profile), and the causal diagonal's
        # efficiencies of the same kernels
        today = {f: float(k.get(f, 0)) for f in ("fwd_fixed_us", "bwd_fixed_us", "fwd_short_keys", "bwd_short_rows")}
        today.update(fwd=float(k["fwd"]), bwd=float(k["bwd"]))
        today_masked = kp.get("masked_block_efficiency")
    except (OSError, ValueError, KeyError, TypeError) as e:
        print("predict_bench_usp: --kernels %s: no bf16 D-128 rates (%s)" % (a.kernels, e), file=sys.stderr)
        sys.exit(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fast = rate_profile(tmp, "at-cudnn-rates", {"fwd": CUDNN_FWD, "bwd": CUDNN_BWD})
        today_path = rate_profile(tmp, "at-todays-rates", today, today_masked)
        for seq in [int(s) for s in a.seqs.split(",")]:
            for name, u, r, impl in CASES:
                fwd, total = predict(a.usp, seq, u, r, impl, False)
                ofwd, ototal = predict(a.usp, seq, u, r, impl, True)
                tfwd, ttotal = predict(a.usp, seq, u, r, impl, False, today_path)
                cfwd, ctotal = predict(a.usp, seq, u, r, impl, False, fast)
                rows.append({"seq": seq, "case": name, "fwd_ms": fwd, "total_ms": total,
                             "older_fwd_ms": ofwd, "older_total_ms": ototal,
                             "today_rate_fwd_ms": tfwd, "today_rate_total_ms": ttotal,
                             "cudnn_rate_fwd_ms": cfwd, "cudnn_rate_total_ms": ctotal,
                             "cp_cudnn_total_ms": None if name == "1gpu" else CP_CUDNN.get(seq)})
    if a.json:
        print(json.dumps({"platform": PLATFORM, "profile": PROFILE, "kernels": a.kernels,
                          "today_rates_tflops": [today["fwd"], today["bwd"]],
                          "today_fixed_us": [today["fwd_fixed_us"], today["bwd_fixed_us"]],
                          "today_masked_block_efficiency": today_masked,
                          "today_short_lengths": [today["fwd_short_keys"], today["bwd_short_rows"]],
                          "cudnn_rates_tflops": [CUDNN_FWD, CUDNN_BWD], "rows": rows}, indent=1))
        return
    one = {row["seq"]: row["total_ms"] for row in rows if row["case"] == "1gpu"}
    print("simulated: %s, profile %s; causal bf16, B 1, H 32, D 128" % (PLATFORM, PROFILE))
    print("today's rates: %.0f / %.0f TFLOP/s (fwd / bwd, %s), cuDNN's: %.0f / %.0f; / CP: over PyTorch CP over "
          "cuDNN's measured fwd+bwd" % (today["fwd"], today["bwd"], os.path.relpath(a.kernels, ROOT), CUDNN_FWD, CUDNN_BWD))
    print("%7s %-16s %9s %12s %9s %14s %22s %6s %22s %6s" % (
        "L", "case", "fwd ms", "fwd+bwd ms", "scaling", "older fwd+bwd", "today fwd / fwd+bwd", "/ CP",
        "cuDNN fwd / fwd+bwd", "/ CP"))
    cp = lambda row, key: "%6.2f" % (row[key] / row["cp_cudnn_total_ms"]) if row["cp_cudnn_total_ms"] else "%6s" % ""
    for row in rows:
        scale = "" if row["case"] == "1gpu" else "%.1f%%" % (100 * one[row["seq"]] / (2 * row["total_ms"]))
        print("%7d %-16s %9.2f %12.2f %9s %14.2f %10.2f / %9.2f %s %10.2f / %9.2f %s" % (
            row["seq"], row["case"], row["fwd_ms"], row["total_ms"], scale, row["older_total_ms"],
            row["today_rate_fwd_ms"], row["today_rate_total_ms"], cp(row, "today_rate_total_ms"),
            row["cudnn_rate_fwd_ms"], row["cudnn_rate_total_ms"], cp(row, "cudnn_rate_total_ms")))


if __name__ == "__main__":
    main()
