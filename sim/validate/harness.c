/* harness.c: the host side of a published benchmark, as a floor on its time.
 *
 * A published attention table times a Python benchmark: every call of the
 * attention issues its PyTorch operations and torch.distributed calls from
 * the host, one after the other, and the GPU cannot run an operation before
 * the host has issued it. However fast the GPUs, one call therefore takes at
 * least the host's issue time, and a row's predicted time is
 *
 *     max(simulated time, ops x HOST_OP_S + calls x HOST_CALL_S)
 *
 * (the host-bound limit; the simulated time alone is the GPU-bound one).
 * Only the harness a table names is modelled (usp/published.h):
 *
 * yunchang-2024: feifeibear/long-context-attention, April-May 2024
 * (benchmark/benchmark_longctx.py, benchmark_longctx_qkvpacked.py;
 * yunchang/hybrid/attn_layer.py, comm/all_to_all.py, ring/ (basic, zigzag, stripe)).
 * What one forward call issues, counted from that code:
 *   - each all-to-all (SeqAllToAll4D / 5D): the autograd Function, a reshape,
 *     transpose and contiguous copy before, an empty_like, the
 *     all_to_all_single (one torch.distributed call), a reshape, transpose and
 *     contiguous copy after and a last reshape: 9 operations and 1 call. The
 *     unpacked module (LongContextAttention) runs 4 of them (Q, K, V, O) even
 *     at ulysses 1; the packed one (LongContextAttentionQKVPacked) 2 (QKV, O),
 *     none at ulysses 1, and slices Q, K, V out of QKV and copies K and V
 *     contiguous for the ring (5 operations);
 *   - each ring step but the last: two send_recv (empty_like and P2POp
 *     each), batch_isend_irecv (1 call) and two req.wait: 6 operations;
 *   - each attention block: the flash-attention wrapper and its kernel (2),
 *     the merge (update_out_and_lse: 3 operations on the first block, the
 *     TorchScript function of about 10 element-wise operations after it,
 *     counted as 5), and for zigzag and stripe 2 slices of Q or K/V after the
 *     first step (and 4 more for the merge into a slice of O: 2 index, 2
 *     index-assign, on the steps that attend with half the queries, counted on
 *     half the steps);
 *   - once per call: the module and its autograd Function, RingComm's set-up
 *     (rank, size, two global ranks), the final cast of O and the LSE views:
 *     10 operations.
 * The rank with the most blocks is counted (the last ring rank of the basic
 * ring: every step computes).
 *
 * The unpacked script synchronizes after every call (torch.cuda.synchronize
 * in its timed loop; the packed one does not), so a call's GPU work cannot
 * start before the host issues it and nothing of the next call is issued
 * ahead: its first attention kernel starts no earlier than the host time of
 * what comes before it (the prefix: the call's set-up, the Q, K and V
 * all-to-alls, the first ring hop's send/recv, the kernel's own issue), and
 * the rest of the call is delayed by what that prefix exceeds the simulated
 * start of the first attention:
 *
 *     max(host time, simulated time + max(0, prefix - simulated first attention start))
 */
#include "usp/published.h"

#include <math.h>
#include <string.h>

/* Host time of one PyTorch operation issued from Python: about 7 us for the
 * simplest tensor operation (pytorch/pytorch issue 41383: 1e6 of `2*x` take
 * 6.8 s with requires_grad, 5 us without; sim/SOURCES.md, benchmark harness). */
#define HOST_OP_S 7e-6
/* One torch.distributed NCCL call (all_to_all_single, batch_isend_irecv) as
 * measured through PyTorch: the fixed part of send/recv on 2 x H200, 105 us
 * (sim/SOURCES.md, GPU-to-GPU links). */
#define HOST_CALL_S 105e-6

#define A2A_OPS 9
#define RING_COMM_OPS 6
#define CALL_FIXED_OPS 10
#define PACKED_SPLIT_OPS 5
#define ATTN_OPS 2
#define MERGE_FIRST_OPS 3
#define MERGE_OPS 5
#define SLICE_OPS 2
#define SLICE_MERGE_OPS 4

/* Of CALL_FIXED_OPS, those before the first attention: the module, its
 * autograd Function, RingComm's rank, size and two global ranks, the
 * softmax scale. */
#define PREFIX_FIXED_OPS 7
/* Of RING_COMM_OPS, those before the attention: two empty_like, two P2POp. */
#define PREFIX_RING_OPS 4

usp_status usp_pub_harness_parse(const char *name, usp_pub_harness *h) {
    if (!strcmp(name, "none")) *h = USP_HARNESS_NONE;
    else if (!strcmp(name, "yunchang-2024")) *h = USP_HARNESS_YUNCHANG_2024;
    else return usp_fail(USP_EINVAL, "unknown harness '%s' (none, yunchang-2024)", name);
    return USP_OK;
}

const char *usp_pub_harness_name(usp_pub_harness h) {
    return h == USP_HARNESS_YUNCHANG_2024 ? "yunchang-2024" : "none";
}

double usp_pub_harness_host_s(usp_pub_harness h, const usp_config *c, int qkv_packed, int *ops, int *calls) {
    int o = 0, n = 0;
    if (h == USP_HARNESS_YUNCHANG_2024) {
        int a2a = qkv_packed ? (c->ulysses > 1 ? 2 : 0) : 4;
        o += a2a * A2A_OPS + CALL_FIXED_OPS + (qkv_packed ? PACKED_SPLIT_OPS : 0);
        n += a2a;
        int sliced = c->ring_impl == USP_RING_ZIGZAG || c->ring_impl == USP_RING_STRIPE;
        for (int s = 0; s < c->ring; s++) {
            if (s + 1 < c->ring) { o += RING_COMM_OPS; n++; }
            o += ATTN_OPS + (s == 0 ? MERGE_FIRST_OPS : MERGE_OPS);
            if (sliced && s > 0) o += SLICE_OPS + (s % 2 ? SLICE_MERGE_OPS : 0);
        }
    }
    if (ops) *ops = o;
    if (calls) *calls = n;
    return o * HOST_OP_S + n * HOST_CALL_S;
}

int usp_pub_harness_synced(usp_pub_harness h, int qkv_packed) {
    return h == USP_HARNESS_YUNCHANG_2024 && !qkv_packed;
}

double usp_pub_harness_prefix_s(usp_pub_harness h, const usp_config *c, int qkv_packed) {
    if (!usp_pub_harness_synced(h, qkv_packed)) return 0;
    int a2a = 3; /* Q, K, V: the unpacked module's (O comes after the attention) */
    int ops = a2a * A2A_OPS + PREFIX_FIXED_OPS + (c->ring > 1 ? PREFIX_RING_OPS : 0) + ATTN_OPS;
    int calls = a2a + (c->ring > 1);
    return ops * HOST_OP_S + calls * HOST_CALL_S;
}
