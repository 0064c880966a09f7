/* maskplan.cu: the plan of a masked attention call, made on the GPU once per call.
 *
 * Under per-row masks (usp/rowmask.h) the work of a CTA is not known from its
 * index: a query tile of a long document sees many key tiles, one of a short
 * document few. Without a plan every forward CTA reduced its rows' intervals
 * (two barriers before its first load), every backward CTA read all q_len
 * rows' intervals to find the query tiles that see its keys, and CTAs started
 * in index order, so the heaviest tiles of a packed batch could start last.
 *
 * One kernel of one block (MP_THREADS threads), on the call's stream before
 * the attention kernel, writes into scratch memory:
 *   groups [B][ng]      usp_key_range of each 64-row group (USP_PLAN_GROUP) of
 *                       query rows as int4 (any_lo, any_hi, all_lo, all_hi);
 *                       rows past q_len are left out, an empty group has
 *                       any_lo > any_hi;
 *   ktile_rows [B][nkt] backward: first query group that sees key tile kt and
 *                       how many groups from there to the last one (0: none);
 *   work [items]        forward item = (b, query tile of bm rows): key tiles
 *                       of bn keys in its union; backward item = (b, key tile):
 *                       query groups it visits;
 *   counter             0: the next unit a persistent forward hands out (its CTAs
 *                       take units from it in the order below);
 *   order [items]       the items by descending work, items of equal work in
 *                       index order (a stable counting sort over MP_BUCKETS
 *                       buckets), so that units running side by side are
 *                       neighbouring tiles that share K/V tiles in L2.
 * Kernels map CTA i to item order[i / heads] and head i % heads, so the heads of
 * one item run side by side and the heaviest items of the whole call go first.
 *
 * Cost: one pass over the 2 x B x q_len interval words, plus, for the backward,
 * B x nkt x ng group tests (16K rows: 128 x 256), growing with the square of the
 * length for the backward's tests (tens of microseconds at 128K, where the
 * backward itself takes hundreds of ms). The first kernel (mask_plan_kernel,
 * USP_GPU_MASK_PLAN_KERNEL=old) took 16-17 us before a forward and 22 us before a
 * backward at 16K rows on an H100 (gpu/NOTES.md): each warp walked its groups one
 * dependent global load after another, and the later passes read the groups and
 * the work back from global memory. mask_plan_fast_kernel (the default) writes
 * the same bytes with each warp's interval loads issued together (MP_UNROLL
 * groups) and the groups and work kept in shared memory for the later passes.
 *
 * Scratch: a private stream-ordered memory pool per device (release threshold
 * at its maximum, so memory stays in the pool between calls); allocated and
 * freed on the call's stream, so concurrent streams never share a plan and the
 * calls stay capturable in CUDA graphs. */
#include "kernels.h"
#include "kcommon.cuh"
#include <mutex>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace {

using namespace uspk;

constexpr int MP_THREADS = 1024;
constexpr int MP_BUCKETS = 4096;   /* works >= MP_BUCKETS - 1 share the first bucket */
constexpr int MP_PER_THREAD = MP_BUCKETS / MP_THREADS;

struct MpArgs {
    const int32_t *lo, *hi;
    int b, q_len, kv_len, causal, diag;
    int ng;          /* 64-row groups a batch */
    int bwd;         /* 0: forward items (query tiles of bm rows), 1: backward (key tiles) */
    int bm, bn, per_batch, nitems;
    int4 *groups;
    int2 *ktile_rows;
    int *work, *order, *counter;
};


/* The items by descending work into a.order, items of equal work in index order:
 * hist holds each bucket's count (every thread past a barrier); work: the items'
 * work (global or shared memory). Every thread must call it (three barriers). */
__device__ __forceinline__ void mp_sort(const MpArgs &a, int *hist, int *part, const int *work) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    constexpr int NW = MP_THREADS / 32;
    __syncthreads();

    /* start of each bucket in descending order: thread t owns buckets
     * MP_BUCKETS-1-4t .. MP_BUCKETS-4-4t; exclusive scan of the owners' sums */
    int v[MP_PER_THREAD], sum = 0;
#pragma unroll
    for (int k = 0; k < MP_PER_THREAD; ++k) {
        v[k] = hist[MP_BUCKETS - 1 - (MP_PER_THREAD * tid + k)];
        sum += v[k];
    }
    int incl = sum;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
    if (lane == 31) part[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        int w = lane < NW ? part[lane] : 0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int y = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += y;
        }
        if (lane < NW) part[lane] = w;   /* inclusive over warps */
    }
    __syncthreads();
    int run = incl - sum + (warp > 0 ? part[warp - 1] : 0);
#pragma unroll
    for (int k = 0; k < MP_PER_THREAD; ++k) {
        hist[MP_BUCKETS - 1 - (MP_PER_THREAD * tid + k)] = run;
        run += v[k];
    }
    __syncthreads();
    /* stable scatter: one warp walks the items in index order, 32 at a time; lanes
     * of one bucket take consecutive places in lane order, so items of equal work
     * keep their index order (neighbouring tiles, then batches, side by side) */
    if (warp == 0) {
        for (int c0 = 0; c0 < a.nitems; c0 += 32) {
            const int it = c0 + lane;
            const unsigned live = __ballot_sync(0xffffffffu, it < a.nitems);
            if (it < a.nitems) {
                const int bk = min(work[it], MP_BUCKETS - 1);
                const unsigned same = __match_any_sync(live, bk);
                const int leader = __ffs(same) - 1;
                const int rank = __popc(same & ((1u << lane) - 1u));
                int base = 0;
                if (lane == leader) base = atomicAdd(&hist[bk], __popc(same));
                base = __shfl_sync(same, base, leader);
                a.order[base + rank] = it;
            }
        }
    }
}

/* Backward item `it` (a warp per key tile), from each lane's first and last
 * group that sees one of its keys: the warp's min and max, then lane 0 writes
 * the item's group rows and work (a.work[it], and work[it], the copy in
 * shared memory, when sgroups) and counts it in the histogram. */
__device__ __forceinline__ void mp_ktile_item(const MpArgs &a, int *hist, int *work, int sgroups, int it, int lane,
                                              int first, int last) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        first = min(first, __shfl_xor_sync(0xffffffffu, first, o));
        last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
    }
    if (lane == 0) {
        const int w = last >= 0 ? last - first + 1 : 0;
        a.ktile_rows[it] = make_int2(last >= 0 ? first : 0, w);
        a.work[it] = w;
        if (sgroups) work[it] = w;
        atomicAdd(&hist[min(w, MP_BUCKETS - 1)], 1);
    }
}

__global__ void __launch_bounds__(MP_THREADS) mask_plan_kernel(const MpArgs a) {
    __shared__ int hist[MP_BUCKETS];
    __shared__ int part[MP_THREADS / 32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    constexpr int NW = MP_THREADS / 32;
    for (int i = tid; i < MP_BUCKETS; i += MP_THREADS) hist[i] = 0;
    if (tid == 0) *a.counter = 0;

    /* groups: a warp per group, two rows a lane */
    for (int g = warp; g < a.b * a.ng; g += NW) {
        const int bb = g / a.ng, r0 = (g % a.ng) * USP_PLAN_GROUP;
        usp_key_range r = usp_key_range_none();
#pragma unroll
        for (int k = 0; k < USP_PLAN_GROUP / 32; ++k) {
            const int row = r0 + lane + 32 * k;
            if (row < a.q_len)
                r = usp_key_range_add(r, usp_row_keys(a.lo, a.hi, a.q_len, bb, row, a.kv_len, a.causal, a.diag));
        }
        r = warp_key_range(r);
        if (lane == 0) a.groups[g] = range_int4(r);
    }
    __syncthreads();

    if (!a.bwd) {   /* a thread per query tile: key tiles of its union */
        const int per = a.bm / USP_PLAN_GROUP;
        for (int it = tid; it < a.nitems; it += MP_THREADS) {
            const int w = plan_fwd_tile_work(a.groups, a.ng, it / a.per_batch, it % a.per_batch, per, a.bn);
            a.work[it] = w;
            atomicAdd(&hist[min(w, MP_BUCKETS - 1)], 1);
        }
    } else {        /* a warp per key tile: the first and last group that sees one of its keys */
        for (int it = warp; it < a.nitems; it += NW) {
            const int bb = it / a.per_batch, n0 = (it % a.per_batch) * a.bn, kend = min(n0 + a.bn, a.kv_len);
            int first = INT32_MAX, last = -1;
            for (int g = lane; g < a.ng; g += 32) {
                const int4 v = a.groups[bb * a.ng + g];
                if (v.x < kend && v.y > n0 && v.x < v.y) {
                    first = min(first, g);
                    last = max(last, g);
                }
            }
            mp_ktile_item(a, hist, a.work, 0, it, lane, first, last);
        }
    }
    mp_sort(a, hist, part, a.work);
}

/* The same plan, byte for byte, with the loads in flight together: each warp
 * issues the interval loads of MP_UNROLL groups (4 words a lane each) before it
 * reduces any of them, and keeps the groups and the items' work in shared
 * memory (dynamic, when they fit: sgroups != 0) for the passes that follow, so
 * that no pass after the first waits on global memory. */
constexpr int MP_UNROLL = 4;
constexpr int MP_SMEM_MAX = 96 * 1024;   /* dynamic shared memory: groups, then work */

__device__ __forceinline__ unsigned long long mp_now() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* PROF (USP_GPU_MASK_PLAN_PROF=1): thread 0 prints the nanoseconds of each pass
 * (globaltimer), to see where the kernel's time goes; the plan is the same. */
template <bool PROF, bool PDL = false>
__global__ void __launch_bounds__(MP_THREADS) mask_plan_fast_kernel(const MpArgs a, int sgroups) {
    unsigned long long t0 = 0, t1 = 0, t2 = 0;
    if (PROF) t0 = mp_now();
#if __CUDA_ARCH__ >= 900
    /* PDL: a kernel launched as this one's programmatic dependent (the FLOW forward with
     * USP_GPU_FWD_FLOW=pdl) may start now; it waits for the plan before reading it */
    if constexpr (PDL) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
    __shared__ int hist[MP_BUCKETS];
    __shared__ int part[MP_THREADS / 32];
    extern __shared__ int4 mp_dyn[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    constexpr int NW = MP_THREADS / 32;
    const int ngt = a.b * a.ng;
    const int4 *groups = sgroups ? mp_dyn : a.groups;
    int *work = sgroups ? reinterpret_cast<int *>(mp_dyn + ngt) : a.work;
    for (int i = tid; i < MP_BUCKETS; i += MP_THREADS) hist[i] = 0;
    if (tid == 0) *a.counter = 0;

    plan_group_ranges<NW, MP_UNROLL>(a.lo, a.hi, a.b, a.ng, a.q_len, a.kv_len, a.causal, a.diag, warp, lane,
                                     [&](int g, usp_key_range r) {
                                         a.groups[g] = range_int4(r);
                                         if (sgroups) mp_dyn[g] = range_int4(r);
                                     });
    __syncthreads();
    if (PROF) t1 = mp_now();

    if (!a.bwd) {   /* a thread per query tile: key tiles of its union */
        const int per = a.bm / USP_PLAN_GROUP;
        for (int it = tid; it < a.nitems; it += MP_THREADS) {
            const int w = plan_fwd_tile_work(groups, a.ng, it / a.per_batch, it % a.per_batch, per, a.bn);
            a.work[it] = w;
            if (sgroups) work[it] = w;
            atomicAdd(&hist[min(w, MP_BUCKETS - 1)], 1);
        }
    } else {        /* a warp per key tile: the first and last group that sees one of its keys */
        for (int it = warp; it < a.nitems; it += NW) {
            const int bb = it / a.per_batch, n0 = (it % a.per_batch) * a.bn, kend = min(n0 + a.bn, a.kv_len);
            int first = INT32_MAX, last = -1;
#pragma unroll 4
            for (int g = lane; g < a.ng; g += 32) {
                const int4 v = groups[bb * a.ng + g];
                if (v.x < kend && v.y > n0 && v.x < v.y) {
                    first = min(first, g);
                    last = max(last, g);
                }
            }
            mp_ktile_item(a, hist, work, sgroups, it, lane, first, last);
        }
    }
    if (PROF) {
        __syncthreads();
        t2 = mp_now();
    }
    mp_sort(a, hist, part, work);
    if (PROF && tid == 0)
        printf("mask plan (%s, %d groups, %d items): rows %llu ns, items %llu ns, sort %llu ns\n",
               a.bwd ? "backward" : "forward", a.b * a.ng, a.nitems, t1 - t0, t2 - t1, mp_now() - t2);
}

/* first differing 32-bit word of the written parts of two plans, into *diff
 * (left alone when equal); the plan check of USP_GPU_MASK_PLAN_CHECK */
__global__ void mask_plan_cmp_kernel(const MpArgs x, const MpArgs y, int nkt_rows, int *diff) {
    const int ng4 = x.b * x.ng * 4, nk2 = nkt_rows * 2, ni = x.nitems;
    const int n = ng4 + nk2 + 2 * ni + 1;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        int u, v;
        if (i < ng4) {
            u = reinterpret_cast<const int *>(x.groups)[i];
            v = reinterpret_cast<const int *>(y.groups)[i];
        } else if (i < ng4 + nk2) {
            u = reinterpret_cast<const int *>(x.ktile_rows)[i - ng4];
            v = reinterpret_cast<const int *>(y.ktile_rows)[i - ng4];
        } else if (i < ng4 + nk2 + ni) {
            u = x.work[i - ng4 - nk2];
            v = y.work[i - ng4 - nk2];
        } else if (i < n - 1) {
            u = x.order[i - ng4 - nk2 - ni];
            v = y.order[i - ng4 - nk2 - ni];
        } else {
            u = *x.counter;
            v = *y.counter;
        }
        if (u != v) atomicMin(diff, i);
    }
}

/* USP_GPU_MASK_PLAN: 0 no plan; 1 (default) plans for per-row masks; 2 ("all") for
 * the causal/diag mask too; 3 ("order") per-row masks, the forward's units in the
 * plan's order but one CTA a unit (not persistent), to time the two apart. */
int plan_mode() {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("USP_GPU_MASK_PLAN");
        mode = !e ? 1 : !strcmp(e, "0") ? 0 : !strcmp(e, "all") ? 2 : !strcmp(e, "order") ? 3 : 1;
    }
    return mode;
}

/* The pool of `dev`, made on first use; NULL when the device has none. */
cudaMemPool_t plan_pool(int dev) {
    constexpr int MAXDEV = 64;
    static std::mutex mu;
    static cudaMemPool_t pools[MAXDEV];
    static bool tried[MAXDEV];
    if (dev < 0 || dev >= MAXDEV) return nullptr;
    std::lock_guard<std::mutex> lock(mu);
    if (!tried[dev]) {
        tried[dev] = true;
        int ok = 0;
        if (cudaDeviceGetAttribute(&ok, cudaDevAttrMemoryPoolsSupported, dev) != cudaSuccess || !ok) {
            (void)cudaGetLastError();
            return nullptr;
        }
        cudaMemPoolProps props;
        memset(&props, 0, sizeof props);
        props.allocType = cudaMemAllocationTypePinned;
        props.location.type = cudaMemLocationTypeDevice;
        props.location.id = dev;
        cudaMemPool_t pool = nullptr;
        if (cudaMemPoolCreate(&pool, &props) != cudaSuccess) {
            (void)cudaGetLastError();
            return nullptr;
        }
        uint64_t keep = UINT64_MAX;
        (void)cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
        (void)cudaGetLastError();
        pools[dev] = pool;
    }
    return pools[dev];
}

size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Scratch of `bytes` on st, or NULL (no plan) when the pool refuses. */
void *plan_alloc(size_t bytes, cudaStream_t st) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return nullptr;
    }
    cudaMemPool_t pool = plan_pool(dev);
    if (!pool) return nullptr;
    void *ptr = nullptr;
    if (cudaMallocFromPoolAsync(&ptr, bytes, pool, st) != cudaSuccess) {
        (void)cudaGetLastError();
        return nullptr;
    }
    return ptr;
}

int sm_count() {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

/* The scratch layout of a plan at base. */
void plan_layout(MpArgs &a, int nkt_rows, unsigned char *base, size_t g_bytes, size_t k_bytes, size_t i_bytes) {
    a.counter = reinterpret_cast<int *>(base + g_bytes + k_bytes + 2 * i_bytes);
    a.groups = reinterpret_cast<int4 *>(base);
    a.ktile_rows = nkt_rows ? reinterpret_cast<int2 *>(base + g_bytes) : nullptr;
    a.work = reinterpret_cast<int *>(base + g_bytes + k_bytes);
    a.order = reinterpret_cast<int *>(base + g_bytes + k_bytes + i_bytes);
}

/* USP_GPU_MASK_PLAN_KERNEL=old: the first plan kernel (its passes one dependent load
 * after another), for timing beside the default; read at each call (tools/bench-gpu
 * --alt-env). USP_GPU_MASK_PLAN_CHECK=1: both kernels run, the call fails if their
 * plans differ in one byte (a synchronizing check, for usp kernel-check). */
bool plan_kernel_old() {
    const char *e = getenv("USP_GPU_MASK_PLAN_KERNEL");
    return e && !strcmp(e, "old");
}
bool plan_check() {
    const char *e = getenv("USP_GPU_MASK_PLAN_CHECK");
    return e && strcmp(e, "0") && *e;
}

/* USP_GPU_FWD_FLOW has the word pdl (read at each call): the forward's plan kernel lets its
 * programmatic dependent (attn_fwd_ws.cu's FLOW kernel, launched so) start at once. */
bool plan_fwd_pdl() {
    const char *e = getenv("USP_GPU_FWD_FLOW");
    for (const char *s = e; s && *s;) {
        const char *c = strchr(s, ',');
        const size_t len = c ? (size_t)(c - s) : strlen(s);
        if (len == 3 && !strncmp(s, "pdl", 3)) return true;
        s = c ? c + 1 : nullptr;
    }
    return false;
}

/* The default plan kernel into a's scratch. */
cudaError_t plan_launch(const MpArgs &a, bool old, cudaStream_t st) {
    if (old) {
        mask_plan_kernel<<<1, MP_THREADS, 0, st>>>(a);
        return cudaGetLastError();
    }
    const size_t need = (size_t)a.b * a.ng * sizeof(int4) + (size_t)a.nitems * sizeof(int);
    const int sgroups = need <= (size_t)MP_SMEM_MAX;
    const int dyn = sgroups ? (int)need : 0;
    const char *prof = getenv("USP_GPU_MASK_PLAN_PROF");
    auto kern = prof && !strcmp(prof, "1") ? mask_plan_fast_kernel<true>
                : !a.bwd && plan_fwd_pdl()     ? mask_plan_fast_kernel<false, true>
                                               : mask_plan_fast_kernel<false>;
    if (dyn > 48 * 1024 - (int)sizeof(int) * (MP_BUCKETS + MP_THREADS / 32)) {
        cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, MP_SMEM_MAX);
        if (e != cudaSuccess) return e;
    }
    kern<<<1, MP_THREADS, dyn, st>>>(a, sgroups);
    return cudaGetLastError();
}

/* Both kernels, the old one into a second scratch; their plans compared word by word. */
int plan_check_run(const MpArgs &a, int nkt_rows, size_t bytes, size_t g_bytes, size_t k_bytes, size_t i_bytes,
                   cudaStream_t st, char *why, size_t why_len) {
    unsigned char *base = static_cast<unsigned char *>(plan_alloc(bytes + 16, st));
    if (!base) {
        snprintf(why, why_len, "mask plan check: no scratch memory");
        return USP_KERNEL_ECUDA;
    }
    MpArgs b = a;
    plan_layout(b, nkt_rows, base, g_bytes, k_bytes, i_bytes);
    int *diff = reinterpret_cast<int *>(base + bytes);
    int host = -1;
    cudaError_t e = cudaMemsetAsync(diff, 0x7f, sizeof(int), st);
    if (e == cudaSuccess) e = plan_launch(b, true, st);
    if (e == cudaSuccess) {
        mask_plan_cmp_kernel<<<32, 256, 0, st>>>(a, b, nkt_rows, diff);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpyAsync(&host, diff, sizeof(int), cudaMemcpyDeviceToHost, st);
    if (e == cudaSuccess) e = cudaStreamSynchronize(st);
    (void)cudaFreeAsync(base, st);
    if (e != cudaSuccess) {
        snprintf(why, why_len, "mask plan check: %s", cudaGetErrorString(e));
        return USP_KERNEL_ECUDA;
    }
    if (host != 0x7f7f7f7f) {
        snprintf(why, why_len, "mask plan check: the plan kernels differ at word %d (groups %d, key tiles %d, items %d)",
                 host, a.b * a.ng * 4, nkt_rows * 2, a.nitems);
        return USP_KERNEL_ECUDA;
    }
    return USP_KERNEL_OK;
}

/* Fills the scratch layout and launches the plan kernel. */
int plan_run(MpArgs &a, int nkt_rows, cudaStream_t st, UspPlanMem *mem, char *why, size_t why_len) {
    const size_t g_bytes = align16((size_t)a.b * a.ng * sizeof(int4));
    const size_t k_bytes = align16((size_t)nkt_rows * sizeof(int2));
    const size_t i_bytes = align16((size_t)a.nitems * sizeof(int));
    const size_t bytes = g_bytes + k_bytes + 2 * i_bytes + 16;
    unsigned char *base = static_cast<unsigned char *>(plan_alloc(bytes, st));
    if (!base) return USP_KERNEL_OK;
    plan_layout(a, nkt_rows, base, g_bytes, k_bytes, i_bytes);
    mem->ptr = base;
    const bool old = plan_kernel_old();
    cudaError_t e = plan_launch(a, old, st);
    if (e != cudaSuccess) {
        usp_mask_plan_release(mem, st);
        snprintf(why, why_len, "mask plan kernel failed to launch: %s", cudaGetErrorString(e));
        return USP_KERNEL_ECUDA;
    }
    if (!old && plan_check()) {
        int rc = plan_check_run(a, nkt_rows, bytes, g_bytes, k_bytes, i_bytes, st, why, why_len);
        if (rc != USP_KERNEL_OK) {
            usp_mask_plan_release(mem, st);
            return rc;
        }
    }
    return USP_KERNEL_OK;
}

} // namespace

int usp_mask_plan_fwd(UspFwdParams &p, int bm, int bn, cudaStream_t st, UspPlanMem *mem, int *ctas, char *why,
                      size_t why_len) {
    *ctas = 0;
    const int mode = plan_mode();
    if (!mode || (!p.mask_lo && mode != 2) || p.q_len <= 0 || p.kv_len <= 0 || bm % USP_PLAN_GROUP) return USP_KERNEL_OK;
    const int nsm = sm_count();
    if (nsm <= 0) return USP_KERNEL_OK;
    MpArgs a;
    memset(&a, 0, sizeof a);
    a.lo = p.mask_lo;
    a.hi = p.mask_hi;
    a.b = p.b;
    a.q_len = p.q_len;
    a.kv_len = p.kv_len;
    a.causal = p.causal;
    a.diag = p.diag;
    a.ng = (p.q_len + USP_PLAN_GROUP - 1) / USP_PLAN_GROUP;
    a.bwd = 0;
    a.bm = bm;
    a.bn = bn;
    a.per_batch = (p.q_len + bm - 1) / bm;
    a.nitems = p.b * a.per_batch;
    if ((int64_t)a.nitems * p.h >= INT32_MAX / 2) return USP_KERNEL_OK;   /* the kernel counts units in int */
    int rc = plan_run(a, 0, st, mem, why, why_len);
    if (rc != USP_KERNEL_OK || !mem->ptr) return rc;
    p.mask_groups = a.groups;
    p.work_order = a.order;
    p.plan_items = a.nitems;
    if (mode != 3) p.unit_next = a.counter;
    const int64_t units = (int64_t)a.nitems * p.h;
    *ctas = (int)(units < nsm || mode == 3 ? units : nsm);
    return USP_KERNEL_OK;
}

int usp_mask_plan_fwd_shape(const UspFwdParams &p, int bm, int *items, int *ctas) {
    *items = *ctas = 0;
    const int mode = plan_mode();
    if (!mode || (!p.mask_lo && mode != 2) || p.q_len <= 0 || p.kv_len <= 0 || bm % USP_PLAN_GROUP) return 0;
    const int nsm = sm_count();
    const int64_t n = (int64_t)p.b * ((p.q_len + bm - 1) / bm), units = n * p.h;
    if (nsm <= 0 || units >= INT32_MAX / 2) return 0;
    *items = (int)n;
    *ctas = (int)(units < nsm || mode == 3 ? units : nsm);
    return 1;
}

int usp_mask_plan_bwd(UspBwdParams &p, int bn, cudaStream_t st, UspPlanMem *mem, int *ctas, char *why,
                      size_t why_len) {
    *ctas = 0;
    const int mode = plan_mode();
    if (!mode || (!p.mask_lo && mode != 2) || p.q_len <= 0 || p.kv_len <= 0) return USP_KERNEL_OK;
    MpArgs a;
    memset(&a, 0, sizeof a);
    a.lo = p.mask_lo;
    a.hi = p.mask_hi;
    a.b = p.b;
    a.q_len = p.q_len;
    a.kv_len = p.kv_len;
    a.causal = p.causal;
    a.diag = p.diag;
    a.ng = (p.q_len + USP_PLAN_GROUP - 1) / USP_PLAN_GROUP;
    a.bwd = 1;
    a.bm = USP_PLAN_GROUP;
    a.bn = bn;
    a.per_batch = (p.kv_len + bn - 1) / bn;
    a.nitems = p.b * a.per_batch;
    const int64_t ctas64 = (int64_t)a.nitems * p.hkv;
    if (ctas64 > INT32_MAX) return USP_KERNEL_OK;
    int rc = plan_run(a, a.nitems, st, mem, why, why_len);
    if (rc != USP_KERNEL_OK || !mem->ptr) return rc;
    p.mask_groups = a.groups;
    p.ktile_rows = a.ktile_rows;
    p.work_order = a.order;
    p.plan_items = a.nitems;
    *ctas = (int)ctas64;
    return USP_KERNEL_OK;
}

void usp_mask_plan_release(UspPlanMem *mem, cudaStream_t st) {
    if (mem->ptr) {
        (void)cudaFreeAsync(mem->ptr, st);
        (void)cudaGetLastError();
        mem->ptr = nullptr;
    }
}
