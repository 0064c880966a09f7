#!/usr/bin/env python3
"""tools/nccl-log2json on nccl-tests output: two tests of one log (the ranks
counted from their "#  Rank" lines, and per node from their hosts; every
out-of-place row, a warning between
rows skipped), read back by `usp nccl --compare` with the same rows; a log
without a table, an unknown collective and a bad --table-platform refused with
exit 2 and one line.

  test_nccl_log2json.py USP_BINARY
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "nccl-log2json")

HEAD = """# nccl-tests version 2.17.8 nccl-headers=22902 nccl-library=22902
# Collective test starting: {name}
# nThread 1 nGpus 1 minBytes 1048576 maxBytes 4194304 step: 2(factor) warmup iters: 5 iters: 20 agg iters: 1 validation: 1 graph: 0
#
# Using devices
{ranks}#
#                                                              out-of-place                       in-place
#       size         count      type   redop    root     time   algbw   busbw  #wrong     time   algbw   busbw  #wrong
#        (B)    (elements)                               (us)  (GB/s)  (GB/s)             (us)  (GB/s)  (GB/s)
"""
RANK = "#  Rank {r:2d} Group  0 Pid {pid} on node{n} device  {d} [0000:1b:00] NVIDIA H100 80GB HBM3\n"
ROWS = {
    "all_reduce_perf": ["     1048576        262144     float     sum      -1    40.00   26.21   45.88       0    39.00   26.89   47.05       0\n",
                        "     2097152        524288     float     sum      -1    60.00   34.95   61.16       0    59.00   35.54   62.20       0\n",
                        "NCCL WARN a line of NCCL's own between the rows\n",
                        "     4194304       1048576     float     sum      -1   100.00   41.94   73.40       0    99.00   42.37   74.14       0\n"],
    "alltoall_perf": ["     1048576        262144     float    none      -1    80.00   13.11   12.29     N/A    81.00   12.95   12.14     N/A\n"],
}


def fail(why):
    print("test_nccl_log2json: " + why, file=sys.stderr)
    sys.exit(1)


def log(name, ranks):
    r = "".join(RANK.format(r=k, pid=1000 + k, n=k // 8, d=k % 8) for k in range(ranks))
    return HEAD.format(name=name, ranks=r) + "".join(ROWS[name]) + "# Avg bus bandwidth    : 60.0\n#\n"


def convert(paths, *extra):
    return subprocess.run([sys.executable, SCRIPT, "--source", "test", "--hardware", "2 x 8 H100", "--software",
                           "NCCL 2.29.2", "--class", "multi-node", "--platform", "h100-fattree:nodes=2", "--held-out",
                           *extra, *paths], capture_output=True, text=True)


def refused(p, what):
    if p.returncode != 2 or len(p.stderr.strip().splitlines()) != 1 or what not in p.stderr:
        fail(f"expected exit 2 with one line saying '{what}': exit {p.returncode}, '{p.stderr}'")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    usp = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        a = os.path.join(d, "run.log")
        with open(a, "w") as f:
            f.write(log("all_reduce_perf", 16) + log("alltoall_perf", 16))
        p = convert([a])
        if p.returncode != 0:
            fail(f"exit {p.returncode}: {p.stderr}")
        doc = json.loads(p.stdout)
        t = doc["tables"]
        if [x["op"] for x in t] != ["allreduce", "alltoall"] or [x["ranks"] for x in t] != [16, 16]:
            fail(f"tables {[(x['op'], x['ranks']) for x in t]}")
        if t[0]["rows"] != [[1048576, 40.0, 45.88], [2097152, 60.0, 61.16], [4194304, 100.0, 73.4]]:
            fail(f"rows {t[0]['rows']}")
        if not doc.get("held_out") or t[0]["columns"] != ["size", "time_us", "busbw"]:
            fail("held_out or columns missing")
        if t[0].get("per_node") != 8:   # 16 ranks on two hosts
            fail(f"per_node {t[0].get('per_node')}, want 8")
        out = os.path.join(d, "run.json")
        with open(out, "w") as f:
            f.write(p.stdout)
        q = subprocess.run([usp, "nccl", "--compare", out, "--json"], capture_output=True, text=True)
        if q.returncode != 0:
            fail(f"usp nccl --compare: exit {q.returncode}: {q.stderr}")
        cmp = json.loads(q.stdout)
        if (not cmp["held_out"] or len(cmp["rows"]) != 4 or cmp["rows"][0]["published_busbw"] != 45.88
                or cmp["rows"][0]["per_node"] != 8):
            fail(f"usp nccl --compare read back {cmp}")
        empty = os.path.join(d, "empty.log")
        with open(empty, "w") as f:
            f.write("# nothing here\n")
        refused(convert([empty]), "no nccl-tests table found")
        odd = os.path.join(d, "odd.log")
        with open(odd, "w") as f:
            f.write(log("all_reduce_perf", 2).replace("all_reduce_perf", "gather_perf"))
        refused(convert([odd]), "unknown collective 'gather_perf'")
        refused(convert([a], "--table-platform", "nolog"), "is not LOG=SPEC")
        refused(subprocess.run([sys.executable, SCRIPT, a], capture_output=True, text=True), "required")
    print("test_nccl_log2json: 2 tests of one log converted and read back; 4 refusals")
    return 0


if __name__ == "__main__":
    sys.exit(main())
