#!/usr/bin/env python3
"""tools/bench/predict_masks.py on bench-gpu --mask's JSON (tests/data/bench_mask_h100_v15.json,
one H100's figures of gpu/NOTES.md v15): every masked case and its causal anchor predicted,
the anchor the same simulation for every mask of one head dim, the JSON read back; a file
without cases and a mask bench-gpu does not write refused with exit 2.

  test_predict_masks.py USP_BINARY
"""
import json
import math
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "bench", "predict_masks.py")
DATA = os.path.join(ROOT, "tests", "data", "bench_mask_h100_v15.json")
PROFILE = os.path.join(ROOT, "sim", "profiles", "h100-calibrated.json")


def fail(why):
    print("test_predict_masks: " + why, file=sys.stderr)
    sys.exit(1)


def run(usp, path, *extra):
    return subprocess.run([sys.executable, SCRIPT, path, "--profile", PROFILE, "--usp", usp, *extra],
                          capture_output=True, text=True)


def main():
    usp = sys.argv[1]
    out = run(usp, DATA, "--json")
    if out.returncode != 0:
        fail("exit %d: %s" % (out.returncode, out.stderr.strip()))
    d = json.loads(out.stdout)
    rows = d["rows"]
    if len(rows) != 8 or sum(r["held_out"] for r in rows) != 4:
        fail("%d rows, %d held out (4 masks and their 4 anchors)" % (len(rows), sum(r["held_out"] for r in rows)))
    for r in rows:
        for k in ("fwd_sim_ms", "bwd_sim_ms"):
            if not (math.isfinite(r[k]) and r[k] > 0):
                fail("%s D=%d %s: %r" % (r["mask"], r["D"], k, r[k]))
        if abs(r["fwd_err_pct"] - 100 * (r["fwd_sim_ms"] / r["fwd_ms"] - 1)) > 1e-9:
            fail("%s: the forward error is not (simulated - measured) / measured" % r["mask"])
    for D in (64, 128):
        anchors = {(r["fwd_sim_ms"], r["bwd_sim_ms"]) for r in rows if not r["held_out"] and r["D"] == D}
        if len(anchors) != 1:
            fail("D=%d: the causal anchor simulated %d ways" % (D, len(anchors)))
    # a masked case costs less than its causal anchor: the mask keeps fewer pairs
    for m, c in zip(rows[0::2], rows[1::2]):
        if not (m["fwd_sim_ms"] < c["fwd_sim_ms"] and m["bwd_sim_ms"] < c["bwd_sim_ms"]):
            fail("%s D=%d: not below the causal anchor" % (m["mask"], m["D"]))
    held = d["held_out_max_abs_pct"]
    if abs(held["bwd_err_pct"] - max(abs(r["bwd_err_pct"]) for r in rows if r["held_out"])) > 1e-9:
        fail("held-out summary %r" % held)
    with tempfile.TemporaryDirectory() as tmp:
        empty = os.path.join(tmp, "empty.json")
        with open(empty, "w") as f:
            json.dump({"device": "x", "results": []}, f)
        bad = os.path.join(tmp, "bad.json")
        with open(DATA) as f:
            doc = json.load(f)
        doc["masked"][0]["mask"] = "slices:1"
        with open(bad, "w") as f:
            json.dump(doc, f)
        for path, words in ((empty, "no 'masked' cases"), (bad, "docs:L1,L2,... or window:LEFT"),
                            (os.path.join(tmp, "none.json"), "none.json")):
            out = run(usp, path)
            if out.returncode != 2 or words not in out.stderr or len(out.stderr.strip().splitlines()) != 1:
                fail("%s: exit %d, %r (want 2 and one line with %r)" % (os.path.basename(path), out.returncode,
                                                                      out.stderr, words))
    print("predict_masks: %d rows; held out: largest |error| forward %.1f%%, backward %.1f%% (simulated)"
          % (len(rows), held["fwd_err_pct"], held["bwd_err_pct"]))


if __name__ == "__main__":
    main()
