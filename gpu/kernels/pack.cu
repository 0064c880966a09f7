/* pack.cu: pack/unpack around the ulysses all-to-all (layouts in usp/gpu_pack.h,
 * index arithmetic in a2a_index.h, even and uneven head splits).
 *
 * One thread per destination element; the source index is computed from the
 * destination's, so every kernel is a gather and no two threads write the
 * same element. Copies move raw elements of 2, 4 or 8 bytes, or convert
 * between fp32 and a 16-bit wire (round to nearest even, as the CPU
 * executors' emulation rounds); only the DKV unpack does arithmetic (the sum
 * of replicas, in fp32). Memory-bound and simple. */
#include <cuda_runtime.h>
#include "kernels.h"
#include "plugins/naive_kernels.cuh"
#include "usp/gpu_pack.h"
#include "a2a_index.h"

namespace {

typedef usp_a2a_geom Geom;

static_assert(USP_AX_Q == (int)USP_A2A_Q && USP_AX_KV == (int)USP_A2A_KV && USP_AX_O == (int)USP_A2A_O &&
                  USP_AX_LSE == (int)USP_A2A_LSE && USP_AX_DKV == (int)USP_A2A_DKV,
              "a2a_index.h numbers the patterns as usp/schedule.h");

/* SEND element idx (piece-major) <- its source element. */
template <typename E>
__global__ void pack_kernel(usp_a2a a, Geom g, const E *src, E *send, int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    send[idx] = src[usp_ax_pack_source(&g, a, idx)];
}

/* The same, converting (fp32 <-> fp16/bf16, rounded to nearest even). */
__global__ void pack_convert_kernel(usp_a2a a, Geom g, usp_dtype sdt, const void *src, usp_dtype ddt, void *send,
                                    int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    naive::st(send, ddt, idx, naive::ld(src, sdt, usp_ax_pack_source(&g, a, idx)));
}

/* dst element idx <- RECV (Q, KV, O, LSE: a copy). */
template <typename E>
__global__ void unpack_kernel(usp_a2a a, Geom g, const E *recv, E *dst, int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    dst[idx] = recv[usp_ax_unpack_source(&g, a, idx)];
}

/* The same, converting (fp16/bf16 <-> fp32). */
__global__ void unpack_convert_kernel(usp_a2a a, Geom g, usp_dtype sdt, const void *recv, usp_dtype ddt, void *dst,
                                      int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    naive::st(dst, ddt, idx, naive::ld(recv, sdt, usp_ax_unpack_source(&g, a, idx)));
}

/* DKV: dst (B,Ls,Hkv,D) = sum, in rank order, of the pieces holding the head.
 * Pieces of dtype rdt (fp64, fp32, or a 16-bit wire), dst of dtype ddt (fp64 with
 * fp64, else fp32 or 16-bit). */
__global__ void unpack_dkv_kernel(Geom g, usp_dtype rdt, const void *recv, usp_dtype ddt, void *dst, int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    int64_t d = idx % g.D, r = idx / g.D;
    int kh = (int)(r % g.Hkv);
    r /= g.Hkv;
    int64_t t = r % g.Ls, b = r / g.Ls;
    double acc = 0.0;
    for (int u = 0; u < g.U; ++u) {
        int64_t s = usp_ax_dkv_source(&g, u, b, t, kh, d);
        if (s < 0) continue;
        if (rdt == USP_F64)
            acc += static_cast<const double *>(recv)[s];
        else   /* fp32 sum for 32- and 16-bit data: the rounding the CPU executors use */
            acc = (float)acc + naive::ld(recv, rdt, s);
    }
    if (ddt == USP_F64)
        static_cast<double *>(dst)[idx] = acc;
    else
        naive::st(dst, ddt, idx, (float)acc);
}

Geom geom_of(const usp_a2a_dims *d) {
    Geom g;
    g.B = d->batch; g.Ls = d->seq_shard; g.U = d->ulysses;
    g.H = d->heads; g.Hkv = d->kv_heads; g.D = d->head_dim;
    g.me = d->rank;
    return g;
}

usp_status check_geom(const usp_a2a_dims *d) {
    if (d->batch <= 0 || d->seq_shard <= 0 || d->ulysses <= 0 || d->heads <= 0 || d->kv_heads <= 0 ||
        d->head_dim <= 0)
        return usp_fail(USP_EINVAL, "a2a: sizes must be positive (B %d, Ls %d, U %d, H %d, Hkv %d, D %d)",
                        d->batch, d->seq_shard, d->ulysses, d->heads, d->kv_heads, d->head_dim);
    if (d->heads < d->ulysses || d->heads % d->kv_heads != 0)
        return usp_fail(USP_EINVAL, "a2a: heads %d over ulysses %d with kv heads %d: every rank needs a query "
                        "head and the kv heads must divide the heads", d->heads, d->ulysses, d->kv_heads);
    if (d->rank < 0 || d->rank >= d->ulysses)
        return usp_fail(USP_EINVAL, "a2a: ulysses rank %d outside 0..%d", d->rank, d->ulysses - 1);
    return USP_OK;
}

/* Elements of the whole of SEND (every piece, the own one too). */
int64_t send_elems(usp_a2a a, const Geom &g) { return usp_ax_send_offset(&g, a, g.me, g.U); }

usp_status launched(const char *what) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return usp_fail(USP_EINTERNAL, "%s launch: %s", what, cudaGetErrorString(e));
    return USP_OK;
}

template <template <typename> class K, typename... Args>
usp_status by_size(size_t size, int64_t n, cudaStream_t st, Args... args) {
    unsigned blocks = (unsigned)((n + 255) / 256);
    if (size == 2) K<uint16_t>::go(blocks, st, args...);
    else if (size == 4) K<uint32_t>::go(blocks, st, args...);
    else K<uint64_t>::go(blocks, st, args...);
    return USP_OK;
}

template <typename E> struct PackGo {
    static void go(unsigned blocks, cudaStream_t st, usp_a2a a, Geom g, const void *src, void *dst, int64_t n) {
        pack_kernel<E><<<blocks, 256, 0, st>>>(a, g, static_cast<const E *>(src), static_cast<E *>(dst), n);
    }
};
template <typename E> struct UnpackGo {
    static void go(unsigned blocks, cudaStream_t st, usp_a2a a, Geom g, const void *src, void *dst, int64_t n) {
        unpack_kernel<E><<<blocks, 256, 0, st>>>(a, g, static_cast<const E *>(src), static_cast<E *>(dst), n);
    }
};

} // namespace

extern "C" usp_a2a_dims usp_a2a_dims_of(const usp_config *c) {
    usp_a2a_dims d;
    d.batch = c->batch;
    d.seq_shard = c->seq / (c->ulysses * c->ring);
    d.ulysses = c->ulysses;
    d.heads = c->heads;
    d.kv_heads = c->kv_heads;
    d.head_dim = c->head_dim;
    d.rank = 0;
    return d;
}

extern "C" usp_a2a_dims usp_a2a_dims_rank(const usp_config *c, int ulysses_rank) {
    usp_a2a_dims d = usp_a2a_dims_of(c);
    d.rank = ulysses_rank;
    return d;
}

extern "C" long usp_gpu_a2a_piece_elems(usp_a2a a, const usp_a2a_dims *d) {
    if (a == USP_A2A_NONE) return 0;
    Geom g = geom_of(d);
    return (long)usp_ax_send_elems(&g, a, g.me, 0);
}

extern "C" long usp_gpu_a2a_send_elems(usp_a2a a, const usp_a2a_dims *d, int p) {
    if (a == USP_A2A_NONE) return 0;
    Geom g = geom_of(d);
    return (long)usp_ax_send_elems(&g, a, g.me, p);
}

extern "C" long usp_gpu_a2a_send_offset(usp_a2a a, const usp_a2a_dims *d, int p) {
    if (a == USP_A2A_NONE) return 0;
    Geom g = geom_of(d);
    return (long)usp_ax_send_offset(&g, a, g.me, p);
}

extern "C" long usp_gpu_a2a_recv_elems(usp_a2a a, const usp_a2a_dims *d, int p) {
    if (a == USP_A2A_NONE) return 0;
    Geom g = geom_of(d);
    return (long)usp_ax_recv_elems(&g, a, g.me, p);
}

extern "C" long usp_gpu_a2a_recv_offset(usp_a2a a, const usp_a2a_dims *d, int p) {
    if (a == USP_A2A_NONE) return 0;
    Geom g = geom_of(d);
    return (long)usp_ax_recv_offset(&g, a, g.me, p);
}

/* fp64 with fp64 only; the other dtypes convert among themselves. */
usp_status check_dtypes(const char *what, usp_dtype a, usp_dtype b) {
    if ((a == USP_F64) != (b == USP_F64))
        return usp_fail(USP_EINVAL, "%s: %s to %s is not a conversion it makes", what, usp_dtype_name(a),
                        usp_dtype_name(b));
    return USP_OK;
}

extern "C" usp_status usp_gpu_a2a_pack_to(usp_a2a a, const usp_a2a_dims *d, usp_dtype src_dt, usp_dtype send_dt,
                                          const void *src, void *send, void *stream) {
    USP_TRY(check_geom(d));
    if (a == USP_A2A_NONE) return usp_fail(USP_EINVAL, "pack: no a2a pattern");
    USP_TRY(check_dtypes("pack", src_dt, send_dt));
    Geom g = geom_of(d);
    int64_t n = send_elems(a, g);
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    if (src_dt == send_dt) {
        by_size<PackGo>(usp_dtype_size(src_dt), n, st, a, g, src, send, n);
    } else {
        pack_convert_kernel<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(a, g, src_dt, src, send_dt, send, n);
    }
    return launched("a2a pack");
}

extern "C" usp_status usp_gpu_a2a_pack(usp_a2a a, const usp_a2a_dims *d, usp_dtype dt, const void *src,
                                       void *send, void *stream) {
    return usp_gpu_a2a_pack_to(a, d, dt, dt, src, send, stream);
}

extern "C" usp_status usp_gpu_a2a_unpack_from(usp_a2a a, const usp_a2a_dims *d, usp_dtype recv_dt, usp_dtype dst_dt,
                                              const void *recv, void *dst, void *stream) {
    USP_TRY(check_geom(d));
    if (a == USP_A2A_NONE) return usp_fail(USP_EINVAL, "unpack: no a2a pattern");
    USP_TRY(check_dtypes("unpack", recv_dt, dst_dt));
    Geom g = geom_of(d);
    int64_t n = usp_ax_dst_elems(&g, a);
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    if (a == USP_A2A_DKV) {
        unpack_dkv_kernel<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(g, recv_dt, recv, dst_dt, dst, n);
        return launched("a2a unpack (dK/dV)");
    }
    if (recv_dt == dst_dt)
        by_size<UnpackGo>(usp_dtype_size(recv_dt), n, st, a, g, recv, dst, n);
    else
        unpack_convert_kernel<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(a, g, recv_dt, recv, dst_dt, dst, n);
    return launched("a2a unpack");
}

extern "C" usp_status usp_gpu_a2a_unpack(usp_a2a a, const usp_a2a_dims *d, usp_dtype dt, const void *recv,
                                         void *dst, void *stream) {
    return usp_gpu_a2a_unpack_from(a, d, dt, dt, recv, dst, stream);
}
