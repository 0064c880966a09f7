# device_common.sh: how every device script of tools/bench starts (sourced once
# it has set OUT and STEPS): the environment the lent machines run NCCL and
# PyTorch with, the summary file and its helpers, and the card's line.
#   say TEXT     print TEXT and append it to $OUT/summary.txt
#   has STEP     STEP is in the comma-separated $STEPS
#   stamp TEXT   say TEXT after the seconds since the start ($t0)
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
SUM=$OUT/summary.txt
: > "$SUM"
say() { echo "$*" | tee -a "$SUM"; }
has() { [[ ",$STEPS," == *",$1,"* ]]; }
t0=$(date +%s)
stamp() { say "[$(( $(date +%s) - t0 ))s] $*"; }

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader \
  | tee -a "$SUM"
