#!/usr/bin/env python3
"""The row tables of traces/README.md and sim/plan/README.md against `usp validate --published`:
every row those pages print (found by its measured value) shows today's prediction, so a change
to the simulator that moves a published row cannot leave the pages behind. The same for the
held-out nccl-tests files (`usp nccl --compare`): each file's row in traces/README.md and each
held-out class's row in sim/README.md show today's mean and largest |error|.

    test_published_docs.py USP SOURCE_DIR
"""
import glob
import json
import os
import subprocess
import sys

usp, root = sys.argv[1], sys.argv[2]
out = subprocess.run([usp, "validate", "--published", f"{root}/traces/published", "--quiet", "--json"],
                     check=True, capture_output=True, text=True).stdout
tables = json.loads(out)["tables"]
rows = [line for page in ("traces/README.md", "sim/plan/README.md")
        for line in open(f"{root}/{page}", encoding="utf-8") if line.startswith("| ")]

stale, found = [], 0
for t in tables:
    attention = t["metric"] == "iters_per_s"
    for r in t["rows"]:
        if r["predicted"] is None:
            continue
        # attention rows print "| measured | predicted |", training rows "| measured (MFU) | later | predicted"
        measured = f"| {r['measured']:.3f} |" if attention else f"| {r['measured']:.1f} ("
        predicted = f"| {r['predicted']:.3f} |" if attention else f"| {r['predicted']:.1f}"
        lines = [line for line in rows if measured in line]
        if not lines:
            continue  # a row these pages do not print
        found += 1
        if not any(predicted in line and f"{r['error_pct']:+.1f}%" in line for line in lines):
            stale.append(f"{t['table']}: {r['label']}: measured {r['measured']}, predicted today "
                         f"{r['predicted']:.3f} ({r['error_pct']:+.1f}%); the page: {lines[0].strip()}")

# held-out nccl-tests files: "| `FILE` | ... | rows | mean% | max% |" in traces/README.md
nccl_dir = f"{root}/traces/published/nccl"
held = []
for path in sorted(glob.glob(f"{nccl_dir}/*.json")):
    with open(path, encoding="utf-8") as f:
        if not json.load(f).get("held_out"):
            continue
    c = json.loads(subprocess.run([usp, "nccl", "--compare", path, "--json"], check=True, capture_output=True,
                                  text=True).stdout)
    held.append(path)
    name = os.path.basename(path)
    want = f"| {c['counted']} | {100 * c['mean_abs_error']:.1f}% | {100 * c['max_abs_error']:.1f}% |"
    lines = [line for line in rows if f"| `{name}` |" in line]
    found += 1
    if not lines or not any(want in line for line in lines):
        stale.append(f"traces/README.md: {name}: today {want.strip()}; the page: "
                     f"{lines[0].strip() if lines else 'no row'}")
if held:
    summary = json.loads(subprocess.run([usp, "nccl", "--compare", *held, "--json"], check=True,
                                        capture_output=True, text=True).stdout)["summary"]["classes"]
    sim_rows = [line for line in open(f"{root}/sim/README.md", encoding="utf-8") if line.startswith("| ")]
    for k in summary:
        want = f"| {k['rows']} | {100 * k['mean_abs_error']:.1f}% | {100 * k['max_abs_error']:.1f}% | " \
               f"{k['rows_within_bar']} of {k['rows']} |"
        found += 1
        if not any(want in line for line in sim_rows):
            stale.append(f"sim/README.md: held-out {k['class']}: today {want}")
print(f"{found} published rows printed in the pages, {len(stale)} stale")
for s in stale:
    print("stale:", s)
sys.exit(1 if stale or found == 0 else 0)
