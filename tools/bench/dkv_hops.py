#!/usr/bin/env python3
"""dkv_hops.py: how many backward dK/dV hops a trace leaves exposed.

Reads a trace that any executor writes (usp run --trace FILE; Chrome trace
events, one per step and rank: pid = rank, tid 0 = compute, tid 1 = comm) and
measures, per rank:

  exposed dK/dV time = the time of its backward dK/dV transfers (comm steps
                       named bwd.ring<s>.dkv) during which its compute stream
                       runs nothing;
  one hop            = the median duration of those transfers over all ranks;
  hops exposed       = exposed dK/dV time / one hop.

The last hop (dK/dV going home) has no attention left to hide under, so a
schedule that overlaps every other hop leaves about 1 exposed; one whose
attentions wait for each hop leaves about R (the ring degree).

  tools/bench/dkv_hops.py TRACE.json [--json]
"""
import bisect
import json
import statistics
import sys


def merged(intervals):
    out = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def covered(busy, starts, a, b):
    """Length of [a, b) inside the merged, sorted intervals busy."""
    total = 0.0
    i = max(bisect.bisect_right(starts, a) - 1, 0)
    while i < len(busy) and busy[i][0] < b:
        total += max(0.0, min(b, busy[i][1]) - max(a, busy[i][0]))
        i += 1
    return total


def measure(path):
    with open(path) as f:
        trace = json.load(f)
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    compute, hops = {}, {}
    for e in events:
        span = (e["ts"], e["ts"] + e["dur"])
        if e["tid"] == 0:
            compute.setdefault(e["pid"], []).append(span)
        elif e["name"].startswith("bwd.ring") and e["name"].endswith(".dkv"):
            hops.setdefault(e["pid"], []).append(span)
    if not hops:
        sys.exit("dkv_hops: %s has no backward dK/dV transfers (bwd.ring<s>.dkv)" % path)
    exposed = {}
    for rank, spans in hops.items():
        busy = merged(compute.get(rank, []))
        starts = [a for a, _ in busy]
        exposed[rank] = sum((b - a) - covered(busy, starts, a, b) for a, b in spans)
    hop = statistics.median(b - a for spans in hops.values() for a, b in spans)
    values = list(exposed.values())
    return {
        "trace": path, "ranks": len(hops), "hops_per_rank": max(len(s) for s in hops.values()),
        "hop_ms": hop / 1e3, "exposed_ms_mean": statistics.mean(values) / 1e3,
        "exposed_ms_max": max(values) / 1e3, "hops_exposed_mean": statistics.mean(values) / hop,
        "hops_exposed_max": max(values) / hop,
    }


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help") or len(args) > 2 or (len(args) == 2 and args[1] != "--json"):
        print(__doc__)
        sys.exit(0 if args and args[0] in ("-h", "--help") else 2)
    m = measure(args[0])
    if len(args) == 2:
        print(json.dumps(m))
        return
    print("%d ranks, %d dK/dV hops each, one hop %.3f ms (median); exposed dK/dV %.3f ms mean, %.3f ms max"
          % (m["ranks"], m["hops_per_rank"], m["hop_ms"], m["exposed_ms_mean"], m["exposed_ms_max"]))
    print("hops exposed: %.2f mean, %.2f max" % (m["hops_exposed_mean"], m["hops_exposed_max"]))


if __name__ == "__main__":
    main()
