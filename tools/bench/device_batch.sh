#!/bin/bash
# device_batch.sh: several device scripts of tools/bench in one call on a lent GPU machine, each
# under its own time limit, their logs packed into one archive ($OUT/all.tgz: such machines
# return few files) and every script's summary printed last.
#
#   OUT=out tools/bench/device_batch.sh maskbwdx_device.sh:110 bwd128_device.sh:110 \
#       mfwd_device.sh:100 ipc_device.sh:360
#
# Run from the repository root. The kernel tools (build-dev) are built once first, so the
# scripts that take them start without a build; each script runs as `OUT=$OUT/NAME bash
# tools/bench/NAME` (NAME without .sh) with STEPS and the other settings of its own header
# left to their defaults, or to the environment. A script that runs past its limit (default
# 150 s) is stopped; what it wrote stays in the archive.
set -u
OUT=${OUT:-$PWD/out}
STEPS=build
BUILD=build-dev
. "$(dirname "$0")/device_common.sh"
[ $# -gt 0 ] || { say "device_batch.sh: name at least one script of tools/bench (NAME.sh[:SECONDS])"; exit 2; }
for a in "$@"; do
  [ -f "tools/bench/${a%%:*}" ] || { say "device_batch.sh: no tools/bench/${a%%:*}"; exit 2; }
done

kernel_tools
for a in "$@"; do
  s=${a%%:*} limit=150
  [[ $a == *:* ]] && limit=${a#*:}
  name=${s%.sh}
  stamp "$name (limit ${limit} s)"
  mkdir -p "$OUT/$name"
  OUT="$OUT/$name" timeout "$limit" bash "tools/bench/$s" > "$OUT/$name/log.txt" 2>&1
  say "$name rc=$?"
done
stamp "done"
for a in "$@"; do
  name=$(basename "${a%%:*}" .sh)
  echo "================ $name"
  cat "$OUT/$name/summary.txt" 2>/dev/null || tail -20 "$OUT/$name/log.txt"
done
(cd "$OUT" && tar czf /tmp/device_batch.tgz --exclude=all.tgz . && mv /tmp/device_batch.tgz all.tgz)
