#!/usr/bin/env python3
"""The --json of tools/bench/predict_bench_usp.py, read back with json: every case of one
length, simulated times positive, each 2-GPU row beside CP over cuDNN, today's kernel rates
those of the profile it names; a --kernels file without rates refused with exit 2.

  test_predict_bench_usp.py USP_BINARY
"""
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "bench", "predict_bench_usp.py")


def fail(why):
    print("test_predict_bench_usp: " + why, file=sys.stderr)
    sys.exit(1)


def main():
    usp = sys.argv[1]
    out = subprocess.run([sys.executable, SCRIPT, "--usp", usp, "--seqs", "32768", "--json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        fail("exit %d: %s" % (out.returncode, out.stderr.strip()))
    d = json.loads(out.stdout)
    cases = [r["case"] for r in d["rows"]]
    if cases != ["1gpu", "ring2-basic", "ring2-zigzag", "ring2-stripe", "ring2-allgather", "ulysses2"]:
        fail("cases %s" % cases)
    for r in d["rows"]:
        for k in ("fwd_ms", "total_ms", "older_total_ms", "today_rate_total_ms", "cudnn_rate_total_ms"):
            if not (isinstance(r[k], float) and math.isfinite(r[k]) and r[k] > 0):
                fail("%s %s: %r" % (r["case"], k, r[k]))
        if (r["cp_cudnn_total_ms"] is None) != (r["case"] == "1gpu"):
            fail("%s: CP over cuDNN %r" % (r["case"], r["cp_cudnn_total_ms"]))
    with open(os.path.join(ROOT, "sim", "profiles", "h100-calibrated.json")) as f:
        k = json.load(f)["attention_tflops"]["bf16"]["128"]
    if d["today_rates_tflops"] != [k["fwd"], k["bwd"]]:
        fail("today's rates %s, the profile's %s" % (d["today_rates_tflops"], [k["fwd"], k["bwd"]]))
    bad = subprocess.run([sys.executable, SCRIPT, "--usp", usp, "--kernels", os.path.join(ROOT, "README.md")],
                         capture_output=True, text=True)
    if bad.returncode != 2 or len(bad.stderr.strip().splitlines()) != 1:
        fail("a --kernels file without rates: exit %d, %r" % (bad.returncode, bad.stderr))
    print("predict_bench_usp --json: %d cases read back" % len(cases))


if __name__ == "__main__":
    main()
