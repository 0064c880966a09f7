#!/usr/bin/env python3
"""masked_kernel_model.py: how well two models of an attention kernel's time predict masked
blocks they were not fitted to, against usp's kernels measured on one H100.

Measured (gpu/NOTES.md, v15: tools/bench-gpu --mask, one H100 80GB HBM3, 2026-12-07; bf16,
L = 16384, H = 16, D = 128, causal inside the mask): forward and backward (DELTA + kernel) ms of
the causal kernel, of ten packed documents and of a 2048-token window. Fitted (the same day, the
same card, `usp calibrate --gpus 1` on full square blocks of 2K-16K tokens, nothing masked but
the causal blocks): the affine fit the simulator uses today (rate, masked-block efficiency) and
the short-block fit calibrate prints beside it (rate, and `short` tokens of loop length that
each unit of work pays for its setup).

  pairs  what the simulator does today: FLOPs of the visible pairs / (rate x masked-block
         efficiency)
  tiles  the kernel's own work: every tile of 128 query rows x 128 keys (forward) or 128 keys x
         64 query rows (backward) that sees a pair counts whole, and each unit (a query tile in
         the forward, a key tile in the backward) pays `short` tokens of loop on top, at the
         short-block rate; on a full block this is the short-block model itself

  tools/bench/masked_kernel_model.py [--json]

Every figure it prints is computed from the constants below; nothing runs on a GPU.
"""
import argparse
import json

L, H, D = 16384, 16, 128
DOCS = [8192, 3000, 1500, 1000, 700, 600, 500, 400, 300, 184, 8]   # bench-gpu's docs spec over 16384
# measured ms (v15): forward call; backward as DELTA + kernel (bench-gpu's "bwd kernel")
MEASURED = {"causal": (1.818, 5.826), "docs": (0.648, 2.173), "window 2048": (0.505, 1.680)}
DELTA_MS = 0.111             # DELTA alone (the simulator's bwd.prep at these sizes)
# usp calibrate --gpus 1, one H100, bf16 D = 128 (gpu/NOTES.md v15; sim/profiles/h100-calibrated.json)
AFFINE = {"fwd": 635.8e12, "bwd": 521.7e12, "masked_fwd": 0.956, "masked_bwd": 0.965}
SHORT = {"fwd": (663.8e12, 525), "bwd": (532.1e12, 275)}   # rate, short tokens (the fit it prints)
FWD_TILE, BWD_TILE = (128, 128), (64, 128)                  # (query rows, keys) of a tile


def rows(kind):
    """Per query row: the keys [lo, hi) it sees."""
    if kind == "causal":
        return [0] * L, [i + 1 for i in range(L)]
    if kind == "window 2048":
        return [max(0, i - 2048) for i in range(L)], [i + 1 for i in range(L)]
    lo, hi, s = [0] * L, [0] * L, 0
    for n in DOCS:
        for i in range(s, min(s + n, L)):
            lo[i], hi[i] = s, i + 1
        s += n
    return lo, hi


def tiles_fwd(lo, hi):
    """(pairs of the tiles visited, units): a unit is a query tile, its keys the union of its rows'."""
    bm, bn = FWD_TILE
    pairs = units = 0
    for q0 in range(0, L, bm):
        a, b = min(lo[q0:q0 + bm]), max(hi[q0:q0 + bm])
        if b > a:
            pairs += ((b + bn - 1) // bn - a // bn) * bm * bn
            units += 1
    return pairs, units


def tiles_bwd(lo, hi):
    """(pairs of the tiles visited, units): a unit is a key tile, its rows the query tiles that see it."""
    bm, bn = BWD_TILE
    per_key_tile = {}
    for q0 in range(0, L, bm):
        a, b = min(lo[q0:q0 + bm]), max(hi[q0:q0 + bm])
        for kt in range(a // bn, (b + bn - 1) // bn) if b > a else ():
            per_key_tile[kt] = per_key_tile.get(kt, 0) + 1
    return sum(per_key_tile.values()) * bm * bn, len(per_key_tile)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="every figure as JSON")
    a = ap.parse_args()
    out = []
    for kind, (mf, mb) in MEASURED.items():
        lo, hi = rows(kind)
        vis = sum(max(0, h - l) for l, h in zip(lo, hi))
        ff, fb = 4.0 * D * H, 10.0 * D * H   # FLOPs a pair, forward and backward
        pair_f = ff * vis / (AFFINE["fwd"] * AFFINE["masked_fwd"])
        pair_b = fb * vis / (AFFINE["bwd"] * AFFINE["masked_bwd"])
        tp, tu = tiles_fwd(lo, hi)
        bp, bu = tiles_bwd(lo, hi)
        tile_f = ff * (tp + tu * SHORT["fwd"][1] * FWD_TILE[0]) / SHORT["fwd"][0]
        tile_b = fb * (bp + bu * SHORT["bwd"][1] * BWD_TILE[1]) / SHORT["bwd"][0]
        kb = mb - DELTA_MS   # the backward kernel alone
        out.append({"mask": kind, "visible_pairs_per_head": vis, "fwd_tiles": tp // (FWD_TILE[0] * FWD_TILE[1]),
                    "fwd_units": tu, "bwd_tiles": bp // (BWD_TILE[0] * BWD_TILE[1]), "bwd_units": bu,
                    "fwd_ms": {"measured": mf, "pairs": pair_f * 1e3, "tiles": tile_f * 1e3},
                    "bwd_kernel_ms": {"measured": kb, "pairs": pair_b * 1e3, "tiles": tile_b * 1e3}})
    if a.json:
        print(json.dumps(out, indent=1))
        return
    print("one H100, bf16, L 16384, H 16, D 128; ms, and the model's error against the measurement")
    print("%-12s | %8s %16s %16s | %8s %16s %16s" % ("mask", "fwd", "pairs model", "tiles model",
                                                    "bwd", "pairs model", "tiles model"))
    for r in out:
        f, b = r["fwd_ms"], r["bwd_kernel_ms"]
        e = lambda m, x: "%7.3f (%+4.0f%%)" % (x, 100 * (x / m - 1))
        print("%-12s | %8.3f %16s %16s | %8.3f %16s %16s" % (
            r["mask"], f["measured"], e(f["measured"], f["pairs"]), e(f["measured"], f["tiles"]),
            b["measured"], e(b["measured"], b["pairs"]), e(b["measured"], b["tiles"])))


if __name__ == "__main__":
    main()
